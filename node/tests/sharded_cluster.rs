//! A sharded cluster of real `conclave serve` processes (`--shards 8`, 3 replicas a shard, on
//! 5 nodes): every node accepts every request and routes it to the shard's group (here, or
//! through a node that holds a replica); concurrent clients' operations are recorded as a
//! history while nodes are killed with SIGKILL and restarted, and the history — with a read of
//! every key after a full restart of all five nodes — must be linearizable (the checker of
//! `conclave check`). The other tests here pin what a sharded cluster answers at its edges:
//! transactions across shards, sessions per shard, watches of every shard (through a kill and
//! a resume), the data directory's layout, a request another node routed by a different map,
//! a backup of every shard restored into a new cluster, and leaderships kept even.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conclave_checker::{CheckOptions, History, Op, Operation, Verdict, check, summarize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use support::{BINARY, Node, free_ports, http, key_url, temp_dir, wait_for};

const NODES: usize = 5;
const SHARDS: u64 = 8;
const KEYS: u32 = 24;
const CLIENTS: u64 = 4;
/// How long the clients run while nodes are killed and restarted.
const WORKLOAD: Duration = Duration::from_secs(12);

/// `NODES` nodes of one sharded cluster on fresh ports; `extra` flags on every node.
fn sharded_cluster(name: &str, extra: &[&str]) -> Vec<Node> {
    let ports = free_ports(NODES);
    let dir = temp_dir(name);
    let peers = ports.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    let shards = format!("--shards={SHARDS}");
    let mut flags = vec![shards.as_str()];
    flags.extend_from_slice(extra);
    ports
        .iter()
        .map(|port| Node::start(*port, &dir.join(format!("node-{port}")), Some(&peers), &flags))
        .collect()
}

/// `/cluster/shards` of the node at `port`, once every shard reports a leader.
fn wait_for_every_shard_to_lead(port: u16, deadline: Duration) -> Value {
    wait_for_shards_to_lead(port, SHARDS, deadline)
}

/// `/cluster/shards` of the node at `port`, once each of its `shards` shards reports a leader.
fn wait_for_shards_to_lead(port: u16, shards: u64, deadline: Duration) -> Value {
    let client = http();
    wait_for("a leader in every shard", deadline, || {
        let response = client.get(format!("http://127.0.0.1:{port}/cluster/shards")).send().ok()?;
        let all_shards: Value = response.json().ok()?;
        let all = all_shards["shards"].as_array()?;
        let led = all.iter().all(|shard| shard["leader"].as_u64().is_some());
        (all.len() == shards as usize && led).then_some(all_shards)
    })
}

/// Microseconds since the test's start: the history's clock.
fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// One client: puts of unique values and gets on the shared keys, each to a random node,
/// recorded. An answer it cannot interpret (a timeout, a lost connection, a 5xx) leaves a write
/// `info` (it may still take effect) and ends the client's identity, as a crashed client's.
fn run_client(
    id: u64,
    ports: &[u16],
    start: Instant,
    stop: &AtomicBool,
    history: &Mutex<Vec<Operation>>,
) -> u32 {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(id);
    let mut identity = id << 32;
    let mut acknowledged = 0;
    let mut written = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let port = ports[rng.random_range(0..ports.len())];
        let key = format!("key-{}", rng.random_range(0..KEYS));
        let call = micros(start);
        if rng.random_bool(0.5) {
            written += 1;
            let value = format!("c{id}-{written}");
            let answer = client.put(key_url(port, &key)).body(value.clone()).send();
            let op = Op::put(key, value);
            match answer.map(|response| response.status().as_u16()) {
                Ok(200 | 201) => {
                    acknowledged += 1;
                    history.lock().unwrap().push(Operation::ok(identity, call, micros(start), op));
                }
                _ => {
                    history.lock().unwrap().push(Operation::info(identity, call, op));
                    identity += 1;
                }
            }
        } else {
            let answer = client.get(key_url(port, &key)).send();
            let read = match answer {
                Ok(response) if response.status() == 200 => Some(Some(response.text().unwrap())),
                Ok(response) if response.status() == 404 => Some(None),
                _ => None, // a read that failed changed nothing: left out
            };
            if let Some(value) = read {
                let op = Op::get(key, value.as_deref());
                history.lock().unwrap().push(Operation::ok(identity, call, micros(start), op));
            }
        }
    }
    acknowledged
}

#[test]
fn a_sharded_cluster_stays_linearizable_through_kill_9_and_a_full_restart() {
    let mut nodes = sharded_cluster("sharded-history", &["--forward-to-leader"]);
    let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
    let shards = wait_for_every_shard_to_lead(ports[0], Duration::from_secs(30));
    // The map: 8 shards, 3 replicas each (5 for the meta group), every slot owned once.
    let mut slots_owned = 0;
    for shard in shards["shards"].as_array().unwrap() {
        let replicas = shard["replicas"].as_array().unwrap().len();
        let expected = if shard["shard"] == 0 { NODES } else { 3 };
        assert_eq!(replicas, expected, "{shard}");
        slots_owned += shard["slot_count"].as_u64().unwrap();
    }
    assert_eq!(slots_owned, shards["slot_count"].as_u64().unwrap());

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (ports, stop, history) = (ports.clone(), stop.clone(), history.clone());
            std::thread::spawn(move || run_client(id + 1, &ports, start, &stop, &history))
        })
        .collect();
    // The nemesis: one node at a time killed with SIGKILL, restarted a moment later.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut kills = 0;
    while start.elapsed() < WORKLOAD {
        std::thread::sleep(Duration::from_millis(rng.random_range(800..1600)));
        let victim = rng.random_range(0..NODES);
        nodes[victim].kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        nodes[victim].restart();
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged: u32 = clients.into_iter().map(|client| client.join().unwrap()).sum();
    assert!(acknowledged >= 50, "only {acknowledged} writes were acknowledged in {WORKLOAD:?}");

    // A full restart: every node killed at once, then all started again.
    for node in &mut nodes {
        node.kill9();
    }
    for node in &mut nodes {
        node.restart();
    }
    wait_for_every_shard_to_lead(ports[1], Duration::from_secs(30));
    // Every key read back, at a node that may hold none of its replicas.
    let client = http();
    let mut final_reads = Vec::new();
    for (position, key) in (0..KEYS).map(|k| format!("key-{k}")).enumerate() {
        let port = ports[position % NODES];
        let call = micros(start);
        let value = wait_for(&format!("a read of {key}"), Duration::from_secs(20), || {
            let response = client.get(key_url(port, &key)).send().ok()?;
            match response.status().as_u16() {
                200 => Some(Some(response.text().ok()?)),
                404 => Some(None),
                _ => None,
            }
        });
        final_reads.push(Operation::ok(999, call, micros(start), Op::get(key, value.as_deref())));
    }
    let mut ops = Arc::try_unwrap(history).unwrap().into_inner().unwrap();
    let recorded = ops.len();
    ops.extend(final_reads);
    let history = History::new(ops).expect("a well-formed history");
    let report = check(&history, &CheckOptions::default());
    match &report.verdict {
        Verdict::Linearizable => {}
        other => panic!(
            "{recorded} operations, {acknowledged} acknowledged writes, {kills} kills: {other:?}\n{}",
            summarize(&history, &report)
        ),
    }
    eprintln!(
        "sharded history: {recorded} operations ({acknowledged} acknowledged writes), {kills} \
         SIGKILLs, a full restart, {KEYS} keys read back: linearizable"
    );
}

#[test]
fn a_sharded_cluster_refuses_what_it_cannot_do_yet_with_the_reason() {
    let nodes = sharded_cluster("sharded-edges", &[]);
    let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
    let shards = wait_for_every_shard_to_lead(ports[0], Duration::from_secs(30));
    let client = http();
    // Follows the 307 of a node whose replica of the shard does not lead, as clients do.
    let following =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let txn = |body: &str| {
        let response =
            following.post(format!("http://127.0.0.1:{}/txn", ports[2])).body(body.to_string());
        let response = response.header("content-type", "application/json").send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    // Keys of two shards in one transaction: 400, naming both shards; a hash tag keeps keys
    // together, and such a transaction commits.
    let keys: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
    let (status, body) = txn(&format!(
        r#"{{"compare":[],"success":[{}],"failure":[]}}"#,
        keys.iter()
            .map(|key| format!(r#"{{"put":{{"key":"{key}","value":"1"}}}}"#))
            .collect::<Vec<_>>()
            .join(",")
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("must be in one shard") && body.contains("hash tag"), "{body}");
    let named: BTreeSet<&str> = body.matches("shard ").collect();
    assert!(!named.is_empty(), "{body}");
    let (status, body) = txn(
        r#"{"compare":[],"success":[{"put":{"key":"{user42}.name","value":"Ada"}},{"put":{"key":"{user42}.cart","value":"[]"}}],"failure":[]}"#,
    );
    assert_eq!(status, 200, "{body}");

    // A session lives in one shard: registering one without naming the shard is refused with
    // the reason and the map's epoch; one registered in a shard makes writes of its keys
    // exactly-once, and is unknown to every other shard.
    let session = client.post(format!("http://127.0.0.1:{}/session", ports[0])).send().unwrap();
    assert_eq!(session.status().as_u16(), 400);
    assert_eq!(session.headers()["x-conclave-shard-epoch"], "1");
    assert!(session.text().unwrap().contains("per shard"));
    let key = "session-test-a";
    let shard = slot_owner(key, &shards);
    let session: Value = following
        .post(format!("http://127.0.0.1:{}/session", ports[1]))
        .header("x-conclave-shard", shard.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let client_id = session["client_id"].as_u64().expect("a session id").to_string();
    let put = |key: &str, value: &str, seq: u64| {
        let response = following
            .put(key_url(ports[2], key))
            .header("x-conclave-client-id", client_id.as_str())
            .header("x-conclave-seq", seq.to_string())
            .body(value.to_string())
            .send()
            .unwrap();
        response.status().as_u16()
    };
    assert_eq!(put(key, "first", 1), 200);
    assert_eq!(put(key, "second", 2), 200);
    // A resend of write 2 is answered with its outcome and not applied again (whatever it
    // carries); write 1 is past.
    assert_eq!(put(key, "resent", 2), 200);
    let read = following.get(key_url(ports[3], key)).send().unwrap().text().unwrap();
    assert_eq!(read, "second");
    assert_eq!(put(key, "first", 1), 409);
    let elsewhere = (0..10_000)
        .map(|i| format!("other{i}"))
        .find(|other| slot_owner(other, &shards) != shard)
        .unwrap();
    assert_eq!(put(&elsewhere, "x", 3), 409, "a session is unknown outside its shard");

    // A watch from a start revision must name its shard: revisions are per shard.
    let watch =
        client.get(format!("http://127.0.0.1:{}/watch?start_revision=1", ports[0])).send().unwrap();
    assert_eq!(watch.status().as_u16(), 400);
    assert!(watch.text().unwrap().contains("per shard"));
    let endpoints = format!(":{}", ports[3]);
    let put = Command::new(BINARY)
        .args(["put", "cli-key", "cli-value", "--endpoints", &endpoints])
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get =
        Command::new(BINARY).args(["get", "cli-key", "--endpoints", &endpoints]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout), "cli-value");

    // A listing across shards, two keys a page: each page continues after the last key of
    // the one before, and together they are every key once, in order.
    let page_keys: Vec<String> = (0..9).map(|i| format!("page/{i}")).collect();
    for key in &page_keys {
        assert_eq!(following.put(key_url(ports[1], key)).body("v").send().unwrap().status(), 200);
    }
    let (mut listed, mut after) = (Vec::new(), String::new());
    loop {
        let url =
            format!("http://127.0.0.1:{}/kv?prefix=page/&limit=2&start_after={after}", ports[4]);
        let page: serde_json::Value = following.get(url).send().unwrap().json().unwrap();
        let kvs = page["kvs"].as_array().unwrap();
        listed.extend(kvs.iter().map(|kv| kv["key"].as_str().unwrap().to_string()));
        if page["more"] != true {
            break;
        }
        after = listed.last().unwrap().replace('/', "%2F");
    }
    assert_eq!(listed, page_keys);
    // A prefix delete reaches every shard and counts what it deleted.
    let deleted = Command::new(BINARY)
        .args(["del", "--prefix", "page/", "--endpoints", &endpoints])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&deleted.stdout), "deleted 9 keys\n");

    // A request another node routed here for a shard this node holds no replica of: 421 with
    // the epoch, never routed on to a third node.
    let not_held = shards["shards"].as_array().unwrap().iter().find_map(|shard| {
        let replicas = shard["replicas"].as_array().unwrap();
        let outsider =
            ports.iter().find(|port| !replicas.iter().any(|id| id.as_u64() == Some(**port as u64)));
        outsider.map(|port| (shard["shard"].as_u64().unwrap(), *port))
    });
    let (shard, outsider) = not_held.expect("some node holds no replica of some shard");
    let key = (0..10_000)
        .map(|i| format!("probe{i}"))
        .find(|key| slot_owner(key, &shards) == shard)
        .unwrap();
    let misrouted = client
        .get(key_url(outsider, &key))
        .header("x-conclave-shard", shard.to_string())
        .send()
        .unwrap();
    assert_eq!(misrouted.status().as_u16(), 421);
    assert_eq!(misrouted.headers()["x-conclave-shard-epoch"], "1");

    // A shard's backup and a transfer of its leadership, asked of that node without a replica:
    // routed through a node that holds one.
    let part = client.get(format!("http://127.0.0.1:{outsider}/admin/backup?shard={shard}")).send();
    let part = part.unwrap();
    assert_eq!(part.status().as_u16(), 200);
    assert!(part.headers().contains_key("x-conclave-backup-index"));
    let info = &shards["shards"].as_array().unwrap()[shard as usize];
    let leader = info["leader"].as_u64().unwrap();
    let replicas: Vec<u64> =
        info["replicas"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
    let to = replicas.iter().copied().find(|id| *id != leader).unwrap();
    let moved = following
        .post(format!("http://127.0.0.1:{outsider}/cluster/leader?shard={shard}"))
        .body(format!(r#"{{"to":{to}}}"#))
        .send()
        .unwrap();
    let status = moved.status().as_u16();
    assert_eq!(status, 200, "{}", moved.text().unwrap());
    let refused = following
        .post(format!("http://127.0.0.1:{outsider}/cluster/leader?shard={shard}"))
        .body(format!(r#"{{"to":{outsider}}}"#))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 409, "a member without a replica cannot lead it");

    // `conclave shards` shows every shard with its leader.
    let table = Command::new(BINARY)
        .args(["shards", "--endpoints", &format!(":{}", ports[4])])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("shard map epoch 1, 1024 slots"), "{table}");
    let rows = table.lines().filter(|line| line.starts_with("| ")).count();
    assert_eq!(rows, 1 + SHARDS as usize, "a header and a row per shard: {table}");
}

/// One server-sent event: its name, id and data.
#[derive(Debug)]
struct SseEvent {
    event: String,
    id: String,
    data: String,
}

/// The events of a `/watch` stream opened at `port` (from `last_event_id`, if given), read on
/// a thread of their own and handed over as they come; the stream closes when the receiver is
/// dropped and the next event arrives.
fn watch_events(
    port: u16,
    prefix: &str,
    last_event_id: Option<&str>,
) -> std::sync::mpsc::Receiver<SseEvent> {
    use std::io::BufRead as _;
    let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
    let mut request = client.get(format!("http://127.0.0.1:{port}/watch?prefix={prefix}"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().unwrap();
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());
    let (sender, events) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(response).lines();
        let mut event = SseEvent { event: String::new(), id: String::new(), data: String::new() };
        while let Some(Ok(line)) = lines.next() {
            if line.is_empty() {
                let done = std::mem::replace(
                    &mut event,
                    SseEvent { event: String::new(), id: String::new(), data: String::new() },
                );
                if !done.data.is_empty() && sender.send(done).is_err() {
                    return;
                }
            } else if let Some(name) = line.strip_prefix("event:") {
                event.event = name.trim().to_string();
            } else if let Some(id) = line.strip_prefix("id:") {
                event.id = id.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                event.data.push_str(data.trim());
            }
        }
    });
    events
}

/// Puts `key` = `value` through the nodes at `ports` in turn until one acknowledges it.
fn put_somewhere(ports: &[u16], key: &str, value: &str) {
    let client = http();
    let mut attempt = 0;
    wait_for(&format!("a put of {key}"), Duration::from_secs(30), || {
        attempt += 1;
        let port = ports[attempt % ports.len()];
        let response = client.put(key_url(port, key)).body(value.to_string()).send().ok()?;
        matches!(response.status().as_u16(), 200 | 201).then_some(())
    });
}

/// Receives one change per key of `keys` from `events` (in any order), and returns the last
/// event's id; fails on a change of another key, a change seen twice, or an `error` event.
fn expect_changes(
    events: &std::sync::mpsc::Receiver<SseEvent>,
    keys: &[String],
    shards: &Value,
) -> String {
    let mut missing: BTreeSet<&String> = keys.iter().collect();
    let mut last_id = String::new();
    while !missing.is_empty() {
        let event = events
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no change of {missing:?} within 30 s"));
        assert_eq!(event.event, "put", "{event:?}");
        let change: Value = serde_json::from_str(&event.data).unwrap();
        let key = change["key"].as_str().unwrap().to_string();
        assert!(missing.remove(&key), "a change of {key} that was not expected now: {event:?}");
        assert_eq!(change["value"], format!("value of {key}"));
        assert_eq!(change["shard"].as_u64(), Some(slot_owner(&key, shards)), "{event:?}");
        // Every shard's position, in each id.
        assert_eq!(event.id.split(',').count(), SHARDS as usize, "{event:?}");
        last_id = event.id;
    }
    last_id
}

#[test]
fn a_watch_of_every_shard_sees_each_change_once_through_a_kill_and_a_resume() {
    let mut nodes = sharded_cluster("sharded-watch", &["--forward-to-leader"]);
    let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
    let shards = wait_for_every_shard_to_lead(ports[0], Duration::from_secs(30));
    // The watching node holds no replica of some shard: it watches that one through the
    // shard's first replica, which is then killed.
    let (watcher, far_shard, source) = shards["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|shard| {
            let replicas: Vec<u16> = shard["replicas"]
                .as_array()?
                .iter()
                .map(|id| id.as_u64().unwrap() as u16)
                .collect();
            let watcher = ports.iter().find(|port| !replicas.contains(port))?;
            Some((*watcher, shard["shard"].as_u64()?, replicas[0]))
        })
        .expect("some node holds no replica of some shard");
    // Keys of every shard, several of them in the far shard.
    let keys_from = |start: usize, count: usize| -> Vec<String> {
        let mut keys: Vec<String> = (start..start + count).map(|i| format!("w/{i}")).collect();
        keys.extend(
            (0..100_000)
                .map(|i| format!("w/far-{start}-{i}"))
                .filter(|key| slot_owner(key, &shards) == far_shard)
                .take(4),
        );
        keys
    };
    let events = watch_events(watcher, "w/", None);
    let first = keys_from(0, 24);
    for key in &first {
        put_somewhere(&ports, key, &format!("value of {key}"));
    }
    expect_changes(&events, &first, &shards);

    // The node the far shard's changes come from dies: the watch goes on from another replica.
    let source_index = ports.iter().position(|port| *port == source).unwrap();
    nodes[source_index].kill9();
    let alive: Vec<u16> = ports.iter().copied().filter(|port| *port != source).collect();
    let second = keys_from(100, 16);
    for key in &second {
        put_somewhere(&alive, key, &format!("value of {key}"));
    }
    let last_id = expect_changes(&events, &second, &shards);

    // A watch resumed from the last event id sees what happened since, and nothing before.
    drop(events);
    let third = keys_from(200, 16);
    for key in &third {
        put_somewhere(&alive, key, &format!("value of {key}"));
    }
    let resumed = watch_events(watcher, "w/", Some(&last_id));
    expect_changes(&resumed, &third, &shards);
    assert!(
        resumed.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing more than the changes after the resumed id"
    );
}

/// The shard that owns `key` by the map in `/cluster/shards` (CRC32C of the key, or of its
/// hash tag, modulo the slot count).
fn slot_owner(key: &str, shards: &Value) -> u64 {
    let slot_count = shards["slot_count"].as_u64().unwrap();
    let slot = u64::from(crc32c::crc32c(key.as_bytes())) % slot_count;
    let owner = shards["shards"].as_array().unwrap().iter().find(|shard| {
        shard["slots"].as_str().unwrap().split(',').any(|range| {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            (start.parse().unwrap()..=end.parse().unwrap()).contains(&slot)
        })
    });
    owner.unwrap()["shard"].as_u64().unwrap()
}

#[test]
fn a_data_directory_keeps_the_layout_it_was_created_with() {
    let mut nodes = sharded_cluster("sharded-layout", &[]);
    wait_for_every_shard_to_lead(nodes[0].port, Duration::from_secs(30));
    let node = &mut nodes[0];
    node.kill9();
    let peers = node.peers.clone().unwrap();
    let restarted = |shards: &str| {
        Command::new(BINARY)
            .arg("serve")
            .arg(format!("--port={}", node.port))
            .arg(format!("--working-dir={}", node.dir.display()))
            .arg(format!("--peers={peers}"))
            .arg(shards)
            .output()
            .unwrap()
    };
    for shards in ["--shards=4", "--shards=1"] {
        let output = restarted(shards);
        assert!(!output.status.success(), "{shards} must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("was created with --shards 8"), "{shards}: {stderr}");
    }
}

/// A `conclave serve` started from the command a restore printed; killed when dropped.
struct Restored(std::process::Child);

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sharded_cluster_is_backed_up_and_restored_into_a_new_cluster() {
    const SMALL_SHARDS: u64 = 4;
    let ports = free_ports(6);
    let (old, new) = ports.split_at(3);
    let dir = temp_dir("sharded-backup");
    let list = |ports: &[u16]| ports.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    let shards_flag = format!("--shards={SMALL_SHARDS}");
    let nodes: Vec<Node> = old
        .iter()
        .map(|port| {
            Node::start(*port, &dir.join(format!("old-{port}")), Some(&list(old)), &[&shards_flag])
        })
        .collect();
    wait_for_shards_to_lead(nodes[0].port, SMALL_SHARDS, Duration::from_secs(30));
    // Writes acknowledged before the backup, through every node; one key deleted again.
    let before: Vec<(String, String)> =
        (0..40).map(|i| (format!("{{user{}}}.k{i}", i % 7), format!("value {i}"))).collect();
    for (key, value) in &before {
        put_somewhere(old, key, value);
    }
    let client = http();
    let deleted = &before[0].0;
    // Follows the 307 of a node whose replica of the shard does not lead, as clients do.
    let following =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let response = following.delete(key_url(old[1], deleted)).send().unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());

    // A node asked for the whole cluster's backup in one request says how it is done.
    let whole = client.get(format!("http://127.0.0.1:{}/admin/backup", old[0])).send().unwrap();
    assert_eq!(whole.status().as_u16(), 400);
    assert!(whole.text().unwrap().contains("shard by shard"));
    // A replica that does not lead a shard backs it up itself, after a linearizable read (the
    // leader's read index, then applied that far): as fresh as the leader's state was.
    let shards = wait_for_shards_to_lead(old[0], SMALL_SHARDS, Duration::from_secs(10));
    let (shard, follower, applied) = shards["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|shard| {
            let leader = shard["leader"].as_u64()?;
            let follower = old.iter().find(|port| u64::from(**port) != leader)?;
            Some((shard["shard"].as_u64()?, *follower, shard["applied_index"].as_u64()?))
        })
        .unwrap();
    let part = client
        .get(format!("http://127.0.0.1:{follower}/admin/backup?shard={shard}"))
        .send()
        .unwrap();
    assert_eq!(part.status().as_u16(), 200);
    let index: u64 = part.headers()["x-conclave-backup-index"].to_str().unwrap().parse().unwrap();
    assert!(index >= applied, "a backup at index {index}, older than the applied {applied}");
    let backup = dir.join("cluster.backup");
    let output = Command::new(BINARY)
        .args(["backup", "--endpoint", &format!(":{}", old[2]), "--out"])
        .arg(&backup)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("of {SMALL_SHARDS} shards")), "{stdout}");
    put_somewhere(old, "written-after-the-backup", "x");
    drop(nodes);

    // A new cluster on other ports, each member restored from the same file and started with
    // the command the restore printed.
    let mut restored = Vec::new();
    for port in new {
        let working_dir = dir.join(format!("new-{port}"));
        let restore = || {
            Command::new(BINARY)
                .args(["restore", "--from"])
                .arg(&backup)
                .arg("--working-dir")
                .arg(&working_dir)
                .arg(format!("--port={port}"))
                .arg(format!("--peers={}", list(new)))
                .output()
                .unwrap()
        };
        let output = restore();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let again = restore();
        assert!(!again.status.success(), "a second restore into the same directory");
        assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
        let command = stdout
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("conclave serve"))
            .unwrap_or_else(|| panic!("no command in {stdout}"));
        assert!(command.contains(&format!("--shards {SMALL_SHARDS} --replication 3")), "{command}");
        let words: Vec<&str> = command.split_whitespace().skip(2).collect();
        let log = std::fs::File::create(dir.join(format!("new-{port}.log"))).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .args(&words)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        restored.push(Restored(child));
    }
    let shards = wait_for_shards_to_lead(new[0], SMALL_SHARDS, Duration::from_secs(30));
    // The new cluster routes by a map of its own members.
    for shard in shards["shards"].as_array().unwrap() {
        for replica in shard["replicas"].as_array().unwrap() {
            let replica = replica.as_u64().unwrap() as u16;
            assert!(new.contains(&replica), "{shard}: a replica outside the new cluster");
        }
    }
    for (i, (key, value)) in before.iter().enumerate() {
        let response = following.get(key_url(new[i % 3], key)).send().unwrap();
        if key == deleted {
            assert_eq!(response.status().as_u16(), 404, "{key} was deleted before the backup");
        } else {
            assert_eq!(response.status().as_u16(), 200, "{key}");
            assert_eq!(response.text().unwrap(), *value, "{key}");
        }
    }
    let after = following.get(key_url(new[0], "written-after-the-backup")).send().unwrap();
    assert_eq!(after.status().as_u16(), 404, "a write after the backup is not in it");
    put_somewhere(new, "written-in-the-new-cluster", "y");
    let read = following.get(key_url(new[2], "written-in-the-new-cluster")).send().unwrap();
    assert_eq!(read.text().unwrap(), "y");
}

/// How many shards each node at `ports` leads, by `/cluster/shards` of the first (each shard's
/// leader by its own report); `None` until every shard has one.
fn leaders_per_node(ports: &[u16], shards: u64) -> Option<Vec<usize>> {
    let response =
        http().get(format!("http://127.0.0.1:{}/cluster/shards", ports[0])).send().ok()?;
    let view: Value = response.json().ok()?;
    let all = view["shards"].as_array()?;
    let leaders: Vec<u64> = all
        .iter()
        .filter(|shard| shard["leader"] == shard["reported_by"])
        .filter_map(|shard| shard["leader"].as_u64())
        .collect();
    if all.len() != shards as usize || leaders.len() != all.len() {
        return None;
    }
    Some(
        ports
            .iter()
            .map(|port| leaders.iter().filter(|l| **l == u64::from(*port)).count())
            .collect(),
    )
}

#[test]
fn leaderships_are_spread_evenly_and_come_back_to_a_restarted_node() {
    const LEADER_SHARDS: u64 = 12;
    let ports = free_ports(3);
    let dir = temp_dir("sharded-leaders");
    let peers = ports.iter().map(|p| format!(":{p}")).collect::<Vec<_>>().join(",");
    let shards_flag = format!("--shards={LEADER_SHARDS}");
    let mut nodes: Vec<Node> = ports
        .iter()
        .map(|port| {
            Node::start(*port, &dir.join(format!("node-{port}")), Some(&peers), &[&shards_flag])
        })
        .collect();
    let even = |ports: &[u16], each: usize| {
        leaders_per_node(ports, LEADER_SHARDS).filter(|counts| counts.iter().all(|c| *c == each))
    };
    wait_for("four leaderships on each of three nodes", Duration::from_secs(60), || {
        even(&ports, 4)
    });

    // A transfer of one shard's leadership, asked of a node that may hold no replica of it.
    let shards = wait_for_shards_to_lead(ports[0], LEADER_SHARDS, Duration::from_secs(10));
    let moved = &shards["shards"][3];
    let leader = moved["leader"].as_u64().unwrap();
    let target = ports.iter().map(|p| u64::from(*p)).find(|p| *p != leader).unwrap();
    // Follows the 307 of a node whose replica does not lead, as clients do.
    let following =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let answer = following
        .post(format!("http://127.0.0.1:{}/cluster/leader?shard=3", ports[2]))
        .header("content-type", "application/json")
        .body(format!(r#"{{"to":{target}}}"#))
        .send()
        .unwrap();
    let status = answer.status().as_u16();
    let body = answer.text().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!(r#""leader":{target}"#)), "{body}");
    let unknown = following
        .post(format!("http://127.0.0.1:{}/cluster/leader?shard=3&x=1", ports[2]))
        .body(format!(r#"{{"to":{target}}}"#))
        .send()
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 400, "an unknown parameter is refused");
    let transfer = |query: &str, to: u64| {
        let answer = following
            .post(format!("http://127.0.0.1:{}/cluster/leader?{query}", ports[0]))
            .body(format!(r#"{{"to":{to}}}"#))
            .send()
            .unwrap();
        (answer.status().as_u16(), answer.text().unwrap())
    };
    let (status, body) = transfer("shard=99", target);
    assert_eq!(status, 404, "{body}");
    let (status, body) = transfer("shard=3", 1);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("holds no replica of shard 3"), "{body}");
    let cli = Command::new(BINARY)
        .args(["leader", "transfer", "--to", &format!(":{target}"), "--shard", "5"])
        .args(["--endpoints", &format!(":{}", ports[1])])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), format!("node {target} is the leader"));

    // A node killed hands its leaderships to the others; back, it gets its share again.
    nodes[2].kill9();
    wait_for("every shard led by the two others", Duration::from_secs(30), || {
        even(&ports[..2], 6).and_then(|_| {
            leaders_per_node(&ports[..2], LEADER_SHARDS)
                .filter(|counts| counts.iter().sum::<usize>() == LEADER_SHARDS as usize)
        })
    });
    nodes[2].restart();
    wait_for("four leaderships each again", Duration::from_secs(60), || even(&ports, 4));
}
