//! A stranger's first contact, the way an outside harness that knows nothing of this project
//! makes it: start `conclave serve --port=N --working-dir=DIR`, poll the port every 100 ms, and
//! send the first request the moment a connection is accepted. Every first PUT and GET must
//! succeed — on a fresh start, after SIGTERM and after SIGKILL — and a data directory must
//! belong to one process and one member.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{BINARY, Node, free_ports, http, key_url, temp_dir, wait_for};

/// How often the outside harness polls the port.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Polls `port` every 100 ms until a connection is accepted; returns how long that took.
fn poll_until_accepting(port: u16, started: Instant) -> Duration {
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return started.elapsed();
        }
        assert!(started.elapsed() < START_DEADLINE, "port {port} never accepted a connection");
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[derive(Clone, Copy, Debug)]
enum Start {
    Fresh,
    AfterSigterm,
    AfterSigkill,
}

#[test]
fn the_first_put_and_get_succeed_on_every_start_fresh_or_restarted() {
    const STARTS: usize = 50;
    let port = free_ports(1)[0];
    let base = temp_dir("first-contact");
    let client = http();
    let mut node: Option<Node> = None;
    let mut written: Vec<(String, String)> = Vec::new();
    let mut to_port_ms = Vec::new();
    let mut to_first_ok_ms = Vec::new();
    let mut previous_stop = Start::Fresh;
    for start in 0..STARTS {
        // Every third start is on a new directory; the others follow a SIGTERM or a SIGKILL.
        let kind = if start % 3 == 0 { Start::Fresh } else { previous_stop };
        if let Some(mut running) = node.take() {
            match kind {
                Start::AfterSigkill => running.kill9(),
                _ => {
                    let status = running.terminate(Duration::from_secs(15));
                    assert!(status.success(), "start {start}: SIGTERM exit {status:?}");
                }
            }
            if matches!(kind, Start::Fresh) {
                written.clear();
            }
        }
        let dir = base.join(format!("generation-{}", start / 3));
        let started = Instant::now();
        node = Some(Node::start(port, &dir, None, &[]));
        to_port_ms.push(poll_until_accepting(port, started).as_millis() as u64);
        let key = format!("start-{start}");
        let value = format!("value written on start {start} ({kind:?})");
        let put = client.put(key_url(port, &key)).body(value.clone()).send().unwrap();
        assert_eq!(put.status(), StatusCode::OK, "start {start} ({kind:?}): first PUT");
        let get = client.get(key_url(port, &key)).send().unwrap();
        assert_eq!(get.status(), StatusCode::OK, "start {start} ({kind:?}): first GET");
        assert_eq!(get.text().unwrap(), value);
        to_first_ok_ms.push(started.elapsed().as_millis() as u64);
        // Nothing acknowledged before the stop is lost.
        for (key, value) in &written {
            let response = client.get(key_url(port, key)).send().unwrap();
            assert_eq!(response.status(), StatusCode::OK, "start {start}: {key} lost");
            assert_eq!(response.text().unwrap(), *value, "start {start}: {key}");
        }
        written.push((key, value));
        previous_stop = if start % 2 == 0 { Start::AfterSigterm } else { Start::AfterSigkill };
    }
    to_port_ms.sort_unstable();
    to_first_ok_ms.sort_unstable();
    println!(
        "{STARTS} starts, every first PUT and GET answered 200; spawn to port open: median {} \
         ms, max {} ms; spawn to the first GET's answer: median {} ms, max {} ms",
        to_port_ms[STARTS / 2],
        to_port_ms[STARTS - 1],
        to_first_ok_ms[STARTS / 2],
        to_first_ok_ms[STARTS - 1]
    );
}

/// `conclave serve` with `args`, its stderr captured.
fn serve(args: &[String]) -> Child {
    Command::new(BINARY)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start conclave serve")
}

/// Waits for `child` to exit (it must, within 20 s) and returns its stderr.
fn exit_and_stderr(child: Child) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    let mut child = child;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            return (status, String::from_utf8_lossy(&output.stderr).into_owned());
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the process did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn args(port: u16, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![format!("--port={port}"), format!("--working-dir={}", dir.display())];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

#[test]
fn a_second_process_on_the_same_directory_exits_naming_the_holder() {
    let ports = free_ports(2);
    let dir = temp_dir("locked");
    let first = Node::start(ports[0], &dir, None, &[]);
    let client = http();
    wait_for("the first node", START_DEADLINE, || {
        let response = client.put(key_url(ports[0], "k")).body("v").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    // The same member on the same directory, bound to another loopback address so that its
    // ports are free: a real duplicate, which only the lock can stop.
    let second = serve(&args(ports[0], &dir, &["--host=127.0.0.2"]));
    let (status, stderr) = exit_and_stderr(second);
    assert!(!status.success());
    let pid = first.pid().expect("running");
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert_eq!(stderr.matches("in use by another process").count(), 1, "printed once: {stderr}");
    // The first keeps serving, and its data is intact.
    assert_eq!(client.get(key_url(ports[0], "k")).send().unwrap().text().unwrap(), "v");
    assert_eq!(
        client.put(key_url(ports[0], "k2")).body("v2").send().unwrap().status(),
        StatusCode::OK
    );
    // Another member may share the working directory (harnesses do): its own subdirectory.
    let other = Node::start(ports[1], &dir, None, &[]);
    wait_for("a second member on the shared directory", START_DEADLINE, || {
        let response = client.put(key_url(other.port, "mine")).body("x").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    assert_eq!(client.get(key_url(ports[0], "k")).send().unwrap().text().unwrap(), "v");
}

#[test]
fn a_directory_refuses_another_member_or_another_cluster() {
    let ports = free_ports(2);
    let dir = temp_dir("identity");
    let mut node = Node::start(ports[0], &dir, None, &[]);
    let client = http();
    wait_for("the node", START_DEADLINE, || {
        let response = client.put(key_url(ports[0], "k")).body("v").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    node.terminate(Duration::from_secs(15));
    let member_dir = dir.join(format!("member-{}", ports[0]));
    assert!(member_dir.join("identity").is_file());

    // Its own directory handed to another member (as --working-dir of another --port).
    let (status, stderr) = exit_and_stderr(serve(&args(ports[1], &member_dir, &[])));
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("belongs to node {}", ports[0]))
            && stderr.contains(&format!("as node {}", ports[1])),
        "{stderr}"
    );

    // The same member restarted into another cluster (a different member list): refused,
    // or a member of a three-node cluster restarted alone could elect itself.
    let peers = format!("--peers=:{},:{}", ports[0], ports[1]);
    let (status, stderr) = exit_and_stderr(serve(&args(ports[0], &dir, &[&peers])));
    assert!(!status.success());
    assert!(stderr.contains("--peers"), "{stderr}");

    // Started as it was created, it serves its data.
    node.restart();
    wait_for("the restarted node", START_DEADLINE, || {
        let response = client.get(key_url(ports[0], "k")).send().ok()?;
        (response.status() == StatusCode::OK).then(|| response.text().ok()).flatten()
    });
}

#[test]
fn a_cluster_of_one_needs_no_peer_port_and_startup_errors_are_printed_once() {
    // A port whose + 10000 is out of range: no peer port, and none needed.
    let high = (60_000..65_000)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free high port");
    let dir = temp_dir("high-port");
    let node = Node::start(high, &dir, None, &[]);
    let client = http();
    wait_for("a node on a high port", START_DEADLINE, || {
        let response = client.put(key_url(node.port, "k")).body("v").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });

    // A busy port + 10000 does not matter to a cluster of one.
    let port = free_ports(1)[0];
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).unwrap();
    let other = Node::start(port, &temp_dir("busy-peer-port"), None, &[]);
    wait_for("a node whose peer port is taken", START_DEADLINE, || {
        let response = client.put(key_url(other.port, "k")).body("v").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    drop(squatter);

    // A taken HTTP port: one message, and no data directory created.
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let fresh = temp_dir("taken").join("data");
    let (status, stderr) = exit_and_stderr(serve(&args(taken_port, &fresh, &[])));
    assert!(!status.success());
    assert_eq!(stderr.matches("cannot listen for HTTP").count(), 1, "{stderr}");
    assert!(!fresh.exists(), "nothing is created when a port cannot be bound");

    // A working directory that cannot be created: one message, not the same cause twice.
    let blocker = temp_dir("blocked").join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let port = free_ports(1)[0];
    let (status, stderr) = exit_and_stderr(serve(&args(port, &blocker.join("data"), &[])));
    assert!(!status.success());
    let line = stderr.lines().find(|line| line.starts_with("conclave: ")).expect("an error line");
    let first_cause = line.split(": ").last().unwrap_or_default();
    assert_eq!(line.matches(first_cause).count(), 1, "a cause repeated: {line}");

    // A log written to a file is plain text: no terminal colour codes. It tells the story:
    // the node took the lead, at which term.
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(log.contains("serving"), "{log}");
    let led =
        log.lines().find(|line| line.contains("this node leads")).expect("a leadership event");
    assert!(led.contains("term="), "{led}");
    assert!(!log.contains('\u{1b}'), "escape codes in a log file: {log}");

    // --log-format json: every line one JSON object, the events with their fields.
    let port = free_ports(1)[0];
    let json_logged = Node::start(port, &temp_dir("json-log"), None, &["--log-format", "json"]);
    wait_for("a node logging JSON", START_DEADLINE, || {
        let response = client.put(key_url(json_logged.port, "k")).body("v").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    let log = json_logged.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let led = lines.iter().find(|line| line["fields"]["message"] == "this node leads");
    let term = led.expect("a leadership event")["fields"]["term"].as_u64();
    assert!(term.is_some_and(|term| term >= 1), "{log}");

    // A RUST_LOG that does not parse is refused, not silently replaced by the default.
    let port = free_ports(1)[0];
    let unlogged = temp_dir("bad-rust-log").join("data");
    let child = Command::new(BINARY)
        .arg("serve")
        .args(args(port, &unlogged, &[]))
        .env("RUST_LOG", "conclave=loud")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = exit_and_stderr(child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("RUST_LOG=\"conclave=loud\" is not a log filter"), "{stderr}");
    assert!(!unlogged.exists(), "nothing is created when the logging cannot start");
}

#[test]
fn a_restore_prints_a_command_that_starts_the_restored_node() {
    let ports = free_ports(2);
    let dir = temp_dir("restore");
    let node = Node::start(ports[0], &dir.join("source"), None, &["--snapshot-every-entries=5"]);
    let client = http();
    wait_for("the source node", START_DEADLINE, || {
        let response = client.put(key_url(node.port, "k0")).body("v0").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    for i in 1..10 {
        let response = client.put(key_url(node.port, &format!("k{i}"))).body(format!("v{i}"));
        assert_eq!(response.send().unwrap().status(), StatusCode::OK);
    }
    let backup = dir.join("node.backup");
    let output = Command::new(BINARY)
        .args(["backup", "--endpoint", &format!(":{}", node.port), "--out"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Into the data directory of the running node: refused.
    let output = Command::new(BINARY)
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--working-dir")
        .arg(dir.join("source"))
        .arg(format!("--port={}", node.port))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use by another process"));
    drop(node);

    // A new single-node cluster on another port, from the printed command.
    let target = dir.join("restored");
    let output = Command::new(BINARY)
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--working-dir")
        .arg(&target)
        .arg(format!("--peers=:{}", ports[1]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let command = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("conclave serve"))
        .unwrap_or_else(|| panic!("no command in {stdout}"));
    let words: Vec<String> = command.split_whitespace().skip(2).map(String::from).collect();
    let mut restored = Command::new(BINARY)
        .arg("serve")
        .args(&words)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let values = wait_for("the restored node's data", START_DEADLINE, || {
        let response = client.get(key_url(ports[1], "k9")).send().ok()?;
        (response.status() == StatusCode::OK).then(|| response.text().ok()).flatten()
    });
    let _ = restored.kill();
    let _ = restored.wait();
    assert_eq!(values, "v9");
}
