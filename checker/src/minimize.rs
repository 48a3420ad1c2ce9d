//! Shrinking a failing partition to a small set of operations that cannot be linearized, so
//! that a person can see the bug.
//!
//! What "cannot be linearized" means for a subset matters. Simply deleting operations from a
//! history changes what the rest means: delete the write of the value a stale read returned,
//! and what remains is a "read of a value never written" — true of the subset, but not why the
//! history fails; delete every put of a key and a delete that found it fails on its own. So a
//! candidate set `C` counts as failing only if it cannot be linearized *whatever the other
//! operations did*: each operation outside `C` is *relaxed* — it may have taken effect at any
//! point of its own interval, with any outcome, or not at all (see `search.rs`; a multi-key
//! one is relaxed key by key, see `Minimizer::trial`). An explanation found this way holds in
//! the full history too: adding back the other operations as they really were can only
//! constrain the search further.
//!
//! Only completed operations are candidates. Operations with unknown outcome are optional
//! anyway, so they can never be part of the reason a history fails; they stay as context.
//!
//! 1. Start from the search's frontier (the operations before the point where every branch got
//!    stuck), if it fails on its own, else from every completed operation.
//! 2. If the operations on a single key fail on their own, keep only those.
//! 3. Delta debugging (Zeller's ddmin, complement variant): try removing chunks of the
//!    candidates, halving the chunk size when nothing can be removed, until no single operation
//!    can be removed. A try that runs out of budget counts as "does not fail", so the result
//!    always fails, but may then not be minimal (reported as such).

use std::collections::BTreeMap;

use crate::budget::Budget;
use crate::model::{DerivedOp, ModelOp, PartitionModel};
use crate::search::{SearchOptions, SearchResult, search};
use crate::union_find::DisjointSets;

#[derive(Debug)]
pub(crate) struct Minimized {
    /// Model indexes, ascending.
    pub(crate) ops: Vec<u32>,
    /// False if a budget ran out, so some removal could not be decided.
    pub(crate) minimal: bool,
    /// The longest order of `ops` the search could build (model indexes, in order).
    pub(crate) longest_prefix: Vec<u32>,
}

enum Trial {
    Fails { longest_prefix: Vec<u32> },
    Passes,
    Undecided,
}

struct Minimizer<'m, 'h> {
    model: &'m PartitionModel<'h>,
    /// Per operation of `model`: the slots it touches, and what it could write whatever its
    /// outcome (sorted, distinct). Computed once: every trial looks at every operation.
    slots: Vec<Vec<u32>>,
    writes: Vec<Vec<(u32, u32)>>,
    max_cache_bytes: usize,
    budget: &'m mut Budget,
    undecided: bool,
}

impl Minimizer<'_, '_> {
    /// Whether `candidates` (ascending) cannot be linearized whatever the other operations of
    /// the partition did.
    ///
    /// The candidates' keys split into independent components (keys joined by a candidate);
    /// the set fails if one component does. Each component is searched with the candidates on
    /// it required and every other operation that writes to it relaxed. A completed multi-key
    /// operation that is not a candidate is relaxed per key: each value it could write to a key
    /// becomes a separate optional write there. That allows more behaviours than the operation
    /// really had (its writes need not be simultaneous, its compares are not evaluated), so a
    /// failure still holds for the real operation; and it keeps components independent, which
    /// keeps trials cheap in partitions that transactions and ranges have joined. (`info`
    /// operations are kept exact and join their keys: they are rare, and the whole partition
    /// with them exact is the exact search that found the violation.) Operations that
    /// cannot change the state, or that start after every candidate of the component returned
    /// (they could only be placed after all of them), cannot matter and are left out.
    fn trial(&mut self, candidates: &[u32], record_longest_prefix: bool) -> Trial {
        let model = self.model;
        let slot_count = model.keys.len();
        let mut components = DisjointSets::new(slot_count);
        let mut is_candidate = vec![false; model.len()];
        for &op in candidates {
            is_candidate[op as usize] = true;
            for pair in self.slots[op as usize].windows(2) {
                components.union(pair[0], pair[1]);
            }
        }
        // `info` operations stay exact, so a multi-key one joins its keys too (when it could
        // take effect before some candidate returns; otherwise it cannot matter).
        let horizon =
            candidates.iter().filter_map(|&op| model.rets[op as usize]).max().unwrap_or(0);
        for op in 0..model.len() {
            if model.is_optional(op) && model.calls[op] <= horizon && !self.writes[op].is_empty() {
                for pair in self.slots[op].windows(2) {
                    components.union(pair[0], pair[1]);
                }
            }
        }
        // Candidates by component (its root slot); keyless ones (a range over nothing) alone.
        let mut by_component: BTreeMap<Option<u32>, Vec<u32>> = BTreeMap::new();
        for &op in candidates {
            let root = self.slots[op as usize].first().map(|&slot| components.find(slot));
            by_component.entry(root).or_default().push(op);
        }
        let mut undecided = false;
        for (root, required) in by_component {
            let horizon =
                required.iter().filter_map(|&op| model.rets[op as usize]).max().unwrap_or(0);
            let mut ops: Vec<DerivedOp> = Vec::new();
            for (op, &candidate) in is_candidate.iter().enumerate() {
                let derived = |model_op: ModelOp| DerivedOp {
                    op: model_op,
                    call: model.calls[op],
                    ret: model.rets[op],
                    origin: op,
                };
                if candidate {
                    if required.binary_search(&(op as u32)).is_ok() {
                        ops.push(derived(model.ops[op].clone()));
                    }
                    continue;
                }
                if model.calls[op] > horizon || self.writes[op].is_empty() {
                    continue;
                }
                let in_component = |slot: u32| Some(components.find_const(slot)) == root;
                if self.slots[op].len() == 1 || model.is_optional(op) {
                    if self.slots[op].first().is_some_and(|&slot| in_component(slot)) {
                        ops.push(derived(model.ops[op].clone()));
                    }
                    continue;
                }
                for &(slot, value) in &self.writes[op] {
                    if in_component(slot) {
                        ops.push(derived(ModelOp::Write { slot, value }));
                    }
                }
            }
            let trial_model = model.derive(ops);
            let relaxed: Vec<bool> =
                (0..trial_model.len()).map(|op| !is_candidate[trial_model.origins[op]]).collect();
            let all: Vec<u32> = (0..trial_model.len() as u32).collect();
            let options =
                SearchOptions { max_cache_bytes: self.max_cache_bytes, record_longest_prefix };
            match search(&trial_model, &all, &relaxed, &options, self.budget) {
                SearchResult::Violation { longest_prefix, .. } => {
                    let longest_prefix = longest_prefix
                        .into_iter()
                        .map(|op| trial_model.origins[op as usize] as u32)
                        .filter(|&op| is_candidate[op as usize])
                        .collect();
                    return Trial::Fails { longest_prefix };
                }
                SearchResult::Linearizable => {}
                SearchResult::Unknown(_) => undecided = true,
            }
        }
        if undecided {
            self.undecided = true;
            return Trial::Undecided;
        }
        Trial::Passes
    }

    fn fails(&mut self, candidates: &[u32]) -> bool {
        matches!(self.trial(candidates, false), Trial::Fails { .. })
    }
}

/// Shrinks a failing partition whose search reported `frontier`.
pub(crate) fn minimize(
    model: &PartitionModel<'_>,
    frontier: Vec<u32>,
    max_cache_bytes: usize,
    budget: &mut Budget,
) -> Minimized {
    let writes = (0..model.len())
        .map(|op| {
            let mut writes = model.writes(op, false);
            writes.sort_unstable();
            writes.dedup();
            writes
        })
        .collect();
    let slots = (0..model.len()).map(|op| model.slots(op)).collect();
    let mut minimizer =
        Minimizer { model, slots, writes, max_cache_bytes, budget, undecided: false };
    let completed = |ops: &mut dyn Iterator<Item = u32>| -> Vec<u32> {
        ops.filter(|&op| !model.is_optional(op as usize)).collect()
    };
    let all = completed(&mut (0..model.len() as u32));
    let from_frontier = completed(&mut frontier.into_iter());
    // Starting from the frontier is only a shortcut, so it is checked. The whole partition is
    // checked too, although with every completed operation a candidate its trial is the exact
    // search that failed: that keeps "every accepted set failed a trial" true by construction.
    let mut current = if from_frontier.len() < all.len() && minimizer.fails(&from_frontier) {
        from_frontier
    } else if minimizer.fails(&all) {
        all
    } else {
        return Minimized { ops: all, minimal: false, longest_prefix: Vec::new() };
    };

    // Most anomalies involve one key. Trying each key's single-key operations on their own
    // first costs one cheap (single-key) trial per key, and when it succeeds the delta
    // debugging below only ever searches that key.
    let mut slots_used: Vec<u32> = current
        .iter()
        .filter_map(|&op| match minimizer.slots[op as usize][..] {
            [slot] => Some(slot),
            _ => None,
        })
        .collect();
    slots_used.sort_unstable();
    slots_used.dedup();
    if slots_used.len() > 1 {
        for slot in slots_used {
            let on_slot: Vec<u32> = current
                .iter()
                .copied()
                .filter(|&op| minimizer.slots[op as usize][..] == [slot])
                .collect();
            if on_slot.len() < current.len() && minimizer.fails(&on_slot) {
                current = on_slot;
                break;
            }
        }
    }

    let mut chunk_count = 2usize;
    while current.len() >= 2 {
        let chunk_len = current.len().div_ceil(chunk_count);
        let mut reduced = false;
        for chunk_start in (0..current.len()).step_by(chunk_len) {
            let complement: Vec<u32> = current[..chunk_start]
                .iter()
                .chain(&current[(chunk_start + chunk_len).min(current.len())..])
                .copied()
                .collect();
            if minimizer.fails(&complement) {
                current = complement;
                chunk_count = (chunk_count - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if chunk_count >= current.len() {
                break; // every single-operation removal was tried: 1-minimal
            }
            chunk_count = (chunk_count * 2).min(current.len());
        }
    }

    let longest_prefix = match minimizer.trial(&current, true) {
        Trial::Fails { longest_prefix } => longest_prefix,
        // Every set `current` held was seen to fail, and trials are deterministic.
        Trial::Passes => unreachable!("a set accepted by the minimizer passed its search"),
        Trial::Undecided => Vec::new(),
    };
    Minimized { ops: current, minimal: !minimizer.undecided, longest_prefix }
}
