//! Property tests: on small random histories — some linearizable by construction, some with a
//! mutated output — this crate's checker must agree with stateright's `LinearizabilityTester`
//! (driven by `conclave_checker::spec::KvSpec`) and with a brute-force search written here.
//!
//! Stateright's tester can only express an unknown outcome as an operation still in flight at
//! the end, so the stateright property gives `info` operations only as each client's last
//! operation. The brute-force property also has clients that give up on an operation and go on
//! with the next one (`info` in the middle), which this crate accepts.

use crate::oracle;

use conclave_checker::spec::{KvSpec, call_of, fill_outputs, observed_ret};
use conclave_checker::{
    CheckOptions, CmpOp, Compare, History, KeyValue, Op, Operation, Range, Status, Txn, TxnOp,
    Verdict, check,
};
use oracle::{brute_force_verdict, memo_verdict, parts};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

const KEYS: [&str; 3] = ["a", "ab", "b"];
const VALUES: [&str; 3] = ["1", "2", "3"];

#[derive(Clone, Debug)]
struct OpSpec {
    kind: u8,
    key: u8,
    value: u8,
    expected: u8,
    think: u8,
    duration: u8,
    point: u8,
    status: u8,
    applied: bool,
    recorded: bool,
}

#[derive(Clone, Debug)]
struct HistorySpec {
    clients: Vec<Vec<OpSpec>>,
    mutation: Option<(u8, u8)>,
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    (any::<[u8; 8]>(), any::<bool>(), any::<bool>()).prop_map(|(bytes, applied, recorded)| OpSpec {
        kind: bytes[0],
        key: bytes[1],
        value: bytes[2],
        expected: bytes[3],
        think: bytes[4],
        duration: bytes[5],
        point: bytes[6],
        status: bytes[7],
        applied,
        recorded,
    })
}

fn history_spec(max_ops_per_client: usize) -> impl Strategy<Value = HistorySpec> {
    (
        prop::collection::vec(prop::collection::vec(op_spec(), 0..=max_ops_per_client), 1..=3),
        prop::option::weighted(0.5, any::<(u8, u8)>()),
    )
        .prop_map(|(clients, mutation)| HistorySpec { clients, mutation })
}

fn make_op(spec: &OpSpec) -> Op {
    let key = KEYS[spec.key as usize % 3].to_owned();
    let other = KEYS[(spec.key as usize + 1) % 3].to_owned();
    let value = VALUES[spec.value as usize % 3].to_owned();
    let expected = match spec.expected % 4 {
        3 => None,
        index => Some(VALUES[index as usize].to_owned()),
    };
    match spec.kind % 8 {
        0 | 7 => Op::Get { key, value: None },
        1 => Op::Put { key, value },
        2 => Op::Delete { key, found: None },
        3 => Op::Cas { key, expected, value, success: false },
        4 => Op::PutIfAbsent { key, value, success: false },
        5 => {
            let compare = match (spec.value / 3) % 3 {
                0 => Compare::Equals { key: key.clone(), expected },
                1 => Compare::Value { key: key.clone(), cmp: CmpOp::Less, value: "2".to_owned() },
                _ => Compare::Exists { key: key.clone(), exists: true },
            };
            Op::Txn(Txn {
                compare: vec![compare],
                success: vec![
                    TxnOp::Put { key: other.clone(), value },
                    TxnOp::Get { key: key.clone(), value: None },
                ],
                failure: vec![TxnOp::Get { key: other, value: None }, TxnOp::Delete { key }],
                succeeded: false,
            })
        }
        _ => Op::Range(Range {
            prefix: ["", "a", "b"][spec.value as usize % 3].to_owned(),
            start_after: None,
            limit: if spec.expected.is_multiple_of(2) { None } else { Some(1) },
            kvs: Vec::new(),
            more: None,
        }),
    }
}

/// Changes one output of an `ok` operation so that it (usually) no longer matches.
fn mutate(op: &mut Op, how: u8) {
    let other_value = |current: &Option<String>| -> Option<String> {
        let index = current
            .as_ref()
            .map_or(0, |value| VALUES.iter().position(|v| v == value).unwrap_or(0) + 1);
        let next = (index + 1 + how as usize % 3) % 4;
        if next == 0 { None } else { Some(VALUES[next - 1].to_owned()) }
    };
    match op {
        Op::Get { value, .. } => *value = other_value(value),
        Op::Put { value, .. } => {
            *value = other_value(&Some(value.clone())).unwrap_or_else(|| "9".into())
        }
        Op::Delete { found, .. } => *found = Some(!found.unwrap_or(false)),
        Op::Cas { success, .. } | Op::PutIfAbsent { success, .. } => *success = !*success,
        Op::Txn(txn) => {
            if how.is_multiple_of(2) {
                txn.succeeded = !txn.succeeded;
            } else {
                for sub in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
                    if let TxnOp::Get { value, .. } = sub {
                        *value = other_value(value);
                    }
                }
            }
        }
        Op::Range(range) => match how % 3 {
            0 => {
                range.kvs.pop();
            }
            1 => {
                range.kvs.push(KeyValue { key: "b".into(), value: VALUES[how as usize % 3].into() })
            }
            _ => range.more = Some(!range.more.unwrap_or(false)),
        },
    }
}

/// Builds the history: outputs computed by applying the operations that take effect to the
/// reference model in the order of their linearization points, then perhaps one mutation.
fn build(spec: &HistorySpec, info_anywhere: bool) -> History {
    struct Planned {
        operation: Operation,
        point: Option<u64>,
        recorded: bool,
    }
    let mut planned: Vec<Planned> = Vec::new();
    for (client, ops) in spec.clients.iter().enumerate() {
        let mut time = client as u64;
        for (index, op_spec) in ops.iter().enumerate() {
            let call = time + u64::from(op_spec.think % 4);
            let ret = call + 1 + u64::from(op_spec.duration % 6);
            time = ret + 1;
            let point = call + u64::from(op_spec.point) % (ret - call + 1);
            let last = index + 1 == ops.len();
            let status = match op_spec.status % 8 {
                0 if info_anywhere || last => Status::Info,
                1 => Status::Fail,
                _ => Status::Ok,
            };
            let (ret, point) = match status {
                Status::Ok => (Some(ret), Some(point)),
                Status::Fail => (Some(ret), None),
                // Unknown outcome: it may take effect even after the client gave up.
                Status::Info => {
                    (None, op_spec.applied.then_some(point + u64::from(op_spec.think % 7)))
                }
            };
            let operation =
                Operation { client: client as u64, call, ret, status, op: make_op(op_spec) };
            planned.push(Planned { operation, point, recorded: op_spec.recorded });
        }
    }
    let mut order: Vec<usize> =
        (0..planned.len()).filter(|&i| planned[i].point.is_some()).collect();
    order.sort_by_key(|&i| (planned[i].point, i));
    let mut model = KvSpec::default();
    for index in order {
        let ret = model.invoke(&call_of(&planned[index].operation.op));
        if planned[index].operation.status == Status::Ok {
            fill_outputs(&mut planned[index].operation.op, ret);
        }
    }
    // Optional outputs are sometimes left unrecorded, as a client may not report them.
    for entry in &mut planned {
        if !entry.recorded {
            match &mut entry.operation.op {
                Op::Delete { found, .. } => *found = None,
                Op::Range(range) => range.more = None,
                _ => {}
            }
        }
    }
    let mut ops: Vec<Operation> = planned.into_iter().map(|entry| entry.operation).collect();
    if let Some((which, how)) = spec.mutation {
        let completed: Vec<usize> =
            (0..ops.len()).filter(|&i| ops[i].status == Status::Ok).collect();
        if !completed.is_empty() {
            let index = completed[which as usize % completed.len()];
            mutate(&mut ops[index].op, how);
        }
    }
    History::new(ops).expect("generated histories are valid")
}

/// Stateright's verdict. Events in time order, calls before returns at equal times (intervals
/// are closed); failed operations are left out, `info` ones are invoked and never return.
fn stateright_verdict(history: &History) -> bool {
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (index, operation) in history.ops().iter().enumerate() {
        if operation.status == Status::Fail {
            continue;
        }
        events.push((operation.call, false, index));
        if operation.status == Status::Ok {
            events.push((operation.ret.expect("ok has a return"), true, index));
        }
    }
    events.sort();
    let mut tester = LinearizabilityTester::new(KvSpec::default());
    for (_, is_return, index) in events {
        let operation = &history.ops()[index];
        let result = if is_return {
            tester.on_return(operation.client, observed_ret(&operation.op))
        } else {
            tester.on_invoke(operation.client, call_of(&operation.op))
        };
        if let Err(error) = result {
            panic!("history not expressible in stateright: {error}");
        }
    }
    tester.is_consistent()
}

fn our_verdict(history: &History) -> bool {
    let report = check(history, &CheckOptions::default());
    match &report.verdict {
        Verdict::Linearizable => true,
        Verdict::Violation(violation) => {
            // The explanation is a non-empty set of completed operations.
            assert!(!violation.failing_ops.is_empty());
            assert!(violation.failing_ops.iter().all(|&i| history.ops()[i].status == Status::Ok));
            false
        }
        Verdict::Unknown(unknown) => panic!("tiny history left undecided: {unknown:?}"),
    }
}

fn describe(history: &History) -> String {
    conclave_checker::to_jsonl_string(history)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_stateright(spec in history_spec(3)) {
        let history = build(&spec, false);
        let ours = our_verdict(&history);
        let theirs = stateright_verdict(&history);
        prop_assert_eq!(ours, theirs, "history:\n{}", describe(&history));
        prop_assert_eq!(ours, brute_force_verdict(&history), "history:\n{}", describe(&history));
        if spec.mutation.is_none() {
            prop_assert!(ours, "linearizable by construction:\n{}", describe(&history));
        }
    }

    #[test]
    fn agrees_with_brute_force_when_clients_give_up(spec in history_spec(4)) {
        let history = build(&spec, true);
        let ours = our_verdict(&history);
        prop_assert_eq!(ours, brute_force_verdict(&history), "history:\n{}", describe(&history));
        if spec.mutation.is_none() {
            prop_assert!(ours, "linearizable by construction:\n{}", describe(&history));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// Medium histories (four clients, up to 24 operations) against the memoized definition,
    /// and the explanation of every violation checked against its claim: the failing set cannot
    /// be linearized whatever the other operations did, and no smaller set in it has that
    /// property by removing one operation.
    #[test]
    fn explanations_are_minimal_and_fail(spec in history_spec(6)) {
        let mut spec = spec;
        spec.clients.resize(4, Vec::new());
        let history = build(&spec, true);
        let all: Vec<usize> = (0..history.len()).collect();
        let expected = memo_verdict(&parts(&history, &all));
        let report = check(&history, &CheckOptions::default());
        match &report.verdict {
            Verdict::Linearizable => prop_assert!(expected, "history:\n{}", describe(&history)),
            Verdict::Violation(violation) => {
                prop_assert!(!expected, "history:\n{}", describe(&history));
                prop_assert!(violation.minimal);
                let failing = &violation.failing_ops;
                prop_assert!(
                    !memo_verdict(&parts(&history, failing)),
                    "explanation {:?} does not fail:\n{}", failing, describe(&history)
                );
                for removed in failing {
                    let smaller: Vec<usize> =
                        failing.iter().copied().filter(|index| index != removed).collect();
                    prop_assert!(
                        memo_verdict(&parts(&history, &smaller)),
                        "explanation {:?} is not minimal ({} can go):\n{}",
                        failing, removed, describe(&history)
                    );
                }
            }
            Verdict::Unknown(unknown) => prop_assert!(false, "undecided: {:?}", unknown),
        }
    }
}

#[test]
fn the_generators_produce_both_verdicts() {
    // Guards the properties above against testing only one side.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = [0usize; 2];
    for _ in 0..400 {
        let spec = history_spec(3).new_tree(&mut runner).expect("strategy").current();
        seen[usize::from(our_verdict(&build(&spec, false)))] += 1;
    }
    assert!(seen[0] > 40 && seen[1] > 40, "violations / linearizable: {seen:?}");
}
