//! Linearizability straight from the definition, for small histories: the oracles the
//! property tests compare the checker with. Shared by the test files that `mod` it.

use conclave_checker::spec::{KvSpec, call_of, observed_ret};
use conclave_checker::{Compare, History, Op, Operation, Status, TxnOp};
use stateright::semantics::SequentialSpec;

/// Tries every order, straight from the definition: an operation may go next if no completed
/// operation still to place returned before it was called; completed operations must match
/// their outputs; `info` ones may go anywhere after their call, or nowhere.
pub fn brute_force_verdict(history: &History) -> bool {
    let ops: Vec<&Operation> =
        history.ops().iter().filter(|operation| operation.status != Status::Fail).collect();
    fn go(ops: &[&Operation], model: &KvSpec, placed: &mut Vec<bool>) -> bool {
        let required_left = (0..ops.len()).any(|i| !placed[i] && ops[i].status == Status::Ok);
        if !required_left {
            return true;
        }
        for candidate in 0..ops.len() {
            if placed[candidate] {
                continue;
            }
            let blocked = (0..ops.len()).any(|other| {
                !placed[other]
                    && ops[other].status == Status::Ok
                    && ops[other].ret.expect("ok has a return") < ops[candidate].call
            });
            if blocked {
                continue;
            }
            let mut next = model.clone();
            let operation = ops[candidate];
            if operation.status == Status::Ok {
                if !next.is_valid_step(&call_of(&operation.op), &observed_ret(&operation.op)) {
                    continue;
                }
            } else {
                next.invoke(&call_of(&operation.op));
            }
            placed[candidate] = true;
            if go(ops, &next, placed) {
                return true;
            }
            placed[candidate] = false;
        }
        false
    }
    go(&ops, &KvSpec::default(), &mut vec![false; ops.len()])
}

/// How an operation takes part in [`memo_verdict`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Must be placed, outputs must match.
    Required,
    /// May be placed (effect only) anywhere after its call, or not at all (`info`).
    Open,
    /// May be placed (effect only) within its interval, or not at all.
    Relaxed,
}

/// The same definition as [`brute_force_verdict`], with a memo of (placed set, state), so that
/// medium histories (about 25 operations) stay cheap; plus relaxed operations, to check the
/// minimizer's claim.
pub fn memo_verdict(ops: &[(Operation, Part)]) -> bool {
    use std::collections::HashSet;
    assert!(ops.len() < 64);
    fn go(
        ops: &[(Operation, Part)],
        model: &KvSpec,
        placed: u64,
        seen: &mut HashSet<(u64, KvSpec)>,
    ) -> bool {
        let required_left =
            (0..ops.len()).any(|i| placed & (1 << i) == 0 && ops[i].1 == Part::Required);
        if !required_left {
            return true;
        }
        if !seen.insert((placed, model.clone())) {
            return false;
        }
        for candidate in 0..ops.len() {
            if placed & (1 << candidate) != 0 {
                continue;
            }
            let (operation, part) = (&ops[candidate].0, ops[candidate].1);
            let blocked = (0..ops.len()).any(|other| {
                placed & (1 << other) == 0
                    && ops[other].1 == Part::Required
                    && ops[other].0.ret.expect("required ops have returns") < operation.call
            });
            // A relaxed operation cannot come after one called after it returned.
            let expired = part == Part::Relaxed
                && (0..ops.len()).any(|other| {
                    placed & (1 << other) != 0
                        && operation.ret.is_some_and(|ret| ret < ops[other].0.call)
                });
            if blocked || expired {
                continue;
            }
            let mut next = model.clone();
            if part == Part::Required {
                if !next.is_valid_step(&call_of(&operation.op), &observed_ret(&operation.op)) {
                    continue;
                }
            } else {
                next.invoke(&call_of(&operation.op));
            }
            if go(ops, &next, placed | (1 << candidate), seen) {
                return true;
            }
        }
        false
    }
    go(ops, &KvSpec::default(), 0, &mut HashSet::new())
}

/// `history` with the operations at `kept` required and every other one relaxed (or open, for
/// `info` operations); failed operations left out. As documented for the minimizer, a relaxed
/// completed transaction over several keys is relaxed key by key: one optional write per key
/// and value it could write, each anywhere in its interval.
pub fn parts(history: &History, kept: &[usize]) -> Vec<(Operation, Part)> {
    let mut parts = Vec::new();
    for (index, operation) in history.ops().iter().enumerate() {
        let part = match operation.status {
            Status::Fail => continue,
            Status::Info => Part::Open,
            _ if kept.contains(&index) => Part::Required,
            _ => Part::Relaxed,
        };
        let Op::Txn(txn) = &operation.op else {
            parts.push((operation.clone(), part));
            continue;
        };
        let mut keys: Vec<&str> = txn.compare.iter().map(Compare::key).collect();
        let mut writes: Vec<Op> = Vec::new();
        for sub in txn.success.iter().chain(&txn.failure) {
            match sub {
                TxnOp::Get { key, .. } => keys.push(key),
                TxnOp::Put { key, value } => {
                    keys.push(key);
                    writes.push(Op::put(key.clone(), value.clone()));
                }
                TxnOp::Delete { key } => {
                    keys.push(key);
                    writes.push(Op::delete(key.clone()));
                }
                TxnOp::Range(_) => unreachable!("the generator puts no ranges in transactions"),
            }
        }
        keys.sort_unstable();
        keys.dedup();
        if part != Part::Relaxed || keys.len() == 1 {
            parts.push((operation.clone(), part));
            continue;
        }
        for write in writes {
            parts.push((Operation { op: write, ..operation.clone() }, part));
        }
    }
    parts
}
