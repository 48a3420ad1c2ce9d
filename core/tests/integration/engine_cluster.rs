//! The engine end to end over in-memory seams: real Raft, real key-value state machine, the
//! driver's batching, reads at each consistency level, TTLs, sessions, snapshots and failover.
//! Time is tokio's paused clock, so the tests are deterministic and instant.

use crate::engine_support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use conclave_core::engine::{
    Engine, EngineConfig, EngineError, EngineHandle, ReadConsistency, ReadQuery, ReadResult,
};
use conclave_core::kv::{Condition, KvCommand, KvResponse, SessionTag};
use conclave_core::raft::memory_cluster::DurableState;
use conclave_core::raft::{
    ClusterConfig, LeaseConfig, MembershipChange, MembershipError, NodeId, Role,
};
use conclave_core::seams::Consensus;
use conclave_core::seams::clock::Clock;
use conclave_core::seams::storage::MemoryStorage;
use conclave_core::seams::transport::MemoryNetwork;
use engine_support::TestClock;
use tokio::task::JoinHandle;

struct TestCluster {
    network: MemoryNetwork,
    clock: TestClock,
    durable: BTreeMap<NodeId, Rc<RefCell<DurableState>>>,
    handles: BTreeMap<NodeId, EngineHandle>,
    tasks: BTreeMap<NodeId, JoinHandle<()>>,
    members: ClusterConfig,
    snapshot_every_entries: u64,
    lease_reads: bool,
}

impl TestCluster {
    fn new(size: u64, snapshot_every_entries: u64) -> Self {
        Self::with_spares(size, 0, snapshot_every_entries)
    }

    /// `size` voters plus `spares` running nodes that are not members yet.
    fn with_spares(size: u64, spares: u64, snapshot_every_entries: u64) -> Self {
        Self::build(size, spares, snapshot_every_entries, false)
    }

    /// `size` voters whose leader answers lease reads.
    fn with_lease_reads(size: u64) -> Self {
        Self::build(size, 0, 1_000, true)
    }

    fn build(size: u64, spares: u64, snapshot_every_entries: u64, lease_reads: bool) -> Self {
        let mut members = ClusterConfig::with_voters((1..=size).map(NodeId));
        members.addresses = (1..=size + spares).map(|id| (NodeId(id), format!("n{id}"))).collect();
        let mut cluster = TestCluster {
            network: MemoryNetwork::default(),
            clock: TestClock::starting_now(),
            durable: BTreeMap::new(),
            handles: BTreeMap::new(),
            tasks: BTreeMap::new(),
            members,
            snapshot_every_entries,
            lease_reads,
        };
        for id in 1..=size + spares {
            cluster.durable.insert(NodeId(id), Rc::default());
            cluster.start(NodeId(id));
        }
        cluster
    }

    fn start(&mut self, id: NodeId) {
        let durable = self.durable[&id].clone();
        let restored = durable.borrow().restored(&self.members);
        let snapshot_data = durable.borrow().snapshot.as_ref().map(|s| s.data.clone());
        let mut config = EngineConfig::new(id);
        config.snapshot_every_entries = self.snapshot_every_entries;
        config.retained_log_entries = 5;
        if self.lease_reads {
            config.raft.lease_read = Some(LeaseConfig { max_clock_drift_ppm: 10_000 });
        }
        let (storage, writer) = MemoryStorage::new(durable, self.clock.clone(), 1);
        let transport = self.network.join(id);
        let (engine, handle) = Engine::new(
            config,
            restored,
            snapshot_data,
            transport,
            storage,
            self.clock.clone(),
            id.0,
        )
        .expect("engine");
        let task = tokio::task::spawn_local(async move {
            let _ = engine.run(writer).await;
        });
        self.handles.insert(id, handle);
        self.tasks.insert(id, task);
    }

    fn crash(&mut self, id: NodeId) {
        if let Some(task) = self.tasks.remove(&id) {
            task.abort();
        }
        self.handles.remove(&id);
    }

    async fn wait_for_leader(&self) -> NodeId {
        for _ in 0..1_000 {
            for handle in self.handles.values() {
                let status = handle.status();
                if status.role == Role::Leader && status.applied_index >= status.commit_index {
                    return status.id;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader within 10 s");
    }

    async fn put(&self, at: NodeId, key: &str, value: &str) -> Result<KvResponse, EngineError> {
        let command = KvCommand::Put {
            key: key.to_string(),
            value: Bytes::from(value.to_string()),
            ttl_ms: None,
            condition: Condition::Always,
        };
        self.handles[&at].write(command, None).await
    }

    async fn get(
        &self,
        at: NodeId,
        key: &str,
        consistency: ReadConsistency,
    ) -> Result<Option<Bytes>, EngineError> {
        match self.handles[&at].read(ReadQuery::Get { key: key.to_string() }, consistency).await? {
            ReadResult::Value { value, .. } => Ok(value.map(|(value, _)| value)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

impl TestCluster {
    /// What `at` answers on the caller's side, without its engine: `None` if it cannot.
    fn read_locally(&self, at: NodeId, key: &str, consistency: ReadConsistency) -> Option<Bytes> {
        let now_ms = || self.clock.monotonic_ms();
        let query = ReadQuery::Get { key: key.to_string() };
        match self.handles[&at].read_locally(&query, consistency, &now_ms)? {
            ReadResult::Value { value, .. } => {
                Some(value.map(|(value, _)| value).unwrap_or_default())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The first lease read `at` answers locally within a second (its next heartbeat round
    /// acknowledged by a quorum grants the lease); `None` if it never does.
    async fn first_lease_read(&self, at: NodeId, key: &str) -> Option<Bytes> {
        for _ in 0..100 {
            if let Some(value) = self.read_locally(at, key, ReadConsistency::Lease) {
                return Some(value);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

/// Virtual time a test may take (see `engine_support::run_local`).
const TEST_DEADLINE: Duration = Duration::from_secs(60);

fn run_local<F: std::future::Future<Output = ()>>(test: F) {
    engine_support::run_local(TEST_DEADLINE, test)
}

#[test]
fn single_node_serves_writes_and_every_read_consistency() {
    run_local(async {
        let cluster = TestCluster::new(1, 1_000);
        let leader = cluster.wait_for_leader().await;
        cluster.put(leader, "greeting", "hello world").await.expect("put");
        for consistency in
            [ReadConsistency::Linearizable, ReadConsistency::Lease, ReadConsistency::Stale]
        {
            let value = cluster.get(leader, "greeting", consistency).await.expect("get");
            assert_eq!(value.as_deref(), Some(&b"hello world"[..]), "{consistency:?}");
        }
        assert_eq!(
            cluster.get(leader, "missing", ReadConsistency::Linearizable).await.expect("get"),
            None
        );
    });
}

#[test]
fn ttl_expires_from_the_leaders_clock_without_other_writes() {
    run_local(async {
        let cluster = TestCluster::new(3, 1_000);
        let leader = cluster.wait_for_leader().await;
        let command = KvCommand::Put {
            key: "lease".into(),
            value: Bytes::from_static(b"held"),
            ttl_ms: Some(2_000),
            condition: Condition::Always,
        };
        cluster.handles[&leader].write(command, None).await.expect("put with ttl");
        assert!(
            cluster
                .get(leader, "lease", ReadConsistency::Linearizable)
                .await
                .expect("get")
                .is_some()
        );
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(
            cluster.get(leader, "lease", ReadConsistency::Linearizable).await.expect("get"),
            None
        );
        // Every replica applied the expiry, not only the leader.
        for id in cluster.handles.keys() {
            assert_eq!(
                cluster.get(*id, "lease", ReadConsistency::Linearizable).await.expect("get"),
                None
            );
        }
    });
}

#[test]
fn a_retried_write_with_the_same_session_applies_once() {
    run_local(async {
        let cluster = TestCluster::new(3, 1_000);
        let leader = cluster.wait_for_leader().await;
        let handle = &cluster.handles[&leader];
        let register = || handle.write(KvCommand::RegisterSession, None);
        let KvResponse::SessionRegistered { client_id } = register().await.expect("register")
        else {
            panic!("registering a session returns its id");
        };
        let KvResponse::SessionRegistered { client_id: other_id } =
            register().await.expect("register")
        else {
            panic!("registering a session returns its id");
        };
        assert_ne!(client_id, other_id);
        let cas = || KvCommand::Cas {
            key: "counter".into(),
            expected: None,
            value: Bytes::from_static(b"1"),
            ttl_ms: None,
        };
        let session = Some(SessionTag { client_id, seq: 1 });
        let first = handle.write(cas(), session).await.expect("first");
        assert!(
            matches!(first, KvResponse::Put { .. }),
            "the key was absent, so the CAS succeeds: {first:?}"
        );
        // A retry (as after a timeout) must return the first answer, not apply again — applying
        // again would fail the CAS, since the key now exists.
        let retry = handle.write(cas(), session).await.expect("retry");
        assert_eq!(first, retry);
        let other = handle
            .write(cas(), Some(SessionTag { client_id: other_id, seq: 1 }))
            .await
            .expect("other");
        assert!(
            matches!(other, KvResponse::ConditionFailed { .. }),
            "another client's CAS sees the key: {other:?}"
        );
    });
}

#[test]
fn followers_redirect_writes_and_serve_linearizable_reads() {
    run_local(async {
        let cluster = TestCluster::new(3, 1_000);
        let leader = cluster.wait_for_leader().await;
        let follower = *cluster.handles.keys().find(|id| **id != leader).expect("a follower");
        match cluster.put(follower, "k", "v").await {
            Err(EngineError::NotLeader { leader: Some(hint) }) => assert_eq!(hint, leader),
            other => panic!("expected a redirect, got {other:?}"),
        }
        cluster.put(leader, "k", "v2").await.expect("put at leader");
        // A linearizable read at a follower must see the write acknowledged just before it.
        let value =
            cluster.get(follower, "k", ReadConsistency::Linearizable).await.expect("follower read");
        assert_eq!(value.as_deref(), Some(&b"v2"[..]));
    });
}

#[test]
fn a_new_leader_takes_over_when_the_leader_is_cut_off() {
    run_local(async {
        let mut cluster = TestCluster::new(3, 1_000);
        let old = cluster.wait_for_leader().await;
        cluster.put(old, "before", "1").await.expect("put");
        for id in cluster.handles.keys() {
            if *id != old {
                cluster.network.cut(old, *id);
            }
        }
        cluster.crash(old);
        let new = cluster.wait_for_leader().await;
        assert_ne!(new, old);
        cluster.put(new, "after", "2").await.expect("put at the new leader");
        assert_eq!(
            cluster
                .get(new, "before", ReadConsistency::Linearizable)
                .await
                .expect("get")
                .as_deref(),
            Some(&b"1"[..])
        );
        // The old leader restarts from its durable state and catches up.
        cluster.network.heal();
        cluster.start(old);
        for _ in 0..500 {
            if cluster.handles[&old].status().applied_index
                >= cluster.handles[&new].status().commit_index
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            cluster.get(old, "after", ReadConsistency::Stale).await.expect("get").as_deref(),
            Some(&b"2"[..])
        );
    });
}

#[test]
fn a_lagging_follower_catches_up_from_a_snapshot() {
    run_local(async {
        let mut cluster = TestCluster::new(3, 20);
        let leader = cluster.wait_for_leader().await;
        let lagging = *cluster.handles.keys().find(|id| **id != leader).expect("follower");
        cluster.crash(lagging);
        for i in 0..100 {
            cluster.put(leader, &format!("key-{i}"), &format!("value-{i}")).await.expect("put");
        }
        // The leader compacted its log; the restarted follower needs a snapshot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cluster.handles[&leader].status().snapshot_index > 0, "the leader took a snapshot");
        cluster.start(lagging);
        let target = cluster.handles[&leader].status().commit_index;
        for _ in 0..500 {
            if cluster.handles[&lagging].status().applied_index >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cluster.handles[&lagging].status().applied_index >= target);
        assert_eq!(
            cluster.get(lagging, "key-3", ReadConsistency::Stale).await.expect("get").as_deref(),
            Some(&b"value-3"[..])
        );
        assert!(
            cluster.durable[&lagging].borrow().snapshot.is_some(),
            "the snapshot was persisted"
        );
    });
}

#[test]
fn shutdown_finishes_storage_work_and_stops() {
    run_local(async {
        let mut cluster = TestCluster::new(1, 1_000);
        let leader = cluster.wait_for_leader().await;
        cluster.put(leader, "k", "v").await.expect("put");
        let handle = cluster.handles[&leader].clone();
        handle.shutdown().await;
        let task = cluster.tasks.remove(&leader).expect("task");
        task.await.expect("engine task ended cleanly");
        assert!(matches!(cluster.put(leader, "k", "v").await, Err(EngineError::Stopped)));
    });
}

#[test]
fn membership_changes_add_promote_and_remove() {
    run_local(async {
        let cluster = TestCluster::with_spares(3, 1, 1_000);
        let leader = cluster.wait_for_leader().await;
        let handle = &cluster.handles[&leader];
        let new = NodeId(4);
        // Promoting a node that is not a learner is refused with the reason.
        let refused = handle.change_membership(MembershipChange::Promote { id: new }).await;
        assert!(
            matches!(
                refused,
                Err(EngineError::MembershipRefused(MembershipError::NotALearner { .. }))
            ),
            "{refused:?}"
        );
        let config = handle
            .change_membership(MembershipChange::AddLearner { id: new, address: "n4".into() })
            .await
            .expect("add learner");
        assert!(config.learners.contains(&new));
        for i in 0..20 {
            cluster.put(leader, &format!("k{i}"), "v").await.expect("put");
        }
        let config =
            handle.change_membership(MembershipChange::Promote { id: new }).await.expect("promote");
        assert!(config.voters.contains(&new) && config.learners.is_empty());
        // The new voter has everything, and the cluster commits with it.
        let removed = *cluster
            .handles
            .keys()
            .find(|id| **id != leader && **id != new)
            .expect("another voter");
        let config = handle
            .change_membership(MembershipChange::Remove { id: removed })
            .await
            .expect("remove");
        assert!(!config.voters.contains(&removed));
        assert_eq!(config.voters.len(), 3);
        cluster.put(leader, "after", "x").await.expect("put after the changes");
        assert_eq!(
            cluster
                .get(new, "k19", ReadConsistency::Linearizable)
                .await
                .expect("read at the new voter")
                .as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(cluster.handles[&new].status().voters.len(), 3);
    });
}

#[test]
fn a_leader_answers_lease_reads_locally_only_while_its_lease_holds() {
    run_local(async {
        let cluster = TestCluster::with_lease_reads(3);
        let old = cluster.wait_for_leader().await;
        cluster.put(old, "k", "1").await.expect("put");
        let answered = cluster.first_lease_read(old, "k").await;
        assert_eq!(answered.as_deref(), Some(&b"1"[..]), "the leader answers from its lease");
        assert_eq!(cluster.read_locally(old, "k", ReadConsistency::Linearizable), None);
        let followers: Vec<NodeId> =
            cluster.handles.keys().copied().filter(|id| *id != old).collect();
        for follower in &followers {
            assert_eq!(cluster.read_locally(*follower, "k", ReadConsistency::Lease), None);
            assert!(cluster.read_locally(*follower, "k", ReadConsistency::Stale).is_some());
        }

        // Cut off, the old leader keeps its state but its lease runs out before the others can
        // elect a new leader, which then takes a write the old one never sees.
        for follower in &followers {
            cluster.network.cut(old, *follower);
        }
        let mut new = None;
        for _ in 0..1_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            new = followers
                .iter()
                .copied()
                .find(|id| cluster.handles[id].status().role == Role::Leader);
            if new.is_some() {
                break;
            }
        }
        let new = new.expect("the followers elect a leader within 10 s");
        cluster.put(new, "k", "2").await.expect("put at the new leader");
        assert_eq!(cluster.read_locally(old, "k", ReadConsistency::Lease), None, "no stale read");
        assert_eq!(
            cluster.read_locally(old, "k", ReadConsistency::Stale).as_deref(),
            Some(&b"1"[..])
        );

        // A transfer ends the lease before the successor is told to campaign.
        let answered = cluster.first_lease_read(new, "k").await;
        assert_eq!(answered.as_deref(), Some(&b"2"[..]));
        let successor = followers.iter().copied().find(|id| *id != new).expect("a successor");
        cluster.handles[&new].transfer_leadership(successor).await.expect("transfer");
        assert_eq!(cluster.read_locally(new, "k", ReadConsistency::Lease), None);
    });
}
