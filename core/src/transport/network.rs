//! The one thing that differs between a real and a simulated network: how to open, accept and
//! carry a byte stream. `node/` implements it on `tokio::net`, `sim/` on `turmoil::net`;
//! everything above (framing, connections, reconnects, deadlines) is shared.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

pub trait Network: Clone + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    type Listener: 'static;

    fn bind(&self, address: &str) -> impl Future<Output = io::Result<Self::Listener>>;
    fn accept(&self, listener: &Self::Listener) -> impl Future<Output = io::Result<Self::Stream>>;
    fn connect(&self, address: &str) -> impl Future<Output = io::Result<Self::Stream>>;
}
