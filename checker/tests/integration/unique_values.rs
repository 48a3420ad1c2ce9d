//! The unique-value fast path against the general search and against the definition, on small
//! random histories where every write writes a fresh value: gets, puts, deletes (found recorded
//! or not), cas and put_if_absent (expecting a value written before, a value never written, or
//! absence), with unknown outcomes anywhere (a client may give up and go on) and failures; some
//! linearizable by construction, some with one output or input mutated.
//!
//! - The verdict with the fast path, the verdict of the general search alone and the verdict of
//!   the definition (`oracle::memo_verdict`) are the same, always.
//! - A violation the fast path proved is explained by a set that fails whatever the other
//!   operations did, and from which no operation can be removed.
//! - Without deletes and without completed failed cas or creates, the fast path decides every
//!   partition (the coverage the README claims); with them it decides most of them.

use crate::oracle;

use conclave_checker::spec::{KvSpec, call_of, fill_outputs};
use conclave_checker::{
    CheckOptions, CheckReport, FastPath, History, Op, Operation, Status, Verdict, check,
};
use oracle::{brute_force_verdict, memo_verdict, parts};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use stateright::semantics::SequentialSpec;

#[derive(Clone, Debug)]
struct OpSpec {
    kind: u8,
    pick: u8,
    think: u8,
    duration: u8,
    point: u8,
    status: u8,
    late: u8,
    recorded: bool,
}

#[derive(Clone, Debug)]
struct HistorySpec {
    clients: Vec<Vec<OpSpec>>,
    two_keys: bool,
    mutation: Option<(u8, u8)>,
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    (any::<[u8; 7]>(), any::<bool>()).prop_map(|(bytes, recorded)| OpSpec {
        kind: bytes[0],
        pick: bytes[1],
        think: bytes[2],
        duration: bytes[3],
        point: bytes[4],
        status: bytes[5],
        late: bytes[6],
        recorded,
    })
}

fn history_spec(clients: usize, max_ops_per_client: usize) -> impl Strategy<Value = HistorySpec> {
    (
        prop::collection::vec(
            prop::collection::vec(op_spec(), 0..=max_ops_per_client),
            1..=clients,
        ),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.6, any::<(u8, u8)>()),
    )
        .prop_map(|(clients, two_keys, mutation)| HistorySpec { clients, two_keys, mutation })
}

/// Which histories to build: with every kind, or in the class the fast path always decides
/// (no deletes; a cas or create that would fail is recorded as failed, so dropped).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Class {
    Any,
    NoDeletesNoFailures,
}

/// Values are fresh per write (`w1`, `w2`, ...); `x1`, ... are never written.
struct Values {
    written: Vec<String>,
    next: usize,
}

impl Values {
    fn fresh(&mut self) -> String {
        self.next += 1;
        let value = format!("w{}", self.next);
        self.written.push(value.clone());
        value
    }

    /// A value for a cas to expect: often one of the latest written, sometimes absence or a
    /// value nobody writes.
    fn expected(&mut self, pick: u8) -> Option<String> {
        match pick % 6 {
            0 => None,
            1 => Some(format!("x{}", pick / 6)),
            _ => {
                let back = 1 + (pick as usize / 6) % 3;
                self.written.len().checked_sub(back).map(|index| self.written[index].clone())
            }
        }
    }

    /// Some value for a mutated read: written, absent, or never written.
    fn any(&self, pick: u8) -> Option<String> {
        match pick % 5 {
            0 => None,
            1 => Some("phantom".to_owned()),
            _ if self.written.is_empty() => None,
            _ => Some(self.written[pick as usize % self.written.len()].clone()),
        }
    }
}

fn make_op(spec: &OpSpec, key: String, class: Class, values: &mut Values) -> Op {
    let kinds = if class == Class::Any { 8 } else { 7 };
    match spec.kind % kinds {
        0 | 1 => Op::Get { key, value: None },
        2 | 3 => Op::Put { key, value: values.fresh() },
        4 | 5 => Op::Cas {
            key,
            expected: values.expected(spec.pick),
            value: values.fresh(),
            success: false,
        },
        6 => Op::PutIfAbsent { key, value: values.fresh(), success: false },
        _ => Op::Delete { key, found: None },
    }
}

/// Builds the history: linearization points inside the intervals (late or never for unknown
/// outcomes), outputs from the reference model in the order of the points, then perhaps one
/// mutation.
fn build(spec: &HistorySpec, class: Class) -> History {
    let mut values = Values { written: Vec::new(), next: 0 };
    let mut planned: Vec<(Operation, Option<u64>, bool)> = Vec::new();
    for (client, ops) in spec.clients.iter().enumerate() {
        let mut time = client as u64;
        for op_spec in ops {
            let call = time + u64::from(op_spec.think % 4);
            let ret = call + 1 + u64::from(op_spec.duration % 6);
            time = ret + 1;
            let point = call + u64::from(op_spec.point) % (ret - call + 1);
            let key = if spec.two_keys && op_spec.pick % 3 == 0 { "k2" } else { "k" };
            let op = make_op(op_spec, key.to_owned(), class, &mut values);
            let (status, ret, point) = match op_spec.status % 8 {
                0 => {
                    let applied = op_spec.late % 3 != 0;
                    (Status::Info, None, applied.then_some(point + u64::from(op_spec.late % 7)))
                }
                1 => (Status::Fail, Some(ret), None),
                _ => (Status::Ok, Some(ret), Some(point)),
            };
            let operation = Operation { client: client as u64, call, ret, status, op };
            planned.push((operation, point, op_spec.recorded));
        }
    }
    let mut order: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].1.is_some()).collect();
    order.sort_by_key(|&i| (planned[i].1, i));
    let mut model = KvSpec::default();
    for index in order {
        let ret = model.invoke(&call_of(&planned[index].0.op));
        if planned[index].0.status == Status::Ok {
            fill_outputs(&mut planned[index].0.op, ret);
        }
    }
    let mut ops: Vec<Operation> = Vec::new();
    for (mut operation, _, recorded) in planned {
        if let Op::Delete { found, .. } = &mut operation.op
            && !recorded
        {
            *found = None;
        }
        let failed_write = matches!(
            operation.op,
            Op::Cas { success: false, .. } | Op::PutIfAbsent { success: false, .. }
        );
        if class == Class::NoDeletesNoFailures && operation.status == Status::Ok && failed_write {
            operation.status = Status::Fail; // it did not take effect: consistent
        }
        ops.push(operation);
    }
    if let Some((which, how)) = spec.mutation {
        let completed: Vec<usize> =
            (0..ops.len()).filter(|&i| ops[i].status == Status::Ok).collect();
        if !completed.is_empty() {
            let index = completed[which as usize % completed.len()];
            mutate(&mut ops[index].op, how, class, &mut values);
        }
    }
    History::new(ops).expect("generated histories are valid")
}

/// Changes what one completed operation observed (or expected), keeping values unique.
fn mutate(op: &mut Op, how: u8, class: Class, values: &mut Values) {
    match op {
        Op::Get { value, .. } => *value = values.any(how),
        Op::Delete { found, .. } => *found = Some(!found.unwrap_or(false)),
        Op::Cas { expected, success, .. } => {
            if how.is_multiple_of(2) || class == Class::NoDeletesNoFailures {
                *expected = values.expected(how / 2);
                *success = true;
            } else {
                *success = !*success;
            }
        }
        Op::PutIfAbsent { success, .. } if class == Class::Any => *success = !*success,
        Op::Put { .. } | Op::PutIfAbsent { .. } | Op::Txn(_) | Op::Range(_) => {}
    }
}

fn verdict(report: &CheckReport) -> Option<bool> {
    match report.verdict {
        Verdict::Linearizable => Some(true),
        Verdict::Violation(_) => Some(false),
        Verdict::Unknown(_) => None,
    }
}

fn describe(history: &History) -> String {
    conclave_checker::to_jsonl_string(history)
}

fn decided_everywhere(report: &CheckReport) -> bool {
    report.partitions.iter().all(|partition| partition.fast_path == FastPath::Decided)
}

/// The three verdicts agree, and a violation proved by the fast path is explained by a
/// minimal failing set. Returns whether the fast path decided every partition.
fn check_one(history: &History) -> Result<bool, TestCaseError> {
    let all: Vec<usize> = (0..history.len()).collect();
    let expected = memo_verdict(&parts(history, &all));
    if history.len() <= 8 {
        prop_assert_eq!(brute_force_verdict(history), expected, "oracles:\n{}", describe(history));
    }
    let fast = check(history, &CheckOptions::default());
    let slow = check(history, &CheckOptions { fast_path: false, ..CheckOptions::default() });
    prop_assert_eq!(verdict(&fast), Some(expected), "fast path:\n{}", describe(history));
    prop_assert_eq!(verdict(&slow), Some(expected), "general search:\n{}", describe(history));
    if let Verdict::Violation(violation) = &fast.verdict
        && violation.rule.is_some()
    {
        prop_assert!(violation.minimal, "not minimal:\n{}", describe(history));
        let failing = &violation.failing_ops;
        prop_assert!(
            !memo_verdict(&parts(history, failing)),
            "explanation {:?} does not fail:\n{}",
            failing,
            describe(history)
        );
        for removed in failing {
            let smaller: Vec<usize> = failing.iter().copied().filter(|i| i != removed).collect();
            prop_assert!(
                memo_verdict(&parts(history, &smaller)),
                "explanation {:?} is not minimal ({} can go):\n{}",
                failing,
                removed,
                describe(history)
            );
        }
    }
    Ok(decided_everywhere(&fast))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_agrees_with_the_search_and_the_definition(spec in history_spec(4, 6)) {
        check_one(&build(&spec, Class::Any))?;
    }

    #[test]
    fn without_deletes_and_failures_the_fast_path_decides_everything(spec in history_spec(4, 6)) {
        let history = build(&spec, Class::NoDeletesNoFailures);
        let decided = check_one(&history)?;
        prop_assert!(decided, "fast path declined:\n{}", describe(&history));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Longer histories (up to 80 operations, 8 clients), too long for the definition: the
    /// fast path against the general search alone, and full coverage without deletes and
    /// failures.
    #[test]
    fn on_longer_histories_the_fast_path_agrees_with_the_search(spec in history_spec(8, 10)) {
        for class in [Class::Any, Class::NoDeletesNoFailures] {
            let history = build(&spec, class);
            let fast = check(&history, &CheckOptions::default());
            let slow = check(&history, &CheckOptions { fast_path: false, ..CheckOptions::default() });
            prop_assert_eq!(verdict(&fast), verdict(&slow), "history:\n{}", describe(&history));
            prop_assert!(verdict(&fast).is_some());
            if class == Class::NoDeletesNoFailures {
                prop_assert!(decided_everywhere(&fast), "declined:\n{}", describe(&history));
            }
        }
    }
}

#[test]
fn the_generator_makes_both_verdicts_and_the_fast_path_decides_most() {
    // Guards the properties above against testing one side only, and measures the coverage
    // of the fast path on histories with deletes and failed cas.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut linearizable, mut violations, mut decided, mut total) = (0, 0, 0, 0);
    for _ in 0..1_000 {
        let spec = history_spec(4, 6).new_tree(&mut runner).expect("strategy").current();
        let history = build(&spec, Class::Any);
        let report = check(&history, &CheckOptions::default());
        match report.verdict {
            Verdict::Linearizable => linearizable += 1,
            Verdict::Violation(_) => violations += 1,
            Verdict::Unknown(_) => panic!("tiny history left undecided"),
        }
        total += report.partitions.len();
        decided += report.partitions.iter().filter(|p| p.fast_path == FastPath::Decided).count();
    }
    println!("{linearizable} linearizable, {violations} violations; {decided}/{total} decided");
    assert!(linearizable > 200 && violations > 200, "{linearizable} / {violations}");
    assert!(decided * 100 >= total * 95, "the fast path decided {decided} of {total}");
}
