//! The default seed campaign of `cargo test`: 1,000 seeded chaos schedules, each with 20
//! simulated seconds of faults drawn from its seed, Raft's invariants checked after every step,
//! liveness required after healing, the client history checked for linearizability and a
//! watcher's stream checked change by change.
//!
//! - `CONCLAVE_SEEDS=100000` runs more seeds;
//! - `CONCLAVE_SEED=1234` runs just that seed;
//! - `CONCLAVE_SEED_START=5000` starts the range elsewhere (CI shards, other machines).
//!
//! The seeds are split over eight test functions so the test harness runs them in parallel.
//! A failure prints the seed and the one-line command that replays it.

use conclave_sim::{DrawOptions, Outcome, RunConfig, RunOptions, run};

const SHARDS: u64 = 8;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

fn run_shard(shard: u64) {
    let seeds: Vec<u64> = match env_u64("CONCLAVE_SEED") {
        Some(seed) => (seed % SHARDS == shard).then_some(seed).into_iter().collect(),
        None => {
            let start = env_u64("CONCLAVE_SEED_START").unwrap_or(0);
            let count = env_u64("CONCLAVE_SEEDS").unwrap_or(1_000);
            (start..start + count).filter(|seed| seed % SHARDS == shard).collect()
        }
    };
    let mut failures = Vec::new();
    let mut anomalies = 0;
    let mut excused = 0;
    let mut operations = 0;
    let mut watched_changes = 0;
    for seed in &seeds {
        let config = RunConfig::draw(*seed, &DrawOptions::default());
        let report = run(&config, RunOptions::default());
        operations += report.operations;
        watched_changes += report.watch_changes;
        excused += report.excused_lease_reads;
        match &report.outcome {
            Outcome::Pass => {}
            Outcome::LeaseAnomalyUnderExcessiveDrift => anomalies += 1,
            Outcome::Fail { kind, detail } => failures.push(format!(
                "seed {seed} failed ({kind:?}): {detail}\n  replay: cargo run --release -p conclave-sim -- replay --seed {seed} --out sim-failures/seed-{seed}\n  shrink: cargo run --release -p conclave-sim -- shrink --seed {seed}"
            )),
        }
    }
    println!(
        "shard {shard}: {} seeds, {operations} operations and {watched_changes} watched changes checked, {excused} lease reads excused in {anomalies} seeds (served by a node drifting past the lease bound during that lease), {} failures",
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
