//! `GET /watch` on a sharded cluster: one stream of every shard's changes under the prefix.
//!
//! Each shard keeps its own revisions, so a watch is a position *per shard*. The node opens one
//! stream per shard — from its own replica's watch history when it hosts one, otherwise from a
//! node that does (a single-shard watch, `x-conclave-shard`, which starts with an `open` event
//! naming its position) — and merges them as their changes arrive: changes of one shard keep
//! their order; changes of different shards have no order between them (there is none to
//! keep). Every event's id is the position of every shard after it, `SHARD:REVISION:DELIVERED`
//! joined by commas (see [`ShardPositions`]); a client that reconnects with that id as
//! `Last-Event-ID` gets every change after it exactly once. The response starts only once
//! every shard's stream has its place, so "from now" means from the response. A stream from
//! another node that breaks (the node died) is resumed at once from a replica that answers, at
//! the shard's position: the watch survives the loss of any node but its own. A shard whose
//! history no longer holds the position ends the watch with an `error` event.
//!
//! A `start_revision` names one shard's revision: it is refused here unless a shard is named.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use conclave_client::api::{SHARD_HEADER, WatchEventJson};
use conclave_client::{OPEN_EVENT, PositionedEvent, positioned_events};
use conclave_core::engine::{WatchCursor, WatchItem, WatchPosition};
use conclave_core::raft::NodeId;
use conclave_core::shard::ShardId;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::watch as signal;

use super::AppState;
use super::reply::{bad_request, text, unavailable};
use super::watch::{WatcherSlot, change_json, compacted_response, watcher_slot};

/// How long a broken stream from another node waits before the next replica is tried, at most.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// Shards named in one `Last-Event-ID`, at most (a map has at most 4,096).
const MAX_TOKEN_SHARDS: usize = 4_096;

/// Every shard's place in a merged watch: what was delivered of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardPositions(BTreeMap<ShardId, WatchPosition>);

impl ShardPositions {
    /// `SHARD:REVISION:DELIVERED,…`, shards in order.
    pub fn token(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(shard, at)| format!("{}:{}:{}", shard.0, at.revision, at.delivered_at_revision))
            .collect();
        parts.join(",")
    }

    /// Reads a token written by [`ShardPositions::token`].
    pub fn parse(token: &str) -> Option<ShardPositions> {
        let mut positions = BTreeMap::new();
        for part in token.trim().split(',') {
            let mut fields = part.split(':');
            let shard = ShardId(fields.next()?.parse().ok()?);
            let revision = fields.next()?.parse().ok()?;
            let delivered_at_revision = fields.next()?.parse().ok()?;
            if fields.next().is_some() || positions.len() >= MAX_TOKEN_SHARDS {
                return None;
            }
            positions.insert(shard, WatchPosition { revision, delivered_at_revision });
        }
        Some(ShardPositions(positions))
    }
}

/// The position an `open` event names: `REVISION:DELIVERED` (never a change's id, which has
/// no colon), as its id and its data (an event without data is never dispatched).
pub fn open_event(at: WatchPosition) -> Event {
    let id = format!("{}:{}", at.revision, at.delivered_at_revision);
    Event::default().event(OPEN_EVENT).id(id.clone()).data(id)
}

fn parse_open_id(id: &str) -> Option<WatchPosition> {
    let (revision, delivered) = id.split_once(':')?;
    Some(WatchPosition {
        revision: revision.parse().ok()?,
        delivered_at_revision: delivered.parse().ok()?,
    })
}

/// What one shard's stream yields.
enum ShardItem {
    /// Where the stream stands before its first change.
    Opened(WatchPosition),
    Change(WatchEventJson, WatchPosition),
    /// The stream cannot go on (why).
    Ended(String),
}

type ShardStream = BoxStream<'static, ShardItem>;

/// The merged watch of every shard, from `from` (each shard missing from it, or every shard
/// without it: from now on).
pub async fn merged_watch(
    state: Arc<AppState>,
    prefix: String,
    from: Option<ShardPositions>,
) -> Response {
    let Some(map) = state.groups.map() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "a sharded node without a map\n");
    };
    let slot = match watcher_slot(&state) {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let from = from.unwrap_or_default();
    let mut opening = Vec::new();
    for (shard, info) in map.shards() {
        let start = from.0.get(&shard).copied();
        let stream = match state.hubs.get(&shard) {
            Some(hub) => {
                let group = state.groups.hosted().get(&shard).expect("a hub is a hosted group's");
                let current = group.status().revision;
                match WatchCursor::open(hub, prefix.clone(), start, current, None) {
                    Ok(cursor) => local_stream(cursor),
                    Err(compacted) => return compacted_response(compacted, Some(shard)),
                }
            }
            None => {
                let target = ShardTarget {
                    state: state.clone(),
                    shard,
                    replicas: info.replicas.clone(),
                    prefix: prefix.clone(),
                };
                let remote =
                    RemoteShard { target, position: start, body: None, opened: false, failures: 0 };
                remote_stream(remote)
            }
        };
        opening.push((shard, stream));
    }
    // Every shard's place first: the watch starts when the response does.
    let timeout = Duration::from_millis(state.config.http.request_timeout_ms);
    let opened =
        futures::future::join_all(opening.into_iter().map(|(shard, mut stream)| async move {
            let first = tokio::time::timeout(timeout, stream.next()).await;
            (shard, first, stream)
        }))
        .await;
    let mut positions = ShardPositions::default();
    let mut streams = Vec::with_capacity(opened.len());
    for (shard, first, stream) in opened {
        match first {
            Ok(Some(ShardItem::Opened(at))) => {
                positions.0.insert(shard, at);
            }
            Ok(Some(ShardItem::Ended(reason))) => {
                return unavailable(format!("{shard}: {reason}\n"));
            }
            Ok(Some(ShardItem::Change(change, after))) => {
                unreachable!("{shard}'s stream opened with a change: {change:?} at {after:?}")
            }
            Ok(None) | Err(_) => {
                return unavailable(format!(
                    "{shard}: no replica could be watched within {} ms; retry\n",
                    timeout.as_millis()
                ));
            }
        }
        streams.push(stream.map(move |item| (shard, item)).boxed());
    }
    let merged = Merged {
        streams: stream::select_all(streams),
        positions,
        shutdown: state.shutdown.clone(),
        finished: false,
        _slot: slot,
    };
    Sse::new(merged.events())
        .keep_alive(KeepAlive::new().interval(super::watch::KEEP_ALIVE_INTERVAL))
        .into_response()
}

/// A watch with a `start_revision` and no shard: refused (the revision of which shard?).
pub fn start_revision_refused() -> Response {
    bad_request(format!(
        "revisions are per shard in a sharded cluster: start_revision needs a shard \
         ({SHARD_HEADER}); to resume a watch of every shard, send its last event id as \
         Last-Event-ID\n"
    ))
}

struct Merged {
    streams: stream::SelectAll<BoxStream<'static, (ShardId, ShardItem)>>,
    positions: ShardPositions,
    shutdown: signal::Receiver<bool>,
    finished: bool,
    _slot: WatcherSlot,
}

impl Merged {
    fn events(self) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold(self, |mut merged| async move {
            let event = merged.next_event().await?;
            Some((Ok(event), merged))
        })
    }

    fn resume_hint(&self, reason: &str) -> Event {
        Event::default()
            .event("error")
            .data(format!("{reason}; watch again with Last-Event-ID: {}", self.positions.token()))
    }

    async fn next_event(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        loop {
            tokio::select! {
                item = self.streams.next() => {
                    let Some((shard, item)) = item else {
                        self.finished = true;
                        return Some(self.resume_hint("every shard's stream ended"));
                    };
                    match item {
                        ShardItem::Opened(at) => {
                            self.positions.0.insert(shard, at);
                        }
                        ShardItem::Change(mut change, after) => {
                            self.positions.0.insert(shard, after);
                            change.shard = Some(shard.0);
                            let json = serde_json::to_string(&change).unwrap_or_else(|_| "{}".into());
                            return Some(
                                Event::default()
                                    .id(self.positions.token())
                                    .event(change.kind.clone())
                                    .data(json),
                            );
                        }
                        ShardItem::Ended(reason) => {
                            self.finished = true;
                            return Some(self.resume_hint(&format!("{shard}: {reason}")));
                        }
                    }
                }
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

/// A shard's stream from this node's replica: its place, then its changes.
fn local_stream(cursor: WatchCursor) -> ShardStream {
    let opened = ShardItem::Opened(cursor.position());
    let changes = stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        match cursor.next().await {
            WatchItem::Change { event, after } => {
                Some((ShardItem::Change(change_json(&event), after), Some(cursor)))
            }
            WatchItem::Lost { reason, .. } => Some((ShardItem::Ended(reason.to_string()), None)),
            WatchItem::Closed => Some((ShardItem::Ended("the node stopped".into()), None)),
        }
    });
    stream::once(async move { opened }).chain(changes).boxed()
}

/// A shard's stream from the nodes that hold a replica of it, resumed on another when one
/// breaks.
struct RemoteShard {
    target: ShardTarget,
    /// What was delivered so far (`None`: nothing yet, from now on).
    position: Option<WatchPosition>,
    body: Option<RemoteEvents>,
    /// Whether the stream said where it stands (its first item).
    opened: bool,
    /// Connections that failed in a row.
    failures: u32,
}

/// The shard a remote stream watches, and where.
struct ShardTarget {
    state: Arc<AppState>,
    shard: ShardId,
    replicas: Vec<NodeId>,
    prefix: String,
}

type RemoteEvents =
    Pin<Box<dyn Stream<Item = Result<PositionedEvent, conclave_client::ClientError>> + Send>>;

fn remote_stream(remote: RemoteShard) -> ShardStream {
    stream::unfold(Some(remote), |remote| async move {
        let mut remote = remote?;
        let item = remote.next_item().await;
        let ended = matches!(item, ShardItem::Ended(_));
        Some((item, (!ended).then_some(remote)))
    })
    .boxed()
}

/// Why a connection to a replica gave no stream.
enum Refusal {
    /// Worth trying another replica, or the same one later.
    Transient(String),
    /// The shard's history no longer holds the position: no replica will.
    Gone(String),
}

impl RemoteShard {
    async fn next_item(&mut self) -> ShardItem {
        loop {
            if self.body.is_none() {
                match self.target.connect(self.failures, self.position).await {
                    Ok(body) => self.body = Some(body),
                    Err(Refusal::Gone(reason)) => return ShardItem::Ended(reason),
                    Err(Refusal::Transient(reason)) => {
                        self.failures += 1;
                        let shard = self.target.shard.0;
                        tracing::debug!(shard, %reason, "watch of a shard elsewhere");
                        let backoff = Duration::from_millis(50 << self.failures.min(5));
                        tokio::time::sleep(backoff.min(MAX_RECONNECT_BACKOFF)).await;
                        continue;
                    }
                }
            }
            let body = self.body.as_mut().expect("connected above");
            match body.next().await {
                Some(Ok(PositionedEvent { id, change: None })) => {
                    self.failures = 0;
                    let Some(at) = parse_open_id(&id) else {
                        self.body = None;
                        continue;
                    };
                    // The first open says where the shard's stream stands (from now on, or
                    // where it resumed); a reconnection's only repeats our position.
                    if !self.opened {
                        self.opened = true;
                        let at = *self.position.get_or_insert(at);
                        return ShardItem::Opened(at);
                    }
                }
                Some(Ok(PositionedEvent { id, change: Some(change) })) => {
                    let Some(after) = WatchPosition::parse_token(&id) else {
                        self.body = None;
                        continue;
                    };
                    self.position = Some(after);
                    return ShardItem::Change(change, after);
                }
                // The replica's stream ended or broke (it died, or its watcher fell behind):
                // resume from the position, on whichever replica answers.
                Some(Err(_)) | None => self.body = None,
            }
        }
    }
}

impl ShardTarget {
    /// A single-shard watch of the shard from `position`, at the replica whose turn it is
    /// after `failures` failed attempts.
    async fn connect(
        &self,
        failures: u32,
        position: Option<WatchPosition>,
    ) -> Result<RemoteEvents, Refusal> {
        if self.replicas.is_empty() {
            return Err(Refusal::Gone(format!("the map lists no replica of {}", self.shard)));
        }
        let replica = self.replicas[failures as usize % self.replicas.len()];
        let Some(address) = self.state.http_address_of(replica) else {
            return Err(Refusal::Transient(format!("node {}: HTTP address unknown", replica.0)));
        };
        let mut url = format!(
            "http://{address}/watch?prefix={}",
            conclave_client::encode_component(&self.prefix)
        );
        // A position inside a revision resumes by its event id; one at a revision's start
        // (nothing of it delivered) by the revision.
        let resume_id = position.and_then(|at| at.token());
        if let (Some(at), None) = (position, &resume_id) {
            url.push_str(&format!("&start_revision={}", at.revision));
        }
        let mut request = self.state.forwarder.get(&url).header(SHARD_HEADER, self.shard.0);
        if let Some(token) = resume_id {
            request = request.header("last-event-id", token);
        }
        let timeout = Duration::from_millis(self.state.config.http.request_timeout_ms);
        let response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| Refusal::Transient(format!("node {}: no answer in time", replica.0)))?
            .map_err(|error| Refusal::Transient(format!("node {}: {error}", replica.0)))?;
        match response.status() {
            reqwest::StatusCode::OK => Ok(Box::pin(positioned_events(response.bytes_stream()))),
            reqwest::StatusCode::GONE => {
                let body = response.text().await.unwrap_or_default();
                Err(Refusal::Gone(body.trim().to_string()))
            }
            status => Err(Refusal::Transient(format!("node {} answered {status}", replica.0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_their_token() {
        let positions = ShardPositions(BTreeMap::from([
            (ShardId(0), WatchPosition { revision: 12, delivered_at_revision: 1 }),
            (ShardId(3), WatchPosition { revision: 40, delivered_at_revision: 0 }),
        ]));
        assert_eq!(positions.token(), "0:12:1,3:40:0");
        assert_eq!(ShardPositions::parse(&positions.token()), Some(positions));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in ["", "12", "0:12", "0:12:1:4", "a:1:1", "0:1:1,", "0:-1:0"] {
            assert_eq!(ShardPositions::parse(token), None, "{token:?}");
        }
    }

    #[test]
    fn an_open_id_is_a_position() {
        let at = WatchPosition { revision: 7, delivered_at_revision: 2 };
        assert_eq!(parse_open_id("7:2"), Some(at));
        assert_eq!(parse_open_id("7.2"), None);
    }
}
