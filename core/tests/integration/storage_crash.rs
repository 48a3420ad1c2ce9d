//! Acceptance property of the storage engine on the in-memory crash-simulating file system:
//! random Raft-shaped job sequences with group commits, power cuts at random file-system
//! operations (also during recovery) and torn writes. After every crash the directory opens,
//! everything reported durable is recovered exactly, and nothing unsynced was reported durable
//! (see `storage_support/crash_model.rs`). `PROPTEST_CASES` scales the number of cases.

use crate::storage_support;

use conclave_core::storage::Recovered;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use storage_support::Harness;
use storage_support::crash_model::{Coverage, Op, Workload, ops_strategy};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn crash_and_recover(h: &mut Harness, cut_recovery: Option<u8>) -> Result<Recovered, String> {
    h.crash();
    if let Some(after_ops) = cut_recovery {
        // Power fails again while recovering (e.g. in the middle of a torn-tail repair).
        h.fs.faults().power_cut_after_ops(u64::from(after_ops));
        if h.open().is_ok() {
            h.fs.faults().heal();
        }
        h.crash();
    }
    h.open().map_err(|error| format!("the directory cannot be opened after a crash: {error}"))
}

fn run(
    seed: u64,
    torn_block_bytes: Option<u64>,
    segment_bytes: u64,
    ops: &[Op],
) -> Result<Coverage, String> {
    let options = conclave_core::storage::WalOptions {
        segment_bytes,
        max_record_bytes: 2048,
        space: conclave_core::storage::space::SpaceOptions {
            ballast_bytes: 4096,
            probe_bytes: 4096,
        },
        ..Default::default()
    };
    let mut h = Harness::new(seed, torn_block_bytes, options);
    let recovered = h.open().map_err(|e| e.to_string())?;
    let mut workload = Workload::new(&recovered);
    for op in ops {
        match op {
            Op::Pump => {
                if let Ok(progress) = h.pump() {
                    workload.on_progress(progress);
                }
            }
            Op::PowerCut { after_ops } => h.fs.faults().power_cut_after_ops(u64::from(*after_ops)),
            Op::Crash { cut_recovery } => {
                let recovered = crash_and_recover(&mut h, *cut_recovery)?;
                workload.check_recovered(&recovered)?;
                workload.restart(&recovered);
            }
            _ => {
                for job in workload.jobs_for(op) {
                    // After a power cut the writer is gone and submissions fail: the jobs stay
                    // submitted-but-never-durable in the model.
                    let _ = h.submit(job);
                }
            }
        }
    }
    if let Ok(progress) = h.pump() {
        workload.on_progress(progress);
    }
    let recovered = crash_and_recover(&mut h, None)?;
    workload.check_recovered(&recovered)?;
    Ok(workload.coverage)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn everything_reported_durable_survives_any_crash(
        seed in any::<u64>(),
        torn in prop_oneof![Just(None), Just(Some(16u64)), Just(Some(512u64))],
        segment_bytes in prop_oneof![Just(4_200u64), Just(16_384u64)],
        ops in ops_strategy(80),
    ) {
        if let Err(violation) = run(seed, torn, segment_bytes, &ops) {
            return Err(TestCaseError::fail(violation));
        }
    }
}

/// The generator must reach the interesting cases; a fixed sweep shows it does.
#[test]
fn the_workload_covers_overwrites_installs_snapshots_and_recovery_beyond_durable() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = ops_strategy(80);
    let mut total = Coverage::default();
    for seed in 0..60 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let coverage = run(seed, Some(16), 4_200, &ops).unwrap();
        total.jobs += coverage.jobs;
        total.crashes += coverage.crashes;
        total.overwrites += coverage.overwrites;
        total.installs += coverage.installs;
        total.local_snapshots += coverage.local_snapshots;
        total.recovered_beyond_durable += coverage.recovered_beyond_durable;
        total.recoveries_with_repairs += coverage.recoveries_with_repairs;
    }
    println!("{total:?}");
    assert!(
        total.overwrites > 10 && total.installs > 10 && total.local_snapshots > 10,
        "{total:?}"
    );
    assert!(total.crashes > 60 && total.recoveries_with_repairs > 0, "{total:?}");
}
