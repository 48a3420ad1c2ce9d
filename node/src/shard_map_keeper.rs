//! Keeps a sharded node's shard map: the meta group's leader installs the map the cluster was
//! created with (once: the state machine takes only the first map or the next epoch, so a
//! second proposal of it, by this leader or the next, is refused and harmless), and every node
//! follows the newest map the meta group holds — from its own meta replica when it has one, or
//! else from the nodes that do, over HTTP (`GET /cluster/shard-map`). Every group of the node
//! then refuses keys the map gives to another shard (`WrongShard`, 421), and the router routes
//! by it (`local_groups.rs`).

use std::sync::Arc;
use std::time::Duration;

use conclave_core::engine::EngineHandle;
use conclave_core::kv::{KvCommand, KvResponse, RequestError};
use conclave_core::raft::Role;
use conclave_core::seams::Consensus as _;
use conclave_core::shard::{ShardId, ShardMap};
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::local_groups::LocalGroups;

/// How often a node without a meta replica asks for the map, and how often a meta leader
/// retries installing it after a failed proposal.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Largest map accepted over HTTP: 4,096 shards of 9 replicas and a 64 Ki-slot table in JSON.
const MAX_MAP_BYTES: usize = 4 << 20;

/// Runs until `shutdown` flips.
pub async fn run(
    groups: Arc<LocalGroups>,
    bootstrap: Arc<ShardMap>,
    config: Arc<NodeConfig>,
    client: reqwest::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let keeping = async {
        match groups.hosted().get(&ShardId::META) {
            Some(meta) => keep_from_replica(meta, &bootstrap).await,
            None => follow_from_afar(&groups, &bootstrap, &config, &client).await,
        }
    };
    tokio::select! {
        () = keeping => {}
        _ = shutdown.wait_for(|stopping| *stopping) => {}
    }
}

/// A node with a meta replica: installs the bootstrap map when it leads a meta group without
/// one, and follows every map the replica applies.
async fn keep_from_replica(meta: &EngineHandle, bootstrap: &Arc<ShardMap>) {
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
            None if leads => install(meta, bootstrap).await,
            None => {}
        }
        // A status change, or a retry of a failed installation.
        let _ = tokio::time::timeout(POLL_INTERVAL, status.changed()).await;
    }
}

async fn install(meta: &EngineHandle, bootstrap: &ShardMap) {
    let command = KvCommand::SetShardMap(bootstrap.clone());
    match tokio::time::timeout(POLL_INTERVAL * 4, meta.write(command, None)).await {
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

/// A node without a meta replica: asks the meta group's replicas for their map.
async fn follow_from_afar(
    groups: &LocalGroups,
    bootstrap: &ShardMap,
    config: &NodeConfig,
    client: &reqwest::Client,
) {
    let replicas = bootstrap.shard(ShardId::META).map(|info| info.replicas.clone());
    let replicas = replicas.unwrap_or_default();
    loop {
        for replica in &replicas {
            let address =
                config.http_address_of(*replica, groups.main().peer_address(*replica).as_deref());
            let Some(address) = address else { continue };
            match fetch(client, &address).await {
                Ok(Some(map)) => {
                    if groups.main().follow_shard_map(Arc::new(map.clone())) {
                        tracing::info!(epoch = map.epoch(), from = %address, "following the shard map");
                    }
                    break;
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, from = %address, "asking for the shard map"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The map a node serves, if it has one; checked as any map from outside is.
async fn fetch(client: &reqwest::Client, address: &str) -> Result<Option<ShardMap>, String> {
    let url = format!("http://{address}/cluster/shard-map");
    let response = client.get(&url).send().await.map_err(|error| error.to_string())?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    if response.content_length().is_some_and(|length| length as usize > MAX_MAP_BYTES) {
        return Err("the map is larger than the limit".into());
    }
    let body = response.bytes().await.map_err(|error| error.to_string())?;
    if body.len() > MAX_MAP_BYTES {
        return Err("the map is larger than the limit".into());
    }
    let map: ShardMap = serde_json::from_slice(&body).map_err(|error| error.to_string())?;
    map.validate().map_err(|error| error.to_string())?;
    Ok(Some(map))
}
