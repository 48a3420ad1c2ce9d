//! A failing run shrinks to a schedule a person can read: here a planted stale-read bug found
//! among two dozen faults must come down to a handful of steps, still failing the same way,
//! and the result must replay to the same failure.

use conclave_sim::shrink::shrink;
use conclave_sim::{
    DrawOptions, DrawProfile, FailureKind, Outcome, PlantedBug, RunConfig, RunOptions, run,
};

#[test]
fn a_stale_read_bug_shrinks_to_a_handful_of_steps() {
    let options = DrawOptions {
        fault_phase_ms: 10_000,
        planted_bug: Some(PlantedBug::StaleLeaderRead),
        profile: DrawProfile::LeaderChurn,
    };
    // The first seed of this profile that exposes the bug.
    let (config, kind) = (0..150)
        .map(|seed| RunConfig::draw(seed, &options))
        .find_map(|config| match run(&config, RunOptions::default()).outcome {
            Outcome::Fail { kind: kind @ FailureKind::Linearizability, .. } => Some((config, kind)),
            _ => None,
        })
        .expect("the planted bug shows within 150 seeds");
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
