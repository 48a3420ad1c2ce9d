//! Nothing acknowledged is lost: thousands of concurrent PUTs, then a SIGTERM restart (the node
//! exits 0 within its deadline), then a SIGKILL in the middle of a write load and a restart —
//! every write that was answered 200 reads back, on a single node and on a 3-node cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use reqwest::StatusCode;
use support::{Node, cluster, free_ports, http, key_url, leader_of, temp_dir, wait_for_leader};

const WRITERS: usize = 32;

/// `count` PUTs of distinct keys from `WRITERS` threads to the node at `port`; returns the keys
/// whose PUT was acknowledged (200), with their values.
fn write_load(port: u16, prefix: &str, count: usize) -> Vec<(String, String)> {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let acknowledged = acknowledged.clone();
            let prefix = prefix.to_string();
            thread::spawn(move || {
                let client = http();
                for i in (writer..count).step_by(WRITERS) {
                    let key = format!("{prefix}-{i}");
                    let value = format!("value of {key}");
                    let sent = client.put(key_url(port, &key)).body(value.clone()).send();
                    if sent.is_ok_and(|response| response.status() == StatusCode::OK) {
                        acknowledged.lock().unwrap().push((key, value));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    Arc::try_unwrap(acknowledged).unwrap().into_inner().unwrap()
}

fn assert_all_read_back(port: u16, acknowledged: &[(String, String)], when: &str) {
    let client = http();
    let mut missing = Vec::new();
    for (key, value) in acknowledged {
        let response = client.get(key_url(port, key)).send().unwrap();
        if response.status() != StatusCode::OK || response.text().unwrap() != *value {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{when}: {} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    println!("{when}: all {} acknowledged writes read back", acknowledged.len());
}

#[test]
fn a_single_node_loses_nothing_acknowledged_across_sigterm_and_sigkill() {
    let port = free_ports(1)[0];
    let mut node = Node::start(port, &temp_dir("durable-single").join("data"), None, &[]);
    wait_for_leader(&[&node], Duration::from_secs(20));

    let first = write_load(port, "a", 4_000);
    assert_eq!(first.len(), 4_000, "a healthy node acknowledges every write");
    let status = node.terminate(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    node.restart();
    wait_for_leader(&[&node], Duration::from_secs(20));
    assert_all_read_back(port, &first, "after SIGTERM and restart");

    // SIGKILL while writers are busy.
    let load = thread::spawn(move || write_load(port, "b", 6_000));
    support::wait_for("writes to be under way", Duration::from_secs(20), || {
        let info = support::info(&http(), port)?;
        (info["applied_index"].as_u64()? > 4_500).then_some(())
    });
    node.kill9();
    let second = load.join().unwrap();
    assert!(!second.is_empty(), "some writes were acknowledged before the kill");
    node.restart();
    wait_for_leader(&[&node], Duration::from_secs(20));
    assert_all_read_back(port, &first, "after SIGKILL and restart (first batch)");
    assert_all_read_back(port, &second, "after SIGKILL and restart (writes during the kill)");
}

#[test]
fn a_three_node_cluster_loses_nothing_acknowledged_when_every_node_is_killed() {
    let mut nodes = cluster("durable-cluster", 3);
    let leader = leader_of(&nodes, Duration::from_secs(30));
    let first = write_load(leader, "c", 3_000);
    assert_eq!(first.len(), 3_000);

    // SIGKILL every node in the middle of a second load, then bring them all back.
    let load = thread::spawn(move || write_load(leader, "d", 6_000));
    support::wait_for("writes to be under way", Duration::from_secs(30), || {
        let info = support::info(&http(), leader)?;
        (info["applied_index"].as_u64()? > 3_500).then_some(())
    });
    for node in &mut nodes {
        node.kill9();
    }
    let second = load.join().unwrap();
    for node in &mut nodes {
        node.restart();
    }
    let leader = leader_of(&nodes, Duration::from_secs(30));
    assert_all_read_back(leader, &first, "cluster after SIGKILL of all nodes (first batch)");
    assert_all_read_back(
        leader,
        &second,
        "cluster after SIGKILL of all nodes (writes during the kill)",
    );
}
