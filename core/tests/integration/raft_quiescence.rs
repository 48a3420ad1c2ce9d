//! What the core offers a host that quiesces idle groups (`raft/quiescence.rs`), one condition
//! at a time: a settled leader may quiesce, and each thing still in motion — a proposal not yet
//! committed, a read, a transfer, a message not yet handed over, a live follower behind, too
//! few live voters — forbids it on its own. A follower may quiesce only behind the leader that
//! said so with exactly the committed log. Quiescing gives the lease up, and waking adds the
//! missed ticks to the tick count without running them.

use conclave_core::raft::memory_cluster::{HarnessOptions, MemoryCluster};
use conclave_core::raft::{LeaseConfig, MessageBody, NodeId, RaftConfig, Role};

const LEADER: NodeId = NodeId(1);

fn config() -> RaftConfig {
    RaftConfig {
        lease_read: Some(LeaseConfig { max_clock_drift_ppm: 50_000 }),
        ..Default::default()
    }
}

/// Three voters, node 1 leading, everything delivered, durable and applied.
fn settled() -> MemoryCluster {
    let mut cluster = MemoryCluster::new(3, config(), 7, HarnessOptions::default());
    cluster.raft_mut(LEADER).campaign();
    cluster.process(LEADER);
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(LEADER));
    cluster
}

fn everyone_live(_: NodeId) -> bool {
    true
}

#[test]
fn a_settled_leader_may_quiesce_and_a_follower_may_not() {
    let cluster = settled();
    assert!(cluster.raft(LEADER).can_quiesce(everyone_live));
    assert!(!cluster.raft(NodeId(2)).can_quiesce(everyone_live), "a follower decides nothing");
}

#[test]
fn a_leader_needs_a_live_quorum_to_quiesce() {
    let cluster = settled();
    let leader = cluster.raft(LEADER);
    assert!(leader.can_quiesce(|id| id != NodeId(3)), "itself and one follower are a quorum");
    assert!(!leader.can_quiesce(|_| false), "alone it is no quorum");
}

#[test]
fn with_five_voters_two_live_are_no_quorum_and_three_are() {
    let mut cluster = MemoryCluster::new(5, config(), 7, HarnessOptions::default());
    cluster.raft_mut(LEADER).campaign();
    cluster.process(LEADER);
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(LEADER));
    let leader = cluster.raft(LEADER);
    assert!(!leader.can_quiesce(|id| id == NodeId(2)), "itself and one follower");
    assert!(leader.can_quiesce(|id| id == NodeId(2) || id == NodeId(3)), "itself and two");
}

#[test]
fn an_uncommitted_proposal_forbids_quiescence() {
    let mut cluster = settled();
    cluster.propose(LEADER).expect("the leader takes proposals");
    assert!(!cluster.raft(LEADER).can_quiesce(everyone_live));
    cluster.stabilize();
    assert!(cluster.raft(LEADER).can_quiesce(everyone_live), "committed and told everyone");
}

#[test]
fn a_pending_read_forbids_quiescence() {
    let mut cluster = settled();
    // Without a lease (none is held before a confirmed round): the read waits for a round.
    cluster.read(LEADER).expect("the leader takes reads");
    assert!(!cluster.raft(LEADER).can_quiesce(everyone_live));
    cluster.stabilize();
    assert!(cluster.raft(LEADER).can_quiesce(everyone_live), "the read was answered");
}

#[test]
fn a_transfer_in_progress_forbids_quiescence() {
    let mut cluster = settled();
    cluster.raft_mut(LEADER).transfer_leadership(NodeId(3)).expect("a caught-up target");
    cluster.process(LEADER);
    assert!(!cluster.raft(LEADER).can_quiesce(everyone_live));
}

#[test]
fn messages_not_yet_handed_over_forbid_quiescence() {
    let mut cluster = settled();
    // Heartbeats fall due, and the host has not taken them yet.
    for _ in 0..config().heartbeat_interval_ticks {
        cluster.raft_mut(LEADER).tick();
    }
    assert!(!cluster.raft(LEADER).can_quiesce(everyone_live));
}

#[test]
fn a_live_follower_behind_forbids_quiescence_and_a_dead_one_does_not() {
    let mut cluster = settled();
    cluster.isolate(NodeId(3));
    cluster.propose(LEADER).expect("the leader takes proposals");
    cluster.stabilize();
    let leader = cluster.raft(LEADER);
    assert!(!leader.can_quiesce(everyone_live), "node 3 lacks the last entry");
    assert!(
        leader.can_quiesce(|id| id != NodeId(3)),
        "a follower the host cannot hear is not waited for"
    );
}

#[test]
fn an_entry_not_yet_durable_on_the_leader_forbids_quiescence() {
    let options = HarnessOptions { auto_persist: false, ..HarnessOptions::default() };
    let mut cluster = MemoryCluster::new(3, config(), 7, options);
    cluster.raft_mut(LEADER).campaign();
    cluster.process(LEADER);
    cluster.stabilize();
    assert_eq!(cluster.leader(), Some(LEADER));
    cluster.propose(LEADER).expect("the leader takes proposals");
    // The followers hold it durably and say so; the leader's own write is still pending.
    for follower in [NodeId(2), NodeId(3)] {
        while let Some(position) = cluster.in_flight.iter().position(|m| m.to == follower) {
            cluster.deliver(position);
        }
        cluster.persist_all(follower);
    }
    while let Some(position) = cluster.in_flight.iter().position(|m| m.to == LEADER) {
        cluster.deliver(position);
    }
    let leader = cluster.raft(LEADER);
    assert_eq!(leader.log().committed(), leader.log().last_index(), "a quorum holds it");
    assert!(leader.log().persisted() < leader.log().last_index());
    assert!(!leader.can_quiesce(everyone_live));
}

#[test]
fn a_follower_quiesces_only_behind_the_leader_that_said_so_with_exactly_the_committed_log() {
    let mut cluster = settled();
    let follower = NodeId(2);
    assert!(cluster.raft(follower).can_quiesce_as_follower(LEADER));
    assert!(!cluster.raft(follower).can_quiesce_as_follower(NodeId(3)), "not its leader");
    assert!(!cluster.raft(LEADER).can_quiesce_as_follower(LEADER), "a leader is no follower");
    // An entry the follower holds but has not seen committed.
    cluster.propose(LEADER).expect("the leader takes proposals");
    while let Some(position) = cluster.in_flight.iter().position(|m| m.to == follower) {
        cluster.deliver(position);
    }
    let raft = cluster.raft(follower);
    assert!(raft.log().last_index() > raft.log().committed());
    assert!(!raft.can_quiesce_as_follower(LEADER));
}

#[test]
fn quiescing_gives_the_lease_up_and_says_so_to_every_follower() {
    let mut cluster = settled();
    // A confirmed round gives the leader its lease.
    cluster.read(LEADER).expect("the leader takes reads");
    cluster.stabilize();
    assert!(cluster.raft(LEADER).lease_start_tick().is_some(), "the round leased");
    let last_heartbeats = cluster.raft_mut(LEADER).quiesce();
    let mut told: Vec<NodeId> = last_heartbeats.iter().map(|message| message.to).collect();
    told.sort();
    assert_eq!(told, vec![NodeId(2), NodeId(3)]);
    for message in &last_heartbeats {
        let MessageBody::Heartbeat { read_round, .. } = message.body else {
            panic!("a quiescing leader sends heartbeats, not {:?}", message.body);
        };
        assert_eq!(read_round, 0, "a quiescent leader confirms no read");
    }
    assert!(cluster.raft(LEADER).lease_start_tick().is_none(), "no lease while quiescent");
    assert_eq!(cluster.raft(LEADER).role(), Role::Leader);
}

#[test]
fn waking_adds_the_missed_ticks_without_running_them() {
    let mut cluster = settled();
    let raft = cluster.raft_mut(NodeId(2));
    let (ticks, term) = (raft.tick_count(), raft.term());
    raft.resume_after(1_000);
    assert_eq!(raft.tick_count(), ticks + 1_000);
    assert_eq!(raft.role(), Role::Follower, "waking starts no election by itself");
    assert_eq!(raft.term(), term);
}
