//! `conclave-checker check FILE.jsonl`: the checker's CLI until the node's `conclave check`
//! exists (which will call the same `conclave_checker::cli::run_check`).

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use conclave_checker::cli::{CheckArgs, EXIT_BAD_INPUT, EXIT_CODES_HELP, run_check};

#[derive(Debug, Parser)]
#[command(
    name = "conclave-checker",
    version,
    about = "Linearizability checker for Conclave key-value histories",
    long_about = "Linearizability checker for Conclave key-value histories (JSON Lines, one \
                  operation per line; see checker/README.md).",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a history: print the verdict, the operation count and the time taken; for a
    /// violation, the minimal failing operations and the path of an HTML timeline.
    #[command(after_help = EXIT_CODES_HELP)]
    Check(CheckArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap exits with 2 on a usage error, which here would mean "unknown"; a bad
            // command line is bad input (3). Help and version are successes.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    let Command::Check(args) = cli.command;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = run_check(&args, &mut stdout.lock(), &mut stderr.lock());
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}
