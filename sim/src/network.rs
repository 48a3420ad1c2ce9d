//! The engine's TCP transport runs unchanged on turmoil's simulated TCP.

use std::io;

use conclave_core::transport::Network;

#[derive(Copy, Clone, Debug, Default)]
pub struct TurmoilNetwork;

impl Network for TurmoilNetwork {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, address: &str) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(address).await
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<Self::Stream> {
        listener.accept().await.map(|(stream, _)| stream)
    }

    async fn connect(&self, address: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(address).await
    }
}
