//! `/cluster/info`, `/cluster/members`, `/health` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use conclave_core::engine::EngineStatus;
use conclave_core::raft::{NodeId, Role};

use super::AppState;
use super::reply::json;
use crate::member_record::MemberRecord;
use crate::metrics_exposition::Exposition;
use conclave_client::api::{ClusterInfoJson, HealthJson, MemberJson, MembersJson, VersionJson};

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
    }
}

fn members_of(state: &AppState, status: &EngineStatus) -> Vec<MemberJson> {
    let member = |id: NodeId, role: &str| {
        let progress = status.peers.iter().find(|peer| peer.id == id);
        // What the configuration in the log says, else what this node's flags say.
        let record = status.peer_addresses.get(&id).map(|record| MemberRecord::parse(record));
        let known = state.config.members.get(&id);
        let peer_address = record
            .as_ref()
            .map(|record| record.peer_address.clone())
            .or_else(|| known.and_then(|member| member.peer_address.clone()));
        let name = record
            .as_ref()
            .and_then(|record| record.name.clone())
            .or_else(|| known.and_then(|member| member.name.clone()));
        MemberJson {
            id: id.0,
            name,
            role: role.to_string(),
            is_leader: status.leader == Some(id),
            http_address: state.http_address_of(id),
            peer_address,
            matched_index: progress.map(|peer| peer.matched),
            lag: progress.map(|peer| peer.lag),
        }
    };
    let mut members: Vec<MemberJson> =
        status.voters.iter().map(|id| member(*id, "voter")).collect();
    members.extend(status.learners.iter().map(|id| member(*id, "learner")));
    members
}

/// `GET /version`: the version this node runs (`conclave version` asks every endpoint).
pub async fn version(State(state): State<Arc<AppState>>) -> Response {
    let version =
        VersionJson { version: env!("CARGO_PKG_VERSION").to_string(), id: state.config.node_id.0 };
    json(StatusCode::OK, &version)
}

pub async fn info(State(state): State<Arc<AppState>>) -> Response {
    let status = state.engine.status();
    let info = ClusterInfoJson {
        id: status.id.0,
        cluster_id: state.config.cluster_id,
        role: role_name(status.role).to_string(),
        term: status.term,
        leader: status.leader.map(|id| id.0),
        leader_http_address: status.leader.and_then(|id| state.http_address_of(id)),
        name: state.config.name.clone(),
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        last_index: status.last_index,
        snapshot_index: status.snapshot_index,
        revision: status.revision,
        key_count: status.key_count as u64,
        leader_changes: status.leader_changes,
        proposals_committed: status.proposals_committed,
        proposals_failed: status.proposals_failed,
        proposals_pending: status.proposals_pending as u64,
        members: members_of(&state, &status),
    };
    json(StatusCode::OK, &info)
}

pub async fn members(State(state): State<Arc<AppState>>) -> Response {
    let status = state.engine.status();
    json(StatusCode::OK, &MembersJson { members: members_of(&state, &status) })
}

/// Liveness (Kubernetes' `livenessProbe`): 200 whenever the process answers HTTP at all. It
/// must not depend on the cluster: a member restarted because it has no leader (its peers are
/// down) would only make things worse.
pub async fn livez() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// Readiness (`readinessProbe`): 200 while the node can serve requests — it knows a leader, so
/// reads and writes are answered (by it, or by a redirect to the leader) — and 503 with the
/// reason otherwise, the same judgement as `/health`, in plain text.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let status = state.engine.status();
    if status.leader.is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: no leader\n").into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// 200 while the node knows a leader, 503 otherwise (load balancers take it out of rotation).
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = state.engine.status();
    let mut reasons = Vec::new();
    if status.leader.is_none() {
        reasons.push("no leader".to_string());
    }
    if status.disk_full {
        // etcd's NOSPACE alarm, in words: what is refused, and that it resumes by itself.
        reasons.push(
            "disk full: writes are refused until space is freed (they resume by themselves)"
                .to_string(),
        );
    }
    let health = HealthJson {
        health: reasons.is_empty(),
        role: role_name(status.role).to_string(),
        leader: status.leader.map(|id| id.0),
        reasons,
    };
    let code = if health.health { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(code, &health)
}

/// `GET /metrics`: OpenMetrics to a scraper that asks for it, the classic Prometheus text
/// format otherwise (`metrics_exposition.rs`).
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok());
    let exposition = Exposition::negotiate(accept);
    let text = exposition.render(state.metrics.render(&state.engine.status()));
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(exposition.content_type()));
    response
}
