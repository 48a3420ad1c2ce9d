//! The `conclave-checker check` binary: exit codes 0/1/2/4, and what it prints.

use std::path::PathBuf;
use std::process::{Command, Output};

use conclave_checker::generate::{GenerateOptions, linearizable_history};
use conclave_checker::{History, Op, Operation, to_jsonl_string};

fn directory(name: &str) -> PathBuf {
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("create test directory");
    directory
}

fn run_in(directory: &PathBuf, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conclave-checker"))
        .args(args)
        .current_dir(directory)
        .output()
        .expect("run the binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn linearizable_history_exits_0_and_writes_no_timeline_unless_asked() {
    let dir = directory("linearizable");
    let history =
        linearizable_history(&GenerateOptions { op_count: 500, ..GenerateOptions::default() });
    std::fs::write(dir.join("ok.jsonl"), to_jsonl_string(&history)).expect("write");
    let output = run_in(&dir, &["check", "ok.jsonl"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let text = stdout(&output);
    assert!(text.contains("verdict: linearizable"), "{text}");
    assert!(text.contains("operations: 500 "), "{text}");
    assert!(text.contains("ms to check"), "{text}");
    assert!(!dir.join("ok.timeline.html").exists());

    let output = run_in(&dir, &["check", "ok.jsonl", "--html", "asked.html"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("timeline: asked.html"));
    let html = std::fs::read_to_string(dir.join("asked.html")).expect("timeline written");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("linearizable"));
}

#[test]
fn violation_exits_1_and_prints_the_failing_operations_and_the_timeline() {
    let dir = directory("violation");
    let history = History::new(vec![
        Operation::ok(1, 0, 10, Op::put("x", "1")),
        Operation::ok(2, 20, 30, Op::put("x", "2")),
        Operation::ok(3, 40, 50, Op::get("x", Some("1"))),
        Operation::ok(4, 0, 5, Op::put("y", "1")),
    ])
    .expect("valid");
    std::fs::write(dir.join("stale.jsonl"), to_jsonl_string(&history)).expect("write");
    let output = run_in(&dir, &["check", "stale.jsonl"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("verdict: violation"), "{text}");
    assert!(text.contains("operations: 4 "), "{text}");
    assert!(text.contains("failing keys: [\"x\"]"), "{text}");
    assert!(text.contains("why: stale read"), "{text}");
    let (failing, context) =
        text.split_once("the writes they read from").expect("the write read from is named");
    assert!(failing.contains("line 2  client 2  [20, 30]  ok  put x \"2\""), "{text}");
    assert!(failing.contains("line 3  client 3  [40, 50]  ok  get x -> \"1\""), "{text}");
    // The first put is implied (the only write of "1"), so not part of the minimal set...
    assert!(!failing.contains("line 1  client 1"), "the first put is not needed: {text}");
    // ...but named as what the read read from.
    assert!(context.contains("line 1  client 1  [0, 10]  ok  put x \"1\""), "{text}");
    assert!(text.contains("timeline: stale.timeline.html"), "{text}");
    let html = std::fs::read_to_string(dir.join("stale.timeline.html")).expect("timeline written");
    // Self-contained: no scripts, styles or images fetched from anywhere.
    assert!(!html.contains("src=") && !html.contains("href=") && !html.contains("@import"));
    assert_eq!(html.matches(" failing\" data-op=").count(), 2);

    let output = run_in(&dir, &["check", "stale.jsonl", "--no-html", "--no-minimize"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!stdout(&output).contains("timeline:"));
}

#[test]
fn exhausted_budget_exits_2() {
    let dir = directory("unknown");
    let history =
        linearizable_history(&GenerateOptions { op_count: 2_000, ..GenerateOptions::default() });
    std::fs::write(dir.join("big.jsonl"), to_jsonl_string(&history)).expect("write");
    // Written values are unique, so the fast path decides without search steps...
    let output = run_in(&dir, &["check", "big.jsonl", "--budget-steps", "10"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("decided by the unique-value fast path; 0 search steps"));
    // ...and the search alone runs out.
    let output = run_in(&dir, &["check", "big.jsonl", "--budget-steps", "10", "--no-fast-path"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stdout(&output);
    assert!(text.contains("verdict: unknown") && text.contains("step budget exhausted"), "{text}");
    let output = run_in(&dir, &["check", "big.jsonl", "--timeout-ms", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).contains("time budget exhausted"));
}

#[test]
fn nothing_to_check_exits_4_with_a_warning() {
    let dir = directory("empty");
    std::fs::write(dir.join("empty.jsonl"), "\n\n").expect("write");
    let output = run_in(&dir, &["check", "empty.jsonl"]);
    assert_eq!(output.status.code(), Some(4));
    let text = stdout(&output);
    assert!(text.contains("verdict: linearizable (vacuously: nothing to check)"), "{text}");
    assert!(text.contains("warning: nothing to check: the history has no operations"), "{text}");

    // Only failed operations and a read of unknown outcome: nothing can affect the verdict.
    let history = History::new(vec![
        Operation::fail(1, 0, 1, Op::put("k", "1")),
        Operation::info(2, 0, Op::get("k", None)),
    ])
    .expect("valid");
    std::fs::write(dir.join("dropped.jsonl"), to_jsonl_string(&history)).expect("write");
    let output = run_in(&dir, &["check", "dropped.jsonl"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(stdout(&output).contains("every operation failed or is a read of unknown outcome"));
}

#[test]
fn a_violation_in_a_large_file_is_explained_by_line() {
    // Read as rows, checked, and the failing partition rebuilt for the report: the lines named
    // are the file's.
    let dir = directory("large");
    let mut ops = linearizable_history(&GenerateOptions {
        op_count: 20_000,
        key_count: 50,
        ..GenerateOptions::default()
    })
    .into_ops();
    let end = ops.iter().map(|op| op.ret.unwrap_or(op.call)).max().unwrap_or(0);
    ops.push(Operation::ok(900, end + 10, end + 11, Op::get("k0007", Some("never written"))));
    let history = History::new(ops).expect("valid");
    std::fs::write(dir.join("large.jsonl"), to_jsonl_string(&history)).expect("write");
    let output = run_in(&dir, &["check", "large.jsonl"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains("failing keys: [\"k0007\"]"), "{text}");
    assert!(text.contains("why: read of a value no operation can have written"), "{text}");
    assert!(text.contains("line 20001  client 900"), "{text}");
    let html = std::fs::read_to_string(dir.join("large.timeline.html")).expect("timeline");
    assert_eq!(html.matches(" failing\" data-op=").count(), 1);
}

/// The report, minus the line of times (which differ from run to run).
fn without_times(text: &str) -> String {
    text.lines().filter(|line| !line.starts_with("time: ")).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_spilled_check_prints_and_draws_what_the_in_memory_check_does() {
    let dir = directory("spill");
    // Transactions and ranges join keys; one read changed, so a joined partition fails; the
    // lines reversed, so that every partition's operations are scattered through the file.
    let mut ops = linearizable_history(&GenerateOptions {
        op_count: 3_000,
        key_count: 400,
        multi_key_per_mille: 10,
        ..GenerateOptions::default()
    })
    .into_ops();
    let linearizable = History::new(ops.clone()).expect("valid");
    // A read of a key some transaction compares: its partition joins several keys.
    let joined: Vec<String> = ops
        .iter()
        .filter_map(|op| match &op.op {
            Op::Txn(txn) => Some(txn.compare.first()?.key().to_owned()),
            _ => None,
        })
        .collect();
    let changed = ops
        .iter()
        .rposition(|op| {
            op.status == conclave_checker::Status::Ok
                && matches!(&op.op, Op::Get { key, .. } if joined.contains(key))
        })
        .expect("a completed get of a joined key");
    if let Op::Get { value, .. } = &mut ops[changed].op {
        *value = Some("never written".into());
    }
    ops.reverse();
    let violation = History::new(ops).expect("valid");
    std::fs::write(dir.join("bad.jsonl"), to_jsonl_string(&violation)).expect("write");
    std::fs::write(dir.join("ok.jsonl"), to_jsonl_string(&linearizable)).expect("write");
    let spill_dir = dir.join("spill-here");
    std::fs::create_dir_all(&spill_dir).expect("create");
    for (file, code) in [("bad.jsonl", 1), ("ok.jsonl", 0)] {
        let never = run_in(&dir, &["check", file, "--spill", "never", "--html", "never.html"]);
        let spill_arg = spill_dir.to_str().expect("utf-8 path");
        let always = run_in(
            &dir,
            &[
                "check",
                file,
                "--spill",
                "always",
                "--spill-dir",
                spill_arg,
                "--html",
                "always.html",
            ],
        );
        assert_eq!(never.status.code(), Some(code), "{}", stdout(&never));
        assert_eq!(always.status.code(), Some(code), "{}", String::from_utf8_lossy(&always.stderr));
        let (never_text, always_text) = (stdout(&never), stdout(&always));
        assert_eq!(
            without_times(&never_text).replace("never.html", "always.html"),
            without_times(&always_text)
        );
        let never_html = std::fs::read_to_string(dir.join("never.html")).expect("timeline");
        let always_html = std::fs::read_to_string(dir.join("always.html")).expect("timeline");
        assert_eq!(never_html, always_html, "{file}");
        // The spill directory is left as it was found.
        assert_eq!(std::fs::read_dir(&spill_dir).expect("list").count(), 0);
    }
    let text = stdout(&run_in(&dir, &["check", "bad.jsonl", "--spill", "always", "--no-html"]));
    assert!(text.contains("failing keys: [\"k") && text.contains("\", \"k"), "{text}");
}
