//! Submitting writes and reads to the engine from a handler: with the request deadline, and
//! with "not the leader" turned into a redirect, a forwarded answer or a 503.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use conclave_core::engine::{EngineError, ReadConsistency, ReadQuery, ReadResult};
use conclave_core::kv::{KvCommand, KvResponse, SessionTag};
use conclave_core::seams::{Clock, Consensus};

use super::AppState;
use super::leader::{Forwardable, not_leader};
use super::reply;

/// Replicates a write; `Err` is the response to send instead.
pub async fn write(
    state: &AppState,
    command: KvCommand,
    session: Option<SessionTag>,
    request: Forwardable<'_>,
) -> Result<KvResponse, Response> {
    let deadline_ms = state.config.http.request_timeout_ms;
    let answer = tokio::time::timeout(
        Duration::from_millis(deadline_ms),
        state.engine.write(command, session),
    )
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

/// Serves a read at `consistency`; `Err` is the response to send instead.
pub async fn read(
    state: &AppState,
    query: ReadQuery,
    consistency: ReadConsistency,
    request: Forwardable<'_>,
) -> Result<ReadResult, Response> {
    let now_ms = || state.clock.monotonic_ms();
    if let Some(result) = state.engine.read_locally(&query, consistency, &now_ms) {
        return Ok(result);
    }
    let deadline_ms = state.config.http.request_timeout_ms;
    let answer = tokio::time::timeout(
        Duration::from_millis(deadline_ms),
        state.engine.read(query, consistency),
    )
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
