//! How a node with a replica of the meta group keeps its shard map: the meta group's leader
//! installs the map the cluster was created with (once: the state machine takes only the first
//! map or the next epoch, so a second proposal of it, by this leader or the next, is refused
//! and harmless), and the node follows every map its replica applies — every group of the node
//! then refuses keys the map gives to another shard (`WrongShard`). The production node and the
//! simulator run this same loop; how a node without a meta replica learns the map is theirs
//! (HTTP in production, the simulated client protocol in the simulator).

use std::sync::Arc;
use std::time::Duration;

use crate::engine::EngineHandle;
use crate::kv::{KvCommand, KvResponse, RequestError};
use crate::raft::Role;
use crate::seams::Consensus as _;
use crate::shard::ShardMap;

/// Runs until the future is dropped. `retry` is how long a failed installation waits before
/// the next attempt (and how long the loop waits for a status change at most).
pub async fn keep_map_from_meta_replica(
    meta: &EngineHandle,
    bootstrap: &Arc<ShardMap>,
    retry: Duration,
) {
    let mut status = meta.status_receiver();
    loop {
        let (map, leads) = {
            let now = status.borrow_and_update();
            (now.shard_map.clone(), now.role == Role::Leader)
        };
        match map {
            Some(map) if meta.follow_shard_map(map.clone()) => {
                tracing::info!(epoch = map.epoch(), "following the shard map");
            }
            Some(_) => {} // followed already
            None if leads => install(meta, bootstrap, retry * 4).await,
            None => {}
        }
        // A status change, or a retry of a failed installation.
        let _ = tokio::time::timeout(retry, status.changed()).await;
    }
}

async fn install(meta: &EngineHandle, bootstrap: &ShardMap, timeout: Duration) {
    let command = KvCommand::SetShardMap(bootstrap.clone());
    match tokio::time::timeout(timeout, meta.write(command, None)).await {
        Ok(Ok(KvResponse::ShardMapSet { epoch })) => {
            tracing::info!(epoch, "installed the cluster's shard map in the meta group");
        }
        // Someone installed it first: the map arrives with the replica's next status.
        Ok(Ok(KvResponse::Error(RequestError::ShardMapEpoch { .. }))) => {}
        Ok(Ok(other)) => tracing::error!(?other, "the meta group refused the shard map"),
        Ok(Err(error)) => tracing::debug!(%error, "installing the shard map failed; retrying"),
        Err(_elapsed) => tracing::debug!("installing the shard map timed out; retrying"),
    }
}
