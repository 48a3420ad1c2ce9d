//! The engine hosting replicas of many Raft groups per node (`Engine::hosting`), end to end over
//! in-memory seams: every group elects and commits on its own, their messages travel in one
//! batch per node pair, idle groups stop costing messages, a dead node's groups are led again,
//! and a restarted node brings every group back. Time is tokio's paused clock, so the tests are
//! deterministic and instant.

use crate::engine_support;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conclave_core::engine::{
    Engine, EngineConfig, EngineError, EngineHandle, HostedGroupStart, ReadConsistency, ReadQuery,
    ReadResult,
};
use conclave_core::kv::{Condition, KvCommand, KvResponse, RequestError, Txn, TxnOp};
use conclave_core::raft::memory_cluster::DurableState;
use conclave_core::raft::{ClusterConfig, LogIndex, NodeId, Role, Snapshot};
use conclave_core::seams::Consensus;
use conclave_core::seams::storage::{
    MemoryStorage, Storage, StorageFailure, StorageJob, StorageProgress,
};
use conclave_core::seams::transport::MemoryNetwork;
use conclave_core::shard::{HostConfig, ShardId, ShardMap, SlotCount};
use engine_support::TestClock;
use tokio::task::JoinHandle;

/// `MemoryStorage` that can ask its group to compact, as a shared log does for a group whose
/// old records keep its segments (`storage/shared_log.rs`).
struct AskingStorage {
    inner: MemoryStorage,
    compaction_wanted: Rc<Cell<LogIndex>>,
}

impl Storage for AskingStorage {
    fn submit(&mut self, job: StorageJob) -> Result<(), StorageFailure> {
        self.inner.submit(job)
    }

    async fn progress_changed(&mut self) -> Result<StorageProgress, StorageFailure> {
        self.inner.progress_changed().await
    }

    async fn load_snapshot(&mut self) -> Result<Option<Snapshot>, StorageFailure> {
        self.inner.load_snapshot().await
    }

    fn compaction_wanted(&self) -> LogIndex {
        self.compaction_wanted.get()
    }
}

/// `nodes` nodes, each hosting a replica of every one of `shards` groups (all groups have the
/// same voters).
struct HostedCluster {
    network: MemoryNetwork,
    clock: TestClock,
    shards: u32,
    members: ClusterConfig,
    /// Each node's durable state of each group.
    durable: BTreeMap<(NodeId, ShardId), Rc<RefCell<DurableState>>>,
    /// What each node's storage of each group asks it to compact to.
    compaction_wanted: BTreeMap<(NodeId, ShardId), Rc<Cell<LogIndex>>>,
    handles: BTreeMap<NodeId, BTreeMap<ShardId, EngineHandle>>,
    tasks: BTreeMap<NodeId, JoinHandle<()>>,
    /// Starts so far, for a different seed at every start.
    starts: u64,
}

impl HostedCluster {
    fn new(nodes: u64, shards: u32) -> Self {
        let mut members = ClusterConfig::with_voters((1..=nodes).map(NodeId));
        members.addresses = (1..=nodes).map(|id| (NodeId(id), format!("n{id}"))).collect();
        let mut cluster = HostedCluster {
            network: MemoryNetwork::default(),
            clock: TestClock::starting_now(),
            shards,
            members,
            durable: BTreeMap::new(),
            compaction_wanted: BTreeMap::new(),
            handles: BTreeMap::new(),
            tasks: BTreeMap::new(),
            starts: 0,
        };
        for id in 1..=nodes {
            for shard in 0..shards {
                cluster.durable.insert((NodeId(id), ShardId(shard)), Rc::default());
                cluster.compaction_wanted.insert((NodeId(id), ShardId(shard)), Rc::default());
            }
            cluster.start(NodeId(id));
        }
        cluster
    }

    fn start(&mut self, id: NodeId) {
        self.starts += 1;
        let config = EngineConfig::new(id);
        let host_config = HostConfig::for_raft(&config.raft);
        let mut groups = Vec::new();
        let mut writers = Vec::new();
        for shard in (0..self.shards).map(ShardId) {
            let durable = self.durable[&(id, shard)].clone();
            let restored = durable.borrow().restored(&self.members);
            let snapshot_data = durable.borrow().snapshot.as_ref().map(|s| s.data.clone());
            let (inner, writer) = MemoryStorage::new(durable, self.clock.clone(), 1);
            let compaction_wanted = self.compaction_wanted[&(id, shard)].clone();
            let storage = AskingStorage { inner, compaction_wanted };
            groups.push(HostedGroupStart { shard, restored, snapshot_data, storage });
            writers.push(writer);
        }
        let transport = self.network.join(id);
        let seed = id.0 * 1_000 + self.starts;
        let (engine, handles) =
            Engine::hosting(config, host_config, groups, transport, self.clock.clone(), seed)
                .expect("engine");
        let writers = async move { futures::future::try_join_all(writers).await.map(|_| ()) };
        let task = tokio::task::spawn_local(async move {
            let _ = engine.run(writers).await;
        });
        self.handles.insert(id, handles);
        self.tasks.insert(id, task);
    }

    fn crash(&mut self, id: NodeId) {
        if let Some(task) = self.tasks.remove(&id) {
            task.abort();
        }
        self.handles.remove(&id);
    }

    fn handle(&self, id: NodeId, shard: ShardId) -> &EngineHandle {
        &self.handles[&id][&shard]
    }

    /// The leader of `shard` among running nodes, once it has applied all it committed.
    async fn wait_for_leader(&self, shard: ShardId) -> NodeId {
        for _ in 0..2_000 {
            for handles in self.handles.values() {
                let status = handles[&shard].status();
                if status.role == Role::Leader && status.applied_index >= status.commit_index {
                    return status.id;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{shard} has no leader within 20 s");
    }

    async fn put(&self, at: NodeId, shard: ShardId, key: &str, value: &str) {
        let command = KvCommand::Put {
            key: key.to_string(),
            value: Bytes::from(value.to_string()),
            ttl_ms: None,
            condition: Condition::Always,
        };
        self.handle(at, shard).write(command, None).await.expect("put at the leader");
    }

    async fn get(
        &self,
        at: NodeId,
        shard: ShardId,
        key: &str,
        consistency: ReadConsistency,
    ) -> Result<Option<Bytes>, EngineError> {
        let query = ReadQuery::Get { key: key.to_string() };
        match self.handle(at, shard).read(query, consistency).await? {
            ReadResult::Value { value, .. } => Ok(value.map(|(value, _)| value)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

const TEST_DEADLINE: Duration = Duration::from_secs(120);

fn run_local<F: std::future::Future<Output = ()>>(test: F) {
    engine_support::run_local(TEST_DEADLINE, test)
}

fn bytes(value: &str) -> Option<Bytes> {
    Some(Bytes::from(value.to_string()))
}

#[test]
fn every_group_elects_and_commits_and_keeps_its_own_keys() {
    run_local(async {
        let cluster = HostedCluster::new(3, 4);
        for shard in (0..4).map(ShardId) {
            let leader = cluster.wait_for_leader(shard).await;
            cluster.put(leader, shard, "k", &format!("v{}", shard.0)).await;
        }
        for shard in (0..4).map(ShardId) {
            for id in (1..=3).map(NodeId) {
                // A linearizable read at a follower goes through the group's own leader.
                let value = cluster.get(id, shard, "k", ReadConsistency::Linearizable).await;
                assert_eq!(value.expect("get"), bytes(&format!("v{}", shard.0)), "{id} {shard}");
            }
        }
        // A key written in one group does not exist in another.
        let leader = cluster.wait_for_leader(ShardId(1)).await;
        cluster.put(leader, ShardId(1), "only-in-1", "x").await;
        let elsewhere =
            cluster.get(leader, ShardId(2), "only-in-1", ReadConsistency::Linearizable).await;
        assert_eq!(elsewhere.expect("get"), None);
        // A write at a follower of a group is refused with that group's leader.
        let follower = (1..=3).map(NodeId).find(|id| *id != leader).expect("a follower");
        let command = KvCommand::Put {
            key: "k".into(),
            value: Bytes::from_static(b"w"),
            ttl_ms: None,
            condition: Condition::Always,
        };
        let refused = cluster.handle(follower, ShardId(1)).write(command, None).await;
        assert_eq!(refused, Err(EngineError::NotLeader { leader: Some(leader) }));
    });
}

#[test]
fn idle_groups_stop_sending_their_nodes_sleep_and_a_write_wakes_its_group() {
    run_local(async {
        const SHARDS: u32 = 8;
        let cluster = HostedCluster::new(3, SHARDS);
        for shard in (0..SHARDS).map(ShardId) {
            let leader = cluster.wait_for_leader(shard).await;
            cluster.put(leader, shard, "k", "1").await;
        }
        // Long enough for every leader to quiesce its group.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_ms = 5_000;
        let before = cluster.network.delivered();
        let sleeps_before = cluster.clock.finished_sleeps();
        tokio::time::sleep(Duration::from_millis(idle_ms)).await;
        let idle_messages = cluster.network.delivered() - before;
        // The test's own sleep is one of them.
        let timer_wakes = cluster.clock.finished_sleeps() - sleeps_before - 1;
        // Quiescent, the node pairs exchange only their pings: one batch per ping interval each
        // way between each pair, whatever the number of groups. With the groups awake (no
        // quiescence) this cluster exchanges six times as many batches in the same time.
        let config = EngineConfig::new(NodeId(1));
        let ping_ms =
            u64::from(HostConfig::for_raft(&config.raft).ping_interval_ticks) * config.tick_ms;
        let directed_pairs = 3 * 2;
        let pings = directed_pairs * idle_ms / ping_ms;
        assert!(
            idle_messages <= pings + directed_pairs,
            "{idle_messages} messages in {idle_ms} ms idle; pings alone are {pings}"
        );
        assert!(idle_messages > 0, "pings must go on, or no node could tell a peer died");
        // Ticking every tick, the three engines would be woken by their clock at least once a
        // tick each; idle, they sleep past the ticks that only count their peers' silence, and
        // wake for pings, peer timeouts and the sweep of all groups (every 100 ms) only.
        let ticks = 3 * idle_ms / config.tick_ms;
        assert!(
            3 * timer_wakes < ticks,
            "{timer_wakes} wake-ups by the clock in {idle_ms} ms idle, for {ticks} ticks"
        );
        // A write to a quiescent group wakes it and commits.
        let leader = cluster.wait_for_leader(ShardId(5)).await;
        cluster.put(leader, ShardId(5), "k", "2").await;
        let follower = (1..=3).map(NodeId).find(|id| *id != leader).expect("a follower");
        let value = cluster.get(follower, ShardId(5), "k", ReadConsistency::Linearizable).await;
        assert_eq!(value.expect("get"), bytes("2"));
    });
}

#[test]
fn a_dead_nodes_groups_are_led_again_and_it_recovers_every_group() {
    run_local(async {
        const SHARDS: u32 = 4;
        let mut cluster = HostedCluster::new(3, SHARDS);
        for shard in (0..SHARDS).map(ShardId) {
            let leader = cluster.wait_for_leader(shard).await;
            cluster.put(leader, shard, "before", "1").await;
        }
        // Let every group quiesce: a dead node must be noticed without group heartbeats.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = cluster.wait_for_leader(ShardId(0)).await;
        cluster.crash(victim);
        for shard in (0..SHARDS).map(ShardId) {
            let leader = cluster.wait_for_leader(shard).await;
            assert_ne!(leader, victim, "{shard} is led by a dead node");
            cluster.put(leader, shard, "after", "2").await;
        }
        // The dead node restarts from every group's durable state and catches up in each.
        cluster.start(victim);
        for shard in (0..SHARDS).map(ShardId) {
            for _ in 0..1_000 {
                let value = cluster.get(victim, shard, "after", ReadConsistency::Stale).await;
                if value.expect("stale read") == bytes("2") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let before = cluster.get(victim, shard, "before", ReadConsistency::Stale).await;
            assert_eq!(before.expect("get"), bytes("1"), "{shard} lost a write on restart");
            let after = cluster.get(victim, shard, "after", ReadConsistency::Stale).await;
            assert_eq!(after.expect("get"), bytes("2"), "{shard} did not catch up");
        }
    });
}

#[test]
fn a_group_asked_by_its_storage_compacts_before_its_snapshot_schedule() {
    run_local(async {
        let cluster = HostedCluster::new(3, 2);
        let quiet = ShardId(1);
        let leader = cluster.wait_for_leader(quiet).await;
        for i in 0..3 {
            cluster.put(leader, quiet, &format!("k{i}"), "v").await;
        }
        let applied = cluster.handle(leader, quiet).status().applied_index;
        let durable = cluster.durable[&(leader, quiet)].clone();
        assert!(durable.borrow().snapshot.is_none(), "far below the snapshot schedule");
        assert!(durable.borrow().entries.iter().any(|entry| entry.index <= applied));

        // The storage asks for the log up to what the group applied to go.
        cluster.compaction_wanted[&(leader, quiet)].set(applied);
        for _ in 0..500 {
            if durable.borrow().snapshot.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (snapshot_index, first_entry) = {
            let state = durable.borrow();
            let snapshot = state.snapshot.as_ref().expect("a snapshot taken for the request");
            (snapshot.meta.last_index, state.entries.first().map(|entry| entry.index))
        };
        assert!(snapshot_index >= applied);
        assert!(
            first_entry.is_none_or(|index| index > applied),
            "the log is compacted past the requested index, retained entries included"
        );
        // The group's other replicas were not asked: their logs stay.
        let follower = (1..=3).map(NodeId).find(|id| *id != leader).expect("a follower");
        assert!(cluster.durable[&(follower, quiet)].borrow().snapshot.is_none());
        // The group goes on serving.
        cluster.put(leader, quiet, "after", "v").await;
    });
}

#[test]
fn the_meta_groups_shard_map_reaches_every_node_and_only_the_meta_group() {
    run_local(async {
        let cluster = HostedCluster::new(3, 2);
        let meta = ShardId::META;
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let map = ShardMap::initial(SlotCount::DEFAULT, 2, &members).expect("a valid map");
        let leader = cluster.wait_for_leader(meta).await;
        let answer = cluster.handle(leader, meta).write(KvCommand::SetShardMap(map.clone()), None);
        assert_eq!(answer.await, Ok(KvResponse::ShardMapSet { epoch: 1 }));
        // Every replica of the meta group publishes the map once it has applied it.
        for id in (1..=3).map(NodeId) {
            let mut status = cluster.handle(id, meta).status_receiver();
            let followed = status.wait_for(|status| status.shard_map.is_some());
            let published = followed.await.expect("the engine runs").shard_map.clone();
            assert_eq!(published.as_deref(), Some(&map), "{id}");
            assert!(cluster.handle(id, ShardId(1)).shard_map().is_none(), "{id}: not shard 1");
        }
        // The next epoch replaces it everywhere; the old epoch again is refused.
        let next = map.changed(|_| Ok(())).expect("the next epoch");
        let answer = cluster.handle(leader, meta).write(KvCommand::SetShardMap(next), None);
        assert_eq!(answer.await, Ok(KvResponse::ShardMapSet { epoch: 2 }));
        let stale = cluster.handle(leader, meta).write(KvCommand::SetShardMap(map), None).await;
        assert_eq!(
            stale,
            Ok(KvResponse::Error(RequestError::ShardMapEpoch {
                current_epoch: 2,
                proposed_epoch: 1
            }))
        );
        for id in (1..=3).map(NodeId) {
            let mut status = cluster.handle(id, meta).status_receiver();
            let epoch_two =
                status.wait_for(|status| status.shard_map.as_ref().is_some_and(|m| m.epoch() == 2));
            epoch_two.await.expect("the engine runs");
        }
    });
}

#[test]
fn a_key_is_served_only_through_the_shard_that_owns_it_in_the_followed_map() {
    run_local(async {
        let cluster = HostedCluster::new(3, 2);
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let map = Arc::new(ShardMap::initial(SlotCount::DEFAULT, 2, &members).expect("a map"));
        let key_of = |shard: ShardId| {
            (0..).map(|i| format!("key-{i}")).find(|key| map.shard_of_key(key.as_bytes()) == shard)
        };
        let (key0, key1) = (key_of(ShardId(0)).expect("a key"), key_of(ShardId(1)).expect("a key"));
        let leader = cluster.wait_for_leader(ShardId(0)).await;
        // Before any map is followed, a group serves whatever it is asked (a single group).
        cluster.put(leader, ShardId(0), &key1, "before").await;

        for id in (1..=3).map(NodeId) {
            assert!(cluster.handle(id, ShardId(0)).follow_shard_map(map.clone()), "{id}");
        }
        // One handle's follow is every handle's of the node; an older map is not taken.
        let other_shard = cluster.handle(leader, ShardId(1));
        assert_eq!(other_shard.followed_shard_map().map(|m| m.epoch()), Some(1));
        assert!(!other_shard.follow_shard_map(map.clone()));

        let wrong = EngineError::WrongShard { owner: 1, epoch: 1 };
        let command = |key: &str| KvCommand::Put {
            key: key.to_owned(),
            value: Bytes::from_static(b"v"),
            ttl_ms: None,
            condition: Condition::Always,
        };
        let refused = cluster.handle(leader, ShardId(0)).write(command(&key1), None).await;
        assert_eq!(refused, Err(wrong.clone()));
        cluster.put(leader, ShardId(0), &key0, "mine").await;
        let leader1 = cluster.wait_for_leader(ShardId(1)).await;
        cluster.put(leader1, ShardId(1), &key1, "mine").await;
        // Reads too, whatever their consistency, and the local path declines.
        for consistency in
            [ReadConsistency::Linearizable, ReadConsistency::Lease, ReadConsistency::Stale]
        {
            let read = cluster.get(leader, ShardId(0), &key1, consistency).await;
            assert_eq!(read, Err(wrong.clone()), "{consistency:?}");
        }
        let query = ReadQuery::Get { key: key1.clone() };
        let handle = cluster.handle(leader, ShardId(0));
        assert_eq!(handle.read_locally(&query, ReadConsistency::Stale, &|| 0), None);
        // A transaction naming a key of another shard anywhere is refused.
        let txn = KvCommand::Txn(Txn {
            compares: Vec::new(),
            success: vec![TxnOp::Get { key: key0.clone() }],
            failure: vec![TxnOp::Delete { key: key1.clone() }],
        });
        assert_eq!(handle.write(txn, None).await, Err(wrong));
    });
}

#[test]
fn a_follower_acknowledges_the_groups_of_one_sync_in_one_message() {
    run_local(async {
        const SHARDS: u32 = 8;
        let cluster = HostedCluster::new(3, SHARDS);
        let leader = NodeId(1);
        for shard in (0..SHARDS).map(ShardId) {
            let current = cluster.wait_for_leader(shard).await;
            if current != leader {
                let handle = cluster.handle(current, shard);
                handle.transfer_leadership(leader).await.expect("transfer");
            }
            while cluster.wait_for_leader(shard).await != leader {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // One write to every group at once: node 1 sends each follower one batch of all eight
        // groups' appends, and a follower's storages report them durable together (their syncs
        // take the same time; a shared log makes them one sync).
        let before = cluster.network.delivered_from(NodeId(2));
        let writes = (0..SHARDS).map(|shard| cluster.put(leader, ShardId(shard), "k", "v"));
        futures::future::join_all(writes).await;
        let acknowledgements = cluster.network.delivered_from(NodeId(2)) - before;
        // Taken one group per turn of its loop, the follower would answer in a message per
        // group.
        assert!(
            acknowledgements < u64::from(SHARDS) / 2,
            "node 2 sent {acknowledgements} messages for one batch of {SHARDS} groups' writes"
        );
    });
}
