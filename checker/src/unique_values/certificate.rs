//! Explaining a violation the rules proved. The certificate is already small and fails whatever
//! the other operations did (see `refute.rs`); what is left is to show that each of its
//! operations is needed, and to find the longest valid order of it for the report.
//!
//! Both are searches (`search.rs`) over the certificate and a few *helpers*: the operations
//! that could make it linearizable, relaxed as in `minimize.rs` (each may take effect within
//! its interval, with any outcome, or not at all). Helpers are the writers of the values the
//! set reads (and, for a cas, of the value it expects, transitively) — including completed
//! failed cas that would write them, which relaxed may succeed — the deletes near a read of
//! "absent", and the writes near a failed cas. A set shown linearizable with some helpers
//! is linearizable with all the other operations relaxed, so "each operation is needed" is
//! proved, never guessed; if a removal cannot be shown to pass this way, the set is reported
//! as not minimal. The searches are over a handful of operations, so an explanation costs far
//! less than the check, however long the history.

use std::collections::BTreeSet;

use super::register::{ABSENT, Kind, NEVER, Pos, RegOp, Register, Scratch};
use crate::budget::Budget;
use crate::history::OpIndex;
use crate::model::PartitionModel;
use crate::search::{SearchOptions, SearchResult, search};
use crate::table::Table;

/// Deletes added as helpers for the reads of "absent" of one set, at most.
const ABSENCE_HELPERS_MAX: usize = 128;
/// Writes added as helpers for one failed cas, at most.
const OTHER_VALUE_HELPERS_MAX: usize = 16;
/// Search steps of one trial, at most.
const TRIAL_STEPS_MAX: u64 = 1_000_000;
/// Helpers of one set, at most: past this, a set is not shown to pass, and the explanation
/// is reported as not minimal rather than searched at length.
const HELPERS_MAX: usize = 512;

/// A certificate, checked and ordered.
#[derive(Debug)]
pub(crate) struct Explained {
    /// History indexes, in call order.
    pub(crate) ops: Vec<OpIndex>,
    /// Removing any one operation was shown to make the set linearizable.
    pub(crate) minimal: bool,
    /// The longest order of `ops` the search could build (history indexes, in order).
    pub(crate) longest_prefix: Vec<OpIndex>,
    /// The writes of the values `ops` read, when not in `ops` (history indexes, call order):
    /// implied, since each is the only write of its value, but what a reader asks first.
    pub(crate) read_from: Vec<OpIndex>,
}

enum Trial {
    Fails { longest_prefix: Vec<OpIndex> },
    Passes,
    Undecided,
}

/// Explains `certificate` (history indexes) of the single-key partition `indexes`. `None`
/// if the certificate turns out linearizable, which would be a bug in a rule: the caller then
/// explains the partition with the general search instead.
pub(crate) fn explain(
    table: &Table<'_>,
    keys: &[&str],
    indexes: &[usize],
    certificate: &[OpIndex],
    max_cache_bytes: usize,
    budget: &mut Budget,
) -> Option<Explained> {
    let register = Register::compile(table, keys, indexes, &mut Scratch::default()).ok()?;
    let set: Vec<Pos> = (0..register.ops.len() as Pos)
        .filter(|&position| certificate.contains(&register.op(position).index))
        .collect();
    assert_eq!(set.len(), certificate.len(), "a certificate is made of the partition's ops");
    let mut failed_writing: Vec<Vec<Pos>> = vec![Vec::new(); register.value_count];
    for (position, op) in register.ops.iter().enumerate() {
        if let (true, Kind::Cas { value, success: Some(false), .. }) = (op.ok, op.kind) {
            failed_writing[value as usize].push(position as Pos);
        }
    }
    let trials = Trials { table, register: &register, failed_writing, max_cache_bytes };
    let longest_prefix = match trials.run(&set, true, budget) {
        Trial::Fails { longest_prefix } => longest_prefix,
        Trial::Passes => return None,
        Trial::Undecided => Vec::new(),
    };
    let mut minimal = true;
    if set.len() > 1 {
        for &removed in &set {
            let smaller: Vec<Pos> = set.iter().copied().filter(|&op| op != removed).collect();
            if !matches!(trials.run(&smaller, false, budget), Trial::Passes) {
                minimal = false;
            }
        }
    }
    let ops = set.iter().map(|&position| register.op(position).index).collect();
    let mut read_from: Vec<Pos> = set
        .iter()
        .filter_map(|&position| register.op(position).reads())
        .filter(|&value| value != ABSENT)
        .filter_map(|value| register.writer[value as usize])
        .filter(|writer| set.binary_search(writer).is_err())
        .collect();
    read_from.sort_unstable();
    read_from.dedup();
    let read_from = read_from.iter().map(|&position| register.op(position).index).collect();
    Some(Explained { ops, minimal, longest_prefix, read_from })
}

struct Trials<'t> {
    table: &'t Table<'t>,
    register: &'t Register,
    /// Per value: the completed failed cas that would write it. Relaxed, they may.
    failed_writing: Vec<Vec<Pos>>,
    max_cache_bytes: usize,
}

impl Trials<'_> {
    /// Searches `set` (required) with its helpers (relaxed).
    fn run(&self, set: &[Pos], record_longest_prefix: bool, budget: &mut Budget) -> Trial {
        // The set is known to fail when its longest order is asked for: the writers of what it
        // reads are enough for an order that also holds with every other helper, and keep that
        // search (which must exhaust its options) short. A set expected to pass gets everything
        // that could help it.
        let helpers = self.helpers(set, !record_longest_prefix);
        // One trial never takes the whole explanation budget.
        let mut trial_budget = budget.child(TRIAL_STEPS_MAX);
        let mut positions: Vec<Pos> = set.iter().chain(&helpers).copied().collect();
        positions.sort_unstable(); // call order
        let indexes: Vec<usize> =
            positions.iter().map(|&position| self.register.op(position).index).collect();
        let part = self.table.partition_ops(&indexes);
        let first = &part.ops[part.indexes[0]];
        let Some(key) = first.op.key() else {
            unreachable!("the fast path only takes single-key operations");
        };
        let model = PartitionModel::compile(&part.ops, vec![key], &part.indexes);
        let relaxed: Vec<bool> =
            positions.iter().map(|position| set.binary_search(position).is_err()).collect();
        let all: Vec<u32> = (0..model.len() as u32).collect();
        let options =
            SearchOptions { max_cache_bytes: self.max_cache_bytes, record_longest_prefix };
        let result = search(&model, &all, &relaxed, &options, &mut trial_budget);
        budget.charge(&trial_budget);
        match result {
            SearchResult::Linearizable => Trial::Passes,
            SearchResult::Violation { longest_prefix, .. } => Trial::Fails {
                longest_prefix: longest_prefix
                    .into_iter()
                    .map(|op| part.history_index(model.origins[op as usize]))
                    .collect(),
            },
            SearchResult::Unknown(_) => Trial::Undecided,
        }
    }

    /// The operations that could let `set` (ascending positions) be linearized, up to
    /// [`HELPERS_MAX`]; without `all`, only the writers of what the set reads.
    fn helpers(&self, set: &[Pos], all: bool) -> BTreeSet<Pos> {
        let register = self.register;
        let lo = set.iter().map(|&position| register.op(position).call).min().unwrap_or(0);
        let hi = set
            .iter()
            .map(|&position| register.op(position).ret)
            .filter(|&ret| ret != NEVER)
            .max()
            .unwrap_or(NEVER);
        let mut helpers: BTreeSet<Pos> = BTreeSet::new();
        let mut needs_absent = false;
        let mut pending: Vec<Pos> = set.to_vec();
        let add = |position: Pos, helpers: &mut BTreeSet<Pos>, pending: &mut Vec<Pos>| {
            if helpers.len() < HELPERS_MAX
                && set.binary_search(&position).is_err()
                && helpers.insert(position)
                && all
            {
                pending.push(position);
            }
        };
        while let Some(position) = pending.pop() {
            let op = register.op(position);
            let in_set = set.binary_search(&position).is_ok();
            // What the operation needs the key to hold: a read's value in the set; a cas's
            // expected value for it to write, whether in the set or a helper.
            let needs = match op.kind {
                _ if in_set => op.reads(),
                Kind::Cas { expected, .. } => Some(expected),
                Kind::Get { .. } | Kind::Put { .. } | Kind::Delete { .. } => None,
            };
            match needs {
                Some(ABSENT) => needs_absent = true,
                Some(value) => {
                    if let Some(writer) = register.writer[value as usize] {
                        add(writer, &mut helpers, &mut pending);
                    }
                    for &failed in &self.failed_writing[value as usize] {
                        if register.op(failed).call <= hi {
                            add(failed, &mut helpers, &mut pending);
                        }
                    }
                }
                None => {}
            }
            // A failed cas (or a delete that found the key) needs the key to hold something
            // else: a put or a delete (they need nothing themselves) that returned last before
            // it, and those that overlap it.
            if let (true, true, Some(expected)) = (all, in_set, op.reads_not()) {
                let other = |candidate: &RegOp| {
                    matches!(candidate.kind, Kind::Put { .. } | Kind::Delete { .. })
                        && candidate.may_write().is_some_and(|value| value != expected)
                };
                let before = (0..register.ops.len() as Pos)
                    .filter(|&p| other(register.op(p)) && register.op(p).ret < op.call)
                    .max_by_key(|&p| (register.op(p).ret, p));
                let overlapping: Vec<Pos> = (0..register.ops.len() as Pos)
                    .filter(|&p| {
                        let candidate = register.op(p);
                        other(candidate) && candidate.call <= op.ret && candidate.ret >= op.call
                    })
                    .take(OTHER_VALUE_HELPERS_MAX)
                    .collect();
                for position in before.into_iter().chain(overlapping) {
                    add(position, &mut helpers, &mut pending);
                }
            }
            if needs_absent {
                needs_absent = false;
                let deletes: Vec<Pos> = (0..register.ops.len() as Pos)
                    .filter(|&position| {
                        let op = register.op(position);
                        matches!(op.kind, Kind::Delete { .. }) && op.call <= hi && op.ret >= lo
                    })
                    .take(ABSENCE_HELPERS_MAX)
                    .collect();
                for position in deletes {
                    add(position, &mut helpers, &mut pending);
                }
            }
        }
        helpers
    }
}
