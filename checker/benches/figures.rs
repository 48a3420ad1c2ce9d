//! The figures of the checker's README, printed as tables: the planted anomalies of issue 26
//! (stale read, phantom read, lost write, double cas, resurrected delete) in generated
//! histories of 10,000 and 100,000 operations over 1 and 4 keys with 8 and 64 clients, the
//! same histories without the anomaly, and large linearizable histories (1,000,000 operations
//! over 1,000 keys; 10,000,000 with `FIGURES_10M=1`). Each check is run once, with a
//! wall-clock budget so that a slow case prints "unknown" instead of holding the run; times are
//! CPU times of the checking thread.
//!
//! `cargo bench -p conclave-checker --bench figures` (`FIGURES_SEARCH=1` also times the
//! general search alone on the anomalies, `FIGURES_WRITE=DIR` writes the large histories as
//! JSON Lines there for the CLI).

use std::time::{Duration, Instant};

use conclave_checker::generate::{
    Anomaly, GenerateOptions, key_name, linearizable_history, plant_anomaly,
};
use conclave_checker::{CheckOptions, CheckReport, FastPath, History, Verdict, check};

/// A check that takes longer than this counts as "unknown" (the bar is one second).
const TIMEOUT: Duration = Duration::from_secs(60);

fn options(fast_path: bool) -> CheckOptions {
    CheckOptions { timeout: Some(TIMEOUT), fast_path, ..CheckOptions::default() }
}

/// Runs one check; returns the report and the time it took. The time is this thread's CPU
/// time when Linux tells it (`/proc/thread-self/schedstat`): the project machine is shared, and
/// wall-clock time there varies with what else runs.
fn timed(history: &History, options: &CheckOptions) -> (CheckReport, Duration) {
    let (started, cpu_started) = (Instant::now(), cpu_time());
    let report = check(history, options);
    let elapsed = match (cpu_started, cpu_time()) {
        (Some(before), Some(after)) => after - before,
        _ => started.elapsed(),
    };
    (report, elapsed)
}

/// CPU time of this thread so far, from `/proc/thread-self/schedstat` (nanoseconds on CPU).
fn cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn describe(report: &CheckReport) -> String {
    let fast = report.partitions.iter().filter(|p| p.fast_path == FastPath::Decided).count();
    let explained = match &report.verdict {
        Verdict::Violation(violation) => format!(
            "{} ops{}",
            violation.failing_ops.len(),
            if violation.minimal { ", minimal" } else { ", not minimal" }
        ),
        Verdict::Linearizable | Verdict::Unknown(_) => String::new(),
    };
    format!(
        "{:<12} {:>2}/{:<2} fast {:>9} steps {}",
        report.verdict.as_str(),
        fast,
        report.partitions.len(),
        report.steps,
        explained
    )
}

fn background(op_count: usize, key_count: u32, client_count: u32, seed: u64) -> History {
    linearizable_history(&GenerateOptions {
        seed,
        op_count,
        client_count,
        key_count,
        ..GenerateOptions::default()
    })
}

fn planted() {
    let search_too = std::env::var_os("FIGURES_SEARCH").is_some();
    println!(
        "\nPlanted anomalies (one check each, CPU time; 'fast' = partitions the fast path decided)"
    );
    println!(
        "{:>7} {:>4} {:>7}  {:<18} {:>9}  verdict",
        "ops", "keys", "clients", "anomaly", "time"
    );
    for op_count in [10_000usize, 100_000] {
        for key_count in [1u32, 4] {
            for client_count in [8u32, 64] {
                let history = background(op_count, key_count, client_count, 7);
                let (report, elapsed) = timed(&history, &options(true));
                println!(
                    "{op_count:>7} {key_count:>4} {client_count:>7}  {:<18} {:>7.1}ms  {}",
                    "(none)",
                    elapsed.as_secs_f64() * 1e3,
                    describe(&report)
                );
                for anomaly in Anomaly::ALL {
                    let Some(planted) = plant_anomaly(&history, anomaly, &key_name(0)) else {
                        println!(
                            "{op_count:>7} {key_count:>4} {client_count:>7}  {:<18} no place to plant it",
                            anomaly.as_str()
                        );
                        continue;
                    };
                    let (report, elapsed) = timed(&planted.history, &options(true));
                    assert!(
                        !matches!(report.verdict, Verdict::Linearizable),
                        "a planted anomaly was missed"
                    );
                    let mut line = format!(
                        "{op_count:>7} {key_count:>4} {client_count:>7}  {:<18} {:>7.1}ms  {}",
                        anomaly.as_str(),
                        elapsed.as_secs_f64() * 1e3,
                        describe(&report)
                    );
                    if search_too {
                        let (report, elapsed) = timed(&planted.history, &options(false));
                        line.push_str(&format!(
                            "   | search alone: {:.1}ms {}",
                            elapsed.as_secs_f64() * 1e3,
                            report.verdict.as_str()
                        ));
                    }
                    println!("{line}");
                }
            }
        }
    }
}

fn large(op_count: usize, key_count: u32, client_count: u32) {
    let started = Instant::now();
    let history = background(op_count, key_count, client_count, 11);
    let generated = started.elapsed();
    if let Some(directory) = std::env::var_os("FIGURES_WRITE") {
        let path = std::path::Path::new(&directory)
            .join(format!("linearizable-{op_count}-ops-{key_count}-keys.jsonl"));
        let file = std::fs::File::create(&path).expect("create the history file");
        let mut out = std::io::BufWriter::new(file);
        conclave_checker::write_jsonl(&history, &mut out).expect("write the history file");
        println!("wrote {}", path.display());
    }
    let (report, elapsed) = timed(&history, &options(true));
    println!(
        "{op_count:>9} ops {key_count:>5} keys {client_count:>3} clients: {:>8.1}ms CPU to check \
         ({:.1}s to generate)  {}",
        elapsed.as_secs_f64() * 1e3,
        generated.as_secs_f64(),
        describe(&report)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    planted();
    println!("\nLarge linearizable histories");
    large(1_000_000, 1_000, 16);
    large(1_000_000, 1_000, 64);
    if std::env::var_os("FIGURES_10M").is_some() {
        large(10_000_000, 10_000, 64);
    }
}
