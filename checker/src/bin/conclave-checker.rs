//! `conclave-checker check FILE.jsonl`: the checker's CLI until the node's `conclave check`
//! exists (which will call the same `conclave_checker::cli::run_check`). Also
//! `conclave-checker generate`, which writes the synthetic histories of the benchmarks (for
//! the CLI figures of the README, and for other checkers to be run on the same files).

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use conclave_checker::cli::{CheckArgs, EXIT_BAD_INPUT, EXIT_CODES_HELP, run_check};
use conclave_checker::generate::{
    Anomaly, GenerateOptions, key_name, linearizable_history, plant_anomaly,
};

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
    /// Write a generated history to standard output (JSON Lines): linearizable by
    /// construction, every write a fresh value, or with one planted anomaly on the first key.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = 100_000)]
    ops: usize,
    #[arg(long, default_value_t = 4)]
    keys: u32,
    #[arg(long, default_value_t = 64)]
    clients: u32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Plant this anomaly on the first key, in the middle of its operations.
    #[arg(long, value_enum)]
    anomaly: Option<AnomalyArg>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum AnomalyArg {
    StaleRead,
    PhantomRead,
    LostWrite,
    DoubleCas,
    ResurrectedDelete,
}

fn generate(args: &GenerateArgs) -> ExitCode {
    let options = GenerateOptions {
        seed: args.seed,
        op_count: args.ops,
        client_count: args.clients.max(1),
        key_count: args.keys.max(1),
        ..GenerateOptions::default()
    };
    let mut history = linearizable_history(&options);
    if let Some(anomaly) = args.anomaly {
        let anomaly = match anomaly {
            AnomalyArg::StaleRead => Anomaly::StaleRead,
            AnomalyArg::PhantomRead => Anomaly::PhantomRead,
            AnomalyArg::LostWrite => Anomaly::LostWrite,
            AnomalyArg::DoubleCas => Anomaly::DoubleCas,
            AnomalyArg::ResurrectedDelete => Anomaly::ResurrectedDelete,
        };
        match plant_anomaly(&history, anomaly, &key_name(0)) {
            Some(planted) => history = planted.history,
            None => {
                eprintln!("error: no place to plant a {} on {}", anomaly.as_str(), key_name(0));
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match conclave_checker::write_jsonl(&history, &mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
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
    let args = match cli.command {
        Command::Check(args) => args,
        Command::Generate(args) => return generate(&args),
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = run_check(&args, &mut stdout.lock(), &mut stderr.lock());
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}
