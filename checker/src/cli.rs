//! The `check` verb: read a history file, check it, print the verdict, write the HTML timeline,
//! and return the exit code. `conclave-checker check` and (later) `conclave check` are thin
//! wrappers around [`run_check`].

use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::check::{CheckOptions, CheckReport, Verdict, check_partitions};
use crate::explain::summarize;
use crate::history::{History, OpIndex};
use crate::partition_source::{PartitionSource, SplitTable};
use crate::reader::read_table;
use crate::spill_dir::SpillDir;
use crate::spilled_partitions::{SpilledHistory, WINDOW_BYTES, read_spilled};
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

    /// Check one partition at a time, read back from files spilled to disk, instead of
    /// holding every operation in memory: "auto" does so for files over 64 MiB. Same verdict
    /// and report either way.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = Spill::Auto)]
    pub spill: Spill,

    /// Where to spill (a private directory is made there and removed afterwards). Default:
    /// the system's temporary directory ($TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
}

/// When to check a file one partition at a time from a spill (`--spill`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Spill {
    /// For files over [`SPILL_ABOVE_FILE_BYTES`].
    Auto,
    Never,
    Always,
}

/// Files up to this size are checked in memory by `--spill auto`: below it, holding the rows
/// costs less than 64 MB and skips writing and reading the spill.
pub const SPILL_ABOVE_FILE_BYTES: u64 = 64 << 20;

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
    let size_bytes = file.metadata().map_or(0, |metadata| metadata.len());
    let spill_dir = match (args.spill, spill_dir(args, size_bytes)) {
        (_, Ok(dir)) => dir,
        // Asked for: an error. Chosen for the file's size: the check still runs, in memory,
        // as it did before there was a spill.
        (Spill::Auto, Err(error)) => {
            writeln!(err, "warning: checking in memory: cannot create a spill directory: {error}")?;
            None
        }
        (Spill::Always | Spill::Never, Err(error)) => {
            writeln!(err, "error: cannot create a spill directory: {error}")?;
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let html_asked = args.html.is_some();
    // Line by line: memory holds the line being read and the compact rows, or with a spill
    // only the keys; never the file.
    let reader = BufReader::with_capacity(1 << 16, file);
    let read = match spill_dir {
        None => read_table(reader).map(Read::InMemory),
        Some(dir) => {
            let earliest = if html_asked { BARS_MAX + 1 } else { 0 };
            read_spilled(reader, dir, WINDOW_BYTES, earliest).map(Read::Spilled)
        }
    };
    let read = match read {
        Ok(read) => read,
        Err(error) => {
            writeln!(err, "error: {}: {error}", args.file.display())?;
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let parsed = Instant::now();
    let wants_timeline =
        |report: &CheckReport| html_asked || (!args.no_html && report.violation().is_some());
    let (report, shown) = match check_read(read, &args.options(), parsed, wants_timeline) {
        Ok(checked) => checked,
        Err(error) => {
            let file = args.file.display();
            writeln!(err, "error: {file}: reading the spilled partitions back: {error}")?;
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let checked = Instant::now();

    let html_path = match (&args.html, args.no_html, report.violation().is_some()) {
        (Some(path), _, _) => Some(path.clone()),
        (None, false, true) => Some(default_html_path(&args.file)),
        _ => None,
    };
    // The report shows operations of the failing partition (or, in a timeline, the earliest
    // ones), rebuilt as a small history of their own.
    let (shown, shown_report) = shown_history(&report, shown);

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

/// A history as read: rows in memory, or partitions spilled to disk.
enum Read {
    InMemory(Table<'static>),
    Spilled(SpilledHistory),
}

/// Operations the report shows, as a history of their own, and the history index of each.
type Shown = (History, Vec<OpIndex>);

/// Checks what was read (`started`: when the check began, for the timeout); returns the
/// report and what it shows: the failing partition for a violation, else the earliest
/// operations if `wants_timeline`, else nothing.
fn check_read(
    read: Read,
    options: &CheckOptions,
    started: Instant,
    wants_timeline: impl Fn(&CheckReport) -> bool,
) -> io::Result<(CheckReport, Option<Shown>)> {
    match read {
        Read::InMemory(table) => {
            let mut partitions = SplitTable::new(&table);
            let dropped = partitions.dropped;
            let Ok((report, failing)) =
                check_partitions(&mut partitions, table.len(), dropped, options, started);
            let shown = match failing {
                Some(position) => {
                    let Ok(shown) = partitions.visit(position, |view| view.shown());
                    Some(shown)
                }
                None if wants_timeline(&report) => Some(earliest_of(&table)),
                None => None,
            };
            Ok((report, shown))
        }
        Read::Spilled(mut spilled) => {
            let (op_count, dropped) = (spilled.op_count, spilled.dropped);
            let (report, failing) =
                check_partitions(&mut spilled.partitions, op_count, dropped, options, started)?;
            let shown = match failing {
                Some(position) => Some(spilled.partitions.visit(position, |view| view.shown())?),
                None if wants_timeline(&report) => Some(spilled.earliest.into_history()),
                None => None,
            };
            Ok((report, shown))
        }
    }
}

/// Where to spill, if this file is to be checked one partition at a time.
fn spill_dir(args: &CheckArgs, size_bytes: u64) -> io::Result<Option<SpillDir>> {
    let spill = match args.spill {
        Spill::Never => false,
        Spill::Always => true,
        Spill::Auto => size_bytes > SPILL_ABOVE_FILE_BYTES,
    };
    if !spill {
        return Ok(None);
    }
    let parent = args.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    SpillDir::create(&parent).map(Some).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("{}: {error} (see --spill-dir, --spill)", parent.display()),
        )
    })
}

/// The earliest operations of a table by call, one more than a timeline draws (so that it
/// says it left some out).
fn earliest_of(table: &Table<'_>) -> Shown {
    let mut all: Vec<OpIndex> = (0..table.len()).collect();
    all.sort_by_key(|&index| (table.row(index).call, index));
    all.truncate(BARS_MAX + 1);
    (table.sub_history(&all), all)
}

/// The history the report shows (`shown`: operations and the history index of each; none when
/// nothing is shown), and the report with its operation indexes made indexes into it.
fn shown_history(report: &CheckReport, shown: Option<Shown>) -> (History, CheckReport) {
    let (shown, indexes) = shown.unwrap_or_default();
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
