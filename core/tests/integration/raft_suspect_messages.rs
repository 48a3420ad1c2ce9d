//! Messages a correct peer sends only in rare timings, or never: an append delayed past the
//! follower's commit index (it must still append what is new), an append that contradicts a
//! committed entry, and an acknowledgement of entries the leader never had. Each is crafted and
//! delivered to a node of an in-memory cluster; the invariant checks run after every step.

use bytes::Bytes;
use conclave_core::raft::memory_cluster::{HarnessOptions, MemoryCluster};
use conclave_core::raft::{
    Entry, EntryPayload, LogIndex, Message, MessageBody, NodeId, RaftConfig,
};

const LEADER: NodeId = NodeId(1);
const FOLLOWER: NodeId = NodeId(2);

/// A three-node cluster led by node 1, with a few entries committed everywhere.
fn settled_cluster() -> MemoryCluster {
    let mut cluster = MemoryCluster::new(3, RaftConfig::default(), 7, HarnessOptions::default());
    cluster.raft_mut(LEADER).campaign();
    cluster.process(LEADER);
    cluster.stabilize();
    for _ in 0..4 {
        cluster.propose(LEADER).expect("the leader takes it");
    }
    cluster.stabilize();
    let committed = cluster.raft(LEADER).log().committed();
    assert_eq!(cluster.raft(FOLLOWER).log().committed(), committed, "settled");
    cluster
}

fn entries(cluster: &MemoryCluster, from: LogIndex, to: LogIndex) -> Vec<Entry> {
    (from..=to)
        .map(|index| cluster.raft(LEADER).log().entry(index).expect("in the log").clone())
        .collect()
}

fn deliver(cluster: &mut MemoryCluster, message: Message) {
    cluster.in_flight.push(message);
    let position = cluster.in_flight.len() - 1;
    cluster.deliver(position);
}

fn append(cluster: &MemoryCluster, prev_log_index: LogIndex, entries: Vec<Entry>) -> Message {
    let leader = cluster.raft(LEADER);
    Message {
        from: LEADER,
        to: FOLLOWER,
        term: leader.term(),
        body: MessageBody::AppendRequest {
            prev_log_index,
            prev_log_term: leader.log().term(prev_log_index).expect("in the log"),
            entries,
            leader_commit: leader.log().committed(),
        },
    }
}

#[test]
fn an_append_delayed_past_the_commit_index_still_appends_what_is_new() {
    let mut cluster = settled_cluster();
    let committed = cluster.raft(FOLLOWER).log().committed();
    let term = cluster.raft(LEADER).term();
    // Two entries the follower holds and has committed, then two it has never seen.
    let mut carried = entries(&cluster, committed - 1, committed);
    for index in committed + 1..=committed + 2 {
        let payload = EntryPayload::Command(Bytes::from(format!("new {index}")));
        carried.push(Entry { term, index, payload });
    }
    let message = append(&cluster, committed - 2, carried);
    let dropped_before = cluster.raft(FOLLOWER).counters().messages_dropped;
    deliver(&mut cluster, message);
    let follower = cluster.raft(FOLLOWER);
    assert_eq!(follower.log().last_index(), committed + 2, "the new entries are appended");
    assert_eq!(follower.counters().messages_dropped, dropped_before, "nothing was refused");
}

#[test]
fn an_append_that_contradicts_a_committed_entry_is_dropped() {
    let mut cluster = settled_cluster();
    let committed = cluster.raft(FOLLOWER).log().committed();
    let mut carried = entries(&cluster, committed - 1, committed);
    // The committed entry rewritten with another term, and one new entry after it (an append
    // that brings nothing new is answered before any check): no correct leader sends this.
    carried[1].term += 1;
    let term = carried[1].term;
    let payload = EntryPayload::Command(Bytes::from_static(b"after a rewritten entry"));
    carried.push(Entry { term, index: committed + 1, payload });
    let message = append(&cluster, committed - 2, carried);
    let dropped_before = cluster.raft(FOLLOWER).counters().messages_dropped;
    let log_before = cluster.raft(FOLLOWER).log().last_index();
    deliver(&mut cluster, message);
    let follower = cluster.raft(FOLLOWER);
    assert_eq!(follower.counters().messages_dropped, dropped_before + 1);
    assert_eq!(follower.log().last_index(), log_before);
    assert_eq!(
        follower.log().term(committed),
        cluster.raft(LEADER).log().term(committed),
        "the committed entry stands"
    );
}

#[test]
fn an_acknowledgement_of_entries_the_leader_never_had_is_dropped() {
    let mut cluster = settled_cluster();
    let leader = cluster.raft(LEADER);
    let last_index = leader.log().last_index();
    let dropped_before = leader.counters().messages_dropped;
    let matched_before = leader.status().matched;
    let message = Message {
        from: FOLLOWER,
        to: LEADER,
        term: leader.term(),
        body: MessageBody::AppendResponse {
            success: true,
            index: last_index + 5,
            hint_index: 0,
            hint_term: 0,
        },
    };
    deliver(&mut cluster, message);
    let leader = cluster.raft(LEADER);
    assert_eq!(leader.counters().messages_dropped, dropped_before + 1);
    assert_eq!(leader.status().matched, matched_before, "no follower's progress moved");
}
