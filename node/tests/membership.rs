//! Cluster operations on real processes, under a write load that retries through a client
//! session (so a retried write applies once): grow 3 → 5 and shrink back; replace a node whose
//! data directory was wiped (it catches up by snapshot); restart every node in turn (the leader
//! hands over leadership on SIGTERM) with zero failed writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conclave_client::{Client, ClientOptions, Precondition};
use support::{BINARY, Node, free_ports, http, key_url, leader_of, temp_dir, wait_for};

/// Writes distinct keys until stopped; returns (acknowledged keys, failed writes, the longest
/// time one write took).
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<String>, usize, Duration)>,
}

fn start_load(endpoints: Vec<String>, prefix: &'static str) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let options = ClientOptions {
                call_deadline: Duration::from_secs(20),
                ..ClientOptions::default()
            };
            let client = Client::new(&endpoints, options).unwrap();
            let (mut acknowledged, mut failed, mut slowest) = (Vec::new(), 0, Duration::ZERO);
            let mut i = 0u64;
            while !flag.load(Ordering::SeqCst) {
                let key = format!("{prefix}-{i}");
                let started = Instant::now();
                match client.put(&key, Bytes::from(key.clone()), None, Precondition::None).await {
                    Ok(_) => acknowledged.push(key),
                    Err(error) => {
                        eprintln!("write {key} failed: {error}");
                        failed += 1;
                    }
                }
                slowest = slowest.max(started.elapsed());
                i += 1;
            }
            (acknowledged, failed, slowest)
        })
    });
    Load { stop, thread }
}

impl Load {
    fn finish(self) -> (Vec<String>, usize, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn conclave(endpoints: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(BINARY)
        .args(args)
        .arg(format!("--endpoints={endpoints}"))
        .arg("--timeout-secs=20")
        .output()
        .expect("run conclave");
    assert!(
        output.status.success(),
        "conclave {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn voters(endpoints: &str) -> Vec<u64> {
    let output = conclave(endpoints, &["members", "list", "--json"]);
    let members: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

fn assert_read_back(port: u16, keys: &[String]) {
    let client = http();
    let lost: Vec<&String> = keys
        .iter()
        .filter(|key| {
            let response = client.get(key_url(port, key)).send().unwrap();
            response.status() != reqwest::StatusCode::OK || response.text().unwrap() != **key
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        keys.len(),
        &lost[..lost.len().min(5)]
    );
}

fn cluster_of(ports: &[u16], dir: &std::path::Path, extra: &[&str]) -> Vec<Node> {
    let peers = ports.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    ports
        .iter()
        .map(|p| Node::start(*p, &dir.join(format!("node-{p}")), Some(&peers), extra))
        .collect()
}

#[test]
fn grow_from_three_to_five_under_load_and_shrink_back() {
    let ports = free_ports(5);
    let dir = temp_dir("grow");
    let mut nodes = cluster_of(&ports[..3], &dir, &[]);
    let initial = ports[..3].iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    leader_of(&nodes, Duration::from_secs(30));
    let load = start_load(ports[..3].iter().map(|p| format!(":{p}")).collect(), "grow");

    let everyone = ports.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    for port in &ports[3..] {
        nodes.push(Node::start(
            *port,
            &dir.join(format!("node-{port}")),
            Some(&everyone),
            &["--join"],
        ));
        conclave(&initial, &["members", "add", &format!(":{port}")]);
    }
    let mut grown = voters(&initial);
    grown.sort();
    assert_eq!(grown, ports.iter().map(|p| *p as u64).collect::<Vec<_>>());
    // The new voters have the data.
    let leader = leader_of(&nodes, Duration::from_secs(10));
    let commit = support::info(&http(), leader).unwrap()["commit_index"].as_u64().unwrap();
    for port in &ports[3..] {
        wait_for("a new voter to catch up", Duration::from_secs(20), || {
            (support::info(&http(), *port)?["applied_index"].as_u64()? >= commit).then_some(())
        });
    }

    // Leadership moves to a member added after the original three started: they must still
    // send clients to it (its HTTP address comes from the configuration in the log).
    let newcomer = ports[4];
    conclave(&initial, &["leader", "transfer", "--to", &format!(":{newcomer}")]);
    wait_for("the newcomer to lead", Duration::from_secs(10), || {
        let info = support::info(&http(), ports[0])?;
        (info["leader"].as_u64()? == newcomer as u64).then_some(())
    });
    let response = http()
        .put(format!("http://127.0.0.1:{}/kv/redirected", ports[0]))
        .body("v")
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains(&format!(":{newcomer}/kv/redirected")), "location {location}");

    // Every member's own list shows the newcomers with their HTTP addresses, followers' too.
    for port in &ports {
        let members: serde_json::Value = http()
            .get(format!("http://127.0.0.1:{port}/cluster/members"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        for newcomer in &ports[3..] {
            let listed = members["members"].as_array().unwrap().iter().find(|member| {
                member["id"] == *newcomer as u64
                    && member["http_address"] == format!("127.0.0.1:{newcomer}")
            });
            assert!(listed.is_some(), "node {port} lists {newcomer}: {members}");
        }
    }

    for port in ports[3..].iter().rev() {
        conclave(&initial, &["members", "remove", &format!(":{port}")]);
    }
    let mut shrunk = voters(&initial);
    shrunk.sort();
    assert_eq!(shrunk, ports[..3].iter().map(|p| *p as u64).collect::<Vec<_>>());
    // A removed member (the leader among them) learns it, says so, and stops.
    for node in &mut nodes[3..] {
        wait_for("a removed member to stop", Duration::from_secs(30), || {
            (!node.is_running()).then_some(())
        });
        let log = node.log();
        assert!(log.contains(&format!("node {} was removed from the cluster", node.port)), "{log}");
    }
    let (acknowledged, failed, slowest) = load.finish();
    println!(
        "grow 3→5 and back: {} writes acknowledged, {failed} failed, slowest {} ms",
        acknowledged.len(),
        slowest.as_millis()
    );
    assert_eq!(failed, 0, "writes failed during membership changes");
    let leader = leader_of(&nodes[..3], Duration::from_secs(10));
    assert_read_back(leader, &acknowledged);
}

#[test]
fn a_node_with_a_wiped_disk_is_replaced_and_catches_up_by_snapshot() {
    let ports = free_ports(4);
    let dir = temp_dir("replace");
    let small_snapshots = ["--snapshot-every-entries=500", "--retained-log-entries=50"];
    let mut nodes = cluster_of(&ports[..3], &dir, &small_snapshots);
    let initial = ports[..3].iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    let leader = leader_of(&nodes, Duration::from_secs(30));
    let load = start_load(vec![format!(":{leader}")], "replace");
    wait_for("the leader to take a snapshot", Duration::from_secs(60), || {
        (support::info(&http(), leader)?["snapshot_index"].as_u64()? > 0).then_some(())
    });

    // A follower loses its disk: remove it, and add a fresh node in its place.
    let victim = nodes.iter().position(|node| node.port != leader).unwrap();
    let victim_port = nodes[victim].port;
    nodes[victim].kill9();
    std::fs::remove_dir_all(&nodes[victim].dir).unwrap();
    conclave(&initial, &["members", "remove", &format!(":{victim_port}")]);
    let replacement = ports[3];
    let everyone = ports.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    let mut extra = vec!["--join"];
    extra.extend_from_slice(&small_snapshots);
    nodes.push(Node::start(
        replacement,
        &dir.join(format!("node-{replacement}")),
        Some(&everyone),
        &extra,
    ));
    conclave(&initial, &["members", "add", &format!(":{replacement}")]);

    let (acknowledged, failed, _) = load.finish();
    assert_eq!(failed, 0);
    let commit = support::info(&http(), leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_for("the replacement to catch up", Duration::from_secs(30), || {
        (support::info(&http(), replacement)?["applied_index"].as_u64()? >= commit).then_some(())
    });
    let info = support::info(&http(), replacement).unwrap();
    assert!(info["snapshot_index"].as_u64().unwrap() > 0, "it caught up from a snapshot: {info}");
    // Every acknowledged write is on the replacement (read locally).
    let client = http();
    for key in &acknowledged {
        let url = format!("{}?consistency=stale", key_url(replacement, key));
        assert_eq!(client.get(url).send().unwrap().text().unwrap(), *key);
    }
    println!(
        "replacement caught up: {} writes, snapshot at {}",
        acknowledged.len(),
        info["snapshot_index"]
    );
}

#[test]
fn a_rolling_restart_under_load_fails_no_write() {
    let ports = free_ports(3);
    let dir = temp_dir("rolling");
    let mut nodes = cluster_of(&ports, &dir, &[]);
    leader_of(&nodes, Duration::from_secs(30));
    let load = start_load(ports.iter().map(|p| format!(":{p}")).collect(), "rolling");
    for index in 0..nodes.len() {
        let was_leader = support::info(&http(), nodes[index].port).unwrap()["role"] == "leader";
        let status = nodes[index].terminate(Duration::from_secs(20));
        assert!(status.success(), "node {} exited with {status}", nodes[index].port);
        if was_leader {
            assert!(
                nodes[index].log().contains("handed leadership over"),
                "the leader handed over before stopping"
            );
        }
        nodes[index].restart();
        let leader = leader_of(&nodes, Duration::from_secs(10));
        let commit = support::info(&http(), leader).unwrap()["commit_index"].as_u64().unwrap();
        let port = nodes[index].port;
        wait_for("the restarted node to catch up", Duration::from_secs(20), || {
            (support::info(&http(), port)?["applied_index"].as_u64()? >= commit).then_some(())
        });
    }
    let (acknowledged, failed, slowest) = load.finish();
    println!(
        "rolling restart of 3 nodes: {} writes acknowledged, {failed} failed, slowest write {} ms",
        acknowledged.len(),
        slowest.as_millis()
    );
    assert_eq!(failed, 0);
    let leader = leader_of(&nodes, Duration::from_secs(10));
    assert_read_back(leader, &acknowledged);
}
