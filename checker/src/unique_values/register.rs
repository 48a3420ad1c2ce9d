//! One key's operations compiled for the fast path: values interned to small integers, times
//! made total (an `info` operation never returns), and for every value the one operation that
//! may write it.

use crate::history::{OpIndex, Status, Time};
use crate::table::{ABSENT_REF, RowKind, Table, ValueRef};

/// An interned value of the key; [`ABSENT`] stands for "no such key".
pub(super) type Val = u32;

/// The key is absent: its initial state, and what a delete leaves.
pub(super) const ABSENT: Val = 0;

/// The return time of an operation whose outcome is unknown: it may take effect at any time
/// after its call, so it constrains nothing after it.
pub(super) const NEVER: Time = Time::MAX;

/// A position in [`Register::ops`] (call order).
pub(super) type Pos = u32;

/// What a compiled operation does. Outputs are meaningful only for completed (`ok`) ones.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A completed get that read `value`.
    Get { value: Val },
    /// A put of `value`.
    Put { value: Val },
    /// A delete; `found` as recorded (only by completed deletes, and not always).
    Delete { found: Option<bool> },
    /// A `cas` (or a `put_if_absent`: `expected == ABSENT`); `success` is `None` when the
    /// outcome is unknown.
    Cas { expected: Val, value: Val, success: Option<bool> },
}

#[derive(Copy, Clone, Debug)]
pub(super) struct RegOp {
    /// The operation of the history it comes from.
    pub(super) index: OpIndex,
    pub(super) call: Time,
    /// [`NEVER`] for an operation of unknown outcome.
    pub(super) ret: Time,
    /// Completed (`ok`); otherwise `info` (failed operations never reach the checker).
    pub(super) ok: bool,
    pub(super) kind: Kind,
}

impl RegOp {
    /// The value a completed operation says the key held just before it took effect, when it
    /// says exactly one: a get, a successful cas or put_if_absent, a delete that found nothing.
    pub(super) fn reads(&self) -> Option<Val> {
        if !self.ok {
            return None;
        }
        match self.kind {
            Kind::Get { value } => Some(value),
            Kind::Cas { expected, success: Some(true), .. } => Some(expected),
            Kind::Delete { found: Some(false) } => Some(ABSENT),
            Kind::Put { .. } | Kind::Delete { .. } | Kind::Cas { .. } => None,
        }
    }

    /// The value a completed operation says the key did *not* hold when it took effect: a
    /// failed cas or put_if_absent (its expected value), a delete that found the key (absent).
    pub(super) fn reads_not(&self) -> Option<Val> {
        if !self.ok {
            return None;
        }
        match self.kind {
            Kind::Cas { expected, success: Some(false), .. } => Some(expected),
            Kind::Delete { found: Some(true) } => Some(ABSENT),
            Kind::Get { .. } | Kind::Put { .. } | Kind::Delete { .. } | Kind::Cas { .. } => None,
        }
    }

    /// The value the operation writes if it takes effect and its outcome allows a write: a put,
    /// a cas that succeeded or whose outcome is unknown, any delete (`ABSENT`).
    pub(super) fn may_write(&self) -> Option<Val> {
        match self.kind {
            Kind::Put { value } => Some(value),
            Kind::Cas { value, success: Some(true) | None, .. } => Some(value),
            Kind::Cas { success: Some(false), .. } => None,
            Kind::Delete { .. } => Some(ABSENT),
            Kind::Get { .. } => None,
        }
    }

    /// The value the key certainly holds right after a completed operation took effect: what
    /// a get read, what a successful write wrote, absent after any delete.
    pub(super) fn holds_after(&self) -> Option<Val> {
        if !self.ok {
            return None;
        }
        match self.kind {
            Kind::Get { value } | Kind::Put { value } => Some(value),
            Kind::Cas { value, success: Some(true), .. } => Some(value),
            Kind::Delete { .. } => Some(ABSENT),
            Kind::Cas { .. } => None,
        }
    }
}

/// Why a partition is not for the fast path.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum NotEligible {
    /// It has transactions or ranges (or more than one key).
    MultiKey,
    /// Two operations may write the same value to the key.
    RepeatedValue,
}

/// Reused across partitions: the key's dense id of each value of the table (0: none yet), and
/// which entries are set, so that clearing costs what setting did. A hash map per partition
/// would hash every operation's value again.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    local: Vec<Val>,
    touched: Vec<ValueRef>,
}

impl Scratch {
    /// Makes room for every value of `table`. Partitions read back from disk each come with a
    /// table of their own; growing to the largest keeps one allocation for all of them.
    fn fit(&mut self, table: &Table<'_>) {
        assert!(self.touched.is_empty(), "cleared after every partition");
        if self.local.len() < table.values.len() + 1 {
            self.local.resize(table.values.len() + 1, 0);
        }
    }

    fn clear(&mut self) {
        for value in self.touched.drain(..) {
            self.local[value as usize] = 0;
        }
    }
}

/// The operations of one key, in call order.
#[derive(Debug)]
pub(super) struct Register {
    pub(super) ops: Vec<RegOp>,
    /// Interned values, [`ABSENT`] included.
    pub(super) value_count: usize,
    /// Per value: the position of the only operation that may write it (`None` for
    /// [`ABSENT`], which every delete writes, and for values nobody writes).
    pub(super) writer: Vec<Option<Pos>>,
    /// Per value: a completed operation whose read needs it (see [`Register::needed_by`]).
    needing: Vec<Option<Pos>>,
}

impl Register {
    /// Compiles the rows `indexes` (in call order, none failed, no unfinished read) of
    /// `table`, a partition over `keys`. Eligible when it has one key, every operation is a
    /// single-key one (so on that key: the partitioner put it here) and no two operations may
    /// write the same present value.
    pub(super) fn compile(
        table: &Table<'_>,
        keys: &[&str],
        indexes: &[usize],
        scratch: &mut Scratch,
    ) -> Result<Register, NotEligible> {
        if keys.len() != 1 {
            return Err(NotEligible::MultiKey);
        }
        scratch.fit(table);
        let result = Register::compile_rows(table, indexes, scratch);
        scratch.clear();
        result
    }

    fn compile_rows(
        table: &Table<'_>,
        indexes: &[usize],
        scratch: &mut Scratch,
    ) -> Result<Register, NotEligible> {
        let mut value_count: usize = 1; // ABSENT
        // The table's values are interned for the whole history; renumber the key's densely.
        let mut intern = |value: ValueRef| -> Val {
            if value == ABSENT_REF {
                return ABSENT;
            }
            let slot = &mut scratch.local[value as usize];
            if *slot == 0 {
                let next = Val::try_from(value_count).unwrap_or(Val::MAX);
                assert!(next < Val::MAX, "more than 2^32 distinct values of one key");
                *slot = next;
                scratch.touched.push(value);
                value_count += 1;
            }
            *slot
        };
        let mut ops = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let row = table.row(index);
            assert_ne!(row.status, Status::Fail, "failed operations are dropped");
            let ok = row.status == Status::Ok;
            let kind = match row.kind {
                RowKind::Get => {
                    assert!(ok, "an unfinished get has no effect and is dropped");
                    Kind::Get { value: intern(row.value) }
                }
                RowKind::Put => Kind::Put { value: intern(row.value) },
                RowKind::Delete => Kind::Delete { found: if ok { row.found() } else { None } },
                RowKind::Cas => Kind::Cas {
                    expected: intern(row.expected),
                    value: intern(row.value),
                    success: ok.then_some(row.success()),
                },
                RowKind::PutIfAbsent => Kind::Cas {
                    expected: ABSENT,
                    value: intern(row.value),
                    success: ok.then_some(row.success()),
                },
                RowKind::Txn | RowKind::Range => return Err(NotEligible::MultiKey),
            };
            let ret = match (ok, row.ret()) {
                (true, Some(ret)) => ret,
                _ => NEVER,
            };
            assert!(ret >= row.call, "validated: no return before its call");
            ops.push(RegOp { index, call: row.call, ret, ok, kind });
        }
        assert!(ops.windows(2).all(|pair| pair[0].call <= pair[1].call), "call order");
        assert!(ops.len() < Pos::MAX as usize, "positions fit in u32");
        let mut writer: Vec<Option<Pos>> = vec![None; value_count];
        for (position, op) in ops.iter().enumerate() {
            match op.may_write() {
                Some(ABSENT) | None => {}
                Some(value) => {
                    if writer[value as usize].is_some() {
                        return Err(NotEligible::RepeatedValue);
                    }
                    writer[value as usize] = Some(position as Pos);
                }
            }
        }
        let mut register = Register { ops, value_count, writer, needing: Vec::new() };
        register.needing = register.needing_readers();
        Ok(register)
    }

    pub(super) fn op(&self, position: Pos) -> &RegOp {
        &self.ops[position as usize]
    }

    /// Per value: whether some completed operation reads it, directly or through the writers
    /// of values that are read (a cas of unknown outcome must have succeeded if its value was
    /// read, so it read its expected value).
    pub(super) fn is_needed(&self, value: Val) -> bool {
        self.needing[value as usize].is_some()
    }

    /// A completed operation whose read needs `value` (directly, or through the cas of unknown
    /// outcome that wrote what it read), if any.
    pub(super) fn needed_by(&self, value: Val) -> Option<Pos> {
        self.needing[value as usize]
    }

    fn needing_readers(&self) -> Vec<Option<Pos>> {
        let mut reader: Vec<Option<Pos>> = vec![None; self.value_count];
        let mut stack: Vec<(Val, Pos)> = self
            .ops
            .iter()
            .enumerate()
            .filter_map(|(position, op)| Some((op.reads()?, position as Pos)))
            .filter(|&(value, _)| value != ABSENT)
            .collect();
        // Later pushes win; reversed, the earliest reader of each value is kept.
        stack.reverse();
        while let Some((value, by)) = stack.pop() {
            if reader[value as usize].is_some() {
                continue;
            }
            reader[value as usize] = Some(by);
            if let Some(writer) = self.writer[value as usize]
                && let Kind::Cas { expected, .. } = self.op(writer).kind
                && expected != ABSENT
                && reader[expected as usize].is_none()
            {
                stack.push((expected, by));
            }
        }
        reader
    }
}
