//! The `conclave` binary: a node (`serve`), a local cluster (`dev`), the client commands, online
//! backups, and the history checker.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use conclave_node::backup_restore::{BackupArgs, RestoreArgs};
use conclave_node::cli::{ClientCommand, EXIT_CODES_HELP};
use conclave_node::config::{NodeConfig, ServeOptions};
use conclave_node::dev_cluster::DevArgs;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's allocator: under load, `malloc`/`free` were about a sixth of the
/// leader's profile (many small, short-lived allocations crossing between the HTTP workers and
/// the engine thread, which glibc's per-thread arenas handle poorly).
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "conclave",
    version,
    about = "A Raft-replicated key-value store: a node, a local cluster, and its client.",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (a durable single-node store without --peers).
    Serve(Box<ServeArgs>),
    /// Run a local cluster of N nodes as child processes, until Ctrl-C.
    Dev(DevArgs),
    /// Save an online backup of a running node to a file.
    Backup(BackupArgs),
    /// Seed an empty data directory from a backup file (offline).
    Restore(RestoreArgs),
    /// Load-test a Conclave cluster (or etcd's v3 gateway) and print throughput and latency.
    Bench(conclave_node::bench::BenchArgs),
    /// Check a history file (JSON Lines) for linearizability.
    Check(conclave_checker::cli::CheckArgs),
    /// Print a shell completion script: `source <(conclave completion bash)`, or save it where
    /// the shell loads completions (zsh: a `_conclave` file on `$fpath`; fish:
    /// `~/.config/fish/completions/conclave.fish`).
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML file with the same settings as the flags (`port = 8001`, `peers = [":8001"]`);
    /// flags and CONCLAVE_* environment variables win.
    #[arg(long, env = "CONCLAVE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the settings in force (flags > environment > file > defaults) as a config file,
    /// and exit without starting.
    #[arg(long)]
    print_config: bool,
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with every field) for log shippers.
    #[arg(long, value_enum, env = "CONCLAVE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    options: ServeOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at the level `RUST_LOG` names (`info` without it; a value that does not
/// parse is an error, not a silent fallback), in colour only when stderr is a terminal (a log
/// file or journald gets plain text).
fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).map_err(|error| {
            anyhow::anyhow!("RUST_LOG={directives:?} is not a log filter ({error}); e.g. RUST_LOG=info or RUST_LOG=conclave_core=debug")
        })?,
        Err(_) => EnvFilter::new("info"),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ServeOptions::from_file(path)?,
        None => ServeOptions::default(),
    };
    let config = NodeConfig::resolve(args.options.over(file))?;
    if args.print_config {
        let text = toml::to_string(&config.effective_options())?;
        println!("# conclave serve: the settings in force (flags > CONCLAVE_* environment >");
        println!("# config file > defaults); this output is itself a valid --config file.");
        println!("# node id {}, cluster id {:#018x}", config.node_id.0, config.cluster_id);
        print!("{text}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(conclave_node::serve::run(config))
}

/// A small runtime for the client-side commands.
fn client_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("conclave: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A backup's exit code by the table of the client commands: 4 when no node could be
/// reached (or answered in time), 1 for anything else.
fn report_backup(result: anyhow::Result<()>) -> ExitCode {
    let unreachable =
        result.as_ref().err().is_some_and(conclave_node::backup_restore::is_unreachable);
    let code = report(result);
    if unreachable { ExitCode::from(4) } else { code }
}

fn main() -> ExitCode {
    // A usage error exits 1 ("bad usage or local error" in the table of exit codes), not clap's
    // 2, which the client commands use for "key not found"; --help and --version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Serve(args) => {
            // The error is printed once, by `report` (not also logged: both go to stderr).
            report(init_logging(args.log_format).and_then(|()| serve(*args)))
        }
        Command::Dev(args) => report(
            client_runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(conclave_node::dev_cluster::run(args))),
        ),
        Command::Backup(args) => report_backup(
            client_runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(conclave_node::backup_restore::backup(args))),
        ),
        Command::Restore(args) => report(
            client_runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(conclave_node::backup_restore::restore(args))),
        ),
        Command::Bench(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
            report(
                runtime
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| rt.block_on(conclave_node::bench::run(args))),
            )
        }
        Command::Check(args) => {
            let code = conclave_checker::cli::run_check(
                &args,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            ExitCode::from(code)
        }
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "conclave", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Client(command) => match client_runtime() {
            Ok(runtime) => runtime.block_on(conclave_node::cli::run(command)),
            Err(error) => report(Err(error.into())),
        },
    }
}
