//! The KV state machine: applies committed requests in log order and answers reads.
//!
//! Every node applies the same entries in the same order and must reach the same state, so
//! `apply` is a pure function of (state, index, request): no wall clock (time comes from the
//! leader's stamp in the request), no hash-map iteration, no randomness. It is also total:
//! every request, valid or not, gets an answer; panics are reserved for broken invariants.
//!
//! Time. The state machine's clock is the largest `leader_time_ms` applied so far. It follows
//! the log rather than any node's wall clock, so every node expires a key at the same entry.
//! It never moves backwards, even when a new leader's clock is behind its predecessor's:
//! otherwise a key that reads as expired at one index could read as live again at a later
//! one, and a TTL counted from a lagging stamp would be partly spent before the key was even
//! written. For the same reason a TTL counts from the state machine's clock (which equals
//! `leader_time_ms` unless that leader lags). Keys therefore expire only when an entry is
//! applied: the leader proposes `ExpireTick` once `next_expiry_ms()` has passed on its clock.

use bytes::Bytes;

use super::command::{Condition, KvCommand, KvRequest, SessionTag, Txn, TxnOp};
use super::error::{KvError, RequestError};
use super::event::{KvEvent, KvEventKind};
use super::keyspace::Keyspace;
use super::limits::KvLimits;
use super::response::{KeyMeta, KeyValue, KvResponse, TxnOpResult};
use super::session::{SessionCheck, SessionTable};
use super::snapshot::{self, SnapshotParts};
use crate::raft::LogIndex;
use crate::shard::ShardMap;

/// What one apply produced: the answer for the proposer, and the key changes for watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyResult {
    pub response: KvResponse,
    /// In the order they happened, each with its revision; empty if nothing changed.
    pub events: Vec<KvEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStateMachine {
    limits: KvLimits,
    keyspace: Keyspace,
    sessions: SessionTable,
    /// The largest `leader_time_ms` applied so far (see the module comment).
    clock_ms: u64,
    applied_index: LogIndex,
    /// The shard map, in the meta group of a sharded cluster; `None` everywhere else.
    shard_map: Option<ShardMap>,
}

impl Default for KvStateMachine {
    fn default() -> Self {
        Self::with_valid_limits(KvLimits::default())
    }
}

impl KvStateMachine {
    /// An empty store. Every node of a cluster must use the same limits (they decide answers).
    pub fn new(limits: KvLimits) -> Result<Self, KvError> {
        limits.check()?;
        Ok(Self::with_valid_limits(limits))
    }

    fn with_valid_limits(limits: KvLimits) -> Self {
        KvStateMachine {
            limits,
            keyspace: Keyspace::default(),
            sessions: SessionTable::default(),
            clock_ms: 0,
            applied_index: 0,
            shard_map: None,
        }
    }

    pub fn limits(&self) -> &KvLimits {
        &self.limits
    }

    /// The checks to run before proposing (the same ones `apply` runs).
    pub fn validate(&self, request: &KvRequest) -> Result<(), RequestError> {
        self.limits.validate(request)
    }

    /// The index of the last entry applied (or skipped with [`Self::advance_applied_index`]).
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The store revision: bumped once per request that changed at least one key (a
    /// transaction is one revision), and once per batch of keys that expired together.
    pub fn revision(&self) -> u64 {
        self.keyspace.revision()
    }

    /// The state machine's clock (the largest leader timestamp applied).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The earliest key deadline: once the leader's clock reaches it, an `ExpireTick` (or any
    /// write) makes the key expire.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.keyspace.next_deadline_ms()
    }

    /// Number of keys stored (all live: due keys are removed at every apply).
    pub fn key_count(&self) -> usize {
        self.keyspace.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The shard map held (the meta group's), if any.
    pub fn shard_map(&self) -> Option<&ShardMap> {
        self.shard_map.as_ref()
    }

    // ----- reads (served after a ReadIndex barrier, without a log entry) -----

    /// The key's value and bookkeeping, if it exists and has not expired by the state
    /// machine's clock.
    pub fn get(&self, key: &str) -> Option<(Bytes, KeyMeta)> {
        self.keyspace.lookup(key, self.clock_ms).map(|record| (record.value.clone(), record.meta))
    }

    /// Live keys starting with `prefix` in key order, at most `limit` (0 or more than
    /// `max_range_limit`: `max_range_limit`); `more` tells whether further keys match.
    pub fn range(&self, prefix: &str, limit: usize) -> (Vec<KeyValue>, bool) {
        self.range_after(prefix, None, limit)
    }

    /// [`Self::range`] continuing strictly after `start_after` (the last key of a page).
    pub fn range_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<KeyValue>, bool) {
        let limit = self.limits.effective_range_limit(limit as u64);
        self.keyspace.range(prefix, start_after, limit, self.clock_ms)
    }

    // ----- apply -----

    /// Applies the committed request at log `index`. Indexes must strictly increase.
    pub fn apply(&mut self, index: LogIndex, request: &KvRequest) -> ApplyResult {
        self.advance_applied_index(index);
        self.clock_ms = self.clock_ms.max(request.leader_time_ms);
        let mut events = Vec::new();
        self.expire_due(&mut events);
        let response = match self.limits.validate(request) {
            // Validation is a pure function of the request and the limits, so a retry would
            // get the same error: no need to involve the session table.
            Err(error) => KvResponse::Error(error),
            Ok(()) => match request.session {
                // A registration opens a new session; there is nothing to deduplicate it
                // against (a duplicate registration only leaves an idle session to be evicted).
                Some(tag) if request.command != KvCommand::RegisterSession => {
                    self.apply_in_session(index, tag, &request.command, &mut events)
                }
                _ => self.execute(index, &request.command, &mut events),
            },
        };
        ApplyResult { response, events }
    }

    /// Applies a committed `EntryPayload::Command`. Bytes that do not decode get a
    /// `MalformedCommand` answer (identical on every node) and change nothing but the index.
    pub fn apply_command_bytes(&mut self, index: LogIndex, bytes: &[u8]) -> ApplyResult {
        match KvRequest::decode(bytes) {
            Ok(request) => self.apply(index, &request),
            Err(_) => {
                self.advance_applied_index(index);
                ApplyResult {
                    response: KvResponse::Error(RequestError::MalformedCommand),
                    events: Vec::new(),
                }
            }
        }
    }

    /// Records that the entry at `index` carried no KV command (a Raft no-op or a
    /// configuration change), so that `applied_index` follows the log exactly.
    pub fn advance_applied_index(&mut self, index: LogIndex) {
        assert!(
            index > self.applied_index,
            "apply out of order: index {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    fn apply_in_session(
        &mut self,
        index: LogIndex,
        tag: SessionTag,
        command: &KvCommand,
        events: &mut Vec<KvEvent>,
    ) -> KvResponse {
        let SessionTag { client_id, seq } = tag;
        match self.sessions.check(tag) {
            SessionCheck::Unknown => KvResponse::Error(RequestError::UnknownSession { client_id }),
            SessionCheck::Stale { last_seq } => {
                KvResponse::Error(RequestError::StaleRequest { client_id, seq, last_seq })
            }
            SessionCheck::Duplicate(first_response) => {
                let response = first_response.clone();
                self.sessions.touch(client_id, index);
                response
            }
            SessionCheck::New => {
                let response = self.execute(index, command, events);
                let retained =
                    if response.retained_size_bytes() <= self.limits.max_session_response_bytes {
                        response.clone()
                    } else {
                        KvResponse::Error(RequestError::ResponseNotRetained { client_id, seq })
                    };
                self.sessions.record(tag, index, retained);
                response
            }
        }
    }

    /// Removes the keys whose deadline the clock has reached, all at one revision.
    fn expire_due(&mut self, events: &mut Vec<KvEvent>) {
        let due = self.keyspace.next_deadline_ms().is_some_and(|next| next <= self.clock_ms);
        if due {
            let revision = self.keyspace.pending_revision();
            let expired_keys = self.keyspace.expire_due(self.clock_ms, revision, events);
            assert!(expired_keys > 0);
            self.keyspace.commit_revision(revision);
        }
    }

    /// Runs a validated command.
    fn execute(
        &mut self,
        index: LogIndex,
        command: &KvCommand,
        events: &mut Vec<KvEvent>,
    ) -> KvResponse {
        let now_ms = self.clock_ms;
        match command {
            KvCommand::Get { key } => KvResponse::Get {
                kv: self.keyspace.key_value(key, now_ms),
                revision: self.keyspace.revision(),
            },
            KvCommand::Range { prefix, start_after, limit } => {
                let (kvs, more) = self.range_after(prefix, start_after.as_deref(), *limit as usize);
                KvResponse::Range { kvs, more, revision: self.keyspace.revision() }
            }
            KvCommand::Put { key, value, ttl_ms, condition } => {
                self.put_if(key, value, *ttl_ms, condition, events)
            }
            KvCommand::Cas { key, expected, value, ttl_ms } => {
                let condition = match expected {
                    None => Condition::Absent,
                    Some(expected) => Condition::ValueEquals(expected.clone()),
                };
                self.put_if(key, value, *ttl_ms, &condition, events)
            }
            KvCommand::Delete { key, condition } => self.delete_if(key, condition, events),
            KvCommand::Clear => {
                let revision = self.keyspace.pending_revision();
                let deleted_keys = self.keyspace.clear(revision, events);
                if deleted_keys > 0 {
                    self.keyspace.commit_revision(revision);
                }
                KvResponse::Clear { revision: self.keyspace.revision(), deleted_keys }
            }
            KvCommand::DeletePrefix { prefix } => {
                let revision = self.keyspace.pending_revision();
                let deleted_keys = self.keyspace.delete_prefix(prefix, revision, events);
                if deleted_keys > 0 {
                    self.keyspace.commit_revision(revision);
                }
                KvResponse::Clear { revision: self.keyspace.revision(), deleted_keys }
            }
            KvCommand::Txn(txn) => self.execute_txn(txn, events),
            KvCommand::ExpireTick => KvResponse::ExpireTick { revision: self.keyspace.revision() },
            KvCommand::RegisterSession => {
                // The log index is unique for the life of the cluster and larger than every
                // id handed out before, so it is a fresh id on every node alike.
                self.sessions.register(index, index, self.limits.max_sessions);
                KvResponse::SessionRegistered { client_id: index }
            }
            KvCommand::SetShardMap(map) => self.set_shard_map(map),
        }
    }

    /// Takes `map` if it is the first, or the next epoch of the one held with the same slot
    /// count (validation has checked the map itself). Epochs must follow one another so that
    /// two nodes proposing from the same map cannot both win, and a delayed proposal of an old
    /// map can never bring it back.
    fn set_shard_map(&mut self, map: &ShardMap) -> KvResponse {
        let follows = match &self.shard_map {
            None => true,
            Some(current) => {
                map.epoch() == current.epoch() + 1 && map.slot_count() == current.slot_count()
            }
        };
        if !follows {
            return KvResponse::Error(RequestError::ShardMapEpoch {
                current_epoch: self.shard_map.as_ref().map_or(0, ShardMap::epoch),
                proposed_epoch: map.epoch(),
            });
        }
        self.shard_map = Some(map.clone());
        KvResponse::ShardMapSet { epoch: map.epoch() }
    }

    fn expires_at_ms(&self, ttl_ms: Option<u64>) -> Option<u64> {
        ttl_ms.map(|ttl_ms| self.clock_ms.saturating_add(ttl_ms))
    }

    fn condition_failed(&self, key: &str) -> KvResponse {
        KvResponse::ConditionFailed {
            revision: self.keyspace.revision(),
            current: self.keyspace.lookup(key, self.clock_ms).map(|record| record.meta),
        }
    }

    /// Whether `condition` holds for `key` now. An unconditional write (the common case) needs
    /// no lookup of the key.
    fn condition_holds(&self, key: &str, condition: &Condition) -> bool {
        *condition == Condition::Always || condition.holds(self.keyspace.lookup(key, self.clock_ms))
    }

    fn put_if(
        &mut self,
        key: &str,
        value: &Bytes,
        ttl_ms: Option<u64>,
        condition: &Condition,
        events: &mut Vec<KvEvent>,
    ) -> KvResponse {
        if !self.condition_holds(key, condition) {
            return self.condition_failed(key);
        }
        let revision = self.keyspace.pending_revision();
        let expires_at_ms = self.expires_at_ms(ttl_ms);
        let prev = self.keyspace.put(key, value.clone(), expires_at_ms, revision, events);
        self.keyspace.commit_revision(revision);
        KvResponse::Put { revision, prev }
    }

    fn delete_if(
        &mut self,
        key: &str,
        condition: &Condition,
        events: &mut Vec<KvEvent>,
    ) -> KvResponse {
        if !self.condition_holds(key, condition) {
            return self.condition_failed(key);
        }
        let revision = self.keyspace.pending_revision();
        let prev = self.keyspace.delete(key, revision, KvEventKind::Delete, events);
        if prev.is_some() {
            self.keyspace.commit_revision(revision);
        }
        KvResponse::Delete { revision: self.keyspace.revision(), prev }
    }

    /// Evaluates the compares, then runs one branch in order at a single revision. Validation
    /// has already passed, and no operation can fail after it, so the branch runs entirely.
    fn execute_txn(&mut self, txn: &Txn, events: &mut Vec<KvEvent>) -> KvResponse {
        let now_ms = self.clock_ms;
        let succeeded = txn
            .compares
            .iter()
            .all(|compare| compare.holds(self.keyspace.lookup(&compare.key, now_ms)));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let revision = self.keyspace.pending_revision();
        let mut changed = false;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match op {
                TxnOp::Put { key, value, ttl_ms } => {
                    changed = true;
                    let expires_at_ms = self.expires_at_ms(*ttl_ms);
                    let prev =
                        self.keyspace.put(key, value.clone(), expires_at_ms, revision, events);
                    TxnOpResult::Put { prev }
                }
                TxnOp::Delete { key } => {
                    let prev = self.keyspace.delete(key, revision, KvEventKind::Delete, events);
                    changed |= prev.is_some();
                    TxnOpResult::Delete { prev }
                }
                TxnOp::Get { key } => TxnOpResult::Get { kv: self.keyspace.key_value(key, now_ms) },
                TxnOp::Range { prefix, start_after, limit } => {
                    let (kvs, more) =
                        self.range_after(prefix, start_after.as_deref(), *limit as usize);
                    TxnOpResult::Range { kvs, more }
                }
            };
            results.push(result);
        }
        if changed {
            self.keyspace.commit_revision(revision);
        }
        KvResponse::Txn { succeeded, results, revision: self.keyspace.revision() }
    }

    // ----- snapshots and digests -----

    fn parts(&self) -> snapshot::BorrowedParts<'_> {
        SnapshotParts {
            limits: &self.limits,
            applied_index: self.applied_index,
            clock_ms: self.clock_ms,
            keyspace: &self.keyspace,
            sessions: &self.sessions,
            shard_map: self.shard_map.as_ref(),
        }
    }

    /// The whole state (keys, revisions, sessions, clock, applied index, limits) as bytes.
    /// Deterministic: equal states give equal bytes.
    pub fn snapshot(&self) -> Bytes {
        snapshot::encode(&self.parts())
    }

    /// Rebuilds a state machine from [`Self::snapshot`] bytes, validating everything.
    pub fn restore(bytes: &[u8]) -> Result<Self, KvError> {
        let parts = snapshot::decode(bytes)?;
        let restored = KvStateMachine {
            limits: parts.limits,
            keyspace: parts.keyspace,
            sessions: parts.sessions,
            clock_ms: parts.clock_ms,
            applied_index: parts.applied_index,
            shard_map: parts.shard_map,
        };
        restored.check_invariants();
        Ok(restored)
    }

    /// Replaces the shard map a restored state holds (`None`: no map). Only for a restore into
    /// a new cluster, whose members the backed-up map does not name (a running group's map
    /// changes only through its log: [`KvCommand::SetShardMap`]).
    pub fn replace_shard_map_for_restore(&mut self, map: Option<ShardMap>) {
        self.shard_map = map;
    }

    /// A deterministic 64-bit hash (FNV-1a) of exactly the bytes [`Self::snapshot`] would
    /// produce: nodes at the same applied index must have equal digests. Costs one pass over
    /// the state, without allocating the encoding.
    pub fn state_digest(&self) -> u64 {
        snapshot::digest(&self.parts())
    }

    /// Asserts the internal indexes agree with the data (for tests and the simulator).
    pub fn check_invariants(&self) {
        self.keyspace.check_invariants();
        assert!(self.next_expiry_ms().is_none_or(|next| next > self.clock_ms));
        assert!(self.sessions.len() as u64 <= self.limits.max_sessions);
    }
}
