//! `/cluster/info`, `/cluster/members`, `/health` and `/metrics`.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use conclave_core::engine::{EngineStatus, ReadConsistency, ReadQuery};
use conclave_core::raft::{NodeId, Role};
use conclave_core::seams::Consensus as _;
use serde::Deserialize;

use super::AppState;
use super::reply::{bad_request, json};
use crate::data_dir::member_dir;
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
        data_dir_bytes: data_dir_bytes(&state).await,
    };
    json(StatusCode::OK, &info)
}

/// The size of the files in this node's data directory, walked off the async runtime (a
/// sharded node's has a directory per group); `None` if it cannot be read.
async fn data_dir_bytes(state: &AppState) -> Option<u64> {
    let dir = member_dir(&state.config.working_dir, &state.config.data_dir_member());
    tokio::task::spawn_blocking(move || directory_bytes(&dir)).await.ok()?
}

/// A file removed while the directory is walked (a compacted segment) counts as gone.
fn directory_bytes(dir: &std::path::Path) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            total += directory_bytes(&entry.path()).unwrap_or(0);
        } else if kind.is_file() {
            total += entry.metadata().map_or(0, |metadata| metadata.len());
        }
    }
    Some(total)
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

/// How long `/health` waits for its linearizable read: long enough for a read index round
/// trip to a quorum, short enough for a load balancer's probe.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthParams {
    serializable: Option<bool>,
}

/// `GET /health`, as etcd's: 200 only when a linearizable read succeeds within
/// [`HEALTH_READ_TIMEOUT`] (the node reaches a leader that reaches a quorum), 503 with the
/// reasons otherwise; `?serializable=true` judges by the node's own view (it knows a leader)
/// without asking anyone. Alarms are listed in `alarms`: `NOSPACE` while the disk is full. As
/// in etcd, a node with an alarm is unhealthy (its writes are refused, though reads work).
/// Damaged data is not an alarm here: recovery refuses to start on it, and damage found while
/// running stops the node, so a node that answers has none.
pub async fn health(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let params: HealthParams = match uri.query().map(serde_urlencoded::from_str).transpose() {
        Ok(params) => params.unwrap_or_default(),
        Err(error) => return bad_request(format!("invalid query string: {error}")),
    };
    let status = state.engine.status();
    let mut reasons = Vec::new();
    let mut alarms = Vec::new();
    if status.leader.is_none() {
        reasons.push("no leader".to_string());
    } else if !params.serializable.unwrap_or(false) {
        let barrier = ReadQuery::Range { prefix: String::new(), start_after: None, limit: 1 };
        let read = state.engine.read(barrier, ReadConsistency::Linearizable);
        match tokio::time::timeout(HEALTH_READ_TIMEOUT, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => reasons.push(format!("a linearizable read failed: {error}")),
            Err(_) => reasons.push(format!(
                "a linearizable read did not complete within {} ms (no quorum reachable?)",
                HEALTH_READ_TIMEOUT.as_millis()
            )),
        }
    }
    if status.disk_full {
        // etcd's NOSPACE alarm, in words: what is refused, and that it resumes by itself.
        alarms.push("NOSPACE".to_string());
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
        alarms,
    };
    let code = if health.health { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(code, &health)
}

/// `GET /metrics`: OpenMetrics to a scraper that asks for it, the classic Prometheus text
/// format otherwise (`metrics_exposition.rs`).
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok());
    let exposition = Exposition::negotiate(accept);
    let data_dir_bytes = data_dir_bytes(&state).await;
    let text = exposition.render(state.metrics.render(&state.engine.status(), data_dir_bytes));
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(exposition.content_type()));
    response
}
