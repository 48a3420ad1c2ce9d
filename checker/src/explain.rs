//! Human-readable renderings of operations and reports, shared by the CLI and the HTML timeline.

use std::fmt::Write as _;

use crate::check::{CheckReport, FastPath, Verdict};
use crate::history::{Compare, History, KeyValue, Op, Range, Status, TxnOp};

fn value_text(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    }
}

fn range_text(range: &Range, observed: bool) -> String {
    let mut text = format!("range {:?}", range.prefix);
    if let Some(start_after) = &range.start_after {
        let _ = write!(text, " after {start_after:?}");
    }
    if let Some(limit) = range.limit {
        let _ = write!(text, " limit {limit}");
    }
    if observed {
        let pairs: Vec<String> =
            range.kvs.iter().map(|KeyValue { key, value }| format!("{key}={value:?}")).collect();
        let _ = write!(text, " -> [{}]", pairs.join(", "));
        match range.more {
            Some(true) => text.push_str(" more"),
            Some(false) => text.push_str(" no more"),
            None => {}
        }
    } else {
        text.push_str(" -> ?");
    }
    text
}

fn compare_text(compare: &Compare) -> String {
    match compare {
        Compare::Equals { key, expected: Some(expected) } => format!("{key} == {expected:?}"),
        Compare::Equals { key, expected: None } => format!("{key} absent"),
        Compare::Value { key, cmp, value } => format!("{key} {} {value:?}", cmp.as_str()),
        Compare::Exists { key, exists: true } => format!("{key} exists"),
        Compare::Exists { key, exists: false } => format!("{key} does not exist"),
    }
}

fn txn_op_text(sub: &TxnOp, observed: bool) -> String {
    match sub {
        TxnOp::Get { key, value } if observed => {
            format!("get {key} -> {}", value_text(value.as_deref()))
        }
        TxnOp::Get { key, .. } => format!("get {key}"),
        TxnOp::Put { key, value } => format!("put {key} {value:?}"),
        TxnOp::Delete { key } => format!("delete {key}"),
        TxnOp::Range(range) if observed => range_text(range, true),
        TxnOp::Range(range) => {
            let full = range_text(range, false);
            full.trim_end_matches(" -> ?").to_owned()
        }
    }
}

/// One line describing what an operation did and saw, e.g. `cas r "3" -> "0": succeeded`.
pub fn describe_op(op: &Op, status: Status) -> String {
    let observed = status == Status::Ok;
    let outcome = |success: bool, yes: &str, no: &str| -> String {
        if !observed {
            "?".to_owned()
        } else if success {
            yes.to_owned()
        } else {
            no.to_owned()
        }
    };
    match op {
        Op::Get { key, value } if observed => {
            format!("get {key} -> {}", value_text(value.as_deref()))
        }
        Op::Get { key, .. } => format!("get {key} -> ?"),
        Op::Put { key, value } => format!("put {key} {value:?}"),
        Op::Delete { key, found } => match (observed, found) {
            (true, Some(true)) => format!("delete {key} -> found"),
            (true, Some(false)) => format!("delete {key} -> not found"),
            _ => format!("delete {key}"),
        },
        Op::Cas { key, expected, value, success } => format!(
            "cas {key} {} -> {value:?}: {}",
            value_text(expected.as_deref()),
            outcome(*success, "succeeded", "failed")
        ),
        Op::PutIfAbsent { key, value, success } => format!(
            "put_if_absent {key} {value:?}: {}",
            outcome(*success, "created", "already present")
        ),
        Op::Txn(txn) => {
            let compares: Vec<String> = txn.compare.iter().map(compare_text).collect();
            let branch = |ops: &[TxnOp], taken: bool| -> String {
                let ops: Vec<String> =
                    ops.iter().map(|sub| txn_op_text(sub, observed && taken)).collect();
                ops.join("; ")
            };
            format!(
                "txn if [{}] then [{}] else [{}]: {}",
                compares.join(", "),
                branch(&txn.success, txn.succeeded),
                branch(&txn.failure, !txn.succeeded),
                outcome(txn.succeeded, "then", "else")
            )
        }
        Op::Range(range) => range_text(range, observed),
    }
}

/// One line per operation: where it came from, who, when, what.
pub fn describe_indexed(history: &History, index: usize) -> String {
    let operation = &history.ops()[index];
    let when = match operation.ret {
        Some(ret) => format!("[{}, {}]", operation.call, ret),
        None => format!("[{}, ?]", operation.call),
    };
    format!(
        "{}  client {}  {}  {}  {}",
        history.location(index),
        operation.client,
        when,
        operation.status.as_str(),
        describe_op(&operation.op, operation.status)
    )
}

/// A multi-line summary of a report (without timing, which the caller measures).
pub fn summarize(history: &History, report: &CheckReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "verdict: {}{}",
        report.verdict.as_str(),
        if report.is_vacuous() { " (vacuously: nothing to check)" } else { "" }
    );
    let fast = report.partitions.iter().filter(|p| p.fast_path == FastPath::Decided).count();
    let _ = writeln!(
        text,
        "operations: {} ({} left out as failed or unobserved reads; {} independent {}, {} decided \
         by the unique-value fast path; {} search steps)",
        report.op_count,
        report.dropped_op_count,
        report.partitions.len(),
        if report.partitions.len() == 1 { "partition" } else { "partitions" },
        fast,
        report.steps
    );
    match &report.verdict {
        Verdict::Linearizable => {}
        Verdict::Unknown(unknown) => {
            let _ =
                writeln!(text, "undecided: {} on keys {:?}", unknown.reason.as_str(), unknown.keys);
        }
        Verdict::Violation(violation) => {
            let _ = writeln!(
                text,
                "failing keys: {:?} ({} operations on them; {} failing {})",
                violation.keys,
                violation.partition_op_count,
                violation.violating_partitions,
                if violation.violating_partitions == 1 { "partition" } else { "partitions" }
            );
            if let Some(rule) = violation.rule {
                let _ = writeln!(text, "why: {rule}");
            }
            let _ = writeln!(
                text,
                "{} failing operations: no order of them is valid, whatever the other operations \
                 did{}:",
                if violation.minimal { "minimal set of" } else { "set of" },
                if violation.minimal { "" } else { " (not minimized further)" },
            );
            for &index in &violation.failing_ops {
                let _ = writeln!(text, "  {}", describe_indexed(history, index));
            }
            if !violation.read_from.is_empty() {
                let _ = writeln!(
                    text,
                    "the writes they read from (implied: each is the only write of its value):"
                );
                for &index in &violation.read_from {
                    let _ = writeln!(text, "  {}", describe_indexed(history, index));
                }
            }
            if !violation.longest_prefix.is_empty() {
                let order: Vec<String> = violation
                    .longest_prefix
                    .iter()
                    .map(|&index| history.location(index).to_string())
                    .collect();
                let _ = writeln!(
                    text,
                    "longest valid order of them: {}; then none of the rest can take effect",
                    order.join(" -> ")
                );
            }
        }
    }
    text
}
