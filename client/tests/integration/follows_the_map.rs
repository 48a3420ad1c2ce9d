//! The client against a scripted sharded cluster: it keeps to its endpoints until a node's
//! answer says the cluster is sharded, then fetches the shard map and sends each key straight
//! to its shard's leader; a leader that refuses a key as misdirected (421) is left for the
//! endpoints, and the map fetched again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use conclave_client::api::{ShardJson, ShardsJson};
use conclave_client::shard_routes::slot_of;
use conclave_client::{Client, ClientOptions, Consistency, Precondition};

/// One scripted node: answers every key with its own name (and the map's epoch), or 421 when
/// told to; answers `/cluster/shards` with `map` when it has one; registers a session only in
/// a named shard (id 100 + the shard), as a sharded node does.
struct Script {
    name: &'static str,
    misdirect: bool,
    map: Option<ShardsJson>,
    keys_asked: u32,
    /// Each write's key and session id.
    writes: Vec<(String, Option<String>)>,
}

type Shared = Arc<Mutex<Script>>;

async fn answer(State(script): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let mut script = script.lock().expect("not poisoned");
    let epoch = [("x-conclave-shard-epoch", "1")];
    if uri.path() == "/cluster/shards" {
        return match &script.map {
            Some(map) => {
                (StatusCode::OK, serde_json::to_string(map).expect("json")).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    if uri.path() == "/session" {
        let shard = headers.get("x-conclave-shard").and_then(|value| value.to_str().ok());
        return match shard.and_then(|shard| shard.parse::<u64>().ok()) {
            Some(shard) => {
                (StatusCode::OK, format!("{{\"client_id\":{}}}", 100 + shard)).into_response()
            }
            None => (StatusCode::BAD_REQUEST, epoch, "sessions are per shard\n").into_response(),
        };
    }
    if let Some(key) = uri.path().strip_prefix("/kv/")
        && headers.contains_key("x-conclave-seq")
    {
        let session = headers.get("x-conclave-client-id").and_then(|id| id.to_str().ok());
        script.writes.push((key.to_string(), session.map(str::to_string)));
    }
    script.keys_asked += 1;
    if script.misdirect {
        return (StatusCode::MISDIRECTED_REQUEST, epoch, "not mine\n").into_response();
    }
    (StatusCode::OK, epoch, script.name).into_response()
}

async fn node(name: &'static str) -> (String, Shared) {
    let script = Arc::new(Mutex::new(Script {
        name,
        misdirect: false,
        map: None,
        keys_asked: 0,
        writes: Vec::new(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let app = Router::new().fallback(any(answer)).with_state(script.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, script)
}

/// Two shards of two slots: shard 0 owns slot 0 and is led by member 2, shard 1 slot 1 and is
/// led by `shard_1_leader`.
fn map(addresses: &[(u64, String)], shard_1_leader: u64) -> ShardsJson {
    let shard = |shard: u32, slots: &str, leader: u64| ShardJson {
        shard,
        slots: slots.into(),
        slot_count: 1,
        replicas: vec![leader],
        leader: Some(leader),
        ..ShardJson::default()
    };
    ShardsJson {
        epoch: 1,
        slot_count: 2,
        shards: vec![shard(0, "0", 2), shard(1, "1", shard_1_leader)],
        addresses: addresses.iter().cloned().collect(),
    }
}

fn key_in_slot(slot: u32) -> String {
    (0..100).map(|i| format!("key-{i}")).find(|key| slot_of(key.as_bytes(), 2) == slot).unwrap()
}

async fn get(client: &Client, key: &str) -> String {
    let value = client.get(key, Consistency::Linearizable).await.expect("answered");
    String::from_utf8(value.expect("a value").value.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn each_key_goes_to_its_shards_leader_once_the_cluster_says_it_is_sharded() {
    let (a, script_a) = node("a").await;
    let (b, _) = node("b").await;
    let (c, script_c) = node("c").await;
    let addresses = vec![(1, a.clone()), (2, b.clone()), (3, c.clone())];
    script_a.lock().unwrap().map = Some(map(&addresses, 3));
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        call_deadline: Duration::from_secs(10),
        sessions: false,
        ..ClientOptions::default()
    };
    let client = Client::new(std::slice::from_ref(&a), options).expect("valid endpoint");
    let (slot_0_key, slot_1_key) = (key_in_slot(0), key_in_slot(1));

    // Before any answer said "sharded", the endpoint is asked.
    assert_eq!(get(&client, &slot_0_key).await, "a");
    // Then each key at its shard's leader.
    assert_eq!(get(&client, &slot_0_key).await, "b");
    assert_eq!(get(&client, &slot_1_key).await, "c");
    assert_eq!(get(&client, &slot_1_key).await, "c");
    assert_eq!(script_a.lock().unwrap().keys_asked, 1, "the endpoint was asked one key");

    // Shard 1 moves to member 2; its old leader refuses the key (421). The client is answered
    // by its endpoint meanwhile, and goes to the new leader once it fetched the map again.
    script_a.lock().unwrap().map = Some(map(&addresses, 2));
    script_c.lock().unwrap().misdirect = true;
    let started = Instant::now();
    loop {
        let answer = get(&client, &slot_1_key).await;
        if answer == "b" {
            break;
        }
        assert_eq!(answer, "a", "a refused key is answered by the endpoint");
        assert!(started.elapsed() < Duration::from_secs(5), "the map was never fetched again");
    }
    assert!(script_c.lock().unwrap().keys_asked >= 3, "the old leader was asked, and refused");
}

#[tokio::test]
async fn writes_carry_a_session_of_their_keys_shard() {
    let (a, script_a) = node("a").await;
    let (b, script_b) = node("b").await;
    let (c, script_c) = node("c").await;
    let addresses = vec![(1, a.clone()), (2, b.clone()), (3, c.clone())];
    script_a.lock().unwrap().map = Some(map(&addresses, 3));
    let client = Client::new(std::slice::from_ref(&a), ClientOptions::default()).expect("valid");
    let (slot_0_key, slot_1_key) = (key_in_slot(0), key_in_slot(1));
    for key in [&slot_0_key, &slot_1_key, &slot_0_key] {
        client.put(key, "v".into(), None, Precondition::None).await.expect("written");
    }
    // The first session asked for names no shard: refused, the map fetched, and asked again
    // in the key's shard; every write then goes to its shard's leader with a session of it.
    let writes_at = |script: &Shared| script.lock().unwrap().writes.clone();
    assert_eq!(writes_at(&script_a), Vec::new());
    let in_shard = |key: &str, session: &str| {
        (conclave_client::encode_component(key), Some(session.to_string()))
    };
    assert_eq!(writes_at(&script_b), vec![in_shard(&slot_0_key, "100"); 2]);
    assert_eq!(writes_at(&script_c), vec![in_shard(&slot_1_key, "101")]);
}

#[tokio::test]
async fn a_single_group_cluster_costs_no_map_fetch() {
    // A node of a single group names no epoch: nothing but the keys is ever asked.
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = paths.clone();
    let single = Router::new().fallback(any(move |uri: Uri| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(uri.path().to_string());
            "one"
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move { axum::serve(listener, single).await });
    let client = Client::new(&[base], ClientOptions::default()).expect("valid endpoint");
    for _ in 0..3 {
        assert_eq!(get(&client, "k").await, "one");
    }
    assert_eq!(*paths.lock().unwrap(), vec!["/kv/k"; 3]);
}
