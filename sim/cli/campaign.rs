//! A seed campaign: seeds are spread over worker processes (`conclave-sim worker`), each
//! printing one JSON line per seed; this process shows progress and sums up. Processes rather
//! than threads keep runs isolated (a crash takes one worker, not the campaign) and keep the
//! harness itself free of threads. Seed ranges let a campaign be split across machines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use tokio::io::{AsyncBufReadExt, BufReader};

/// One seed's result, as a worker reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedSummary {
    pub seed: u64,
    /// "pass", "lease-anomaly", or the failure kind.
    pub outcome: String,
    pub detail: String,
    pub trace_hash: u64,
    pub faults: Vec<String>,
    #[serde(flatten)]
    pub counters: RunCounters,
}

/// What a run (or many, summed) did, for the campaign's summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunCounters {
    pub operations: u64,
    pub sim_ms: u64,
    pub leader_terms: u64,
    pub snapshots_installed: u64,
    #[serde(default)]
    pub snapshot_chunks_sent: u64,
    #[serde(default)]
    pub snapshots_streamed: u64,
    #[serde(default)]
    pub snapshot_transfers_resumed: u64,
    pub crashes_restarts: u64,
    /// Lease reads excused (a clock their lease rested on drifted past the bound during it).
    #[serde(default)]
    pub excused_lease_reads: u64,
    /// Lease overlaps excused the same way (a leader leasing after a newer one was elected).
    #[serde(default)]
    pub excused_lease_overlaps: u64,
    /// Restarts that found their newest synced log records lost, and the entries lost.
    #[serde(default)]
    pub tails_lost: u64,
    #[serde(default)]
    pub tail_entries_lost: u64,
    /// Synced data damaged at rest, starts refused by recovery, and restarts after damage
    /// that recovered every promise.
    #[serde(default)]
    pub damaged_at_rest: u64,
    #[serde(default)]
    pub refused_starts: u64,
    #[serde(default)]
    pub damaged_restarts_intact: u64,
    /// Changes a watcher received (each checked against what the replicas made), streams it
    /// resumed, and restarts from the present (no node held its position).
    #[serde(default)]
    pub watch_changes: u64,
    #[serde(default)]
    pub watch_resumes: u64,
    #[serde(default)]
    pub watch_restarts: u64,
    /// Single-key read observations (a range read gives one per key it covered), the stale
    /// ones among them, the range reads answered, and the observations compared with the state
    /// replayed at their revision.
    #[serde(default)]
    pub read_observations: u64,
    #[serde(default)]
    pub stale_read_observations: u64,
    #[serde(default)]
    pub range_reads: u64,
    #[serde(default)]
    pub reads_judged_by_state: u64,
    pub config_changes: u64,
    pub learners_added: u64,
    pub promotions: u64,
    pub removals: u64,
    pub transfers: u64,
}

impl RunCounters {
    fn add(&mut self, other: &RunCounters) {
        self.operations += other.operations;
        self.sim_ms += other.sim_ms;
        self.leader_terms += other.leader_terms;
        self.snapshots_installed += other.snapshots_installed;
        self.snapshot_chunks_sent += other.snapshot_chunks_sent;
        self.snapshots_streamed += other.snapshots_streamed;
        self.snapshot_transfers_resumed += other.snapshot_transfers_resumed;
        self.crashes_restarts += other.crashes_restarts;
        self.excused_lease_reads += other.excused_lease_reads;
        self.excused_lease_overlaps += other.excused_lease_overlaps;
        self.tails_lost += other.tails_lost;
        self.tail_entries_lost += other.tail_entries_lost;
        self.damaged_at_rest += other.damaged_at_rest;
        self.refused_starts += other.refused_starts;
        self.damaged_restarts_intact += other.damaged_restarts_intact;
        self.watch_changes += other.watch_changes;
        self.watch_resumes += other.watch_resumes;
        self.watch_restarts += other.watch_restarts;
        self.read_observations += other.read_observations;
        self.stale_read_observations += other.stale_read_observations;
        self.range_reads += other.range_reads;
        self.reads_judged_by_state += other.reads_judged_by_state;
        self.config_changes += other.config_changes;
        self.learners_added += other.learners_added;
        self.promotions += other.promotions;
        self.removals += other.removals;
        self.transfers += other.transfers;
    }
}

pub struct CampaignOptions {
    pub first_seed: u64,
    pub end_seed: u64,
    /// This process runs shard `shard.0` of `shard.1`: the seeds whose offset from
    /// `first_seed` is `shard.0` modulo `shard.1` (strided, so every shard gets the same mix).
    pub shard: Shard,
    pub jobs: usize,
    pub worker_args: Vec<String>,
    pub stop_after_failures: Option<usize>,
}

/// One of `count` disjoint parts of a seed range.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `K/N`, with K in 0..N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (index, count) = text.split_once('/').ok_or("a shard is K/N, e.g. 3/100")?;
        let index: u64 = index.trim().parse().map_err(|_| format!("bad shard index {index:?}"))?;
        let count: u64 = count.trim().parse().map_err(|_| format!("bad shard count {count:?}"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: the index must be in 0..{count}"));
        }
        Ok(Shard { index, count })
    }

    /// How many seeds of `first..end` this shard runs.
    pub fn seeds_in(&self, first: u64, end: u64) -> u64 {
        let total = end.saturating_sub(first);
        total / self.count + u64::from(total % self.count > self.index)
    }
}

pub struct CampaignResult {
    pub summaries: Vec<SeedSummary>,
    pub wall_seconds: f64,
}

pub async fn run(options: &CampaignOptions) -> Result<CampaignResult> {
    if options.end_seed <= options.first_seed {
        bail!("empty seed range {}..{}", options.first_seed, options.end_seed);
    }
    let shard = options.shard;
    let total = shard.seeds_in(options.first_seed, options.end_seed);
    if total == 0 {
        bail!(
            "shard {}/{} of {}..{} has no seeds",
            shard.index,
            shard.count,
            options.first_seed,
            options.end_seed
        );
    }
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
            .arg((jobs as u64 * shard.count).to_string())
            .arg("--offset")
            .arg((shard.index + job as u64 * shard.count).to_string())
            .args(&options.worker_args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        children.push((child, BufReader::new(stdout).lines()));
    }
    let mut summaries = Vec::new();
    let mut failures = 0usize;
    // The bar draws only on a terminal; a campaign logging to a file (a Job, CI, nohup) gets a
    // plain line this often instead.
    let plain_progress = !std::io::stderr().is_terminal();
    let mut last_plain_line = Instant::now();
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
                    let line = format!(
                        "seed {} FAILED ({}): {}",
                        summary.seed, summary.outcome, summary.detail
                    );
                    // A hidden bar (not a terminal) prints nothing, not even this.
                    if plain_progress {
                        eprintln!("{line}");
                    } else {
                        progress.println(line);
                    }
                }
                progress.inc(1);
                progress.set_message(format!("{failures} failed"));
                summaries.push(summary);
                if plain_progress && last_plain_line.elapsed() >= PLAIN_PROGRESS_EVERY {
                    last_plain_line = Instant::now();
                    eprintln!(
                        "{}",
                        plain_progress_line(summaries.len() as u64, total, failures, started)
                    );
                }
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

/// What a campaign (or a shard of one) found, small enough to keep and to merge: the sums,
/// the coverage per fault family, and every failing seed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CampaignTotals {
    /// The seed range the campaign was drawn from and the shards it covers.
    pub first_seed: u64,
    pub end_seed: u64,
    pub shard_count: u64,
    pub shards: BTreeSet<u64>,
    /// The draw options (`--fault-ms`, `--profile`, `--planted-bug`), as worker arguments.
    pub draw: Vec<String>,
    pub seeds_run: u64,
    pub wall_seconds: f64,
    #[serde(flatten)]
    pub counters: RunCounters,
    /// Seeds in which each fault family fired.
    pub fault_families: BTreeMap<String, u64>,
    pub lease_anomalies: u64,
    pub failures: Vec<SeedSummary>,
}

impl CampaignTotals {
    pub fn new(options: &CampaignOptions, result: &CampaignResult) -> CampaignTotals {
        let mut totals = CampaignTotals {
            first_seed: options.first_seed,
            end_seed: options.end_seed,
            shard_count: options.shard.count,
            shards: BTreeSet::from([options.shard.index]),
            draw: options.worker_args.clone(),
            wall_seconds: result.wall_seconds,
            ..CampaignTotals::default()
        };
        for summary in &result.summaries {
            totals.seeds_run += 1;
            totals.counters.add(&summary.counters);
            for family in &summary.faults {
                *totals.fault_families.entry(family.clone()).or_default() += 1;
            }
            match summary.outcome.as_str() {
                "pass" => {}
                "lease-anomaly" => totals.lease_anomalies += 1,
                _ => totals.failures.push(summary.clone()),
            }
        }
        totals
    }

    /// Adds another shard of the same campaign. Refuses shards of another campaign (range,
    /// shard count or draw options differ) and a shard given twice.
    pub fn merge(&mut self, other: CampaignTotals) -> Result<()> {
        if (self.first_seed, self.end_seed, self.shard_count, &self.draw)
            != (other.first_seed, other.end_seed, other.shard_count, &other.draw)
        {
            bail!(
                "shards of different campaigns: {}..{} in {} shards ({:?}) and {}..{} in {} shards ({:?})",
                self.first_seed,
                self.end_seed,
                self.shard_count,
                self.draw,
                other.first_seed,
                other.end_seed,
                other.shard_count,
                other.draw
            );
        }
        if let Some(twice) = self.shards.intersection(&other.shards).next() {
            bail!("shard {twice}/{} is given twice", self.shard_count);
        }
        self.shards.extend(other.shards.iter().copied());
        self.seeds_run += other.seeds_run;
        // Shards run side by side on different machines: the campaign took the longest one.
        self.wall_seconds = self.wall_seconds.max(other.wall_seconds);
        self.counters.add(&other.counters);
        for (family, seeds) in other.fault_families {
            *self.fault_families.entry(family).or_default() += seeds;
        }
        self.lease_anomalies += other.lease_anomalies;
        self.failures.extend(other.failures);
        self.failures.sort_by_key(|failure| failure.seed);
        Ok(())
    }

    /// Shards of the campaign that no merged summary covers.
    pub fn missing_shards(&self) -> Vec<u64> {
        (0..self.shard_count).filter(|shard| !self.shards.contains(shard)).collect()
    }
}

pub fn print_summary(totals: &CampaignTotals, replay_hint: &dyn Fn(u64) -> String) {
    let seeds = totals.seeds_run as f64;
    let sim_seconds = totals.counters.sim_ms as f64 / 1000.0;
    let kinds: BTreeSet<&str> = totals.failures.iter().map(|s| s.outcome.as_str()).collect();
    if totals.shard_count > 1 {
        println!(
            "campaign:             seeds {}..{}, shards {} of {}",
            totals.first_seed,
            totals.end_seed,
            totals.shards.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            totals.shard_count
        );
    }
    println!("seeds run:            {}", totals.seeds_run);
    println!(
        "wall time:            {:.1} s ({:.1} seeds/s)",
        totals.wall_seconds,
        seeds / totals.wall_seconds.max(1e-9)
    );
    println!(
        "simulated time:       {:.0} s ({:.1} simulated s per wall s)",
        sim_seconds,
        sim_seconds / totals.wall_seconds.max(1e-9)
    );
    println!("operations checked:   {}", totals.counters.operations);
    println!("leader terms:         {}", totals.counters.leader_terms);
    println!("snapshots installed:  {}", totals.counters.snapshots_installed);
    println!(
        "snapshot streaming:   {} snapshots delivered in {} chunks, {} transfers resumed after a lost connection or gap",
        totals.counters.snapshots_streamed,
        totals.counters.snapshot_chunks_sent,
        totals.counters.snapshot_transfers_resumed
    );
    println!(
        "lost synced tails:    {} restarts lost their newest synced records ({} entries), caught up by their leaders",
        totals.counters.tails_lost, totals.counters.tail_entries_lost
    );
    println!(
        "damage at rest:       {} times synced data was damaged on a stopped node; {} starts refused by recovery, {} restarts after damage kept every promise",
        totals.counters.damaged_at_rest,
        totals.counters.refused_starts,
        totals.counters.damaged_restarts_intact
    );
    println!(
        "watches:              {} changes received and checked, {} streams resumed, {} restarts from the present",
        totals.counters.watch_changes,
        totals.counters.watch_resumes,
        totals.counters.watch_restarts
    );
    println!(
        "reads:                {} range reads answered; {} single-key observations ({} stale), {} of them compared with the state replayed at their revision",
        totals.counters.range_reads,
        totals.counters.read_observations,
        totals.counters.stale_read_observations,
        totals.counters.reads_judged_by_state
    );
    println!(
        "membership:           {} configurations committed ({} learners added, {} promoted, {} removed), {} leadership transfers",
        totals.counters.config_changes,
        totals.counters.learners_added,
        totals.counters.promotions,
        totals.counters.removals,
        totals.counters.transfers
    );
    let families: Vec<String> =
        totals.fault_families.iter().map(|(family, seeds)| format!("{family} {seeds}")).collect();
    println!("fault kinds (seeds):  {}", families.join(", "));
    println!(
        "excused lease reads:  {} in {} seeds (stale reads whose lease rested on a clock that drifted past the lease's bound during it: the server's, or the newer leader's or one of its voters'; every other read is checked)",
        totals.counters.excused_lease_reads, totals.lease_anomalies
    );
    println!(
        "excused lease overlaps: {} (a leader leasing after a newer one was elected, excused the same way; every other overlap fails its seed)",
        totals.counters.excused_lease_overlaps
    );
    match kinds.is_empty() {
        true => println!("failures:             0"),
        false => {
            let kinds: Vec<&str> = kinds.into_iter().collect();
            println!("failures:             {} ({})", totals.failures.len(), kinds.join(", "));
        }
    }
    for failure in totals.failures.iter().take(20) {
        println!("  seed {} ({}): {}", failure.seed, failure.outcome, failure.detail);
        println!("    replay: {}", replay_hint(failure.seed));
    }
}

/// How often a campaign that is not on a terminal prints a progress line.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(60);

fn plain_progress_line(done: u64, total: u64, failures: usize, started: Instant) -> String {
    let elapsed_s = started.elapsed().as_secs_f64();
    let per_s = done as f64 / elapsed_s.max(1e-9);
    let eta_s = (total - done) as f64 / per_s.max(1e-9);
    format!(
        "progress: {done}/{total} seeds, {failures} failed, {per_s:.1} seeds/s, {:.0} s elapsed, about {:.0} s to go",
        elapsed_s, eta_s
    )
}
