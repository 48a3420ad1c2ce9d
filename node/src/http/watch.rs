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
use conclave_core::shard::ShardId;
use futures::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, watch as signal};

use super::AppState;
use super::leader::misdirected;
use super::propose::shard_header;
use super::reply::{bad_request, text, unavailable};
use super::sharded_watch::{ShardPositions, merged_watch, open_event, start_revision_refused};
use crate::metrics::Metrics;
use conclave_client::api::{WatchEventJson, encode_value};

#[derive(Debug, Default, Deserialize)]
pub struct WatchParams {
    pub prefix: Option<String>,
    pub start_revision: Option<u64>,
}

pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

struct Watcher {
    cursor: WatchCursor,
    shutdown: signal::Receiver<bool>,
    finished: bool,
    /// Sent before the first change (a single-shard watch of a sharded node).
    open: Option<Event>,
    _permit: WatcherSlot,
}

/// Holds a watcher's place under `--max-watchers` and keeps the gauge right.
pub struct WatcherSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.metrics.watchers.dec();
    }
}

pub fn kind_name(kind: KvEventKind) -> &'static str {
    match kind {
        KvEventKind::Put => "put",
        KvEventKind::Delete => "delete",
        KvEventKind::Expire => "expire",
    }
}

/// A change as the JSON API shows it.
pub fn change_json(event: &KvEvent) -> WatchEventJson {
    let (value, value_base64) = encode_value(&event.value);
    WatchEventJson {
        kind: kind_name(event.kind).to_string(),
        key: event.key.clone(),
        value,
        value_base64,
        mod_revision: event.mod_revision,
        shard: None,
    }
}

/// A change as an SSE event; its id is the position after it (see `WatchPosition::token`).
fn event_of(event: &KvEvent, after: WatchPosition) -> Event {
    let data = change_json(event);
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
        if let Some(open) = self.open.take() {
            return Some(open);
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
    let prefix = params.prefix.unwrap_or_default();
    let shard = match shard_header(&headers) {
        Ok(shard) => shard,
        Err(message) => return bad_request(message),
    };
    if state.groups.is_sharded() && shard.is_none() {
        let from = match headers.get("last-event-id") {
            None if params.start_revision.is_some() => return start_revision_refused(),
            None => None,
            Some(value) => match value.to_str().ok().and_then(ShardPositions::parse) {
                Some(positions) => Some(positions),
                None => {
                    return bad_request(
                        "Last-Event-ID is not an event id of a sharded watch \
                         (SHARD:REVISION:DELIVERED,…)\n",
                    );
                }
            },
        };
        return merged_watch(state, prefix, from).await;
    }
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
    let shard = shard.unwrap_or(ShardId::META);
    let (Some(hub), Some(group)) = (state.hubs.get(&shard), state.groups.hosted().get(&shard))
    else {
        return misdirected(&state, shard);
    };
    let permit = match watcher_slot(&state) {
        Ok(permit) => permit,
        Err(response) => return response,
    };
    let current_revision = group.status().revision;
    let cursor = match WatchCursor::open(hub, prefix, from, current_revision, None) {
        Ok(cursor) => cursor,
        Err(compacted) => return compacted_response(compacted, None),
    };
    // A sharded node's single-shard stream says where it starts: the merged watch that asked
    // for it resumes from there if the stream breaks before its first change.
    let open = state.groups.is_sharded().then(|| open_event(cursor.position()));
    let watcher = Watcher {
        cursor,
        shutdown: state.shutdown.clone(),
        finished: false,
        open,
        _permit: permit,
    };
    Sse::new(events(watcher))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
        .into_response()
}

/// A place under `--max-watchers` (counted in the gauge), or the 503 that says there is none.
#[allow(clippy::result_large_err)] // the error is the finished answer, built on the cold path
pub fn watcher_slot(state: &AppState) -> Result<WatcherSlot, Response> {
    let Ok(permit) = state.watchers.clone().try_acquire_owned() else {
        return Err(unavailable(format!(
            "too many watch streams (the limit is {}); retry later\n",
            state.config.http.max_watchers
        )));
    };
    state.metrics.watchers.inc();
    Ok(WatcherSlot { _permit: permit, metrics: state.metrics.clone() })
}

/// 410: the history no longer holds the revision asked for (of `shard`, if named).
pub fn compacted_response(compacted: Compacted, shard: Option<ShardId>) -> Response {
    let Compacted { requested, floor } = compacted;
    let held = floor.map_or_else(
        || "this node holds no history yet".to_string(),
        |floor| format!("the oldest revision held is {floor}"),
    );
    let of_shard = shard.map(|shard| format!(" of {shard}")).unwrap_or_default();
    text(
        StatusCode::GONE,
        format!(
            "revision {requested}{of_shard} is no longer in this node's watch history ({held}); \
             read the keys, then watch from the current revision\n"
        ),
    )
}

fn events(watcher: Watcher) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(watcher, |mut watcher| async move {
        let event = watcher.next_event().await?;
        Some((Ok(event), watcher))
    })
}
