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

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use conclave_core::engine::{ChangeFeed, EngineConfig, HostedGroupStart};
use conclave_core::engine::{Engine, EngineHandle};
use conclave_core::seams::Storage;
use conclave_core::seams::storage::StorageFailure;
use conclave_core::shard::{HostConfig, ShardId, ShardMap};
use conclave_core::transport::tcp::{PeerListener, TcpTransport, TcpTransportConfig};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{broadcast, oneshot};

use crate::clock::OsClock;
use crate::config::NodeConfig;
use crate::network::TokioNetwork;
use crate::shard_layout;
use crate::storage::{NodeGroupStorage, NodeStorage, open_shared_log, open_storage};
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
    /// The node's main group: the only one of a single-group node; a sharded node's meta
    /// replica, or its lowest shard without one. Membership, status and backups go to it.
    pub handle: EngineHandle,
    /// Every group this node hosts, by shard (a single-group node: its one group, shard 0).
    pub groups: BTreeMap<ShardId, EngineHandle>,
    /// The map a sharded cluster starts from; `None` for a single group.
    pub bootstrap_map: Option<Arc<ShardMap>>,
    /// Each hosted group's watch history, fed every change this process applies to it.
    pub hubs: BTreeMap<ShardId, Arc<WatchHub>>,
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
/// thread, with a watch history per group fed every change this process applies to it (of
/// `watch_history_events` events on a single group's node, split among a sharded node's
/// groups: see [`history_events_per_group`]). Returns once the engine is ready to take
/// requests, or with the reason it could not start.
pub async fn start(
    config: NodeConfig,
    data_dir: PathBuf,
    peer_listener: Option<std::net::TcpListener>,
    fsync_seconds: Histogram,
    watch_history_events: usize,
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
                if config.sharding.is_some() {
                    let prepared =
                        prepare_sharded(&config, &data_dir, peer_listener, fsync_seconds);
                    let history = watch_history_events;
                    run_prepared(prepared.await, history, started_tx, finished_tx).await;
                } else {
                    let prepared = prepare(&config, &data_dir, peer_listener, fsync_seconds);
                    let history = watch_history_events;
                    run_prepared(prepared.await, history, started_tx, finished_tx).await;
                }
            });
        })
        .context("cannot spawn the engine thread")?;
    let started =
        started_rx.await.map_err(|_| anyhow!("the engine thread ended before starting"))??;
    Ok(RunningEngine {
        handle: started.handle,
        groups: started.groups,
        bootstrap_map: started.bootstrap_map,
        hubs: started.hubs,
        recovery: started.recovery,
        clock: started.clock,
        finished,
        thread,
    })
}

/// What the engine thread hands back once the engine is ready.
struct Started {
    handle: EngineHandle,
    groups: BTreeMap<ShardId, EngineHandle>,
    bootstrap_map: Option<Arc<ShardMap>>,
    /// Filled in by `run_prepared`, which feeds them.
    hubs: BTreeMap<ShardId, Arc<WatchHub>>,
    recovery: RecoverySummary,
    clock: OsClock,
}

/// An engine ready to run: the engine, its storage writer, the change feed of each group
/// (subscribed before the engine runs its first cycle, so it sees every change it applies).
type Prepared<S, W> = (
    Engine<TcpTransport, S, OsClock>,
    W,
    BTreeMap<ShardId, broadcast::Receiver<ChangeFeed>>,
    Started,
);

/// How many events each group's watch history holds on a node hosting `groups` groups: the
/// node's budget split among them, but never so few that a watcher resuming after a short
/// outage finds its place gone. A history holds only what its group changed, so idle groups
/// cost nothing.
pub fn history_events_per_group(watch_history_events: usize, groups: usize) -> usize {
    const MIN_EVENTS_PER_GROUP: usize = 1_024;
    (watch_history_events / groups.max(1)).max(MIN_EVENTS_PER_GROUP.min(watch_history_events))
}

/// Reports the start (or why it failed), then runs the engine until it stops.
async fn run_prepared<S: Storage, W: Future<Output = Result<(), StorageFailure>>>(
    prepared: anyhow::Result<Prepared<S, W>>,
    watch_history_events: usize,
    started_tx: oneshot::Sender<anyhow::Result<Started>>,
    finished_tx: oneshot::Sender<Result<(), String>>,
) {
    match prepared {
        Err(error) => {
            let _ = started_tx.send(Err(error));
        }
        Ok((engine, writer, feeds, mut started)) => {
            let per_group = history_events_per_group(watch_history_events, feeds.len());
            for (shard, feed) in feeds {
                let hub = WatchHub::new(per_group);
                tokio::task::spawn_local(hub.clone().run(feed));
                started.hubs.insert(shard, hub);
            }
            let _ = started_tx.send(Ok(started));
            let result = engine.run(writer).await.map_err(|failure| failure.to_string());
            let _ = finished_tx.send(result);
        }
    }
}

/// The largest storage record: the largest Raft message, with room for framing.
fn max_record_bytes(engine_config: &EngineConfig) -> u64 {
    (engine_config.raft.max_message_bytes + 64 * 1024).max(8 << 20)
}

async fn prepare(
    config: &NodeConfig,
    data_dir: &Path,
    peer_listener: Option<std::net::TcpListener>,
    fsync_seconds: Histogram,
) -> anyhow::Result<
    Prepared<NodeStorage, impl Future<Output = Result<(), StorageFailure>> + 'static + use<>>,
> {
    let engine_config = config.engine_config();
    let (mut storage, recovered) =
        open_storage(data_dir, config.fsync, fsync_seconds, max_record_bytes(&engine_config))
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
    let transport = start_transport(config, &engine_config, peer_listener, &clock, seed)?;
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
    let feeds = BTreeMap::from([(ShardId::META, handle.subscribe())]);
    let groups = BTreeMap::from([(ShardId::META, handle.clone())]);
    let hubs = BTreeMap::new();
    let started = Started { handle, groups, bootstrap_map: None, hubs, recovery, clock };
    Ok((engine, writer, feeds, started))
}

/// A sharded node: the groups the cluster's bootstrap map places here, on one shared log
/// (one sync per batch for all of them), driven by one engine.
async fn prepare_sharded(
    config: &NodeConfig,
    data_dir: &Path,
    peer_listener: Option<std::net::TcpListener>,
    fsync_seconds: Histogram,
) -> anyhow::Result<
    Prepared<NodeGroupStorage, impl Future<Output = Result<(), StorageFailure>> + 'static + use<>>,
> {
    let engine_config = config.engine_config();
    let map = match config.bootstrap_map() {
        Some(map) => Arc::new(map.context("cannot compute the cluster's shard map")?),
        None => return Err(anyhow!("prepare_sharded needs --shards above 1")),
    };
    let hosted: Vec<ShardId> = map.shards_on(config.node_id).collect();
    if hosted.is_empty() {
        return Err(anyhow!(
            "the shard map places no replica on node {}: with {} members, give --shards or \
             --replication a larger value",
            config.node_id.0,
            config.members.len()
        ));
    }
    let log_dir = shard_layout::shared_log_dir(data_dir);
    let (mut log, opened) = open_shared_log(
        &log_dir,
        &hosted,
        config.fsync,
        fsync_seconds,
        max_record_bytes(&engine_config),
    )
    .await
    .with_context(|| format!("cannot open the shared log {}", log_dir.display()))?;
    let mut recovery = RecoverySummary {
        created: false,
        repairs: Vec::new(),
        log_entries: 0,
        snapshot_index: 0,
        term: 0,
    };
    let mut starts = Vec::with_capacity(opened.len());
    for (shard, (storage, recovered)) in opened {
        let recovered = recovered.with_initial_config(&config.initial_group_config(&map, shard));
        // The repairs are the shared log's, listed with every group: report them once.
        if recovery.repairs.is_empty() {
            recovery.repairs = recovered.repairs.clone();
        }
        recovery.created |= recovered.created;
        recovery.log_entries += recovered.restored.entries.len();
        recovery.snapshot_index =
            recovery.snapshot_index.max(recovered.restored.snapshot.last_index);
        recovery.term = recovery.term.max(recovered.restored.hard_state.term);
        starts.push(HostedGroupStart {
            shard,
            restored: recovered.restored,
            snapshot_data: recovered.snapshot_data,
            storage,
        });
    }
    for repair in &recovery.repairs {
        tracing::warn!(%repair, "storage recovery repaired the shared log");
    }
    let writer = log.writer();
    let clock = OsClock::new();
    let seed = os_seed();
    let transport = start_transport(config, &engine_config, peer_listener, &clock, seed)?;
    let host_config = HostConfig::for_raft(&engine_config.raft);
    let (engine, groups) =
        Engine::hosting(engine_config, host_config, starts, transport, clock.clone(), seed)
            .context("cannot start the engine")?;
    let handle = groups
        .get(&ShardId::META)
        .or_else(|| groups.values().next())
        .expect("a node hosts at least one group")
        .clone();
    // Keys are checked against the bootstrap map from the first request: until the meta
    // group's map arrives, a group would otherwise serve any key it is asked for (the map the
    // meta group holds is this one, at the same epoch, until placement changes it).
    handle.follow_shard_map(map.clone());
    let feeds = groups.iter().map(|(shard, group)| (*shard, group.subscribe())).collect();
    let hubs = BTreeMap::new();
    let started = Started { handle, groups, bootstrap_map: Some(map), hubs, recovery, clock };
    Ok((engine, writer, feeds, started))
}

/// The peer transport: one connection per peer node, carrying every group's messages.
fn start_transport(
    config: &NodeConfig,
    engine_config: &EngineConfig,
    peer_listener: Option<std::net::TcpListener>,
    clock: &OsClock,
    seed: u64,
) -> anyhow::Result<TcpTransport> {
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
    Ok(TcpTransport::start_with(
        TokioNetwork,
        clock.clone(),
        config.node_id,
        listener,
        &config.peer_addresses(),
        transport_config,
        seed,
    ))
}
