//! Checking a linearization the builder proposes, straight from the definition and the
//! operations as written in the history (strings, not the builder's compiled form), so that a
//! mistake in the builder can only make the fast path give up, never give a wrong verdict.

use super::register::{Pos, Register};
use crate::history::{Op, Operation, Status};

/// Whether `order` (positions of `register`) is a linearization of the key's operations:
/// every completed operation exactly once (operations of unknown outcome at most once), no
/// operation before one that returned before it was called, and every completed operation's
/// outputs what the key's value at its place gives.
pub(super) fn is_linearization(
    history_ops: &[Operation],
    register: &Register,
    order: &[Pos],
) -> bool {
    let mut seen = vec![false; register.ops.len()];
    let mut latest_call = 0;
    let mut value: Option<&str> = None;
    for &position in order {
        let Some(slot) = seen.get_mut(position as usize) else { return false };
        if std::mem::replace(slot, true) {
            return false;
        }
        let operation = &history_ops[register.op(position).index];
        // Real-time order: nothing placed earlier was called after this one returned.
        if let (Status::Ok, Some(ret)) = (operation.status, operation.ret)
            && ret < latest_call
        {
            return false;
        }
        latest_call = latest_call.max(operation.call);
        if !step(operation, &mut value) {
            return false;
        }
    }
    register.ops.iter().zip(&seen).all(|(op, &seen)| seen || !op.ok)
}

/// Applies one operation to the key's value; `false` if a completed operation's outputs
/// disagree. An operation of unknown outcome has its effect only.
fn step<'h>(operation: &'h Operation, value: &mut Option<&'h str>) -> bool {
    let observed = operation.status == Status::Ok;
    match &operation.op {
        Op::Get { value: read, .. } => !observed || read.as_deref() == *value,
        Op::Put { value: written, .. } => {
            *value = Some(written);
            true
        }
        Op::Delete { found, .. } => {
            let consistent = !observed || found.is_none_or(|found| found == value.is_some());
            *value = None;
            consistent
        }
        Op::Cas { expected, value: written, success, .. } => {
            let holds = *value == expected.as_deref();
            if holds {
                *value = Some(written);
            }
            !observed || *success == holds
        }
        Op::PutIfAbsent { value: written, success, .. } => {
            let holds = value.is_none();
            if holds {
                *value = Some(written);
            }
            !observed || *success == holds
        }
        Op::Txn(_) | Op::Range(_) => false,
    }
}
