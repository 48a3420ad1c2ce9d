//! Limits on every request, checked before proposing and again at apply.
//!
//! The limits are part of the replicated state (they decide answers at apply time, so every
//! node must use the same ones): they are carried in snapshots and in the state digest.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::{Compare, CompareTarget, KvCommand, KvRequest, TxnOp};
use super::error::{KvError, RequestError};
use crate::shard::ShardMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvLimits {
    /// Longest key, range prefix or pagination key.
    pub max_key_bytes: u64,
    /// Longest value (also bounds values given to compare against).
    pub max_value_bytes: u64,
    /// Sum of all key, prefix and value bytes in one request. Bounds the size of a log entry:
    /// without it a transaction could carry `max_txn_ops` maximal values.
    pub max_request_bytes: u64,
    /// Most entries in each of a transaction's three lists (compares, success, failure).
    pub max_txn_ops: u64,
    /// Most keys one range returns.
    pub max_range_limit: u64,
    /// Most client sessions kept; registering one more evicts the least recently used.
    pub max_sessions: u64,
    /// Largest response (by `KvResponse::retained_size_bytes`) a session keeps for retries;
    /// bounds the session table's memory at about `max_sessions` times this.
    pub max_session_response_bytes: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_key_bytes: 4096,
            max_value_bytes: 1024 * 1024,
            max_request_bytes: 2 * 1024 * 1024,
            max_txn_ops: 128,
            max_range_limit: 10_000,
            max_sessions: 10_000,
            max_session_response_bytes: 16 * 1024,
        }
    }
}

impl KvLimits {
    /// Rejects limits no request could satisfy (any zero).
    pub fn check(&self) -> Result<(), KvError> {
        let fields = [
            (self.max_key_bytes, "max_key_bytes"),
            (self.max_value_bytes, "max_value_bytes"),
            (self.max_request_bytes, "max_request_bytes"),
            (self.max_txn_ops, "max_txn_ops"),
            (self.max_range_limit, "max_range_limit"),
            (self.max_sessions, "max_sessions"),
            (self.max_session_response_bytes, "max_session_response_bytes"),
        ];
        match fields.iter().find(|(value, _)| *value == 0) {
            Some((_, name)) => Err(KvError::InvalidLimits(name)),
            None => Ok(()),
        }
    }

    /// Checks a request before it is proposed. The state machine runs the same checks at
    /// apply time, so a request that slips past (or limits that changed) yields an error
    /// response, never a panic.
    pub fn validate(&self, request: &KvRequest) -> Result<(), RequestError> {
        if request.session.is_some_and(|tag| tag.seq == 0) {
            return Err(RequestError::ZeroSeq);
        }
        self.validate_command(&request.command)
    }

    /// The command part of [`KvLimits::validate`].
    pub fn validate_command(&self, command: &KvCommand) -> Result<(), RequestError> {
        let mut check = RequestCheck { limits: self, request_bytes: 0 };
        match command {
            KvCommand::Get { key } | KvCommand::Delete { key, .. } => check.key(key)?,
            KvCommand::Range { prefix, start_after, limit } => {
                check.range(prefix, start_after.as_deref(), *limit)?
            }
            KvCommand::Put { key, value, ttl_ms, condition } => {
                check.key(key)?;
                check.value(value)?;
                check.ttl(*ttl_ms)?;
                if let super::Condition::ValueEquals(expected) = condition {
                    check.value(expected)?;
                }
            }
            KvCommand::Cas { key, expected, value, ttl_ms } => {
                check.key(key)?;
                check.value(value)?;
                check.ttl(*ttl_ms)?;
                if let Some(expected) = expected {
                    check.value(expected)?;
                }
            }
            KvCommand::Txn(txn) => {
                for ops in [txn.compares.len(), txn.success.len(), txn.failure.len()] {
                    if ops as u64 > self.max_txn_ops {
                        return Err(RequestError::TooManyTxnOps {
                            ops: ops as u64,
                            max_ops: self.max_txn_ops,
                        });
                    }
                }
                for compare in &txn.compares {
                    check.compare(compare)?;
                }
                for op in txn.success.iter().chain(&txn.failure) {
                    check.txn_op(op)?;
                }
            }
            KvCommand::Clear | KvCommand::ExpireTick | KvCommand::RegisterSession => {}
            KvCommand::SetShardMap(map) => check.shard_map(map)?,
            KvCommand::DeletePrefix { prefix } => check.key_like(prefix)?,
        }
        check.total()
    }

    /// The number of keys a range with the requested `limit` may return: 0 means the maximum,
    /// and anything above the maximum is clamped (validation rejects it; this is the backstop
    /// for direct query calls).
    pub fn effective_range_limit(&self, limit: u64) -> usize {
        let limit = if limit == 0 { self.max_range_limit } else { limit.min(self.max_range_limit) };
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

/// Accumulates the byte budget of one request while checking its parts.
struct RequestCheck<'a> {
    limits: &'a KvLimits,
    request_bytes: u64,
}

impl RequestCheck<'_> {
    fn key(&mut self, key: &str) -> Result<(), RequestError> {
        if key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        self.key_like(key)
    }

    /// A prefix or pagination key: may be empty, bounded like a key.
    fn key_like(&mut self, key: &str) -> Result<(), RequestError> {
        let size_bytes = key.len() as u64;
        if size_bytes > self.limits.max_key_bytes {
            return Err(RequestError::KeyTooLarge {
                size_bytes,
                max_bytes: self.limits.max_key_bytes,
            });
        }
        self.request_bytes = self.request_bytes.saturating_add(size_bytes);
        Ok(())
    }

    fn value(&mut self, value: &Bytes) -> Result<(), RequestError> {
        let size_bytes = value.len() as u64;
        if size_bytes > self.limits.max_value_bytes {
            return Err(RequestError::ValueTooLarge {
                size_bytes,
                max_bytes: self.limits.max_value_bytes,
            });
        }
        self.request_bytes = self.request_bytes.saturating_add(size_bytes);
        Ok(())
    }

    /// A map counts against the request budget by its encoded size (one shard id per slot and
    /// one member list per shard: a few kilobytes for thousands of slots).
    fn shard_map(&mut self, map: &ShardMap) -> Result<(), RequestError> {
        map.validate().map_err(|error| RequestError::InvalidShardMap(error.to_string()))?;
        let size_bytes = postcard::to_allocvec(map)
            .map_err(|error| RequestError::InvalidShardMap(error.to_string()))?
            .len() as u64;
        self.request_bytes = self.request_bytes.saturating_add(size_bytes);
        Ok(())
    }

    fn ttl(&mut self, ttl_ms: Option<u64>) -> Result<(), RequestError> {
        match ttl_ms {
            Some(0) => Err(RequestError::ZeroTtl),
            _ => Ok(()),
        }
    }

    fn range(
        &mut self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<(), RequestError> {
        self.key_like(prefix)?;
        if let Some(start_after) = start_after {
            self.key_like(start_after)?;
        }
        if u64::from(limit) > self.limits.max_range_limit {
            return Err(RequestError::RangeLimitTooLarge {
                limit: u64::from(limit),
                max_limit: self.limits.max_range_limit,
            });
        }
        Ok(())
    }

    fn compare(&mut self, compare: &Compare) -> Result<(), RequestError> {
        self.key(&compare.key)?;
        match &compare.target {
            CompareTarget::Value(_, value) => self.value(value),
            CompareTarget::ModRevision(..)
            | CompareTarget::CreateRevision(..)
            | CompareTarget::Version(..)
            | CompareTarget::Exists(_) => Ok(()),
        }
    }

    fn txn_op(&mut self, op: &TxnOp) -> Result<(), RequestError> {
        match op {
            TxnOp::Put { key, value, ttl_ms } => {
                self.key(key)?;
                self.value(value)?;
                self.ttl(*ttl_ms)
            }
            TxnOp::Delete { key } | TxnOp::Get { key } => self.key(key),
            TxnOp::Range { prefix, start_after, limit } => {
                self.range(prefix, start_after.as_deref(), *limit)
            }
        }
    }

    fn total(&self) -> Result<(), RequestError> {
        if self.request_bytes > self.limits.max_request_bytes {
            return Err(RequestError::RequestTooLarge {
                size_bytes: self.request_bytes,
                max_bytes: self.limits.max_request_bytes,
            });
        }
        Ok(())
    }
}
