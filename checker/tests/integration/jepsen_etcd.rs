//! The 102 Jepsen etcd histories in `../shared/histories/jepsen-etcd/` must get the verdicts of
//! its `verdicts.tsv`. Skipped (with a message) when the directory is absent, e.g. in a clone
//! without the shared folder; when present, all of them are checked.

use std::path::PathBuf;

use conclave_checker::{CheckOptions, Verdict, check, parse_jsonl};

const HISTORY_COUNT: usize = 102;

#[test]
fn jepsen_etcd_verdicts_match() {
    let directory =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/histories/jepsen-etcd");
    if !directory.is_dir() {
        println!("skipped: {} is absent", directory.display());
        return;
    }
    let verdicts = std::fs::read_to_string(directory.join("verdicts.tsv")).unwrap();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for line in verdicts.lines().filter(|line| !line.trim().is_empty()) {
        let (name, expected) = line.split_once('\t').unwrap();
        let text = std::fs::read_to_string(directory.join(format!("{name}.jsonl"))).unwrap();
        let history = parse_jsonl(&text).unwrap_or_else(|error| panic!("{name}: {error}"));
        let report = check(&history, &CheckOptions::default());
        let actual = match &report.verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::Violation(violation) => {
                // The explanation must itself be a failing, non-empty subset of the history.
                assert!(!violation.failing_ops.is_empty(), "{name}");
                assert!(violation.minimal, "{name}: explanation should be fully minimized");
                assert_eq!(violation.keys, vec!["r".to_owned()], "{name}");
                "violation"
            }
            Verdict::Unknown(unknown) => panic!("{name}: unknown ({:?})", unknown.reason),
        };
        if actual != expected.trim() {
            mismatches.push(format!("{name}: expected {expected}, got {actual}"));
        }
        checked += 1;
    }
    assert_eq!(checked, HISTORY_COUNT, "verdicts.tsv should list every history");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    println!("checked {checked} jepsen-etcd histories; all verdicts match");
}
