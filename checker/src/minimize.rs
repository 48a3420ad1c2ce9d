//! Shrinking a failing partition to a small set of operations that cannot be linearized, so
//! that a person can see the bug.
//!
//! What "cannot be linearized" means for a subset matters. Simply deleting operations from a
//! history changes what the rest means: delete the write of the value a stale read returned,
//! and what remains is a "read of a value never written" — true of the subset, but not why the
//! history fails; delete every put of a key and a delete that found it fails on its own. So a
//! candidate set `C` counts as failing only if it cannot be linearized *whatever the other
//! operations did*: each operation outside `C` is *relaxed* — it may have taken effect at any
//! point of its own interval, with any outcome, or not at all (see `search.rs`). An
//! explanation found this way holds in the full history too: adding back the other operations
//! as they really were can only constrain the search further.
//!
//! Only completed operations are candidates. Operations with unknown outcome are optional
//! anyway, so they can never be part of the reason a history fails; they stay as context.
//!
//! 1. Start from the search's frontier (the operations before the point where every branch got
//!    stuck), if it fails on its own, else from every completed operation.
//! 2. Delta debugging (Zeller's ddmin, complement variant): try removing chunks of the
//!    candidates, halving the chunk size when nothing can be removed, until no single operation
//!    can be removed. A try that runs out of budget counts as "does not fail", so the result
//!    always fails, but may then not be minimal (reported as such).

use crate::budget::Budget;
use crate::model::PartitionModel;
use crate::search::{SearchOptions, SearchResult, search};

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
    max_cache_bytes: usize,
    budget: &'m mut Budget,
    undecided: bool,
}

impl Minimizer<'_, '_> {
    /// Searches `candidates` (ascending) with every other operation of the partition that could
    /// matter relaxed. An operation that cannot change the state, or that starts after every
    /// candidate has returned (so it could only be placed after all of them), cannot matter.
    fn trial(&mut self, candidates: &[u32], record_longest_prefix: bool) -> Trial {
        let model = self.model;
        let horizon =
            candidates.iter().filter_map(|&op| model.rets[op as usize]).max().unwrap_or(0);
        let mut subset = Vec::with_capacity(model.len());
        let mut relaxed = Vec::with_capacity(model.len());
        let mut next_candidate = candidates.iter().peekable();
        for op in 0..model.len() as u32 {
            if next_candidate.peek() == Some(&&op) {
                next_candidate.next();
                subset.push(op);
                relaxed.push(false);
            } else if model.may_write(op as usize) && model.calls[op as usize] <= horizon {
                subset.push(op);
                relaxed.push(true);
            }
        }
        assert!(next_candidate.next().is_none(), "candidates must ascend");
        let options =
            SearchOptions { max_cache_bytes: self.max_cache_bytes, record_longest_prefix };
        match search(model, &subset, &relaxed, &options, self.budget) {
            SearchResult::Violation { longest_prefix, .. } => Trial::Fails { longest_prefix },
            SearchResult::Linearizable => Trial::Passes,
            SearchResult::Unknown(_) => {
                self.undecided = true;
                Trial::Undecided
            }
        }
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
    let mut minimizer = Minimizer { model, max_cache_bytes, budget, undecided: false };
    let completed = |ops: &mut dyn Iterator<Item = u32>| -> Vec<u32> {
        ops.filter(|&op| !model.is_optional(op as usize)).collect()
    };
    let all = completed(&mut (0..model.len() as u32));
    let from_frontier = completed(&mut frontier.into_iter());
    // With nothing relaxed and nothing after the frontier, the whole partition fails: the
    // search said so. Starting smaller is only a shortcut, so it is checked.
    let mut current = if from_frontier.len() < all.len() && minimizer.fails(&from_frontier) {
        from_frontier
    } else {
        all
    };

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
        // The same deterministic search failed on this set before, or it is the whole
        // partition whose plain search failed (relaxing nothing, as nothing is left over).
        Trial::Passes => unreachable!("a set accepted by the minimizer passed its search"),
        Trial::Undecided => Vec::new(),
    };
    Minimized { ops: current, minimal: !minimizer.undecided, longest_prefix }
}
