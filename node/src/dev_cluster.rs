//! `conclave dev --nodes 3 [--shards 8]`: a local cluster for trying Conclave out. It starts N `conclave
//! serve` processes of this very executable on consecutive ports, with their data and logs
//! under one folder, waits until they have a leader, prints the endpoints and example commands,
//! and stops them all (SIGTERM, then SIGKILL after a grace period) on Ctrl-C or SIGTERM. If a
//! node dies on its own, it says so and stops the others.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use tokio::process::{Child, Command};

use crate::stop_signals::StopSignals;
use conclave_client::{Client, ClientOptions};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many nodes (1 to 7).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=7))]
    pub nodes: u16,
    /// The first node's HTTP port; the others follow (their peer ports are these + 10000).
    #[arg(long, default_value_t = 8001)]
    pub base_port: u16,
    /// Where the nodes keep their data (`node-PORT/`) and logs (`node-PORT.log`).
    #[arg(long, alias = "working-dir", default_value = "conclave-dev")]
    pub data_dir: PathBuf,
    /// Split the keyspace into this many shards (Raft groups of 3 replicas each, placed over
    /// the nodes); 1 is one group with every key. Fixed when the data directory is created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub shards: u64,
}

/// How long the nodes get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for the first leader.
const LEADER_DEADLINE: Duration = Duration::from_secs(20);

struct Node {
    port: u16,
    child: Child,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let last_port = args.base_port.checked_add(args.nodes - 1).filter(|p| *p <= 55_535);
    let Some(last_port) = last_port else {
        bail!(
            "--base-port {} leaves no room for {} nodes and their peer ports (+10000)",
            args.base_port,
            args.nodes
        );
    };
    let ports: Vec<u16> = (args.base_port..=last_port).collect();
    let peers = ports.iter().map(|port| format!(":{port}")).collect::<Vec<_>>().join(",");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let executable = std::env::current_exe().context("finding the conclave executable")?;
    // Installed before any node starts: a SIGTERM that arrives while the cluster is still
    // forming must stop the nodes too, not kill this process and leave them running.
    let mut stop_signals = StopSignals::install()?;
    let mut nodes = Vec::new();
    for port in &ports {
        let log_path = args.data_dir.join(format!("node-{port}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(&executable);
        command
            .arg("serve")
            .arg(format!("--port={port}"))
            .arg(format!("--working-dir={}", args.data_dir.join(format!("node-{port}")).display()))
            .arg(format!("--shards={}", args.shards))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if ports.len() > 1 {
            command.arg(format!("--peers={peers}"));
        }
        let child = command.spawn().with_context(|| format!("starting the node on port {port}"))?;
        nodes.push(Node { port: *port, child });
    }
    let result = serve_until_stopped(&args, &ports, &mut nodes, &mut stop_signals).await;
    stop_all(&mut nodes).await;
    result
}

async fn serve_until_stopped(
    args: &DevArgs,
    ports: &[u16],
    nodes: &mut [Node],
    stop_signals: &mut StopSignals,
) -> anyhow::Result<()> {
    let endpoints: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let client = Client::new(&endpoints, ClientOptions::default())?;
    // Every shard led (a single group is one shard).
    let waited = tokio::time::timeout(LEADER_DEADLINE, async {
        loop {
            if let (Ok(info), Ok(shards)) = (client.cluster_info().await, client.shards().await)
                && info.leader.is_some()
                && shards.shards.iter().all(|shard| shard.leader.is_some())
            {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let info = tokio::select! {
        info = waited => info.with_context(|| format!("no leader within {} s; see the logs in {}", LEADER_DEADLINE.as_secs(), args.data_dir.display()))?,
        died = first_exit(nodes) => bail!("{died} before the cluster formed; see {}", args.data_dir.display()),
        signal = stop_signals.next() => {
            println!("conclave dev: {signal} before the cluster formed, stopping the nodes");
            return Ok(());
        }
    };
    let list = endpoints.join(",");
    if args.shards > 1 {
        println!(
            "conclave dev: {} node(s) running, {} shards, meta group leader {}",
            ports.len(),
            args.shards,
            info.leader.unwrap_or(0)
        );
    } else {
        println!(
            "conclave dev: {} node(s) running, leader {}",
            ports.len(),
            info.leader.unwrap_or(0)
        );
    }
    for port in ports {
        println!(
            "  node {port}: http://127.0.0.1:{port}  (data {}, log {})",
            args.data_dir.join(format!("node-{port}")).display(),
            args.data_dir.join(format!("node-{port}.log")).display()
        );
    }
    let first = ports[0];
    println!();
    println!("try:");
    println!("  curl -L -X PUT localhost:{first}/kv/greeting -d 'hello'");
    println!("  curl localhost:{first}/kv/greeting");
    println!("  conclave put greeting hello --endpoints {list}");
    println!("  conclave get greeting --endpoints {list}");
    println!("  conclave status --endpoints {list}");
    if args.shards > 1 {
        println!("  conclave shards --endpoints {list}");
    }
    println!();
    println!("Ctrl-C stops every node (their data stays in {}).", args.data_dir.display());
    tokio::select! {
        signal = stop_signals.next() => {
            println!("conclave dev: {signal}, stopping the nodes");
            Ok(())
        }
        died = first_exit(nodes) => bail!("{died}; stopping the others (see {})", args.data_dir.display()),
    }
}

/// Resolves with a description of the first node that exits.
async fn first_exit(nodes: &mut [Node]) -> String {
    let waits = nodes.iter_mut().map(|node| {
        let port = node.port;
        Box::pin(async move {
            match node.child.wait().await {
                Ok(status) => format!("node {port} exited ({status})"),
                Err(error) => format!("node {port} could not be watched: {error}"),
            }
        })
    });
    futures::future::select_all(waits).await.0
}

async fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.id() {
            // SIGTERM lets each node finish its requests and sync.
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut() {
        match tokio::time::timeout(STOP_GRACE, node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("conclave dev: node {} did not stop in time; killing it", node.port);
                let _ = node.child.kill().await;
            }
        }
    }
}
