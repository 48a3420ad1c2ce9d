//! `GET /watch?prefix=&start_revision=` — changes as server-sent events. Each event's name is
//! `put`, `delete` or `expire`; `data` is `api::WatchEventJson`.
//! Several changes can share a revision, so an event's `id` is its position in the stream:
//! the revision, with `.N` for the revision's changes after the first (see
//! `conclave_core::engine::WatchPosition`). A client that reconnects with `Last-Event-ID`
//! resumes right after that event, so that it sees every change exactly once. When a watcher
//! falls too far behind (or the node's history lost events), the stream sends an `error`
//! event saying from which revision to resume, and ends. A start revision older than the
//! node's history answers 410 (see `conclave_core::engine::WatchHub`). The stream ends when the node shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use conclave_core::engine::{Compacted, WatchCursor, WatchItem, WatchPosition};
use conclave_core::kv::{KvEvent, KvEventKind};
use futures::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, watch as signal};

use super::AppState;
use super::reply::{text, unavailable};
use crate::metrics::Metrics;
use conclave_client::api::{WatchEventJson, encode_value};

#[derive(Debug, Default, Deserialize)]
pub struct WatchParams {
    pub prefix: Option<String>,
    pub start_revision: Option<u64>,
}

const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

struct Watcher {
    cursor: WatchCursor,
    shutdown: signal::Receiver<bool>,
    finished: bool,
    _permit: WatcherSlot,
}

/// Holds a watcher's place under `--max-watchers` and keeps the gauge right.
struct WatcherSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.metrics.watchers.dec();
    }
}

fn kind_name(kind: KvEventKind) -> &'static str {
    match kind {
        KvEventKind::Put => "put",
        KvEventKind::Delete => "delete",
        KvEventKind::Expire => "expire",
    }
}

/// A change as an SSE event; its id is the position after it (see `WatchPosition::token`).
fn event_of(event: &KvEvent, after: WatchPosition) -> Event {
    let (value, value_base64) = encode_value(&event.value);
    let data = WatchEventJson {
        kind: kind_name(event.kind).to_string(),
        key: event.key.clone(),
        value,
        value_base64,
        mod_revision: event.mod_revision,
    };
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into());
    let id = after.token().unwrap_or_else(|| event.mod_revision.to_string());
    Event::default().id(id).event(kind_name(event.kind)).data(json)
}

fn error_event(message: String) -> Event {
    Event::default().event("error").data(message)
}

/// The error event that ends a stream: why, and how to pick up exactly where it stopped.
fn resume_hint(reason: &str, resume: WatchPosition) -> Event {
    let how = match resume.token() {
        Some(token) => format!("watch again with Last-Event-ID: {token}"),
        None => format!("watch again with start_revision={}", resume.revision),
    };
    error_event(format!("{reason}; {how}"))
}

impl Watcher {
    async fn next_event(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        loop {
            // The cursor is cancel-safe: a shutdown signal never costs a change.
            tokio::select! {
                item = self.cursor.next() => return match item {
                    WatchItem::Change { event, after } => Some(event_of(&event, after)),
                    WatchItem::Lost { reason, resume } => {
                        self.finished = true;
                        Some(resume_hint(reason, resume))
                    }
                    WatchItem::Closed => None,
                },
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        self.finished = true;
                        let resume = self.cursor.position();
                        return Some(resume_hint("the node is shutting down", resume));
                    }
                }
            }
        }
    }
}

pub async fn watch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<WatchParams>,
) -> Response {
    // An SSE reconnect repeats the URL and names the last event seen: resume right after that
    // event (which may be inside a revision), not at the URL's start revision again.
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| value.to_str().ok().and_then(WatchPosition::parse_token));
    let from = match last_event_id {
        Some(Some(position)) => Some(position),
        Some(None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID is not an event id of this stream (REVISION or REVISION.INDEX)\n"
                    .to_string(),
            );
        }
        None => params.start_revision.map(WatchPosition::start_of),
    };
    if state.groups.is_sharded() {
        // The node's watch history is its main group's; a watch of a sharded cluster must
        // merge every shard's stream, with per-shard positions in its event ids.
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "watches are not supported by a sharded cluster yet (each shard has its own \
             revisions); read with GET /kv?prefix= instead\n",
        );
    }
    let Ok(permit) = state.watchers.clone().try_acquire_owned() else {
        return unavailable(format!(
            "too many watch streams (the limit is {}); retry later\n",
            state.config.http.max_watchers
        ));
    };
    let current_revision = state.engine.status().revision;
    let prefix = params.prefix.unwrap_or_default();
    let cursor = match WatchCursor::open(&state.hub, prefix, from, current_revision, None) {
        Ok(cursor) => cursor,
        Err(Compacted { requested, floor }) => {
            let held = floor.map_or_else(
                || "this node holds no history yet".to_string(),
                |floor| format!("the oldest revision held is {floor}"),
            );
            return text(
                StatusCode::GONE,
                format!(
                    "revision {requested} is no longer in this node's watch history ({held}); \
                     read the keys, then watch from the current revision\n"
                ),
            );
        }
    };
    state.metrics.watchers.inc();
    let watcher = Watcher {
        cursor,
        shutdown: state.shutdown.clone(),
        finished: false,
        _permit: WatcherSlot { _permit: permit, metrics: state.metrics.clone() },
    };
    Sse::new(events(watcher))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
        .into_response()
}

fn events(watcher: Watcher) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(watcher, |mut watcher| async move {
        let event = watcher.next_event().await?;
        Some((Ok(event), watcher))
    })
}
