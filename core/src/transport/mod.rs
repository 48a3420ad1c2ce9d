//! Node-to-node messaging over byte streams: framing ([`frame`]), the messages ([`PeerMessage`])
//! and the TCP transport ([`tcp::TcpTransport`]) that implements the engine's `Transport` seam on
//! any [`Network`] — `tokio::net` in production, `turmoil::net` in simulation.

pub mod frame;
pub mod inbound_buffer;
pub mod network;
pub mod peer_message;
pub mod snapshot_stream;
pub mod tcp;

pub use network::Network;
pub use peer_message::PeerMessage;
