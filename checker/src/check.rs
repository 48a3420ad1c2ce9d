//! The entry point: split a history into partitions, search each, explain the first failure.
//! The partitions come from a [`PartitionSource`]: a table in memory, or a file's partitions
//! read back from disk one at a time; the check is the same either way.

use std::time::{Duration, Instant};

use crate::budget::{Budget, BudgetKind};
use crate::history::{History, OpIndex};
use crate::minimize::minimize;
use crate::model::PartitionModel;
use crate::partition_source::{PartitionSource, PartitionView, SplitTable};
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
    let started = Instant::now();
    let table = Table::from_history(history);
    let mut partitions = SplitTable::new(&table);
    let dropped = partitions.dropped;
    match check_partitions(&mut partitions, table.len(), dropped, options, started) {
        Ok((report, _)) => report,
        Err(never) => match never {},
    }
}

/// [`check`] on partitions from any source (`partition_source.rs`): a table in memory, or a
/// file's partitions spilled to disk and read back one at a time. `op_count` and
/// `dropped_op_count` describe the whole history; `started` is when the check began (the
/// timeout counts from it). Also returns the position of the first failing partition, which
/// the report shows.
pub(crate) fn check_partitions<S: PartitionSource>(
    source: &mut S,
    op_count: usize,
    dropped_op_count: usize,
    options: &CheckOptions,
    started: Instant,
) -> Result<(CheckReport, Option<usize>), S::Error> {
    let deadline = options.timeout.map(|timeout| started + timeout);
    let search_options =
        SearchOptions { max_cache_bytes: options.max_cache_bytes, record_longest_prefix: false };
    let mut budget = Budget::new(options.max_steps, deadline);
    let mut partitions = Vec::with_capacity(source.len());
    let mut first_violation: Option<(usize, Failure)> = None;
    let mut first_unknown: Option<(usize, BudgetKind)> = None;
    let mut violating_partitions = 0;
    let mut scratch = options.fast_path.then(unique_values::Scratch::default);
    for position in 0..source.len() {
        let steps_before = budget.steps_used();
        let decided = source
            .visit(position, |view| decide(view, &search_options, &mut budget, scratch.as_mut()))?;
        if let Some(failure) = decided.failure {
            first_violation.get_or_insert((position, failure));
        }
        match decided.outcome {
            PartitionOutcome::Unknown(kind) => {
                first_unknown.get_or_insert((position, kind));
            }
            PartitionOutcome::Violation => violating_partitions += 1,
            PartitionOutcome::Linearizable => {}
        }
        partitions.push(PartitionReport {
            keys: decided.keys,
            op_count: decided.op_count,
            outcome: decided.outcome,
            steps: budget.steps_used() - steps_before,
            fast_path: decided.fast_path,
        });
    }

    let mut minimize_budget = Budget::new(options.minimize_max_steps, deadline);
    let failing_position = first_violation.as_ref().map(|(position, _)| *position);
    let verdict = match (first_violation, first_unknown) {
        (Some((position, failure)), _) => {
            let explained = source.visit(position, |view| {
                explain_failure(view, failure, options, &mut minimize_budget)
            })?;
            Verdict::Violation(Violation {
                keys: partitions[position].keys.clone(),
                partition_op_count: partitions[position].op_count,
                failing_ops: explained.ops,
                minimal: explained.minimal,
                longest_prefix: explained.longest_prefix,
                violating_partitions,
                rule: explained.rule,
                read_from: explained.read_from,
            })
        }
        (None, Some((position, reason))) => {
            Verdict::Unknown(Unknown { reason, keys: partitions[position].keys.clone() })
        }
        (None, None) => Verdict::Linearizable,
    };
    let report = CheckReport {
        verdict,
        op_count,
        dropped_op_count,
        partitions,
        steps: budget.steps_used(),
        minimize_steps: minimize_budget.steps_used(),
    };
    Ok((report, failing_position))
}

/// What became of one partition.
struct Decided {
    keys: Vec<String>,
    op_count: usize,
    outcome: PartitionOutcome,
    fast_path: FastPath,
    /// How it failed, for a violation.
    failure: Option<Failure>,
}

/// Decides one partition: the fast path first (unless `scratch` is `None`: switched off),
/// then the search.
fn decide(
    view: &PartitionView<'_>,
    search_options: &SearchOptions,
    budget: &mut Budget,
    scratch: Option<&mut unique_values::Scratch>,
) -> Decided {
    let mut failure = None;
    let (fast, fast_path) = match (budget.check_deadline(), scratch) {
        (Ok(()), Some(scratch)) => {
            match unique_values::decide(view.table, view.keys, view.ops, scratch) {
                FastOutcome::Linearizable => {
                    (Some(PartitionOutcome::Linearizable), FastPath::Decided)
                }
                FastOutcome::Violation { rule, ops } => {
                    failure = Some(Failure::Proved { rule, ops });
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
            let part = view.table.partition_ops(view.ops);
            let model = PartitionModel::compile(&part.ops, view.keys.to_vec(), &part.indexes);
            let all: Vec<u32> = (0..model.len() as u32).collect();
            match search(&model, &all, &[], search_options, budget) {
                SearchResult::Linearizable => PartitionOutcome::Linearizable,
                SearchResult::Violation { frontier, .. } => {
                    failure = Some(Failure::Searched { frontier });
                    PartitionOutcome::Violation
                }
                SearchResult::Unknown(kind) => PartitionOutcome::Unknown(kind),
            }
        }
    };
    assert_eq!(failure.is_some(), outcome == PartitionOutcome::Violation);
    Decided {
        keys: view.keys.iter().map(|key| (*key).to_owned()).collect(),
        op_count: view.ops.len(),
        outcome,
        fast_path,
        failure,
    }
}

/// Partitions up to this size get the general minimizer when the fast path could not show its
/// certificate minimal (rare); in larger ones the minimizer's trials cost more than the check,
/// and the certificate is reported as it is.
const MINIMIZE_AFTER_FAST_PATH_OPS_MAX: usize = 5_000;

/// How the first failing partition was found to fail.
enum Failure {
    /// By the fast path's rule, with its certificate (indexes of the partition's table).
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
    view: &PartitionView<'_>,
    failure: Failure,
    options: &CheckOptions,
    budget: &mut Budget,
) -> Explanation {
    let explained = explain_in_table(view, failure, options, budget);
    // Table indexes ascend with history indexes, so call order and every order stay as they are.
    let to_history = |indexes: Vec<usize>| -> Vec<OpIndex> {
        indexes.into_iter().map(|index| view.history_index(index)).collect()
    };
    Explanation {
        ops: to_history(explained.ops),
        longest_prefix: to_history(explained.longest_prefix),
        read_from: to_history(explained.read_from),
        ..explained
    }
}

/// [`explain_failure`] in indexes of `view.table`.
fn explain_in_table(
    view: &PartitionView<'_>,
    failure: Failure,
    options: &CheckOptions,
    budget: &mut Budget,
) -> Explanation {
    let table = view.table;
    let part = table.partition_ops(view.ops);
    let model = PartitionModel::compile(&part.ops, view.keys.to_vec(), &part.indexes);
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
                view.keys,
                view.ops,
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
                Some(explained) if view.ops.len() > MINIMIZE_AFTER_FAST_PATH_OPS_MAX => {
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
