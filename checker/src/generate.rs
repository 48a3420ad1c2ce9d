//! Synthetic histories that are linearizable by construction, for the benchmark and the tests
//! (and for anyone who wants a quick sample file).
//!
//! Each client runs operations back to back. Every operation gets a linearization point inside
//! its interval; applying the operations to the reference model ([`crate::spec::KvSpec`]) in
//! the order of those points gives the outputs a correct store would have returned. Some
//! operations end with an unknown outcome (`info`): the client gives up at its return time and
//! the operation either takes effect at its point (which may be after the client gave up) or
//! never. Some fail (`fail`) and never take effect.
//!
//! [`plant_anomaly`] then turns such a history into a definite violation by changing one
//! completed operation in its middle, among concurrent traffic: the benchmark's planted
//! anomalies.

use std::collections::BTreeMap;

use stateright::semantics::SequentialSpec;

use crate::history::{Compare, History, Op, OpIndex, Operation, Range, Status, Time, Txn, TxnOp};
use crate::spec::{KvSpec, call_of, fill_outputs};

/// SplitMix64: a tiny, seedable, well-distributed generator; enough for test data, and it keeps
/// this crate free of a random-number dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        // `mix64` adds the golden-ratio increment itself, so this is SplitMix64's sequence.
        let word = self.state;
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::model::mix64(word)
    }

    /// Uniform in `0..bound` (`bound > 0`); the tiny modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1_000) < u64::from(per_mille)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    pub seed: u64,
    pub op_count: usize,
    pub client_count: u32,
    pub key_count: u32,
    /// Per mille of operations with unknown outcome.
    pub info_per_mille: u32,
    /// Per mille of operations that fail.
    pub fail_per_mille: u32,
    /// Per mille of multi-key operations (transactions over two keys, ranges over a prefix).
    /// They join keys into larger partitions.
    pub multi_key_per_mille: u32,
    /// Distinct values written per key; 0: every write writes a fresh value. Few values make
    /// the search harder (a read no longer identifies its write).
    pub values_per_key: u32,
}

impl Default for GenerateOptions {
    fn default() -> GenerateOptions {
        GenerateOptions {
            seed: 1,
            op_count: 1_000,
            client_count: 16,
            key_count: 100,
            info_per_mille: 20,
            fail_per_mille: 10,
            multi_key_per_mille: 0,
            values_per_key: 0,
        }
    }
}

/// The name of key `index`: fixed width, so that prefixes group keys by tens.
pub fn key_name(index: u32) -> String {
    format!("k{index:04}")
}

struct Planned {
    operation: Operation,
    /// When it takes effect; `None`: never.
    point: Option<Time>,
}

struct Generator<'o> {
    options: &'o GenerateOptions,
    rng: SplitMix64,
    next_value: u64,
}

impl Generator<'_> {
    fn key(&mut self) -> String {
        key_name(self.rng.below(u64::from(self.options.key_count)) as u32)
    }

    fn value(&mut self, key: &str) -> String {
        self.next_value += 1;
        match self.options.values_per_key {
            0 => format!("v{}", self.next_value),
            count => format!("{key}.{}", self.rng.below(u64::from(count))),
        }
    }

    /// A value the key has likely held, so that a fair share of CAS operations succeed.
    fn guess(&mut self, key: &str, written: &BTreeMap<String, String>) -> Option<String> {
        match self.rng.below(4) {
            0 => None,
            1 => Some(self.value(key)),
            _ => written.get(key).cloned(),
        }
    }

    fn single_key_op(&mut self, written: &mut BTreeMap<String, String>) -> Op {
        let key = self.key();
        match self.rng.below(100) {
            0..45 => Op::Get { key, value: None },
            45..75 => {
                let value = self.value(&key);
                written.insert(key.clone(), value.clone());
                Op::Put { key, value }
            }
            75..90 => {
                let expected = self.guess(&key, written);
                let value = self.value(&key);
                written.insert(key.clone(), value.clone());
                Op::Cas { key, expected, value, success: false }
            }
            90..95 => Op::Delete { key, found: None },
            _ => {
                let value = self.value(&key);
                Op::PutIfAbsent { key, value, success: false }
            }
        }
    }

    fn multi_key_op(&mut self, written: &mut BTreeMap<String, String>) -> Op {
        if self.rng.below(2) == 0 {
            let prefix = key_name(self.rng.below(u64::from(self.options.key_count)) as u32);
            let prefix = prefix[..prefix.len() - 1].to_owned();
            let limit = if self.rng.below(2) == 0 { None } else { Some(1 + self.rng.below(4)) };
            return Op::Range(Range {
                prefix,
                start_after: None,
                limit,
                kvs: Vec::new(),
                more: None,
            });
        }
        let (a, b) = (self.key(), self.key());
        let expected = self.guess(&a, written);
        let value = self.value(&b);
        written.insert(b.clone(), value.clone());
        Op::Txn(Txn {
            compare: vec![Compare::Equals { key: a.clone(), expected }],
            success: vec![
                TxnOp::Put { key: b.clone(), value },
                TxnOp::Get { key: a.clone(), value: None },
            ],
            failure: vec![TxnOp::Get { key: b, value: None }, TxnOp::Delete { key: a }],
            succeeded: false,
        })
    }
}

/// A history of `options.op_count` operations that is linearizable by construction.
pub fn linearizable_history(options: &GenerateOptions) -> History {
    assert!(options.client_count > 0 && options.key_count > 0);
    let mut generator = Generator { options, rng: SplitMix64::new(options.seed), next_value: 0 };
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    // Each client's next free time; staggered starts.
    let mut free_at: Vec<Time> =
        (0..options.client_count).map(|_| generator.rng.below(20)).collect();
    let mut planned: Vec<Planned> = Vec::with_capacity(options.op_count);
    for _ in 0..options.op_count {
        // The client that is free first issues the next operation, as in a real run.
        let client =
            (0..free_at.len()).min_by_key(|&client| (free_at[client], client)).unwrap_or(0);
        let call = free_at[client] + generator.rng.below(10);
        let ret = call + 1 + generator.rng.below(40);
        free_at[client] = ret + 1;
        let op = if generator.rng.chance(options.multi_key_per_mille) {
            generator.multi_key_op(&mut written)
        } else {
            generator.single_key_op(&mut written)
        };
        let point = call + generator.rng.below(ret - call + 1);
        let (status, ret, point) = if generator.rng.chance(options.info_per_mille) {
            // The client gives up at `ret`; the operation may still take effect later.
            let late_point = call + generator.rng.below(3 * (ret - call) + 1);
            let point = if generator.rng.below(2) == 0 { Some(late_point) } else { None };
            (Status::Info, None, point)
        } else if generator.rng.chance(options.fail_per_mille) {
            (Status::Fail, Some(ret), None)
        } else {
            (Status::Ok, Some(ret), Some(point))
        };
        planned.push(Planned {
            operation: Operation { client: u64::from(client as u32), call, ret, status, op },
            point,
        });
    }
    // Apply in linearization order (ties: issue order) to learn what a correct store answers.
    let mut order: Vec<usize> =
        (0..planned.len()).filter(|&i| planned[i].point.is_some()).collect();
    order.sort_by_key(|&i| (planned[i].point, i));
    let mut spec = KvSpec::default();
    for index in order {
        let operation = &mut planned[index].operation;
        let ret = spec.invoke(&call_of(&operation.op));
        if operation.status == Status::Ok {
            fill_outputs(&mut operation.op, ret);
        }
    }
    let mut ops: Vec<Operation> = planned.into_iter().map(|planned| planned.operation).collect();
    ops.sort_by_key(|operation| (operation.call, operation.client));
    match History::new(ops) {
        Ok(history) => history,
        Err(error) => panic!("generated history is invalid: {error}"),
    }
}

/// A violation [`plant_anomaly`] can plant.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// A get returns the value of a put that two later puts, both finished before the get
    /// began, overwrote.
    StaleRead,
    /// A get returns a value no operation ever wrote.
    PhantomRead,
    /// A get after a put finished returns the value that put overwrote: the put was lost.
    LostWrite,
    /// A compare-and-set succeeds expecting the value another successful compare-and-set
    /// already replaced.
    DoubleCas,
    /// A get returns a value written before a delete that finished before the get began.
    ResurrectedDelete,
}

impl Anomaly {
    pub const ALL: [Anomaly; 5] = [
        Anomaly::StaleRead,
        Anomaly::PhantomRead,
        Anomaly::LostWrite,
        Anomaly::DoubleCas,
        Anomaly::ResurrectedDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::StaleRead => "stale read",
            Anomaly::PhantomRead => "phantom read",
            Anomaly::LostWrite => "lost write",
            Anomaly::DoubleCas => "double cas",
            Anomaly::ResurrectedDelete => "resurrected delete",
        }
    }
}

/// A history with one planted violation.
#[derive(Clone, Debug)]
pub struct Planted {
    pub history: History,
    /// The operation whose output (for a double cas: whose expected value and outcome) was
    /// changed.
    pub changed: OpIndex,
    /// The operations that make the anomaly definite, `changed` included, in call order: for a
    /// stale read the overwritten put, the two puts and the get.
    pub involved: Vec<OpIndex>,
}

/// Plants `anomaly` on `key` of a linearizable history with unique written values (as
/// [`linearizable_history`] makes with `values_per_key: 0`): the first suitable completed
/// operation from the middle of the key's operations on is changed so that no linearization
/// exists, whatever the rest did. `None` if the key has no suitable operations.
pub fn plant_anomaly(history: &History, anomaly: Anomaly, key: &str) -> Option<Planted> {
    let mut ops = history.ops().to_vec();
    let mut on_key: Vec<OpIndex> =
        (0..ops.len()).filter(|&index| ops[index].op.key() == Some(key)).collect();
    on_key.sort_by_key(|&index| (ops[index].call, index));
    let ok = |index: OpIndex| ops[index].status == Status::Ok;
    let is_put = |index: OpIndex| ok(index) && matches!(ops[index].op, Op::Put { .. });
    let is_get = |index: OpIndex| ok(index) && matches!(ops[index].op, Op::Get { .. });
    let ret = |index: OpIndex| ops[index].ret.unwrap_or(Time::MAX);
    let call = |index: OpIndex| ops[index].call;
    // Completed puts that returned before `time`, latest return first.
    let puts_before = |time: Time| -> Vec<OpIndex> {
        let mut puts: Vec<OpIndex> =
            on_key.iter().copied().filter(|&index| is_put(index) && ret(index) < time).collect();
        puts.sort_by_key(|&index| std::cmp::Reverse((ret(index), index)));
        puts
    };
    let middle = on_key.len() / 2;
    let (changed, involved, new_op) = match anomaly {
        Anomaly::PhantomRead => {
            let read = on_key[middle..].iter().copied().find(|&index| is_get(index))?;
            let op = Op::Get { key: key.to_owned(), value: Some(format!("phantom-{read}")) };
            (read, vec![read], op)
        }
        Anomaly::StaleRead => {
            on_key[middle..].iter().copied().filter(|&i| is_get(i)).find_map(|read| {
                let puts = puts_before(call(read));
                let (later, earlier) = (*puts.first()?, *puts.get(1)?);
                let first_call = call(later).min(call(earlier));
                let stale = puts.iter().copied().find(|&index| ret(index) < first_call)?;
                let Op::Put { value, .. } = &ops[stale].op else { return None };
                let op = Op::Get { key: key.to_owned(), value: Some(value.clone()) };
                Some((read, vec![stale, earlier, later, read], op))
            })?
        }
        Anomaly::LostWrite => {
            on_key[middle..].iter().copied().filter(|&i| is_put(i)).find_map(|lost| {
                // The put it overwrote: the completed put that returned last before it began.
                let previous = *puts_before(call(lost)).first()?;
                // The first completed get after the lost put returned now sees the previous
                // value, as if the put never happened.
                let read = on_key
                    .iter()
                    .copied()
                    .find(|&index| call(index) > ret(lost) && is_get(index))?;
                let Op::Put { value, .. } = &ops[previous].op else { return None };
                let op = Op::Get { key: key.to_owned(), value: Some(value.clone()) };
                Some((read, vec![previous, lost, read], op))
            })?
        }
        Anomaly::DoubleCas => {
            let first = on_key[middle..].iter().copied().find(|&index| {
                ok(index)
                    && matches!(ops[index].op, Op::Cas { expected: Some(_), success: true, .. })
            })?;
            let Op::Cas { expected, .. } = &ops[first].op else { return None };
            let expected = expected.clone();
            // A failed cas called after the first returned, now claiming the same success.
            let second = on_key[middle..].iter().copied().find(|&index| {
                call(index) > ret(first)
                    && ok(index)
                    && matches!(ops[index].op, Op::Cas { success: false, .. })
            })?;
            let Op::Cas { value, .. } = &ops[second].op else { return None };
            let op = Op::Cas { key: key.to_owned(), expected, value: value.clone(), success: true };
            let mut involved = vec![first, second];
            involved.sort_by_key(|&index| (call(index), index));
            (second, involved, op)
        }
        Anomaly::ResurrectedDelete => on_key[middle..]
            .iter()
            .copied()
            .filter(|&index| ok(index) && matches!(ops[index].op, Op::Delete { .. }))
            .find_map(|delete| {
                let written = *puts_before(call(delete)).first()?;
                let read = on_key
                    .iter()
                    .copied()
                    .find(|&index| is_get(index) && call(index) > ret(delete))?;
                let Op::Put { value, .. } = &ops[written].op else { return None };
                let op = Op::Get { key: key.to_owned(), value: Some(value.clone()) };
                Some((read, vec![written, delete, read], op))
            })?,
    };
    ops[changed].op = new_op;
    match History::new(ops) {
        Ok(history) => Some(Planted { history, changed, involved }),
        Err(error) => panic!("planting an output made the history invalid: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckOptions, Verdict, check};

    #[test]
    fn generated_histories_are_deterministic_and_linearizable() {
        let options = GenerateOptions {
            op_count: 3_000,
            key_count: 20,
            multi_key_per_mille: 50,
            values_per_key: 3,
            ..GenerateOptions::default()
        };
        let history = linearizable_history(&options);
        assert_eq!(history, linearizable_history(&options));
        assert_eq!(history.len(), 3_000);
        let statuses: Vec<Status> = history.ops().iter().map(|op| op.status).collect();
        assert!(statuses.contains(&Status::Info) && statuses.contains(&Status::Fail));
        let report = check(&history, &CheckOptions::default());
        assert_eq!(report.verdict, Verdict::Linearizable);
    }
}
