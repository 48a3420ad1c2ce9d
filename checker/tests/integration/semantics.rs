//! The KV semantics and the status rules, one small history at a time.

use conclave_checker::generate::{GenerateOptions, linearizable_history};
use conclave_checker::{
    BudgetKind, CheckOptions, CmpOp, Compare, History, KeyValue, Op, Operation, PartitionOutcome,
    Range, Txn, TxnOp, Verdict, check,
};

fn verdict(ops: Vec<Operation>) -> &'static str {
    let history = History::new(ops).expect("valid history");
    match check(&history, &CheckOptions::default()).verdict {
        Verdict::Linearizable => "linearizable",
        Verdict::Violation(_) => "violation",
        Verdict::Unknown(_) => "unknown",
    }
}

fn range(prefix: &str, limit: Option<u64>, kvs: &[(&str, &str)], more: Option<bool>) -> Op {
    Op::Range(Range {
        prefix: prefix.into(),
        start_after: None,
        limit,
        kvs: kvs
            .iter()
            .map(|(key, value)| KeyValue { key: (*key).into(), value: (*value).into() })
            .collect(),
        more,
    })
}

#[test]
fn empty_history_is_linearizable() {
    let report = check(&History::default(), &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!((report.op_count, report.partitions.len()), (0, 0));
    // ...vacuously: the CLI says so, with its own exit code.
    assert!(report.is_vacuous());
    assert_eq!(report.exit_code(), 4);
}

#[test]
fn real_time_order_and_closed_intervals() {
    // A read overlapping a put may see either value.
    let overlapping = |seen| {
        vec![Operation::ok(1, 0, 10, Op::put("k", "1")), Operation::ok(2, 5, 6, Op::get("k", seen))]
    };
    assert_eq!(verdict(overlapping(Some("1"))), "linearizable");
    assert_eq!(verdict(overlapping(None)), "linearizable");
    // After the put returned, only the new value.
    let after = |seen| {
        vec![
            Operation::ok(1, 0, 10, Op::put("k", "1")),
            Operation::ok(2, 11, 12, Op::get("k", seen)),
        ]
    };
    assert_eq!(verdict(after(Some("1"))), "linearizable");
    assert_eq!(verdict(after(None)), "violation");
    // Intervals are closed: meeting at an instant is overlapping.
    let touching = vec![
        Operation::ok(1, 0, 10, Op::put("k", "1")),
        Operation::ok(2, 10, 12, Op::get("k", None)),
    ];
    assert_eq!(verdict(touching), "linearizable");
}

#[test]
fn unknown_outcomes_may_happen_late_or_never_and_failures_never() {
    // An `info` put may take effect long after its client gave up...
    assert_eq!(
        verdict(vec![
            Operation::info(1, 0, Op::put("k", "late")),
            Operation::ok(2, 10, 11, Op::get("k", None)),
            Operation::ok(2, 20, 21, Op::get("k", Some("late"))),
        ]),
        "linearizable"
    );
    // ...or never, and its client may go on with other operations.
    assert_eq!(
        verdict(vec![
            Operation::info(1, 0, Op::put("k", "never")),
            Operation::ok(1, 5, 6, Op::put("k", "1")),
            Operation::ok(2, 10, 11, Op::get("k", Some("1"))),
        ]),
        "linearizable"
    );
    // But it takes effect at most once, and not before its call.
    assert_eq!(
        verdict(vec![
            Operation::ok(2, 0, 1, Op::get("k", Some("x"))),
            Operation::info(1, 2, Op::put("k", "x")),
        ]),
        "violation"
    );
    assert_eq!(
        verdict(vec![
            Operation::info(1, 0, Op::put("k", "x")),
            Operation::ok(2, 1, 2, Op::get("k", Some("x"))),
            Operation::ok(2, 3, 4, Op::put("k", "y")),
            Operation::ok(2, 5, 6, Op::get("k", Some("x"))),
        ]),
        "violation"
    );
    // A failed put did not happen.
    assert_eq!(
        verdict(vec![
            Operation::fail(1, 0, 1, Op::put("k", "x")),
            Operation::ok(2, 2, 3, Op::get("k", Some("x"))),
        ]),
        "violation"
    );
    // An unfinished get observed nothing: whatever it claims is ignored.
    let history = History::new(vec![
        Operation { ret: Some(3), ..Operation::info(1, 0, Op::get("k", Some("nonsense"))) },
        Operation::ok(2, 5, 6, Op::get("k", None)),
    ])
    .expect("valid");
    let report = check(&history, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!(report.dropped_op_count, 1);
}

#[test]
fn cas_put_if_absent_and_delete() {
    let seq = |ops: Vec<Op>| -> Vec<Operation> {
        ops.into_iter()
            .enumerate()
            .map(|(index, op)| Operation::ok(1, 10 * index as u64, 10 * index as u64 + 1, op))
            .collect()
    };
    assert_eq!(
        verdict(seq(vec![
            Op::cas("k", None, "1", true),
            Op::cas("k", None, "2", false),
            Op::cas("k", Some("1"), "3", true),
            Op::get("k", Some("3")),
        ])),
        "linearizable"
    );
    assert_eq!(
        verdict(seq(vec![Op::put("k", "1"), Op::cas("k", Some("1"), "2", false)])),
        "violation"
    );
    assert_eq!(verdict(seq(vec![Op::cas("k", Some("1"), "2", true)])), "violation");
    let create = |success| Op::PutIfAbsent { key: "k".into(), value: "v".into(), success };
    assert_eq!(
        verdict(seq(vec![create(true), create(false), Op::get("k", Some("v"))])),
        "linearizable"
    );
    assert_eq!(verdict(seq(vec![create(true), create(true)])), "violation");
    let delete = |found| Op::Delete { key: "k".into(), found: Some(found) };
    assert_eq!(
        verdict(seq(vec![delete(false), Op::put("k", "1"), delete(true), delete(false)])),
        "linearizable"
    );
    assert_eq!(verdict(seq(vec![Op::put("k", "1"), delete(false)])), "violation");
    assert_eq!(verdict(seq(vec![Op::delete("k"), Op::get("k", None)])), "linearizable");
}

#[test]
fn transactions_are_atomic_and_branch_on_their_compares() {
    let transfer = Op::Txn(Txn {
        compare: vec![Compare::Equals { key: "a".into(), expected: None }],
        success: vec![
            TxnOp::Put { key: "a".into(), value: "1".into() },
            TxnOp::Put { key: "b".into(), value: "1".into() },
            TxnOp::Get { key: "a".into(), value: Some("1".into()) },
        ],
        failure: vec![],
        succeeded: true,
    });
    let read_both = |a: Option<&str>, b: Option<&str>| {
        Op::Txn(Txn {
            compare: vec![],
            success: vec![
                TxnOp::Get { key: "a".into(), value: a.map(Into::into) },
                TxnOp::Get { key: "b".into(), value: b.map(Into::into) },
            ],
            failure: vec![],
            succeeded: true,
        })
    };
    // A concurrent reader sees all of the transaction or none of it...
    for (a, b, expected) in [
        (None, None, "linearizable"),
        (Some("1"), Some("1"), "linearizable"),
        (Some("1"), None, "violation"),
        (None, Some("1"), "violation"),
    ] {
        let ops = vec![
            Operation::ok(1, 0, 10, transfer.clone()),
            Operation::ok(2, 2, 8, read_both(a, b)),
        ];
        assert_eq!(verdict(ops), expected, "reader saw a={a:?} b={b:?}");
    }
    // ...and separate reads may straddle it.
    let ops = vec![
        Operation::ok(1, 0, 10, transfer.clone()),
        Operation::ok(2, 1, 2, Op::get("b", None)),
        Operation::ok(3, 3, 4, Op::get("a", Some("1"))),
    ];
    assert_eq!(verdict(ops), "linearizable");
    // The branch must match the compares.
    let guarded = |succeeded| {
        Op::Txn(Txn {
            compare: vec![
                Compare::Value { key: "a".into(), cmp: CmpOp::Greater, value: "0".into() },
                Compare::Exists { key: "b".into(), exists: false },
            ],
            success: vec![TxnOp::Delete { key: "a".into() }],
            failure: vec![TxnOp::Put { key: "b".into(), value: "x".into() }],
            succeeded,
        })
    };
    let after_put = |succeeded, seen: Option<&str>| {
        vec![
            Operation::ok(1, 0, 1, Op::put("a", "5")),
            Operation::ok(1, 2, 3, guarded(succeeded)),
            Operation::ok(1, 4, 5, Op::get("a", seen)),
        ]
    };
    assert_eq!(verdict(after_put(true, None)), "linearizable");
    assert_eq!(verdict(after_put(false, Some("5"))), "violation");
}

#[test]
fn range_reads_respect_prefix_order_limit_and_more() {
    let writes = || {
        vec![
            Operation::ok(1, 0, 1, Op::put("p/b", "2")),
            Operation::ok(1, 2, 3, Op::put("p/a", "1")),
            Operation::ok(1, 4, 5, Op::put("q", "9")),
        ]
    };
    let with = |op: Op| {
        let mut ops = writes();
        ops.push(Operation::ok(2, 10, 11, op));
        verdict(ops)
    };
    assert_eq!(with(range("p/", None, &[("p/a", "1"), ("p/b", "2")], Some(false))), "linearizable");
    assert_eq!(with(range("p/", Some(1), &[("p/a", "1")], Some(true))), "linearizable");
    assert_eq!(with(range("p/", Some(1), &[("p/a", "1")], Some(false))), "violation");
    assert_eq!(with(range("p/", None, &[("p/b", "2"), ("p/a", "1")], None)), "violation");
    assert_eq!(with(range("p/", None, &[("p/a", "1")], None)), "violation"); // left one out
    assert_eq!(
        with(range("p/", None, &[("p/a", "1"), ("p/b", "2"), ("p/c", "3")], None)),
        "violation"
    );
    assert_eq!(
        with(range("", Some(3), &[("p/a", "1"), ("p/b", "2"), ("q", "9")], Some(false))),
        "linearizable"
    );
    let after = Op::Range(Range {
        prefix: "p/".into(),
        start_after: Some("p/a".into()),
        limit: None,
        kvs: vec![KeyValue { key: "p/b".into(), value: "2".into() }],
        more: Some(false),
    });
    assert_eq!(with(after), "linearizable");
    assert_eq!(with(range("zzz", None, &[], Some(false))), "linearizable");
    assert_eq!(with(range("zzz", None, &[], Some(true))), "violation");
}

#[test]
fn budgets_give_unknown_and_checks_are_deterministic() {
    // Values repeat, so the search decides (the unique-value fast path takes no steps).
    let history = linearizable_history(&GenerateOptions {
        op_count: 3_000,
        key_count: 10,
        values_per_key: 3,
        ..GenerateOptions::default()
    });
    let options = CheckOptions { max_steps: 50, ..CheckOptions::default() };
    let report = check(&history, &options);
    let Verdict::Unknown(unknown) = &report.verdict else { panic!("{:?}", report.verdict) };
    assert_eq!(unknown.reason, BudgetKind::Steps);
    assert!(
        report.partitions.iter().any(|p| p.outcome == PartitionOutcome::Unknown(BudgetKind::Steps))
    );
    assert_eq!(report, check(&history, &options), "same input, same report");
    let full = check(&history, &CheckOptions::default());
    assert_eq!(full.verdict, Verdict::Linearizable);
    assert_eq!(full, check(&history, &CheckOptions::default()));
    let unique = linearizable_history(&GenerateOptions {
        op_count: 3_000,
        key_count: 10,
        ..GenerateOptions::default()
    });
    let fast = check(&unique, &options);
    assert_eq!((fast.verdict.as_str(), fast.steps), ("linearizable", 0), "no search needed");
    assert_eq!(fast, check(&unique, &options), "same input, same report");
}

#[test]
fn a_tiny_cache_changes_the_cost_not_the_answer() {
    let mut undecided = 0;
    for seed in 0..20 {
        let options = GenerateOptions {
            seed,
            op_count: 120,
            client_count: 4,
            key_count: 3,
            values_per_key: 2,
            multi_key_per_mille: 100,
            ..GenerateOptions::default()
        };
        let mut ops = linearizable_history(&options).into_ops();
        if seed % 2 == 1 {
            // Plant a read of a value that was never written in the middle.
            let middle = ops.len() / 2;
            ops.push(Operation::ok(
                99,
                ops[middle].call,
                ops[middle].call + 1,
                Op::get("k0000", Some("ghost")),
            ));
        }
        let history = History::new(ops).expect("valid");
        let roomy = check(&history, &CheckOptions::default());
        assert_eq!(
            roomy.verdict.as_str(),
            if seed % 2 == 1 { "violation" } else { "linearizable" }
        );
        // A full cache stops remembering: the search may then run out of budget, but it never
        // answers differently.
        let cramped = CheckOptions {
            max_cache_bytes: 4_096,
            max_steps: 2_000_000,
            ..CheckOptions::default()
        };
        let cramped = check(&history, &cramped);
        if cramped.verdict.as_str() == "unknown" {
            undecided += 1;
        } else {
            assert_eq!(roomy.verdict.as_str(), cramped.verdict.as_str(), "seed {seed}");
        }
    }
    assert!(undecided < 10, "{undecided} of 20 undecided");
}

#[test]
fn the_smallest_failing_partition_is_reported() {
    let mut ops = Vec::new();
    // Key "big": a stale read after many operations. Key "small": a stale read right away.
    for index in 0..20u64 {
        ops.push(Operation::ok(1, 10 * index, 10 * index + 1, Op::put("big", index.to_string())));
    }
    ops.push(Operation::ok(1, 500, 501, Op::get("big", Some("3"))));
    ops.push(Operation::ok(2, 0, 1, Op::put("small", "1")));
    ops.push(Operation::ok(2, 2, 3, Op::put("small", "2")));
    ops.push(Operation::ok(2, 4, 5, Op::get("small", Some("1"))));
    let history = History::new(ops).expect("valid");
    let report = check(&history, &CheckOptions::default());
    let violation = report.violation().expect("violation");
    assert_eq!(violation.keys, vec!["small".to_owned()]);
    assert_eq!(violation.violating_partitions, 2);
    assert_eq!(violation.failing_ops, vec![22, 23]);
    assert_eq!(report.partitions.iter().map(|p| p.op_count).collect::<Vec<_>>(), vec![3, 21]);
}
