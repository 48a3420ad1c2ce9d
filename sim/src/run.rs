//! One simulated run: build the world from a [`RunConfig`], let the nemesis loose for the fault
//! phase, heal everything and require liveness, then judge the client history.
//!
//! A run is a pure function of its `RunConfig` (and the commit): the same config gives the same
//! trace hash, the same history and the same verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use conclave_checker::{CheckOptions, History, Operation, Status, Verdict};
use conclave_core::engine::WatchPosition;
use conclave_core::raft::LogIndex;
use conclave_core::shard::ShardId;

use crate::admin::{AdminShared, AdminStats, run_admin};
use crate::clock::SimClock;
use crate::disk::DiskFaults;
use crate::nemesis::{Nemesis, NemesisLevers};
use crate::node_host::{NodeContext, node_main};
use crate::observer::{LeaseOverlap, LeaseOverlaps, ObservedStats};
use crate::observers::Observers;
use crate::panic_capture;
use crate::schedule::{FaultFamily, RunConfig};
use crate::watch_check::{WatchSummary, check_watch, last_change_position};
use crate::watcher::{WatchShared, WatcherSetup, run_watcher};
use crate::workload::{ClientSetup, LeaseRead, WorkloadShared, run_client};

/// Simulated seconds since the Unix epoch at the start of every run (fixed: turmoil's default
/// is the OS clock, which would make runs unrepeatable).
const EPOCH_SECONDS: u64 = 1_700_000_000;
/// After the clients are told to stop, they get this long to finish their last operation.
const DRAIN_MS: u64 = 10_000;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A Raft or storage invariant broke (see the observer).
    Invariant,
    /// The client history is not linearizable.
    Linearizability,
    /// After healing, no leader or no progress within the bound.
    Liveness,
    /// Code panicked (an assertion on an invariant).
    Panic,
    /// The checker ran out of budget: the run is unjudged.
    CheckerUnknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Clocks drifted beyond what the lease assumes, and lease reads showed it: expected and
    /// reported, never counted as a pass of the bound.
    LeaseAnomalyUnderExcessiveDrift,
    Fail {
        kind: FailureKind,
        detail: String,
    },
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Invariant => "invariant",
            FailureKind::Linearizability => "linearizability",
            FailureKind::Liveness => "liveness",
            FailureKind::Panic => "panic",
            FailureKind::CheckerUnknown => "checker unknown",
        })
    }
}

/// In words, for summaries and reports: `passed`, or `failed (kind): detail`.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Pass => f.write_str("passed"),
            Outcome::LeaseAnomalyUnderExcessiveDrift => f.write_str(
                "passed, with stale lease reads excused: a clock drifted past the lease's bound",
            ),
            Outcome::Fail { kind, detail } => write!(f, "failed ({kind}): {detail}"),
        }
    }
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Fail { .. })
    }
}

/// What a run should produce besides its verdict.
#[derive(Copy, Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep the client history in the report (for writing it out).
    pub keep_history: bool,
    /// Shrink a linearizability violation to a minimal failing set of operations (costly; the
    /// shrinker only needs the verdict and turns this off).
    pub explain_violations: bool,
}

#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub outcome: Outcome,
    /// Simulated milliseconds at which the failure showed: when an invariant broke, or when the
    /// last operation of a non-linearizable set returned.
    pub failure_at_ms: Option<u64>,
    pub trace_hash: u64,
    pub operations: usize,
    pub operations_ok: usize,
    pub operations_unknown: usize,
    pub faults_fired: BTreeSet<FaultFamily>,
    pub sim_ms: u64,
    pub steps: u64,
    pub stats: ObservedStats,
    pub nemesis_log: Vec<String>,
    pub node_stops: Vec<String>,
    pub admin: AdminStats,
    pub history: Option<History>,
    pub verdict: String,
    /// Lease reads excused because a clock their lease rested on had drifted past the lease's
    /// bound during that lease (reported in every summary; 0 when the history was
    /// linearizable as it was).
    pub excused_lease_reads: usize,
    /// Lease overlaps (a leader leasing after a newer one was elected) excused the same way.
    pub excused_lease_overlaps: usize,
    /// Write attempts refused because the node's disk was full.
    pub writes_refused_no_space: u64,
    /// Changes the watcher received (each checked), streams it resumed, and restarts from the
    /// present because no node held its position any more.
    pub watch_changes: usize,
    pub watch_resumes: u64,
    pub watch_restarts: usize,
    pub reads: ReadSummary,
}

/// What the read checks saw (`read_check.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// Range reads answered, at any consistency.
    pub range_reads: u64,
    /// Single-key observations: one per answered `get`, one per key a range covered.
    pub observations: usize,
    pub stale_observations: usize,
    /// Observations compared with the state replayed at their store revision.
    pub judged_by_state: usize,
}

enum Phase {
    Faults,
    Liveness {
        since_ms: u64,
    },
    /// Liveness was shown; every running member of each group must now reach that group's
    /// target (its commit index then): the cluster converges.
    Converging {
        since_ms: u64,
        targets: BTreeMap<ShardId, LogIndex>,
    },
    /// The clients finish their last operations and the watcher catches up with `watch_goal`
    /// (the position of the newest change under its prefix when the cluster had converged).
    Draining {
        since_ms: u64,
        watch_target: u64,
        watch_goal: Option<WatchPosition>,
    },
}

pub fn run(config: &RunConfig, options: RunOptions) -> RunReport {
    let _quiet = panic_capture::QuietPanics::enter();
    let swarm = &config.swarm;
    let total_ms = config.fault_phase_ms + config.liveness_timeout_ms + DRAIN_MS + 10_000;
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(config.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECONDS))
        .simulation_duration(Duration::from_millis(total_ms))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(swarm.min_latency_ms))
        .max_message_latency(Duration::from_millis(swarm.max_latency_ms))
        .tcp_capacity(8192)
        .enable_random_order();
    builder.fs().block_size(swarm.torn_write_block_bytes);
    let mut sim = builder.build();

    let run_config = Rc::new(config.clone());
    let observers = Rc::new(match config.shard_map() {
        Some(map) => Observers::sharded(map),
        None => Observers::single_group(config.nodes as usize),
    });
    let sharded = observers.is_sharded();
    let workload = Rc::new(WorkloadShared::default());
    let hosts = config.nodes + config.spares;
    let clocks: Vec<SimClock> = (0..hosts).map(|_| SimClock::new(EPOCH_SECONDS * 1000)).collect();
    // The same clocks (shared state), kept to judge lease reads after the run.
    let report_clocks = clocks.clone();
    let disks: Vec<DiskFaults> = (0..hosts).map(|_| DiskFaults::default()).collect();
    let node_exits = Rc::new(std::cell::Cell::new(0));
    for node in 1..=hosts {
        let context = Rc::new(NodeContext {
            node,
            run: run_config.clone(),
            clock: clocks[(node - 1) as usize].clone(),
            disk: disks[(node - 1) as usize].clone(),
            observers: observers.clone(),
            incarnation: std::cell::Cell::new(0),
            exits: node_exits.clone(),
        });
        sim.host(format!("n{node}"), move || node_main(context.clone()));
    }
    // Every client and the operator run in one host, each as its own task: turmoil steps
    // every host's runtime at every tick, so a host per client cost a runtime's worth of work
    // per client per simulated millisecond, for nothing the clients need (partitions cut
    // links between nodes; clients reach every node).
    let setups: Vec<ClientSetup> = (1..=config.clients)
        .map(|client| ClientSetup {
            index: client,
            nodes: hosts,
            keys: config.keys,
            swarm: swarm.clone(),
            ops_limit: config.ops_per_client,
            seed: config.seed,
            map: config.shard_map(),
        })
        .collect();
    let admin = Rc::new(AdminShared::default());
    let (client_workload, client_admin) = (workload.clone(), admin.clone());
    let voters = config.nodes;
    let watch = Rc::new(WatchShared::default());
    let watch_prefix = watch_prefix(config.seed);
    let watcher = WatcherSetup { hosts, prefix: watch_prefix.clone(), seed: config.seed };
    let client_watch = watch.clone();
    sim.client(crate::nemesis::CLIENTS_HOST, async move {
        // The watcher follows the run to its end (see below). Sharded nodes serve no watches
        // (as in production): a sharded world has no watcher.
        if !sharded {
            drop(tokio::task::spawn_local(run_watcher(watcher, client_watch)));
        }
        let mut tasks: Vec<_> = setups
            .into_iter()
            .map(|setup| tokio::task::spawn_local(run_client(setup, client_workload.clone())))
            .collect();
        tasks.push(tokio::task::spawn_local(run_admin(hosts, voters, client_admin)));
        for task in tasks {
            task.await.map_err(|error| format!("a client task failed: {error}"))??;
        }
        // The host stays up for the watcher, which the run loop waits for while draining;
        // the run ends when that loop does.
        std::future::pending::<()>().await;
        Ok(())
    });
    let levers = NemesisLevers {
        clocks,
        disks,
        admin: admin.clone(),
        workload: workload.clone(),
        node_exits,
    };
    let mut nemesis = Nemesis::new(
        config.schedule.clone(),
        hosts,
        Duration::from_millis(swarm.max_latency_ms),
        levers,
    );

    for timed in &config.schedule {
        if let crate::schedule::Fault::DamageAtRest { node, .. } = timed.fault {
            for (_, observer) in observers.iter() {
                observer.borrow_mut().mark_damage_victim(crate::node_host::node_id(node));
            }
        }
    }
    let mut phase = Phase::Faults;
    let mut steps = 0u64;
    let mut failure: Option<(FailureKind, String)> = None;
    loop {
        let now_ms = sim.elapsed().as_millis() as u64;
        match phase {
            Phase::Faults => {
                nemesis.step(now_ms, &mut sim, &observers);
                if now_ms >= config.fault_phase_ms {
                    nemesis.heal_all(now_ms, &mut sim);
                    workload.liveness_from_us.set(Some(now_ms * 1000));
                    phase = Phase::Liveness { since_ms: now_ms };
                }
            }
            Phase::Liveness { since_ms } => {
                let progressed = workload.completed_since_liveness.get() >= config.liveness_ops;
                if progressed && observers.every_group_led() {
                    workload.stop.set(true);
                    admin.stop.set(true);
                    let targets = observers.commit_targets();
                    phase = Phase::Converging { since_ms: now_ms, targets };
                } else if now_ms - since_ms > config.liveness_timeout_ms {
                    failure = Some((
                        FailureKind::Liveness,
                        format!(
                            "after healing at {:.3} s: {} new operations completed in {} ms (needed {}), leader: {:?}\n    {}",
                            since_ms as f64 / 1000.0,
                            workload.completed_since_liveness.get(),
                            config.liveness_timeout_ms,
                            config.liveness_ops,
                            observers.meta().borrow().current_leader(),
                            observers.node_summaries().join("\n    ")
                        ),
                    ));
                    break;
                }
            }
            Phase::Converging { since_ms, ref targets } => {
                let behind = observers.members_behind(targets);
                if behind.is_empty() {
                    let observer = observers.meta().borrow();
                    let watch_target = observer.changes.keys().next_back().copied().unwrap_or(0);
                    let watch_goal = match sharded {
                        false => last_change_position(&observer.changes, &watch_prefix),
                        true => None,
                    };
                    phase = Phase::Draining { since_ms: now_ms, watch_target, watch_goal };
                } else if now_ms - since_ms > config.liveness_timeout_ms {
                    let target = targets.get(&ShardId::META).copied().unwrap_or(0);
                    let reached = if sharded {
                        "each group's leader reached its commit".to_string()
                    } else {
                        format!("the leader reached commit {target}")
                    };
                    let lagging = behind;
                    failure = Some((
                        FailureKind::Liveness,
                        format!(
                            "the cluster did not converge: {} ms after {reached}, {} still \
                             behind\n    {}",
                            config.liveness_timeout_ms,
                            lagging.join(", "),
                            observers.node_summaries().join("\n    ")
                        ),
                    ));
                    break;
                }
            }
            Phase::Draining { since_ms, watch_goal, .. } => {
                let watcher_caught_up = watch_goal
                    .is_none_or(|goal| watch.last_position().is_some_and(|at| at >= goal));
                let clients_done = workload.clients_done.get() == config.clients;
                if (clients_done && watcher_caught_up) || now_ms - since_ms > DRAIN_MS {
                    break;
                }
            }
        }
        let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| sim.step()));
        steps += 1;
        match stepped {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                let detail = panic_capture::take().unwrap_or_else(|| error.to_string());
                failure = Some((FailureKind::Panic, detail));
                break;
            }
            Err(_) => {
                let detail = panic_capture::take().unwrap_or_else(|| "panic".into());
                failure = Some((FailureKind::Panic, detail));
                break;
            }
        }
        if let Some(violation) = observers.first_violation() {
            failure = Some((FailureKind::Invariant, violation));
            break;
        }
    }
    let sim_ms = sim.elapsed().as_millis() as u64;
    // The world holds the engines; drop it before reading the shared state one last time.
    drop(sim);

    let mut operations: Vec<Operation> = workload.operations.borrow().clone();
    operations.extend(crate::workload::expiry_operations(
        &workload.ttl_puts.borrow(),
        &observers.expiries(),
    ));
    let operations_ok = operations.iter().filter(|op| op.status == Status::Ok).count();
    let operations_unknown = operations.iter().filter(|op| op.status == Status::Info).count();
    let mut verdict = String::from("not checked");
    let mut excused_lease_reads = BTreeSet::new();
    let history = History::new(operations.clone());
    let mut failure_at_ms = failure.as_ref().map(|_| sim_ms);
    let mut outcome = match failure {
        Some((kind, detail)) => Outcome::Fail { kind, detail },
        None => Outcome::Pass,
    };
    if !outcome.is_failure()
        && let Some(violation) =
            crate::read_check::check_reads(&workload.reads.borrow(), &operations)
    {
        outcome = Outcome::Fail { kind: FailureKind::Invariant, detail: violation };
    }
    if !outcome.is_failure()
        && let Some(violation) = observers.iter().find_map(|(_, observer)| {
            lease_overlap_not_excused(config, &observer.borrow().lease_overlaps, &report_clocks)
        })
    {
        outcome = Outcome::Fail { kind: FailureKind::Invariant, detail: violation };
    }
    let reads = workload.reads.borrow();
    let mut read_summary = ReadSummary {
        range_reads: workload.range_reads.get(),
        observations: reads.len(),
        stale_observations: reads.iter().filter(|read| read.stale).count(),
        judged_by_state: 0,
    };
    // Store revisions are per group: each group's reads against that group's changes.
    for (shard, observer) in observers.iter() {
        if outcome.is_failure() {
            break;
        }
        let group_reads = reads.iter().filter(|read| observers.shard_of_key(&read.key) == shard);
        let (violation, judged) =
            crate::read_check::check_reads_against_changes(group_reads, &observer.borrow().changes);
        read_summary.judged_by_state += judged;
        if let Some(violation) = violation {
            outcome = Outcome::Fail { kind: FailureKind::Invariant, detail: violation };
        }
    }
    drop(reads);
    // The watch is judged only on a run that reached the end of its drain; `target` only
    // once the cluster had converged.
    let mut watch_summary = WatchSummary::default();
    if !outcome.is_failure() {
        let target = match phase {
            Phase::Draining { watch_target, .. } if !sharded => Some(watch_target),
            _ => None,
        };
        let records = watch.records.borrow();
        let changes = &observers.meta().borrow().changes;
        match check_watch(&records, changes, &watch_prefix, target) {
            Ok(summary) => watch_summary = summary,
            Err(violation) => {
                outcome = Outcome::Fail {
                    kind: FailureKind::Invariant,
                    detail: format!("watch of prefix {watch_prefix:?}: {violation}"),
                };
            }
        }
    }
    match &history {
        Err(error) => {
            outcome = Outcome::Fail {
                kind: FailureKind::Invariant,
                detail: format!("malformed history: {error}"),
            };
        }
        Ok(history) if !outcome.is_failure() => {
            let report =
                conclave_checker::check(history, &check_options(options.explain_violations));
            verdict = report.verdict.as_str().to_string();
            match &report.verdict {
                Verdict::Linearizable => {}
                Verdict::Violation(violation) => {
                    // Only the lease reads of a node whose clock drifted past the bound during
                    // that very lease are excused, and only if the rest is linearizable.
                    excused_lease_reads = observers
                        .iter()
                        .flat_map(|(shard, observer)| {
                            let lease_reads: Vec<LeaseRead> = workload
                                .lease_reads
                                .borrow()
                                .iter()
                                .filter(|read| read.shard == shard)
                                .copied()
                                .collect();
                            lease_reads_served_beyond_the_drift_bound(
                                config,
                                &lease_reads,
                                &observer.borrow().lease_overlaps,
                                &report_clocks,
                            )
                        })
                        .collect();
                    let lease_only = !excused_lease_reads.is_empty()
                        && linearizable_without(&operations, &excused_lease_reads);
                    outcome = if lease_only {
                        Outcome::LeaseAnomalyUnderExcessiveDrift
                    } else {
                        let ops: Vec<String> = violation
                            .failing_ops
                            .iter()
                            .map(|index| history.ops()[*index].to_string())
                            .collect();
                        failure_at_ms = violation
                            .failing_ops
                            .iter()
                            .filter_map(|index| history.ops()[*index].ret)
                            .max()
                            .map(|ret_us| ret_us / 1000);
                        Outcome::Fail {
                            kind: FailureKind::Linearizability,
                            detail: format!(
                                "not linearizable on {:?}:\n    {}",
                                violation.keys,
                                ops.join("\n    ")
                            ),
                        }
                    };
                }
                Verdict::Unknown(unknown) => {
                    outcome = Outcome::Fail {
                        kind: FailureKind::CheckerUnknown,
                        detail: format!("checker budget exhausted on keys {:?}", unknown.keys),
                    };
                }
            }
        }
        Ok(_) => {}
    }

    let mut trace = observers.trace();
    trace.add(workload.trace.borrow().value());
    let observer = observers.meta().borrow();
    RunReport {
        seed: config.seed,
        outcome,
        failure_at_ms,
        trace_hash: trace.value(),
        operations: operations.len(),
        operations_ok,
        operations_unknown,
        faults_fired: nemesis.fired.clone(),
        sim_ms,
        steps,
        stats: observers.final_stats(),
        nemesis_log: {
            let mut log = nemesis.log.clone();
            log.extend(admin.log.borrow().iter().cloned());
            log.sort();
            log
        },
        admin: admin.stats.borrow().clone(),
        node_stops: observer.node_stops.clone(),
        history: if options.keep_history { history.ok() } else { None },
        verdict,
        excused_lease_reads: excused_lease_reads.len(),
        excused_lease_overlaps: observers
            .iter()
            .map(|(_, observer)| {
                let observer = observer.borrow();
                let overlaps = observer.lease_overlaps.values();
                overlaps
                    .filter(|overlap| lease_overlap_excused(config, overlap, &report_clocks))
                    .count()
            })
            .sum(),
        writes_refused_no_space: workload.refused_no_space.get(),
        watch_changes: watch_summary.changes_received,
        watch_resumes: watch.resumes.get(),
        watch_restarts: watch_summary.restarts_from_now,
        reads: read_summary,
    }
}

/// The watcher's prefix, drawn from the seed alone (so that the rest of the draw stays as it
/// was): every key, or the keys starting with `k1` (`k1`, `k10`, …), which leaves out changes
/// a prefix must skip.
fn watch_prefix(seed: u64) -> String {
    let everything = (seed.wrapping_mul(0xd6e8_feb8_6659_fd93) >> 63) == 0;
    if everything { String::new() } else { "k1".to_string() }
}

fn check_options(minimize: bool) -> CheckOptions {
    CheckOptions { max_steps: 20_000_000, minimize, ..CheckOptions::default() }
}

/// The lease reads whose lease rested on a clock that drifted beyond the bound the lease
/// assumes: the serving node's at some moment of that read's lease (from a lease's length, at
/// most two election timeouts, before the read was sent until it was answered), or that of
/// a newer leader's electorate while the server's lease overlapped it (see
/// `lease_overlap_excused`). A lease read outside that set has no excuse.
fn lease_reads_served_beyond_the_drift_bound(
    config: &RunConfig,
    lease_reads: &[LeaseRead],
    overlaps: &LeaseOverlaps,
    clocks: &[SimClock],
) -> BTreeSet<usize> {
    lease_reads
        .iter()
        .filter(|read| {
            let (call_ms, ret_ms) = (read.call_us / 1000, read.ret_us / 1000);
            drifted_past_the_lease_bound(config, clocks, read.node, call_ms, ret_ms)
                || overlaps.values().any(|overlap| {
                    overlap.node.0 == read.node
                        && overlap.first_ms <= ret_ms
                        && overlap.last_ms >= call_ms
                        && lease_overlap_excused(config, overlap, clocks)
                })
        })
        .map(|read| read.operation)
        .collect()
}

/// Whether `node`'s clock drifted past the lease's bound at some time of the lease that
/// covered `from_ms..=to_ms` (a lease reaches back at most two election timeouts).
fn drifted_past_the_lease_bound(
    config: &RunConfig,
    clocks: &[SimClock],
    node: u64,
    from_ms: u64,
    to_ms: u64,
) -> bool {
    let swarm = &config.swarm;
    let lease_window_ms = 2 * u64::from(swarm.election_timeout_ticks) * swarm.tick_ms;
    let bound_ppm = i64::from(swarm.lease_drift_bound_ppm);
    let Some(clock) = clocks.get((node - 1) as usize) else { return false };
    clock.max_drift_ppm_between(from_ms.saturating_sub(lease_window_ms), to_ms) > bound_ppm
}

/// Whether a lease overlap (`Observer::check_lease`) has an excuse: a clock it rested on
/// drifted past the lease's bound during that lease — the leader's own (a slow clock keeps a
/// lease too long), or that of the newer leader or one of its voters (a fast clock ends an
/// election timeout, or a voter's loyalty to the old leader, too early).
fn lease_overlap_excused(config: &RunConfig, overlap: &LeaseOverlap, clocks: &[SimClock]) -> bool {
    let (from_ms, to_ms) = (overlap.first_ms, overlap.last_ms);
    std::iter::once(overlap.node)
        .chain(overlap.newer_electorate.iter().copied())
        .any(|node| drifted_past_the_lease_bound(config, clocks, node.0, from_ms, to_ms))
}

/// The first lease overlap without an excuse (see `lease_overlap_excused`).
fn lease_overlap_not_excused(
    config: &RunConfig,
    overlaps: &LeaseOverlaps,
    clocks: &[SimClock],
) -> Option<String> {
    let overlap = overlaps
        .values()
        .filter(|overlap| !lease_overlap_excused(config, overlap, clocks))
        .min_by_key(|overlap| overlap.first_ms)?;
    Some(format!(
        "lease safety: {} held a lease of term {} at {:.3} s, after {} had been elected leader of \
         term {}",
        overlap.node,
        overlap.term,
        overlap.first_ms as f64 / 1000.0,
        overlap.newer_leader,
        overlap.newer_term
    ))
}

fn linearizable_without(operations: &[Operation], excused: &BTreeSet<usize>) -> bool {
    let rest: Vec<Operation> = operations
        .iter()
        .enumerate()
        .filter(|(index, _)| !excused.contains(index))
        .map(|(_, op)| op.clone())
        .collect();
    match History::new(rest) {
        Ok(history) => matches!(
            conclave_checker::check(&history, &check_options(false)).verdict,
            Verdict::Linearizable
        ),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use conclave_core::raft::NodeId;

    use super::*;
    use crate::schedule::DrawOptions;

    fn overlap(node: u64, electorate: &[u64], first_ms: u64) -> LeaseOverlap {
        LeaseOverlap {
            node: NodeId(node),
            term: 4,
            newer_leader: NodeId(electorate[0]),
            newer_term: 5,
            newer_electorate: electorate.iter().copied().map(NodeId).collect(),
            first_ms,
            last_ms: first_ms + 20,
        }
    }

    #[test]
    fn a_lease_overlap_is_excused_only_by_a_clock_it_rested_on_drifting_during_that_lease() {
        let config = RunConfig::draw(0, &DrawOptions::default());
        let swarm = &config.swarm;
        let bound_ppm = i64::from(swarm.lease_drift_bound_ppm);
        let lease_window_ms = 2 * u64::from(swarm.election_timeout_ticks) * swarm.tick_ms;
        let at_ms = 10 * lease_window_ms;
        let clocks: Vec<SimClock> = (0..5).map(|_| SimClock::new(0)).collect();
        // Node 3 drifts past the bound during the lease; node 5 did, long before it.
        clocks[2].set_drift(at_ms - lease_window_ms / 2, 4 * bound_ppm);
        clocks[4].set_drift(at_ms - 5 * lease_window_ms, 4 * bound_ppm);
        clocks[4].set_drift(at_ms - 4 * lease_window_ms, 0);
        let excused = |overlap: &LeaseOverlap| lease_overlap_excused(&config, overlap, &clocks);
        assert!(excused(&overlap(3, &[2, 4], at_ms)), "the leasing leader's own clock");
        assert!(excused(&overlap(1, &[3, 2], at_ms)), "the newer leader's clock");
        assert!(excused(&overlap(1, &[2, 3], at_ms)), "the clock of one of its voters");
        assert!(!excused(&overlap(1, &[2, 4], at_ms)), "nobody involved drifted");
        assert!(!excused(&overlap(1, &[2, 5], at_ms)), "node 5 drifted, but not in this lease");
    }
}
