//! What nodes send each other: the Raft messages of a node's one group, or, between nodes that
//! host many groups, one [`NodeBatch`] with every group's messages (`shard/node_batch.rs`).
//! Snapshot transfers travel in pieces of their own (`snapshot_stream.rs`).

use serde::{Deserialize, Serialize};

use crate::raft::Message;
use crate::shard::NodeBatch;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    Raft(Message),
    Batch(NodeBatch),
}

impl PeerMessage {
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Raft(message) => message.body.kind(),
            PeerMessage::Batch(_) => "node-batch",
        }
    }
}
