//! The storage crash property again, on turmoil's simulated file system (the one the simulator
//! runs nodes on): each case builds a turmoil world with a seed, a torn-write block size and
//! I/O latency, runs a random Raft-shaped job sequence in a host, and crashes the host at
//! random simulated steps — in the middle of writes, syncs, snapshot renames, segment rolls and
//! recoveries. After every crash the host recovers; everything it reported durable must come
//! back exactly and nothing it did not sync may have been reported durable (the same model as
//! `core/tests/integration/storage_crash.rs`). `PROPTEST_CASES` scales the number of cases.

#[path = "../../../core/tests/integration/storage_support/crash_model.rs"]
mod crash_model;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use conclave_core::seams::storage::Storage;
use conclave_core::storage::space::SpaceOptions;
use conclave_core::storage::{WalOptions, WalStorage};
use conclave_sim::disk::DiskFaults;
use conclave_sim::fs::SimFs;
use crash_model::{Op, Workload, ops_strategy};
use proptest::prelude::*;

const DATA_DIR: &str = "/data";
/// A case that has not finished after this many simulated milliseconds is stuck.
const MAX_STEPS: u64 = 400_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 4_200,
        max_record_bytes: 2_048,
        space: SpaceOptions { ballast_bytes: 4096, probe_bytes: 4096 },
        ..WalOptions::default()
    }
}

/// Shared between the host's software (re-run after every crash) and the test.
#[derive(Default)]
struct Case {
    ops: Vec<Op>,
    next_op: usize,
    workload: Option<Workload>,
    violation: Option<String>,
    /// The host asks to be crashed now (an `Op::Crash`).
    crash_requested: bool,
    /// Crash after this many more steps (an `Op::PowerCut`).
    crash_in_steps: Option<u64>,
    /// Every op ran; the next recovery is the last.
    ops_done: bool,
    final_recovery: bool,
    finished: bool,
    incarnations: u64,
}

async fn host(case: Rc<RefCell<Case>>, seed: u64) -> turmoil::Result {
    let incarnation = {
        let mut case = case.borrow_mut();
        case.incarnations += 1;
        case.incarnations
    };
    let fs = SimFs::new(DiskFaults::default(), seed ^ incarnation, 0);
    let opened = WalStorage::open(fs, DATA_DIR, options()).await;
    let (mut storage, recovered) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            case.borrow_mut().violation =
                Some(format!("the directory cannot be opened after a crash: {error}"));
            return Ok(());
        }
    };
    {
        let mut case = case.borrow_mut();
        let case = &mut *case;
        match case.workload.as_mut() {
            None => case.workload = Some(Workload::new(&recovered)),
            Some(workload) => {
                if let Err(violation) = workload.check_recovered(&recovered) {
                    case.violation = Some(violation);
                    return Ok(());
                }
                workload.restart(&recovered);
            }
        }
        if case.final_recovery {
            case.finished = true;
            return Ok(());
        }
    }
    let writer = storage.writer();
    let driver = async {
        loop {
            let op = {
                let mut case = case.borrow_mut();
                match case.ops.get(case.next_op).cloned() {
                    Some(op) => {
                        case.next_op += 1;
                        op
                    }
                    None => {
                        case.ops_done = true;
                        break;
                    }
                }
            };
            match op {
                Op::Pump => loop {
                    let caught_up = {
                        let case = case.borrow();
                        let workload = case.workload.as_ref().expect("set at start");
                        storage.current_progress().is_ok_and(|p| workload.is_caught_up(p))
                    };
                    if caught_up {
                        break;
                    }
                    let Ok(progress) = storage.progress_changed().await else { break };
                    if let Some(workload) = case.borrow_mut().workload.as_mut() {
                        workload.on_progress(progress);
                    }
                },
                Op::PowerCut { after_ops } => {
                    case.borrow_mut().crash_in_steps = Some(u64::from(after_ops) / 4);
                }
                Op::Crash { .. } => {
                    case.borrow_mut().crash_requested = true;
                    std::future::pending::<()>().await;
                }
                op => {
                    let jobs = case.borrow_mut().workload.as_mut().expect("set").jobs_for(&op);
                    for job in jobs {
                        let _ = storage.submit(job);
                    }
                }
            }
        }
        // Let the writer finish what was submitted, then wait for the final crash.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = writer => {}
        () = driver => {}
    }
    Ok(())
}

fn run(seed: u64, block_bytes: u64, ops: Vec<Op>) -> Result<crash_model::Coverage, String> {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_millis(MAX_STEPS + 1_000));
    builder.fs().block_size(block_bytes);
    builder
        .fs()
        .io_latency()
        .min_latency(Duration::from_micros(200))
        .max_latency(Duration::from_millis(3));
    let mut sim = builder.build();
    let case = Rc::new(RefCell::new(Case { ops, ..Case::default() }));
    let host_case = case.clone();
    sim.host("n1", move || host(host_case.clone(), seed));
    let mut crashes = 0;
    for _ in 0..MAX_STEPS {
        sim.step().map_err(|error| format!("the host failed: {error}"))?;
        let (crash_now, finished) = {
            let mut case = case.borrow_mut();
            if let Some(violation) = case.violation.take() {
                return Err(violation);
            }
            let countdown = match case.crash_in_steps {
                Some(0) => {
                    case.crash_in_steps = None;
                    true
                }
                Some(left) => {
                    case.crash_in_steps = Some(left - 1);
                    false
                }
                None => false,
            };
            let crash =
                case.crash_requested || countdown || (case.ops_done && !case.final_recovery);
            if crash {
                case.crash_requested = false;
                if case.ops_done {
                    case.final_recovery = true;
                }
            }
            (crash, case.finished)
        };
        if finished {
            let case = case.borrow();
            let mut coverage =
                case.workload.as_ref().map(|w| w.coverage.clone()).unwrap_or_default();
            coverage.crashes = crashes;
            if std::env::var("STORAGE_CRASH_DEBUG").is_ok() {
                println!(
                    "ops {} next {} incarnations {} {coverage:?}",
                    case.ops.len(),
                    case.next_op,
                    case.incarnations
                );
            }
            return Ok(coverage);
        }
        if crash_now {
            sim.crash("n1");
            sim.bounce("n1");
            crashes += 1;
        }
    }
    Err(format!("stuck: not finished after {MAX_STEPS} steps"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn everything_reported_durable_survives_turmoil_crashes(
        seed in any::<u64>(),
        block_bytes in prop_oneof![Just(16u64), Just(512u64), Just(4096u64)],
        ops in ops_strategy(60),
    ) {
        if let Err(violation) = run(seed, block_bytes, ops) {
            return Err(TestCaseError::fail(violation));
        }
    }
}

/// The cases must really crash in the middle of things and recover; a fixed sweep shows it.
#[test]
fn turmoil_cases_crash_mid_write_and_recover() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = ops_strategy(60);
    let mut total = crash_model::Coverage::default();
    for seed in 0..24 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let coverage = run(seed, if seed % 2 == 0 { 16 } else { 512 }, ops).unwrap();
        total.jobs += coverage.jobs;
        total.crashes += coverage.crashes;
        total.recoveries_with_repairs += coverage.recoveries_with_repairs;
        total.recovered_beyond_durable += coverage.recovered_beyond_durable;
        total.installs += coverage.installs;
        total.overwrites += coverage.overwrites;
        total.local_snapshots += coverage.local_snapshots;
    }
    println!("{total:?}");
    assert!(total.crashes >= 48 && total.jobs > 300, "{total:?}");
    assert!(total.recovered_beyond_durable > 0 && total.recoveries_with_repairs > 0, "{total:?}");
}
