//! Keeps a sharded cluster's leaderships spread over its members
//! (`conclave_core::shard::leader_balance` says why, and why the moves end).
//!
//! Every member runs this loop, but only the member leading the meta group acts, so that two
//! members never move leaderships against each other. It gathers each shard's leader from the
//! members' reports (as `GET /cluster/shards` does) and asks for up to `MOVES_PER_LOOK` moves
//! at once, each of another shard, planned one after another as if the earlier ones were done:
//! a leadership transfer, sent to the shard's leader (`POST /cluster/leader?shard=N`). After a
//! move it looks again soon; a move that fails (the target went down, the leadership moved
//! meanwhile) is reconsidered at the next look. While nothing needs moving, the looks grow
//! apart, from `FIRST_LOOK` to `LONGEST_LOOK`: a look asks every member for a report of every
//! shard it hosts, which on a cluster of idle shards is most of what the cluster does. Nothing
//! is recorded: the leaders' own reports are the state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use conclave_client::api::ShardsJson;
use conclave_core::raft::{NodeId, Role};
use conclave_core::shard::{LeaderMove, ShardId, next_leader_move};
use futures::future::join_all;

use super::AppState;
use super::shards::cluster_view;

/// The pause before the first look, and after a look that found something to move.
const FIRST_LOOK: Duration = Duration::from_secs(2);
/// The longest pause between looks, reached by doubling while nothing needs moving.
const LONGEST_LOOK: Duration = Duration::from_secs(16);
/// Pause between successful moves and the next look: the new leaders' reports settle.
const AFTER_MOVE: Duration = Duration::from_millis(200);
/// Moves asked for at once (of different shards).
const MOVES_PER_LOOK: usize = 8;

/// Runs until the node shuts down.
pub async fn run(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    let mut pause = FIRST_LOOK;
    let mut quiet = FIRST_LOOK;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        let leads_meta = state
            .groups
            .hosted()
            .get(&ShardId::META)
            .is_some_and(|meta| meta.status().role == Role::Leader);
        if !leads_meta {
            (pause, quiet) = (FIRST_LOOK, FIRST_LOOK);
            continue;
        }
        let (view, answered) = cluster_view(&state).await;
        let moves = plan(&view, &answered, MOVES_PER_LOOK);
        if moves.is_empty() {
            quiet = (quiet * 2).min(LONGEST_LOOK);
            pause = quiet;
            continue;
        }
        let done = join_all(moves.into_iter().map(|chosen| move_leadership(&state, chosen))).await;
        quiet = FIRST_LOOK;
        pause = if done.contains(&true) { AFTER_MOVE } else { FIRST_LOOK };
    }
}

/// Up to `most` moves by the members' reports, each of another shard, each planned as if the
/// ones before it were done. A shard's leader counts only by its own report (a follower's may
/// be stale); members that did not answer neither give nor take.
fn plan(view: &ShardsJson, answered: &BTreeSet<NodeId>, most: usize) -> Vec<LeaderMove> {
    let mut replicas: BTreeMap<ShardId, Vec<NodeId>> = view
        .shards
        .iter()
        .map(|shard| (ShardId(shard.shard), shard.replicas.iter().copied().map(NodeId).collect()))
        .collect();
    let mut leaders: BTreeMap<ShardId, NodeId> = view
        .shards
        .iter()
        .filter(|shard| shard.leader.is_some() && shard.leader == shard.reported_by)
        .filter_map(|shard| Some((ShardId(shard.shard), NodeId(shard.leader?))))
        .collect();
    let mut moves = Vec::new();
    while moves.len() < most
        && let Some(chosen) = next_leader_move(&replicas, &leaders, answered)
    {
        if chosen.shard == ShardId::META {
            // The meta group's leader is the one deciding: it moves alone, so that the next
            // decider starts from reports taken after every earlier move finished.
            if moves.is_empty() {
                moves.push(chosen);
            }
            break;
        }
        moves.push(chosen);
        // Counted at its target from now on, and not moved twice in one look.
        leaders.insert(chosen.shard, chosen.to);
        replicas.insert(chosen.shard, vec![chosen.to]);
    }
    moves
}

/// Asks the shard's leader to hand it over; whether the target took over.
async fn move_leadership(state: &AppState, chosen: LeaderMove) -> bool {
    let LeaderMove { shard, from, to } = chosen;
    let Some(address) = state.http_address_of(from) else { return false };
    let url = format!("http://{address}/cluster/leader?shard={}", shard.0);
    let timeout = Duration::from_millis(state.config.http.request_timeout_ms) + FIRST_LOOK;
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
        // Node 1 leads three shards by their own reports: one moves to each other node.
        let view = ShardsJson {
            shards: vec![shard(1, 1, 1), shard(2, 1, 1), shard(3, 1, 1)],
            ..ShardsJson::default()
        };
        let moves = plan(&view, &answered, 8);
        let targets: BTreeSet<NodeId> = moves.iter().map(|chosen| chosen.to).collect();
        assert_eq!(targets, [NodeId(2), NodeId(3)].into(), "{moves:?}");
        assert!(moves.iter().all(|chosen| chosen.from == NodeId(1)), "{moves:?}");
        // By a follower's word only, nothing is known to move.
        let view = ShardsJson {
            shards: vec![shard(1, 1, 2), shard(2, 1, 3), shard(3, 1, 2)],
            ..ShardsJson::default()
        };
        assert_eq!(plan(&view, &answered, 8), Vec::new());
    }

    #[test]
    fn one_look_plans_several_moves_of_different_shards() {
        let answered: BTreeSet<NodeId> = [NodeId(1), NodeId(2), NodeId(3)].into();
        // Shards 1-9 led by node 1, the meta group by node 2.
        let mut shards: Vec<ShardJson> = (1..10).map(|id| shard(id, 1, 1)).collect();
        shards.push(shard(0, 2, 2));
        let view = ShardsJson { shards, ..ShardsJson::default() };
        let moves = plan(&view, &answered, 8);
        assert_eq!(moves.len(), 5, "from 9, 1, 0 to 4, 3, 3: {moves:?}");
        let shards: BTreeSet<ShardId> = moves.iter().map(|chosen| chosen.shard).collect();
        assert_eq!(shards.len(), moves.len(), "a shard moved twice: {moves:?}");
        let capped = plan(&view, &answered, 4);
        assert_eq!(capped.len(), 4);
    }

    #[test]
    fn the_meta_groups_leadership_moves_alone() {
        let answered: BTreeSet<NodeId> = [NodeId(1), NodeId(2), NodeId(3)].into();
        let view = ShardsJson {
            shards: (0..6).map(|id| shard(id, 1, 1)).collect(),
            ..ShardsJson::default()
        };
        let moves = plan(&view, &answered, 8);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].shard, ShardId::META);
        // Once the meta group is led elsewhere, the rest move together.
        let mut view = view;
        view.shards[0] = shard(0, 2, 2);
        let moves = plan(&view, &answered, 8);
        assert!(moves.len() > 1 && moves.iter().all(|m| m.shard != ShardId::META), "{moves:?}");
    }
}
