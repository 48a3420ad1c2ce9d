//! What one node sends another in one go: the Raft messages of every group they share, with
//! the heartbeats coalesced. Without coalescing, N groups led by one node would send N
//! heartbeats to each follower node every interval, and get N answers back; with it, a node
//! pair exchanges one batch per interval whatever N is, and a group's heartbeat costs a few
//! bytes in it (no addresses, no framing). An empty batch is the node-level heartbeat that
//! lets quiescent groups know their peers are alive (`group_host.rs`); every batch also says
//! which [`Hosting`] its sender is in, so that a peer learns when replicas it may depend on
//! went away without the node falling silent.

use serde::{Deserialize, Serialize};

use super::map::ShardId;
use crate::raft::{LogIndex, Message, MessageBody, NodeId, Term};

/// One group's heartbeat, without the addresses the batch already carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeat {
    pub shard: ShardId,
    pub term: Term,
    pub commit: LogIndex,
    pub commit_term: Term,
    pub read_round: u64,
    /// The leader's last heartbeat before it stops ticking: a caught-up follower stops too.
    pub quiesce: bool,
}

/// One group's heartbeat answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeatResponse {
    pub shard: ShardId,
    pub term: Term,
    pub read_round: u64,
}

/// A message of one group that is not a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage {
    pub shard: ShardId,
    pub message: Message,
}

/// What a node hosts, as a version: it changes whenever the node restarts (`incarnation`, a
/// number that differs at every start) or stops hosting a group. A quiescent follower whose
/// leader's replica restarted or went away while its node kept answering would otherwise
/// wait forever for a leader that is gone.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosting {
    pub incarnation: u64,
    pub groups_removed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBatch {
    pub from: NodeId,
    pub to: NodeId,
    pub hosting: Hosting,
    pub heartbeats: Vec<GroupHeartbeat>,
    pub heartbeat_responses: Vec<GroupHeartbeatResponse>,
    pub messages: Vec<GroupMessage>,
}

impl NodeBatch {
    pub fn new(from: NodeId, to: NodeId, hosting: Hosting) -> NodeBatch {
        assert_ne!(from, to, "a node sends no batch to itself");
        NodeBatch {
            from,
            to,
            hosting,
            heartbeats: Vec::new(),
            heartbeat_responses: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// Whether the batch carries nothing but the fact that its sender is alive.
    pub fn is_ping(&self) -> bool {
        self.heartbeats.is_empty()
            && self.heartbeat_responses.is_empty()
            && self.messages.is_empty()
    }

    /// How many group messages the batch carries, heartbeats included.
    pub fn group_message_count(&self) -> usize {
        self.heartbeats.len() + self.heartbeat_responses.len() + self.messages.len()
    }

    /// Adds one of `shard`'s messages (from this batch's sender to its receiver), coalescing a
    /// heartbeat or a heartbeat answer.
    pub fn push(&mut self, shard: ShardId, message: Message, quiesce: bool) {
        assert_eq!((message.from, message.to), (self.from, self.to), "the batch's addresses");
        match message.body {
            MessageBody::Heartbeat { commit, commit_term, read_round } => {
                self.heartbeats.push(GroupHeartbeat {
                    shard,
                    term: message.term,
                    commit,
                    commit_term,
                    read_round,
                    quiesce,
                });
            }
            MessageBody::HeartbeatResponse { read_round } => {
                assert!(!quiesce, "only a heartbeat quiesces");
                self.heartbeat_responses.push(GroupHeartbeatResponse {
                    shard,
                    term: message.term,
                    read_round,
                });
            }
            _ => {
                assert!(!quiesce, "only a heartbeat quiesces");
                self.messages.push(GroupMessage { shard, message });
            }
        }
    }
}

impl GroupHeartbeat {
    /// The Raft message it stands for, between the batch's nodes.
    pub fn message(&self, from: NodeId, to: NodeId) -> Message {
        Message {
            from,
            to,
            term: self.term,
            body: MessageBody::Heartbeat {
                commit: self.commit,
                commit_term: self.commit_term,
                read_round: self.read_round,
            },
        }
    }
}

impl GroupHeartbeatResponse {
    pub fn message(&self, from: NodeId, to: NodeId) -> Message {
        Message {
            from,
            to,
            term: self.term,
            body: MessageBody::HeartbeatResponse { read_round: self.read_round },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_coalesced_and_come_back_as_the_same_messages() {
        let (a, b) = (NodeId(1), NodeId(2));
        let heartbeat = Message {
            from: a,
            to: b,
            term: 3,
            body: MessageBody::Heartbeat { commit: 9, commit_term: 2, read_round: 4 },
        };
        let answer = Message {
            from: a,
            to: b,
            term: 5,
            body: MessageBody::HeartbeatResponse { read_round: 1 },
        };
        let vote = Message {
            from: a,
            to: b,
            term: 6,
            body: MessageBody::VoteResponse { pre_vote: false, granted: true },
        };
        let mut batch = NodeBatch::new(a, b, Hosting::default());
        assert!(batch.is_ping());
        batch.push(ShardId(7), heartbeat.clone(), true);
        batch.push(ShardId(8), answer.clone(), false);
        batch.push(ShardId(9), vote.clone(), false);
        assert_eq!(batch.group_message_count(), 3);
        assert!(batch.heartbeats[0].quiesce);
        assert_eq!(batch.heartbeats[0].message(a, b), heartbeat);
        assert_eq!(batch.heartbeat_responses[0].message(a, b), answer);
        assert_eq!(batch.messages[0], GroupMessage { shard: ShardId(9), message: vote });
    }
}
