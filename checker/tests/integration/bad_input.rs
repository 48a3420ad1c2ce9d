//! Bad input is a clear error naming the line, exit code 3, never a panic and never a verdict.

use std::path::PathBuf;

use conclave_checker::cli::{CheckArgs, EXIT_BAD_INPUT, Spill, run_check};
use conclave_checker::{HistoryErrorKind, Location, parse_jsonl};
use proptest::prelude::*;

const GOOD: &str =
    r#"{"client":1,"op":"put","key":"k","value":"v","call":1,"return":2,"status":"ok"}"#;

fn write_file(name: &str, text: &str) -> PathBuf {
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad_input");
    std::fs::create_dir_all(&directory).expect("create test directory");
    let path = directory.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// Runs the verb on `text`, in memory and from a spill (the same error either way); returns
/// the exit code, stdout and stderr.
fn run(name: &str, text: &str) -> (u8, String, String) {
    let path = write_file(name, text);
    let args = CheckArgs {
        file: path,
        html: None,
        no_html: true,
        budget_steps: 1_000_000,
        timeout_ms: None,
        no_minimize: false,
        no_fast_path: false,
        spill: Spill::Never,
        spill_dir: None,
    };
    let run = |args: &CheckArgs| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_check(args, &mut out, &mut err);
        (code, String::from_utf8(out).expect("utf-8"), String::from_utf8(err).expect("utf-8"))
    };
    let in_memory = run(&args);
    let spilled = run(&CheckArgs { spill: Spill::Always, ..args });
    assert_eq!(spilled, in_memory, "{name}");
    in_memory
}

#[test]
fn each_kind_of_bad_input_names_its_line_and_exits_3() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", format!("{GOOD}\n{{\"client\":1,\"op\":"), "line 2: malformed JSON"),
        ("not_object", format!("{GOOD}\n\n[1, 2, 3]\n"), "line 3: expected a JSON object"),
        (
            "unknown_kind",
            format!("{GOOD}\n{}", GOOD.replace("\"put\"", "\"increment\"")),
            "line 2: unknown op kind \"increment\"",
        ),
        (
            "unknown_status",
            GOOD.replace("\"ok\"", "\"maybe\""),
            "line 1: unknown status \"maybe\"",
        ),
        (
            "missing_field",
            r#"{"client":1,"op":"cas","key":"k","value":"v","call":1,"return":2,"status":"ok","success":true}"#.to_owned(),
            "line 1: missing field `expected`",
        ),
        (
            "wrong_type",
            GOOD.replace("\"call\":1", "\"call\":\"soon\""),
            "line 1: field `call` must be a non-negative integer",
        ),
        (
            "two_open",
            format!(
                "{}\n{}\n{}",
                r#"{"client":7,"op":"put","key":"k","value":"a","call":10,"return":20,"status":"ok"}"#,
                r#"{"client":8,"op":"get","key":"k","value":"a","call":30,"return":40,"status":"ok"}"#,
                r#"{"client":7,"op":"get","key":"k","value":"a","call":15,"return":25,"status":"ok"}"#
            ),
            "line 3: client 7 has two operations open at once: this one is called at 15 while the \
             one at line 1 (call 10, return 20) is still open",
        ),
        (
            "return_before_call",
            GOOD.replace("\"call\":1", "\"call\":5"),
            "line 1: returns at 2, before its call at 5",
        ),
        (
            "ok_without_return",
            GOOD.replace(",\"return\":2", ""),
            "line 1: status \"ok\" needs a `return` time",
        ),
        ("zero_limit", r#"{"client":1,"op":"range","prefix":"","limit":0,"call":1,"status":"info"}"#.to_owned(), "line 1: range `limit` must be at least 1"),
    ];
    for (name, text, expected) in cases {
        let (code, out, err) = run(name, &text);
        assert_eq!(code, EXIT_BAD_INPUT, "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err:?} should contain {expected:?}");
        assert!(!out.contains("verdict"), "{name}: no verdict for bad input, got {out}");
    }
}

#[test]
fn unreadable_files_and_invalid_utf8_are_bad_input() {
    let args = CheckArgs {
        file: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no/such/file.jsonl"),
        html: None,
        no_html: true,
        budget_steps: 1_000,
        timeout_ms: None,
        no_minimize: false,
        no_fast_path: false,
        spill: Spill::Auto,
        spill_dir: None,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_check(&args, &mut out, &mut err), EXIT_BAD_INPUT);

    let path = write_file("latin1.jsonl", "");
    std::fs::write(&path, [GOOD.as_bytes(), b"\n{\"key\":\"\xe9\"}\n"].concat()).expect("write");
    let args = CheckArgs { file: path, ..args };
    let mut err = Vec::new();
    assert_eq!(run_check(&args, &mut out, &mut err), EXIT_BAD_INPUT);
    assert!(String::from_utf8_lossy(&err).contains("line 2: malformed JSON: invalid UTF-8"));
}

#[test]
fn the_binary_exits_3_on_bad_input_and_on_a_bad_command_line() {
    let binary = env!("CARGO_BIN_EXE_conclave-checker");
    let path = write_file("binary_bad.jsonl", &format!("{GOOD}\nnot json\n"));
    let output = std::process::Command::new(binary)
        .args(["check", path.to_str().expect("utf-8 path"), "--no-html"])
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 2: malformed JSON"));

    let output = std::process::Command::new(binary)
        .args(["check", "--budget-steps", "many", "x.jsonl"])
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(3), "a usage error is bad input, not 'unknown'");
    let output =
        std::process::Command::new(binary).args(["check", "--help"]).output().expect("run");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--budget-steps") && help.contains("--timeout-ms") && help.contains("--html")
    );
}

#[test]
fn an_oversized_line_is_bad_input_and_names_its_line() {
    let long = format!("{GOOD}\n{{\"client\":2,\"key\":\"{}\"}}\n", "x".repeat(2 << 20));
    let (code, out, err) = run("long_line", &long);
    assert_eq!(code, EXIT_BAD_INPUT, "{err}");
    assert!(err.contains("line 2: line is longer than the limit of 1048576 bytes"), "{err}");
    assert!(!out.contains("verdict"));
}

#[test]
fn parse_errors_are_values_with_a_location() {
    let error = parse_jsonl(&format!("{GOOD}\n{GOOD}\n{{}}\n")).unwrap_err();
    assert_eq!(error.location, Location::Line(3));
    assert_eq!(error.kind, HistoryErrorKind::MissingField("client".into()));
}

proptest! {
    /// Arbitrary text, and valid lines with bytes flipped, never panic the parser or the
    /// checker: they are either a history (and get a verdict) or an error with a line.
    #[test]
    fn garbage_never_panics(
        text in "[ -~\n]{0,300}",
        flips in prop::collection::vec((0usize..400, any::<u8>()), 0..6),
    ) {
        let _ = parse_jsonl(&text);
        let mut bytes = format!("{GOOD}\n{}\n", GOOD.replace("put", "get")).into_bytes();
        for (position, byte) in flips {
            let len = bytes.len();
            bytes[position % len] = byte;
        }
        let mangled = String::from_utf8_lossy(&bytes);
        match parse_jsonl(&mangled) {
            Ok(history) => {
                let _ = conclave_checker::check(&history, &conclave_checker::CheckOptions::default());
            }
            Err(error) => prop_assert!(matches!(error.location, Location::Line(1..=3))),
        }
    }
}
