//! P-compositionality: split a history into independent parts and check each on its own.
//!
//! Linearizability is local (Herlihy & Wing): a history is linearizable if and only if, for
//! every object, the sub-history of the operations on that object is. Here an "object" is a set
//! of keys: single-key operations touch one key, and an operation over several keys (a `txn`,
//! a `range`) must be checked together with everything that touches any of its keys, so its
//! keys are joined (union-find) into one partition.
//!
//! A range read over a prefix joins every key that matches the prefix *and appears somewhere in
//! the history*. That is enough: a key that appears nowhere is never written, so it is absent
//! in every state of every linearization and contributes nothing to the range's result whatever
//! the order; a key the range claims to have returned appears in the history (in the range's own
//! result) and is therefore joined, so a phantom result is still caught.

use std::collections::BTreeSet;

use crate::history::{Op, Operation, Range, Status, Txn, TxnOp};
use crate::table::{Row, RowKind, Table};
use crate::union_find::DisjointSets;

/// The operations of one partition and the keys they touch.
#[derive(Debug)]
pub(crate) struct PartitionPlan<'h> {
    /// Sorted, distinct. Empty only for the partition of operations that touch no key at all
    /// (a range over a prefix that matches nothing).
    pub(crate) keys: Vec<&'h str>,
    /// Indexes into the history, in call order (ties: history order).
    pub(crate) ops: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Split<'h> {
    pub(crate) partitions: Vec<PartitionPlan<'h>>,
    /// Operations that cannot affect the verdict and were left out (see [`is_relevant`]).
    pub(crate) dropped: usize,
}

/// Whether an operation can affect the verdict.
///
/// `fail` operations definitely did not happen. An `info` read (a get, a range, a transaction
/// that only reads) observed nothing the checker knows and changed nothing, so whether and when
/// it happened cannot matter.
fn is_relevant(table: &Table<'_>, row: &Row) -> bool {
    match row.status {
        Status::Ok => true,
        Status::Fail => false,
        Status::Info => match row.kind {
            RowKind::Get | RowKind::Range => false,
            RowKind::Txn => match &table.complex[row.key as usize].op {
                Op::Txn(txn) => writes(txn),
                _ => unreachable!("a transaction row points at a transaction"),
            },
            RowKind::Put | RowKind::Delete | RowKind::Cas | RowKind::PutIfAbsent => true,
        },
    }
}

/// [`is_relevant`] of an operation not in a table (the streamed reader's).
pub(crate) fn is_relevant_operation(operation: &Operation) -> bool {
    match operation.status {
        Status::Ok => true,
        Status::Fail => false,
        Status::Info => match &operation.op {
            Op::Get { .. } | Op::Range(_) => false,
            Op::Txn(txn) => writes(txn),
            Op::Put { .. } | Op::Delete { .. } | Op::Cas { .. } | Op::PutIfAbsent { .. } => true,
        },
    }
}

/// Whether either branch of a transaction writes.
fn writes(txn: &Txn) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|sub| matches!(sub, TxnOp::Put { .. } | TxnOp::Delete { .. }))
}

/// Calls `visit` for every key an operation names explicitly (not the keys a range covers).
pub(crate) fn for_each_named_key<'h>(op: &'h Op, visit: &mut impl FnMut(&'h str)) {
    fn range_keys<'h>(range: &'h Range, visit: &mut impl FnMut(&'h str)) {
        range.kvs.iter().for_each(|kv| visit(&kv.key));
    }
    match op {
        Op::Get { key, .. }
        | Op::Put { key, .. }
        | Op::Delete { key, .. }
        | Op::Cas { key, .. }
        | Op::PutIfAbsent { key, .. } => visit(key),
        Op::Txn(txn) => {
            txn.compare.iter().for_each(|compare| visit(compare.key()));
            for sub in txn.success.iter().chain(&txn.failure) {
                match sub {
                    TxnOp::Get { key, .. } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                        visit(key)
                    }
                    TxnOp::Range(range) => range_keys(range, visit),
                }
            }
        }
        Op::Range(range) => range_keys(range, visit),
    }
}

/// Whether an operation touches any of `keys`: names one, or is a range covering one.
pub(crate) fn touches(op: &Op, keys: &BTreeSet<&str>) -> bool {
    let mut hit = false;
    for_each_named_key(op, &mut |key| hit |= keys.contains(key));
    for_each_range(op, &mut |range| {
        hit |= keys.iter().any(|key| crate::model::range_covers(range, key));
    });
    hit
}

pub(crate) fn for_each_range(op: &Op, visit: &mut impl FnMut(&Range)) {
    match op {
        Op::Range(range) => visit(range),
        Op::Txn(txn) => {
            for sub in txn.success.iter().chain(&txn.failure) {
                if let TxnOp::Range(range) = sub {
                    visit(range);
                }
            }
        }
        Op::Get { .. }
        | Op::Put { .. }
        | Op::Delete { .. }
        | Op::Cas { .. }
        | Op::PutIfAbsent { .. } => {}
    }
}

/// Splits the relevant operations of `table` into independent partitions, in a deterministic
/// order (by smallest key; the keyless partition, if any, last).
pub(crate) fn split<'t>(table: &'t Table<'_>) -> Split<'t> {
    let relevant: Vec<usize> =
        (0..table.len()).filter(|&index| is_relevant(table, table.row(index))).collect();

    // Keys by id are in order of first appearance; rank them in key order so that partition
    // ids, and the keys of each partition, follow key order.
    let key_count = table.keys.len();
    let mut by_key: Vec<u32> = (0..key_count as u32).collect();
    by_key.sort_unstable_by_key(|&id| table.keys.get(id));
    let keys: Vec<&str> = by_key.iter().map(|&id| table.keys.get(id)).collect();
    let mut rank = vec![0u32; key_count];
    for (sorted, &id) in by_key.iter().enumerate() {
        rank[id as usize] = sorted as u32;
    }
    let find = |key: &str| -> u32 {
        match table.keys.find(key) {
            Some(id) => rank[id as usize],
            None => unreachable!("every key a transaction or range names is interned"),
        }
    };

    // The universe: every key a relevant operation names (a table also holds the keys of
    // operations that cannot matter).
    let mut used = vec![false; keys.len()];
    let mut named: Vec<u32> = Vec::new();
    for &index in &relevant {
        let row = table.row(index);
        if matches!(row.kind, RowKind::Txn | RowKind::Range) {
            named.clear();
            for_each_named_key(&table.complex[row.key as usize].op, &mut |key| {
                named.push(find(key))
            });
            for &id in &named {
                used[id as usize] = true;
            }
        } else {
            used[rank[row.key as usize] as usize] = true;
        }
    }

    // The keys of each operation: its key, or for a transaction or range every key it names
    // plus every key of the universe a range covers. `first_key[i]` is any one of them, for
    // grouping after the unions.
    let mut sets = DisjointSets::new(keys.len());
    let mut first_key: Vec<Option<u32>> = Vec::with_capacity(relevant.len());
    for &index in &relevant {
        let row = table.row(index);
        if !matches!(row.kind, RowKind::Txn | RowKind::Range) {
            first_key.push(Some(rank[row.key as usize]));
            continue;
        }
        let op = &table.complex[row.key as usize].op;
        let mut ids = Vec::new();
        for_each_named_key(op, &mut |key| ids.push(find(key)));
        for_each_range(op, &mut |range| {
            let prefix = range.prefix.as_str();
            let from = keys.partition_point(|key| *key < prefix);
            ids.extend(
                (from..keys.len())
                    .take_while(|&id| keys[id].starts_with(prefix))
                    .filter(|&id| used[id])
                    .map(|id| id as u32),
            );
        });
        for &id in &ids {
            sets.union(ids[0], id);
        }
        first_key.push(ids.first().copied());
    }

    // Group by root, numbered by the smallest key id of each group (ids ascend, so the first
    // seen is the smallest): the output order does not depend on union-find internals. Keys
    // named only by operations that cannot matter belong to no partition.
    let mut group_of_root: Vec<Option<u32>> = vec![None; keys.len()];
    let mut group_count = 0u32;
    let mut group_of_key: Vec<Option<u32>> = Vec::with_capacity(keys.len());
    for id in 0..keys.len() as u32 {
        if !used[id as usize] {
            group_of_key.push(None);
            continue;
        }
        let root = sets.find(id) as usize;
        let group = *group_of_root[root].get_or_insert_with(|| {
            group_count += 1;
            group_count - 1
        });
        group_of_key.push(Some(group));
    }
    let mut partitions: Vec<PartitionPlan<'_>> =
        (0..group_count).map(|_| PartitionPlan { keys: Vec::new(), ops: Vec::new() }).collect();
    let mut keyless = PartitionPlan { keys: Vec::new(), ops: Vec::new() };
    for (position, &index) in relevant.iter().enumerate() {
        match first_key[position].and_then(|id| group_of_key[id as usize]) {
            Some(group) => partitions[group as usize].ops.push(index),
            None => keyless.ops.push(index),
        }
    }
    for (id, group) in group_of_key.iter().enumerate() {
        if let Some(group) = group {
            partitions[*group as usize].keys.push(keys[id]);
        }
    }
    // A used key comes from an operation, so no group is empty.
    assert!(partitions.iter().all(|plan| !plan.ops.is_empty()));
    if !keyless.ops.is_empty() {
        partitions.push(keyless);
    }
    for plan in &mut partitions {
        plan.ops.sort_by_key(|&index| (table.row(index).call, index));
    }
    let kept: usize = partitions.iter().map(|plan| plan.ops.len()).sum();
    assert_eq!(kept, relevant.len());
    Split { partitions, dropped: table.len() - relevant.len() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, KeyValue};

    fn range(prefix: &str, kvs: &[(&str, &str)]) -> Op {
        Op::Range(Range {
            prefix: prefix.into(),
            start_after: None,
            limit: None,
            kvs: kvs
                .iter()
                .map(|(k, v)| KeyValue { key: (*k).into(), value: (*v).into() })
                .collect(),
            more: None,
        })
    }

    #[test]
    fn single_keys_split_and_multi_key_operations_join() {
        let txn = Txn {
            compare: vec![crate::history::Compare::Equals { key: "b".into(), expected: None }],
            success: vec![TxnOp::Put { key: "c".into(), value: "1".into() }],
            failure: vec![],
            succeeded: true,
        };
        let history = History::new(vec![
            Operation::ok(1, 0, 1, Op::put("a", "1")),
            Operation::ok(2, 0, 1, Op::put("b", "1")),
            Operation::ok(3, 0, 1, Op::put("c", "1")),
            Operation::ok(4, 0, 1, Op::Txn(txn)),
            Operation::ok(5, 0, 1, Op::put("user/x", "1")),
            Operation::ok(6, 0, 1, Op::put("user/y", "1")),
            Operation::ok(7, 2, 3, range("user/", &[])),
            Operation::ok(8, 2, 3, range("zzz", &[])),
            Operation::fail(9, 2, 3, Op::put("a", "2")),
            Operation::info(10, 2, Op::get("a", None)),
        ])
        .unwrap();
        let table = Table::from_history(&history);
        let split = split(&table);
        assert_eq!(split.dropped, 2);
        let shape: Vec<(Vec<&str>, Vec<usize>)> =
            split.partitions.iter().map(|plan| (plan.keys.clone(), plan.ops.clone())).collect();
        assert_eq!(
            shape,
            vec![
                (vec!["a"], vec![0]),
                (vec!["b", "c"], vec![1, 2, 3]),
                (vec!["user/x", "user/y"], vec![4, 5, 6]),
                (vec![], vec![7]),
            ]
        );
    }

    #[test]
    fn a_phantom_range_result_joins_its_key() {
        let history = History::new(vec![
            Operation::ok(1, 0, 1, Op::put("p/a", "1")),
            Operation::ok(2, 2, 3, range("p/", &[("p/ghost", "9")])),
        ])
        .unwrap();
        let table = Table::from_history(&history);
        let split = split(&table);
        assert_eq!(split.partitions.len(), 1);
        assert_eq!(split.partitions[0].keys, vec!["p/a", "p/ghost"]);
    }
}
