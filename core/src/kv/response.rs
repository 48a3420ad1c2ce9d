//! What applying a request answers. Responses are replicated state (sessions cache them and
//! snapshots carry the cache), so they are plain serialisable data; errors are values.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::RequestError;

/// A key's bookkeeping, as etcd keeps it. All revisions are global store revisions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// The revision at which the key was created (since it was last absent).
    pub create_revision: u64,
    /// The revision of the key's last change: the HTTP `ETag`.
    pub mod_revision: u64,
    /// Number of puts since the key was created (1 after the first).
    pub version: u64,
    /// When the key expires, in state-machine time; `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// A key with its value and bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub meta: KeyMeta,
}

/// The answer to one applied request. Every `revision` field is the store revision after the
/// request (for a successful put, that is also the key's new modification revision: its ETag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    Get {
        kv: Option<KeyValue>,
        revision: u64,
    },
    Range {
        kvs: Vec<KeyValue>,
        /// More matching keys follow the last one returned.
        more: bool,
        revision: u64,
    },
    /// Answer to `Put` and to a successful `Cas`.
    Put {
        revision: u64,
        /// The key's bookkeeping before the put; `None`: the put created it.
        prev: Option<KeyMeta>,
    },
    Delete {
        revision: u64,
        /// The key as it was; `None`: there was no such key (HTTP 404) and nothing changed.
        prev: Option<KeyValue>,
    },
    Clear {
        revision: u64,
        deleted_keys: u64,
    },
    Txn {
        /// True if every compare held and the `success` branch ran.
        succeeded: bool,
        /// One result per operation of the branch that ran, in order.
        results: Vec<TxnOpResult>,
        revision: u64,
    },
    ExpireTick {
        revision: u64,
    },
    SessionRegistered {
        client_id: u64,
    },
    /// A `Put`/`Delete` condition or a `Cas` expectation did not hold (HTTP 412); nothing changed.
    ConditionFailed {
        revision: u64,
        /// The key's current bookkeeping (its `mod_revision` is the current ETag), if it exists.
        current: Option<KeyMeta>,
    },
    Error(RequestError),
    /// The shard map was replaced; the map now held is at `epoch`.
    ShardMapSet {
        epoch: u64,
    },
}

/// The result of one transaction operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    Put { prev: Option<KeyMeta> },
    Delete { prev: Option<KeyValue> },
    Get { kv: Option<KeyValue> },
    Range { kvs: Vec<KeyValue>, more: bool },
}

/// Fixed cost charged per response and per key-value in [`KvResponse::retained_size_bytes`]:
/// roughly what the numbers and enum tags take, so that many empty entries still count.
const OVERHEAD_BYTES: u64 = 32;

fn key_value_size_bytes(kv: &KeyValue) -> u64 {
    OVERHEAD_BYTES + kv.key.len() as u64 + kv.value.len() as u64
}

fn key_values_size_bytes(kvs: &[KeyValue]) -> u64 {
    kvs.iter().map(key_value_size_bytes).sum()
}

impl KvResponse {
    /// A deterministic estimate of the memory a cached copy of this response holds, used to
    /// bound the session table (it need not equal any encoding, only be the same on every node).
    pub fn retained_size_bytes(&self) -> u64 {
        let payload = match self {
            KvResponse::Get { kv, .. } => kv.as_ref().map_or(0, key_value_size_bytes),
            KvResponse::Range { kvs, .. } => key_values_size_bytes(kvs),
            KvResponse::Delete { prev, .. } => prev.as_ref().map_or(0, key_value_size_bytes),
            KvResponse::Txn { results, .. } => results
                .iter()
                .map(|result| {
                    OVERHEAD_BYTES
                        + match result {
                            TxnOpResult::Put { .. } => 0,
                            TxnOpResult::Delete { prev } => {
                                prev.as_ref().map_or(0, key_value_size_bytes)
                            }
                            TxnOpResult::Get { kv } => kv.as_ref().map_or(0, key_value_size_bytes),
                            TxnOpResult::Range { kvs, .. } => key_values_size_bytes(kvs),
                        }
                })
                .sum(),
            KvResponse::Put { .. }
            | KvResponse::Clear { .. }
            | KvResponse::ExpireTick { .. }
            | KvResponse::SessionRegistered { .. }
            | KvResponse::ShardMapSet { .. }
            | KvResponse::ConditionFailed { .. }
            | KvResponse::Error(_) => 0,
        };
        OVERHEAD_BYTES + payload
    }
}
