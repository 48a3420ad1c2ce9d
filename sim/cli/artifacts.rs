//! What a replay leaves behind for a person: the config (replayable), the schedule as readable
//! steps, the report with the fault log, the client history and the checker's HTML timeline.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use conclave_checker::{CheckOptions, check, render_timeline_html, to_jsonl_string};
use conclave_sim::{RunConfig, RunReport};

/// The whole report (`report.txt`): outcome, counts, every node stop and the fault log.
pub fn describe(report: &RunReport) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "outcome: {}", report.outcome);
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
    let _ = writeln!(text, "faults fired: {}", faults_fired(report));
    let _ = writeln!(text, "observed:\n{}", report.stats);
    if !report.node_stops.is_empty() {
        let _ =
            writeln!(text, "nodes that stopped on their own, and damage done to disks at rest:");
        for (stop, times) in counted(&report.node_stops) {
            match times {
                1 => {
                    let _ = writeln!(text, "  {stop}");
                }
                _ => {
                    let _ = writeln!(text, "  {stop} ({times} times)");
                }
            }
        }
    }
    let _ = writeln!(text, "fault log:");
    for line in &report.nemesis_log {
        let _ = writeln!(text, "  {line}");
    }
    text
}

/// What a replay prints: a few lines, the rest is in the files it writes to `directory`.
pub fn summary(config: &RunConfig, report: &RunReport, directory: &Path) -> String {
    let mut text = String::new();
    let schedule = config.to_string();
    let first_line = schedule.lines().next().unwrap_or_default();
    let _ = writeln!(text, "{first_line} ({} faults scheduled)", config.schedule.len());
    let outcome = report.outcome.to_string();
    let mut outcome_lines = outcome.lines();
    let _ = writeln!(text, "outcome: {}", outcome_lines.next().unwrap_or_default());
    for line in outcome_lines.by_ref().take(SUMMARY_DETAIL_LINES) {
        let _ = writeln!(text, "  {line}");
    }
    if outcome_lines.next().is_some() {
        let _ = writeln!(text, "  … (the rest in report.txt)");
    }
    let _ = writeln!(
        text,
        "checked: {} operations ({} ok, {} unknown), {}; trace hash {:016x}",
        report.operations,
        report.operations_ok,
        report.operations_unknown,
        report.verdict,
        report.trace_hash
    );
    let _ = writeln!(
        text,
        "faults fired: {}; {} node stops and disk damages, {} restarts checked (see report.txt)",
        faults_fired(report),
        report.node_stops.len(),
        report.stats.restarts_checked
    );
    let _ = writeln!(
        text,
        "wrote config.json, schedule.txt, report.txt, history.jsonl, timeline.html to {}",
        directory.display()
    );
    text
}

/// How many lines of a failure's detail a replay prints before pointing to the report.
const SUMMARY_DETAIL_LINES: usize = 8;

fn faults_fired(report: &RunReport) -> String {
    if report.faults_fired.is_empty() {
        return "none".to_string();
    }
    let names: Vec<&str> = report
        .faults_fired
        .iter()
        .map(|family| conclave_sim::nemesis::family_name(*family))
        .collect();
    names.join(", ")
}

/// Each distinct line with how many times it came, in the order of first appearance.
fn counted(lines: &[String]) -> Vec<(&str, usize)> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for line in lines {
        match counts.iter_mut().find(|(seen, _)| *seen == line.as_str()) {
            Some((_, times)) => *times += 1,
            None => counts.push((line.as_str(), 1)),
        }
    }
    counts
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
