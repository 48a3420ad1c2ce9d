//! Plain-text answers and the mapping of engine and request errors to HTTP status codes.
//!
//! The bodies of the challenge contract are fixed strings ending in a newline; every other
//! error body is one line saying what went wrong and what to do.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use conclave_core::engine::EngineError;
use conclave_core::kv::RequestError;
use conclave_core::raft::MembershipError;

pub const KEY_EMPTY: &str = "key cannot be empty\n";
pub const VALUE_EMPTY: &str = "value cannot be empty\n";
pub const KEY_NOT_FOUND: &str = "key not found\n";
pub const METHOD_NOT_ALLOWED: &str = "method not allowed\n";
pub const NOT_FOUND: &str = "not found\n";
pub const NO_LEADER: &str =
    "no leader: the cluster is electing one or has lost its quorum; retry shortly\n";

pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut response = (status, body.into()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A 400 whose body is `message` on one line.
pub fn bad_request(message: impl std::fmt::Display) -> Response {
    text(StatusCode::BAD_REQUEST, format!("{message}\n"))
}

pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = (status, body).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding failed: {error}\n"))
        }
    }
}

/// 503 with a hint to retry after a second.
pub fn unavailable(body: impl Into<String>) -> Response {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, body);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An ETag is the key's modification revision, quoted as RFC 9110 wants.
pub fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

pub fn with_header(mut response: Response, name: &'static str, value: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A request the state machine refused.
pub fn request_error(error: &RequestError) -> Response {
    match error {
        RequestError::EmptyKey => text(StatusCode::BAD_REQUEST, KEY_EMPTY),
        // Keys travel in the URL, but an oversized key is the same kind of problem as an
        // oversized value for a client: too much data, with a documented limit.
        RequestError::KeyTooLarge { .. } => {
            text(StatusCode::PAYLOAD_TOO_LARGE, format!("{error}\n"))
        }
        error if error.is_payload_too_large() => {
            text(StatusCode::PAYLOAD_TOO_LARGE, format!("{error}\n"))
        }
        RequestError::UnknownSession { .. }
        | RequestError::StaleRequest { .. }
        | RequestError::ResponseNotRetained { .. } => {
            text(StatusCode::CONFLICT, format!("{error}\n"))
        }
        RequestError::MalformedCommand => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))
        }
        error => bad_request(error),
    }
}

/// An engine error other than "not the leader" (see `leader.rs` for that one).
/// Whether a refused membership change may succeed if simply sent again shortly.
pub fn membership_refusal_is_transient(reason: &MembershipError) -> bool {
    matches!(
        reason,
        MembershipError::ChangeInProgress { .. }
            | MembershipError::LeaderNotReady
            | MembershipError::TransferInProgress
            | MembershipError::Busy
    )
}

pub fn engine_error(error: &EngineError) -> Response {
    match error {
        EngineError::NotLeader { .. } => unavailable(NO_LEADER),
        EngineError::Busy => unavailable("busy: too many requests in flight; retry shortly\n"),
        EngineError::Invalid(error) => request_error(error),
        EngineError::NotCommitted => unavailable(
            "the write was not committed (leadership changed) and did not take effect; retry\n",
        ),
        EngineError::Unknown => text(
            StatusCode::GATEWAY_TIMEOUT,
            "the outcome of the write is unknown; retry it with the same session seq to learn it\n",
        ),
        EngineError::MembershipRefused(reason) => {
            let mut response =
                text(StatusCode::CONFLICT, format!("membership change refused: {reason}\n"));
            // A refusal that time alone lifts (the previous change commits, a new leader
            // commits its first entry, a transfer ends) says so, and clients retry it; one
            // that needs the operator (a non-member, a lost quorum) does not.
            if membership_refusal_is_transient(reason) {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
        EngineError::NoSpace => text(
            StatusCode::INSUFFICIENT_STORAGE,
            "the disk of this node is full: writes are refused (and were not applied) until \
             space is freed; reads still work\n",
        ),
        EngineError::Stopped => unavailable("the node is shutting down; use another node\n"),
        EngineError::NotHosted { shard } => text(
            StatusCode::MISDIRECTED_REQUEST,
            format!("this node hosts no replica of shard {shard}; refresh the shard map\n"),
        ),
        EngineError::WrongShard { owner, epoch } => with_header(
            text(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "the key belongs to shard {owner} at shard map epoch {epoch}; refresh the \
                     shard map\n"
                ),
            ),
            conclave_client::api::SHARD_EPOCH_HEADER,
            *epoch,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_core::raft::NodeId;

    #[test]
    fn only_refusals_that_time_lifts_ask_to_be_retried() {
        let retried = |reason: MembershipError| {
            let response = engine_error(&EngineError::MembershipRefused(reason));
            assert_eq!(response.status(), StatusCode::CONFLICT);
            response.headers().contains_key(header::RETRY_AFTER)
        };
        assert!(retried(MembershipError::ChangeInProgress { index: 76 }));
        assert!(retried(MembershipError::LeaderNotReady));
        assert!(retried(MembershipError::TransferInProgress));
        assert!(!retried(MembershipError::NotAMember { id: NodeId(9) }));
        assert!(!retried(MembershipError::AlreadyMember { id: NodeId(9) }));
        assert!(!retried(MembershipError::WouldLoseQuorum { reachable: 1, voters: 3 }));
        assert!(!retried(MembershipError::LastVoter));
        // Lifted only by a leader change, which the operator may have to bring about.
        assert!(!retried(MembershipError::TransferTargetMayCampaign { id: NodeId(9) }));
    }

    #[test]
    fn requests_a_stale_shard_map_sent_here_are_misdirected_with_the_epoch() {
        let wrong = engine_error(&EngineError::WrongShard { owner: 3, epoch: 7 });
        assert_eq!(wrong.status(), StatusCode::MISDIRECTED_REQUEST);
        let not_hosted = engine_error(&EngineError::NotHosted { shard: 2 });
        assert_eq!(not_hosted.status(), StatusCode::MISDIRECTED_REQUEST);
        let body = futures::executor::block_on(axum::body::to_bytes(wrong.into_body(), 1 << 10));
        let body = String::from_utf8(body.expect("a body").to_vec()).expect("text");
        assert!(body.contains("shard 3") && body.contains("epoch 7"), "{body}");
        let wrong = engine_error(&EngineError::WrongShard { owner: 3, epoch: 7 });
        let epoch = wrong.headers().get(conclave_client::api::SHARD_EPOCH_HEADER);
        assert_eq!(epoch.and_then(|value| value.to_str().ok()), Some("7"));
    }
}
