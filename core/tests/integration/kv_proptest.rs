//! Property tests of the KV state machine:
//! - two replicas fed the same random log (one of them snapshotted and restored at a random
//!   point) give identical answers, events and digests at every index;
//! - the state machine agrees with a deliberately naive model (linear scans, no indexes) on
//!   every answer, value and revision;
//! - no byte string makes `restore` or `apply_command_bytes` panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use conclave_core::kv::{
    Compare, CompareOp, CompareTarget, Condition, KeyMeta, KeyValue, KvCommand, KvLimits,
    KvRequest, KvResponse, KvStateMachine, RequestError, SessionTag, Txn, TxnOp, TxnOpResult,
};
use conclave_core::raft::NodeId;
use conclave_core::shard::{ShardMap, SlotCount};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const KEYS: [&str; 6] = ["a", "ab", "abc", "b", "ba", "c"];

fn key(index: u8) -> String {
    KEYS[index as usize % KEYS.len()].to_owned()
}

fn value(seed: u8) -> Bytes {
    // Lengths 0..=9 so that small `max_value_bytes` limits are sometimes exceeded.
    Bytes::from(vec![b'v'.wrapping_add(seed % 3); (seed % 10) as usize])
}

#[derive(Clone, Debug)]
enum GuardKind {
    Always,
    Absent,
    Present,
    ValueIs(u8),
    /// Compare with the current mod revision of the key, shifted by this much.
    ModRevisionOffset(i8),
}

#[derive(Clone, Debug)]
enum Step {
    Put {
        key: u8,
        value: u8,
        ttl_ms: Option<u64>,
        guard: GuardKind,
    },
    Delete {
        key: u8,
        guard: GuardKind,
    },
    Cas {
        key: u8,
        expected: Option<u8>,
        value: u8,
    },
    Clear,
    DeletePrefix {
        prefix: u8,
    },
    Txn {
        compares: Vec<(u8, u8, u8)>,
        success: Vec<(u8, u8, u8)>,
        failure: Vec<(u8, u8, u8)>,
    },
    Get {
        key: u8,
    },
    Range {
        prefix: u8,
        limit: u8,
    },
    Tick,
    Register,
    /// A shard map at this epoch (1–4) over this many slots (1–3), with two shards.
    SetShardMap {
        epoch: u8,
        slots: u8,
    },
    Garbage(Vec<u8>),
    NotACommand,
}

#[derive(Clone, Debug)]
enum SessionChoice {
    None,
    Next(u8),
    Retry(u8),
    Stale(u8),
    Unknown,
}

#[derive(Clone, Debug)]
struct Envelope {
    step: Step,
    /// The leader's clock moves by this much (negative: a new leader whose clock is behind).
    time_delta_ms: i64,
    session: SessionChoice,
}

fn guard_strategy() -> impl Strategy<Value = GuardKind> {
    prop_oneof![
        4 => Just(GuardKind::Always),
        1 => Just(GuardKind::Absent),
        1 => Just(GuardKind::Present),
        1 => any::<u8>().prop_map(GuardKind::ValueIs),
        1 => (-1i8..=1).prop_map(GuardKind::ModRevisionOffset),
    ]
}

fn txn_part() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..4)
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<u8>(), any::<u8>(), prop::option::weighted(0.3, 0u64..3_000), guard_strategy())
            .prop_map(|(key, value, ttl_ms, guard)| Step::Put { key, value, ttl_ms, guard }),
        3 => (any::<u8>(), guard_strategy()).prop_map(|(key, guard)| Step::Delete { key, guard }),
        2 => (any::<u8>(), any::<Option<u8>>(), any::<u8>())
            .prop_map(|(key, expected, value)| Step::Cas { key, expected, value }),
        1 => Just(Step::Clear),
        2 => any::<u8>().prop_map(|prefix| Step::DeletePrefix { prefix }),
        3 => (txn_part(), txn_part(), txn_part())
            .prop_map(|(compares, success, failure)| Step::Txn { compares, success, failure }),
        2 => any::<u8>().prop_map(|key| Step::Get { key }),
        2 => (any::<u8>(), 0u8..6).prop_map(|(prefix, limit)| Step::Range { prefix, limit }),
        2 => Just(Step::Tick),
        2 => Just(Step::Register),
        1 => (1u8..=4, 1u8..=3).prop_map(|(epoch, slots)| Step::SetShardMap { epoch, slots }),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Step::Garbage),
        1 => Just(Step::NotACommand),
    ]
}

fn session_strategy() -> impl Strategy<Value = SessionChoice> {
    prop_oneof![
        4 => Just(SessionChoice::None),
        4 => any::<u8>().prop_map(SessionChoice::Next),
        2 => any::<u8>().prop_map(SessionChoice::Retry),
        1 => any::<u8>().prop_map(SessionChoice::Stale),
        1 => Just(SessionChoice::Unknown),
    ]
}

fn envelope_strategy() -> impl Strategy<Value = Envelope> {
    (step_strategy(), -1_500i64..2_000, session_strategy())
        .prop_map(|(step, time_delta_ms, session)| Envelope { step, time_delta_ms, session })
}

fn guard(kind: &GuardKind, current: Option<KeyMeta>) -> Condition {
    match kind {
        GuardKind::Always => Condition::Always,
        GuardKind::Absent => Condition::Absent,
        GuardKind::Present => Condition::Present,
        GuardKind::ValueIs(seed) => Condition::ValueEquals(value(*seed)),
        GuardKind::ModRevisionOffset(offset) => {
            let current = current.map_or(0, |meta| meta.mod_revision);
            Condition::ModRevisionEquals(current.saturating_add_signed(i64::from(*offset)))
        }
    }
}

fn compare(&(key_seed, kind, operand): &(u8, u8, u8)) -> Compare {
    let op = [CompareOp::Equal, CompareOp::NotEqual, CompareOp::Less, CompareOp::Greater]
        [(operand % 4) as usize];
    let target = match kind % 5 {
        0 => CompareTarget::Value(op, value(operand)),
        1 => CompareTarget::ModRevision(op, u64::from(operand % 8)),
        2 => CompareTarget::CreateRevision(op, u64::from(operand % 8)),
        3 => CompareTarget::Version(op, u64::from(operand % 3)),
        _ => CompareTarget::Exists(operand % 2 == 0),
    };
    Compare { key: key(key_seed), target }
}

fn txn_op(&(key_seed, kind, operand): &(u8, u8, u8)) -> TxnOp {
    match kind % 4 {
        0 => TxnOp::Put {
            key: key(key_seed),
            value: value(operand),
            ttl_ms: (operand % 4 == 0).then_some(u64::from(operand) * 10),
        },
        1 => TxnOp::Delete { key: key(key_seed) },
        2 => TxnOp::Get { key: key(key_seed) },
        _ => TxnOp::Range {
            prefix: key(key_seed)[..1].to_owned(),
            start_after: (operand % 3 == 0).then(|| key(operand)),
            limit: u32::from(operand % 4),
        },
    }
}

/// What one envelope becomes in the log.
enum Entry {
    Request(KvRequest),
    Bytes(Bytes),
    NotACommand,
}

/// Turns envelopes into log entries, tracking sessions the way a client library would.
#[derive(Default)]
struct Client {
    leader_time_ms: u64,
    /// (client id, last seq sent) of every registration seen.
    sessions: Vec<(u64, u64)>,
}

impl Client {
    fn entry(&mut self, envelope: &Envelope, current: &KvStateMachine) -> Entry {
        self.leader_time_ms = self.leader_time_ms.saturating_add_signed(envelope.time_delta_ms);
        let meta = |seed: u8| current.get(&key(seed)).map(|(_, meta)| meta);
        let command = match &envelope.step {
            Step::Put { key: k, value: v, ttl_ms, guard: g } => KvCommand::Put {
                key: key(*k),
                value: value(*v),
                ttl_ms: *ttl_ms,
                condition: guard(g, meta(*k)),
            },
            Step::Delete { key: k, guard: g } => {
                KvCommand::Delete { key: key(*k), condition: guard(g, meta(*k)) }
            }
            Step::Cas { key: k, expected, value: v } => KvCommand::Cas {
                key: key(*k),
                expected: expected.map(value),
                value: value(*v),
                ttl_ms: None,
            },
            Step::Clear => KvCommand::Clear,
            Step::DeletePrefix { prefix } => {
                KvCommand::DeletePrefix { prefix: key(*prefix)[..1].to_owned() }
            }
            Step::Txn { compares, success, failure } => KvCommand::Txn(Txn {
                compares: compares.iter().map(compare).collect(),
                success: success.iter().map(txn_op).collect(),
                failure: failure.iter().map(txn_op).collect(),
            }),
            Step::Get { key: k } => KvCommand::Get { key: key(*k) },
            Step::Range { prefix, limit } => KvCommand::Range {
                prefix: key(*prefix)[..1].to_owned(),
                start_after: None,
                limit: u32::from(*limit),
            },
            Step::Tick => KvCommand::ExpireTick,
            Step::Register => KvCommand::RegisterSession,
            Step::SetShardMap { epoch, slots } => KvCommand::SetShardMap(shard_map(*epoch, *slots)),
            Step::Garbage(bytes) => return Entry::Bytes(Bytes::from(bytes.clone())),
            Step::NotACommand => return Entry::NotACommand,
        };
        let session = self.session(&envelope.session);
        Entry::Request(KvRequest { session, leader_time_ms: self.leader_time_ms, command })
    }

    fn session(&mut self, choice: &SessionChoice) -> Option<SessionTag> {
        let count = self.sessions.len();
        let pick = |seed: u8| seed as usize % count;
        match choice {
            SessionChoice::None => None,
            SessionChoice::Unknown => Some(SessionTag { client_id: u64::MAX, seq: 1 }),
            _ if count == 0 => None,
            SessionChoice::Next(seed) => {
                let (client_id, seq) = &mut self.sessions[pick(*seed)];
                *seq += 1;
                Some(SessionTag { client_id: *client_id, seq: *seq })
            }
            SessionChoice::Retry(seed) => {
                let (client_id, seq) = self.sessions[pick(*seed)];
                Some(SessionTag { client_id, seq: seq.max(1) })
            }
            SessionChoice::Stale(seed) => {
                let (client_id, seq) = self.sessions[pick(*seed)];
                Some(SessionTag { client_id, seq: seq.saturating_sub(1) })
            }
        }
    }

    fn observe(&mut self, response: &KvResponse) {
        if let KvResponse::SessionRegistered { client_id } = response {
            self.sessions.push((*client_id, 0));
        }
    }
}

/// A map of two shards (one if there is a single slot) over `slots` slots at `epoch`.
fn shard_map(epoch: u8, slots: u8) -> ShardMap {
    let slot_count = SlotCount::new(u64::from(slots)).expect("1 to 3 slots");
    let shards = u64::from(slots.min(2));
    let mut map =
        ShardMap::initial(slot_count, shards, &[NodeId(1), NodeId(2)]).expect("a valid map");
    for _ in 1..epoch {
        map = map.changed(|_| Ok(())).expect("the next epoch");
    }
    map
}

fn small_limits() -> KvLimits {
    KvLimits {
        max_value_bytes: 8,
        max_txn_ops: 3,
        max_range_limit: 4,
        max_sessions: 3,
        max_session_response_bytes: 120,
        ..KvLimits::default()
    }
}

fn apply(
    sm: &mut KvStateMachine,
    index: u64,
    entry: &Entry,
) -> Option<conclave_core::kv::ApplyResult> {
    match entry {
        Entry::Request(request) => Some(sm.apply(index, request)),
        Entry::Bytes(bytes) => Some(sm.apply_command_bytes(index, bytes)),
        Entry::NotACommand => {
            sm.advance_applied_index(index);
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Integration tests have no lib.rs to anchor the default location: keep failures in
        // `kv_proptest.proptest-regressions` beside this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn replicas_agree_across_a_snapshot_restore(
        envelopes in prop::collection::vec(envelope_strategy(), 1..150),
        snapshot_at in any::<prop::sample::Index>(),
    ) {
        let snapshot_at = snapshot_at.index(envelopes.len());
        let mut original = KvStateMachine::new(small_limits()).unwrap();
        let mut replica = original.clone();
        let mut client = Client::default();
        for (position, envelope) in envelopes.iter().enumerate() {
            if position == snapshot_at {
                let bytes = replica.snapshot();
                replica = KvStateMachine::restore(&bytes).unwrap();
                prop_assert_eq!(replica.snapshot(), bytes);
            }
            let index = position as u64 + 1;
            let entry = client.entry(envelope, &original);
            let expected = apply(&mut original, index, &entry);
            let actual = apply(&mut replica, index, &entry);
            prop_assert_eq!(&expected, &actual);
            if let Some(result) = &expected {
                client.observe(&result.response);
                prop_assert!(!matches!(result.response, KvResponse::Error(RequestError::MalformedCommand)) || matches!(entry, Entry::Bytes(_)));
            }
            original.check_invariants();
            prop_assert_eq!(original.state_digest(), replica.state_digest());
        }
        prop_assert_eq!(&original, &replica);
        prop_assert_eq!(original.snapshot(), replica.snapshot());
    }

    #[test]
    fn the_state_machine_agrees_with_a_naive_model(
        envelopes in prop::collection::vec(envelope_strategy(), 1..150),
    ) {
        let mut sm = KvStateMachine::default();
        let mut model = Model::default();
        let mut client = Client::default();
        for (position, envelope) in envelopes.iter().enumerate() {
            let index = position as u64 + 1;
            // The model knows nothing of sessions: send every request without one.
            let entry = match client.entry(envelope, &sm) {
                Entry::Request(request) => Entry::Request(KvRequest { session: None, ..request }),
                other => other,
            };
            let Some(result) = apply(&mut sm, index, &entry) else { continue };
            let Entry::Request(request) = &entry else { continue };
            let expected = model.apply(index, request);
            prop_assert_eq!(&result.response, &expected, "at index {}: {:?}", index, request);
            prop_assert_eq!(sm.revision(), model.revision);
            for k in KEYS {
                prop_assert_eq!(sm.get(k), model.get(k).map(|kv| (kv.value, kv.meta)));
            }
            prop_assert_eq!(sm.next_expiry_ms(), model.keys.values().filter_map(|(_, m)| m.expires_at_ms).min());
        }
    }

    #[test]
    fn restore_never_panics_on_arbitrary_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..300), version in 0u8..3) {
        // 0: whatever the first byte is; 1 and 2: a format restore reads.
        if version > 0 && !bytes.is_empty() {
            bytes[0] = version;
        }
        if let Ok(restored) = KvStateMachine::restore(&bytes) {
            restored.check_invariants();
        }
    }

    #[test]
    fn restore_never_panics_on_a_damaged_snapshot(
        envelopes in prop::collection::vec(envelope_strategy(), 1..40),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut sm = KvStateMachine::new(small_limits()).unwrap();
        let mut client = Client::default();
        for (position, envelope) in envelopes.iter().enumerate() {
            let entry = client.entry(envelope, &sm);
            if let Some(result) = apply(&mut sm, position as u64 + 1, &entry) {
                client.observe(&result.response);
            }
        }
        let mut bytes = sm.snapshot().to_vec();
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(mut restored) = KvStateMachine::restore(&bytes) {
            restored.check_invariants();
            // Whatever it restored, it keeps applying without panicking.
            restored.apply(restored.applied_index() + 1, &KvRequest::new(KvCommand::Clear));
        }
    }

    #[test]
    fn arbitrary_log_bytes_never_panic(entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..20)) {
        let mut sm = KvStateMachine::new(small_limits()).unwrap();
        for (position, bytes) in entries.iter().enumerate() {
            let result = sm.apply_command_bytes(position as u64 + 1, bytes);
            if KvRequest::decode(bytes).is_err() {
                prop_assert_eq!(result.response, KvResponse::Error(RequestError::MalformedCommand));
            }
            sm.check_invariants();
        }
    }
}

/// A naive re-statement of the semantics: a plain map, expiry by full scan, no sessions.
#[derive(Default)]
struct Model {
    keys: BTreeMap<String, (Bytes, KeyMeta)>,
    revision: u64,
    clock_ms: u64,
    /// The shard map's (epoch, slot count), once one was taken.
    shard_map: Option<(u64, u32)>,
}

impl Model {
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.keys.get(key).map(|(value, meta)| KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            meta: *meta,
        })
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> (Vec<KeyValue>, bool) {
        let limit = if limit == 0 { 10_000 } else { limit as usize };
        let matching: Vec<KeyValue> = self
            .keys
            .keys()
            .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|after| k.as_str() > after))
            .filter_map(|k| self.get(k))
            .collect();
        let more = matching.len() > limit;
        (matching.into_iter().take(limit).collect(), more)
    }

    fn write(
        &mut self,
        key: &str,
        value: &Bytes,
        ttl_ms: Option<u64>,
        revision: u64,
    ) -> Option<KeyMeta> {
        let prev = self.keys.get(key).map(|(_, meta)| *meta);
        let meta = KeyMeta {
            create_revision: prev.map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.map_or(1, |p| p.version + 1),
            expires_at_ms: ttl_ms.map(|ttl| self.clock_ms.saturating_add(ttl)),
        };
        self.keys.insert(key.to_owned(), (value.clone(), meta));
        prev
    }

    fn holds(condition: &Condition, current: Option<&KeyValue>) -> bool {
        match condition {
            Condition::Always => true,
            Condition::Absent => current.is_none(),
            Condition::Present => current.is_some(),
            Condition::ValueEquals(v) => current.is_some_and(|kv| kv.value == *v),
            Condition::ModRevisionEquals(r) => current.is_some_and(|kv| kv.meta.mod_revision == *r),
        }
    }

    fn compare(compare: &Compare, current: Option<&KeyValue>) -> bool {
        let meta = current.map(|kv| kv.meta);
        let check = |op: &CompareOp, left: std::cmp::Ordering| match op {
            CompareOp::Equal => left.is_eq(),
            CompareOp::NotEqual => left.is_ne(),
            CompareOp::Less => left.is_lt(),
            CompareOp::Greater => left.is_gt(),
        };
        match &compare.target {
            CompareTarget::Value(op, v) => {
                current.is_some_and(|kv| check(op, kv.value.as_ref().cmp(v.as_ref())))
            }
            CompareTarget::ModRevision(op, r) => {
                check(op, meta.map_or(0, |m| m.mod_revision).cmp(r))
            }
            CompareTarget::CreateRevision(op, r) => {
                check(op, meta.map_or(0, |m| m.create_revision).cmp(r))
            }
            CompareTarget::Version(op, v) => check(op, meta.map_or(0, |m| m.version).cmp(v)),
            CompareTarget::Exists(e) => current.is_some() == *e,
        }
    }

    fn apply(&mut self, index: u64, request: &KvRequest) -> KvResponse {
        self.clock_ms = self.clock_ms.max(request.leader_time_ms);
        let before = self.keys.len();
        let now = self.clock_ms;
        self.keys.retain(|_, (_, meta)| meta.expires_at_ms.is_none_or(|deadline| deadline > now));
        if self.keys.len() != before {
            self.revision += 1;
        }
        if let Err(error) = KvLimits::default().validate(request) {
            return KvResponse::Error(error);
        }
        let next = self.revision + 1;
        match &request.command {
            KvCommand::Get { key } => {
                KvResponse::Get { kv: self.get(key), revision: self.revision }
            }
            KvCommand::Range { prefix, start_after, limit } => {
                let (kvs, more) = self.range(prefix, start_after.as_deref(), *limit);
                KvResponse::Range { kvs, more, revision: self.revision }
            }
            KvCommand::Put { key, value, ttl_ms, condition } => {
                self.put_if(key, value, *ttl_ms, condition)
            }
            KvCommand::Cas { key, expected, value, ttl_ms } => {
                let condition = expected.clone().map_or(Condition::Absent, Condition::ValueEquals);
                self.put_if(key, value, *ttl_ms, &condition)
            }
            KvCommand::Delete { key, condition } => {
                let current = self.get(key);
                if !Self::holds(condition, current.as_ref()) {
                    return KvResponse::ConditionFailed {
                        revision: self.revision,
                        current: current.map(|kv| kv.meta),
                    };
                }
                if current.is_some() {
                    self.keys.remove(key);
                    self.revision = next;
                }
                KvResponse::Delete { revision: self.revision, prev: current }
            }
            KvCommand::Clear => {
                let deleted_keys = self.keys.len() as u64;
                if deleted_keys > 0 {
                    self.keys.clear();
                    self.revision = next;
                }
                KvResponse::Clear { revision: self.revision, deleted_keys }
            }
            KvCommand::DeletePrefix { prefix } => {
                let doomed: Vec<String> = self
                    .keys
                    .keys()
                    .filter(|key| key.starts_with(prefix.as_str()))
                    .cloned()
                    .collect();
                for key in &doomed {
                    self.keys.remove(key);
                }
                if !doomed.is_empty() {
                    self.revision = next;
                }
                KvResponse::Clear { revision: self.revision, deleted_keys: doomed.len() as u64 }
            }
            KvCommand::Txn(txn) => {
                let succeeded =
                    txn.compares.iter().all(|c| Self::compare(c, self.get(&c.key).as_ref()));
                let mut changed = false;
                let mut results = Vec::new();
                for op in if succeeded { &txn.success } else { &txn.failure } {
                    results.push(match op {
                        TxnOp::Put { key, value, ttl_ms } => {
                            changed = true;
                            TxnOpResult::Put { prev: self.write(key, value, *ttl_ms, next) }
                        }
                        TxnOp::Delete { key } => {
                            let prev = self.get(key);
                            changed |= self.keys.remove(key).is_some();
                            TxnOpResult::Delete { prev }
                        }
                        TxnOp::Get { key } => TxnOpResult::Get { kv: self.get(key) },
                        TxnOp::Range { prefix, start_after, limit } => {
                            let (kvs, more) = self.range(prefix, start_after.as_deref(), *limit);
                            TxnOpResult::Range { kvs, more }
                        }
                    });
                }
                if changed {
                    self.revision = next;
                }
                KvResponse::Txn { succeeded, results, revision: self.revision }
            }
            KvCommand::ExpireTick => KvResponse::ExpireTick { revision: self.revision },
            KvCommand::RegisterSession => KvResponse::SessionRegistered { client_id: index },
            KvCommand::SetShardMap(map) => {
                let proposed = (map.epoch(), map.slot_count().get());
                match self.shard_map {
                    Some((epoch, slots)) if proposed != (epoch + 1, slots) => {
                        KvResponse::Error(RequestError::ShardMapEpoch {
                            current_epoch: epoch,
                            proposed_epoch: proposed.0,
                        })
                    }
                    _ => {
                        self.shard_map = Some(proposed);
                        KvResponse::ShardMapSet { epoch: proposed.0 }
                    }
                }
            }
        }
    }

    fn put_if(
        &mut self,
        key: &str,
        value: &Bytes,
        ttl_ms: Option<u64>,
        condition: &Condition,
    ) -> KvResponse {
        let current = self.get(key);
        if !Self::holds(condition, current.as_ref()) {
            return KvResponse::ConditionFailed {
                revision: self.revision,
                current: current.map(|kv| kv.meta),
            };
        }
        self.revision += 1;
        let prev = self.write(key, value, ttl_ms, self.revision);
        KvResponse::Put { revision: self.revision, prev }
    }
}
