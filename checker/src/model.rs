//! The KV model the search steps through: the operations of one partition compiled to small
//! integers, and the state they act on.
//!
//! Keys become *slots* (indexes into the partition's sorted key list) and values become
//! [`ValueId`]s (interned per partition), so a model state is a `Vec<u32>` that is cheap to
//! compare, hash and store in the memo cache. The reference semantics, written over plain
//! strings, is `spec.rs`; the stateright property test requires the two to agree.

use std::collections::HashMap;

use crate::history::{CmpOp, Compare, Op, Operation, Range, Status, Time, TxnOp};

/// An interned value; [`ABSENT`] stands for "no such key".
pub(crate) type ValueId = u32;

/// The state of an absent key. All keys start absent.
pub(crate) const ABSENT: ValueId = 0;

/// Index of a key in the partition's sorted key list.
pub(crate) type Slot = u32;

/// The output a checked operation claims; `Unknown` for `info` operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    Unknown,
}

impl Outcome {
    fn of(status: Status, success: bool) -> Outcome {
        match (status, success) {
            (Status::Ok, true) => Outcome::Succeeded,
            (Status::Ok, false) => Outcome::Failed,
            (Status::Info | Status::Fail, _) => Outcome::Unknown,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum ModelOp {
    Read {
        slot: Slot,
        value: ValueId,
    },
    /// A put, or a delete (`value == ABSENT`) whose result was not recorded.
    Write {
        slot: Slot,
        value: ValueId,
    },
    /// A completed delete that recorded whether the key existed.
    Delete {
        slot: Slot,
        found: bool,
    },
    /// `cas` and `put_if_absent` (`expected == ABSENT`).
    Cas {
        slot: Slot,
        expected: ValueId,
        value: ValueId,
        outcome: Outcome,
    },
    Txn(Box<TxnModel>),
    Range(Box<RangeModel>),
}

#[derive(Clone, Debug)]
pub(crate) struct TxnModel {
    compares: Vec<CompareModel>,
    success: Vec<SubOp>,
    failure: Vec<SubOp>,
    outcome: Outcome,
}

#[derive(Clone, Debug)]
enum CompareModel {
    Equals {
        slot: Slot,
        expected: ValueId,
    },
    /// `value` is an interned id; ordering compares go through the value strings.
    Value {
        slot: Slot,
        cmp: CmpOp,
        value: ValueId,
    },
    Exists {
        slot: Slot,
        exists: bool,
    },
}

#[derive(Clone, Debug)]
enum SubOp {
    /// `value: None`: not observed (the branch did not run, or the transaction is `info`).
    Get {
        slot: Slot,
        value: Option<ValueId>,
    },
    Write {
        slot: Slot,
        value: ValueId,
    },
    Range(RangeModel),
}

#[derive(Clone, Debug)]
pub(crate) struct RangeModel {
    /// The partition's keys the range covers, in ascending key order.
    slots: Vec<Slot>,
    limit: usize,
    /// What the client saw; `None`: not observed.
    expected: Option<Vec<(Slot, ValueId)>>,
    more: Option<bool>,
}

/// "Slot holds value": what an operation may need or establish.
pub(crate) type Fact = (Slot, ValueId);

/// One partition, compiled: keys, interned values and operations in call order.
#[derive(Debug)]
pub(crate) struct PartitionModel<'h> {
    pub(crate) keys: Vec<&'h str>,
    /// `values[id]` is the text of value `id`; `values[ABSENT]` is a placeholder.
    values: Vec<&'h str>,
    pub(crate) ops: Vec<ModelOp>,
    pub(crate) calls: Vec<Time>,
    /// `None` for operations that may take effect at any time after their call (`info`).
    pub(crate) rets: Vec<Option<Time>>,
    /// The operation of the history each model operation came from.
    pub(crate) origins: Vec<usize>,
    pub(crate) dependencies: Dependencies,
}

/// For the search's dead-end rule (`search.rs`): the facts each operation needs to hold at the
/// moment it takes effect, and the facts it may establish. Only facts that some operation needs
/// get an id; flat arrays (offsets per operation) avoid two allocations per operation.
#[derive(Debug, Default)]
pub(crate) struct Dependencies {
    fact_id: HashMap<Fact, u32>,
    /// `facts[id]` is the fact with that id.
    facts: Vec<Fact>,
    requires_start: Vec<u32>,
    requires: Vec<u32>,
    produces_start: Vec<u32>,
    produces: Vec<u32>,
    /// Like `produces`, but whatever the operation's outcome: for optional operations.
    may_produce_start: Vec<u32>,
    may_produce: Vec<u32>,
}

impl Dependencies {
    fn build(model: &PartitionModel<'_>) -> Dependencies {
        let mut dependencies = Dependencies::default();
        let mut required: Vec<Vec<Fact>> = Vec::with_capacity(model.len());
        for op in 0..model.len() {
            let needs = if model.is_optional(op) { Vec::new() } else { model.requirements(op) };
            for &fact in &needs {
                let next_id = dependencies.facts.len() as u32;
                dependencies.fact_id.entry(fact).or_insert_with(|| {
                    dependencies.facts.push(fact);
                    next_id
                });
            }
            required.push(needs);
        }
        for (op, needs) in required.iter().enumerate() {
            dependencies.requires_start.push(dependencies.requires.len() as u32);
            dependencies.requires.extend(needs.iter().map(|fact| dependencies.fact_id[fact]));
            dependencies.produces_start.push(dependencies.produces.len() as u32);
            for fact in model.writes(op, true) {
                if let Some(&id) = dependencies.fact_id.get(&fact) {
                    dependencies.produces.push(id);
                }
            }
            dependencies.may_produce_start.push(dependencies.may_produce.len() as u32);
            for fact in model.writes(op, false) {
                if let Some(&id) = dependencies.fact_id.get(&fact) {
                    dependencies.may_produce.push(id);
                }
            }
        }
        dependencies.requires_start.push(dependencies.requires.len() as u32);
        dependencies.produces_start.push(dependencies.produces.len() as u32);
        dependencies.may_produce_start.push(dependencies.may_produce.len() as u32);
        dependencies
    }

    pub(crate) fn fact(&self, id: u32) -> Fact {
        self.facts[id as usize]
    }

    pub(crate) fn fact_count(&self) -> usize {
        self.facts.len()
    }

    pub(crate) fn fact_id(&self, slot: Slot, value: ValueId) -> Option<u32> {
        if self.facts.is_empty() {
            return None;
        }
        self.fact_id.get(&(slot, value)).copied()
    }

    pub(crate) fn requires(&self, op: usize) -> &[u32] {
        &self.requires[self.requires_start[op] as usize..self.requires_start[op + 1] as usize]
    }

    /// The facts `op` may establish: with its recorded outcome when `observed`, else with
    /// any outcome.
    pub(crate) fn produces(&self, op: usize, observed: bool) -> &[u32] {
        if observed {
            &self.produces[self.produces_start[op] as usize..self.produces_start[op + 1] as usize]
        } else {
            &self.may_produce
                [self.may_produce_start[op] as usize..self.may_produce_start[op + 1] as usize]
        }
    }
}

/// The mutable state of a search: one value per slot, an undo log, and an incremental hash.
///
/// The hash is a XOR of one pseudo-random word per (slot, value) pair, so that changing a slot
/// updates it in O(1) and equal states always hash equally.
#[derive(Debug)]
pub(crate) struct State {
    values: Vec<ValueId>,
    undo: Vec<(Slot, ValueId)>,
    hash: u64,
}

impl State {
    pub(crate) fn new(slot_count: usize) -> State {
        let values = vec![ABSENT; slot_count];
        let hash = values
            .iter()
            .enumerate()
            .fold(0, |hash, (slot, &value)| hash ^ fact_hash(slot as Slot, value));
        State { values, undo: Vec::new(), hash }
    }

    pub(crate) fn values(&self) -> &[ValueId] {
        &self.values
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    fn get(&self, slot: Slot) -> ValueId {
        self.values[slot as usize]
    }

    fn set(&mut self, slot: Slot, value: ValueId) {
        let old = self.values[slot as usize];
        self.undo.push((slot, old));
        self.values[slot as usize] = value;
        self.hash ^= fact_hash(slot, old) ^ fact_hash(slot, value);
    }

    /// A position in the undo log to roll back to.
    pub(crate) fn mark(&self) -> usize {
        self.undo.len()
    }

    pub(crate) fn rollback(&mut self, mark: usize) {
        assert!(mark <= self.undo.len());
        while self.undo.len() > mark {
            let Some((slot, old)) = self.undo.pop() else { break };
            let current = self.values[slot as usize];
            self.values[slot as usize] = old;
            self.hash ^= fact_hash(slot, current) ^ fact_hash(slot, old);
        }
    }

    /// The undo entries (slot, previous value) recorded since `mark`.
    pub(crate) fn undo_since(&self, mark: usize) -> &[(Slot, ValueId)] {
        &self.undo[mark..]
    }

    /// Whether fact `fact` (an id of `dependencies`) holds in this state.
    pub(crate) fn holds_fact(&self, dependencies: &Dependencies, fact: u32) -> bool {
        let (slot, value) = dependencies.fact(fact);
        self.values[slot as usize] == value
    }

    /// True if some slot written since `mark` now differs from its value at `mark`.
    /// May say "changed" for a slot written and then restored within one operation; that only
    /// costs a missed pruning, never a wrong answer.
    pub(crate) fn changed_since(&self, mark: usize) -> bool {
        self.undo[mark..].iter().any(|&(slot, old)| self.values[slot as usize] != old)
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash of one word.
pub(crate) fn mix64(mut word: u64) -> u64 {
    word = word.wrapping_add(0x9e37_79b9_7f4a_7c15);
    word = (word ^ (word >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    word = (word ^ (word >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    word ^ (word >> 31)
}

fn fact_hash(slot: Slot, value: ValueId) -> u64 {
    mix64((u64::from(slot) << 32 | u64::from(value)) ^ 0x05ee_d0f5_7a7e)
}

/// Interns the strings of one partition.
struct Compiler<'h> {
    keys: Vec<&'h str>,
    slot_of: HashMap<&'h str, Slot>,
    values: Vec<&'h str>,
    value_of: HashMap<&'h str, ValueId>,
}

impl<'h> Compiler<'h> {
    fn slot(&self, key: &str) -> Slot {
        match self.slot_of.get(key) {
            Some(&slot) => slot,
            // The partitioner gives every key an operation touches to the operation's
            // partition; a miss is a bug in partition.rs, not bad input.
            None => panic!("key {key:?} is not in its operation's partition"),
        }
    }

    fn value(&mut self, value: &'h str) -> ValueId {
        if let Some(&id) = self.value_of.get(value) {
            return id;
        }
        let id = ValueId::try_from(self.values.len()).unwrap_or(ValueId::MAX);
        assert!(id < ValueId::MAX, "more than 2^32 distinct values in one partition");
        self.values.push(value);
        self.value_of.insert(value, id);
        id
    }

    fn optional_value(&mut self, value: Option<&'h String>) -> ValueId {
        value.map_or(ABSENT, |value| self.value(value))
    }

    fn compile(&mut self, operation: &'h Operation) -> ModelOp {
        let status = operation.status;
        match &operation.op {
            Op::Get { key, value } => {
                assert_eq!(status, Status::Ok, "an unfinished get has no effect and is dropped");
                ModelOp::Read { slot: self.slot(key), value: self.optional_value(value.as_ref()) }
            }
            Op::Put { key, value } => {
                ModelOp::Write { slot: self.slot(key), value: self.value(value) }
            }
            Op::Delete { key, found } => match (status, found) {
                (Status::Ok, Some(found)) => {
                    ModelOp::Delete { slot: self.slot(key), found: *found }
                }
                _ => ModelOp::Write { slot: self.slot(key), value: ABSENT },
            },
            Op::Cas { key, expected, value, success } => ModelOp::Cas {
                slot: self.slot(key),
                expected: self.optional_value(expected.as_ref()),
                value: self.value(value),
                outcome: Outcome::of(status, *success),
            },
            Op::PutIfAbsent { key, value, success } => ModelOp::Cas {
                slot: self.slot(key),
                expected: ABSENT,
                value: self.value(value),
                outcome: Outcome::of(status, *success),
            },
            Op::Txn(txn) => {
                let outcome = Outcome::of(status, txn.succeeded);
                let observed = |taken: bool| status == Status::Ok && taken;
                let compares = txn.compare.iter().map(|compare| self.compare(compare)).collect();
                let success = txn
                    .success
                    .iter()
                    .map(|sub| self.sub_op(sub, observed(txn.succeeded)))
                    .collect();
                let failure = txn
                    .failure
                    .iter()
                    .map(|sub| self.sub_op(sub, observed(!txn.succeeded)))
                    .collect();
                ModelOp::Txn(Box::new(TxnModel { compares, success, failure, outcome }))
            }
            Op::Range(range) => {
                assert_eq!(status, Status::Ok, "an unfinished range has no effect and is dropped");
                ModelOp::Range(Box::new(self.range(range, true)))
            }
        }
    }

    fn compare(&mut self, compare: &'h Compare) -> CompareModel {
        match compare {
            Compare::Equals { key, expected } => CompareModel::Equals {
                slot: self.slot(key),
                expected: self.optional_value(expected.as_ref()),
            },
            Compare::Value { key, cmp, value } => {
                CompareModel::Value { slot: self.slot(key), cmp: *cmp, value: self.value(value) }
            }
            Compare::Exists { key, exists } => {
                CompareModel::Exists { slot: self.slot(key), exists: *exists }
            }
        }
    }

    fn sub_op(&mut self, sub: &'h TxnOp, observed: bool) -> SubOp {
        match sub {
            TxnOp::Get { key, value } => SubOp::Get {
                slot: self.slot(key),
                value: observed.then(|| self.optional_value(value.as_ref())),
            },
            TxnOp::Put { key, value } => {
                SubOp::Write { slot: self.slot(key), value: self.value(value) }
            }
            TxnOp::Delete { key } => SubOp::Write { slot: self.slot(key), value: ABSENT },
            TxnOp::Range(range) => SubOp::Range(self.range(range, observed)),
        }
    }

    fn range(&mut self, range: &'h Range, observed: bool) -> RangeModel {
        // The partition's keys are sorted, so the covered slots come out in key order.
        let slots = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, key)| range_covers(range, key))
            .map(|(slot, _)| slot as Slot)
            .collect();
        let expected = observed.then(|| {
            range.kvs.iter().map(|kv| (self.slot(&kv.key), self.value(&kv.value))).collect()
        });
        RangeModel {
            slots,
            limit: range
                .limit
                .map_or(usize::MAX, |limit| usize::try_from(limit).unwrap_or(usize::MAX)),
            expected,
            more: if observed { range.more } else { None },
        }
    }
}

/// Whether a range read covers `key`.
pub(crate) fn range_covers(range: &Range, key: &str) -> bool {
    key.starts_with(range.prefix.as_str())
        && range.start_after.as_deref().is_none_or(|start_after| key > start_after)
}

/// One operation of a model derived from another (see [`PartitionModel::derive`]).
#[derive(Clone, Debug)]
pub(crate) struct DerivedOp {
    pub(crate) op: ModelOp,
    pub(crate) call: Time,
    pub(crate) ret: Option<Time>,
    /// The index of the operation it comes from in the model it is derived from.
    pub(crate) origin: usize,
}

impl<'h> PartitionModel<'h> {
    /// A model over the same keys and values with other operations (the minimizer's trials).
    /// `origins` then refer to operations of `self`.
    pub(crate) fn derive(&self, mut ops: Vec<DerivedOp>) -> PartitionModel<'h> {
        ops.sort_by_key(|derived| (derived.call, derived.origin));
        let mut model = PartitionModel {
            keys: self.keys.clone(),
            values: self.values.clone(),
            ops: Vec::with_capacity(ops.len()),
            calls: Vec::with_capacity(ops.len()),
            rets: Vec::with_capacity(ops.len()),
            origins: Vec::with_capacity(ops.len()),
            dependencies: Dependencies::default(),
        };
        for derived in ops {
            model.ops.push(derived.op);
            model.calls.push(derived.call);
            model.rets.push(derived.ret);
            model.origins.push(derived.origin);
        }
        model.dependencies = Dependencies::build(&model);
        model
    }

    /// Every slot an operation reads, compares or writes (a range: every slot it covers).
    pub(crate) fn slots(&self, op: usize) -> Vec<Slot> {
        fn range_slots(range: &RangeModel, slots: &mut Vec<Slot>) {
            slots.extend(&range.slots);
            slots.extend(range.expected.iter().flatten().map(|&(slot, _)| slot));
        }
        let mut slots = Vec::new();
        match &self.ops[op] {
            &ModelOp::Read { slot, .. }
            | &ModelOp::Write { slot, .. }
            | &ModelOp::Delete { slot, .. }
            | &ModelOp::Cas { slot, .. } => slots.push(slot),
            ModelOp::Txn(txn) => {
                for compare in &txn.compares {
                    slots.push(match *compare {
                        CompareModel::Equals { slot, .. }
                        | CompareModel::Value { slot, .. }
                        | CompareModel::Exists { slot, .. } => slot,
                    });
                }
                for sub in txn.success.iter().chain(&txn.failure) {
                    match sub {
                        &SubOp::Get { slot, .. } | &SubOp::Write { slot, .. } => slots.push(slot),
                        SubOp::Range(range) => range_slots(range, &mut slots),
                    }
                }
            }
            ModelOp::Range(range) => range_slots(range, &mut slots),
        }
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    /// Compiles the operations `indexes` of `history_ops` (already in call order) over the
    /// sorted `keys`.
    pub(crate) fn compile(
        history_ops: &'h [Operation],
        keys: Vec<&'h str>,
        indexes: &[usize],
    ) -> PartitionModel<'h> {
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "partition keys must be sorted");
        let slot_of = keys.iter().enumerate().map(|(slot, key)| (*key, slot as Slot)).collect();
        let mut compiler = Compiler { keys, slot_of, values: vec![""], value_of: HashMap::new() };
        let mut ops = Vec::with_capacity(indexes.len());
        let mut calls = Vec::with_capacity(indexes.len());
        let mut rets = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let operation = &history_ops[index];
            assert_ne!(operation.status, Status::Fail, "failed operations are dropped");
            ops.push(compiler.compile(operation));
            calls.push(operation.call);
            rets.push(if operation.status == Status::Ok { operation.ret } else { None });
        }
        let mut model = PartitionModel {
            keys: compiler.keys,
            values: compiler.values,
            ops,
            calls,
            rets,
            origins: indexes.to_vec(),
            dependencies: Dependencies::default(),
        };
        model.dependencies = Dependencies::build(&model);
        model
    }

    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// True for a completed operation that never changes the state wherever it is valid: a
    /// read, a failed cas, a cas that writes back what it expected, a delete that found nothing,
    /// a transaction whose taken branch only reads. (A put of the current value is not pure:
    /// placed elsewhere it would change the state.) The search's forced moves rely on this.
    pub(crate) fn is_pure(&self, op: usize) -> bool {
        if self.is_optional(op) {
            return false;
        }
        match &self.ops[op] {
            ModelOp::Read { .. } | ModelOp::Range(_) => true,
            ModelOp::Write { .. } => false,
            ModelOp::Delete { found, .. } => !found,
            ModelOp::Cas { expected, value, outcome, .. } => match outcome {
                Outcome::Failed => true,
                Outcome::Succeeded => expected == value,
                Outcome::Unknown => false,
            },
            ModelOp::Txn(txn) => {
                let branch = match txn.outcome {
                    Outcome::Succeeded => &txn.success,
                    Outcome::Failed => &txn.failure,
                    Outcome::Unknown => return false,
                };
                branch.iter().all(|sub| !matches!(sub, SubOp::Write { .. }))
            }
        }
    }

    /// True for an operation that may be left out of a linearization (`info`).
    pub(crate) fn is_optional(&self, op: usize) -> bool {
        self.rets[op].is_none()
    }

    /// Applies operation `op` to `state` if its outputs are consistent with it; with
    /// `observed == false` the outputs are ignored (the operation's effect only, as for an
    /// operation whose outcome is unknown). On `false` the state may be partly changed: the
    /// caller rolls back to its mark.
    pub(crate) fn apply(&self, op: usize, state: &mut State, observed: bool) -> bool {
        match &self.ops[op] {
            &ModelOp::Read { slot, value } => !observed || state.get(slot) == value,
            &ModelOp::Write { slot, value } => {
                state.set(slot, value);
                true
            }
            &ModelOp::Delete { slot, found } => {
                if observed && (state.get(slot) != ABSENT) != found {
                    return false;
                }
                state.set(slot, ABSENT);
                true
            }
            &ModelOp::Cas { slot, expected, value, outcome } => {
                let holds = state.get(slot) == expected;
                let outcome = if observed { outcome } else { Outcome::Unknown };
                match outcome {
                    Outcome::Succeeded if !holds => false,
                    Outcome::Failed => !holds,
                    Outcome::Succeeded | Outcome::Unknown => {
                        if holds {
                            state.set(slot, value);
                        }
                        true
                    }
                }
            }
            ModelOp::Txn(txn) => {
                let holds = txn.compares.iter().all(|compare| self.compare_holds(compare, state));
                let outcome = if observed { txn.outcome } else { Outcome::Unknown };
                match (outcome, holds) {
                    (Outcome::Succeeded, false) | (Outcome::Failed, true) => return false,
                    _ => {}
                }
                let branch = if holds { &txn.success } else { &txn.failure };
                branch.iter().all(|sub| self.apply_sub(sub, state, observed))
            }
            ModelOp::Range(range) => !observed || self.range_matches(range, state),
        }
    }

    fn compare_holds(&self, compare: &CompareModel, state: &State) -> bool {
        match *compare {
            CompareModel::Equals { slot, expected } => state.get(slot) == expected,
            CompareModel::Value { slot, cmp, value } => {
                let current = state.get(slot);
                current != ABSENT
                    && cmp.accepts(self.values[current as usize].cmp(self.values[value as usize]))
            }
            CompareModel::Exists { slot, exists } => (state.get(slot) != ABSENT) == exists,
        }
    }

    fn apply_sub(&self, sub: &SubOp, state: &mut State, observed: bool) -> bool {
        match sub {
            SubOp::Get { slot, value } => {
                !observed || value.is_none_or(|value| state.get(*slot) == value)
            }
            SubOp::Write { slot, value } => {
                state.set(*slot, *value);
                true
            }
            SubOp::Range(range) => !observed || self.range_matches(range, state),
        }
    }

    fn range_matches(&self, range: &RangeModel, state: &State) -> bool {
        // Outputs are recorded together: `more` is only ever set next to `expected`.
        assert!(range.more.is_none() || range.expected.is_some());
        let mut present = range
            .slots
            .iter()
            .map(|&slot| (slot, state.get(slot)))
            .filter(|&(_, value)| value != ABSENT);
        if let Some(expected) = &range.expected {
            if expected.len() > range.limit {
                return false;
            }
            // The first `expected.len()` present keys must be exactly what the client saw...
            for &pair in expected {
                if present.next() != Some(pair) {
                    return false;
                }
            }
            // ...and a result shorter than the limit must not have left a present key out.
            if expected.len() < range.limit && present.clone().next().is_some() {
                return false;
            }
        }
        if let Some(more) = range.more {
            // `present` now stands just past the returned pairs.
            if present.next().is_some() != more {
                return false;
            }
        }
        true
    }

    /// Facts that must hold when a completed operation takes effect: what a get or range read,
    /// what a successful cas or transaction compared equal. Reads inside a transaction branch
    /// are left out: they may see the transaction's own earlier writes.
    fn requirements(&self, op: usize) -> Vec<Fact> {
        match &self.ops[op] {
            &ModelOp::Read { slot, value } => vec![(slot, value)],
            &ModelOp::Cas { slot, expected, outcome: Outcome::Succeeded, .. } => {
                vec![(slot, expected)]
            }
            ModelOp::Txn(txn) if txn.outcome == Outcome::Succeeded => txn
                .compares
                .iter()
                .filter_map(|compare| match *compare {
                    CompareModel::Equals { slot, expected } => Some((slot, expected)),
                    CompareModel::Value { .. } | CompareModel::Exists { .. } => None,
                })
                .collect(),
            ModelOp::Range(range) => range.expected.clone().unwrap_or_default(),
            ModelOp::Write { .. }
            | ModelOp::Delete { .. }
            | ModelOp::Cas { .. }
            | ModelOp::Txn(_) => Vec::new(),
        }
    }

    /// The (slot, value) facts an operation may establish: given its recorded outcome when
    /// `observed`, or whatever its outcome (a relaxed or unknown operation) otherwise.
    pub(crate) fn writes(&self, op: usize, observed: bool) -> Vec<Fact> {
        let mut writes = Vec::new();
        match &self.ops[op] {
            &ModelOp::Read { .. } | ModelOp::Range(_) => {}
            &ModelOp::Write { slot, value } => writes.push((slot, value)),
            &ModelOp::Delete { slot, .. } => writes.push((slot, ABSENT)),
            &ModelOp::Cas { slot, value, outcome, .. } => {
                if !observed || outcome != Outcome::Failed {
                    writes.push((slot, value));
                }
            }
            ModelOp::Txn(txn) => {
                let outcome = if observed { txn.outcome } else { Outcome::Unknown };
                let branches: &[&Vec<SubOp>] = match outcome {
                    Outcome::Succeeded => &[&txn.success],
                    Outcome::Failed => &[&txn.failure],
                    Outcome::Unknown => &[&txn.success, &txn.failure],
                };
                for sub in branches.iter().copied().flatten() {
                    if let SubOp::Write { slot, value } = sub {
                        writes.push((*slot, *value));
                    }
                }
            }
        }
        writes
    }
}
