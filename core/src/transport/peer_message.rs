//! What nodes send each other: Raft messages, and the pieces of a snapshot transfer.

use serde::{Deserialize, Serialize};

use crate::raft::Message;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    Raft(Message),
}

impl PeerMessage {
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Raft(message) => message.body.kind(),
        }
    }
}
