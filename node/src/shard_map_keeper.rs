//! Keeps a sharded node's shard map: the meta group's leader installs the map the cluster was
//! created with (once: the state machine takes only the first map or the next epoch, so a
//! second proposal of it, by this leader or the next, is refused and harmless), and every node
//! follows the newest map the meta group holds — from its own meta replica when it has one, or
//! else from the nodes that do, over HTTP (`GET /cluster/shard-map`). Every group of the node
//! then refuses keys the map gives to another shard (`WrongShard`, 421), and the router routes
//! by it (`local_groups.rs`).

use std::sync::Arc;
use std::time::Duration;

use conclave_core::shard::{ShardId, ShardMap, keep_map_from_meta_replica};
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
            Some(meta) => keep_map_from_meta_replica(meta, &bootstrap, POLL_INTERVAL).await,
            None => follow_from_afar(&groups, &bootstrap, &config, &client).await,
        }
    };
    tokio::select! {
        () = keeping => {}
        _ = shutdown.wait_for(|stopping| *stopping) => {}
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
