//! `GET /admin/backup`: an online backup of this node, streamed as one file in the format of
//! `conclave_core::storage::backup` (a checksummed snapshot plus metadata). The node keeps
//! serving while it is taken: the snapshot is an image of the state machine at one applied
//! index. `conclave backup` saves it; `conclave restore` seeds a data directory from it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use conclave_core::storage::backup::{BackupSource, encode_backup};

use super::AppState;
use super::reply::{engine_error, text};

/// The largest state this node will put into one backup file.
const MAX_BACKUP_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;

pub async fn backup(State(state): State<Arc<AppState>>) -> Response {
    if state.groups.is_sharded() {
        // One node holds some shards' replicas, not the keyspace: a backup must gather every
        // shard's snapshot, with the map, from the nodes that hold them.
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "backups of a sharded cluster are not supported yet (a node holds only some shards)\n",
        );
    }
    let snapshot = match state.engine.snapshot_now().await {
        Ok(snapshot) => snapshot,
        Err(error) => return engine_error(&error),
    };
    let created_wall_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let source = BackupSource {
        created_wall_ms,
        description: format!(
            "node {} ({}), cluster {}",
            state.config.node_id.0,
            state.config.http_bind_address(),
            state.config.cluster_id
        ),
    };
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
            headers.insert("x-conclave-backup-index", HeaderValue::from(meta.last_index));
            headers.insert("x-conclave-backup-term", HeaderValue::from(meta.last_term));
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
