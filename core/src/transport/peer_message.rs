//! What nodes send each other: the Raft messages of a node's one group, or, between nodes that
//! host many groups, one [`NodeBatch`] with every group's messages (`shard/node_batch.rs`) —
//! except a group's snapshot, which travels as a [`PeerMessage::Group`] message the transport
//! streams in pieces (`snapshot_stream.rs`), as it streams a single group's.

use serde::{Deserialize, Serialize};

use crate::raft::Message;
use crate::shard::{NodeBatch, ShardId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    Raft(Message),
    Batch(NodeBatch),
    /// One message of a hosted group outside any batch (an `InstallSnapshot`).
    Group {
        shard: ShardId,
        message: Message,
    },
}

impl PeerMessage {
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Raft(message) => message.body.kind(),
            PeerMessage::Batch(_) => "node-batch",
            PeerMessage::Group { message, .. } => message.body.kind(),
        }
    }
}
