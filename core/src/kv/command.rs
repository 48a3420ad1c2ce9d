//! What a KV log entry carries: a [`KvRequest`], encoded with postcard inside
//! `EntryPayload::Command`.
//!
//! The encoding is part of the on-disk and on-wire format: postcard encodes enum variants by
//! position and struct fields in order, so append new variants and fields at the end only, and
//! bump the snapshot format version (`snapshot.rs`) when a change alters cached responses.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::KvError;
use crate::shard::ShardMap;

/// Identifies one request of a client session (see `session.rs` for the client's contract).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionTag {
    /// The id returned by [`KvCommand::RegisterSession`].
    pub client_id: u64,
    /// 1 for the session's first request, then strictly increasing; a retry reuses its seq.
    pub seq: u64,
}

/// One state-machine command plus the context every node needs to apply it identically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    /// Present for exactly-once writes; `None` for at-most-once (a retry may apply twice).
    pub session: Option<SessionTag>,
    /// The proposing leader's wall clock when it proposed. TTLs are decided from this value,
    /// never from the clock of the node that applies the entry (followers' clocks differ).
    pub leader_time_ms: u64,
    pub command: KvCommand,
}

/// The state machine's commands. `Get` and `Range` are normally served locally after a
/// ReadIndex barrier (see the query methods of `KvStateMachine`); they are accepted through the
/// log too (a log read is linearizable and costs an entry), and then change nothing but time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Get {
        key: String,
    },
    /// Keys that start with `prefix` (empty: all keys), in key order, strictly after
    /// `start_after` when given (pagination), at most `limit` of them (0: `max_range_limit`).
    Range {
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    },
    Put {
        key: String,
        value: Bytes,
        /// Time to live, counted from the state machine's clock at apply; `None`: forever
        /// (a put without a TTL also clears any TTL the key had).
        ttl_ms: Option<u64>,
        condition: Condition,
    },
    Delete {
        key: String,
        condition: Condition,
    },
    /// Delete every key.
    Clear,
    /// Value compare-and-swap: write `value` if the current value is `expected`
    /// (`None`: only if the key is absent).
    Cas {
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
        ttl_ms: Option<u64>,
    },
    Txn(Txn),
    /// Carries only `leader_time_ms`: the leader proposes it when `next_expiry_ms()` has passed
    /// so that keys expire even when nobody writes.
    ExpireTick,
    /// Opens a client session; the answer is its `client_id` (the entry's log index, which is
    /// unique for the life of the cluster). A session tag on this command is ignored.
    RegisterSession,
    /// Replaces the shard map the meta group keeps (`shard/map.rs`): taken only as the first
    /// map, or as the next epoch of the one held, with the same slot count. Nodes, not
    /// clients, propose it.
    SetShardMap(ShardMap),
    /// Delete every key that starts with `prefix` (`DELETE /kv?prefix=`): one entry whatever
    /// the number of keys, answered with how many were deleted. (Last in the enum: a
    /// command's encoding is its position, and logs written before it must still decode.)
    DeletePrefix {
        prefix: String,
    },
}

impl KvCommand {
    /// True if applying the command can change the key space or the session table. The node
    /// may serve the others (`Get`, `Range`) with a read barrier instead of a log entry.
    pub fn is_write(&self) -> bool {
        !matches!(self, KvCommand::Get { .. } | KvCommand::Range { .. })
    }
}

/// The guard on a single-key `Put` or `Delete`. A failed guard answers
/// `KvResponse::ConditionFailed` (HTTP 412) and changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Unconditional.
    #[default]
    Always,
    /// The key must be absent (`If-None-Match: *`, create-only).
    Absent,
    /// The key must exist (`If-Match: *`).
    Present,
    /// The key must exist with exactly this value.
    ValueEquals(Bytes),
    /// The key must exist with this modification revision (`If-Match: <etag>`).
    ModRevisionEquals(u64),
}

/// An etcd-style transaction: if every compare holds, apply `success`, otherwise `failure`.
/// The chosen branch's operations run in order (a later `Get` sees an earlier `Put`) and all
/// of them take effect, at one revision, or — if the request is invalid — none do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// One comparison of a transaction against a key's current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub target: CompareTarget,
}

/// What to compare. For an absent key, revisions and version read as 0 (as in etcd) and a value
/// comparison is false whatever the operator (there is no value to compare).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// Byte-wise lexicographic comparison of the current value with the given one.
    Value(CompareOp, Bytes),
    ModRevision(CompareOp, u64),
    CreateRevision(CompareOp, u64),
    Version(CompareOp, u64),
    /// True if the key's presence equals the flag.
    Exists(bool),
}

/// `current <op> given`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put { key: String, value: Bytes, ttl_ms: Option<u64> },
    Delete { key: String },
    Get { key: String },
    Range { prefix: String, start_after: Option<String>, limit: u32 },
}

impl KvCommand {
    /// The keys the command names one by one (a transaction's compares and operations
    /// included); range prefixes are not keys and are left out.
    pub fn point_keys(&self) -> Vec<&str> {
        match self {
            KvCommand::Get { key }
            | KvCommand::Put { key, .. }
            | KvCommand::Delete { key, .. }
            | KvCommand::Cas { key, .. } => vec![key.as_str()],
            KvCommand::Txn(txn) => {
                let compares = txn.compares.iter().map(|compare| compare.key.as_str());
                let ops = txn.success.iter().chain(&txn.failure).filter_map(|op| match op {
                    TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => {
                        Some(key.as_str())
                    }
                    TxnOp::Range { .. } => None,
                });
                compares.chain(ops).collect()
            }
            KvCommand::Range { .. }
            | KvCommand::Clear
            | KvCommand::DeletePrefix { .. }
            | KvCommand::ExpireTick
            | KvCommand::RegisterSession
            | KvCommand::SetShardMap(_) => Vec::new(),
        }
    }
}

impl KvRequest {
    /// A request without a session, stamped with time 0 (the leader stamps the real time).
    pub fn new(command: KvCommand) -> Self {
        KvRequest { session: None, leader_time_ms: 0, command }
    }

    /// The bytes to put in `EntryPayload::Command`.
    pub fn encode(&self) -> Result<Bytes, KvError> {
        postcard::to_allocvec(self).map(Bytes::from).map_err(KvError::Encode)
    }

    /// Decodes bytes produced by [`KvRequest::encode`]. Rejects anything else, trailing bytes
    /// included, with an error; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, KvError> {
        let (request, rest) = postcard::take_from_bytes(bytes).map_err(KvError::Decode)?;
        if !rest.is_empty() {
            return Err(KvError::TrailingBytes { trailing_bytes: rest.len() as u64 });
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KvRequest {
        KvRequest {
            session: Some(SessionTag { client_id: 7, seq: 3 }),
            leader_time_ms: 1_700_000_000_000,
            command: KvCommand::Txn(Txn {
                compares: vec![Compare {
                    key: "a".into(),
                    target: CompareTarget::Value(CompareOp::Equal, Bytes::from_static(b"x")),
                }],
                success: vec![TxnOp::Put {
                    key: "b".into(),
                    value: Bytes::from_static(b"\0\xff"),
                    ttl_ms: Some(5),
                }],
                failure: vec![TxnOp::Range { prefix: String::new(), start_after: None, limit: 3 }],
            }),
        }
    }

    #[test]
    fn kv_request_round_trips() {
        let request = sample();
        let bytes = request.encode().unwrap();
        assert_eq!(KvRequest::decode(&bytes).unwrap(), request);
    }

    #[test]
    fn kv_request_decode_rejects_trailing_and_truncated_bytes() {
        let bytes = sample().encode().unwrap();
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(KvRequest::decode(&longer), Err(KvError::TrailingBytes { trailing_bytes: 1 }));
        for cut in 0..bytes.len() {
            assert!(KvRequest::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
    }

    #[test]
    fn kv_request_decode_rejects_invalid_utf8_key() {
        let request = KvRequest::new(KvCommand::Get { key: "ab".into() });
        let mut bytes = request.encode().unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert!(matches!(KvRequest::decode(&bytes), Err(KvError::Decode(_))));
    }
}
