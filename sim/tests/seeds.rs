//! The default seed campaign of `cargo test`: 1,000 seeded chaos schedules of single-group
//! worlds and 100 of sharded worlds (4–7 nodes, 2–16 Raft groups in one engine per node over
//! one shared log), each with 20 simulated seconds of faults drawn from its seed, Raft's
//! invariants checked after every step in every group, liveness required after healing, the
//! client history checked for linearizability and (single group) a watcher's stream checked
//! change by change.
//!
//! - `CONCLAVE_SEEDS=100000` runs more single-group seeds, `CONCLAVE_SHARDED_SEEDS=10000`
//!   more sharded ones;
//! - `CONCLAVE_SEED=1234` runs just that seed (of both kinds);
//! - `CONCLAVE_SEED_START=5000` starts the ranges elsewhere (CI shards, other machines).
//!
//! The seeds are split over eight test functions so the test harness runs them in parallel.
//! A failure prints the seed and the one-line command that replays it.

use conclave_sim::{DrawOptions, DrawProfile, Outcome, RunConfig, RunOptions, run};

const SHARDS: u64 = 8;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// This test function's seeds of one profile: every `SHARDS`-th of the range.
fn seeds_of(shard: u64, count_variable: &str, default_count: u64) -> Vec<u64> {
    match env_u64("CONCLAVE_SEED") {
        Some(seed) => (seed % SHARDS == shard).then_some(seed).into_iter().collect(),
        None => {
            let start = env_u64("CONCLAVE_SEED_START").unwrap_or(0);
            let count = env_u64(count_variable).unwrap_or(default_count);
            (start..start + count).filter(|seed| seed % SHARDS == shard).collect()
        }
    }
}

fn run_shard(shard: u64) {
    let sharded = DrawOptions { profile: DrawProfile::Sharded, ..DrawOptions::default() };
    let seeds: Vec<(u64, DrawOptions)> = seeds_of(shard, "CONCLAVE_SEEDS", 1_000)
        .into_iter()
        .map(|seed| (seed, DrawOptions::default()))
        .chain(
            seeds_of(shard, "CONCLAVE_SHARDED_SEEDS", 100)
                .into_iter()
                .map(|seed| (seed, sharded.clone())),
        )
        .collect();
    let mut failures = Vec::new();
    let mut anomalies = 0;
    let mut excused = 0;
    let mut operations = 0;
    let mut watched_changes = 0;
    let mut sharded_seeds = 0;
    for (seed, options) in &seeds {
        let profile = match options.profile {
            DrawProfile::Standard => String::new(),
            other => format!(" --profile {}", other.name()),
        };
        sharded_seeds += u64::from(options.profile == DrawProfile::Sharded);
        let config = RunConfig::draw(*seed, options);
        let report = run(&config, RunOptions::default());
        operations += report.operations;
        watched_changes += report.watch_changes;
        excused += report.excused_lease_reads;
        match &report.outcome {
            Outcome::Pass => {}
            Outcome::LeaseAnomalyUnderExcessiveDrift => anomalies += 1,
            Outcome::Fail { kind, detail } => failures.push(format!(
                "seed {seed}{profile} failed ({kind}): {detail}\n  replay: cargo run --release -p conclave-sim -- replay --seed {seed}{profile} --out sim-failures/seed-{seed}\n  shrink: cargo run --release -p conclave-sim -- shrink --seed {seed}{profile}"
            )),
        }
    }
    println!(
        "shard {shard}: {} seeds ({sharded_seeds} of sharded worlds), {operations} operations and {watched_changes} watched changes checked, {excused} lease reads excused in {anomalies} seeds (served by a node drifting past the lease bound during that lease), {} failures",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

#[test]
fn seeds_shard_0() {
    run_shard(0);
}

#[test]
fn seeds_shard_1() {
    run_shard(1);
}

#[test]
fn seeds_shard_2() {
    run_shard(2);
}

#[test]
fn seeds_shard_3() {
    run_shard(3);
}

#[test]
fn seeds_shard_4() {
    run_shard(4);
}

#[test]
fn seeds_shard_5() {
    run_shard(5);
}

#[test]
fn seeds_shard_6() {
    run_shard(6);
}

#[test]
fn seeds_shard_7() {
    run_shard(7);
}
