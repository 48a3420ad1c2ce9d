//! Submitting writes and reads to the engine from a handler: to the group of the request's
//! shard (`local_groups.rs`) — here, or through a node that holds a replica of it — with the
//! request deadline, and with "not the leader" turned into a redirect, a forwarded answer or a
//! 503.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use conclave_client::api::SHARD_HEADER;
use conclave_core::engine::{EngineError, EngineHandle, ReadConsistency, ReadQuery, ReadResult};
use conclave_core::kv::{KvCommand, KvResponse, SessionTag};
use conclave_core::seams::{Clock, Consensus};
use conclave_core::shard::ShardId;

use super::AppState;
use super::leader::{Forwardable, not_leader, to_shard};
use super::reply;
use crate::local_groups::Route;

/// The group here that serves a request routed by `route`, or the response that sends it
/// elsewhere: through a node holding a replica of its shard, or a 421 if another node already
/// routed it here.
async fn group_for(
    state: &AppState,
    route: Route,
    request: &Forwardable<'_>,
) -> Result<EngineHandle, Response> {
    match route {
        Route::Here(handle) => Ok(handle),
        Route::Elsewhere { shard, replicas } => {
            let request = Forwardable { body: request.body.clone(), ..*request };
            Err(to_shard(state, shard, &replicas, request).await)
        }
    }
}

/// The shard another node asked this one to serve a keyless request from (`SHARD_HEADER`), if
/// it did; `Err` says why the header is not a shard number (a 400).
pub fn shard_asked(request: &Forwardable<'_>) -> Result<Option<ShardId>, String> {
    shard_header(request.headers)
}

/// The shard `SHARD_HEADER` names, if any; `Err` says why it is not a shard number.
pub fn shard_header(headers: &axum::http::HeaderMap) -> Result<Option<ShardId>, String> {
    let Some(value) = headers.get(SHARD_HEADER) else { return Ok(None) };
    let shard = value.to_str().ok().and_then(|text| text.parse::<u32>().ok());
    match shard {
        Some(shard) => Ok(Some(ShardId(shard))),
        None => Err(format!("{SHARD_HEADER} must be a shard number")),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardQuery {
    shard: Option<u32>,
}

/// The shard a request's query string names (`?shard=N`), for requests about one shard rather
/// than a key (a backup, a leadership transfer); `Err` says why the query is not one (a 400).
pub fn shard_query(uri: &axum::http::Uri) -> Result<Option<ShardId>, String> {
    let Some(query) = uri.query() else { return Ok(None) };
    let parsed: ShardQuery = serde_urlencoded::from_str(query)
        .map_err(|error| format!("invalid query string: {error}"))?;
    Ok(parsed.shard.map(ShardId))
}

/// Replicates a write in the group of its keys' shard; `Err` is the response to send instead.
pub async fn write(
    state: &AppState,
    command: KvCommand,
    session: Option<SessionTag>,
    request: Forwardable<'_>,
) -> Result<KvResponse, Response> {
    let route = match shard_asked(&request).map_err(reply::bad_request)? {
        // A keyless write (a clear) another node sends to each shard.
        Some(shard) if command.point_keys().is_empty() => state.groups.route_shard(shard),
        _ => match state.groups.route_command(&command) {
            Ok(route) => route,
            Err(unroutable) => return Err(reply::bad_request(unroutable)),
        },
    };
    let group = group_for(state, route, &request).await?;
    write_in(state, &group, command, session, request).await
}

/// Replicates a write in `group`; `Err` is the response to send instead.
pub async fn write_in(
    state: &AppState,
    group: &EngineHandle,
    command: KvCommand,
    session: Option<SessionTag>,
    request: Forwardable<'_>,
) -> Result<KvResponse, Response> {
    let deadline_ms = state.config.http.request_timeout_ms;
    let answer =
        tokio::time::timeout(Duration::from_millis(deadline_ms), group.write(command, session))
            .await;
    match answer {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(EngineError::NotLeader { leader })) => Err(not_leader(state, leader, request).await),
        Ok(Err(error)) => Err(reply::engine_error(&error)),
        Err(_elapsed) => Err(reply::text(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the write did not commit within {deadline_ms} ms; it may or may not take effect \
                 (retry with the same session seq to apply it exactly once)\n"
            ),
        )),
    }
}

/// Serves a read in the group of its key's shard (a keyless read: the main group's, or the
/// shard another node asked for); `Err` is the response to send instead.
pub async fn read(
    state: &AppState,
    query: ReadQuery,
    consistency: ReadConsistency,
    request: Forwardable<'_>,
) -> Result<ReadResult, Response> {
    let route = match (query.key(), shard_asked(&request).map_err(reply::bad_request)?) {
        (Some(key), _) => state.groups.route_key(key),
        (None, Some(shard)) => state.groups.route_shard(shard),
        (None, None) => Route::Here(state.groups.main().clone()),
    };
    let group = group_for(state, route, &request).await?;
    read_in(state, &group, query, consistency, request).await
}

/// Serves a read in `group`; `Err` is the response to send instead.
pub async fn read_in(
    state: &AppState,
    group: &EngineHandle,
    query: ReadQuery,
    consistency: ReadConsistency,
    request: Forwardable<'_>,
) -> Result<ReadResult, Response> {
    let now_ms = || state.clock.monotonic_ms();
    if let Some(result) = group.read_locally(&query, consistency, &now_ms) {
        return Ok(result);
    }
    let deadline_ms = state.config.http.request_timeout_ms;
    let answer =
        tokio::time::timeout(Duration::from_millis(deadline_ms), group.read(query, consistency))
            .await;
    match answer {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(EngineError::NotLeader { leader })) => Err(not_leader(state, leader, request).await),
        Ok(Err(error)) => Err(reply::engine_error(&error)),
        Err(_elapsed) => Err(reply::unavailable(format!(
            "the read was not served within {deadline_ms} ms (no quorum reachable?); retry\n"
        ))),
    }
}

/// The answer to a write whose response has an unexpected shape (a bug, not a user error).
pub fn unexpected(response: &KvResponse) -> Response {
    tracing::error!(?response, "unexpected response kind from the state machine");
    reply::text(StatusCode::INTERNAL_SERVER_ERROR, "unexpected response from the state machine\n")
}
