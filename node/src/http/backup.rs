//! `GET /admin/backup`: an online backup, streamed as one file in the format of
//! `conclave_core::storage::backup` (a checksummed snapshot plus metadata). The node keeps
//! serving while it is taken: the snapshot is an image of the state machine at one applied
//! index. `conclave backup` saves it; `conclave restore` seeds a data directory from it.
//!
//! A single-group node backs up its own group. A sharded cluster is backed up shard by shard:
//! `GET /admin/backup?shard=N`, asked of any node, is routed like a key of that shard (to a
//! replica here, or through a node that holds one) and taken after a linearizable read (at a
//! follower: the leader's read index, applied), so that it holds every write the shard
//! acknowledged before it was asked for.
//! `conclave backup` gathers every shard of the map into one file
//! (`conclave_core::storage::sharded_backup`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use conclave_client::api::{BACKUP_INDEX_HEADER, BACKUP_TERM_HEADER};
use conclave_core::engine::{EngineHandle, ReadConsistency, ReadQuery};
use conclave_core::shard::ShardId;
use conclave_core::storage::backup::{BackupSource, encode_backup};

use super::AppState;
use super::leader::{Forwardable, to_shard};
use super::propose::{read_in, shard_header, shard_query};
use super::reply::{self, engine_error, text};
use crate::local_groups::Route;

/// The largest state this node will put into one backup file.
const MAX_BACKUP_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;

pub async fn backup(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let asked = match shard_query(&uri) {
        Ok(shard) => shard,
        Err(reason) => return reply::bad_request(reason),
    };
    let routed_for = match shard_header(&headers) {
        Ok(shard) => shard,
        Err(reason) => return reply::bad_request(reason),
    };
    if !state.groups.is_sharded() {
        if asked.is_some_and(|shard| shard != ShardId::META) {
            return reply::bad_request("this cluster has a single group, shard 0");
        }
        let description = format!(
            "node {} ({}), cluster {}",
            state.config.node_id.0,
            state.config.http_bind_address(),
            state.config.cluster_id
        );
        return group_backup(&state.engine, description).await;
    }
    let Some(shard) = asked else {
        return reply::bad_request(
            "a sharded cluster is backed up shard by shard: GET /admin/backup?shard=N for every \
             shard of the map (GET /cluster/shard-map); `conclave backup` gathers them all into \
             one file",
        );
    };
    if routed_for.is_some_and(|routed| routed != shard) {
        return reply::bad_request(format!("?shard={} and the shard header disagree", shard.0));
    }
    let map = state.groups.map();
    if map.as_ref().is_none_or(|map| map.shard(shard).is_none()) {
        let epoch = map.map_or(0, |map| map.epoch());
        return text(
            StatusCode::NOT_FOUND,
            format!("the shard map (epoch {epoch}) has no {shard}\n"),
        );
    }
    let request = Forwardable { method: &method, uri: &uri, headers: &headers, body: Bytes::new() };
    match state.groups.route_shard(shard) {
        Route::Here(group) => {
            // After a linearizable read: a follower asks the leader for its read index and
            // waits until it has applied that far, so its state holds every write the shard
            // acknowledged before; without a known leader, the read fails (503).
            let asked = Forwardable { headers: &headers, ..request };
            let barrier = ReadQuery::Range { prefix: String::new(), start_after: None, limit: 1 };
            match read_in(&state, &group, barrier, ReadConsistency::Linearizable, asked).await {
                Ok(_) => {
                    let description = format!(
                        "{shard} at node {} ({}), cluster {}",
                        state.config.node_id.0,
                        state.config.http_bind_address(),
                        state.config.cluster_id
                    );
                    group_backup(&group, description).await
                }
                Err(response) => response,
            }
        }
        Route::Elsewhere { shard, replicas } => to_shard(&state, shard, &replicas, request).await,
    }
}

/// The backup file of `group`'s state at its applied index.
async fn group_backup(group: &EngineHandle, description: String) -> Response {
    let snapshot = match group.snapshot_now().await {
        Ok(snapshot) => snapshot,
        Err(error) => return engine_error(&error),
    };
    let created_wall_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let source = BackupSource { created_wall_ms, description };
    let encoded = tokio::task::spawn_blocking(move || {
        encode_backup(&snapshot, &source, MAX_BACKUP_SNAPSHOT_BYTES)
    })
    .await;
    match encoded {
        Ok(Ok((meta, bytes))) => {
            let mut response = (StatusCode::OK, bytes).into_response();
            let headers = response.headers_mut();
            headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(BACKUP_INDEX_HEADER, HeaderValue::from(meta.last_index));
            headers.insert(BACKUP_TERM_HEADER, HeaderValue::from(meta.last_term));
            response
        }
        Ok(Err(error)) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the backup: {error}\n"))
        }
        Err(error) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("the backup task failed: {error}\n"))
        }
    }
}
