//! The `check` verb: read a history file, check it, print the verdict, write the HTML timeline,
//! and return the exit code. `conclave-checker check` and (later) `conclave check` are thin
//! wrappers around [`run_check`].

use std::io::{self, Read as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::check::{CheckOptions, check};
use crate::error::{HistoryError, HistoryErrorKind, Location};
use crate::explain::summarize;
use crate::jsonl::parse_jsonl;
use crate::limits;
use crate::timeline_html::render_timeline_html;

/// The history is linearizable.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// The history is not linearizable.
pub const EXIT_VIOLATION: u8 = 1;
/// A budget ran out before an answer: neither verdict is claimed.
pub const EXIT_UNKNOWN: u8 = 2;
/// The input could not be read or is not a valid history (or the arguments are wrong).
pub const EXIT_BAD_INPUT: u8 = 3;

/// For `--help` of whatever command wraps [`CheckArgs`].
pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 linearizable, 1 violation, 2 unknown (budget exhausted), 3 bad input.";

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

/// Reads a history file, bounded in size, with a UTF-8 error naming its line.
pub fn read_history_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limits::FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if bytes.len() as u64 > limits::FILE_BYTES_MAX {
        return Err(format!(
            "{}: larger than the limit of {} bytes",
            path.display(),
            limits::FILE_BYTES_MAX
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
        let error = HistoryError {
            location: Location::Line(line),
            kind: HistoryErrorKind::MalformedJson("invalid UTF-8".to_owned()),
        };
        format!("{}: {error}", path.display())
    })
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
    let text = match read_history_file(&args.file) {
        Ok(text) => text,
        Err(message) => {
            writeln!(err, "error: {message}")?;
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let history = match parse_jsonl(&text) {
        Ok(history) => history,
        Err(error) => {
            writeln!(err, "error: {}: {error}", args.file.display())?;
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let parsed = Instant::now();
    let report = check(&history, &args.options());
    let checked = Instant::now();

    writeln!(out, "file: {}", args.file.display())?;
    write!(out, "{}", summarize(&history, &report))?;
    writeln!(
        out,
        "time: {:.1} ms to check ({:.1} ms to read and parse)",
        millis(checked - parsed),
        millis(parsed - started)
    )?;

    let html_path = match (&args.html, args.no_html, report.violation().is_some()) {
        (Some(path), _, _) => Some(path.clone()),
        (None, false, true) => Some(default_html_path(&args.file)),
        _ => None,
    };
    if let Some(path) = html_path {
        // A timeline that cannot be written does not change the verdict: report it on stderr
        // and keep the verdict's exit code, which is what scripts act on.
        match std::fs::write(&path, render_timeline_html(&history, &report)) {
            Ok(()) => writeln!(out, "timeline: {}", path.display())?,
            Err(error) => writeln!(err, "warning: could not write {}: {error}", path.display())?,
        }
    }
    Ok(report.exit_code())
}
