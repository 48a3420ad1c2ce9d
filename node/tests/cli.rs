//! The client commands and `conclave dev`, as a user runs them: real processes, real output,
//! real exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::{BINARY, Node, free_ports, temp_dir, wait_for, wait_for_leader};

fn conclave(endpoints: &str, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .arg(format!("--endpoints={endpoints}"))
        .arg("--timeout-secs=5")
        .output()
        .expect("run conclave")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn client_commands_print_values_exactly_and_exit_with_documented_codes() {
    let port = free_ports(1)[0];
    let node = Node::start(port, &temp_dir("cli").join("data"), None, &[]);
    wait_for_leader(&[&node], Duration::from_secs(20));
    let endpoint = format!(":{port}");

    let put = conclave(&endpoint, &["put", "greeting", "hello, world "]);
    assert!(put.status.success(), "{put:?}");
    let get = conclave(&endpoint, &["get", "greeting"]);
    assert_eq!(get.status.code(), Some(0));
    assert_eq!(stdout(&get), "hello, world ", "the value exactly, no newline added");

    // Binary values through stdin.
    let mut child = Command::new(BINARY)
        .args(["put", "blob", "-", &format!("--endpoints={endpoint}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&[0, 1, 2, 255, 10]).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(conclave(&endpoint, &["get", "blob"]).stdout, vec![0, 1, 2, 255, 10]);

    // Exit codes: 2 not found, 3 condition failed.
    let missing = conclave(&endpoint, &["get", "missing"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    assert_eq!(
        conclave(&endpoint, &["put", "greeting", "x", "--if-absent"]).status.code(),
        Some(3)
    );
    assert_eq!(conclave(&endpoint, &["cas", "greeting", "wrong", "x"]).status.code(), Some(3));
    let cas = conclave(&endpoint, &["cas", "greeting", "hello, world ", "swapped"]);
    assert!(cas.status.success(), "{cas:?}");
    assert_eq!(stdout(&conclave(&endpoint, &["get", "greeting"])), "swapped");

    // --json.
    let json: serde_json::Value =
        serde_json::from_slice(&conclave(&endpoint, &["get", "greeting", "--json"]).stdout)
            .unwrap();
    assert_eq!(json["value"], "swapped");
    assert!(json["mod_revision"].as_u64().unwrap() > 0);
    let status: serde_json::Value =
        serde_json::from_slice(&conclave(&endpoint, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status[0]["info"]["role"], "leader");

    let del = conclave(&endpoint, &["del", "greeting"]);
    assert!(del.status.success());
    assert_eq!(conclave(&endpoint, &["del", "greeting"]).status.code(), Some(2));

    // Nobody listening: exit 4 with a clear message.
    let dead = free_ports(1)[0];
    let unavailable = Command::new(BINARY)
        .args(["get", "k", &format!("--endpoints=:{dead}"), "--timeout-secs=1"])
        .output()
        .unwrap();
    assert_eq!(unavailable.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&unavailable.stderr).contains("no node answered"));
}

/// `conclave dev --nodes=3` on three free consecutive ports; returns it and its first port.
fn start_dev(name: &str) -> (Child, u16) {
    let base_port = support::consecutive_free_ports(3);
    let dev = Command::new(BINARY)
        .args(["dev", "--nodes=3", &format!("--base-port={base_port}")])
        .arg(format!("--data-dir={}", temp_dir(name).display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    (dev, base_port)
}

/// Sends SIGTERM to `conclave dev` and asserts it exits successfully with none of its nodes
/// still listening.
fn stop_dev_with_sigterm(dev: &mut Child, base_port: u16) {
    let pid = nix::unistd::Pid::from_raw(dev.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status =
        wait_for("conclave dev to exit", Duration::from_secs(20), || dev.try_wait().unwrap());
    assert!(status.success(), "dev must catch the signal and stop its nodes: {status}");
    for port in [base_port, base_port + 1, base_port + 2] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "node {port} still listening"
        );
    }
}

#[test]
fn dev_starts_a_cluster_and_stops_it_on_sigterm_leaving_no_process() {
    let (mut dev, base_port) = start_dev("dev");
    // `dev` prints its banner once it has seen a leader; until then the cluster is forming.
    let mut printed = BufReader::new(dev.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("node(s) running") {
        banner.clear();
        let read = printed.read_line(&mut banner).unwrap();
        assert!(read > 0, "conclave dev ended its output before the banner");
    }
    let endpoints = format!(":{},:{},:{}", base_port, base_port + 1, base_port + 2);
    wait_for("the dev cluster to accept a write", Duration::from_secs(30), || {
        conclave(&endpoints, &["put", "k", "v"]).status.success().then_some(())
    });
    assert_eq!(stdout(&conclave(&endpoints, &["get", "k"])), "v");
    stop_dev_with_sigterm(&mut dev, base_port);
    let rest = std::io::read_to_string(printed).unwrap();
    assert!(rest.contains("SIGTERM, stopping the nodes"), "{rest}");
}

#[test]
fn dev_stops_its_nodes_on_a_sigterm_that_arrives_while_the_cluster_is_forming() {
    let (mut dev, base_port) = start_dev("dev-early-stop");
    // A node listening means `conclave dev` has started its nodes; the leader election that
    // `dev` waits for before its banner is then still under way. (Had it finished, dev must
    // stop cleanly all the same.)
    wait_for("the first dev node to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", base_port)).ok()
    });
    stop_dev_with_sigterm(&mut dev, base_port);
    let printed = std::io::read_to_string(dev.stdout.take().unwrap()).unwrap();
    assert!(printed.contains("SIGTERM"), "{printed}");
}

/// The names `support::temp_dir` makes give back the process that made them: directories of
/// runs whose process has exited are removed by that id.
#[test]
fn test_directory_names_give_back_their_process_id() {
    assert_eq!(support::test_dir_pid("conclave-test-busy-peer-port-23559-12633"), Some(23559));
    assert_eq!(support::test_dir_pid("conclave-test-busy-peer-port-23559-12633.log"), Some(23559));
    assert_eq!(support::test_dir_pid("conclave-test-cli-7-0"), Some(7));
    assert_eq!(support::test_dir_pid("conclave-test-23559-12633"), None, "no test name");
    assert_eq!(support::test_dir_pid("conclave-test-x-y-12633"), None);
    assert_eq!(support::test_dir_pid("conclave-8001"), None, "not a test's");
}

/// A one-request HTTP server on a free port that answers anything with 200 and a body that is
/// not what a Conclave node says; returns its port.
fn garbage_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let body = "this is not conclave";
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

/// Every code of the table (`conclave --help`): 0, 2, 3 and 4 are above; here the usage and
/// local errors (1, clap's own included), a node's refusal (5), an unreadable answer (6), and
/// `status` and `backup` with endpoints down (4).
#[test]
fn every_exit_code_of_the_table_is_what_the_cli_returns() {
    let port = free_ports(1)[0];
    let node = Node::start(port, &temp_dir("cli-codes").join("data"), None, &[]);
    let endpoint = format!(":{}", node.port);
    wait_for_leader(&[&node], Duration::from_secs(30));

    let missing_argument = Command::new(BINARY).args(["get"]).output().unwrap();
    assert_eq!(missing_argument.status.code(), Some(1), "a usage error is 1, not clap's 2");
    let unknown_flag = Command::new(BINARY).args(["get", "k", "--no-such-flag"]).output().unwrap();
    assert_eq!(unknown_flag.status.code(), Some(1));
    let help = Command::new(BINARY).args(["get", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let bad_endpoint = conclave("not a url!", &["get", "k"]);
    assert_eq!(bad_endpoint.status.code(), Some(1), "no node was contacted");
    assert!(String::from_utf8_lossy(&bad_endpoint.stderr).contains("bad endpoint"));

    let long_key = "k".repeat(5000);
    let refused = conclave(&endpoint, &["put", &long_key, "v"]);
    assert_eq!(refused.status.code(), Some(5), "{}", String::from_utf8_lossy(&refused.stderr));

    let garbage = conclave(&format!(":{}", garbage_server()), &["members", "list"]);
    assert_eq!(garbage.status.code(), Some(6), "{}", String::from_utf8_lossy(&garbage.stderr));

    let dead = free_ports(1)[0];
    let status = conclave(&format!("{endpoint},:{dead}"), &["status"]);
    assert_eq!(status.status.code(), Some(4), "one endpoint of two is down");
    assert!(stdout(&status).contains("unreachable"), "{}", stdout(&status));
    assert!(String::from_utf8_lossy(&status.stderr).contains("1 of 2 endpoints did not answer"));
    let healthy = conclave(&endpoint, &["status"]);
    assert_eq!(healthy.status.code(), Some(0));

    // `version`: the client's and each server's (`GET /version`).
    let version = env!("CARGO_PKG_VERSION");
    let versions = conclave(&endpoint, &["version"]);
    assert_eq!(versions.status.code(), Some(0));
    let printed = stdout(&versions);
    assert!(printed.starts_with(&format!("client {version}\n")), "{printed}");
    assert!(printed.contains(&format!("(node {}): {version}", node.port)), "{printed}");
    let one_down = conclave(&format!("{endpoint},:{dead}"), &["version"]);
    assert_eq!(one_down.status.code(), Some(4));

    let out = temp_dir("cli-codes").join("down.backup");
    let backup = Command::new(BINARY)
        .args(["backup", "--endpoint", &format!(":{dead}"), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(backup.status.code(), Some(4), "{}", String::from_utf8_lossy(&backup.stderr));
    // A backup takes the endpoints from the environment, skips one that cannot be reached,
    // and prints its summary as JSON when asked.
    let backup = Command::new(BINARY)
        .args(["backup", "--json", "--out"])
        .arg(&out)
        .env("CONCLAVE_ENDPOINTS", format!(":{dead},{endpoint}"))
        .output()
        .unwrap();
    assert_eq!(backup.status.code(), Some(0), "{}", String::from_utf8_lossy(&backup.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    assert_eq!(summary["file"], out.to_str().unwrap());
    assert!(summary["shards"][0]["index"].as_u64().unwrap() > 0, "{summary}");

    // Client flags belong to the client commands: a node has none of them.
    let serve = Command::new(BINARY).args(["serve", "--endpoints", ":1"]).output().unwrap();
    assert_eq!(serve.status.code(), Some(1), "serve takes no --endpoints");
}

#[test]
fn unreachable_endpoints_fail_fast_naming_each_cause_and_bad_transfers_are_refused_at_once() {
    // Nothing listens on these ports: every connection is refused. The call gives up after
    // the dial timeout (1 s), not the call deadline (600 s), and names each endpoint's cause.
    let dead = free_ports(2);
    let started = std::time::Instant::now();
    let unavailable = Command::new(BINARY)
        .args(["get", "k", "--timeout-secs=600", "--dial-timeout-secs=1"])
        .arg(format!("--endpoints=:{},:{}", dead[0], dead[1]))
        .output()
        .unwrap();
    assert_eq!(unavailable.status.code(), Some(4));
    assert!(started.elapsed() < Duration::from_secs(300), "gave up at the deadline, not earlier");
    let message = String::from_utf8_lossy(&unavailable.stderr);
    for port in &dead {
        let cause = format!("http://127.0.0.1:{port}: cannot connect: Connection refused");
        assert!(message.contains(&cause), "{message}");
    }
    // The environment sets what a flag does.
    let from_env = Command::new(BINARY)
        .args(["get", "k"])
        .env("CONCLAVE_ENDPOINTS", format!(":{}", dead[0]))
        .env("CONCLAVE_TIMEOUT_SECS", "600")
        .env("CONCLAVE_DIAL_TIMEOUT_SECS", "1")
        .output()
        .unwrap();
    assert_eq!(from_env.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&from_env.stderr).contains(&format!(":{}", dead[0])));

    // A transfer to a node that is not a voter is refused by the leader with the reason.
    let port = free_ports(1)[0];
    let node = Node::start(port, &temp_dir("cli-transfer").join("data"), None, &[]);
    wait_for_leader(&[&node], Duration::from_secs(30));
    let unknown = conclave(&format!(":{port}"), &["leader", "transfer", "--to", "9"]);
    assert_eq!(unknown.status.code(), Some(5), "{unknown:?}");
    let reason = String::from_utf8_lossy(&unknown.stderr);
    assert!(reason.contains("node 9 is not a member of the cluster"), "{reason}");
    let itself = conclave(&format!(":{port}"), &["leader", "transfer", "--to", &port.to_string()]);
    assert_eq!(itself.status.code(), Some(0), "the leader already leads: {itself:?}");
}

#[test]
fn listings_page_through_any_number_of_keys_and_prefix_deletes_count() {
    let port = free_ports(1)[0];
    let node = Node::start(port, &temp_dir("cli-pages").join("data"), None, &[]);
    wait_for_leader(&[&node], Duration::from_secs(30));
    let endpoint = format!(":{port}");
    // More keys than one page holds (10,000), written 128 to a transaction.
    const KEYS: usize = 10_050;
    let client = reqwest::blocking::Client::new();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k/{i:05}")).collect();
    for batch in keys.chunks(128) {
        let puts: Vec<serde_json::Value> = batch
            .iter()
            .map(|key| serde_json::json!({"put": {"key": key, "value": "v"}}))
            .collect();
        let txn = serde_json::json!({ "success": puts });
        let response = client.post(node.url("/txn")).json(&txn).send().unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    }
    client.put(node.url("/kv/other")).body("v").send().unwrap();

    let count = conclave(&endpoint, &["get", "--prefix", "k/", "--count-only"]);
    assert_eq!(stdout(&count), format!("{KEYS}\n"), "{count:?}");
    let everything = conclave(&endpoint, &["get", "--prefix", "", "--keys-only"]);
    let listed: Vec<String> = stdout(&everything).lines().map(str::to_string).collect();
    let mut expected = keys.clone();
    expected.push("other".into());
    assert_eq!(listed, expected, "every key once, in order, across pages");

    let first = conclave(&endpoint, &["get", "--prefix", "k/", "--limit", "10001", "--json"]);
    let page: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let kvs = page["kvs"].as_array().unwrap();
    assert_eq!(kvs.len(), 10_001);
    assert_eq!(kvs[10_000]["key"], keys[10_000]);
    assert_eq!(kvs[0]["value"], "v");
    assert_eq!(page["more"], true);
    let three = conclave(&endpoint, &["get", "--prefix", "k/", "--limit", "3", "--keys-only"]);
    assert_eq!(stdout(&three), "k/00000\nk/00001\nk/00002\n");
    assert!(String::from_utf8_lossy(&three.stderr).contains("more keys"));

    // The HTTP cursor itself: the page after a key, values left out.
    let url = node.url("/kv?prefix=k/&limit=2&start_after=k/09998&keys_only=true");
    let page: serde_json::Value = client.get(url).send().unwrap().json().unwrap();
    assert_eq!(page["kvs"][0]["key"], "k/09999");
    assert_eq!(page["kvs"][1]["key"], "k/10000");
    assert!(page["kvs"][0].get("value").is_none(), "{page}");
    assert_eq!(page["more"], true);

    // A prefix delete: one entry, the count deleted, the rest kept.
    let deleted = conclave(&endpoint, &["del", "--prefix", "k/0"]);
    assert_eq!(stdout(&deleted), "deleted 10000 keys\n", "{deleted:?}");
    let count = conclave(&endpoint, &["get", "--prefix", "", "--count-only", "--json"]);
    let count: serde_json::Value = serde_json::from_slice(&count.stdout).unwrap();
    assert_eq!(count["count"], 51);
    let none = conclave(&endpoint, &["del", "--prefix", "k/0", "--json"]);
    let none: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(none["deleted"], 0);
    let no_prefix = client.delete(node.url("/kv")).send().unwrap();
    assert_eq!(no_prefix.status(), 400, "DELETE /kv without ?prefix= is refused");
}

#[test]
fn a_watch_resumes_on_another_node_without_losing_or_repeating_a_change() {
    let mut nodes = support::cluster("cli-watch", 3);
    support::leader_of(&nodes, Duration::from_secs(30));
    // The watch opens on the first endpoint, which is killed midway.
    let endpoints: Vec<String> = nodes.iter().map(|node| format!(":{}", node.port)).collect();
    let mut watch = Command::new(BINARY)
        .args(["watch", "w/", &format!("--endpoints={}", endpoints.join(","))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let others = endpoints[1..].join(",");
    let put = |i: usize| {
        let output = conclave(&others, &["put", &format!("w/{i}"), &format!("v{i}")]);
        assert!(output.status.success(), "{output:?}");
    };
    let next_line = || lines.recv_timeout(Duration::from_secs(30)).expect("a watched change");
    // "From now" is from when the watch has its place: until then, writes are not its to see.
    // Write a marker until one arrives; the markers written after it then arrive too.
    let mut markers = 0;
    let first_seen = loop {
        markers += 1;
        let marker = format!("ready-{markers}");
        assert!(conclave(others.as_str(), &["put", "w/0", &marker]).status.success());
        if let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
            break line.rsplit_once("ready-").unwrap().1.parse::<u32>().unwrap();
        }
        assert!(markers < 60, "the watch never opened");
    };
    for expected in first_seen + 1..=markers {
        assert!(next_line().ends_with(&format!("put w/0 = ready-{expected}")));
    }
    put(1);
    // The first change arrived: the stream is open on the first node.
    assert!(next_line().ends_with("put w/1 = v1"));
    put(2);
    nodes[0].kill9();
    for i in 3..=5 {
        put(i);
    }
    let mut seen = vec!["put w/1 = v1".to_string()];
    for _ in 2..=5 {
        let line = next_line();
        seen.push(line.split_once(' ').unwrap().1.to_string());
    }
    // Now on the second node; the first comes back, and the second stops gracefully (SIGTERM:
    // its stream ends with an `error` event rather than a broken connection).
    nodes[0].restart();
    support::wait_for("the first node to serve again", Duration::from_secs(30), || {
        let info = support::info(&support::http(), nodes[0].port)?;
        info["leader"].as_u64().map(|_| ())
    });
    let _ = nodes[1].terminate(Duration::from_secs(20));
    let survivors = format!("{},{}", endpoints[0], endpoints[2]);
    for i in 6..=8 {
        let output = conclave(&survivors, &["put", &format!("w/{i}"), &format!("v{i}")]);
        assert!(output.status.success(), "{output:?}");
    }
    for _ in 6..=8 {
        let line = next_line();
        seen.push(line.split_once(' ').unwrap().1.to_string());
    }
    let expected: Vec<String> = (1..=8).map(|i| format!("put w/{i} = v{i}")).collect();
    assert_eq!(seen, expected, "every change once, in order");
    watch.kill().unwrap();
    let output = watch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resuming after event"), "{stderr}");
    assert!(lines.try_recv().is_err(), "no change printed twice");
}

#[test]
fn output_formats_and_a_status_of_the_whole_cluster_from_one_endpoint() {
    let nodes = support::cluster("cli-formats", 3);
    let leader = support::leader_of(&nodes, Duration::from_secs(30));
    let follower = nodes.iter().find(|node| node.port != leader).unwrap().port;
    let one = format!(":{follower}");
    assert!(conclave(&one, &["put", "k", "v"]).status.success());

    // status --cluster: every member, found through one endpoint, with version and data size.
    let status = conclave(&one, &["status", "--cluster", "-w", "json"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let mut ids: Vec<u64> =
        rows.as_array().unwrap().iter().map(|row| row["info"]["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    let mut ports: Vec<u64> = nodes.iter().map(|node| u64::from(node.port)).collect();
    ports.sort_unstable();
    assert_eq!(ids, ports);
    for row in rows.as_array().unwrap() {
        assert_eq!(row["version"], env!("CARGO_PKG_VERSION"));
        assert!(row["info"]["data_dir_bytes"].as_u64().unwrap() > 0, "{row}");
    }
    let table = stdout(&conclave(&one, &["status", "--cluster"]));
    assert!(table.contains("VERSION") && table.contains("DATA"), "{table}");
    assert_eq!(table.matches("| leader ").count(), 1, "{table}");
    let simple = stdout(&conclave(&one, &["status", "-w", "simple"]));
    assert_eq!(simple.lines().count(), 1, "{simple}");
    assert!(!simple.trim_end().ends_with(','), "no empty trailing field: {simple}");
    assert!(simple.starts_with(&format!("127.0.0.1:{follower}, {follower}, ")), "{simple}");

    // members list from a follower asks the leader: every member's lag is known.
    let members = conclave(&one, &["members", "list", "--json"]);
    let members: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    for member in members["members"].as_array().unwrap() {
        assert!(member["lag"].is_u64(), "{members}");
    }

    // get in each format.
    assert_eq!(stdout(&conclave(&one, &["get", "k"])), "v");
    let table = stdout(&conclave(&one, &["get", "k", "-w", "table"]));
    assert!(table.contains("MOD REVISION") && table.contains("| k "), "{table}");
    let json = conclave(&one, &["get", "k", "--write-out", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["value"], "v");
    let listed = stdout(&conclave(&one, &["get", "--prefix", "", "-w", "table"]));
    assert!(listed.contains("| k ") && listed.contains("| v "), "{listed}");
}

#[test]
fn completion_scripts_load_in_their_shells() {
    let bash = Command::new(BINARY).args(["completion", "bash"]).output().unwrap();
    assert!(bash.status.success());
    let script = stdout(&bash);
    for subcommand in ["serve", "backup", "restore", "shards", "leader"] {
        assert!(script.contains(subcommand), "bash completion lacks {subcommand}");
    }
    let path = temp_dir("completion").join("conclave.bash");
    std::fs::write(&path, &script).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p conclave", path.display()))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
    assert!(stdout(&loaded).contains("_conclave"), "{}", stdout(&loaded));
    for shell in ["zsh", "fish"] {
        let output = Command::new(BINARY).args(["completion", shell]).output().unwrap();
        assert!(output.status.success() && stdout(&output).contains("conclave"), "{shell}");
    }
    let unknown = Command::new(BINARY).args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1), "an unknown shell is a usage error");
}
