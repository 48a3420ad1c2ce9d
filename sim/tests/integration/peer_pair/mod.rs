//! The world the transport tests run in: two turmoil hosts, "sender" (n1) and "receiver" (n2),
//! 1–2 ms apart, each starting a TCP transport on the simulated clock and network.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use conclave_core::raft::NodeId;
use conclave_core::transport::tcp::{TcpTransport, TcpTransportConfig};
use conclave_sim::clock::SimClock;
use conclave_sim::network::TurmoilNetwork;

pub const SENDER: NodeId = NodeId(1);
pub const RECEIVER: NodeId = NodeId(2);
const PORT: u16 = 7000;
const EPOCH_SECS: u64 = 1_700_000_000;

/// A simulation of one-millisecond ticks, seeded with `seed`.
pub fn simulation<'a>(seed: u64) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(2))
        .build()
}

/// Starts node `local`'s transport (from inside its host), listening and knowing its peer.
pub async fn start_transport(
    local: NodeId,
    config: TcpTransportConfig,
) -> std::io::Result<TcpTransport> {
    let peers: BTreeMap<NodeId, String> =
        [(SENDER, format!("sender:{PORT}")), (RECEIVER, format!("receiver:{PORT}"))]
            .into_iter()
            .collect();
    let clock = SimClock::new(EPOCH_SECS * 1_000);
    TcpTransport::start(
        TurmoilNetwork,
        clock,
        local,
        &format!("0.0.0.0:{PORT}"),
        &peers,
        config,
        local.0,
    )
    .await
}
