//! Cluster administration over HTTP, behind `conclave members ...` and `conclave leader
//! transfer`: membership changes (`POST /cluster/members`) and leadership transfer
//! (`POST /cluster/leader`, of one shard's group with `?shard=N`). Both run at the leader; a follower redirects (or forwards) like it
//! does for writes. A change the leader refuses (a second change before the first committed, a
//! learner that is behind, a change that would leave no reachable quorum) answers 409 with the
//! reason.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use conclave_core::engine::{EngineError, EngineStatus};
use conclave_core::raft::{MembershipChange, NodeId, Role};
use conclave_core::shard::ShardId;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::kv::read_body;
use super::leader::{Forwardable, not_leader, to_shard};
use super::propose::shard_query;
use super::reply::{self, bad_request, engine_error, json, text};
use crate::config::{parse_member, parse_named_member};
use crate::local_groups::Route;
use crate::member_ids;
use crate::member_record::{self, MemberRecord};

/// The largest admin request body.
const MAX_ADMIN_BODY_BYTES: u64 = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequestJson {
    /// `add-learner`, `promote`, `remove` or `set-address`.
    pub action: String,
    /// The member. To add: `[host]:port[/peer_port]` (as in --peers) or `name=peer-url` (as in
    /// --initial-cluster). Otherwise its id, its name, or its `--peers` entry.
    pub member: String,
    /// A named member being added: the URL it will advertise to clients (it publishes it
    /// itself once it runs, so this only saves clients a redirect-less moment).
    #[serde(default)]
    pub client_url: Option<String>,
    /// `set-address`: the member's record (`member_record.rs`).
    #[serde(default)]
    pub address: Option<String>,
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
    if state.groups.is_sharded() {
        // Members of a sharded cluster hold replicas placed by the shard map: adding or
        // removing one means moving replicas (placement and rebalancing), not one group's change.
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "membership changes of a sharded cluster are not supported yet: its members are \
             fixed at creation\n",
        );
    }
    let bytes = match read_body(&state, body, MAX_ADMIN_BODY_BYTES, "the request").await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let request: MembershipRequestJson = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => return bad_request(format!("invalid membership request: {error}")),
    };
    let change = match request.action.as_str() {
        "add-learner" => match new_member(&state, &request) {
            Ok((id, record)) => MembershipChange::AddLearner { id, address: record },
            Err(error) => return bad_request(error),
        },
        "promote" | "remove" | "set-address" => match state.config.member_id_of(&request.member) {
            Ok(id) if request.action == "promote" => MembershipChange::Promote { id },
            Ok(id) if request.action == "remove" => MembershipChange::Remove { id },
            Ok(id) => match checked_record(request.address.as_deref()) {
                Ok(address) => MembershipChange::SetAddress { id, address },
                Err(error) => return bad_request(error),
            },
            Err(error) => return bad_request(error),
        },
        other => {
            return bad_request(format!(
                "unknown action {other:?}: use add-learner, promote, remove or set-address"
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

/// The id and record of a member being added: a port-named one from its `--peers` entry, a
/// named one from `name=peer-url`, its id derived from its name as the new node derives it.
fn new_member(
    state: &AppState,
    request: &MembershipRequestJson,
) -> Result<(NodeId, String), String> {
    if request.member.contains('=') {
        let (name, peer_address) =
            parse_named_member(&request.member).map_err(|e| e.to_string())?;
        let client_address = match &request.client_url {
            Some(url) => Some(member_record::parse_address(url, "the client URL")?),
            None => None,
        };
        let id = member_ids::member_id_for_name(state.config.cluster_id, &name);
        let record = MemberRecord { peer_address, client_address, name: Some(name) }.encode();
        return Ok((id, checked_record(Some(&record))?));
    }
    if request.client_url.is_some() {
        return Err("a port-named member serves clients on its port: give no client URL".into());
    }
    let member = parse_member(&request.member).map_err(|error| error.to_string())?;
    // A port-named member's record is its peer address (`NodeConfig::peer_addresses`).
    let record = member.peer_address().ok_or("the new member needs a peer port")?;
    Ok((member.id, checked_record(Some(&record))?))
}

/// A record fit for the configuration: a peer address, and short enough for a peer's hello.
fn checked_record(record: Option<&str>) -> Result<String, String> {
    let record = record.ok_or("set-address needs the member's record in `address`")?;
    let parsed = MemberRecord::parse(record);
    member_record::parse_address(&parsed.peer_address, "the peer address")?;
    if record.len() > member_record::MAX_RECORD_BYTES {
        return Err(format!(
            "the member's record takes {} bytes, more than {}: use a shorter name or URLs",
            record.len(),
            member_record::MAX_RECORD_BYTES
        ));
    }
    Ok(record.to_string())
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
    let forwardable = Forwardable { method: &method, uri: &uri, headers: &headers, body: bytes };
    // A sharded cluster's shard by `?shard=N` (the meta group without one), here or on a node
    // that holds a replica of it; only one of its replicas can take it.
    let asked = match shard_query(&uri) {
        Ok(asked) => asked,
        Err(reason) => return bad_request(reason),
    };
    let group = match state.groups.map() {
        None if asked.is_some_and(|shard| shard != ShardId::META) => {
            return bad_request("this cluster has a single group, shard 0");
        }
        None => state.engine.clone(),
        Some(map) => {
            let shard = asked.unwrap_or(ShardId::META);
            let Some(info) = map.shard(shard) else {
                let epoch = map.epoch();
                let reason = format!("the shard map (epoch {epoch}) has no {shard}\n");
                return text(StatusCode::NOT_FOUND, reason);
            };
            if !info.replicas.contains(&target) {
                let replicas: Vec<u64> = info.replicas.iter().map(|id| id.0).collect();
                let reason = format!(
                    "node {} holds no replica of {shard} (its replicas: {replicas:?}); only a \
                     replica can lead it\n",
                    target.0
                );
                return text(StatusCode::CONFLICT, reason);
            }
            match state.groups.route_shard(shard) {
                Route::Here(group) => group,
                Route::Elsewhere { shard, replicas } => {
                    return to_shard(&state, shard, &replicas, forwardable).await;
                }
            }
        }
    };
    // The leader's configuration is the group's latest: a target that is not one of its
    // voters is refused at once, with the reason (Raft would ignore the request, and the
    // caller would wait for a change that never comes).
    let status = group.status();
    if status.role == Role::Leader {
        if let Some(refusal) = transfer_refusal(&status, target) {
            return refusal;
        }
        if status.id == target {
            return json(StatusCode::OK, &TransferAnswerJson { leader: target.0 });
        }
    }
    match group.transfer_leadership(target).await {
        Ok(()) => {}
        Err(EngineError::NotLeader { leader }) => {
            return not_leader(&state, leader, forwardable).await;
        }
        Err(error) => return engine_error(&error),
    }
    // The transfer completes when the target wins its election; wait for that (or give up).
    // Raft abandons a transfer after an election timeout, so waiting a few of them is enough,
    // and leaves the answer time to reach a client whose request timeout is the server's.
    let mut status = group.status_receiver();
    let deadline = Duration::from_millis(
        state
            .config
            .http
            .request_timeout_ms
            .min(TRANSFER_WAIT_ELECTION_TIMEOUTS * state.config.election_timeout_ms),
    );
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

/// How many election timeouts a transfer is waited for before the answer says it failed.
const TRANSFER_WAIT_ELECTION_TIMEOUTS: u64 = 4;

/// Why the group whose leader reported `status` cannot hand its leadership to `target`, as the
/// answer to send; `None` if it can (or already has it).
fn transfer_refusal(status: &EngineStatus, target: NodeId) -> Option<Response> {
    if status.voters.contains(&target) {
        return None;
    }
    let ids =
        |nodes: &[NodeId]| nodes.iter().map(|id| id.0.to_string()).collect::<Vec<_>>().join(", ");
    if status.learners.contains(&target) {
        let reason = format!(
            "node {} is a learner: only a voter can lead (promote it first with `conclave \
             members promote`)\n",
            target.0
        );
        return Some(text(StatusCode::CONFLICT, reason));
    }
    let reason = format!(
        "node {} is not a member of the cluster (voters: {}; learners: {})\n",
        target.0,
        ids(&status.voters),
        if status.learners.is_empty() { "none".to_string() } else { ids(&status.learners) }
    );
    Some(text(StatusCode::NOT_FOUND, reason))
}
