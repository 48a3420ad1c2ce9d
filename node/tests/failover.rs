//! Failover of real processes: kill -9 the leader of a 3-node cluster, measure how long until a
//! write succeeds again (it must be under 2 seconds with the default timeouts), bring the killed
//! node back and watch it catch up; a 5-node cluster keeps serving with two nodes down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Node, cluster, http, key_url, leader_of, wait_for};

/// Tries one write on each running node (a follower's 307 is followed once); returns the port
/// that accepted it.
fn write_anywhere(nodes: &[&Node], key: &str, value: &str) -> Option<u16> {
    let client = http();
    for node in nodes {
        let Ok(response) = client.put(key_url(node.port, key)).body(value.to_string()).send()
        else {
            continue;
        };
        match response.status() {
            StatusCode::OK => return Some(node.port),
            StatusCode::TEMPORARY_REDIRECT => {
                let location = response.headers().get("location")?.to_str().ok()?.to_string();
                let retried = client.put(location).body(value.to_string()).send().ok()?;
                if retried.status() == StatusCode::OK {
                    return Some(node.port);
                }
            }
            _ => {}
        }
    }
    None
}

#[test]
fn a_killed_leader_is_replaced_within_two_seconds_and_catches_up_after_restart() {
    let mut nodes = cluster("failover-3", 3);
    let leader = leader_of(&nodes, Duration::from_secs(30));
    for i in 0..100 {
        assert!(
            write_anywhere(&nodes.iter().collect::<Vec<_>>(), &format!("before-{i}"), "x")
                .is_some()
        );
    }
    let killed = nodes.iter().position(|node| node.port == leader).unwrap();
    let killed_at = Instant::now();
    nodes[killed].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|node| node.port != leader).collect();
    wait_for("a write to succeed on the survivors", Duration::from_secs(10), || {
        write_anywhere(&survivors, "after-failover", "y")
    });
    let failover = killed_at.elapsed();
    println!("failover: a write succeeded {} ms after kill -9 of the leader", failover.as_millis());
    assert!(failover < Duration::from_secs(2), "failover took {failover:?}");

    // More writes while the old leader is down, then it restarts and catches up.
    for i in 0..200 {
        assert!(write_anywhere(&survivors, &format!("while-down-{i}"), "z").is_some());
    }
    nodes[killed].restart();
    let client = http();
    let new_leader = leader_of(&nodes, Duration::from_secs(10));
    let target = support::info(&client, new_leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_for("the restarted node to catch up", Duration::from_secs(20), || {
        let info = support::info(&client, nodes[killed].port)?;
        (info["applied_index"].as_u64()? >= target).then_some(())
    });
    let response = client
        .get(format!("{}?consistency=stale", key_url(nodes[killed].port, "while-down-199")))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().unwrap(), "z");
}

#[test]
fn a_five_node_cluster_serves_with_two_nodes_down() {
    let mut nodes = cluster("failover-5", 5);
    let leader = leader_of(&nodes, Duration::from_secs(30));
    // Take down two nodes: the leader, and one follower (whichever comes first, so the choice
    // does not depend on where the leader sits in the list).
    let follower = nodes.iter().position(|node| node.port != leader).unwrap();
    for node in nodes.iter_mut() {
        if node.port == leader {
            node.kill9();
        }
    }
    nodes[follower].kill9();
    let running: Vec<&Node> = nodes.iter().filter(|node| node.pid().is_some()).collect();
    assert_eq!(running.len(), 3);
    let started = Instant::now();
    wait_for("writes with two of five nodes down", Duration::from_secs(10), || {
        write_anywhere(&running, "five-minus-two", "ok")
    });
    println!("5 nodes, 2 down: writes resumed after {} ms", started.elapsed().as_millis());
    for i in 0..100 {
        assert!(write_anywhere(&running, &format!("k{i}"), "v").is_some(), "write {i}");
    }

    // /health is a linearizable read: healthy on every node while a quorum is up, on none
    // once it is lost, whatever each node's own view says (`?serializable=true` is that view).
    let health = |node: &Node, query: &str| {
        let response = reqwest::blocking::get(node.url(&format!("/health{query}"))).ok()?;
        let code = response.status().as_u16();
        Some((code, response.json::<serde_json::Value>().ok()?))
    };
    for node in &running {
        let (code, body) = health(node, "").expect("an answer");
        assert_eq!(code, 200, "{body}");
    }
    let third = running[0].port;
    nodes.iter_mut().find(|node| node.port == third).unwrap().kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|node| node.pid().is_some()).collect();
    for node in &survivors {
        let body = wait_for("health to see the quorum lost", Duration::from_secs(20), || {
            let (code, body) = health(node, "")?;
            (code == 503).then_some(body)
        });
        let reasons = body["reasons"].to_string();
        assert!(reasons.contains("no leader") || reasons.contains("linearizable read"), "{body}");
    }
}
