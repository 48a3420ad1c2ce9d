//! The operations of a history in a compact form: one fixed-size row per operation, keys and
//! values interned (`interner.rs`), transactions and ranges kept whole on the side.
//!
//! The partitioner and the unique-value fast path read rows only: no string is hashed or
//! compared per partition, and a partition's rows are 40 bytes each instead of an `Operation`
//! and two heap strings. The general search and the report still need whole operations; they
//! are taken from the history when the table was made from one, or rebuilt from the rows for
//! the partitions that need them (`partition_ops`) when the table was read straight from a
//! file (`reader.rs`), so that only those partitions are ever held as `Operation`s.

use std::borrow::Cow;

use crate::history::{ClientId, History, Op, OpIndex, Operation, Status, Time, TxnOp};
use crate::interner::Interner;

/// What a row is; transactions and ranges point into [`Table::complex`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum RowKind {
    Get,
    Put,
    Delete,
    Cas,
    PutIfAbsent,
    Txn,
    Range,
}

/// A value reference: 0 is "absent" (a get of nothing, a cas expecting absence), otherwise
/// the value interned as `reference - 1`.
pub(crate) type ValueRef = u32;

/// The reference of "absent".
pub(crate) const ABSENT_REF: ValueRef = 0;

/// One operation. Outputs are meaningful for completed operations only, as in [`Operation`].
#[derive(Copy, Clone, Debug)]
pub(crate) struct Row {
    pub(crate) call: Time,
    /// Meaningful only when `has_ret`.
    pub(crate) ret: Time,
    pub(crate) client: ClientId,
    /// The key (an id of [`Table::keys`]) of a single-key operation; for a transaction or a
    /// range, its slot in [`Table::complex`].
    pub(crate) key: u32,
    /// A get's value read; the value a put, cas or put_if_absent writes.
    pub(crate) value: ValueRef,
    /// A cas's expected value.
    pub(crate) expected: ValueRef,
    pub(crate) kind: RowKind,
    pub(crate) status: Status,
    /// [`HAS_RET`], [`SUCCESS`], [`FOUND_RECORDED`]: one byte, so that a row is 40.
    flags: u8,
}

/// `ret` is meaningful.
const HAS_RET: u8 = 1;
/// A cas's or put_if_absent's `success`; a delete's `found`, if recorded.
const SUCCESS: u8 = 2;
/// A delete recorded `found`.
const FOUND_RECORDED: u8 = 4;

impl Row {
    pub(crate) fn ret(&self) -> Option<Time> {
        (self.flags & HAS_RET != 0).then_some(self.ret)
    }

    pub(crate) fn success(&self) -> bool {
        self.flags & SUCCESS != 0
    }

    pub(crate) fn found(&self) -> Option<bool> {
        (self.flags & FOUND_RECORDED != 0).then_some(self.success())
    }
}

/// A single-key operation by its parts. Outputs as in [`Operation`]: `value` is what a get
/// read (`None`: absent) or what a put, cas or put_if_absent writes; `expected` is a cas's;
/// `success` a cas's or put_if_absent's; `found` a delete's, if recorded.
#[derive(Copy, Clone, Debug)]
pub(crate) struct SingleKeyOp<'a> {
    pub(crate) client: ClientId,
    pub(crate) call: Time,
    pub(crate) ret: Option<Time>,
    pub(crate) status: Status,
    pub(crate) kind: RowKind,
    pub(crate) key: &'a str,
    pub(crate) value: Option<&'a str>,
    pub(crate) expected: Option<&'a str>,
    pub(crate) success: bool,
    pub(crate) found: Option<bool>,
}

/// A history's operations as rows.
#[derive(Debug)]
pub(crate) struct Table<'h> {
    pub(crate) rows: Vec<Row>,
    pub(crate) keys: Interner,
    pub(crate) values: Interner,
    /// Transactions and ranges, whole.
    pub(crate) complex: Vec<Operation>,
    /// 1-based source line of each row, when read from a file; empty otherwise.
    lines: Vec<u64>,
    /// The history the rows were made from, if any: whole operations come from it.
    source: Option<&'h History>,
}

/// The operations of one partition as `Operation`s, for the general search and the report.
pub(crate) struct PartitionOps<'t> {
    pub(crate) ops: Cow<'t, [Operation]>,
    /// Indexes into `ops`, in the order asked for.
    pub(crate) indexes: Vec<usize>,
    /// `origins[i]`: the history index of `ops[i]` when `ops` is rebuilt (else `ops` is the
    /// whole history and indexes are history indexes).
    origins: Option<Vec<OpIndex>>,
}

impl PartitionOps<'_> {
    /// The history index of `ops[index]`.
    pub(crate) fn history_index(&self, index: usize) -> OpIndex {
        match &self.origins {
            Some(origins) => origins[index],
            None => index,
        }
    }
}

impl<'h> Table<'h> {
    pub(crate) fn new() -> Table<'h> {
        Table {
            rows: Vec::new(),
            keys: Interner::default(),
            values: Interner::default(),
            complex: Vec::new(),
            lines: Vec::new(),
            source: None,
        }
    }

    /// The rows of `history`; whole operations are then borrowed from it.
    pub(crate) fn from_history(history: &'h History) -> Table<'h> {
        let mut table = Table::new();
        table.rows.reserve_exact(history.len());
        for operation in history.ops() {
            table.push(operation);
        }
        // Keys stay searchable (the partitioner looks up the keys of transactions); values
        // are only read back.
        table.values.freeze();
        table.source = Some(history);
        table
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn row(&self, index: OpIndex) -> &Row {
        &self.rows[index]
    }

    fn value_ref(&mut self, value: Option<&str>) -> ValueRef {
        value.map_or(ABSENT_REF, |value| self.values.intern(value) + 1)
    }

    fn value_text(&self, value: ValueRef) -> Option<String> {
        (value != ABSENT_REF).then(|| self.values.get(value - 1).to_owned())
    }

    /// Appends `operation` (already validated on its own).
    pub(crate) fn push(&mut self, operation: &Operation) {
        let single = |kind, key, value, expected, success, found| SingleKeyOp {
            client: operation.client,
            call: operation.call,
            ret: operation.ret,
            status: operation.status,
            kind,
            key,
            value,
            expected,
            success,
            found,
        };
        let single = match &operation.op {
            Op::Get { key, value } => {
                single(RowKind::Get, key, value.as_deref(), None, false, None)
            }
            Op::Put { key, value } => single(RowKind::Put, key, Some(value), None, false, None),
            Op::Delete { key, found } => single(RowKind::Delete, key, None, None, false, *found),
            Op::Cas { key, expected, value, success } => {
                single(RowKind::Cas, key, Some(value), expected.as_deref(), *success, None)
            }
            Op::PutIfAbsent { key, value, success } => {
                single(RowKind::PutIfAbsent, key, Some(value), None, *success, None)
            }
            Op::Txn(_) | Op::Range(_) => return self.push_complex(operation),
        };
        self.push_single_key(&single);
    }

    /// Appends a single-key operation given by its parts (the spill's reader has them without
    /// an [`Operation`]).
    pub(crate) fn push_single_key(&mut self, op: &SingleKeyOp<'_>) {
        assert!(!matches!(op.kind, RowKind::Txn | RowKind::Range), "single-key kinds only");
        let mut flags = if op.ret.is_some() { HAS_RET } else { 0 };
        if op.success {
            flags |= SUCCESS;
        }
        if let Some(found) = op.found {
            flags |= FOUND_RECORDED | if found { SUCCESS } else { 0 };
        }
        let row = Row {
            call: op.call,
            ret: op.ret.unwrap_or(0),
            client: op.client,
            key: self.keys.intern(op.key),
            value: self.value_ref(op.value),
            expected: self.value_ref(op.expected),
            kind: op.kind,
            status: op.status,
            flags,
        };
        self.rows.push(row);
    }

    /// Appends a transaction or a range, kept whole.
    fn push_complex(&mut self, operation: &Operation) {
        let kind = match &operation.op {
            Op::Txn(txn) => {
                // Every key it names is interned, so that the partitioner finds them.
                for compare in &txn.compare {
                    self.keys.intern(compare.key());
                }
                for sub in txn.success.iter().chain(&txn.failure) {
                    match sub {
                        TxnOp::Get { key, .. } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                            self.keys.intern(key);
                        }
                        TxnOp::Range(range) => {
                            for kv in &range.kvs {
                                self.keys.intern(&kv.key);
                            }
                        }
                    }
                }
                RowKind::Txn
            }
            Op::Range(range) => {
                for kv in &range.kvs {
                    self.keys.intern(&kv.key);
                }
                RowKind::Range
            }
            Op::Get { .. }
            | Op::Put { .. }
            | Op::Delete { .. }
            | Op::Cas { .. }
            | Op::PutIfAbsent { .. } => unreachable!("single-key operations are rows"),
        };
        self.rows.push(Row {
            call: operation.call,
            ret: operation.ret.unwrap_or(0),
            client: operation.client,
            key: self.complex.len() as u32,
            value: ABSENT_REF,
            expected: ABSENT_REF,
            kind,
            status: operation.status,
            flags: if operation.ret.is_some() { HAS_RET } else { 0 },
        });
        self.complex.push(operation.clone());
    }

    /// [`Table::push_single_key`] of an operation read from `line` of a file.
    pub(crate) fn push_single_key_line(&mut self, op: &SingleKeyOp<'_>, line: usize) {
        self.push_single_key(op);
        self.lines.push(line as u64);
    }

    /// Appends `operation`, read from `line` of a file.
    pub(crate) fn push_line(&mut self, operation: &Operation, line: usize) {
        self.push(operation);
        self.lines.push(line as u64);
    }

    /// Done appending: frees what only appending needed.
    pub(crate) fn finish(&mut self) {
        assert!(self.lines.is_empty() || self.lines.len() == self.rows.len());
        self.values.freeze();
        self.rows.shrink_to_fit();
        self.lines.shrink_to_fit();
    }

    /// The 1-based source line of an operation, when read from a file.
    pub(crate) fn source_line(&self, index: OpIndex) -> Option<usize> {
        match self.source {
            Some(history) => history.source_line(index),
            None => self.lines.get(index).map(|&line| line as usize),
        }
    }

    /// The operation at `index`, whole.
    pub(crate) fn operation(&self, index: OpIndex) -> Cow<'_, Operation> {
        if let Some(history) = self.source {
            return Cow::Borrowed(&history.ops()[index]);
        }
        let row = &self.rows[index];
        let key = || self.keys.get(row.key).to_owned();
        let value = || self.value_text(row.value).unwrap_or_default();
        let op = match row.kind {
            RowKind::Get => Op::Get { key: key(), value: self.value_text(row.value) },
            RowKind::Put => Op::Put { key: key(), value: value() },
            RowKind::Delete => Op::Delete { key: key(), found: row.found() },
            RowKind::Cas => Op::Cas {
                key: key(),
                expected: self.value_text(row.expected),
                value: value(),
                success: row.success(),
            },
            RowKind::PutIfAbsent => {
                Op::PutIfAbsent { key: key(), value: value(), success: row.success() }
            }
            RowKind::Txn | RowKind::Range => return Cow::Borrowed(&self.complex[row.key as usize]),
        };
        Cow::Owned(Operation {
            client: row.client,
            call: row.call,
            ret: row.ret(),
            status: row.status,
            op,
        })
    }

    /// The operations `indexes` as `Operation`s: the history itself when the table was made
    /// from one, else rebuilt (only these).
    pub(crate) fn partition_ops(&self, indexes: &[OpIndex]) -> PartitionOps<'_> {
        match self.source {
            Some(history) => PartitionOps {
                ops: Cow::Borrowed(history.ops()),
                indexes: indexes.to_vec(),
                origins: None,
            },
            None => PartitionOps {
                ops: Cow::Owned(
                    indexes.iter().map(|&index| self.operation(index).into_owned()).collect(),
                ),
                indexes: (0..indexes.len()).collect(),
                origins: Some(indexes.to_vec()),
            },
        }
    }

    /// A history of the operations `indexes` (in that order), with their source lines: what
    /// the report shows when the table was read from a file.
    pub(crate) fn sub_history(&self, indexes: &[OpIndex]) -> History {
        let ops: Vec<Operation> =
            indexes.iter().map(|&index| self.operation(index).into_owned()).collect();
        let lines: Vec<usize> = match self.lines.is_empty() {
            true => Vec::new(),
            false => indexes.iter().map(|&index| self.lines[index] as usize).collect(),
        };
        match History::from_parts(ops, lines) {
            Ok(history) => history,
            // Operations of a valid history stay valid in any subset of it.
            Err(error) => unreachable!("a subset of a valid history is valid: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Range, Txn};

    #[test]
    fn rows_rebuild_the_operations_they_came_from() {
        let ops = vec![
            Operation::ok(1, 0, 3, Op::put("k", "v1")),
            Operation::ok(2, 1, 4, Op::get("k", None)),
            Operation::ok(3, 2, 5, Op::cas("k", Some("v1"), "v2", true)),
            Operation::info(4, 6, Op::cas("j", None, "v3", false)),
            Operation::ok(1, 7, 8, Op::Delete { key: "k".into(), found: Some(true) }),
            Operation::ok(
                2,
                9,
                9,
                Op::PutIfAbsent { key: "j".into(), value: "".into(), success: true },
            ),
            Operation::fail(3, 9, 10, Op::delete("j")),
            Operation::ok(
                5,
                10,
                11,
                Op::Txn(Txn { compare: vec![], success: vec![], failure: vec![], succeeded: true }),
            ),
            Operation::ok(
                6,
                10,
                12,
                Op::Range(Range {
                    prefix: "".into(),
                    start_after: None,
                    limit: None,
                    kvs: vec![],
                    more: None,
                }),
            ),
        ];
        let history = History::new(ops.clone()).unwrap();
        let mut table = Table::new();
        for (index, operation) in ops.iter().enumerate() {
            table.push_line(operation, index + 10);
        }
        table.finish();
        assert_eq!(std::mem::size_of::<Row>(), 40, "a row stays small");
        for (index, operation) in ops.iter().enumerate() {
            assert_eq!(&*table.operation(index), operation);
            assert_eq!(table.source_line(index), Some(index + 10));
        }
        let partition = table.partition_ops(&[2, 4]);
        assert_eq!(partition.ops.len(), 2);
        assert_eq!(partition.history_index(1), 4);
        let from_history = Table::from_history(&history);
        assert_eq!(&*from_history.operation(3), &ops[3]);
        assert_eq!(from_history.partition_ops(&[3]).history_index(3), 3);
        let sub = table.sub_history(&[1, 4]);
        assert_eq!(sub.ops(), &[ops[1].clone(), ops[4].clone()]);
        assert_eq!(sub.source_line(1), Some(14));
    }
}
