//! What a follower does with a request only the leader can serve: answer 307 with the leader's
//! address (the default: clients learn where the leader is and go there directly), or forward
//! the request and relay the answer (`--forward-to-leader`, for clients that cannot follow
//! redirects). Without a known leader: 503.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use conclave_core::raft::NodeId;

use super::AppState;
use super::reply::{self, NO_LEADER};
use conclave_client::api::{FORWARDED_HEADER, LEADER_HEADER};

/// Largest answer relayed from the leader: a range of the maximum size with its JSON overhead.
const MAX_FORWARDED_RESPONSE_BYTES: usize = 256 << 20;

/// The parts of a request needed to send it elsewhere.
pub struct Forwardable<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// Headers a forwarded request keeps: the ones that change its meaning.
const FORWARDED_REQUEST_HEADERS: [&str; 6] = [
    "content-type",
    "if-match",
    "if-none-match",
    conclave_client::api::CLIENT_ID_HEADER,
    conclave_client::api::SEQ_HEADER,
    "accept",
];

/// Headers of the leader's answer that are relayed.
const RELAYED_RESPONSE_HEADERS: [&str; 6] = [
    "content-type",
    "etag",
    "location",
    "retry-after",
    conclave_client::api::REVISION_HEADER,
    LEADER_HEADER,
];

pub async fn not_leader(
    state: &AppState,
    leader: Option<NodeId>,
    request: Forwardable<'_>,
) -> Response {
    let Some(leader) = leader else { return reply::unavailable(NO_LEADER) };
    let Some(address) = state.http_address_of(leader) else {
        // A member added after this node started: its HTTP address is not known here.
        let mut response = reply::unavailable(format!(
            "not the leader; the leader is node {}, whose HTTP address this node does not know\n",
            leader.0
        ));
        if let Ok(value) = HeaderValue::from_str(&leader.0.to_string()) {
            response.headers_mut().insert(LEADER_HEADER, value);
        }
        return response;
    };
    let path = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("http://{address}{path}");
    if state.config.forward_to_leader && !request.headers.contains_key(FORWARDED_HEADER) {
        return forward(state, &url, request).await;
    }
    if request.headers.contains_key(FORWARDED_HEADER) {
        // Leadership moved while the request was being forwarded: one hop only.
        return reply::unavailable("the leader changed while forwarding; retry\n");
    }
    let mut response = reply::text(
        StatusCode::TEMPORARY_REDIRECT,
        format!("not the leader; the leader is node {} at {address}\n", leader.0),
    );
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Ok(value) = HeaderValue::from_str(&leader.0.to_string()) {
        response.headers_mut().insert(LEADER_HEADER, value);
    }
    response
}

async fn forward(state: &AppState, url: &str, request: Forwardable<'_>) -> Response {
    let timeout = Duration::from_millis(state.config.http.request_timeout_ms);
    let mut outgoing = state
        .forwarder
        .request(request.method.clone(), url)
        .timeout(timeout)
        .header(FORWARDED_HEADER, state.config.node_id.0.to_string());
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(value) = request.headers.get(name) {
            outgoing = outgoing.header(name, value.clone());
        }
    }
    let answer = match outgoing.body(request.body).send().await {
        Ok(answer) => answer,
        Err(error) => {
            return reply::unavailable(format!("forwarding to the leader failed: {error}\n"));
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    if answer.content_length().is_some_and(|len| len as usize > MAX_FORWARDED_RESPONSE_BYTES) {
        return reply::text(StatusCode::BAD_GATEWAY, "the leader's answer is too large to relay\n");
    }
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(error) => {
            return reply::unavailable(format!("reading the leader's answer failed: {error}\n"));
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(value) = headers.get(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}
