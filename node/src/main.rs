//! The `conclave` binary: a node (`serve`), a local cluster (`dev`), the client commands and
//! the history checker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use conclave_node::config::{NodeConfig, ServeOptions};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "conclave", version, about = "A Raft-replicated key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (a single-node store without --peers).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML file with the same settings as the flags (`port = 8001`, `peers = [":8001"]`);
    /// flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: ServeOptions,
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ServeOptions::from_file(path)?,
        None => ServeOptions::default(),
    };
    let config = NodeConfig::resolve(args.options.over(file))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(conclave_node::serve::run(config))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging();
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    eprintln!("conclave: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
