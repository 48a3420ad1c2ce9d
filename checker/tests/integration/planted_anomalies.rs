//! A linearizable background history with one planted anomaly must be reported as a violation
//! on the planted key, with the planted operations in the minimal failing set.

use conclave_checker::generate::{
    Anomaly, GenerateOptions, key_name, linearizable_history, plant_anomaly,
};
use conclave_checker::{
    CheckOptions, FastPath, History, Op, Operation, Verdict, check, render_timeline_html,
};

/// Background: 4 clients over 5 keys, so the planted key already has about a hundred
/// operations (some with unknown outcome) for the minimizer to dig through.
fn background(seed: u64) -> Vec<Operation> {
    let options = GenerateOptions {
        seed,
        op_count: 600,
        client_count: 4,
        key_count: 5,
        info_per_mille: 30,
        fail_per_mille: 20,
        ..GenerateOptions::default()
    };
    linearizable_history(&options).into_ops()
}

fn end_time(ops: &[Operation]) -> u64 {
    ops.iter().map(|op| op.ret.unwrap_or(op.call)).max().unwrap_or(0)
}

/// Appends `planted` (ops with times relative to the end of the background, on fresh clients)
/// and then a little more normal traffic on the same key; returns the history and the indexes
/// of the planted operations that must appear in the explanation.
fn plant(seed: u64, planted: Vec<(Op, u64, u64, bool)>) -> (History, Vec<usize>) {
    let mut ops = background(seed);
    let start = end_time(&ops) + 100;
    let mut must = Vec::new();
    for (offset, (op, call, ret, required)) in planted.into_iter().enumerate() {
        if required {
            must.push(ops.len());
        }
        ops.push(Operation::ok(1_000 + offset as u64, start + call, start + ret, op));
    }
    let key = key_name(0);
    let after = start + 1_000;
    ops.push(Operation::ok(2_000, after, after + 5, Op::put(key.clone(), "epilogue")));
    ops.push(Operation::ok(2_001, after + 10, after + 15, Op::get(key, Some("epilogue"))));
    (History::new(ops).expect("planted history is valid"), must)
}

fn assert_explained(name: &str, history: &History, must: &[usize]) {
    let report = check(history, &CheckOptions::default());
    let Verdict::Violation(violation) = &report.verdict else {
        panic!("{name}: expected a violation, got {:?}", report.verdict);
    };
    assert_eq!(violation.keys, vec![key_name(0)], "{name}");
    assert!(violation.minimal, "{name}: minimization should finish");
    for index in must {
        assert!(
            violation.failing_ops.contains(index),
            "{name}: planted op {} missing from {:?}",
            history.ops()[*index],
            violation.failing_ops.iter().map(|&i| history.ops()[i].to_string()).collect::<Vec<_>>()
        );
    }
    // Small enough for a person: the planted ops plus at most a couple of supporting ones.
    assert!(
        violation.failing_ops.len() <= must.len() + 2,
        "{name}: {} ops in the explanation",
        violation.failing_ops.len()
    );
    let html = render_timeline_html(history, &report);
    let highlighted = html.matches(" failing\" data-op=").count();
    assert_eq!(highlighted, violation.failing_ops.len(), "{name}: highlighted bars");
    for index in &violation.failing_ops {
        assert!(
            html.contains(&format!("failing\" data-op=\"{index}\"")),
            "{name}: {index} not highlighted"
        );
    }
}

#[test]
fn stale_read() {
    let key = key_name(0);
    for seed in 1..=3 {
        let (history, must) = plant(
            seed,
            vec![
                (Op::put(key.clone(), "s1"), 0, 5, false),
                (Op::put(key.clone(), "s2"), 10, 15, true),
                (Op::get(key.clone(), Some("s1")), 20, 25, true),
            ],
        );
        assert_explained("stale read", &history, &must);
    }
}

#[test]
fn lost_write() {
    let key = key_name(0);
    for seed in 1..=3 {
        let (history, must) = plant(
            seed,
            vec![
                (Op::delete(key.clone()), 0, 5, false),
                (Op::put(key.clone(), "lost"), 10, 15, true),
                (Op::get(key.clone(), None), 20, 25, true),
            ],
        );
        assert_explained("lost write", &history, &must);
    }
}

#[test]
fn double_successful_cas() {
    let key = key_name(0);
    for seed in 1..=3 {
        let (history, must) = plant(
            seed,
            vec![
                (Op::put(key.clone(), "c0"), 0, 5, false),
                (Op::cas(key.clone(), Some("c0"), "c1", true), 10, 15, true),
                (Op::cas(key.clone(), Some("c0"), "c2", true), 12, 20, true),
            ],
        );
        assert_explained("double successful cas", &history, &must);
    }
}

#[test]
fn read_of_a_value_never_written() {
    let key = key_name(0);
    for seed in 1..=3 {
        let (history, must) = plant(seed, vec![(Op::get(key.clone(), Some("ghost")), 0, 5, true)]);
        assert_explained("read of a never-written value", &history, &must);
        let report = check(&history, &CheckOptions::default());
        assert_eq!(report.violation().unwrap().failing_ops, must, "the read alone explains it");
    }
}

#[test]
fn write_reappearing_after_delete() {
    let key = key_name(0);
    for seed in 1..=3 {
        let (history, must) = plant(
            seed,
            vec![
                (Op::put(key.clone(), "d1"), 0, 5, false),
                (Op::delete(key.clone()), 10, 15, true),
                (Op::get(key.clone(), Some("d1")), 20, 25, true),
            ],
        );
        assert_explained("write reappearing after delete", &history, &must);
    }
}

#[test]
fn small_explanations_are_exact() {
    // Without background the minimal set is fully determined: the get after the delete cannot
    // see d1 again, whatever the other operations did within their intervals.
    let ops = vec![
        Operation::ok(1, 0, 1, Op::put("k", "d1")),
        Operation::ok(2, 2, 3, Op::get("k", Some("d1"))),
        Operation::ok(1, 4, 5, Op::delete("k")),
        Operation::ok(3, 4, 6, Op::put("other", "x")),
        Operation::ok(2, 7, 8, Op::get("k", Some("d1"))),
    ];
    let history = History::new(ops).unwrap();
    let report = check(&history, &CheckOptions::default());
    let violation = report.violation().unwrap();
    assert_eq!(violation.keys, vec!["k".to_owned()]);
    // The put is not needed: whatever it did, it did before the delete returned.
    assert_eq!(violation.failing_ops, vec![2, 4]);
    assert!(violation.minimal);
    assert_eq!(violation.longest_prefix, vec![2]);
    assert_eq!(violation.violating_partitions, 1);
}

#[test]
fn anomalies_among_64_concurrent_clients_are_proved_and_explained() {
    // Issue 26's shape: 10,000 operations over 4 keys from 64 clients, where the search alone
    // runs out of steps. Each anomaly is planted in the middle of the first key's traffic.
    let history = linearizable_history(&GenerateOptions {
        seed: 7,
        op_count: 10_000,
        client_count: 64,
        key_count: 4,
        ..GenerateOptions::default()
    });
    let report = check(&history, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert!(report.partitions.iter().all(|p| p.fast_path == FastPath::Decided));
    for anomaly in Anomaly::ALL {
        let name = anomaly.as_str();
        let planted = plant_anomaly(&history, anomaly, &key_name(0)).expect("a place to plant");
        let report = check(&planted.history, &CheckOptions::default());
        let Verdict::Violation(violation) = &report.verdict else {
            panic!("{name}: {:?}", report.verdict)
        };
        assert_eq!(violation.keys, vec![key_name(0)], "{name}");
        assert!(violation.rule.is_some() && violation.minimal, "{name}: {violation:?}");
        assert_eq!(report.steps, 0, "{name}: decided without search");
        assert!(violation.failing_ops.contains(&planted.changed), "{name}: {violation:?}");
        // The changed operation and what makes it definite (the planted overwrite, or any
        // other operation that certainly saw the key change): at most three operations.
        assert!(violation.failing_ops.len() <= 3, "{name}: {violation:?}");
    }
}
