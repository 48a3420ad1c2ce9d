//! Runs every script in `tests/scenarios/` (see `conclave_core::raft::scenario` for the language).
//! Each script drives an in-memory cluster whose safety invariants are checked after every step.

use std::path::Path;

use conclave_core::raft::scenario::run_script;

#[test]
fn scenario_scripts() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&directory)
        .expect("scenario directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "expected the scenario scripts, found {}", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().expect("file name").to_string_lossy().to_string();
        let script = std::fs::read_to_string(path).expect("readable script");
        match run_script(&name, &script) {
            Ok(()) => println!("ok   {name}"),
            Err(failure) => {
                println!("FAIL {failure}");
                failures.push(name);
            }
        }
    }
    assert!(failures.is_empty(), "failing scenarios: {failures:?}");
}
