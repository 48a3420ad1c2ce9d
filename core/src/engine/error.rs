//! Why a client request was not served. Each variant tells the caller what it may do next.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::kv::RequestError;
use crate::raft::{MembershipError, NodeId};

#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineError {
    /// Writes (and, without a known leader, reads) go to the leader. Safe to retry there.
    #[error("not the leader{}", leader.map(|l| format!(" (leader is {l})")).unwrap_or_default())]
    NotLeader { leader: Option<NodeId> },
    /// Too much work queued; safe to retry later.
    #[error("busy: too many requests in flight")]
    Busy,
    /// The request is invalid and will never succeed.
    #[error("invalid request: {0}")]
    Invalid(RequestError),
    /// The write was definitely not applied (its log entry was replaced); safe to retry.
    #[error("the write was not committed (leadership changed); it did not take effect")]
    NotCommitted,
    /// The write may or may not have been applied (e.g. it was superseded by a snapshot before
    /// this node saw it applied). Retry with the same session to learn its outcome.
    #[error("the outcome of the write is unknown")]
    Unknown,
    /// A membership change was refused (it would be unsafe now); the reason says what to do.
    #[error("membership change refused: {0}")]
    MembershipRefused(MembershipError),
    /// This node's disk is full: it takes no new writes until space is freed (it resumes by
    /// itself). The write was not proposed, so it never takes effect; reads still work.
    #[error("the disk of this node is full: writes are refused until space is freed")]
    NoSpace,
    /// The engine has stopped.
    #[error("the node is shutting down")]
    Stopped,
    /// This node hosts no replica of that shard (a stale shard map sent the request here);
    /// refresh the map and ask a node that does.
    #[error("this node hosts no replica of shard {shard}")]
    NotHosted { shard: u32 },
    /// The key's slot belongs to another shard at the epoch of the newest map this node has
    /// seen; refresh the map and ask the owner.
    #[error("the key belongs to shard {owner} at shard map epoch {epoch}")]
    WrongShard { owner: u32, epoch: u64 },
}
