//! The peer transport's network seam on `tokio::net`. Framing, acknowledgements, reconnects and
//! queue bounds live in `conclave_core::transport::tcp`, shared with the simulator.

use std::io;

use conclave_core::transport::Network;
use tokio::net::{TcpListener, TcpStream};

#[derive(Copy, Clone, Debug, Default)]
pub struct TokioNetwork;

impl Network for TokioNetwork {
    type Stream = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, address: &str) -> io::Result<TcpListener> {
        TcpListener::bind(address).await
    }

    async fn accept(&self, listener: &TcpListener) -> io::Result<TcpStream> {
        let (stream, _) = listener.accept().await?;
        // Raft messages are small and latency-bound (heartbeats, votes): no Nagle delay.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// `address` is a member record (`member_record.rs`): its first word is `host:port`. A
    /// host name is resolved here, at every connection, so a member whose name moved to
    /// another address (a rescheduled pod) is found at its new one on the next reconnect.
    async fn connect(&self, address: &str) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(crate::member_record::dial_address(address)).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
