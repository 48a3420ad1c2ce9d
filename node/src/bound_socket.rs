//! A TCP socket bound to its address but not yet listening.
//!
//! Binding reserves the port and reports "address in use" at once; listening is what makes the
//! kernel accept connections. A node binds every port it needs before it does anything else —
//! so a failed bind never leaves a briefly open port or a half-created data directory behind —
//! and listens on each only once it can serve what arrives there: the peer port once storage
//! is recovered, the HTTP port once the node can answer requests (for a cluster of one: once it
//! leads). Until then a client's connection attempt is refused, which every client treats as
//! "not up yet", instead of being accepted and answered 503.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues before the server accepts them.
const LISTEN_BACKLOG: i32 = 1024;

pub struct BoundSocket {
    socket: Socket,
    address: SocketAddr,
}

impl BoundSocket {
    /// Resolves `address` (`host:port`) and binds its first address.
    pub fn bind(address: &str) -> io::Result<BoundSocket> {
        let resolved = address.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{address} resolves to nothing"))
        })?;
        let socket = Socket::new(Domain::for_address(resolved), Type::STREAM, Some(Protocol::TCP))?;
        // A restarted node must be able to bind while connections of its previous run linger
        // in TIME_WAIT (as std and tokio listeners do on Unix).
        socket.set_reuse_address(true)?;
        socket.bind(&resolved.into())?;
        Ok(BoundSocket { socket, address: resolved })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Starts accepting connections; the listener is non-blocking, ready for tokio's
    /// `TcpListener::from_std` on whichever runtime will serve it.
    pub fn listen(self) -> io::Result<TcpListener> {
        self.socket.listen(LISTEN_BACKLOG)?;
        self.socket.set_nonblocking(true)?;
        Ok(self.socket.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_socket_refuses_connections_until_it_listens() {
        let bound = BoundSocket::bind("127.0.0.1:0").expect("bind");
        let address = bound.socket.local_addr().expect("address").as_socket().expect("inet");
        assert!(std::net::TcpStream::connect(address).is_err(), "refused before listen");
        let listener = bound.listen().expect("listen");
        std::net::TcpStream::connect(address).expect("accepted once listening");
        assert!(BoundSocket::bind(&address.to_string()).is_err(), "the port is taken");
        drop(listener);
    }
}
