//! Cluster administration over HTTP, behind `conclave members ...` and `conclave leader
//! transfer`: membership changes (`POST /cluster/members`) and leadership transfer
//! (`POST /cluster/leader`). Both run at the leader; a follower redirects (or forwards) like it
//! does for writes. A change the leader refuses (a second change before the first committed, a
//! learner that is behind, a change that would leave no reachable quorum) answers 409 with the
//! reason.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use conclave_core::engine::EngineError;
use conclave_core::raft::{MembershipChange, NodeId};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::kv::read_body;
use super::leader::{Forwardable, not_leader};
use super::reply::{self, bad_request, engine_error, json, text};
use crate::config::{Member, parse_member};

/// The largest admin request body.
const MAX_ADMIN_BODY_BYTES: u64 = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequestJson {
    /// `add-learner`, `promote` or `remove`.
    pub action: String,
    /// The member: `[host]:port[/peer_port]` (as in --peers) or its id.
    pub member: String,
}

#[derive(Debug, Serialize)]
pub struct MembershipAnswerJson {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequestJson {
    pub to: u64,
}

#[derive(Debug, Serialize)]
pub struct TransferAnswerJson {
    pub leader: u64,
}

pub async fn change_membership(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&state, body, MAX_ADMIN_BODY_BYTES, "the request").await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let request: MembershipRequestJson = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid membership request: {error}")),
    };
    let change = match request.action.as_str() {
        "add-learner" => match parse_member(&request.member) {
            Ok(Member { id, peer_port: Some(peer_port), host, .. }) => {
                MembershipChange::AddLearner { id, address: format!("{host}:{peer_port}") }
            }
            Ok(_) => return bad_request("the new member needs a peer port"),
            Err(error) => return bad_request(error),
        },
        "promote" | "remove" => match crate::config::parse_member_id(&request.member) {
            Ok(id) if request.action == "promote" => MembershipChange::Promote { id },
            Ok(id) => MembershipChange::Remove { id },
            Err(error) => return bad_request(error),
        },
        other => {
            return bad_request(format!(
                "unknown action {other:?}: use add-learner, promote or remove"
            ));
        }
    };
    let deadline = Duration::from_millis(state.config.http.request_timeout_ms);
    let answer = tokio::time::timeout(deadline, state.engine.change_membership(change)).await;
    match answer {
        Ok(Ok(config)) => json(
            StatusCode::OK,
            &MembershipAnswerJson {
                voters: config.voters.iter().map(|id| id.0).collect(),
                learners: config.learners.iter().map(|id| id.0).collect(),
            },
        ),
        Ok(Err(EngineError::NotLeader { leader })) => {
            let request =
                Forwardable { method: &method, uri: &uri, headers: &headers, body: bytes };
            not_leader(&state, leader, request).await
        }
        Ok(Err(error)) => engine_error(&error),
        Err(_) => text(
            StatusCode::GATEWAY_TIMEOUT,
            "the change did not commit in time; check `conclave members` before retrying\n",
        ),
    }
}

pub async fn transfer_leadership(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&state, body, MAX_ADMIN_BODY_BYTES, "the request").await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let request: TransferRequestJson = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid transfer request: {error}")),
    };
    let target = NodeId(request.to);
    match state.engine.transfer_leadership(target).await {
        Ok(()) => {}
        Err(EngineError::NotLeader { leader }) => {
            let request =
                Forwardable { method: &method, uri: &uri, headers: &headers, body: bytes };
            return not_leader(&state, leader, request).await;
        }
        Err(error) => return engine_error(&error),
    }
    // The transfer completes when the target wins its election; wait for that (or give up).
    let mut status = state.engine.status_receiver();
    let deadline = Duration::from_millis(state.config.http.request_timeout_ms);
    let moved = tokio::time::timeout(deadline, async {
        loop {
            let leader = status.borrow_and_update().leader;
            if leader == Some(target) {
                return;
            }
            if status.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    })
    .await;
    match moved {
        Ok(()) => json(StatusCode::OK, &TransferAnswerJson { leader: target.0 }),
        Err(_) => reply::unavailable(format!(
            "node {} did not take over within {} ms; the cluster kept or re-elected a leader\n",
            target.0,
            deadline.as_millis()
        )),
    }
}
