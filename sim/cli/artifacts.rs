//! What a replay leaves behind for a person: the config (replayable), the schedule as readable
//! steps, the report with the fault log, the client history and the checker's HTML timeline.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use conclave_checker::{CheckOptions, check, render_timeline_html, to_jsonl_string};
use conclave_sim::{RunConfig, RunReport};

pub fn describe(report: &RunReport) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "outcome: {:?}", report.outcome);
    let _ = writeln!(text, "checker verdict: {}", report.verdict);
    let _ = writeln!(text, "trace hash: {:016x}", report.trace_hash);
    let _ = writeln!(
        text,
        "operations: {} ({} ok, {} unknown); simulated {} ms in {} steps",
        report.operations,
        report.operations_ok,
        report.operations_unknown,
        report.sim_ms,
        report.steps
    );
    let _ = writeln!(
        text,
        "excused: {} lease reads, {} lease overlaps (a clock the lease rested on drifted past \
         its bound during it)",
        report.excused_lease_reads, report.excused_lease_overlaps
    );
    let _ = writeln!(text, "faults fired: {:?}", report.faults_fired);
    let _ = writeln!(text, "observed: {:?}", report.stats);
    if !report.node_stops.is_empty() {
        let _ =
            writeln!(text, "nodes that stopped on their own, and damage done to disks at rest:");
        for stop in &report.node_stops {
            let _ = writeln!(text, "  {stop}");
        }
    }
    let _ = writeln!(text, "fault log:");
    for line in &report.nemesis_log {
        let _ = writeln!(text, "  {line}");
    }
    text
}

pub fn write(directory: &Path, config: &RunConfig, report: &RunReport) -> Result<()> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let write = |name: &str, contents: &str| {
        let path = directory.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    write("config.json", &serde_json::to_string_pretty(config)?)?;
    write("schedule.txt", &format!("{config}\n"))?;
    write("report.txt", &describe(report))?;
    if let Some(history) = &report.history {
        write("history.jsonl", &to_jsonl_string(history))?;
        let verdict = check(history, &CheckOptions::default());
        write("timeline.html", &render_timeline_html(history, &verdict))?;
    }
    Ok(())
}
