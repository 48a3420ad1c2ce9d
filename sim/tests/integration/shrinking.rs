//! A failing run shrinks to a schedule a person can read: here a planted stale-read bug found
//! among two dozen faults must come down to a handful of steps, still failing the same way,
//! and the result must replay to the same failure.
//!
//! The run is the README's example, seed 329 of the leader-churn profile. Which seeds expose
//! the bug moves with every change to the timing of the code under test, and not every
//! failing seed shrinks as far: the greedy shrinker stops at a schedule from which no single
//! fault can be dropped, and on some seeds that still has several.

use conclave_sim::shrink::shrink;
use conclave_sim::{
    DrawOptions, DrawProfile, FailureKind, Outcome, PlantedBug, RunConfig, RunOptions, run,
};

/// The seed of the shrink example in the README.
const README_EXAMPLE_SEED: u64 = 329;

#[test]
fn a_stale_read_bug_shrinks_to_a_handful_of_steps() {
    let options = DrawOptions {
        fault_phase_ms: 10_000,
        planted_bug: Some(PlantedBug::StaleLeaderRead),
        profile: DrawProfile::LeaderChurn,
    };
    let config = RunConfig::draw(README_EXAMPLE_SEED, &options);
    let kind = match run(&config, RunOptions::default()).outcome {
        Outcome::Fail { kind: kind @ FailureKind::Linearizability, .. } => kind,
        other => panic!(
            "seed {README_EXAMPLE_SEED} no longer exposes the planted bug ({other:?}): pick the \
             README's shrink example again"
        ),
    };
    assert!(config.schedule.len() >= 10, "{} faults to start from", config.schedule.len());
    let shrunk = shrink(&config, kind, 120, |_| {}).expect("the failure reproduces");
    println!("{}", shrunk.config);
    assert!(shrunk.config.schedule.len() <= 3, "{} faults left", shrunk.config.schedule.len());
    assert!(shrunk.config.schedule.len() < config.schedule.len());
    assert!(shrunk.config.fault_phase_ms <= config.fault_phase_ms);
    let replayed = run(&shrunk.config, RunOptions::default());
    assert!(matches!(replayed.outcome, Outcome::Fail { kind: FailureKind::Linearizability, .. }));
    assert_eq!(
        replayed.trace_hash, shrunk.report.trace_hash,
        "the shrunk schedule replays exactly"
    );
}
