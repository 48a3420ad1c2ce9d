//! Nodes that host replicas of many Raft groups (`Engine::hosting`), on the simulator's network
//! and disks with the production transport and write-ahead log: the groups' messages travel in
//! node batches over turmoil's TCP, all of a node's groups write one shared log (one sync per
//! group commit) and each recovers its part of it after a crash, and idle groups quiesce
//! between bursts. Crashes and partitions are drawn from each seed.
//!
//! The world is sharded: 5 nodes, 6 shards of 3 replicas placed by rendezvous hashing, so each
//! node hosts some groups and each pair of nodes shares a different set. The client first
//! installs the shard map in the meta group (shard 0); every node follows it (from its own meta
//! replica's status, or from another's as a remote watch would), and the client routes each key
//! to the leader of the shard that owns its slot; now and then it sends a key to a shard that
//! does not own it, at a node that follows the map, which must refuse it (`WrongShard`).
//!
//! Checked throughout: no two leaders of one group in one term, every replica applies the same
//! entry at each index of its group, and no group applies a write of a key it does not own. At
//! the end, with the faults healed: every group serves again, and every acknowledged write
//! reads back on every replica of its group.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conclave_core::engine::{
    CycleView, Engine, EngineConfig, EngineError, EngineHandle, EngineProbe, HostedGroupStart,
    ReadConsistency, ReadQuery, ReadResult,
};
use conclave_core::kv::{Condition, KvCommand, KvRequest, KvResponse, RequestError};
use conclave_core::raft::{ClusterConfig, EntryPayload, LogIndex, NodeId, Role, Term};
use conclave_core::seams::Consensus;
use conclave_core::shard::{HostConfig, ShardId, ShardMap, SlotCount};
use conclave_core::storage::{SharedLog, WalOptions};
use conclave_core::transport::tcp::{TcpTransport, TcpTransportConfig};
use conclave_sim::clock::SimClock;
use conclave_sim::disk::DiskFaults;
use conclave_sim::fs::SimFs;
use conclave_sim::network::TurmoilNetwork;
use conclave_sim::observer::payload_hash;
use conclave_sim::trace::TraceHash;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NODES: u64 = 5;
const SHARDS: u32 = 6;
/// Replicas per shard: each node hosts some groups, not all, and each pair of nodes shares a
/// different set of them.
const REPLICATION: usize = 3;
const PEER_PORT: u16 = 7100;
const WRITES: u32 = 240;
/// Faults are drawn over this much simulated time from the start.
const FAULT_MS: u64 = 8_000;

fn peers() -> BTreeMap<NodeId, String> {
    (1..=NODES).map(|n| (NodeId(n), format!("n{n}:{PEER_PORT}"))).collect()
}

/// The configuration a group starts with: its replicas in the map.
fn group_config(map: &ShardMap, shard: ShardId) -> ClusterConfig {
    let replicas = &map.shard(shard).expect("a shard of the map").replicas;
    let mut config = ClusterConfig::with_voters(replicas.iter().copied());
    config.addresses = peers();
    config
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The map the cluster is created with: `SHARDS` shards over 64 slots, `REPLICATION` replicas
/// each, placed by rendezvous hashing. Every node computes it at its start, as a node given the
/// same bootstrap flags would; the client installs it in the meta group.
fn shard_map() -> ShardMap {
    let slots = SlotCount::new(64).expect("64 slots");
    let members: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
    ShardMap::placed(slots, u64::from(SHARDS), &members, REPLICATION).expect("a valid map")
}

/// What the hosts, the client and the test share. It survives crashes (the hosts' software
/// restarts from its disk; this is the test's own bookkeeping).
#[derive(Default)]
struct World {
    /// The map the client installs in the meta group.
    map: Option<Arc<ShardMap>>,
    /// The map as a replica of the meta group last published it: how nodes without such a
    /// replica learn it (as they would by watching the meta group from afar).
    published_map: RefCell<Option<Arc<ShardMap>>>,
    /// Writes sent to a shard that does not own their key, and refused.
    misrouted_refused: Cell<u32>,
    /// The running incarnation's handles, by node and shard; a crashed node has none.
    handles: RefCell<BTreeMap<u64, BTreeMap<ShardId, EngineHandle>>>,
    incarnations: RefCell<BTreeMap<u64, u64>>,
    clocks: BTreeMap<u64, SimClock>,
    /// The leader seen for each group and term.
    leaders: RefCell<BTreeMap<(ShardId, Term), NodeId>>,
    /// The entry applied at each index of each group: (term, payload hash).
    applied: RefCell<BTreeMap<(ShardId, LogIndex), (Term, u64)>>,
    violations: RefCell<Vec<String>>,
    /// Set by the test once every fault is healed: the client then checks what was kept.
    healed: Cell<bool>,
    /// Set by the client when it is done.
    acknowledged_writes: Cell<u32>,
    entries_applied: Cell<u64>,
    snapshots_installed: Cell<u64>,
    /// Every observed cycle's node, group, term and applied entries, in order.
    trace: RefCell<TraceHash>,
}

impl World {
    fn violation(&self, what: String) {
        self.violations.borrow_mut().push(what);
    }

    /// The handle of `shard` at the node that leads it, if a running node says it does.
    fn leader_handle(&self, shard: ShardId) -> Option<EngineHandle> {
        let handles = self.handles.borrow();
        handles
            .values()
            .filter_map(|groups| groups.get(&shard))
            .find_map(|handle| (handle.status().role == Role::Leader).then(|| handle.clone()))
    }
}

struct Probe {
    node: NodeId,
    world: Rc<World>,
}

impl EngineProbe for Probe {
    fn observe(&mut self, view: CycleView<'_>) {
        let mut trace = self.world.trace.borrow_mut();
        trace.add(self.node.0);
        trace.add(u64::from(view.shard.0));
        trace.add(view.raft.term());
        for entry in view.applied {
            trace.add(entry.index);
        }
        trace.add(now_ms());
        drop(trace);
        if view.raft.role() == Role::Leader {
            let mut leaders = self.world.leaders.borrow_mut();
            let leader = *leaders.entry((view.shard, view.raft.term())).or_insert(self.node);
            if leader != self.node {
                let term = view.raft.term();
                drop(leaders);
                self.world.violation(format!(
                    "{}: {leader} and {} both led term {term}",
                    view.shard, self.node
                ));
            }
        }
        if view.snapshot_installed.is_some() {
            self.world.snapshots_installed.set(self.world.snapshots_installed.get() + 1);
        }
        for entry in view.applied {
            // No group applies a write of a key the map gives to another.
            if let (Some(map), EntryPayload::Command(bytes)) = (&self.world.map, &entry.payload)
                && let Ok(request) = KvRequest::decode(bytes)
            {
                for key in request.command.point_keys() {
                    let owner = map.shard_of_key(key.as_bytes());
                    if owner != view.shard {
                        self.world.violation(format!(
                            "{} applied a write of {key:?} at {} though {owner} owns it",
                            view.shard, self.node
                        ));
                    }
                }
            }
            let seen = (entry.term, payload_hash(entry));
            self.world.entries_applied.set(self.world.entries_applied.get() + 1);
            let mut applied = self.world.applied.borrow_mut();
            let first = *applied.entry((view.shard, entry.index)).or_insert(seen);
            if first != seen {
                drop(applied);
                self.world.violation(format!(
                    "{}: {} applied {seen:?} at index {}, another node {first:?}",
                    view.shard, self.node, entry.index
                ));
            }
        }
    }
}

fn wal_options() -> WalOptions {
    // Small segments and snapshots every few dozen entries: runs roll, compact, and send
    // snapshots (inside node batches) to nodes that come back behind.
    WalOptions { segment_bytes: 64 * 1024, max_record_bytes: 16 * 1024, ..WalOptions::default() }
}

async fn node_main(world: Rc<World>, node: u64, seed: u64) -> turmoil::Result {
    let incarnation = {
        let mut incarnations = world.incarnations.borrow_mut();
        let count = incarnations.entry(node).or_default();
        *count += 1;
        *count
    };
    let id = NodeId(node);
    let node_seed = seed ^ (node << 48) ^ (incarnation << 32);
    let clock = world.clocks[&node].clone();
    let fs = SimFs::new(DiskFaults::default(), node_seed, 1);
    let map = shard_map();
    let hosted: Vec<ShardId> = map.shards_on(id).collect();
    let (mut log, opened) = SharedLog::open(fs, "/data", &hosted, wal_options()).await?;
    let mut groups = Vec::new();
    for (shard, (storage, recovered)) in opened {
        let recovered = recovered.with_initial_config(&group_config(&map, shard));
        groups.push(HostedGroupStart {
            shard,
            restored: recovered.restored,
            snapshot_data: recovered.snapshot_data,
            storage,
        });
    }
    // Small chunks: every snapshot is streamed in several pieces.
    let transport_config = TcpTransportConfig {
        cluster_id: seed,
        snapshot_chunk_bytes: 512,
        ..TcpTransportConfig::default()
    };
    let transport = TcpTransport::start(
        TurmoilNetwork,
        clock.clone(),
        id,
        &format!("0.0.0.0:{PEER_PORT}"),
        &peers(),
        transport_config,
        node_seed,
    )
    .await?;
    let mut config = EngineConfig::new(id);
    config.snapshot_every_entries = 10;
    config.retained_log_entries = 2;
    let host_config = HostConfig::for_raft(&config.raft);
    let (engine, handles) =
        Engine::hosting(config, host_config, groups, transport, clock, node_seed)?;
    let engine = engine.with_probe(Box::new(Probe { node: id, world: world.clone() }));
    let any_handle = handles.values().next().expect("every node hosts a group").clone();
    let meta = handles.get(&ShardId::META).cloned();
    world.handles.borrow_mut().insert(node, handles);
    // The node follows the meta group's map: as its own replica there applies it, or, without
    // one, as another node's replica published it.
    let follow_world = world.clone();
    let follow = async move {
        let Some(meta) = meta else {
            loop {
                let published = follow_world.published_map.borrow().clone();
                if let Some(map) = published {
                    any_handle.follow_shard_map(map);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let mut status = meta.status_receiver();
        loop {
            let map = status.borrow_and_update().shard_map.clone();
            if let Some(map) = map {
                meta.follow_shard_map(map.clone());
                *follow_world.published_map.borrow_mut() = Some(map);
            }
            if status.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
        }
    };
    let result = tokio::select! {
        result = engine.run(log.writer()) => result,
        () = follow => unreachable!("following never ends"),
    };
    world.handles.borrow_mut().remove(&node);
    result.map_err(|failure| failure.to_string().into())
}

/// Writes `WRITES` keys spread over the groups, each retried at the group's leader until it is
/// acknowledged; in bursts, so that groups quiesce in between. Then, once the test has healed
/// every fault, reads every key back on every node.
async fn client(world: Rc<World>) -> turmoil::Result {
    let map = world.map.clone().expect("the test draws a map");
    install_map(&world, &map).await;
    let mut acknowledged: BTreeMap<(ShardId, String), String> = BTreeMap::new();
    for i in 0..WRITES {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let shard = map.shard_of_key(key.as_bytes());
        if i % 8 == 0 {
            send_to_the_wrong_shard(&world, &map, &key).await;
        }
        for _attempt in 0..400 {
            let Some(handle) = world.leader_handle(shard) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let command = KvCommand::Put {
                key: key.clone(),
                value: Bytes::from(value.clone()),
                ttl_ms: None,
                condition: Condition::Always,
            };
            let answer = tokio::time::timeout(Duration::from_secs(2), handle.write(command, None));
            if let Ok(Ok(_)) = answer.await {
                acknowledged.insert((shard, key.clone()), value.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Bursts of 40 writes with idle gaps longer than the quiescence delay.
        let gap_ms = if i % 40 == 39 { 600 } else { 15 };
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    world.acknowledged_writes.set(acknowledged.len() as u32);
    while !world.healed.get() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every replica of every group catches up and holds every acknowledged write.
    for ((shard, key), value) in &acknowledged {
        for node in map.shard(*shard).expect("a shard").replicas.iter().map(|id| id.0) {
            let mut last = None;
            for _ in 0..600 {
                let handle =
                    world.handles.borrow().get(&node).and_then(|groups| groups.get(shard).cloned());
                if let Some(handle) = handle {
                    let query = ReadQuery::Get { key: key.clone() };
                    if let Ok(ReadResult::Value { value: found, .. }) =
                        handle.read(query, ReadConsistency::Stale).await
                    {
                        last = found.map(|(found, _)| found);
                        if last.as_deref() == Some(value.as_bytes()) {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if last.as_deref() != Some(value.as_bytes()) {
                world.violation(format!(
                    "n{node} {shard}: acknowledged {key}={value} reads back as {last:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Proposes `map` to the meta group until it holds it (a lost answer is retried; the epoch
/// rule refuses the second copy, which says the first was taken).
async fn install_map(world: &World, map: &ShardMap) {
    loop {
        if let Some(handle) = world.leader_handle(ShardId::META) {
            let command = KvCommand::SetShardMap(map.clone());
            let answer = tokio::time::timeout(Duration::from_secs(2), handle.write(command, None));
            match answer.await {
                Ok(Ok(KvResponse::ShardMapSet { .. })) => return,
                Ok(Ok(KvResponse::Error(RequestError::ShardMapEpoch {
                    current_epoch, ..
                }))) if current_epoch == map.epoch() => {
                    return;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a write of `key` to the leader of a shard that does not own it, at a node that
/// follows the map: it must be refused with the owner and the epoch, and never applied.
async fn send_to_the_wrong_shard(world: &World, map: &ShardMap, key: &str) {
    let owner = map.shard_of_key(key.as_bytes());
    let wrong = ShardId((owner.0 + 1) % SHARDS);
    let Some(handle) = world.leader_handle(wrong) else { return };
    if handle.followed_shard_map().is_none() {
        return; // this node has not applied the map yet: the test would misroute, not it
    }
    let command = KvCommand::Put {
        key: key.to_owned(),
        value: Bytes::from_static(b"misrouted"),
        ttl_ms: None,
        condition: Condition::Always,
    };
    match handle.write(command, None).await {
        Err(EngineError::WrongShard { owner: told, epoch }) if told == owner.0 && epoch == 1 => {
            world.misrouted_refused.set(world.misrouted_refused.get() + 1);
        }
        other => world.violation(format!("{wrong} took a write of {key:?} ({owner}'s): {other:?}")),
    }
}

struct SeedResult {
    trace_hash: u64,
    acknowledged_writes: u32,
    entries_applied: u64,
    snapshots_installed: u64,
    misrouted_refused: u32,
    crashes: u32,
    partitions: u32,
}

fn run_seed(seed: u64) -> Result<SeedResult, String> {
    let world = Rc::new(World {
        clocks: (1..=NODES).map(|n| (n, SimClock::new(1_700_000_000_000))).collect(),
        map: Some(Arc::new(shard_map())),
        ..World::default()
    });
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(300))
        .rng_seed(seed)
        .enable_random_order()
        .build();
    for node in 1..=NODES {
        let world = world.clone();
        sim.host(format!("n{node}"), move || node_main(world.clone(), node, seed));
    }
    sim.client("client", client(world.clone()));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut crashes, mut partitions) = (0, 0);
    // One fault at a time: a node crashed (and restarted later) or cut from the others.
    let mut next_fault_ms = 500;
    let mut heal_at_ms: Option<(u64, u64, bool)> = None;
    loop {
        let now = now_ms_of(&sim);
        if let Some((at_ms, node, crashed)) = heal_at_ms
            && now >= at_ms
        {
            let host = format!("n{node}");
            if crashed {
                sim.bounce(host.as_str());
            } else {
                for other in (1..=NODES).filter(|other| *other != node) {
                    sim.repair(host.as_str(), format!("n{other}").as_str());
                }
            }
            heal_at_ms = None;
        }
        if heal_at_ms.is_none() && now < FAULT_MS && now >= next_fault_ms {
            let node = rng.random_range(1..=NODES);
            let host = format!("n{node}");
            let crashed = rng.random_bool(0.5);
            if crashed {
                sim.crash(host.as_str());
                crashes += 1;
            } else {
                for other in (1..=NODES).filter(|other| *other != node) {
                    sim.partition(host.as_str(), format!("n{other}").as_str());
                }
                partitions += 1;
            }
            heal_at_ms = Some((now + rng.random_range(300..1_500), node, crashed));
            next_fault_ms = now + rng.random_range(1_500..3_000);
        }
        if now >= FAULT_MS && heal_at_ms.is_none() {
            world.healed.set(true);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => return Err(format!("seed {seed}: {error}")),
        }
        if let Some(violation) = world.violations.borrow().first() {
            return Err(format!("seed {seed}: {violation}"));
        }
    }
    if let Some(violation) = world.violations.borrow().first() {
        return Err(format!("seed {seed}: {violation}"));
    }
    Ok(SeedResult {
        trace_hash: world.trace.borrow().value(),
        acknowledged_writes: world.acknowledged_writes.get(),
        entries_applied: world.entries_applied.get(),
        snapshots_installed: world.snapshots_installed.get(),
        misrouted_refused: world.misrouted_refused.get(),
        crashes,
        partitions,
    })
}

fn now_ms_of(sim: &turmoil::Sim<'_>) -> u64 {
    sim.elapsed().as_millis() as u64
}

#[test]
fn hosted_groups_survive_crashes_and_partitions() {
    let seeds: u64 = std::env::var("HOSTED_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let (mut crashes, mut partitions, mut snapshots, mut misrouted) = (0, 0, 0, 0);
    for seed in 0..seeds {
        let result = run_seed(seed).unwrap_or_else(|failure| panic!("{failure}"));
        // Faults may delay writes but not lose them: the client retries each until acknowledged.
        assert_eq!(result.acknowledged_writes, WRITES, "seed {seed}: writes never acknowledged");
        assert!(
            result.entries_applied >= u64::from(WRITES) * REPLICATION as u64,
            "seed {seed}: only {} entries applied",
            result.entries_applied
        );
        crashes += result.crashes;
        partitions += result.partitions;
        snapshots += result.snapshots_installed;
        misrouted += result.misrouted_refused;
    }
    assert!(misrouted > 0, "no misrouted write was sent to a node following the map");
    // The seeds must have carried both kinds of fault and sent snapshots to nodes that came
    // back behind, or this test checks less than it says.
    assert!(crashes > 0 && partitions > 0, "{crashes} crashes, {partitions} partitions drawn");
    assert!(snapshots > 0, "no snapshot was installed in {seeds} seeds");
}

#[test]
fn a_hosted_seed_replays_identically() {
    let first = run_seed(3).expect("seed 3");
    let second = run_seed(3).expect("seed 3 again");
    assert_eq!(first.trace_hash, second.trace_hash, "the same seed ran differently");
    assert_eq!(first.entries_applied, second.entries_applied);
}
