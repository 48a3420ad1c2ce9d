//! A cluster of named members on separate hosts, all on the same client and peer ports, formed
//! from `--initial-cluster`, and the life of one: a workload through the client with every
//! endpoint, the leader killed with SIGKILL and restarted, a fourth member added by name and
//! one removed by name. The hosts are whatever a [`Hosts`] gives: loopback addresses
//! (127.0.0.N, no privileges needed) or network namespaces (`netns.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test
#![allow(dead_code)] // each test binary uses part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BINARY, http, wait_for};

/// Where the members run.
pub trait Hosts {
    /// The address of host `i` (1-based), as the test and the other hosts reach it.
    fn address(&self, i: usize) -> String;
    /// The host part of member `i`'s peer URL: its address, or a host name that the hosts
    /// resolve to it.
    fn peer_host(&self, i: usize) -> String {
        self.address(i)
    }
    /// The command that runs `program` on host `i` (its first words, e.g. `ip netns exec NS`).
    fn command(&self, i: usize, program: &str) -> Command;
}

/// Hosts 127.0.0.1, 127.0.0.2, ...: one machine, but every member has its own address, so all
/// can use the same ports.
pub struct Loopback;

impl Hosts for Loopback {
    fn address(&self, i: usize) -> String {
        format!("127.0.0.{i}")
    }

    fn command(&self, _i: usize, program: &str) -> Command {
        Command::new(program)
    }
}

/// One `conclave serve` of a named member; killed when dropped.
pub struct NamedNode {
    pub name: String,
    pub host: usize,
    pub args: Vec<String>,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl NamedNode {
    fn spawn(&mut self, hosts: &dyn Hosts) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the node log");
        let mut command = hosts.command(self.host, BINARY);
        command
            .arg("serve")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(command.spawn().expect("start conclave serve"));
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NamedNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The cluster under test.
pub struct NamedCluster<'h> {
    pub hosts: &'h dyn Hosts,
    pub client_port: u16,
    pub peer_port: u16,
    pub token: String,
    pub dir: PathBuf,
    pub nodes: Vec<NamedNode>,
}

impl NamedCluster<'_> {
    pub fn client_url(&self, host: usize) -> String {
        format!("http://{}:{}", self.hosts.address(host), self.client_port)
    }

    fn initial_cluster(&self, hosts: &[usize]) -> String {
        hosts
            .iter()
            .map(|i| format!("n{i}={}:{}", self.hosts.peer_host(*i), self.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `n{host}` on `host`; `members` are the hosts in its --initial-cluster.
    pub fn start(&mut self, host: usize, members: &[usize], join: bool) {
        let address = self.hosts.address(host);
        let mut args = vec![
            format!("--name=n{host}"),
            format!("--initial-cluster={}", self.initial_cluster(members)),
            format!("--initial-cluster-token={}", self.token),
            format!("--listen-client={address}:{}", self.client_port),
            format!("--listen-peer={address}:{}", self.peer_port),
            format!("--working-dir={}", self.dir.join(format!("n{host}")).display()),
        ];
        if self.hosts.peer_host(host) != address {
            // The default (the peer URL's host) would be a name only the hosts resolve; the
            // test reaches members at their addresses.
            args.push(format!("--advertise-client-url=http://{address}:{}", self.client_port));
        }
        if join {
            args.push("--join".into());
        }
        let mut node = NamedNode {
            name: format!("n{host}"),
            host,
            args,
            log_path: self.dir.join(format!("n{host}.log")),
            child: None,
        };
        node.spawn(self.hosts);
        self.nodes.push(node);
    }

    pub fn node(&mut self, host: usize) -> &mut NamedNode {
        self.nodes.iter_mut().find(|node| node.host == host).expect("a node on that host")
    }

    pub fn restart(&mut self, host: usize) {
        let hosts = self.hosts;
        let node = self.node(host);
        assert!(node.child.is_none(), "stop the node before restarting it");
        node.spawn(hosts);
    }

    /// Restarts member `host` with its listen and advertised addresses at its host's address
    /// now (after the host moved); its name, cluster and data stay.
    pub fn restart_at_current_address(&mut self, host: usize) {
        let (hosts, client_port, peer_port) = (self.hosts, self.client_port, self.peer_port);
        let address = hosts.address(host);
        let node = self.node(host);
        assert!(node.child.is_none(), "stop the node before restarting it");
        for arg in &mut node.args {
            if arg.starts_with("--listen-client=") {
                *arg = format!("--listen-client={address}:{client_port}");
            } else if arg.starts_with("--listen-peer=") {
                *arg = format!("--listen-peer={address}:{peer_port}");
            } else if arg.starts_with("--advertise-client-url=") {
                *arg = format!("--advertise-client-url=http://{address}:{client_port}");
            }
        }
        node.spawn(hosts);
    }

    pub fn info(&self, host: usize) -> Option<Value> {
        http().get(format!("{}/cluster/info", self.client_url(host))).send().ok()?.json().ok()
    }

    /// The host whose node says it leads, among `hosts`.
    pub fn leader(&self, hosts: &[usize], deadline: Duration) -> usize {
        wait_for("a leader", deadline, || {
            hosts
                .iter()
                .copied()
                .find(|i| self.info(*i).is_some_and(|info| info["role"] == "leader"))
        })
    }

    /// `conclave ARGS --endpoints=...` with the client URLs of `hosts`; panics on failure.
    pub fn conclave(&self, hosts: &[usize], args: &[&str]) -> Output {
        let output = self.try_conclave(hosts, args);
        assert!(
            output.status.success(),
            "conclave {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
        output
    }

    pub fn try_conclave(&self, hosts: &[usize], args: &[&str]) -> Output {
        let endpoints: Vec<String> = hosts.iter().map(|i| self.client_url(*i)).collect();
        Command::new(BINARY)
            .args(args)
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--timeout-secs=20")
            .output()
            .expect("run conclave")
    }

    /// Each member's name, role and advertised client URL, as the cluster reports them.
    pub fn members(&self, hosts: &[usize]) -> Vec<(String, String, Option<String>)> {
        let output = self.conclave(hosts, &["members", "list", "--json"]);
        let members: Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut list: Vec<(String, String, Option<String>)> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["role"].as_str().unwrap().to_string(),
                    m["http_address"].as_str().map(str::to_string),
                )
            })
            .collect();
        list.sort();
        list
    }

    /// Waits until every node of `hosts` knows every member of `hosts` by name and advertised
    /// client URL (each member publishes its own through the log).
    pub fn wait_until_published(&self, hosts: &[usize], deadline: Duration) {
        let expected: Vec<(String, String)> = hosts
            .iter()
            .map(|i| (format!("n{i}"), format!("{}:{}", self.hosts.address(*i), self.client_port)))
            .collect();
        wait_for("every member's advertised client URL on every member", deadline, || {
            hosts
                .iter()
                .all(|i| {
                    let Some(info) = self.info(*i) else { return false };
                    let Some(members) = info["members"].as_array() else { return false };
                    let mut seen: Vec<(String, String)> = members
                        .iter()
                        .filter_map(|m| {
                            Some((
                                m["name"].as_str()?.to_string(),
                                m["http_address"].as_str()?.to_string(),
                            ))
                        })
                        .collect();
                    seen.sort();
                    seen == expected
                })
                .then_some(())
        });
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {} (last lines) ---\n{}",
                    node.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Percent-free keys: the workload's own.
fn key(phase: &str, n: usize) -> String {
    format!("{phase}-{n}")
}

/// Writes `count` keys of `phase` through the client with `endpoints`, each value its key.
fn write_keys(
    cluster: &NamedCluster<'_>,
    endpoints: &[usize],
    phase: &str,
    count: usize,
) -> Vec<String> {
    (0..count)
        .map(|n| {
            let key = key(phase, n);
            cluster.conclave(endpoints, &["put", &key, &key]);
            key
        })
        .collect()
}

/// Every key reads back as written, linearizably, through the client with `endpoints`.
fn assert_read_back(cluster: &NamedCluster<'_>, endpoints: &[usize], keys: &[String]) {
    for key in keys {
        let output = cluster.conclave(endpoints, &["get", key]);
        assert_eq!(String::from_utf8_lossy(&output.stdout), *key, "read of {key}");
    }
}

/// The whole life of a named cluster on `hosts` 1 to 4 (host 4 joins later). `dir` holds the
/// data directories and logs.
pub fn run_named_cluster_life(hosts: &dyn Hosts, dir: &Path, client_port: u16, peer_port: u16) {
    let started = Instant::now();
    let mut cluster = NamedCluster {
        hosts,
        client_port,
        peer_port,
        token: format!("test-{}", std::process::id()),
        dir: dir.to_path_buf(),
        nodes: Vec::new(),
    };
    let founders = [1, 2, 3];
    for host in founders {
        cluster.start(host, &founders, false);
    }
    let leader = cluster.leader(&founders, Duration::from_secs(30));
    cluster.wait_until_published(&founders, Duration::from_secs(30));
    println!("cluster formed, leader n{leader}, addresses published: {:?}", started.elapsed());

    // A follower redirects to the leader's advertised client URL: no port arithmetic.
    let follower = founders.into_iter().find(|i| *i != leader).unwrap();
    let response = http()
        .put(format!("{}/kv/redirected", cluster.client_url(follower)))
        .body("x")
        .send()
        .expect("a follower answers");
    assert_eq!(response.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("{}/kv/redirected", cluster.client_url(leader)));

    // Workload through the client, all three endpoints.
    let mut keys = write_keys(&cluster, &founders, "formed", 20);
    assert_read_back(&cluster, &founders, &keys);
    // Through a follower's endpoint alone: the client follows the redirect.
    keys.extend(write_keys(&cluster, &[follower], "via-follower", 5));

    // The leader dies without warning; the others elect a new one and keep serving.
    cluster.node(leader).kill9();
    let survivors: Vec<usize> = founders.into_iter().filter(|i| *i != leader).collect();
    let new_leader = cluster.leader(&survivors, Duration::from_secs(30));
    keys.extend(write_keys(&cluster, &founders, "after-kill", 10));
    cluster.restart(leader);
    let commit = wait_for("the new leader's commit index", Duration::from_secs(10), || {
        cluster.info(new_leader)?["commit_index"].as_u64()
    });
    wait_for("the restarted member to catch up", Duration::from_secs(30), || {
        (cluster.info(leader)?["applied_index"].as_u64()? >= commit).then_some(())
    });
    assert_read_back(&cluster, &founders, &keys);
    println!(
        "leader n{leader} killed and restarted, n{new_leader} took over: {:?}",
        started.elapsed()
    );

    // A fourth member joins by name, on the same ports.
    let all = [1, 2, 3, 4];
    cluster.start(4, &all, true);
    let n4_peer = format!("n4={}:{peer_port}", hosts.peer_host(4));
    let n4_client = cluster.client_url(4);
    cluster.conclave(&founders, &["members", "add", &n4_peer, "--client-url", &n4_client]);
    let members = cluster.members(&founders);
    let voters: Vec<&str> =
        members.iter().filter(|m| m.1 == "voter").map(|m| m.0.as_str()).collect();
    assert_eq!(voters, ["n1", "n2", "n3", "n4"], "{members:?}");
    cluster.wait_until_published(&all, Duration::from_secs(30));
    keys.extend(write_keys(&cluster, &all, "four", 5));
    let commit =
        cluster.info(cluster.leader(&all, Duration::from_secs(10))).unwrap()["commit_index"]
            .as_u64()
            .unwrap();
    wait_for("the new member to catch up", Duration::from_secs(30), || {
        (cluster.info(4)?["applied_index"].as_u64()? >= commit).then_some(())
    });
    // It holds everything, read from its own copy.
    for key in &keys {
        let response = http()
            .get(format!("{}/kv/{key}?consistency=stale", cluster.client_url(4)))
            .send()
            .unwrap();
        assert_eq!(response.text().unwrap(), *key, "n4's copy of {key}");
    }

    // Leadership handed to the new member by its name.
    cluster.conclave(&all, &["leader", "transfer", "--to", "n4"]);
    wait_for("n4 to lead", Duration::from_secs(10), || {
        (cluster.info(4)?["role"] == "leader").then_some(())
    });

    // A member leaves, named by its name: a founder (n4 leads).
    let leaving = founders[0];
    cluster.conclave(&all, &["members", "remove", &format!("n{leaving}")]);
    let remaining: Vec<usize> = all.into_iter().filter(|i| *i != leaving).collect();
    let members = cluster.members(&remaining);
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    let expected: Vec<String> = remaining.iter().map(|i| format!("n{i}")).collect();
    assert_eq!(names, expected, "{members:?}");
    keys.extend(write_keys(&cluster, &remaining, "after-remove", 5));
    assert_read_back(&cluster, &remaining, &keys);
    cluster.node(leaving).kill9();
    println!(
        "n4 added and n{leaving} removed by name; {} keys written and read back: {:?}",
        keys.len(),
        started.elapsed()
    );

    // A member restarted with another cluster's token is refused by its own data directory.
    let restarted = remaining[0];
    cluster.node(restarted).kill9();
    let mut args = cluster.node(restarted).args.clone();
    for arg in &mut args {
        if arg.starts_with("--initial-cluster-token=") {
            *arg = "--initial-cluster-token=another-cluster".into();
        }
    }
    let mut refused = hosts
        .command(restarted, BINARY)
        .arg("serve")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run conclave serve");
    let exited = wait_for("the member with another token to exit", Duration::from_secs(20), || {
        refused.try_wait().expect("wait for conclave serve")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!exited.success(), "a member started with another token: {stderr}");
    assert!(stderr.contains("belongs to node"), "{stderr}");
}
