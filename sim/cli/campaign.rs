//! A seed campaign: seeds are spread over worker processes (`conclave-sim worker`), each
//! printing one JSON line per seed; this process shows progress and sums up. Processes rather
//! than threads keep runs isolated (a crash takes one worker, not the campaign) and keep the
//! harness itself free of threads. Seed ranges let a campaign be split across machines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

/// One seed's result, as a worker reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedSummary {
    pub seed: u64,
    /// "pass", "lease-anomaly", or the failure kind.
    pub outcome: String,
    pub detail: String,
    pub trace_hash: u64,
    pub operations: u64,
    pub sim_ms: u64,
    pub faults: Vec<String>,
    pub leader_terms: u64,
    pub snapshots_installed: u64,
    #[serde(default)]
    pub snapshot_chunks_sent: u64,
    #[serde(default)]
    pub snapshots_streamed: u64,
    #[serde(default)]
    pub snapshot_transfers_resumed: u64,
    pub crashes_restarts: u64,
    /// Restarts that found their newest synced log records lost, and the entries lost.
    #[serde(default)]
    pub tails_lost: u64,
    #[serde(default)]
    pub tail_entries_lost: u64,
    pub config_changes: u64,
    pub learners_added: u64,
    pub promotions: u64,
    pub removals: u64,
    pub transfers: u64,
}

pub struct CampaignOptions {
    pub first_seed: u64,
    pub end_seed: u64,
    pub jobs: usize,
    pub worker_args: Vec<String>,
    pub stop_after_failures: Option<usize>,
}

pub struct CampaignResult {
    pub summaries: Vec<SeedSummary>,
    pub wall_seconds: f64,
}

pub async fn run(options: &CampaignOptions) -> Result<CampaignResult> {
    if options.end_seed <= options.first_seed {
        bail!("empty seed range {}..{}", options.first_seed, options.end_seed);
    }
    let total = options.end_seed - options.first_seed;
    let jobs = options.jobs.clamp(1, 64).min(total as usize);
    let executable = std::env::current_exe().context("locating conclave-sim")?;
    let started = Instant::now();
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut children = Vec::new();
    for job in 0..jobs {
        let mut command = tokio::process::Command::new(&executable);
        command
            .arg("worker")
            .arg("--seeds")
            .arg(format!("{}..{}", options.first_seed, options.end_seed))
            .arg("--stride")
            .arg(jobs.to_string())
            .arg("--offset")
            .arg(job.to_string())
            .args(&options.worker_args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        children.push((child, BufReader::new(stdout).lines()));
    }
    let mut summaries = Vec::new();
    let mut failures = 0usize;
    let mut readers: Vec<_> = children.iter_mut().map(|(_, lines)| lines).collect();
    let mut open = readers.len();
    while open > 0 {
        let mut next = Vec::new();
        for reader in readers.iter_mut() {
            next.push(Box::pin(reader.next_line()));
        }
        // Wait for whichever worker speaks first.
        let (line, index, _) = futures::future::select_all(next).await;
        match line.context("reading a worker")? {
            Some(line) => {
                let summary: SeedSummary = serde_json::from_str(&line)
                    .with_context(|| format!("a worker printed {line:?}"))?;
                if summary.outcome != "pass" && summary.outcome != "lease-anomaly" {
                    failures += 1;
                    progress.println(format!(
                        "seed {} FAILED ({}): {}",
                        summary.seed, summary.outcome, summary.detail
                    ));
                }
                progress.inc(1);
                progress.set_message(format!("{failures} failed"));
                summaries.push(summary);
                if options.stop_after_failures.is_some_and(|limit| failures >= limit) {
                    break;
                }
            }
            None => {
                readers.remove(index);
                open -= 1;
            }
        }
    }
    progress.finish_and_clear();
    drop(readers);
    for (mut child, _) in children {
        let _ = child.kill().await;
    }
    summaries.sort_by_key(|s| s.seed);
    Ok(CampaignResult { summaries, wall_seconds: started.elapsed().as_secs_f64() })
}

pub fn print_summary(result: &CampaignResult, replay_hint: &dyn Fn(u64) -> String) {
    let summaries = &result.summaries;
    let seeds = summaries.len() as f64;
    let sim_seconds: f64 = summaries.iter().map(|s| s.sim_ms as f64 / 1000.0).sum();
    let operations: u64 = summaries.iter().map(|s| s.operations).sum();
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    for summary in summaries {
        for fault in &summary.faults {
            *faults.entry(fault.as_str()).or_default() += 1;
        }
    }
    let failures: Vec<&SeedSummary> =
        summaries.iter().filter(|s| s.outcome != "pass" && s.outcome != "lease-anomaly").collect();
    let anomalies = summaries.iter().filter(|s| s.outcome == "lease-anomaly").count();
    let kinds: BTreeSet<&str> = failures.iter().map(|s| s.outcome.as_str()).collect();
    println!("seeds run:            {}", summaries.len());
    println!(
        "wall time:            {:.1} s ({:.1} seeds/s)",
        result.wall_seconds,
        seeds / result.wall_seconds.max(1e-9)
    );
    println!(
        "simulated time:       {:.0} s ({:.1} simulated s per wall s)",
        sim_seconds,
        sim_seconds / result.wall_seconds.max(1e-9)
    );
    println!("operations checked:   {operations}");
    println!("leader terms:         {}", summaries.iter().map(|s| s.leader_terms).sum::<u64>());
    println!(
        "snapshots installed:  {}",
        summaries.iter().map(|s| s.snapshots_installed).sum::<u64>()
    );
    let sum = |field: fn(&SeedSummary) -> u64| summaries.iter().map(field).sum::<u64>();
    println!(
        "snapshot streaming:   {} snapshots delivered in {} chunks, {} transfers resumed after a lost connection or gap",
        sum(|s| s.snapshots_streamed),
        sum(|s| s.snapshot_chunks_sent),
        sum(|s| s.snapshot_transfers_resumed)
    );
    println!(
        "lost synced tails:    {} restarts lost their newest synced records ({} entries), caught up by their leaders",
        sum(|s| s.tails_lost),
        sum(|s| s.tail_entries_lost)
    );
    println!(
        "membership:           {} configurations committed ({} learners added, {} promoted, {} removed), {} leadership transfers",
        sum(|s| s.config_changes),
        sum(|s| s.learners_added),
        sum(|s| s.promotions),
        sum(|s| s.removals),
        sum(|s| s.transfers)
    );
    println!("fault kinds (seeds):  {faults:?}");
    if anomalies > 0 {
        println!(
            "lease reads stale under clock drift beyond the configured bound (expected): {anomalies} seeds"
        );
    }
    println!("failures:             {} {:?}", failures.len(), kinds);
    for failure in failures.iter().take(20) {
        println!("  seed {} ({}): {}", failure.seed, failure.outcome, failure.detail);
        println!("    replay: {}", replay_hint(failure.seed));
    }
}
