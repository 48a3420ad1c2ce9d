//! Shrinking a failing run to a schedule small enough to read.
//!
//! Greedy and deterministic: propose a smaller `RunConfig` (a shorter run, fewer faults, fewer
//! clients, keys or nodes), keep it if the run still fails the same way, repeat until nothing
//! smaller fails or the budget of runs is spent. The seed stays the same, so every candidate is
//! itself a replayable run; what comes out is a config that fails, saved as JSON.

use crate::run::{FailureKind, Outcome, RunOptions, RunReport, run};
use crate::schedule::RunConfig;

/// The outcome of shrinking.
pub struct Shrunk {
    pub config: RunConfig,
    pub report: RunReport,
    pub runs: usize,
}

/// Whether `report` is the same kind of failure as `kind`.
fn same_failure(report: &RunReport, kind: FailureKind) -> bool {
    matches!(&report.outcome, Outcome::Fail { kind: found, .. } if *found == kind)
}

/// Shrinks `config`, which fails with `kind`, spending at most `max_runs` simulation runs.
/// `progress` hears about each accepted step.
pub fn shrink(
    config: &RunConfig,
    kind: FailureKind,
    max_runs: usize,
    mut progress: impl FnMut(&str),
) -> Option<Shrunk> {
    let mut runs = 0usize;
    let verdict_only = RunOptions::default();
    let mut best_report = run(config, verdict_only);
    runs += 1;
    if !same_failure(&best_report, kind) {
        return None;
    }
    let mut best = config.clone();
    let mut try_candidate = |candidate: RunConfig,
                             what: String,
                             best: &mut RunConfig,
                             best_report: &mut RunReport,
                             runs: &mut usize|
     -> bool {
        if *runs >= max_runs || candidate == *best {
            return false;
        }
        *runs += 1;
        let report = run(&candidate, verdict_only);
        if same_failure(&report, kind) {
            progress(&what);
            *best = candidate;
            *best_report = report;
            true
        } else {
            false
        }
    };

    let mut changed = true;
    while changed && runs < max_runs {
        changed = false;

        // 1. A shorter run: end the fault phase soon after the failure showed, or once the
        //    last fault is over; then start the faults earlier.
        let failed_at_ms = best_report.failure_at_ms.unwrap_or(best_report.sim_ms);
        let faults_over_ms =
            best.schedule.iter().map(|f| f.at_ms + fault_duration_ms(&f.fault)).max().unwrap_or(0);
        for end_ms in [failed_at_ms + 500, faults_over_ms + 1_000] {
            if end_ms < best.fault_phase_ms {
                let mut candidate = best.clone();
                candidate.fault_phase_ms = end_ms;
                candidate.schedule.retain(|f| f.at_ms < end_ms);
                let what = format!("fault phase {} -> {end_ms} ms", best.fault_phase_ms);
                changed |= try_candidate(candidate, what, &mut best, &mut best_report, &mut runs);
            }
        }
        if let Some(first_ms) = best.schedule.first().map(|f| f.at_ms) {
            for shift_ms in [first_ms, first_ms * 3 / 4, first_ms / 2] {
                if shift_ms < 100 {
                    continue;
                }
                let mut candidate = best.clone();
                for fault in candidate.schedule.iter_mut() {
                    fault.at_ms -= shift_ms;
                }
                candidate.fault_phase_ms =
                    candidate.fault_phase_ms.saturating_sub(shift_ms).max(1_000);
                let what = format!("faults {shift_ms} ms earlier, run {} ms shorter", shift_ms);
                if try_candidate(candidate, what, &mut best, &mut best_report, &mut runs) {
                    changed = true;
                    break;
                }
            }
        }

        // 2. Drop faults: halves, then quarters, ..., then single faults (ddmin-style).
        let mut chunk = best.schedule.len().div_ceil(2).max(1);
        while chunk >= 1 && !best.schedule.is_empty() && runs < max_runs {
            let mut start = 0;
            let mut dropped_any = false;
            while start < best.schedule.len() && runs < max_runs {
                let end = (start + chunk).min(best.schedule.len());
                let mut candidate = best.clone();
                candidate.schedule.drain(start..end);
                let what = format!("dropped {} of {} faults", end - start, best.schedule.len());
                if try_candidate(candidate, what, &mut best, &mut best_report, &mut runs) {
                    dropped_any = true;
                    changed = true;
                } else {
                    start = end;
                }
            }
            if chunk == 1 && !dropped_any {
                break;
            }
            chunk = if dropped_any { chunk } else { chunk / 2 };
        }

        // 3. Fewer clients, keys and nodes.
        for clients in 1..best.clients {
            let candidate = RunConfig { clients, ..best.clone() };
            if try_candidate(
                candidate,
                format!("clients {} -> {clients}", best.clients),
                &mut best,
                &mut best_report,
                &mut runs,
            ) {
                changed = true;
                break;
            }
        }
        for keys in 1..best.keys {
            let candidate = RunConfig { keys, ..best.clone() };
            if try_candidate(
                candidate,
                format!("keys {} -> {keys}", best.keys),
                &mut best,
                &mut best_report,
                &mut runs,
            ) {
                changed = true;
                break;
            }
        }
        let uses_spares = best
            .schedule
            .iter()
            .any(|f| f.fault.family() == crate::schedule::FaultFamily::Membership);
        if best.spares > 0 && !uses_spares {
            let candidate = RunConfig { spares: 0, ..best.clone() };
            if try_candidate(
                candidate,
                "no spare nodes".to_string(),
                &mut best,
                &mut best_report,
                &mut runs,
            ) {
                changed = true;
            }
        }
        if best.nodes == 5 {
            let mut candidate = RunConfig { nodes: 3, ..best.clone() };
            candidate.schedule.retain(|f| fault_fits(&f.fault, 3));
            if try_candidate(
                candidate,
                "nodes 5 -> 3".to_string(),
                &mut best,
                &mut best_report,
                &mut runs,
            ) {
                changed = true;
            }
        }
    }
    Some(Shrunk { config: best, report: best_report, runs })
}

/// How long a fault lasts once fired (0 for instantaneous ones).
fn fault_duration_ms(fault: &crate::schedule::Fault) -> u64 {
    use crate::schedule::Fault;
    match fault {
        Fault::Partition { duration_ms, .. }
        | Fault::ClockDrift { duration_ms, .. }
        | Fault::LatencySpike { duration_ms, .. }
        | Fault::Disk { duration_ms, .. }
        | Fault::DiskFull { duration_ms, .. }
        | Fault::LeaderClockDrift { duration_ms, .. } => *duration_ms,
        Fault::SlowTransfer { hold_ms, isolate_ms, .. } => hold_ms + isolate_ms,
        Fault::BounceLeaseBacker { settle_ms, cut_ms, .. } => settle_ms + cut_ms,
        Fault::Crash { down_ms, .. }
        | Fault::CrashNewLeader { down_ms, .. }
        | Fault::CrashLosingTail { down_ms, .. }
        | Fault::DamageAtRest { down_ms, .. }
        | Fault::CrashOnEvent { down_ms, .. } => *down_ms,
        Fault::ClockJump { .. }
        | Fault::Grow { .. }
        | Fault::Shrink { .. }
        | Fault::Replace { .. }
        | Fault::TransferLeadership { .. } => 0,
    }
}

/// Whether a fault only names nodes that exist in a cluster of `nodes`.
fn fault_fits(fault: &crate::schedule::Fault, nodes: u64) -> bool {
    use crate::schedule::{Fault, PartitionKind, Target};
    let fits = |list: &[u64]| list.iter().all(|n| *n <= nodes);
    match fault {
        Fault::Partition { kind, .. } => match kind {
            PartitionKind::Split { side } => fits(side) && side.len() < nodes as usize,
            PartitionKind::IsolateLeader | PartitionKind::LeaderFromClients => true,
            PartitionKind::OneWay { from, to } => fits(from) && fits(to),
            PartitionKind::Bridge { bridge, left, right } => {
                *bridge <= nodes && fits(left) && fits(right)
            }
        },
        Fault::Crash { target: Target::Node(node), .. } => *node <= nodes,
        Fault::Crash { target: Target::Leader, .. }
        | Fault::CrashNewLeader { .. }
        | Fault::CrashOnEvent { .. }
        | Fault::BounceLeaseBacker { .. }
        | Fault::LeaderClockDrift { .. } => true,
        Fault::ClockDrift { node, .. }
        | Fault::ClockJump { node, .. }
        | Fault::Disk { node, .. }
        | Fault::CrashLosingTail { node, .. }
        | Fault::DamageAtRest { node, .. } => *node <= nodes,
        // A majority of a smaller cluster is not the same fault; a single node is.
        Fault::DiskFull { nodes: full, .. } => fits(full) && (full.len() == 1 || nodes >= 3),
        Fault::LatencySpike { .. } => true,
        Fault::Grow { node }
        | Fault::TransferLeadership { to: node }
        | Fault::SlowTransfer { to: node, .. } => *node <= nodes,
        Fault::Shrink { target: Target::Node(node) } => *node <= nodes,
        Fault::Shrink { target: Target::Leader } => true,
        Fault::Replace { old, new } => {
            *new <= nodes && !matches!(old, Target::Node(n) if *n > nodes)
        }
    }
}
