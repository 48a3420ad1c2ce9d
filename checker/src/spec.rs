//! The KV model as a stateright [`SequentialSpec`]: the reference semantics, written plainly
//! over strings, independent of the compiled model the search uses (`model.rs`).
//!
//! It serves three purposes: stateright's `LinearizabilityTester` can check small histories
//! with it (the property test in `tests/integration/agreement.rs` requires both checkers to
//! agree), the generator (`generate.rs`) computes the outputs of linearizable-by-construction
//! histories with it, and it documents the semantics in one place.
//!
//! What stateright's tester can express, and so what the agreement test is limited to: one
//! operation in flight per thread, identified by call/return events in one total order; an
//! operation still in flight at the end may be linearized (with whatever it returns) or left
//! out. That is exactly an `info` operation that is its client's last. An `info` operation
//! followed by more operations of the same client, which this crate accepts (the client gave
//! up waiting), has no stateright counterpart, and `fail` operations are simply not given to it.

use std::collections::BTreeMap;

use stateright::semantics::SequentialSpec;

use crate::history::{Compare, KeyValue, Op, Range, TxnOp};

/// The whole key space. All keys start absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvSpec {
    pub data: BTreeMap<String, String>,
}

/// A range request (without its result).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RangeCall {
    pub prefix: String,
    pub start_after: Option<String>,
    pub limit: Option<u64>,
}

/// One operation of a transaction branch (without its result).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TxnCall {
    Get { key: String },
    Put { key: String, value: String },
    Delete { key: String },
    Range(RangeCall),
}

/// An invocation: an operation's inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvCall {
    Get { key: String },
    Put { key: String, value: String },
    Delete { key: String },
    Cas { key: String, expected: Option<String>, value: String },
    PutIfAbsent { key: String, value: String },
    Txn { compare: Vec<Compare>, success: Vec<TxnCall>, failure: Vec<TxnCall> },
    Range(RangeCall),
}

/// A range result. `more: None` in an observation means "not recorded".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RangeRet {
    pub kvs: Vec<KeyValue>,
    pub more: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TxnRet {
    Get(Option<String>),
    Put,
    Delete,
    Range(RangeRet),
}

/// A return: an operation's outputs. `invoke` always fills every field; an observation taken
/// from a history may leave optional outputs (`found`, `more`) unrecorded, and
/// [`KvRet::is_observed_as`] ignores those.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvRet {
    Get(Option<String>),
    Put,
    Delete {
        found: Option<bool>,
    },
    Cas {
        success: bool,
    },
    PutIfAbsent {
        success: bool,
    },
    /// `results`: one per operation of the branch that ran.
    Txn {
        succeeded: bool,
        results: Vec<TxnRet>,
    },
    Range(RangeRet),
}

fn range_matches(observed: &RangeRet, actual: &RangeRet) -> bool {
    observed.kvs == actual.kvs && observed.more.is_none_or(|more| actual.more == Some(more))
}

impl KvRet {
    /// Whether `self` (what the model returned) is consistent with what a client `observed`.
    pub fn is_observed_as(&self, observed: &KvRet) -> bool {
        match (self, observed) {
            (KvRet::Delete { found: actual }, KvRet::Delete { found: observed }) => {
                observed.is_none() || actual == observed
            }
            (KvRet::Range(actual), KvRet::Range(observed)) => range_matches(observed, actual),
            (
                KvRet::Txn { succeeded, results },
                KvRet::Txn { succeeded: observed_succeeded, results: observed_results },
            ) => {
                succeeded == observed_succeeded
                    && results.len() == observed_results.len()
                    && results.iter().zip(observed_results).all(|pair| match pair {
                        (TxnRet::Range(actual), TxnRet::Range(observed)) => {
                            range_matches(observed, actual)
                        }
                        (actual, observed) => actual == observed,
                    })
            }
            (actual, observed) => actual == observed,
        }
    }
}

impl KvSpec {
    fn value(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    fn compare(&self, compare: &Compare) -> bool {
        match compare {
            Compare::Equals { key, expected } => self.value(key) == expected.as_deref(),
            Compare::Value { key, cmp, value } => {
                self.value(key).is_some_and(|current| cmp.accepts(current.cmp(value.as_str())))
            }
            Compare::Exists { key, exists } => self.data.contains_key(key) == *exists,
        }
    }

    fn range(&self, range: &RangeCall) -> RangeRet {
        let limit =
            range.limit.map_or(usize::MAX, |limit| usize::try_from(limit).unwrap_or(usize::MAX));
        let mut matching = self
            .data
            .range(range.prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(range.prefix.as_str()))
            .filter(|(key, _)| range.start_after.as_ref().is_none_or(|after| *key > after));
        let kvs = matching
            .by_ref()
            .take(limit)
            .map(|(key, value)| KeyValue { key: key.clone(), value: value.clone() })
            .collect();
        RangeRet { kvs, more: Some(matching.next().is_some()) }
    }

    fn txn_op(&mut self, sub: &TxnCall) -> TxnRet {
        match sub {
            TxnCall::Get { key } => TxnRet::Get(self.data.get(key).cloned()),
            TxnCall::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                TxnRet::Put
            }
            TxnCall::Delete { key } => {
                self.data.remove(key);
                TxnRet::Delete
            }
            TxnCall::Range(range) => TxnRet::Range(self.range(range)),
        }
    }
}

impl SequentialSpec for KvSpec {
    type Op = KvCall;
    type Ret = KvRet;

    fn invoke(&mut self, call: &KvCall) -> KvRet {
        match call {
            KvCall::Get { key } => KvRet::Get(self.data.get(key).cloned()),
            KvCall::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                KvRet::Put
            }
            KvCall::Delete { key } => {
                KvRet::Delete { found: Some(self.data.remove(key).is_some()) }
            }
            KvCall::Cas { key, expected, value } => {
                let success = self.value(key) == expected.as_deref();
                if success {
                    self.data.insert(key.clone(), value.clone());
                }
                KvRet::Cas { success }
            }
            KvCall::PutIfAbsent { key, value } => {
                let success = !self.data.contains_key(key);
                if success {
                    self.data.insert(key.clone(), value.clone());
                }
                KvRet::PutIfAbsent { success }
            }
            KvCall::Txn { compare, success, failure } => {
                let succeeded = compare.iter().all(|compare| self.compare(compare));
                let branch = if succeeded { success } else { failure };
                let results = branch.iter().map(|sub| self.txn_op(sub)).collect();
                KvRet::Txn { succeeded, results }
            }
            KvCall::Range(range) => KvRet::Range(self.range(range)),
        }
    }

    fn is_valid_step(&mut self, call: &KvCall, observed: &KvRet) -> bool {
        self.invoke(call).is_observed_as(observed)
    }
}

fn range_call(range: &Range) -> RangeCall {
    RangeCall {
        prefix: range.prefix.clone(),
        start_after: range.start_after.clone(),
        limit: range.limit,
    }
}

fn range_ret(range: &Range) -> RangeRet {
    RangeRet { kvs: range.kvs.clone(), more: range.more }
}

fn txn_call(sub: &TxnOp) -> TxnCall {
    match sub {
        TxnOp::Get { key, .. } => TxnCall::Get { key: key.clone() },
        TxnOp::Put { key, value } => TxnCall::Put { key: key.clone(), value: value.clone() },
        TxnOp::Delete { key } => TxnCall::Delete { key: key.clone() },
        TxnOp::Range(range) => TxnCall::Range(range_call(range)),
    }
}

fn txn_ret(sub: &TxnOp) -> TxnRet {
    match sub {
        TxnOp::Get { value, .. } => TxnRet::Get(value.clone()),
        TxnOp::Put { .. } => TxnRet::Put,
        TxnOp::Delete { .. } => TxnRet::Delete,
        TxnOp::Range(range) => TxnRet::Range(range_ret(range)),
    }
}

/// The invocation of an operation.
pub fn call_of(op: &Op) -> KvCall {
    match op {
        Op::Get { key, .. } => KvCall::Get { key: key.clone() },
        Op::Put { key, value } => KvCall::Put { key: key.clone(), value: value.clone() },
        Op::Delete { key, .. } => KvCall::Delete { key: key.clone() },
        Op::Cas { key, expected, value, .. } => {
            KvCall::Cas { key: key.clone(), expected: expected.clone(), value: value.clone() }
        }
        Op::PutIfAbsent { key, value, .. } => {
            KvCall::PutIfAbsent { key: key.clone(), value: value.clone() }
        }
        Op::Txn(txn) => KvCall::Txn {
            compare: txn.compare.clone(),
            success: txn.success.iter().map(txn_call).collect(),
            failure: txn.failure.iter().map(txn_call).collect(),
        },
        Op::Range(range) => KvCall::Range(range_call(range)),
    }
}

/// What an `ok` operation observed, as a return.
pub fn observed_ret(op: &Op) -> KvRet {
    match op {
        Op::Get { value, .. } => KvRet::Get(value.clone()),
        Op::Put { .. } => KvRet::Put,
        Op::Delete { found, .. } => KvRet::Delete { found: *found },
        Op::Cas { success, .. } => KvRet::Cas { success: *success },
        Op::PutIfAbsent { success, .. } => KvRet::PutIfAbsent { success: *success },
        Op::Txn(txn) => {
            let branch = if txn.succeeded { &txn.success } else { &txn.failure };
            KvRet::Txn { succeeded: txn.succeeded, results: branch.iter().map(txn_ret).collect() }
        }
        Op::Range(range) => KvRet::Range(range_ret(range)),
    }
}

/// Writes the outputs of `ret` (as returned by [`KvSpec::invoke`] for [`call_of`]`(op)`) into
/// `op`, making it what a client of a correct store would have observed.
pub fn fill_outputs(op: &mut Op, ret: KvRet) {
    match (op, ret) {
        (Op::Get { value, .. }, KvRet::Get(read)) => *value = read,
        (Op::Delete { found, .. }, KvRet::Delete { found: actual }) => *found = actual,
        (Op::Cas { success, .. }, KvRet::Cas { success: actual }) => *success = actual,
        (Op::PutIfAbsent { success, .. }, KvRet::PutIfAbsent { success: actual }) => {
            *success = actual
        }
        (Op::Txn(txn), KvRet::Txn { succeeded, results }) => {
            txn.succeeded = succeeded;
            let branch = if succeeded { &mut txn.success } else { &mut txn.failure };
            assert_eq!(branch.len(), results.len());
            for (sub, result) in branch.iter_mut().zip(results) {
                match (sub, result) {
                    (TxnOp::Get { value, .. }, TxnRet::Get(read)) => *value = read,
                    (TxnOp::Range(range), TxnRet::Range(result)) => {
                        range.kvs = result.kvs;
                        range.more = result.more;
                    }
                    (TxnOp::Put { .. }, TxnRet::Put) | (TxnOp::Delete { .. }, TxnRet::Delete) => {}
                    (sub, result) => panic!("result {result:?} does not belong to {sub:?}"),
                }
            }
        }
        (Op::Range(range), KvRet::Range(result)) => {
            range.kvs = result.kvs;
            range.more = result.more;
        }
        (Op::Put { .. }, KvRet::Put) => {}
        (op, ret) => panic!("return {ret:?} does not belong to {op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::CmpOp;

    #[test]
    fn transaction_branch_sees_its_own_writes_and_range_reports_more() {
        let mut spec = KvSpec::default();
        spec.invoke(&KvCall::Put { key: "a/1".into(), value: "x".into() });
        spec.invoke(&KvCall::Put { key: "a/2".into(), value: "y".into() });
        let ret = spec.invoke(&KvCall::Txn {
            compare: vec![
                Compare::Value { key: "a/1".into(), cmp: CmpOp::Less, value: "y".into() },
                Compare::Exists { key: "b".into(), exists: false },
            ],
            success: vec![
                TxnCall::Put { key: "b".into(), value: "z".into() },
                TxnCall::Get { key: "b".into() },
                TxnCall::Range(RangeCall {
                    prefix: "a/".into(),
                    start_after: None,
                    limit: Some(1),
                }),
            ],
            failure: vec![],
        });
        assert_eq!(
            ret,
            KvRet::Txn {
                succeeded: true,
                results: vec![
                    TxnRet::Put,
                    TxnRet::Get(Some("z".into())),
                    TxnRet::Range(RangeRet {
                        kvs: vec![KeyValue { key: "a/1".into(), value: "x".into() }],
                        more: Some(true),
                    }),
                ],
            }
        );
        let unrecorded = KvRet::Delete { found: None };
        assert!(spec.invoke(&KvCall::Delete { key: "b".into() }).is_observed_as(&unrecorded));
        assert!(!spec.is_valid_step(
            &KvCall::Delete { key: "b".into() },
            &KvRet::Delete { found: Some(true) }
        ));
    }
}
