//! A real network partition of real processes. Each node runs in its own Linux network
//! namespace, joined to the others by veth pairs on a bridge; the test (in the root namespace)
//! reaches every node through the bridge. The partition cuts node-to-node traffic with
//! blackhole routes inside the namespaces (iproute2 only), so the test can still talk to the
//! isolated side and see that it refuses to acknowledge writes.
//!
//! Needs root and iproute2 (`ci/install-test-deps.sh` installs it). Without them the test says
//! it is skipped — except under CI (`CI=true`), where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::netns::{self, Network};
use support::{BINARY, http, key_url, wait_for};

const SUBNET: &str = "10.231.0";

struct NsNode {
    child: std::process::Child,
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url(i: usize, port: u16, path: &str) -> String {
    format!("http://{SUBNET}.{i}:{port}{path}")
}

fn skip_or_fail(reason: &str) {
    netns::skip_or_fail("partition test", reason);
}

#[test]
fn a_partitioned_minority_stops_writing_and_everything_converges_after_healing() {
    if let Some(reason) = netns::unavailable() {
        return skip_or_fail(&reason);
    }
    let network = match Network::create("c", SUBNET, 3) {
        Ok(network) => network,
        Err(error) => return skip_or_fail(&format!("cannot build the namespaces: {error}")),
    };
    let ports = [8001u16, 8002, 8003];
    let peers: Vec<String> =
        ports.iter().enumerate().map(|(i, port)| format!("{SUBNET}.{}:{port}", i + 1)).collect();
    let peers = peers.join(",");
    let data = support::temp_dir("netns");
    let _nodes: Vec<NsNode> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let log = std::fs::File::create(data.join(format!("node-{port}.log"))).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", &network.name("ns", i + 1), BINARY, "serve"])
                .arg(format!("--port={port}"))
                .arg(format!("--peers={peers}"))
                .arg(format!("--working-dir={}", data.join(format!("node-{port}")).display()))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start a node in its namespace");
            NsNode { child }
        })
        .collect();
    let client = http();
    let leader_index = || -> Option<usize> {
        (1..=3).find(|i| {
            client
                .get(url(*i, ports[i - 1], "/cluster/info"))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|info| info["role"] == "leader")
        })
    };
    let leader = wait_for("a leader", Duration::from_secs(30), &leader_index);
    let put = |i: usize, key: &str, value: &str| -> bool {
        client
            .put(key_url(ports[i - 1], key).replace("127.0.0.1", &format!("{SUBNET}.{i}")))
            .body(value.to_string())
            .send()
            .is_ok_and(|r| r.status() == StatusCode::OK)
    };
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    for n in 0..50 {
        let key = format!("before-{n}");
        assert!(put(leader, &key, "1"), "write before the partition");
        acknowledged.push((key, "1".into()));
    }

    // Isolate the leader: it is the minority.
    network.partition(&[leader], true).expect("cut the leader off");
    let cut_at = Instant::now();
    let majority: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let new_leader = wait_for("a leader on the majority side", Duration::from_secs(15), || {
        majority.iter().copied().find(|i| {
            client
                .get(url(*i, ports[i - 1], "/cluster/info"))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|info| info["role"] == "leader")
        })
    });
    println!(
        "majority elected node {} {} ms after the cut",
        ports[new_leader - 1],
        cut_at.elapsed().as_millis()
    );
    for n in 0..50 {
        let key = format!("during-{n}");
        assert!(put(new_leader, &key, "2"), "the majority keeps accepting writes");
        acknowledged.push((key, "2".into()));
    }
    // The minority side acknowledges nothing.
    for n in 0..2 {
        assert!(
            !put(leader, &format!("minority-{n}"), "lost"),
            "the isolated node acknowledged a write"
        );
    }

    network.partition(&[leader], false).expect("heal");
    let commit = wait_for("the leader's commit index", Duration::from_secs(10), || {
        client
            .get(url(new_leader, ports[new_leader - 1], "/cluster/info"))
            .send()
            .ok()?
            .json::<serde_json::Value>()
            .ok()?["commit_index"]
            .as_u64()
    });
    for i in 1..=3 {
        wait_for("every node to converge", Duration::from_secs(20), || {
            let info: serde_json::Value =
                client.get(url(i, ports[i - 1], "/cluster/info")).send().ok()?.json().ok()?;
            (info["applied_index"].as_u64()? >= commit).then_some(())
        });
        for (key, value) in &acknowledged {
            let response = client
                .get(format!(
                    "{}?consistency=stale",
                    key_url(ports[i - 1], key).replace("127.0.0.1", &format!("{SUBNET}.{i}"))
                ))
                .send()
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "node {} lacks {key}", ports[i - 1]);
            assert_eq!(response.text().unwrap(), *value);
        }
        let minority_write = client
            .get(format!(
                "{}?consistency=stale",
                key_url(ports[i - 1], "minority-0").replace("127.0.0.1", &format!("{SUBNET}.{i}"))
            ))
            .send()
            .unwrap();
        assert_eq!(
            minority_write.status(),
            StatusCode::NOT_FOUND,
            "an unacknowledged minority write survived"
        );
    }
    println!("after healing, all 3 nodes hold all {} acknowledged writes", acknowledged.len());
}
