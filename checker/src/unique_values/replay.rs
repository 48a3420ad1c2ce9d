//! Checking a linearization the builder proposes, straight from the definition and the table's
//! rows (not the builder's compiled form), so that a mistake in the builder can only make the
//! fast path give up, never give a wrong verdict. Values are compared by their interned
//! references, which are equal exactly when the strings are.

use super::register::{Pos, Register};
use crate::history::Status;
use crate::table::{ABSENT_REF, Row, RowKind, Table, ValueRef};

/// Whether `order` (positions of `register`) is a linearization of the key's operations:
/// every completed operation exactly once (operations of unknown outcome at most once), no
/// operation before one that returned before it was called, and every completed operation's
/// outputs what the key's value at its place gives.
pub(super) fn is_linearization(table: &Table<'_>, register: &Register, order: &[Pos]) -> bool {
    let mut seen = vec![false; register.ops.len()];
    let mut latest_call = 0;
    let mut value: ValueRef = ABSENT_REF;
    for &position in order {
        let Some(slot) = seen.get_mut(position as usize) else { return false };
        if std::mem::replace(slot, true) {
            return false;
        }
        let row = table.row(register.op(position).index);
        // Real-time order: nothing placed earlier was called after this one returned.
        if let (Status::Ok, Some(ret)) = (row.status, row.ret())
            && ret < latest_call
        {
            return false;
        }
        latest_call = latest_call.max(row.call);
        if !step(row, &mut value) {
            return false;
        }
    }
    register.ops.iter().zip(&seen).all(|(op, &seen)| seen || !op.ok)
}

/// Applies one operation to the key's value; `false` if a completed operation's outputs
/// disagree. An operation of unknown outcome has its effect only.
fn step(row: &Row, value: &mut ValueRef) -> bool {
    let observed = row.status == Status::Ok;
    match row.kind {
        RowKind::Get => !observed || row.value == *value,
        RowKind::Put => {
            *value = row.value;
            true
        }
        RowKind::Delete => {
            let consistent =
                !observed || row.found().is_none_or(|found| found == (*value != ABSENT_REF));
            *value = ABSENT_REF;
            consistent
        }
        RowKind::Cas | RowKind::PutIfAbsent => {
            let expected = if row.kind == RowKind::Cas { row.expected } else { ABSENT_REF };
            let holds = *value == expected;
            if holds {
                *value = row.value;
            }
            !observed || row.success() == holds
        }
        RowKind::Txn | RowKind::Range => false,
    }
}
