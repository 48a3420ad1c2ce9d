//! A single real node against the HTTP contract of DESIGN.md, byte for byte, plus the bad input
//! the issue lists: oversized keys and values, invalid UTF-8, malformed JSON, unknown routes,
//! thousands of idle connections, and a peer port fed garbage.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::StatusCode;
use support::{Node, free_ports, http, key_url, temp_dir, wait_for, wait_for_leader};

fn single_node(name: &str, extra: &[&str]) -> Node {
    let port = free_ports(1)[0];
    let node = Node::start(port, &temp_dir(name).join("data"), None, extra);
    wait_for_leader(&[&node], Duration::from_secs(20));
    node
}

#[test]
fn the_http_contract_holds_byte_for_byte() {
    let node = single_node("contract", &[]);
    let client = http();
    let port = node.port;

    // Empty key and empty value.
    let response = client.put(node.url("/kv/")).body("x").send().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.text().unwrap(), "key cannot be empty\n");
    let response = client.put(key_url(port, "k")).body("").send().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.text().unwrap(), "value cannot be empty\n");

    // Unknown key.
    let response = client.get(key_url(port, "never-written")).send().unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.text().unwrap(), "key not found\n");

    // Keys and values with spaces, symbols, tabs, `:`, `.`, emoji — returned exactly.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("plain", b"value".to_vec()),
        ("with space", b"  leading and trailing spaces  ".to_vec()),
        ("sym:bols.and/slash?q=1&x#frag", b"tabs\tand\nnewlines\r\n".to_vec()),
        ("emoji \u{1F600} key", "v\u{00E9}lue \u{1F680}".as_bytes().to_vec()),
        ("binary", vec![0, 159, 146, 150, 255, 0, 1]),
        ("big", (0..10_000).map(|i| b'a' + (i % 26) as u8).collect()),
    ];
    for (key, value) in &cases {
        let response = client.put(key_url(port, key)).body(value.clone()).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "put {key:?}");
        let etag = response.headers()["etag"].to_str().unwrap().to_string();
        let response = client.get(key_url(port, key)).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "get {key:?}");
        assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(response.bytes().unwrap().as_ref(), value.as_slice(), "value of {key:?}");
    }

    // Wrong methods.
    for (method, path) in [("POST", "/kv/plain"), ("PATCH", "/kv/plain"), ("GET", "/clear")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client.request(method.clone(), node.url(path)).send().unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(response.text().unwrap(), "method not allowed\n");
    }

    // Conditional writes: create-only and compare-and-swap on the ETag.
    let response = client
        .put(key_url(port, "plain"))
        .header("if-none-match", "*")
        .body("again")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    let current = client.get(key_url(port, "plain")).send().unwrap();
    let etag = current.headers()["etag"].to_str().unwrap().to_string();
    let response = client
        .put(key_url(port, "plain"))
        .header("if-match", "\"999999\"")
        .body("stale")
        .send()
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::PRECONDITION_FAILED,
        "revision 999999 is not current"
    );
    let response = client
        .put(key_url(port, "plain"))
        .header("if-match", &etag)
        .body("swapped")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(client.get(key_url(port, "plain")).send().unwrap().text().unwrap(), "swapped");

    // Ranges by prefix, with a limit.
    for i in 0..5 {
        client.put(key_url(port, &format!("range/{i}"))).body(format!("{i}")).send().unwrap();
    }
    let range: serde_json::Value =
        client.get(node.url("/kv?prefix=range%2F&limit=3")).send().unwrap().json().unwrap();
    let keys: Vec<&str> =
        range["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["range/0", "range/1", "range/2"]);
    assert_eq!(range["more"], true);

    // A transaction: compare on a value, then put.
    let txn = serde_json::json!({
        "compare": [{"key": "plain", "target": "value", "op": "=", "value": "swapped"}],
        "success": [{"put": {"key": "txn-made", "value": "yes"}}],
        "failure": [],
    });
    let answer: serde_json::Value =
        client.post(node.url("/txn")).json(&txn).send().unwrap().json().unwrap();
    assert_eq!(answer["succeeded"], true);
    assert_eq!(client.get(key_url(port, "txn-made")).send().unwrap().text().unwrap(), "yes");

    // TTL: the key expires (observed by polling).
    let response =
        client.put(format!("{}?ttl=300ms", key_url(port, "short-lived"))).body("v").send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    wait_for("the key to expire", Duration::from_secs(10), || {
        let status = client.get(key_url(port, "short-lived")).send().ok()?.status();
        (status == StatusCode::NOT_FOUND).then_some(())
    });

    // DELETE (idempotent: a missing key is a 200 too; a header says whether anything went),
    // then DELETE /clear.
    let response = client.delete(key_url(port, "with space")).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-conclave-deleted"], "1");
    let response = client.delete(key_url(port, "with space")).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK, "deleting a missing key succeeds");
    assert_eq!(response.headers()["x-conclave-deleted"], "0");
    assert_eq!(
        client.get(key_url(port, "with space")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(client.delete(node.url("/clear")).send().unwrap().status(), StatusCode::OK);
    assert_eq!(client.get(key_url(port, "big")).send().unwrap().status(), StatusCode::NOT_FOUND);

    // Health and metrics.
    assert_eq!(client.get(node.url("/health")).send().unwrap().status(), StatusCode::OK);
    let local = client.get(node.url("/health?serializable=true")).send().unwrap();
    assert_eq!(local.status(), StatusCode::OK);
    let local: serde_json::Value = local.json().unwrap();
    assert_eq!(
        (local["health"].clone(), local["alarms"].clone()),
        (true.into(), serde_json::json!([]))
    );
    let bad = client.get(node.url("/health?serializable=maybe")).send().unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let metrics = client.get(node.url("/metrics")).send().unwrap().text().unwrap();
    for name in
        ["conclave_has_leader", "conclave_term", "conclave_leader_changes", "conclave_commit_index"]
    {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    // Single-key requests skip the router (`http/service.rs`) and are still counted under the
    // route's template. The PUTs above: the empty value, the six cases, the two refused
    // conditional puts, the swap, five range keys and the TTL key (`/kv/`, the empty key, is the
    // router's own route).
    let count_of = |series: &str| -> u64 {
        let line = metrics.lines().find(|line| line.starts_with(series));
        let line = line.unwrap_or_else(|| panic!("/metrics lacks {series}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let key_route = r#"route="/kv/{*key}""#;
    let puts = count_of(&format!(
        r#"conclave_http_request_duration_seconds_count{{method="PUT",{key_route}}}"#
    ));
    assert_eq!(puts, 1 + 6 + 2 + 1 + 5 + 1, "PUT /kv/{{key}} requests counted");
    let refused = count_of(&format!(r#"conclave_http_responses_total{{{key_route},code="412"}}"#));
    assert_eq!(refused, 2, "the two refused conditional puts");
}

#[test]
fn a_watch_stream_sees_a_put() {
    let node = single_node("watch", &[]);
    let port = node.port;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /watch?prefix=w HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    // The stream is open once the response head arrives.
    while !seen.contains("\r\n\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "the watch stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    http().put(key_url(port, "watched")).body("hello").send().unwrap();
    while !seen.contains("\"key\":\"watched\"") {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "the watch stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(seen.contains("event: put"), "{seen}");
}

/// Reads a watch stream until `done` holds for what arrived, and returns it all.
fn read_stream_until(stream: &mut TcpStream, seen: &mut String, done: impl Fn(&str) -> bool) {
    let mut buffer = [0u8; 4096];
    while !done(seen) {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "the watch stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
}

fn open_watch(port: u16, query: &str, last_event_id: Option<&str>) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    write!(
        stream,
        "GET /watch?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )
    .unwrap();
    stream
}

/// The `id:` lines and keys of the events in `seen`, in order.
fn ids_and_keys(seen: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let mut id = None;
    for line in seen.lines() {
        if let Some(value) = line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")) {
            id = Some(value.trim().to_string());
        }
        if let Some(data) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:"))
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(data)
            && let (Some(key), Some(id)) = (json["key"].as_str(), id.take())
        {
            events.push((id, key.to_string()));
        }
    }
    events
}

#[test]
fn a_watch_resumed_inside_a_transaction_gets_each_change_exactly_once() {
    let node = single_node("watch-resume", &[]);
    let port = node.port;
    let client = http();
    let response = client.put(key_url(port, "r/0")).body("before").send().unwrap();
    let start = response.headers()["x-conclave-revision"].to_str().unwrap().to_string();
    // One revision, three changes under the prefix.
    let txn = serde_json::json!({
        "compare": [],
        "success": [
            {"put": {"key": "r/1", "value": "a"}},
            {"put": {"key": "r/2", "value": "b"}},
            {"put": {"key": "r/3", "value": "c"}},
        ],
    });
    let response = client.post(node.url("/txn")).json(&txn).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    client.put(key_url(port, "r/4")).body("after").send().unwrap();

    let query = format!("prefix=r/&start_revision={start}");
    let mut first = open_watch(port, &query, None);
    let mut seen = String::new();
    read_stream_until(&mut first, &mut seen, |seen| ids_and_keys(seen).len() >= 5);
    let events = ids_and_keys(&seen);
    let keys: Vec<&str> = events.iter().map(|(_, key)| key.as_str()).collect();
    assert_eq!(keys, ["r/0", "r/1", "r/2", "r/3", "r/4"], "{seen}");
    let txn_revision = events[1].0.clone();
    assert_eq!(events[2].0, format!("{txn_revision}.1"), "ids name the change in its revision");
    assert_eq!(events[3].0, format!("{txn_revision}.2"));
    drop(first);

    // An EventSource reconnects with the same URL and the id of the last event it got: the
    // stream goes on from there, not from the URL's start revision, not after the revision.
    let mut resumed = open_watch(port, &query, Some(&events[2].0));
    let mut seen = String::new();
    read_stream_until(&mut resumed, &mut seen, |seen| ids_and_keys(seen).len() >= 2);
    let keys: Vec<String> = ids_and_keys(&seen).into_iter().map(|(_, key)| key).collect();
    assert_eq!(keys, ["r/3", "r/4"], "{seen}");

    let response = client
        .get(node.url("/watch?prefix=r/"))
        .header("Last-Event-ID", "not-an-id")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn bad_input_is_refused_and_the_node_stays_healthy() {
    let node = single_node("bad-input", &["--max-key-bytes=64", "--max-value-bytes=1024"]);
    let client = http();
    let port = node.port;

    let response = client.put(key_url(port, &"k".repeat(65))).body("v").send().unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let response = client.put(key_url(port, "k")).body(vec![b'v'; 1025]).send().unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        client.put(key_url(port, "k")).body(vec![b'v'; 1024]).send().unwrap().status(),
        StatusCode::OK
    );

    let response = client.get(node.url("/kv/%FF%FE")).send().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().unwrap().contains("UTF-8"));

    let response = client.post(node.url("/txn")).body("{\"compare\": [").send().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().unwrap();
    assert!(!body.trim().is_empty(), "the 400 says what is wrong");

    // Query strings: one parser for `/kv` and `/kv/{key}`, which take different paths through
    // the server (`http/service.rs`), and the same 400 from both.
    for path in ["/kv?limit=many", "/kv/k?ttl=1s&ttl=2s"] {
        let response = client.get(node.url(path)).send().unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(response.text().unwrap().starts_with("invalid query string"), "{path}");
    }
    let response = client.get(node.url("/kv/k?consistency=eventual")).send().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = client.get(node.url("/no/such/route")).send().unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Two thousand idle connections: the node keeps answering.
    let idle: Vec<TcpStream> =
        (0..2_000).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() > 100, "could open only {} connections", idle.len());
    let started = std::time::Instant::now();
    assert_eq!(client.get(key_url(port, "k")).send().unwrap().status(), StatusCode::OK);
    println!("answered with {} idle connections open in {:?}", idle.len(), started.elapsed());
    drop(idle);

    // Keys with a `%` that is not an escape are refused, not read as a literal `%`.
    for path in ["/kv/%", "/kv/%4", "/kv/%ZZ"] {
        let response = client.put(node.url(path)).body("v").send().unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(response.text().unwrap().contains("percent-escape"), "{path}");
    }

    // A cluster of one listens on no peer port (hostile peers: `tests/hostile_input.rs`).
    assert!(TcpStream::connect(("127.0.0.1", port + 10_000)).is_err(), "no peer listener");
    assert_eq!(
        client.put(key_url(port, "after")).body("fine").send().unwrap().status(),
        StatusCode::OK
    );
}
