//! The `check` verb: read a history file, check it, print the verdict, write the HTML timeline,
//! and return the exit code. `conclave-checker check` and (later) `conclave check` are thin
//! wrappers around [`run_check`].

use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::check::{CheckOptions, CheckReport, Verdict, check_table};
use crate::explain::summarize;
use crate::history::{History, OpIndex};
use crate::reader::read_table;
use crate::table::Table;
use crate::timeline_html::{BARS_MAX, render_timeline_html};

/// The history is linearizable.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// The history is not linearizable.
pub const EXIT_VIOLATION: u8 = 1;
/// A budget ran out before an answer: neither verdict is claimed.
pub const EXIT_UNKNOWN: u8 = 2;
/// The input could not be read or is not a valid history (or the arguments are wrong).
pub const EXIT_BAD_INPUT: u8 = 3;
/// The history has no operation that can affect the verdict (none at all, or only failed ones
/// and reads of unknown outcome): there was nothing to check.
pub const EXIT_NOTHING_TO_CHECK: u8 = 4;

/// For `--help` of whatever command wraps [`CheckArgs`].
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 linearizable, 1 violation, 2 unknown (budget \
     exhausted), 3 bad input, 4 nothing to check (no operation, or none that can affect the \
     verdict).";

/// Arguments of the `check` verb.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct CheckArgs {
    /// History to check: JSON Lines, one operation per line (format: checker/README.md).
    #[arg(value_name = "FILE.jsonl")]
    pub file: PathBuf,

    /// Write the HTML timeline to PATH, whatever the verdict. Without this option a timeline
    /// is written only for a violation, to FILE.timeline.html in the current directory.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,

    /// Never write an HTML timeline.
    #[arg(long, conflicts_with = "html")]
    pub no_html: bool,

    /// Deterministic search budget, in steps (one step = one attempt to place one operation).
    /// When it runs out the verdict is "unknown" (exit code 2).
    #[arg(long, value_name = "N", default_value_t = CheckOptions::default().max_steps)]
    pub budget_steps: u64,

    /// Wall-clock budget in milliseconds; when it runs out the verdict is "unknown".
    #[arg(long, value_name = "N")]
    pub timeout_ms: Option<u64>,

    /// Report the whole failing partition instead of shrinking it to a minimal failing set.
    #[arg(long)]
    pub no_minimize: bool,

    /// Decide every partition by search, even those the unique-value fast path decides
    /// (for comparing the two).
    #[arg(long)]
    pub no_fast_path: bool,
}

impl CheckArgs {
    pub fn options(&self) -> CheckOptions {
        CheckOptions {
            max_steps: self.budget_steps,
            timeout: self.timeout_ms.map(Duration::from_millis),
            minimize: !self.no_minimize,
            fast_path: !self.no_fast_path,
            ..CheckOptions::default()
        }
    }
}

/// Where the timeline goes when `--html` is not given: next to the current directory, named
/// after the input, so that a read-only input directory is no obstacle.
fn default_html_path(file: &Path) -> PathBuf {
    let stem = file.file_stem().map_or_else(|| "history".into(), |stem| stem.to_string_lossy());
    PathBuf::from(format!("{stem}.timeline.html"))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// Runs the verb and returns the exit code. Messages go to `out`; errors to `err`.
pub fn run_check(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match run(args, out, err) {
        Ok(code) => code,
        Err(error) => {
            // Nowhere left to report a failure to write the report itself.
            let _ = writeln!(err, "error: {error}");
            EXIT_BAD_INPUT
        }
    }
}

fn run(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let started = Instant::now();
    let file = match std::fs::File::open(&args.file) {
        Ok(file) => file,
        Err(error) => {
            writeln!(err, "error: {}: {error}", args.file.display())?;
            return Ok(EXIT_BAD_INPUT);
        }
    };
    // Line by line: memory holds the line being read and the compact rows, never the file.
    let table = match read_table(BufReader::with_capacity(1 << 16, file)) {
        Ok(table) => table,
        Err(error) => {
            writeln!(err, "error: {}: {error}", args.file.display())?;
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let parsed = Instant::now();
    let (report, failing_partition) = check_table(&table, &args.options());
    let checked = Instant::now();

    let html_path = match (&args.html, args.no_html, report.violation().is_some()) {
        (Some(path), _, _) => Some(path.clone()),
        (None, false, true) => Some(default_html_path(&args.file)),
        _ => None,
    };
    // The report shows operations of the failing partition (or, in a timeline, the earliest
    // ones), rebuilt from the rows as a small history of their own.
    let (shown, shown_report) =
        shown_history(&table, &report, failing_partition, html_path.is_some());

    writeln!(out, "file: {}", args.file.display())?;
    write!(out, "{}", summarize(&shown, &shown_report))?;
    writeln!(
        out,
        "time: {:.1} ms to check ({:.1} ms to read and parse)",
        millis(checked - parsed),
        millis(parsed - started)
    )?;
    if report.is_vacuous() {
        writeln!(
            out,
            "warning: nothing to check: {} (exit code {EXIT_NOTHING_TO_CHECK})",
            if report.op_count == 0 {
                "the history has no operations"
            } else {
                "every operation failed or is a read of unknown outcome"
            }
        )?;
    }

    if let Some(path) = html_path {
        // A timeline that cannot be written does not change the verdict: report it on stderr
        // and keep the verdict's exit code, which is what scripts act on.
        match std::fs::write(&path, render_timeline_html(&shown, &shown_report)) {
            Ok(()) => writeln!(out, "timeline: {}", path.display())?,
            Err(error) => writeln!(err, "warning: could not write {}: {error}", path.display())?,
        }
    }
    Ok(report.exit_code())
}

/// A history of the operations the report shows, and the report with its operation indexes
/// made indexes into it: the failing partition for a violation; else, when a timeline is
/// drawn, the earliest operations (one more than it draws, so that it says it left some out).
fn shown_history(
    table: &Table<'_>,
    report: &CheckReport,
    failing_partition: Option<Vec<OpIndex>>,
    timeline: bool,
) -> (History, CheckReport) {
    let indexes: Vec<OpIndex> = match failing_partition {
        Some(indexes) => indexes,
        None if timeline => {
            let mut all: Vec<OpIndex> = (0..table.len()).collect();
            all.sort_by_key(|&index| (table.row(index).call, index));
            all.truncate(BARS_MAX + 1);
            all
        }
        None => Vec::new(),
    };
    let shown = table.sub_history(&indexes);
    let mut shown_report = report.clone();
    if let Verdict::Violation(violation) = &mut shown_report.verdict {
        let mut position: Vec<(OpIndex, OpIndex)> =
            indexes.iter().enumerate().map(|(local, &global)| (global, local)).collect();
        position.sort_unstable();
        let local = |global: &OpIndex| -> OpIndex {
            match position.binary_search_by_key(global, |&(global, _)| global) {
                Ok(slot) => position[slot].1,
                Err(_) => unreachable!("the failing operations are in the failing partition"),
            }
        };
        violation.failing_ops = violation.failing_ops.iter().map(local).collect();
        violation.longest_prefix = violation.longest_prefix.iter().map(local).collect();
        violation.read_from = violation.read_from.iter().map(local).collect();
    }
    (shown, shown_report)
}
