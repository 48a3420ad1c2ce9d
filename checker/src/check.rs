//! The entry point: split a history into partitions, search each, explain the first failure.

use std::time::{Duration, Instant};

use crate::budget::{Budget, BudgetKind};
use crate::history::{History, OpIndex};
use crate::minimize::minimize;
use crate::model::PartitionModel;
use crate::partition::split;
use crate::search::{SearchOptions, SearchResult, search};

/// How hard to try. The defaults suit both the simulator (deterministic: no timeout) and the
/// CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Deterministic budget for the whole check, in search steps (one step = one attempt to
    /// place one operation). When it runs out the verdict is [`Verdict::Unknown`], never a
    /// guess. A linearizable history needs roughly one to a few steps per operation.
    pub max_steps: u64,
    /// Wall-clock budget. `None` (the default) keeps the check a pure function of its input,
    /// which the simulator needs to replay seeds.
    pub timeout: Option<Duration>,
    /// Memory bound for the memo cache of one partition search.
    pub max_cache_bytes: usize,
    /// Shrink a violation to a minimal failing set of operations.
    pub minimize: bool,
    /// Deterministic budget for minimization, separate from `max_steps` so that explaining a
    /// violation never turns it into "unknown".
    pub minimize_max_steps: u64,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            max_steps: 50_000_000,
            timeout: None,
            max_cache_bytes: 512 << 20,
            minimize: true,
            minimize_max_steps: 20_000_000,
        }
    }
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation(Violation),
    /// A budget ran out before every partition was decided, and none of the decided ones
    /// failed.
    Unknown(Unknown),
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::Violation(_) => "violation",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// Why a history is not linearizable, small enough for a person to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The keys of the failing partition (the smallest one, if several fail).
    pub keys: Vec<String>,
    /// Operations in the failing partition.
    pub partition_op_count: usize,
    /// Completed operations of the partition that cannot be linearized whatever the other
    /// operations did — each of those may have taken effect at any point of its own interval,
    /// with any outcome, or not at all (indexes into the history, in call order). When
    /// `minimal`, no operation can be removed from the set without losing that property.
    pub failing_ops: Vec<OpIndex>,
    pub minimal: bool,
    /// The longest order of `failing_ops` the search could build before getting stuck: these
    /// linearize in this order, and no remaining operation can come next.
    pub longest_prefix: Vec<OpIndex>,
    /// How many partitions failed in total.
    pub violating_partitions: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub reason: BudgetKind,
    /// The keys of the first partition that could not be decided.
    pub keys: Vec<String>,
}

/// What happened to one partition.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PartitionOutcome {
    Linearizable,
    Violation,
    Unknown(BudgetKind),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReport {
    pub keys: Vec<String>,
    pub op_count: usize,
    pub outcome: PartitionOutcome,
    pub steps: u64,
}

/// The result of [`check`]. Without a timeout it is a pure function of the history and the
/// options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub verdict: Verdict,
    /// Operations in the history.
    pub op_count: usize,
    /// Operations that cannot matter and were left out: `fail`ed ones, and `info` reads.
    pub dropped_op_count: usize,
    /// Per partition, in the order checked (smallest first).
    pub partitions: Vec<PartitionReport>,
    /// Search steps spent deciding (minimization not included).
    pub steps: u64,
    /// Search steps spent minimizing.
    pub minimize_steps: u64,
}

impl CheckReport {
    /// The CLI's exit code for this verdict: 0 linearizable, 1 violation, 2 unknown.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Linearizable => 0,
            Verdict::Violation(_) => 1,
            Verdict::Unknown(_) => 2,
        }
    }

    pub fn violation(&self) -> Option<&Violation> {
        match &self.verdict {
            Verdict::Violation(violation) => Some(violation),
            Verdict::Linearizable | Verdict::Unknown(_) => None,
        }
    }
}

/// Checks a history for linearizability against the KV model.
///
/// Partitions (see `partition.rs`) are checked smallest first, so a budget is spent where a
/// definite answer is cheapest, and the first violation found is in the smallest failing
/// partition. Every partition is searched; only that first violation is minimized.
pub fn check(history: &History, options: &CheckOptions) -> CheckReport {
    let started = Instant::now();
    let deadline = options.timeout.map(|timeout| started + timeout);
    let split = split(history);
    let mut plans = split.partitions;
    // Stable sort: equal sizes keep the partitioner's key order.
    plans.sort_by_key(|plan| plan.ops.len());

    let search_options =
        SearchOptions { max_cache_bytes: options.max_cache_bytes, record_longest_prefix: false };
    let mut budget = Budget::new(options.max_steps, deadline);
    let mut partitions = Vec::with_capacity(plans.len());
    let mut first_violation: Option<(usize, Vec<u32>)> = None;
    let mut first_unknown: Option<(usize, BudgetKind)> = None;
    let mut violating_partitions = 0;
    for (index, plan) in plans.iter().enumerate() {
        let steps_before = budget.steps_used();
        let outcome = match budget.check_deadline() {
            Err(kind) => PartitionOutcome::Unknown(kind),
            Ok(()) => {
                let model = PartitionModel::compile(history.ops(), plan.keys.clone(), &plan.ops);
                let all: Vec<u32> = (0..model.len() as u32).collect();
                match search(&model, &all, &[], &search_options, &mut budget) {
                    SearchResult::Linearizable => PartitionOutcome::Linearizable,
                    SearchResult::Violation { frontier, .. } => {
                        if first_violation.is_none() {
                            first_violation = Some((index, frontier));
                        }
                        violating_partitions += 1;
                        PartitionOutcome::Violation
                    }
                    SearchResult::Unknown(kind) => PartitionOutcome::Unknown(kind),
                }
            }
        };
        if let PartitionOutcome::Unknown(kind) = outcome {
            first_unknown.get_or_insert((index, kind));
        }
        partitions.push(PartitionReport {
            keys: plan.keys.iter().map(|key| (*key).to_owned()).collect(),
            op_count: plan.ops.len(),
            outcome,
            steps: budget.steps_used() - steps_before,
        });
    }

    let mut minimize_budget = Budget::new(options.minimize_max_steps, deadline);
    let verdict = match (first_violation, first_unknown) {
        (Some((index, frontier)), _) => {
            let plan = &plans[index];
            let model = PartitionModel::compile(history.ops(), plan.keys.clone(), &plan.ops);
            let (ops, minimal, longest_prefix) = if options.minimize {
                let minimized =
                    minimize(&model, frontier, options.max_cache_bytes, &mut minimize_budget);
                (minimized.ops, minimized.minimal, minimized.longest_prefix)
            } else {
                let completed =
                    (0..model.len() as u32).filter(|&op| !model.is_optional(op as usize)).collect();
                (completed, false, Vec::new())
            };
            let to_history = |ops: &[u32]| -> Vec<OpIndex> {
                ops.iter().map(|&op| model.origins[op as usize]).collect()
            };
            Verdict::Violation(Violation {
                keys: partitions[index].keys.clone(),
                partition_op_count: plan.ops.len(),
                failing_ops: to_history(&ops),
                minimal,
                longest_prefix: to_history(&longest_prefix),
                violating_partitions,
            })
        }
        (None, Some((index, reason))) => {
            Verdict::Unknown(Unknown { reason, keys: partitions[index].keys.clone() })
        }
        (None, None) => Verdict::Linearizable,
    };
    CheckReport {
        verdict,
        op_count: history.len(),
        dropped_op_count: split.dropped,
        partitions,
        steps: budget.steps_used(),
        minimize_steps: minimize_budget.steps_used(),
    }
}
