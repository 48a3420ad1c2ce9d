//! Reads and their consistency levels; the requests that travel from handles to the engine.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::error::EngineError;
use crate::kv::{KeyMeta, KeyValue, KvCommand, KvResponse, SessionTag};
use crate::raft::{ClusterConfig, LogIndex, MembershipChange, NodeId, Snapshot};

/// How fresh a read must be.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read began (ReadIndex round trip).
    Linearizable,
    /// Linearizable as long as clock drift stays within the configured bound; answered by the
    /// leader without a round trip while its lease holds. Without a configured lease it is
    /// served like `Linearizable`.
    Lease,
    /// Whatever this node has applied; may be arbitrarily old.
    Stale,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadQuery {
    Get {
        key: String,
    },
    /// Keys under `prefix`, strictly after `start_after` when given (the next page).
    Range {
        prefix: String,
        start_after: Option<String>,
        limit: u64,
    },
}

impl ReadQuery {
    /// The key a point read names (a range names none: each shard lists its own keys).
    pub fn key(&self) -> Option<&str> {
        match self {
            ReadQuery::Get { key } => Some(key),
            ReadQuery::Range { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadResult {
    Value { value: Option<(Bytes, KeyMeta)>, revision: u64, applied_index: LogIndex },
    Range { entries: Vec<KeyValue>, more: bool, revision: u64, applied_index: LogIndex },
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub(super) enum EngineRequest {
    Write {
        command: KvCommand,
        session: Option<SessionTag>,
        reply: Reply<KvResponse>,
    },
    Read {
        query: ReadQuery,
        consistency: ReadConsistency,
        reply: Reply<ReadResult>,
    },
    TransferLeadership {
        to: NodeId,
        reply: Reply<()>,
    },
    ChangeMembership {
        change: MembershipChange,
        reply: Reply<ClusterConfig>,
    },
    /// An image of the state machine at its applied index (for online backups).
    Snapshot {
        reply: Reply<Snapshot>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl EngineRequest {
    /// Answers the request with `error` without carrying it out.
    pub(super) fn refuse(self, error: EngineError) {
        match self {
            EngineRequest::Write { reply, .. } => drop(reply.send(Err(error))),
            EngineRequest::Read { reply, .. } => drop(reply.send(Err(error))),
            EngineRequest::TransferLeadership { reply, .. } => drop(reply.send(Err(error))),
            EngineRequest::ChangeMembership { reply, .. } => drop(reply.send(Err(error))),
            EngineRequest::Snapshot { reply } => drop(reply.send(Err(error))),
            EngineRequest::Shutdown { reply } => drop(reply.send(())),
        }
    }
}
