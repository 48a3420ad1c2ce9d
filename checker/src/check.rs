//! The entry point: split a history into partitions, search each, explain the first failure.

use std::time::{Duration, Instant};

use crate::budget::{Budget, BudgetKind};
use crate::history::{History, OpIndex};
use crate::minimize::minimize;
use crate::model::PartitionModel;
use crate::partition::{PartitionPlan, split};
use crate::search::{SearchOptions, SearchResult, search};
use crate::table::Table;
use crate::unique_values::{self, Declined, FastOutcome, NotEligible};

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
    /// Decide single-key partitions whose written values are unique without search (see
    /// `unique_values.rs`); the general search still decides whatever the fast path declines.
    /// Off only to compare the two.
    pub fast_path: bool,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            max_steps: 50_000_000,
            timeout: None,
            max_cache_bytes: 512 << 20,
            minimize: true,
            minimize_max_steps: 20_000_000,
            fast_path: true,
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
    /// What the fast path proved, when it found the violation (the general search names no
    /// pattern).
    pub rule: Option<&'static str>,
    /// For a violation the fast path proved: the writes of the values the failing operations
    /// read, when not among them (each is the only write of its value, so the failing set
    /// implies it; listed because it is what a reader asks first).
    pub read_from: Vec<OpIndex>,
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
    /// Whether the unique-value fast path decided it (without search steps), or why not.
    pub fast_path: FastPath,
}

/// What the unique-value fast path did with a partition.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FastPath {
    /// It gave the verdict.
    Decided,
    /// Not eligible: transactions or ranges, or more than one key.
    MultiKey,
    /// Not eligible: some value may be written twice.
    RepeatedValue,
    /// Eligible, but neither a rule nor the builder settled it: the search decided.
    Undecided,
    /// Switched off (`CheckOptions::fast_path`), or the time budget ran out first.
    Skipped,
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
    /// The CLI's exit code for this verdict: 0 linearizable, 1 violation, 2 unknown; 4 when
    /// there was nothing to check (see [`CheckReport::is_vacuous`]).
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Linearizable if self.is_vacuous() => 4,
            Verdict::Linearizable => 0,
            Verdict::Violation(_) => 1,
            Verdict::Unknown(_) => 2,
        }
    }

    /// No operation could affect the verdict (the history is empty, or has only failed
    /// operations and reads of unknown outcome): "linearizable" holds, but says nothing.
    pub fn is_vacuous(&self) -> bool {
        self.partitions.is_empty()
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
    check_table(&Table::from_history(history), options).0
}

/// [`check`] on the rows of a history (`table.rs`), which the CLI reads straight from a file.
/// Also returns the operations of the first failing partition (history indexes, call order),
/// which the report shows.
pub(crate) fn check_table(
    table: &Table<'_>,
    options: &CheckOptions,
) -> (CheckReport, Option<Vec<OpIndex>>) {
    let started = Instant::now();
    let deadline = options.timeout.map(|timeout| started + timeout);
    let split = split(table);
    let mut plans = split.partitions;
    // Stable sort: equal sizes keep the partitioner's key order.
    plans.sort_by_key(|plan| plan.ops.len());

    let search_options =
        SearchOptions { max_cache_bytes: options.max_cache_bytes, record_longest_prefix: false };
    let mut budget = Budget::new(options.max_steps, deadline);
    let mut partitions = Vec::with_capacity(plans.len());
    let mut first_violation: Option<(usize, Failure)> = None;
    let mut first_unknown: Option<(usize, BudgetKind)> = None;
    let mut violating_partitions = 0;
    let mut scratch = options.fast_path.then(|| unique_values::Scratch::new(table));
    for (index, plan) in plans.iter().enumerate() {
        let steps_before = budget.steps_used();
        let (fast, fast_path) = match (budget.check_deadline(), &mut scratch) {
            (Ok(()), Some(scratch)) => {
                match unique_values::decide(table, &plan.keys, &plan.ops, scratch) {
                    FastOutcome::Linearizable => {
                        (Some(PartitionOutcome::Linearizable), FastPath::Decided)
                    }
                    FastOutcome::Violation { rule, ops } => {
                        first_violation.get_or_insert((index, Failure::Proved { rule, ops }));
                        (Some(PartitionOutcome::Violation), FastPath::Decided)
                    }
                    FastOutcome::Declined(Declined::NotEligible(NotEligible::MultiKey)) => {
                        (None, FastPath::MultiKey)
                    }
                    FastOutcome::Declined(Declined::NotEligible(NotEligible::RepeatedValue)) => {
                        (None, FastPath::RepeatedValue)
                    }
                    FastOutcome::Declined(Declined::Undecided) => (None, FastPath::Undecided),
                }
            }
            (Ok(()) | Err(_), _) => (None, FastPath::Skipped),
        };
        let outcome = match (fast, budget.check_deadline()) {
            (Some(outcome), _) => outcome,
            (None, Err(kind)) => PartitionOutcome::Unknown(kind),
            (None, Ok(())) => {
                let part = table.partition_ops(&plan.ops);
                let model = PartitionModel::compile(&part.ops, plan.keys.clone(), &part.indexes);
                let all: Vec<u32> = (0..model.len() as u32).collect();
                match search(&model, &all, &[], &search_options, &mut budget) {
                    SearchResult::Linearizable => PartitionOutcome::Linearizable,
                    SearchResult::Violation { frontier, .. } => {
                        first_violation.get_or_insert((index, Failure::Searched { frontier }));
                        PartitionOutcome::Violation
                    }
                    SearchResult::Unknown(kind) => PartitionOutcome::Unknown(kind),
                }
            }
        };
        match outcome {
            PartitionOutcome::Unknown(kind) => {
                first_unknown.get_or_insert((index, kind));
            }
            PartitionOutcome::Violation => violating_partitions += 1,
            PartitionOutcome::Linearizable => {}
        }
        partitions.push(PartitionReport {
            keys: plan.keys.iter().map(|key| (*key).to_owned()).collect(),
            op_count: plan.ops.len(),
            outcome,
            steps: budget.steps_used() - steps_before,
            fast_path,
        });
    }

    let mut minimize_budget = Budget::new(options.minimize_max_steps, deadline);
    let failing_partition = first_violation.as_ref().map(|(index, _)| plans[*index].ops.clone());
    let verdict = match (first_violation, first_unknown) {
        (Some((index, failure)), _) => {
            let plan = &plans[index];
            let explained = explain_failure(table, plan, failure, options, &mut minimize_budget);
            Verdict::Violation(Violation {
                keys: partitions[index].keys.clone(),
                partition_op_count: plan.ops.len(),
                failing_ops: explained.ops,
                minimal: explained.minimal,
                longest_prefix: explained.longest_prefix,
                violating_partitions,
                rule: explained.rule,
                read_from: explained.read_from,
            })
        }
        (None, Some((index, reason))) => {
            Verdict::Unknown(Unknown { reason, keys: partitions[index].keys.clone() })
        }
        (None, None) => Verdict::Linearizable,
    };
    let report = CheckReport {
        verdict,
        op_count: table.len(),
        dropped_op_count: split.dropped,
        partitions,
        steps: budget.steps_used(),
        minimize_steps: minimize_budget.steps_used(),
    };
    (report, failing_partition)
}

/// Partitions up to this size get the general minimizer when the fast path could not show its
/// certificate minimal (rare); in larger ones the minimizer's trials cost more than the check,
/// and the certificate is reported as it is.
const MINIMIZE_AFTER_FAST_PATH_OPS_MAX: usize = 5_000;

/// How the first failing partition was found to fail.
enum Failure {
    /// By the fast path's rule, with its certificate (history indexes).
    Proved { rule: unique_values::Rule, ops: Vec<OpIndex> },
    /// By the search, which got stuck at `frontier` (model indexes).
    Searched { frontier: Vec<u32> },
}

/// A violation ready for the report.
struct Explanation {
    ops: Vec<OpIndex>,
    minimal: bool,
    longest_prefix: Vec<OpIndex>,
    rule: Option<&'static str>,
    read_from: Vec<OpIndex>,
}

/// Shrinks (or checks) the failing set of the first failing partition.
fn explain_failure(
    table: &Table<'_>,
    plan: &PartitionPlan<'_>,
    failure: Failure,
    options: &CheckOptions,
    budget: &mut Budget,
) -> Explanation {
    let part = table.partition_ops(&plan.ops);
    let model = PartitionModel::compile(&part.ops, plan.keys.clone(), &part.indexes);
    let to_history = |ops: &[u32]| -> Vec<OpIndex> {
        ops.iter().map(|&op| part.history_index(model.origins[op as usize])).collect()
    };
    if !options.minimize {
        let completed: Vec<u32> =
            (0..model.len() as u32).filter(|&op| !model.is_optional(op as usize)).collect();
        let rule = match failure {
            Failure::Proved { rule, .. } => Some(rule.as_str()),
            Failure::Searched { .. } => None,
        };
        return Explanation {
            ops: to_history(&completed),
            minimal: false,
            longest_prefix: Vec::new(),
            rule,
            read_from: Vec::new(),
        };
    }
    let (frontier, rule) = match failure {
        Failure::Proved { rule, ops } => {
            match unique_values::explain(
                table,
                &plan.keys,
                &plan.ops,
                &ops,
                options.max_cache_bytes,
                budget,
            ) {
                Some(explained) if explained.minimal => {
                    return Explanation {
                        ops: explained.ops,
                        minimal: true,
                        longest_prefix: explained.longest_prefix,
                        rule: Some(rule.as_str()),
                        read_from: explained.read_from,
                    };
                }
                // Not shown minimal in a large partition: the certificate is small and proved
                // failing; the general minimizer would cost more than the check there.
                Some(explained) if plan.ops.len() > MINIMIZE_AFTER_FAST_PATH_OPS_MAX => {
                    return Explanation {
                        ops: explained.ops,
                        minimal: false,
                        longest_prefix: explained.longest_prefix,
                        rule: Some(rule.as_str()),
                        read_from: explained.read_from,
                    };
                }
                // Not shown minimal: the general minimizer shrinks it further, starting from
                // the certificate (it checks that the certificate fails before relying on it).
                Some(explained) => {
                    let position: std::collections::HashMap<OpIndex, u32> = (0..model.len() as u32)
                        .map(|op| (part.history_index(model.origins[op as usize]), op))
                        .collect();
                    let mut frontier: Vec<u32> =
                        explained.ops.iter().map(|index| position[index]).collect();
                    frontier.sort_unstable();
                    (frontier, Some(rule.as_str()))
                }
                // A certificate that linearizes would be a bug in a rule; the general
                // minimizer then explains the partition from scratch.
                None => {
                    debug_assert!(false, "a fast-path certificate linearized: {rule:?} {ops:?}");
                    ((0..model.len() as u32).collect(), None)
                }
            }
        }
        Failure::Searched { frontier } => (frontier, None),
    };
    let minimized = minimize(&model, frontier, options.max_cache_bytes, budget);
    Explanation {
        ops: to_history(&minimized.ops),
        minimal: minimized.minimal,
        longest_prefix: to_history(&minimized.longest_prefix),
        rule,
        read_from: Vec::new(),
    }
}
