//! The software of one simulated node: the same engine, transport framing and storage code as
//! the real `conclave` binary, on turmoil's network, turmoil's file system and a skewed clock.
//! turmoil re-runs it after every crash; it starts by recovering from what its disk kept.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use conclave_core::engine::{Engine, EngineConfig, EngineHandle, HostedGroupStart, WatchHub};
use conclave_core::raft::{ClusterConfig, LeaseConfig, NodeId, RaftConfig};
use conclave_core::shard::{HostConfig, ShardId, ShardMap, keep_map_from_meta_replica};
use conclave_core::storage::recovery::group_dir;
use conclave_core::storage::space::SpaceOptions;
use conclave_core::storage::wal::LogLayout;
use conclave_core::storage::{SharedLog, WalOptions, WalStorage};
use conclave_core::transport::frame::{read_frame, write_frame};
use conclave_core::transport::tcp::{TcpTransport, TcpTransportConfig};
use turmoil::net::TcpStream;

use crate::at_rest_damage::damage_at_rest;
use crate::client_protocol::{
    CLIENT_PORT, ClientAnswer, ClientCall, ClientReply, ClientRequest, MAX_CLIENT_FRAME_BYTES,
    PEER_PORT,
};
use crate::client_server::{self, Watches};
use crate::clock::SimClock;
use crate::disk::DiskFaults;
use crate::fs::SimFs;
use crate::lost_tail::lose_synced_tail;
use crate::network::TurmoilNetwork;
use crate::observers::{NodeProbe, Observers};
use crate::schedule::{PlantedBug, RunConfig};

pub fn node_id(node: u64) -> NodeId {
    NodeId(node)
}

/// Changes each node's watch history holds: small, so that a watcher resuming after an outage
/// sometimes finds its revision gone and must look for it on another node.
const WATCH_HISTORY_EVENTS: usize = 512;

/// Where each node keeps its data on its (simulated) disk.
pub const DATA_DIR: &str = "/data";

/// What survives a crash of the node: only what its closure holds — the clock and the disk's
/// fault switches. The data itself lives on turmoil's per-host file system, which keeps what
/// was synced (and loses the rest) across `crash` and `bounce`.
pub struct NodeContext {
    pub node: u64,
    pub run: Rc<RunConfig>,
    pub clock: SimClock,
    pub disk: DiskFaults,
    pub observers: Rc<Observers>,
    pub incarnation: Cell<u64>,
    /// Shared by every node: how many times a node's software returned on its own (refused
    /// to start, or its engine stopped). The nemesis looks for stopped nodes only when this
    /// moves, instead of asking turmoil about every host at every step.
    pub exits: Rc<Cell<u64>>,
}

impl NodeContext {
    fn peers(&self) -> BTreeMap<NodeId, String> {
        // Every host, spares included: a spare must answer the leader once it is added.
        (1..=self.run.nodes + self.run.spares)
            .map(|n| (node_id(n), format!("n{n}:{PEER_PORT}")))
            .collect()
    }

    /// The configuration a group of a sharded world starts with: its replicas in the map.
    fn group_config(&self, map: &ShardMap, shard: ShardId) -> ClusterConfig {
        let replicas = &map.shard(shard).expect("a shard of the map").replicas;
        let mut config = ClusterConfig::with_voters(replicas.iter().copied());
        config.addresses = self.peers();
        config
    }

    async fn start_transport(&self, seed: u64) -> std::io::Result<TcpTransport> {
        let transport_config = TcpTransportConfig {
            cluster_id: self.run.seed,
            snapshot_chunk_bytes: self.run.swarm.snapshot_chunk_bytes,
            ..TcpTransportConfig::default()
        };
        let transport = TcpTransport::start(
            TurmoilNetwork,
            self.clock.clone(),
            node_id(self.node),
            &format!("0.0.0.0:{PEER_PORT}"),
            &self.peers(),
            transport_config,
            seed,
        )
        .await?;
        self.observers.meta().borrow_mut().on_transport_started(transport.counters_handle());
        Ok(transport)
    }

    fn members(&self) -> ClusterConfig {
        let mut config = ClusterConfig::with_voters((1..=self.run.nodes).map(node_id));
        config.addresses = self.peers();
        config
    }

    /// Small segments, so that runs roll and compact them.
    fn wal_options(&self) -> WalOptions {
        WalOptions {
            segment_bytes: 128 * 1024,
            max_record_bytes: 32 * 1024,
            max_snapshot_bytes: 64 << 20,
            // The simulated disk is full when the nemesis says so, whatever the sizes: a small
            // reserve exercises the same paths for a fraction of the simulated I/O.
            space: SpaceOptions { ballast_bytes: 16 * 1024, probe_bytes: 16 * 1024 },
            planted_bug: self.run.planted_bug.map(core_bug),
            ..WalOptions::default()
        }
    }

    fn engine_config(&self) -> EngineConfig {
        let swarm = &self.run.swarm;
        let mut config = EngineConfig::new(node_id(self.node));
        config.tick_ms = swarm.tick_ms;
        config.snapshot_every_entries = swarm.snapshot_every_entries;
        config.retained_log_entries = swarm.retained_log_entries;
        config.raft = RaftConfig {
            election_timeout_ticks: swarm.election_timeout_ticks,
            heartbeat_interval_ticks: swarm.heartbeat_interval_ticks,
            max_entries_per_message: swarm.max_entries_per_message,
            max_inflight_messages: swarm.max_inflight_messages,
            lease_read: swarm
                .lease_reads
                .then_some(LeaseConfig { max_clock_drift_ppm: swarm.lease_drift_bound_ppm }),
            planted_bug: self.run.planted_bug.map(core_bug),
            ..config.raft
        };
        config
    }
}

fn core_bug(bug: PlantedBug) -> conclave_core::raft::PlantedBug {
    use conclave_core::raft::PlantedBug as Core;
    match bug {
        PlantedBug::DoubleVote => Core::DoubleVote,
        PlantedBug::CommitOldTermByCounting => Core::CommitOldTermByCounting,
        PlantedBug::AckBeforeSync => Core::AckBeforeSync,
        PlantedBug::VoteBeforeSync => Core::VoteBeforeSync,
        PlantedBug::StaleLeaderRead => Core::StaleLeaderRead,
        PlantedBug::KeepConflictingSuffix => Core::KeepConflictingSuffix,
        PlantedBug::IgnoreShortenedLog => Core::IgnoreShortenedLog,
        PlantedBug::TruncateAtDamage => Core::TruncateAtDamage,
        PlantedBug::HardStateFileOnly => Core::HardStateFileOnly,
        PlantedBug::WatchResumeRepeats => Core::WatchResumeRepeats,
        PlantedBug::StaleRangeLosesMore => Core::StaleRangeLosesMore,
        PlantedBug::ApplyByLocalClock => Core::ApplyByLocalClock,
        PlantedBug::LeaseSurvivesTimeoutNow => Core::LeaseSurvivesTimeoutNow,
        PlantedBug::RestartedNodeVotesAtOnce => Core::RestartedNodeVotesAtOnce,
    }
}

pub async fn node_main(context: Rc<NodeContext>) -> turmoil::Result {
    let result = run_node(&context).await;
    // A crash drops this future before here; only a return on the node's own counts.
    context.exits.set(context.exits.get() + 1);
    result
}

async fn run_node(context: &Rc<NodeContext>) -> turmoil::Result {
    if let Some(map) = context.run.shard_map() {
        return run_sharded_node(context, map).await;
    }
    let incarnation = context.incarnation.get() + 1;
    context.incarnation.set(incarnation);
    let id = node_id(context.node);
    let seed = context.run.seed ^ (context.node << 48) ^ (incarnation << 32);
    let fs = SimFs::new(context.disk.clone(), seed ^ 0xd15c, context.run.swarm.disk_sync_ms);
    let groups = [(ShardId::META, std::path::PathBuf::from(DATA_DIR))];
    damage_before_start(context, LogLayout::Single, &groups, seed).await;
    let (mut storage, recovered) = match WalStorage::open(fs, DATA_DIR, context.wal_options()).await
    {
        Ok(opened) => opened,
        Err(error) => {
            // A damaged or failing disk: the node refuses to start (and keeps refusing while
            // the damage is real). Not a simulator error — unless nothing ever damaged this
            // disk or made it fail, when refusing loses a member for no reason.
            let expected = context.disk.damaged_at_rest() || context.disk.injected() > 0;
            context.observers.meta().borrow_mut().on_recovery_refused(
                id,
                &error.to_string(),
                expected,
            );
            return Ok(());
        }
    };
    let recovered = recovered.with_initial_config(&context.members());
    let restored = recovered.restored;
    let snapshot_data = recovered.snapshot_data;
    context.observers.meta().borrow_mut().on_recovered(id, &restored);
    let writer = storage.writer();
    let transport = context.start_transport(seed).await?;
    let (engine, handle) = Engine::new(
        context.engine_config(),
        restored,
        snapshot_data,
        transport,
        storage,
        context.clock.clone(),
        seed,
    )?;
    let probe = NodeProbe { node: id, observers: context.observers.clone() };
    let engine = engine.with_probe(Box::new(probe));
    // Subscribed before the engine's first cycle, as in production: the history holds every
    // change this incarnation applies.
    let hub = WatchHub::new(WATCH_HISTORY_EVENTS);
    tokio::task::spawn_local(hub.clone().run(handle.subscribe()));
    let watches = Watches { hub, planted_bug: context.run.planted_bug.map(core_bug) };
    let handle = Rc::new(handle);
    let groups = BTreeMap::from([(handle.shard(), handle.clone())]);
    let server = client_server::serve(groups, handle, context.clock.clone(), Some(watches));
    tokio::select! {
        result = engine.run(writer) => {
            if let Err(failure) = result {
                // A node that cannot trust its disk stops; it is not a simulator error.
                context.observers.meta().borrow_mut().on_engine_stopped(id, failure.to_string());
            }
        }
        result = server => {
            if let Err(error) = result {
                context.observers.meta().borrow_mut().on_engine_stopped(id, format!("client server: {error}"));
            }
        }
    }
    Ok(())
}

/// How often a sharded node without a meta replica asks for the map, and how often a meta
/// leader retries installing it (as `conclave serve` does).
const MAP_POLL_MS: u64 = 500;

/// A node of a sharded world: a replica of each group the map places on it, all in one engine
/// over one shared log (`Engine::hosting`, `SharedLog`), as `conclave serve --shards` runs.
async fn run_sharded_node(
    context: &Rc<NodeContext>,
    map: std::sync::Arc<ShardMap>,
) -> turmoil::Result {
    let incarnation = context.incarnation.get() + 1;
    context.incarnation.set(incarnation);
    let id = node_id(context.node);
    let seed = context.run.seed ^ (context.node << 48) ^ (incarnation << 32);
    let fs = SimFs::new(context.disk.clone(), seed ^ 0xd15c, context.run.swarm.disk_sync_ms);
    let hosted: Vec<ShardId> = map.shards_on(id).collect();
    assert!(!hosted.is_empty(), "the bootstrap map places a replica on every node");
    let data_dir = std::path::Path::new(DATA_DIR);
    let groups: Vec<_> = hosted.iter().map(|shard| (*shard, group_dir(data_dir, *shard))).collect();
    damage_before_start(context, LogLayout::Shared, &groups, seed).await;
    let opened = SharedLog::open(fs, DATA_DIR, &hosted, context.wal_options()).await;
    let (mut log, opened) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let expected = context.disk.damaged_at_rest() || context.disk.injected() > 0;
            let meta = context.observers.meta();
            meta.borrow_mut().on_recovery_refused(id, &error.to_string(), expected);
            return Ok(());
        }
    };
    let mut starts = Vec::with_capacity(opened.len());
    for (shard, (storage, recovered)) in opened {
        let recovered = recovered.with_initial_config(&context.group_config(&map, shard));
        context.observers.group(shard).borrow_mut().on_recovered(id, &recovered.restored);
        starts.push(HostedGroupStart {
            shard,
            restored: recovered.restored,
            snapshot_data: recovered.snapshot_data,
            storage,
        });
    }
    let writer = log.writer();
    let transport = context.start_transport(seed).await?;
    let engine_config = context.engine_config();
    let host_config = HostConfig::for_raft(&engine_config.raft);
    let clock = context.clock.clone();
    let (engine, handles) =
        Engine::hosting(engine_config, host_config, starts, transport, clock, seed)?;
    let probe = NodeProbe { node: id, observers: context.observers.clone() };
    let engine = engine.with_probe(Box::new(probe));
    let handles: BTreeMap<ShardId, Rc<EngineHandle>> =
        handles.into_iter().map(|(shard, handle)| (shard, Rc::new(handle))).collect();
    let admin = handles
        .get(&ShardId::META)
        .or_else(|| handles.values().next())
        .expect("a node hosts at least one group")
        .clone();
    // Checked against from the start: until the meta group's map arrives, a group would
    // otherwise serve any key (the map it installs is this one, at the same epoch).
    admin.follow_shard_map(map.clone());
    let retry = Duration::from_millis(MAP_POLL_MS);
    let keeping: std::pin::Pin<Box<dyn Future<Output = ()>>> = match handles.get(&ShardId::META) {
        Some(meta) => {
            let meta = meta.clone();
            Box::pin(async move { keep_map_from_meta_replica(&meta, &map, retry).await })
        }
        None => Box::pin(follow_map_from_afar(admin.clone(), map, context.node, retry)),
    };
    let server = client_server::serve(handles, admin, context.clock.clone(), None);
    tokio::select! {
        result = engine.run(writer) => {
            if let Err(failure) = result {
                context.observers.meta().borrow_mut().on_engine_stopped(id, failure.to_string());
                context.observers.on_node_down(id);
            }
        }
        result = server => {
            if let Err(error) = result {
                let reason = format!("client server: {error}");
                context.observers.meta().borrow_mut().on_engine_stopped(id, reason);
                context.observers.on_node_down(id);
            }
        }
        () = keeping => {}
    }
    Ok(())
}

/// What the nemesis planned for this start's disk, done before the node reads it: the newest
/// synced records lost (`lost_tail.rs`), or data at rest damaged (`at_rest_damage.rs`), in
/// the log of `layout` in `DATA_DIR` and the directories of the node's `groups` (hard states,
/// snapshots). Each group's observer hears what its group lost (the restart counted once);
/// damage, which may have hit any group, is counted by the first group's observer.
async fn damage_before_start(
    context: &NodeContext,
    layout: LogLayout,
    groups: &[(ShardId, std::path::PathBuf)],
    seed: u64,
) {
    // The nemesis changes the disk through a file system of its own, which no injected fault
    // touches: a half-done change it was not told of would pass for the node's own doing.
    let nemesis_fs = &SimFs::new(DiskFaults::default(), seed ^ 0x9e3e, 0);
    let id = node_id(context.node);
    let data_dir = std::path::Path::new(DATA_DIR);
    if let Some(plan) = context.disk.take_tail_loss() {
        let lost = lose_synced_tail(nemesis_fs, data_dir, layout, &plan).await;
        for (at, (shard, lost)) in lost.into_iter().flatten().enumerate() {
            let mut observer = context.observers.group(shard).borrow_mut();
            observer.on_tail_lost(id, Some(lost), at == 0);
        }
    }
    if let Some(damage) = context.disk.take_at_rest_damage() {
        let group_dirs: Vec<_> = groups.iter().map(|(_, dir)| dir.clone()).collect();
        let done = damage_at_rest(nemesis_fs, data_dir, &group_dirs, damage, seed ^ 0xda3a).await;
        if let Some(done) = done {
            context.disk.note_damaged_at_rest(done.unreadable.clone());
            // Every group's observer already treats the node as the run's damage victim (its
            // copies count toward no other node's loss) and checks its recovery in full.
            let (first, _) = groups.first().expect("a node hosts a group");
            let mut observer = context.observers.group(*first).borrow_mut();
            observer.on_damaged_at_rest(id, damage, &done.description);
        }
    }
}

/// A node without a meta replica: asks the meta group's replicas for the map they follow, over
/// the client protocol, until one has it; then keeps asking for newer ones.
async fn follow_map_from_afar(
    handle: Rc<EngineHandle>,
    bootstrap: std::sync::Arc<ShardMap>,
    node: u64,
    retry: Duration,
) {
    let replicas = bootstrap.shard(ShardId::META).map(|info| info.replicas.clone());
    let replicas: Vec<NodeId> = replicas.unwrap_or_default();
    let mut request_id = 0u64;
    loop {
        for replica in replicas.iter().filter(|replica| replica.0 != node) {
            request_id += 1;
            let request =
                ClientRequest { id: request_id, shard: ShardId::META, call: ClientCall::ShardMap };
            let asked = tokio::time::timeout(retry, ask(replica.0, request)).await;
            if let Ok(Some(ClientAnswer::ShardMap(Some(map)))) = asked
                && map.validate().is_ok()
            {
                handle.follow_shard_map(std::sync::Arc::new(map));
                break;
            }
        }
        tokio::time::sleep(retry).await;
    }
}

async fn ask(node: u64, request: ClientRequest) -> Option<ClientAnswer> {
    let mut stream = TcpStream::connect((format!("n{node}"), CLIENT_PORT)).await.ok()?;
    write_frame(&mut stream, &request, MAX_CLIENT_FRAME_BYTES).await.ok()?;
    let reply: ClientReply = read_frame(&mut stream, MAX_CLIENT_FRAME_BYTES).await.ok()?;
    reply.result.ok()
}
