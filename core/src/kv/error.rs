//! Errors of the key-value state machine, as values.
//!
//! Two kinds, kept apart because they live in different places:
//! - [`RequestError`] is an *answer*: it travels inside a [`KvResponse`](super::KvResponse), is
//!   cached by client sessions and therefore is part of the replicated state. It must be plain,
//!   serialisable data that every node computes identically.
//! - [`KvError`] is a local failure: bytes that do not decode, a snapshot that fails validation,
//!   limits that make no sense. It never enters the replicated state.

use serde::{Deserialize, Serialize};

/// Why a request was refused (validation before proposing, or the same checks at apply time,
/// or the session table). Suggested HTTP mapping: `EmptyKey`, `KeyTooLarge`, `TooManyTxnOps`,
/// `RangeLimitTooLarge`, `ZeroTtl`, `ZeroSeq` → 400; `ValueTooLarge`, `RequestTooLarge` → 413
/// (see [`RequestError::is_payload_too_large`]); the session errors and `MalformedCommand` are
/// for clients that speak the session protocol and for the node's own logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    #[error("key cannot be empty")]
    EmptyKey,
    #[error("key is {size_bytes} bytes, the limit is {max_bytes}")]
    KeyTooLarge { size_bytes: u64, max_bytes: u64 },
    #[error("value is {size_bytes} bytes, the limit is {max_bytes}")]
    ValueTooLarge { size_bytes: u64, max_bytes: u64 },
    #[error("request carries {size_bytes} bytes of keys and values, the limit is {max_bytes}")]
    RequestTooLarge { size_bytes: u64, max_bytes: u64 },
    #[error("transaction list has {ops} entries, the limit is {max_ops}")]
    TooManyTxnOps { ops: u64, max_ops: u64 },
    #[error("range limit {limit} exceeds the maximum {max_limit}")]
    RangeLimitTooLarge { limit: u64, max_limit: u64 },
    #[error("ttl must be at least 1 ms")]
    ZeroTtl,
    #[error("session sequence numbers start at 1")]
    ZeroSeq,
    /// A request older than the session's last applied one: a delayed duplicate, or a client
    /// that broke the one-outstanding-request rule. Nothing was applied.
    #[error(
        "request {seq} of client {client_id} is older than its last applied request {last_seq}"
    )]
    StaleRequest { client_id: u64, seq: u64, last_seq: u64 },
    /// The session was never registered or has been evicted. Nothing was applied; whether the
    /// client's previous outstanding request was applied is unknown. Register a new session.
    #[error("client session {client_id} is unknown or was evicted; register a new session")]
    UnknownSession { client_id: u64 },
    /// A retry of a request that *was* applied, but whose response was larger than
    /// `max_session_response_bytes` and so was not kept. Re-read to learn the outcome.
    #[error(
        "request {seq} of client {client_id} was applied; its response was too large to retain"
    )]
    ResponseNotRetained { client_id: u64, seq: u64 },
    /// A committed log entry whose bytes do not decode as a [`KvRequest`](super::KvRequest).
    /// Every node sees the same bytes, so every node answers this identically.
    #[error("log entry does not decode as a key-value request")]
    MalformedCommand,
    /// A shard map that breaks the map's invariants (`ShardMap::validate`), with the reason.
    #[error("invalid shard map: {0}")]
    InvalidShardMap(String),
    /// A shard map that does not follow the one held: not its next epoch (`current_epoch`
    /// 0: no map yet, so any epoch is taken), or another slot count. Nothing changed.
    #[error("shard map epoch {proposed_epoch} does not follow the current epoch {current_epoch}")]
    ShardMapEpoch { current_epoch: u64, proposed_epoch: u64 },
}

impl RequestError {
    /// True for the errors an HTTP layer should answer with 413 Payload Too Large.
    pub fn is_payload_too_large(&self) -> bool {
        matches!(self, RequestError::ValueTooLarge { .. } | RequestError::RequestTooLarge { .. })
    }
}

/// A local failure of the state machine's codecs or configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("encoding failed: {0}")]
    Encode(postcard::Error),
    #[error("bytes do not decode: {0}")]
    Decode(postcard::Error),
    #[error("{trailing_bytes} unexpected bytes after the encoded value")]
    TrailingBytes { trailing_bytes: u64 },
    #[error("snapshot is empty")]
    EmptySnapshot,
    #[error("snapshot format version {found} is not supported (this build reads {supported})")]
    UnsupportedSnapshotVersion { found: u8, supported: u8 },
    #[error("snapshot is invalid: {0}")]
    InvalidSnapshot(&'static str),
    #[error("invalid limits: {0} must be at least 1")]
    InvalidLimits(&'static str),
}
