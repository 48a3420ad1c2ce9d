//! How long `check` takes on generated histories that are linearizable by construction:
//! 16 clients, 100 keys, 2% of operations with unknown outcome and 1% failed, single-key
//! operations (the checker splits them into 100 partitions). The acceptance bar: 100,000
//! operations in under 2 seconds on the 2-core project machine.
//!
//! Then the planted anomalies of issue 26 on 100,000 operations, one key, 64 clients (the
//! hardest shape: every operation overlaps dozens of others), and 1,000,000 operations over
//! 1,000 keys. `benches/figures.rs` prints the whole table of the README.
//!
//! Run with `cargo bench -p conclave-checker`; the figures are recorded in checker/README.md.

use std::hint::black_box;
use std::time::Duration;

use conclave_checker::generate::{
    Anomaly, GenerateOptions, key_name, linearizable_history, plant_anomaly,
};
use conclave_checker::{CheckOptions, Verdict, check};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    for op_count in [10_000usize, 100_000] {
        let options = GenerateOptions {
            seed: 42,
            op_count,
            client_count: 16,
            key_count: 100,
            info_per_mille: 20,
            fail_per_mille: 10,
            ..GenerateOptions::default()
        };
        let history = linearizable_history(&options);
        // Outside the timing: the benchmark only means something if the answer is right.
        let report = check(&history, &CheckOptions::default());
        assert_eq!(report.verdict, Verdict::Linearizable);
        println!(
            "{op_count} ops: {} partitions, {} search steps, {} ops left out",
            report.partitions.len(),
            report.steps,
            report.dropped_op_count
        );
        group.throughput(Throughput::Elements(op_count as u64));
        group.bench_function(format!("{op_count}_ops"), |bencher| {
            bencher.iter(|| check(black_box(&history), &CheckOptions::default()))
        });
    }
    group.finish();
}

fn bench_planted(c: &mut Criterion) {
    let mut group = c.benchmark_group("planted");
    let options = GenerateOptions {
        seed: 7,
        op_count: 100_000,
        client_count: 64,
        key_count: 1,
        ..GenerateOptions::default()
    };
    let history = linearizable_history(&options);
    let report = check(&history, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    group.bench_function("100000_ops_1_key_64_clients_none", |bencher| {
        bencher.iter(|| check(black_box(&history), &CheckOptions::default()))
    });
    for anomaly in Anomaly::ALL {
        let Some(planted) = plant_anomaly(&history, anomaly, &key_name(0)) else {
            panic!("no place to plant a {}", anomaly.as_str());
        };
        let report = check(&planted.history, &CheckOptions::default());
        let violation = report.violation().expect("a planted anomaly is a violation");
        assert!(violation.minimal && violation.failing_ops.len() <= 3, "{violation:?}");
        let name = format!("100000_ops_1_key_64_clients_{}", anomaly.as_str().replace(' ', "_"));
        group.bench_function(name, |bencher| {
            bencher.iter(|| check(black_box(&planted.history), &CheckOptions::default()))
        });
    }
    let large = linearizable_history(&GenerateOptions {
        seed: 11,
        op_count: 1_000_000,
        client_count: 16,
        key_count: 1_000,
        ..GenerateOptions::default()
    });
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("1000000_ops_1000_keys", |bencher| {
        bencher.iter(|| check(black_box(&large), &CheckOptions::default()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Checking 100,000 operations takes a noticeable fraction of a second: ten samples are
    // plenty to see the figure and keep `cargo bench` short.
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench_check, bench_planted
}
criterion_main!(benches);
