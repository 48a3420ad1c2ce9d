//! `conclave-sim`: run seed campaigns, replay a seed, shrink a failing run.
//!
//! ```text
//! conclave-sim run --seeds 0..100000 --jobs 2          # a campaign, with a progress bar
//! conclave-sim run --seeds 0..1000000 --shard 7/100 --summary-out shard-7.json
//! conclave-sim merge shard-*.json                       # the campaign's summary, from its shards
//! conclave-sim replay --seed 1234 --out sim-failures/1234
//! conclave-sim shrink --seed 1234 --out sim-failures/1234-min
//! conclave-sim replay --schedule sim-failures/1234-min/config.json
//! ```

mod artifacts;
mod campaign;

use std::ops::Range;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use conclave_sim::run::FailureKind;
use conclave_sim::{
    DrawOptions, DrawProfile, Outcome, PlantedBug, RunConfig, RunOptions, RunReport, run, shrink,
};

use crate::campaign::{CampaignOptions, CampaignTotals, RunCounters, SeedSummary, Shard};

#[derive(Parser)]
#[command(
    name = "conclave-sim",
    version,
    about = "Deterministic simulation of Conclave clusters: seed campaigns, replay, shrinking",
    long_about = "Every seed draws a cluster (3 or 5 nodes), a workload and a fault schedule \
(partitions, crashes, clock skew, latency, disk faults), runs the real engine on turmoil, checks \
Raft's invariants after every step, requires liveness once faults heal, and checks the client \
history for linearizability. The same seed always replays the same run."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DrawArgs {
    /// Simulated milliseconds of faults per run (liveness is checked after).
    #[arg(long, default_value_t = 20_000)]
    fault_ms: u64,
    /// Switch on a deliberately planted bug. Raft: double-vote, commit-old-term-by-counting,
    /// ack-before-sync, vote-before-sync, stale-leader-read, keep-conflicting-suffix,
    /// ignore-shortened-log; storage: truncate-at-damage, hard-state-file-only; watches: watch-resume-repeats; reads: stale-range-loses-more; state machine: apply-by-local-clock; leases: lease-survives-timeout-now, restarted-node-votes-at-once.
    #[arg(long, value_parser = parse_bug)]
    planted_bug: Option<PlantedBug>,
    /// What kind of world to draw: standard (all fault families, calm and stormy seeds),
    /// leader-churn (the leader is crashed or isolated every few hundred ms) or sharded (4–7
    /// nodes hosting 2–16 Raft groups in one engine over one shared log each).
    #[arg(long, value_parser = parse_profile, default_value = "standard")]
    profile: DrawProfile,
}

fn parse_profile(name: &str) -> Result<DrawProfile, String> {
    DrawProfile::from_name(name)
        .ok_or_else(|| format!("unknown profile {name:?}; standard, leader-churn or sharded"))
}

impl DrawArgs {
    fn options(&self) -> DrawOptions {
        DrawOptions {
            fault_phase_ms: self.fault_ms,
            planted_bug: self.planted_bug,
            profile: self.profile,
        }
    }

    /// The draw options back from `as_args` (as a summary records them).
    fn from_args(args: &[String]) -> Result<DrawArgs> {
        #[derive(Parser)]
        struct Draw {
            #[command(flatten)]
            draw: DrawArgs,
        }
        let words = std::iter::once("draw".to_string()).chain(args.iter().cloned());
        Ok(Draw::try_parse_from(words).context("the summary's draw options")?.draw)
    }

    fn as_args(&self) -> Vec<String> {
        let mut args = vec![
            "--fault-ms".to_string(),
            self.fault_ms.to_string(),
            "--profile".to_string(),
            self.profile.name().to_string(),
        ];
        if let Some(bug) = self.planted_bug {
            args.push("--planted-bug".into());
            args.push(bug.name().into());
        }
        args
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a campaign over a seed range, in parallel worker processes.
    Run {
        /// Seeds to run, as START..END (END excluded).
        #[arg(long, value_parser = parse_range, default_value = "0..1000")]
        seeds: Range<u64>,
        /// Worker processes.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Stop once this many seeds failed.
        #[arg(long)]
        stop_after: Option<usize>,
        /// Run only shard K of N (K in 0..N) of the range: every N-th seed, starting at the
        /// K-th. Shards of one campaign run anywhere (machines, a Kubernetes Indexed Job, a CI
        /// matrix) and `merge` sums their summaries.
        #[arg(long, value_parser = Shard::parse)]
        shard: Option<Shard>,
        /// Also write the summary (sums, fault coverage, failing seeds) as JSON to this file,
        /// for `merge`.
        #[arg(long)]
        summary_out: Option<PathBuf>,
        #[command(flatten)]
        draw: DrawArgs,
    },
    /// Sum the summaries (`run --summary-out`) of the shards of one campaign; says which
    /// shards are missing. Exit 0 when every shard is there and no seed failed.
    Merge {
        /// The shards' summary files.
        #[arg(required = true)]
        summaries: Vec<PathBuf>,
        /// Write the merged summary as JSON to this file too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one seed (or a saved config) and write its config, schedule, report, history and
    /// HTML timeline to a folder.
    Replay {
        #[arg(long, required_unless_present = "schedule")]
        seed: Option<u64>,
        /// A config saved by a failing run or by `shrink` (config.json); overrides --seed.
        #[arg(long)]
        schedule: Option<PathBuf>,
        /// Where to write the artifacts (default: sim-failures/seed-N).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        draw: DrawArgs,
    },
    /// Shrink a failing seed (or config) to a small schedule that still fails the same way.
    Shrink {
        #[arg(long, required_unless_present = "schedule")]
        seed: Option<u64>,
        #[arg(long)]
        schedule: Option<PathBuf>,
        /// At most this many simulation runs.
        #[arg(long, default_value_t = 300)]
        max_runs: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        draw: DrawArgs,
    },
    /// (internal) Run seeds and print one JSON summary per line; used by `run`.
    #[command(hide = true)]
    Worker {
        #[arg(long, value_parser = parse_range)]
        seeds: Range<u64>,
        #[arg(long, default_value_t = 1)]
        stride: u64,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[command(flatten)]
        draw: DrawArgs,
    },
}

fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn parse_bug(name: &str) -> Result<PlantedBug, String> {
    PlantedBug::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
        format!("unknown bug {name:?}; one of: {}", names.join(", "))
    })
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text.split_once("..").ok_or("a seed range is START..END, e.g. 0..1000")?;
    let start: u64 = start.trim().parse().map_err(|_| format!("bad range start {start:?}"))?;
    let end: u64 = end.trim().parse().map_err(|_| format!("bad range end {end:?}"))?;
    if end <= start {
        return Err(format!("empty range {start}..{end}"));
    }
    Ok(start..end)
}

fn replay_command(seed: u64, draw: &DrawArgs) -> String {
    let mut command = format!("cargo run --release -p conclave-sim -- replay --seed {seed}");
    if draw.fault_ms != 20_000 {
        command.push_str(&format!(" --fault-ms {}", draw.fault_ms));
    }
    if let Some(bug) = draw.planted_bug {
        command.push_str(&format!(" --planted-bug {}", bug.name()));
    }
    if draw.profile != DrawProfile::Standard {
        command.push_str(&format!(" --profile {}", draw.profile.name()));
    }
    command.push_str(&format!(" --out sim-failures/seed-{seed}"));
    command
}

fn load_config(
    seed: Option<u64>,
    schedule: &Option<PathBuf>,
    draw: &DrawArgs,
) -> Result<RunConfig> {
    match schedule {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a run config", path.display()))
        }
        None => {
            let seed = seed.context("give --seed or --schedule")?;
            Ok(RunConfig::draw(seed, &draw.options()))
        }
    }
}

pub fn summarize(report: &RunReport) -> SeedSummary {
    let (outcome, detail) = match &report.outcome {
        Outcome::Pass => ("pass".to_string(), String::new()),
        Outcome::LeaseAnomalyUnderExcessiveDrift => ("lease-anomaly".to_string(), String::new()),
        Outcome::Fail { kind, detail } => (
            kind.to_string(),
            detail.lines().next().unwrap_or_default().chars().take(300).collect(),
        ),
    };
    SeedSummary {
        seed: report.seed,
        outcome,
        detail,
        trace_hash: report.trace_hash,
        faults: report
            .faults_fired
            .iter()
            .map(|f| conclave_sim::nemesis::family_name(*f).to_string())
            .collect(),
        counters: RunCounters {
            operations: report.operations as u64,
            sim_ms: report.sim_ms,
            leader_terms: report.stats.leader_terms,
            snapshots_installed: report.stats.snapshots_installed,
            snapshot_chunks_sent: report.stats.snapshot_chunks_sent,
            snapshots_streamed: report.stats.snapshots_streamed,
            snapshot_transfers_resumed: report.stats.snapshot_transfers_resumed,
            crashes_restarts: report.stats.restarts_checked,
            excused_lease_reads: report.excused_lease_reads as u64,
            excused_lease_overlaps: report.excused_lease_overlaps as u64,
            tails_lost: report.stats.tails_lost,
            tail_entries_lost: report.stats.tail_entries_lost,
            damaged_at_rest: report.stats.damaged_at_rest,
            refused_starts: report.stats.refused_starts,
            damaged_restarts_intact: report.stats.damaged_restarts_intact,
            watch_changes: report.watch_changes as u64,
            watch_resumes: report.watch_resumes,
            watch_restarts: report.watch_restarts as u64,
            read_observations: report.reads.observations as u64,
            stale_read_observations: report.reads.stale_observations as u64,
            range_reads: report.reads.range_reads,
            reads_judged_by_state: report.reads.judged_by_state as u64,
            config_changes: report.stats.config_changes,
            learners_added: report.admin.learners_added,
            promotions: report.admin.promotions,
            removals: report.admin.removals,
            transfers: report.admin.transfers,
        },
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { seeds, jobs, stop_after, shard, summary_out, draw } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let options = CampaignOptions {
                first_seed: seeds.start,
                end_seed: seeds.end,
                shard: shard.unwrap_or(Shard::WHOLE),
                jobs,
                worker_args: draw.as_args(),
                stop_after_failures: stop_after,
            };
            let result = runtime.block_on(campaign::run(&options))?;
            let totals = CampaignTotals::new(&options, &result);
            campaign::print_summary(&totals, &|seed| replay_command(seed, &draw));
            if let Some(path) = summary_out {
                write_json(&path, &totals)?;
            }
            if !totals.failures.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Merge { summaries, out } => {
            let mut merged: Option<CampaignTotals> = None;
            for path in &summaries {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let shard: CampaignTotals = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a campaign summary", path.display()))?;
                match merged.as_mut() {
                    None => merged = Some(shard),
                    Some(merged) => merged
                        .merge(shard)
                        .with_context(|| format!("merging {}", path.display()))?,
                }
            }
            let merged = merged.context("no summary given")?;
            let draw = DrawArgs::from_args(&merged.draw)?;
            campaign::print_summary(&merged, &|seed| replay_command(seed, &draw));
            let missing = merged.missing_shards();
            if !missing.is_empty() {
                println!(
                    "incomplete:           {} of {} shards missing: {missing:?}",
                    missing.len(),
                    merged.shard_count
                );
            }
            if let Some(path) = out {
                write_json(&path, &merged)?;
            }
            if !merged.failures.is_empty() || !missing.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Worker { seeds, stride, offset, draw } => {
            if stride == 0 {
                bail!("--stride must be positive");
            }
            let options = draw.options();
            let mut seed = seeds.start + offset;
            while seed < seeds.end {
                let report = run(&RunConfig::draw(seed, &options), RunOptions::default());
                println!("{}", serde_json::to_string(&summarize(&report))?);
                seed += stride;
            }
            Ok(())
        }
        Command::Replay { seed, schedule, out, draw } => {
            let config = load_config(seed, &schedule, &draw)?;
            let report = run(&config, RunOptions { keep_history: true, explain_violations: true });
            let directory =
                out.unwrap_or_else(|| PathBuf::from(format!("sim-failures/seed-{}", config.seed)));
            artifacts::write(&directory, &config, &report)?;
            print!("{}", artifacts::summary(&config, &report, &directory));
            if report.outcome.is_failure() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Shrink { seed, schedule, max_runs, out, draw } => {
            let config = load_config(seed, &schedule, &draw)?;
            let first = run(&config, RunOptions::default());
            let kind: FailureKind = match &first.outcome {
                Outcome::Fail { kind, .. } => *kind,
                other => bail!(
                    "seed {} does not fail (outcome {other:?}); nothing to shrink",
                    config.seed
                ),
            };
            println!(
                "shrinking seed {} ({kind:?}, {} faults in the schedule)",
                config.seed,
                config.schedule.len()
            );
            let shrunk = shrink::shrink(&config, kind, max_runs, |step| println!("  kept: {step}"))
                .context("the failure did not reproduce")?;
            println!(
                "after {} runs, the minimal failing schedule:\n{}",
                shrunk.runs, shrunk.config
            );
            let report =
                run(&shrunk.config, RunOptions { keep_history: true, explain_violations: true });
            print!("{}", artifacts::describe(&report));
            let directory = out
                .unwrap_or_else(|| PathBuf::from(format!("sim-failures/seed-{}-min", config.seed)));
            artifacts::write(&directory, &shrunk.config, &report)?;
            println!(
                "replay it with: cargo run --release -p conclave-sim -- replay --schedule {}/config.json",
                directory.display()
            );
            Ok(())
        }
    }
}
