//! Synthetic histories that are linearizable by construction, for the benchmark and the tests
//! (and for anyone who wants a quick sample file).
//!
//! Each client runs operations back to back. Every operation gets a linearization point inside
//! its interval; applying the operations to the reference model ([`crate::spec::KvSpec`]) in
//! the order of those points gives the outputs a correct store would have returned. Some
//! operations end with an unknown outcome (`info`): the client gives up at its return time and
//! the operation either takes effect at its point (which may be after the client gave up) or
//! never. Some fail (`fail`) and never take effect.

use std::collections::BTreeMap;

use stateright::semantics::SequentialSpec;

use crate::history::{Compare, History, Op, Operation, Range, Status, Time, Txn, TxnOp};
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
