//! The client against scripted HTTP nodes: it follows a follower's redirect to the leader and
//! remembers it, rides out 503s until a leader answers, resends a write whose outcome the node
//! did not know with the same session number, and names every endpoint it tried, with why,
//! when nothing answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use conclave_client::{Client, ClientError, ClientOptions, Consistency, Precondition};

/// What a scripted node answers, request by request; the last answer repeats.
#[derive(Clone)]
enum Answer {
    RedirectTo(String),
    Unavailable,
    GatewayTimeout,
    Value(&'static str),
    Written { revision: u64 },
    Session { client_id: u64 },
}

#[derive(Default)]
struct Script {
    answers: Vec<Answer>,
    /// Every request seen: path and query, and the session headers if any.
    seen: Vec<(String, Option<String>)>,
}

type Shared = Arc<Mutex<Script>>;

async fn answer(State(script): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let session = headers.get("x-conclave-client-id").map(|id| {
        let seq = headers.get("x-conclave-seq").and_then(|s| s.to_str().ok()).unwrap_or("");
        format!("{}/{seq}", id.to_str().unwrap_or(""))
    });
    let answer = {
        let mut script = script.lock().expect("not poisoned");
        script.seen.push((path.clone(), session));
        if path.starts_with("/session") {
            Answer::Session { client_id: 77 }
        } else if script.answers.len() > 1 {
            script.answers.remove(0)
        } else {
            script.answers[0].clone()
        }
    };
    match answer {
        Answer::RedirectTo(base) => {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, format!("{base}{path}"))])
                .into_response()
        }
        Answer::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "no leader\n").into_response(),
        Answer::GatewayTimeout => (StatusCode::GATEWAY_TIMEOUT, "no outcome yet\n").into_response(),
        Answer::Value(value) => (StatusCode::OK, [(header::ETAG, "\"5\"")], value).into_response(),
        Answer::Written { revision } => {
            (StatusCode::OK, [(header::ETAG, format!("\"{revision}\""))]).into_response()
        }
        Answer::Session { client_id } => {
            (StatusCode::OK, format!("{{\"client_id\":{client_id}}}")).into_response()
        }
    }
}

/// Starts a scripted node; returns its base URL and its script.
async fn node(answers: Vec<Answer>) -> (String, Shared) {
    let script: Shared = Arc::new(Mutex::new(Script { answers, seen: Vec::new() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = Router::new().fallback(any(answer)).with_state(script.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, script)
}

fn options(deadline: Duration) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(2),
        call_deadline: deadline,
        ..ClientOptions::default()
    }
}

fn paths(script: &Shared) -> Vec<String> {
    script.lock().expect("not poisoned").seen.iter().map(|(path, _)| path.clone()).collect()
}

#[tokio::test]
async fn a_redirect_is_followed_and_the_leader_remembered() {
    let (leader, leader_script) = node(vec![Answer::Value("v")]).await;
    let (follower, follower_script) = node(vec![Answer::RedirectTo(leader.clone())]).await;
    let client = Client::new(std::slice::from_ref(&follower), options(Duration::from_secs(5)))
        .expect("valid endpoint");

    let first = client.get("k", Consistency::Linearizable).await.expect("answered");
    assert_eq!(first.map(|v| v.value), Some(Bytes::from_static(b"v")));
    assert_eq!(client.known_leader(), Some(leader.clone()));

    // The second read goes straight to the leader.
    client.get("k", Consistency::Linearizable).await.expect("answered");
    assert_eq!(paths(&follower_script).len(), 1, "the follower was asked once");
    assert_eq!(paths(&leader_script).len(), 2);
}

#[tokio::test]
async fn no_leader_yet_is_retried_until_one_answers() {
    let (base, script) = node(vec![
        Answer::Unavailable,
        Answer::Unavailable,
        Answer::Unavailable,
        Answer::Value("v"),
    ])
    .await;
    let client = Client::new(&[base], options(Duration::from_secs(10))).expect("valid");
    let read = client.get("k", Consistency::Linearizable).await.expect("answered in the end");
    assert_eq!(read.map(|v| v.mod_revision), Some(5));
    assert_eq!(paths(&script).len(), 4, "three refusals, then the answer");
}

#[tokio::test]
async fn a_write_without_outcome_is_resent_with_the_same_session_number() {
    let (base, script) =
        node(vec![Answer::GatewayTimeout, Answer::GatewayTimeout, Answer::Written { revision: 9 }])
            .await;
    let client = Client::new(&[base], options(Duration::from_secs(10))).expect("valid");
    let revision = client
        .put("k", Bytes::from_static(b"v"), None, Precondition::None)
        .await
        .expect("the third attempt learns the outcome");
    assert_eq!(revision, 9);
    let seen = script.lock().expect("not poisoned").seen.clone();
    let writes: Vec<Option<String>> = seen
        .into_iter()
        .filter(|(path, _)| path.starts_with("/kv/"))
        .map(|(_, session)| session)
        .collect();
    assert_eq!(writes, vec![Some("77/1".to_string()); 3], "one number for every resend");
}

#[tokio::test]
async fn nothing_answering_names_each_endpoint_and_the_cause() {
    // Ports that were just free: nothing listens on them.
    let mut dead = Vec::new();
    for _ in 0..2 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        dead.push(format!("http://{}", listener.local_addr().expect("address")));
    }
    let client = Client::new(&dead, options(Duration::from_millis(600))).expect("valid");
    let error = client.get("k", Consistency::Linearizable).await.expect_err("nobody answers");
    let ClientError::Unavailable { tried, errors } = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    for endpoint in &dead {
        assert!(tried.contains(endpoint.as_str()), "{endpoint} missing from {tried:?}");
    }
    for endpoint in &dead {
        let reason = format!("{endpoint}: cannot connect: Connection refused");
        assert!(errors.contains(&reason), "each endpoint with its cause: {errors}");
    }
}
