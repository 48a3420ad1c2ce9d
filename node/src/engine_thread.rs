//! The engine's own thread. The engine and the peer transport are single-threaded by design
//! (`Rc`, `spawn_local`), so they run on a current-thread tokio runtime inside a `LocalSet` on a
//! dedicated OS thread. Everything else (HTTP, watch fan-out) runs on the multi-threaded
//! runtime and reaches the engine through the `EngineHandle`, whose channels are `Send`. The
//! watch hub's feed runs on the engine's thread too: every applied write is an event, and
//! waking another thread for each cycle's events would cost more than recording them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use conclave_core::engine::ChangeFeed;
use conclave_core::engine::{Engine, EngineHandle};
use conclave_core::transport::tcp::{PeerListener, TcpTransport, TcpTransportConfig};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{broadcast, oneshot};

use crate::clock::OsClock;
use crate::config::NodeConfig;
use crate::network::TokioNetwork;
use crate::storage::open_storage;
use conclave_core::engine::WatchHub;

// The HTTP runtime shares the handle between worker threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EngineHandle>();
};

/// What recovery found, for the startup log line.
#[derive(Clone, Debug)]
pub struct RecoverySummary {
    pub created: bool,
    pub repairs: Vec<String>,
    pub log_entries: usize,
    pub snapshot_index: u64,
    pub term: u64,
}

pub struct RunningEngine {
    pub handle: EngineHandle,
    pub recovery: RecoverySummary,
    /// The engine's clock: local reads compare its lease against this clock.
    pub clock: OsClock,
    /// Resolves when the engine stops: `Ok` after a requested shutdown, `Err` on a failure.
    pub finished: oneshot::Receiver<Result<(), String>>,
    pub thread: std::thread::JoinHandle<()>,
}

/// An unpredictable seed for election jitter (std's `RandomState` is seeded by the OS).
fn os_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

/// Opens storage in `data_dir` (locked by the caller), recovers, starts the peer transport (on
/// `peer_listener` if bound, else listening once the node has peers) and the engine on a new
/// thread, with `hub` fed every change this process applies. Returns once the engine is ready
/// to take requests, or with the reason it could not start.
pub async fn start(
    config: NodeConfig,
    data_dir: PathBuf,
    peer_listener: Option<std::net::TcpListener>,
    fsync_seconds: Histogram,
    hub: Arc<WatchHub>,
) -> anyhow::Result<RunningEngine> {
    let (started_tx, started_rx) = oneshot::channel();
    let (finished_tx, finished) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("engine-{}", config.node_id.0))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ =
                        started_tx.send(Err(anyhow!("cannot build the engine runtime: {error}")));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                match prepare(&config, &data_dir, peer_listener, fsync_seconds).await {
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                    }
                    Ok((engine, writer, events, started)) => {
                        tokio::task::spawn_local(hub.run(events));
                        let _ = started_tx.send(Ok(started));
                        let result =
                            engine.run(writer).await.map_err(|failure| failure.to_string());
                        let _ = finished_tx.send(result);
                    }
                }
            });
        })
        .context("cannot spawn the engine thread")?;
    let (handle, recovery, clock) =
        started_rx.await.map_err(|_| anyhow!("the engine thread ended before starting"))??;
    Ok(RunningEngine { handle, recovery, clock, finished, thread })
}

type Started = (EngineHandle, RecoverySummary, OsClock);

async fn prepare(
    config: &NodeConfig,
    data_dir: &Path,
    peer_listener: Option<std::net::TcpListener>,
    fsync_seconds: Histogram,
) -> anyhow::Result<(
    Engine<TcpTransport, crate::storage::NodeStorage, OsClock>,
    impl Future<Output = Result<(), conclave_core::seams::storage::StorageFailure>> + 'static,
    // Subscribed before the engine runs its first cycle: sees every change it applies.
    broadcast::Receiver<ChangeFeed>,
    Started,
)> {
    let engine_config = config.engine_config();
    let max_record_bytes = (engine_config.raft.max_message_bytes + 64 * 1024).max(8 << 20);
    let (mut storage, recovered) =
        open_storage(data_dir, config.fsync, fsync_seconds, max_record_bytes)
            .await
            .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    for repair in &recovered.repairs {
        tracing::warn!(%repair, "storage recovery repaired the data directory");
    }
    let recovered = recovered.with_initial_config(&config.initial_cluster());
    let recovery = RecoverySummary {
        created: recovered.created,
        repairs: recovered.repairs.clone(),
        log_entries: recovered.restored.entries.len(),
        snapshot_index: recovered.restored.snapshot.last_index,
        term: recovered.restored.hard_state.term,
    };
    let writer = storage.writer();
    let clock = OsClock::new();
    let seed = os_seed();
    let max_frame_bytes =
        (2 * engine_config.raft.max_message_bytes + (1 << 20)).min(u32::MAX as u64);
    let max_frame_bytes =
        (max_frame_bytes as u32).max(TcpTransportConfig::default().max_frame_bytes);
    let transport_config = TcpTransportConfig {
        cluster_id: config.cluster_id,
        max_frame_bytes,
        // Room for two largest frames at once: a correct peer never needs more.
        max_inbound_buffered_bytes: (2 * u64::from(max_frame_bytes))
            .max(TcpTransportConfig::default().max_inbound_buffered_bytes),
        ..TcpTransportConfig::default()
    };
    let listener = match (peer_listener, config.peer_bind_address()) {
        (Some(listener), _) => PeerListener::Bound(
            tokio::net::TcpListener::from_std(listener)
                .context("cannot register the peer listener")?,
        ),
        (None, Some(address)) => PeerListener::OnDemand(address),
        (None, None) => PeerListener::Never,
    };
    let transport = TcpTransport::start_with(
        TokioNetwork,
        clock.clone(),
        config.node_id,
        listener,
        &config.peer_addresses(),
        transport_config,
        seed,
    );
    let (engine, handle) = Engine::new(
        engine_config,
        recovered.restored,
        recovered.snapshot_data,
        transport,
        storage,
        clock.clone(),
        seed,
    )
    .context("cannot start the engine")?;
    let events = handle.subscribe();
    Ok((engine, writer, events, (handle, recovery, clock)))
}
