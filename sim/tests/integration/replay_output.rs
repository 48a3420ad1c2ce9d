//! `conclave-sim replay` as a person runs it: a few lines of plain words on the terminal, and
//! the five files with everything else.

use std::process::Command;

#[test]
fn a_replay_prints_a_short_plain_summary_and_writes_its_files() {
    let out = std::env::temp_dir().join(format!("conclave-replay-output-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_conclave-sim"))
        .args(["replay", "--seed", "7", "--out"])
        .arg(&out)
        .output()
        .expect("run conclave-sim");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.lines().count() <= 8, "a summary, not the report:\n{printed}");
    assert!(printed.contains("outcome: passed"), "{printed}");
    for name in ["config.json", "schedule.txt", "report.txt", "history.jsonl", "timeline.html"] {
        assert!(out.join(name).is_file(), "{name} written");
    }
    // Plain words, not Rust's Debug formats, on screen and in the report.
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    for text in [printed.as_ref(), report.as_str()] {
        for debug in ["{", "}", "Some(", "ObservedStats", "Pass", "Fail"] {
            assert!(!text.contains(debug), "{debug:?} in:\n{text}");
        }
    }
    assert!(report.contains("faults fired: "), "{report}");
    assert!(report.contains("fault log:"), "{report}");
    let _ = std::fs::remove_dir_all(&out);
}
