//! Keeps a sharded cluster's leaderships spread over its members
//! (`conclave_core::shard::leader_balance` says why, and why the moves end).
//!
//! Every member runs this loop, but only the member leading the meta group acts, so that two
//! members never move leaderships against each other. Every `LOOK_INTERVAL` it gathers each
//! shard's leader from the members' reports (as `GET /cluster/shards` does) and asks for at
//! most one move: a leadership transfer, sent to the shard's leader
//! (`POST /cluster/leader?shard=N`). After a move it looks again at once; a move that fails
//! (the target went down, the leadership moved meanwhile) is reconsidered at the next look.
//! Nothing is recorded: the leaders' own reports are the state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use conclave_client::api::ShardsJson;
use conclave_core::raft::{NodeId, Role};
use conclave_core::shard::{LeaderMove, ShardId, next_leader_move};

use super::AppState;
use super::shards::cluster_view;

/// How often the meta leader looks at the leaderships when they are balanced.
const LOOK_INTERVAL: Duration = Duration::from_secs(2);
/// Pause between a successful move and the next look: the new leader's report settles.
const AFTER_MOVE: Duration = Duration::from_millis(200);

/// Runs until the node shuts down.
pub async fn run(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    let mut pause = LOOK_INTERVAL;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        pause = LOOK_INTERVAL;
        let leads_meta = state
            .groups
            .hosted()
            .get(&ShardId::META)
            .is_some_and(|meta| meta.status().role == Role::Leader);
        if !leads_meta {
            continue;
        }
        let (view, answered) = cluster_view(&state).await;
        let Some(chosen) = plan(&view, &answered) else { continue };
        if move_leadership(&state, chosen).await {
            pause = AFTER_MOVE;
        }
    }
}

/// The next move by the members' reports. A shard's leader counts only by its own report (a
/// follower's may be stale); members that did not answer neither give nor take.
fn plan(view: &ShardsJson, answered: &BTreeSet<NodeId>) -> Option<LeaderMove> {
    let replicas: BTreeMap<ShardId, Vec<NodeId>> = view
        .shards
        .iter()
        .map(|shard| (ShardId(shard.shard), shard.replicas.iter().copied().map(NodeId).collect()))
        .collect();
    let leaders: BTreeMap<ShardId, NodeId> = view
        .shards
        .iter()
        .filter(|shard| shard.leader.is_some() && shard.leader == shard.reported_by)
        .filter_map(|shard| Some((ShardId(shard.shard), NodeId(shard.leader?))))
        .collect();
    next_leader_move(&replicas, &leaders, answered)
}

/// Asks the shard's leader to hand it over; whether the target took over.
async fn move_leadership(state: &AppState, chosen: LeaderMove) -> bool {
    let LeaderMove { shard, from, to } = chosen;
    let Some(address) = state.http_address_of(from) else { return false };
    let url = format!("http://{address}/cluster/leader?shard={}", shard.0);
    let timeout = Duration::from_millis(state.config.http.request_timeout_ms) + LOOK_INTERVAL;
    let request = state.forwarder.post(&url).timeout(timeout);
    let request = request.header("content-type", "application/json");
    let answer = request.body(serde_json::json!({ "to": to.0 }).to_string()).send().await;
    match answer {
        Ok(response) if response.status().is_success() => {
            tracing::info!(%shard, from = from.0, to = to.0, "moved a shard's leadership to balance the members");
            true
        }
        Ok(response) => {
            let status = response.status();
            let reason = response.text().await.unwrap_or_default();
            tracing::debug!(%shard, from = from.0, to = to.0, %status, reason = reason.trim(), "a leadership move failed");
            false
        }
        Err(error) => {
            tracing::debug!(%shard, from = from.0, to = to.0, %error, "a leadership move failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_client::api::ShardJson;

    fn shard(id: u32, leader: u64, reported_by: u64) -> ShardJson {
        ShardJson {
            shard: id,
            replicas: vec![1, 2, 3],
            leader: Some(leader),
            reported_by: Some(reported_by),
            ..ShardJson::default()
        }
    }

    #[test]
    fn only_a_leaders_own_report_counts() {
        let answered: BTreeSet<NodeId> = [NodeId(1), NodeId(2), NodeId(3)].into();
        // Node 1 leads three shards by their own reports: one moves.
        let view = ShardsJson {
            shards: vec![shard(0, 1, 1), shard(1, 1, 1), shard(2, 1, 1)],
            ..ShardsJson::default()
        };
        let chosen = plan(&view, &answered).expect("a move");
        assert_eq!(chosen.from, NodeId(1));
        // By a follower's word only, nothing is known to move.
        let view = ShardsJson {
            shards: vec![shard(0, 1, 2), shard(1, 1, 3), shard(2, 1, 2)],
            ..ShardsJson::default()
        };
        assert_eq!(plan(&view, &answered), None);
    }
}
