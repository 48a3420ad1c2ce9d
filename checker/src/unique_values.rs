//! The fast path: a single-key partition whose present values are each written by at most one
//! operation is decided from the reads-from relation instead of by the general search. The
//! rules are O(n log n); so is the builder while its first choices work, and its search when
//! they do not is bounded (then the general search decides).
//!
//! Gibbons and Korach showed that checking a register is NP-complete in general but takes
//! O(n log n) when every read names the write it read from, which unique written values give;
//! Lee and Mathur (arXiv 2410.04581) recast such algorithms as decrease-and-conquer over
//! "linearizability-preserving" values. Here that idea meets the KV model's extras — deletes
//! (the absent state comes back, so it is not unique), cas and creates (a read and a write at
//! one instant), failed cas (a read of "anything but"), and operations of unknown outcome:
//!
//! 1. `register.rs` compiles the partition; it is *eligible* if it has one key, every
//!    operation is a get, put, delete, cas or put_if_absent, and no two operations (completed
//!    or of unknown outcome) may write the same present value.
//! 2. `refute.rs` looks for a violation with a small certificate (after a short try of step 3,
//!    which settles most partitions for less): a read of a value nobody can
//!    have written (or not yet), two cas replacing one value, a value held again after its cas
//!    chain moved on, a stale read, "absent" read after a write with no delete in between, a
//!    failed cas while its expected value was held throughout, two groups of values each held
//!    before and after the other. Each rule is a proof; a found violation is final.
//! 3. `linearize.rs` builds a linearization, choosing only the order of the writes (reads
//!    follow), and `replay.rs` checks it against the operations as written. A checked
//!    linearization is final.
//! 4. Otherwise the partition is *declined* and the general search decides it, so the checker
//!    as a whole stays exact. Without deletes and without completed failed cas (or failed
//!    creates), steps 2 and 3 are complete: one of them always answers (the rules find every
//!    cycle of the order between groups, and the builder then finds a topological order of
//!    it). The checker's README says exactly which histories that covers;
//!    `tests/integration/unique_values.rs` checks both claims against the general search and
//!    against the definition.
//! 5. `certificate.rs` explains the violation of the reported partition: it shows each
//!    operation of the certificate needed with a few small searches.

mod certificate;
mod linearize;
mod refute;
mod register;
mod replay;

pub(crate) use certificate::explain;
pub(crate) use refute::Rule;
pub(crate) use register::{NotEligible, Scratch};

use crate::history::OpIndex;
use crate::table::Table;

/// What the fast path says about one partition.
#[derive(Debug)]
pub(crate) enum FastOutcome {
    Linearizable,
    /// Proved by `rule`; `ops` (history indexes, call order) fail whatever the other
    /// operations did.
    Violation {
        rule: Rule,
        ops: Vec<OpIndex>,
    },
    /// Not decided here; the general search decides.
    Declined(Declined),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Declined {
    NotEligible(NotEligible),
    /// No rule proved a violation and the builder found no linearization.
    Undecided,
}

/// Decides the partition over `keys` made of `indexes` (in call order, as `partition.rs`
/// gives them).
pub(crate) fn decide(
    table: &Table<'_>,
    keys: &[&str],
    indexes: &[usize],
    scratch: &mut Scratch,
) -> FastOutcome {
    let register = match register::Register::compile(table, keys, indexes, scratch) {
        Ok(register) => register,
        Err(reason) => return FastOutcome::Declined(Declined::NotEligible(reason)),
    };
    // Most partitions are linearizable: a linearization proves it, and building one costs
    // less than running every rule. A short first try, then the rules, then a longer try.
    if linearized(table, &register, linearize::RETRIES_PER_CHAIN_FIRST) {
        return FastOutcome::Linearizable;
    }
    if let Some(refutation) = refute::refute(&register) {
        let ops = refutation.ops.iter().map(|&position| register.op(position).index).collect();
        return FastOutcome::Violation { rule: refutation.rule, ops };
    }
    if linearized(table, &register, linearize::RETRIES_PER_CHAIN) {
        return FastOutcome::Linearizable;
    }
    FastOutcome::Declined(Declined::Undecided)
}

/// Whether the builder finds a linearization, checked by the replay.
fn linearized(table: &Table<'_>, register: &register::Register, retries_per_chain: usize) -> bool {
    let Some(order) = linearize::linearize(register, retries_per_chain) else { return false };
    let valid = replay::is_linearization(table, register, &order);
    // The replay is the proof; a builder bug only costs the fast path this partition.
    debug_assert!(valid, "the builder proposed an order that is not a linearization");
    valid
}
