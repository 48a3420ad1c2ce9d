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
use conclave_client::api::{FORWARDED_HEADER, LEADER_HEADER, SHARD_EPOCH_HEADER, SHARD_HEADER};
use conclave_core::shard::ShardId;

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
const FORWARDED_REQUEST_HEADERS: [&str; 7] = [
    "content-type",
    "if-match",
    "if-none-match",
    conclave_client::api::CLIENT_ID_HEADER,
    conclave_client::api::SEQ_HEADER,
    "accept",
    SHARD_HEADER,
];

/// Headers of the leader's answer that are relayed.
const RELAYED_RESPONSE_HEADERS: [&str; 11] = [
    "content-type",
    conclave_client::api::BACKUP_INDEX_HEADER,
    conclave_client::api::BACKUP_TERM_HEADER,
    "etag",
    "location",
    "retry-after",
    conclave_client::api::REVISION_HEADER,
    conclave_client::api::DELETED_HEADER,
    conclave_client::api::DELETED_KEYS_HEADER,
    SHARD_EPOCH_HEADER,
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
    // A request another node routed here for a shard is forwarded whatever the setting: that
    // node relays the answer, it does not follow redirects.
    let forwarding = state.config.forward_to_leader || request.headers.contains_key(SHARD_HEADER);
    if forwarding && !request.headers.contains_key(FORWARDED_HEADER) {
        let marker = (FORWARDED_HEADER, state.config.node_id.0.to_string());
        return match forward(state, &url, &request, marker).await {
            Ok(response) => response,
            Err(error) => reply::unavailable(format!("forwarding to the leader failed: {error}\n")),
        };
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

/// A request for `shard`, which this node holds no replica of: sent to the nodes that do, in
/// the map's order, until one answers (a node that is down is skipped). The receiver serves it
/// from its replica, forwarding it to the shard's leader if need be.
pub async fn to_shard(
    state: &AppState,
    shard: ShardId,
    replicas: &[NodeId],
    request: Forwardable<'_>,
) -> Response {
    if request.headers.contains_key(SHARD_HEADER) || request.headers.contains_key(FORWARDED_HEADER)
    {
        // Another node routed it here by its map: this node's differs. One hop only.
        return misdirected(state, shard);
    }
    let path = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut failures = Vec::new();
    for replica in replicas {
        let Some(address) = state.http_address_of(*replica) else {
            failures.push(format!("node {}: HTTP address unknown", replica.0));
            continue;
        };
        let url = format!("http://{address}{path}");
        match forward(state, &url, &request, (SHARD_HEADER, shard.0.to_string())).await {
            Ok(response) => return response,
            Err(error) => failures.push(format!("node {} at {address}: {error}", replica.0)),
        }
    }
    reply::unavailable(format!(
        "no replica of {shard} could be reached from node {} ({}); retry\n",
        state.config.node_id.0,
        if failures.is_empty() { "the map lists none".to_string() } else { failures.join("; ") }
    ))
}

/// 421: this node holds no replica of `shard`, which another node routed a request to it for.
pub fn misdirected(state: &AppState, shard: ShardId) -> Response {
    let epoch = state.groups.map().map_or(0, |map| map.epoch());
    let response = reply::text(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "node {} holds no replica of {shard} at shard map epoch {epoch}; refresh the map \
             (GET /cluster/shards) and retry\n",
            state.config.node_id.0
        ),
    );
    reply::with_header(response, SHARD_EPOCH_HEADER, epoch)
}

/// Sends `request` to `url` with the `marker` header, and relays the answer; `Err` if it could
/// not be sent or its answer not read.
async fn forward(
    state: &AppState,
    url: &str,
    request: &Forwardable<'_>,
    marker: (&'static str, String),
) -> Result<Response, String> {
    let timeout = Duration::from_millis(state.config.http.request_timeout_ms);
    let mut outgoing = state
        .forwarder
        .request(request.method.clone(), url)
        .timeout(timeout)
        .header(marker.0, marker.1);
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(value) = request.headers.get(name) {
            outgoing = outgoing.header(name, value.clone());
        }
    }
    let answer =
        outgoing.body(request.body.clone()).send().await.map_err(|error| error.to_string())?;
    let status = answer.status();
    let headers = answer.headers().clone();
    if answer.content_length().is_some_and(|len| len as usize > MAX_FORWARDED_RESPONSE_BYTES) {
        return Ok(reply::text(StatusCode::BAD_GATEWAY, "the answer is too large to relay\n"));
    }
    let body = answer.bytes().await.map_err(|error| format!("reading the answer: {error}"))?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(value) = headers.get(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}
