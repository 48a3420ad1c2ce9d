//! `GET /cluster/shards` (the shard map and each shard's state, gathered from every member)
//! and `GET /cluster/shard-map` (the map itself, for nodes that follow it from afar).
//!
//! Each member reports the groups it hosts (`?local=true`); the node asked merges the reports,
//! preferring for each shard its leader's (which knows every replica's lag), else the
//! freshest (highest term, then applied index). Members that do not answer within
//! `MEMBER_REPORT_TIMEOUT` are left out: their shards show what the others know.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use conclave_client::api::{REPLICATION_HEADER, ShardJson, ShardsJson};
use conclave_core::engine::EngineStatus;
use conclave_core::raft::{NodeId, Role};
use conclave_core::shard::{ShardId, ShardMap, Slot, SlotCount};
use futures::future::join_all;
use serde::Deserialize;

use super::AppState;
use super::reply::{self, json};

/// How long a member's report is waited for.
const MEMBER_REPORT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize)]
pub struct ShardsParams {
    /// Only the groups this node hosts, without asking the others.
    #[serde(default)]
    pub local: bool,
}

/// `owned` slots as ranges, `0-127,512-600`.
pub fn slot_ranges(owned: impl IntoIterator<Item = Slot>) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for Slot(slot) in owned {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == slot => *end = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    let text: Vec<String> = ranges
        .iter()
        .map(|(start, end)| if start == end { start.to_string() } else { format!("{start}-{end}") })
        .collect();
    text.join(",")
}

/// The map's view of a shard, without any replica's report.
fn shard_of_map(map: &ShardMap, shard: ShardId) -> ShardJson {
    let replicas = map.shard(shard).map(|info| info.replicas.iter().map(|id| id.0).collect());
    ShardJson {
        shard: shard.0,
        slots: slot_ranges(map.slots_of(shard)),
        slot_count: map.slots_of(shard).count() as u32,
        replicas: replicas.unwrap_or_default(),
        ..ShardJson::default()
    }
}

/// `shard` with what this node's replica of it reports.
fn with_report(mut shard: ShardJson, status: &EngineStatus) -> ShardJson {
    shard.leader = status.leader.map(|id| id.0);
    shard.term = Some(status.term);
    shard.commit_index = Some(status.commit_index);
    shard.applied_index = Some(status.applied_index);
    shard.lag = (status.role == Role::Leader)
        .then(|| status.peers.iter().map(|peer| peer.lag).max().unwrap_or(0));
    shard.reported_by = Some(status.id.0);
    shard
}

/// Whether `report` says more than `held`: a leader's report first, then the freshest.
fn better(report: &ShardJson, held: &ShardJson) -> bool {
    let from_leader =
        |shard: &ShardJson| shard.reported_by.is_some() && shard.reported_by == shard.leader;
    let rank = |shard: &ShardJson| (from_leader(shard), shard.term, shard.applied_index);
    rank(report) > rank(held)
}

/// What this node knows alone: the map, and its own groups' reports.
fn local_view(state: &AppState) -> ShardsJson {
    let Some(map) = state.groups.map() else {
        // A single group: one shard owning every slot, as `--shards 1` is defined.
        let slot_count = SlotCount::DEFAULT;
        let shard = ShardJson {
            shard: 0,
            slots: slot_ranges(slot_count.all()),
            slot_count: slot_count.get(),
            replicas: state.engine.status().voters.iter().map(|id| id.0).collect(),
            ..ShardJson::default()
        };
        let shard = with_report(shard, &state.engine.status());
        let (slot_count, shards) = (slot_count.get(), vec![shard]);
        return ShardsJson { epoch: 0, slot_count, shards, addresses: BTreeMap::new() };
    };
    let shards = map
        .shards()
        .map(|(shard, _)| {
            let listed = shard_of_map(&map, shard);
            match state.groups.hosted().get(&shard) {
                Some(group) => with_report(listed, &group.status()),
                None => listed,
            }
        })
        .collect();
    let members: BTreeSet<NodeId> =
        map.shards().flat_map(|(_, info)| info.replicas.iter().copied()).collect();
    let addresses = members
        .into_iter()
        .filter_map(|member| Some((member.0, state.http_address_of(member)?)))
        .collect();
    ShardsJson { epoch: map.epoch(), slot_count: map.slot_count().get(), shards, addresses }
}

/// Another member's report of the groups it hosts; `None` if it did not answer in time.
async fn member_report(state: &AppState, member: NodeId) -> Option<ShardsJson> {
    let address = state.http_address_of(member)?;
    let url = format!("http://{address}/cluster/shards?local=true");
    let answer = state.forwarder.get(url).timeout(MEMBER_REPORT_TIMEOUT).send().await.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    let body = answer.bytes().await.ok()?;
    serde_json::from_slice(&body).ok()
}

pub async fn shards(State(state): State<Arc<AppState>>, params: Query<ShardsParams>) -> Response {
    if params.local || !state.groups.is_sharded() {
        return json(StatusCode::OK, &local_view(&state));
    }
    json(StatusCode::OK, &cluster_view(&state).await.0)
}

/// The map with every shard's state as the members report it, and the members that answered
/// (this one included).
pub(super) async fn cluster_view(state: &AppState) -> (ShardsJson, BTreeSet<NodeId>) {
    let mut view = local_view(state);
    let others: Vec<NodeId> =
        state.config.members.keys().copied().filter(|id| *id != state.config.node_id).collect();
    let reports = join_all(others.iter().map(|member| member_report(state, *member))).await;
    let mut answered = BTreeSet::from([state.config.node_id]);
    let mut merged: BTreeMap<u32, ShardJson> =
        view.shards.drain(..).map(|shard| (shard.shard, shard)).collect();
    for (member, report) in others.iter().zip(reports) {
        let Some(report) = report else { continue };
        answered.insert(*member);
        for shard in report.shards.into_iter().filter(|shard| shard.reported_by.is_some()) {
            if let Some(held) = merged.get_mut(&shard.shard)
                && better(&shard, held)
            {
                // The slots and replicas stay this node's map's; the state is the report's.
                let (slots, slot_count, replicas) =
                    (held.slots.clone(), held.slot_count, held.replicas.clone());
                *held = ShardJson { slots, slot_count, replicas, ..shard };
            }
        }
    }
    view.shards = merged.into_values().collect();
    (view, answered)
}

/// `GET /cluster/shard-map`: the newest map this node follows; 404 without one.
pub async fn shard_map(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.followed_shard_map() {
        Some(map) => {
            let response = json(StatusCode::OK, &*map);
            match &state.config.sharding {
                Some(sharding) => {
                    reply::with_header(response, REPLICATION_HEADER, sharding.replication as u64)
                }
                None => response,
            }
        }
        None => reply::text(
            StatusCode::NOT_FOUND,
            "this node follows no shard map (a single-group cluster, or one not installed yet)\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shown_as_ranges() {
        assert_eq!(slot_ranges([0, 1, 2, 3].map(Slot)), "0-3");
        assert_eq!(slot_ranges([0, 1, 5, 7, 8].map(Slot)), "0-1,5,7-8");
        assert_eq!(slot_ranges([]), "");
    }

    #[test]
    fn a_leaders_report_wins_then_the_freshest() {
        let report = |by: u64, leader: u64, term: u64, applied: u64| ShardJson {
            leader: Some(leader),
            term: Some(term),
            applied_index: Some(applied),
            reported_by: Some(by),
            ..ShardJson::default()
        };
        let unreported = ShardJson::default();
        assert!(better(&report(2, 1, 3, 10), &unreported));
        assert!(better(&report(1, 1, 3, 10), &report(2, 1, 3, 12)), "the leader's report");
        assert!(!better(&report(2, 1, 3, 12), &report(1, 1, 3, 10)));
        assert!(better(&report(2, 3, 4, 1), &report(3, 1, 3, 12)), "a newer term");
    }
}
