//! Real `conclave` processes for the node's tests: spawn the built binary on free loopback
//! ports, wait (by polling with a deadline, never by sleeping blindly) for what a test needs,
//! and kill every process when the test ends, whether it passed or not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test
#![allow(dead_code)] // each test binary uses part of this module

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod named_cluster;
pub mod netns;

pub const BINARY: &str = env!("CARGO_BIN_EXE_conclave");

/// Ports are handed out from a per-process range (tests of one binary run in parallel, and the
/// test binaries of this crate run one after another), then checked free — both the HTTP port
/// and its peer port (HTTP + 10000).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

pub fn free_ports(count: usize) -> Vec<u16> {
    // Below the kernel's ephemeral range (32768 and up on Linux), peer ports included: a port
    // in that range can be taken by any outgoing connection between a node's kill and restart.
    let base = 12_000 + (std::process::id() % 150) as u16 * 70;
    let _ = NEXT_PORT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    let mut ports = Vec::new();
    while ports.len() < count {
        let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        assert!(port + 10_000 < 32_768, "ran out of test ports");
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    ports
}

/// `count` consecutive free ports (for `conclave dev`, which numbers its nodes itself), taken as
/// one block so that tests running in parallel cannot interleave with it.
pub fn consecutive_free_ports(count: u16) -> u16 {
    let _ = free_ports(0);
    loop {
        let base = NEXT_PORT.fetch_add(count, Ordering::SeqCst);
        assert!(base + count + 10_000 < 32_768, "ran out of test ports");
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if (base..base + count).all(|p| free(p) && free(p + 10_000)) {
            return base;
        }
    }
}

/// The prefix of every test directory (and node log) under the system's temporary directory.
const TEMP_PREFIX: &str = "conclave-test-";

/// A fresh directory for a test, `conclave-test-{name}-{pid}-{n}` under the system's temporary
/// directory. It outlives the test on purpose — a failed test's data and node logs are there
/// to read — and is removed by the next run of any of these tests (see
/// `remove_dirs_of_finished_runs`).
pub fn temp_dir(name: &str) -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| remove_dirs_of_finished_runs(&std::env::temp_dir()));
    let dir = std::env::temp_dir().join(format!(
        "{TEMP_PREFIX}{name}-{}-{}",
        std::process::id(),
        NEXT_PORT.load(Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// Removes the test directories and node logs in `parent` left by test processes that have
/// exited, so that runs do not pile up in `/tmp` (hundreds of directories a run). A process
/// is known alive by its `/proc` entry: where there is no `/proc`, nothing is removed.
fn remove_dirs_of_finished_runs(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = test_dir_pid(&name) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let _ = match path.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
    }
}

/// The process id in a name made by `temp_dir` (`conclave-test-{name}-{pid}-{n}`, or that
/// with `.log` for a node's log).
pub fn test_dir_pid(name: &str) -> Option<u32> {
    let stem = name.strip_prefix(TEMP_PREFIX)?;
    let stem = stem.strip_suffix(".log").unwrap_or(stem);
    let mut parts = stem.rsplit('-');
    let _counter: u16 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    // A name of at least one character before the process id.
    parts.next().filter(|test| !test.is_empty())?;
    Some(pid)
}

/// One `conclave serve` process; killed when dropped.
pub struct Node {
    pub port: u16,
    pub dir: PathBuf,
    pub peers: Option<String>,
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl Node {
    pub fn start(port: u16, dir: &Path, peers: Option<&str>, extra: &[&str]) -> Node {
        let mut node = Node {
            port,
            dir: dir.to_path_buf(),
            peers: peers.map(str::to_string),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("open the node log");
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .arg(format!("--port={}", self.port))
            .arg(format!("--working-dir={}", self.dir.display()))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(peers) = &self.peers {
            command.arg(format!("--peers={peers}"));
        }
        self.child = Some(command.spawn().expect("start conclave serve"));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns the exit status once the process stopped (or panics after `deadline`).
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the node") {
                return status;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                panic!("node {} did not stop within {deadline:?} of SIGTERM", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node before restarting it");
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of `size` nodes on fresh ports.
pub fn cluster(name: &str, size: usize) -> Vec<Node> {
    let ports = free_ports(size);
    let dir = temp_dir(name);
    let peers = ports.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    ports
        .iter()
        .map(|port| {
            let peers = (size > 1).then_some(peers.as_str());
            Node::start(*port, &dir.join(format!("node-{port}")), peers, &[])
        })
        .collect()
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// Polls `probe` every 20 ms until it returns `Some`, or panics with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn info(client: &reqwest::blocking::Client, port: u16) -> Option<Value> {
    let response = client.get(format!("http://127.0.0.1:{port}/cluster/info")).send().ok()?;
    response.json().ok()
}

/// Waits until some running node reports itself leader and returns its port.
pub fn wait_for_leader(nodes: &[&Node], deadline: Duration) -> u16 {
    let client = http();
    wait_for("a leader", deadline, || {
        nodes.iter().find_map(|node| {
            let info = info(&client, node.port)?;
            (info["role"] == "leader").then_some(node.port)
        })
    })
}

pub fn leader_of(nodes: &[Node], deadline: Duration) -> u16 {
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_leader(&refs, deadline)
}

/// Percent-encodes a key for a URL path.
pub fn key_url(port: u16, key: &str) -> String {
    format!(
        "http://127.0.0.1:{port}/kv/{}",
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// Whether the tests run under CI (`CI=true`), where the tools `ci/install-test-deps.sh`
/// installs must be there.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// Prints that `what` is skipped and why; under CI, fails if `required_in_ci`.
pub fn skip(what: &str, reason: &str, required_in_ci: bool) {
    let message = format!("{what} skipped: {reason}");
    assert!(!(required_in_ci && under_ci()), "{message} — not allowed under CI");
    println!("{message}");
}

/// The CI venv's `bin/NAME` (`ci/install-test-deps.sh`), if it is there.
pub fn from_venv(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("CONCLAVE_CI_VENV").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/conclave-ci/venv"))
    });
    venv.map(|venv| venv.join("bin").join(name)).filter(|path| path.is_file())
}
