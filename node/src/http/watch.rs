//! `GET /watch?prefix=&start_revision=` — changes as server-sent events. Each event's `id` is
//! its revision and its name is `put`, `delete` or `expire`; `data` is `api::WatchEventJson`.
//! A client that reconnects with `Last-Event-ID` resumes after that revision. When a watcher
//! falls too far behind (or the node's history lost events), the stream sends an `error`
//! event saying from which revision to resume, and ends. A start revision older than the
//! node's history answers 410 (see `watch_hub.rs`). The stream ends when the node shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use conclave_core::kv::{KvEvent, KvEventKind};
use futures::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch as signal};

use super::AppState;
use super::reply::{text, unavailable};
use crate::api::{WatchEventJson, encode_value};
use crate::metrics::Metrics;
use crate::watch_hub::{Compacted, HubMessage};

#[derive(Debug, Default, Deserialize)]
pub struct WatchParams {
    pub prefix: Option<String>,
    pub start_revision: Option<u64>,
}

const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

struct Watcher {
    past: VecDeque<Arc<KvEvent>>,
    live: broadcast::Receiver<HubMessage>,
    prefix: String,
    /// Events below this revision were already sent (or not asked for).
    next_revision: u64,
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

fn event_of(event: &KvEvent) -> Event {
    let (value, value_base64) = encode_value(&event.value);
    let data = WatchEventJson {
        kind: kind_name(event.kind).to_string(),
        key: event.key.clone(),
        value,
        value_base64,
        mod_revision: event.mod_revision,
    };
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into());
    Event::default().id(event.mod_revision.to_string()).event(kind_name(event.kind)).data(json)
}

fn error_event(message: String) -> Event {
    Event::default().event("error").data(message)
}

impl Watcher {
    fn wanted(&self, event: &KvEvent) -> bool {
        event.mod_revision >= self.next_revision && event.key.starts_with(&self.prefix)
    }

    fn resume_hint(&self, reason: &str) -> Event {
        error_event(format!("{reason}; watch again with start_revision={}", self.next_revision))
    }

    async fn next_event(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        while let Some(event) = self.past.pop_front() {
            if self.wanted(&event) {
                self.next_revision = event.mod_revision;
                return Some(event_of(&event));
            }
        }
        loop {
            tokio::select! {
                message = self.live.recv() => match message {
                    Ok(HubMessage::Event(event)) => {
                        if self.wanted(&event) {
                            // Events of one revision share it: resume at the same revision.
                            self.next_revision = event.mod_revision;
                            return Some(event_of(&event));
                        }
                    }
                    Ok(HubMessage::Gap) => {
                        self.finished = true;
                        return Some(self.resume_hint("the node lost events"));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.finished = true;
                        return Some(self.resume_hint("this watcher fell behind"));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        self.finished = true;
                        return Some(self.resume_hint("the node is shutting down"));
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
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    // An SSE reconnect names the last event seen: resume after its revision.
    let start_revision = params.start_revision.or(last_event_id.map(|id| id + 1));
    let Ok(permit) = state.watchers.clone().try_acquire_owned() else {
        return unavailable(format!(
            "too many watch streams (the limit is {}); retry later\n",
            state.config.http.max_watchers
        ));
    };
    let current_revision = state.engine.status().revision;
    let (past, live) = match state.hub.watch_from(start_revision, current_revision) {
        Ok(found) => found,
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
        past: past.into(),
        live,
        prefix: params.prefix.unwrap_or_default(),
        next_revision: start_revision.unwrap_or(current_revision + 1),
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
