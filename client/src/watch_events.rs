//! The `/watch` stream (server-sent events, parsed by `eventsource-stream`) turned into watch
//! events. The SSE event name is the change's kind and its data the JSON event; an `error`
//! event (the watcher fell behind, or the node lost the history asked for) ends the stream
//! with its message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

use super::api::WatchEventJson;
use super::error::ClientError;

/// The most bytes this client takes in without a complete event (a value is at most a few
/// MiB, so an event past this is a broken or hostile server, and buffering it would exhaust
/// memory). Keep-alive comments count too: at one every few seconds they would take years to
/// reach it.
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// What went wrong with the stream before the parser saw it.
#[derive(Debug)]
enum BodyError {
    Transport(reqwest::Error),
    TooLarge { max_event_bytes: usize },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Transport(error) => write!(f, "{error}"),
            BodyError::TooLarge { max_event_bytes } => {
                write!(f, "a watch event exceeds {max_event_bytes} bytes")
            }
        }
    }
}

/// The SSE event a single-shard watch opened for a fan-out starts with (`x-conclave-shard` set
/// on a sharded node): no change, only its id, the position the stream starts at.
pub const OPEN_EVENT: &str = "open";

/// One item of a watch stream, with its SSE id (the position after it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionedEvent {
    pub id: String,
    /// `None` for the `open` event.
    pub change: Option<WatchEventJson>,
}

/// The watch events of an SSE body, ending after the first error.
pub fn events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<WatchEventJson, ClientError>> + Send + 'static {
    events_up_to(body, MAX_EVENT_BYTES)
}

/// The watch events of an SSE body with their ids (and the `open` event), ending after the
/// first error.
pub fn positioned_events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<PositionedEvent, ClientError>> + Send + 'static {
    positioned_events_up_to(body, MAX_EVENT_BYTES)
}

/// The changes of `positioned_events_up_to`: ids and `open` events dropped.
fn events_up_to(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<WatchEventJson, ClientError>> + Send + 'static {
    positioned_events_up_to(body, max_event_bytes).filter_map(|item| {
        futures::future::ready(match item {
            Ok(PositionedEvent { change, .. }) => change.map(Ok),
            Err(error) => Some(Err(error)),
        })
    })
}

fn positioned_events_up_to(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<PositionedEvent, ClientError>> + Send + 'static {
    let unparsed_bytes = Arc::new(AtomicUsize::new(0));
    let counted = unparsed_bytes.clone();
    let body = body.map(move |chunk| {
        let chunk = chunk.map_err(BodyError::Transport)?;
        if counted.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > max_event_bytes {
            return Err(BodyError::TooLarge { max_event_bytes });
        }
        Ok(chunk)
    });
    body.eventsource()
        .map(move |parsed| {
            unparsed_bytes.store(0, Ordering::Relaxed);
            match parsed {
                Ok(event) if event.event == "error" => {
                    Err(ClientError::Rejected { status: 200, message: event.data })
                }
                Ok(event) if event.event == OPEN_EVENT => {
                    Ok(PositionedEvent { id: event.id, change: None })
                }
                Ok(event) => serde_json::from_str(&event.data)
                    .map(|change| PositionedEvent { id: event.id, change: Some(change) })
                    .map_err(|error| ClientError::BadAnswer(format!("watch event: {error}"))),
                Err(eventsource_stream::EventStreamError::Transport(
                    error @ BodyError::TooLarge { .. },
                )) => Err(ClientError::BadAnswer(error.to_string())),
                Err(eventsource_stream::EventStreamError::Transport(error)) => {
                    Err(ClientError::Unavailable {
                        tried: "the watch stream".into(),
                        errors: format!("the watch stream: {error}"),
                    })
                }
                Err(error) => Err(ClientError::BadAnswer(format!("watch stream: {error}"))),
            }
        })
        .scan(false, |ended, event| {
            // The first error is the stream's last item.
            if *ended {
                return futures::future::ready(None);
            }
            *ended = event.is_err();
            futures::future::ready(Some(event))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(chunks: &[&'static [u8]]) -> Vec<Result<WatchEventJson, ClientError>> {
        let chunks: Vec<reqwest::Result<Bytes>> =
            chunks.iter().map(|chunk| Ok(Bytes::from_static(chunk))).collect();
        events(futures::stream::iter(chunks)).collect().await
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_joined_and_keep_alives_ignored() {
        let events = collect(&[
            b": keep-alive\n\nevent: put\nid: 4\ndata: {\"kind\":\"put\",\"key\":\"a\",",
            b"\"value\":\"1\",\"mod_revision\":4}\n\nevent: delete\nid: 5\r\ndata: ",
            b"{\"kind\":\"delete\",\"key\":\"a\",\"mod_revision\":5}\n\n",
        ])
        .await;
        let events: Vec<WatchEventJson> =
            events.into_iter().map(|event| event.expect("valid")).collect();
        let seen: Vec<(&str, &str, u64)> = events
            .iter()
            .map(|event| (event.kind.as_str(), event.key.as_str(), event.mod_revision))
            .collect();
        assert_eq!(seen, vec![("put", "a", 4), ("delete", "a", 5)]);
        assert_eq!(events[0].value.as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn positioned_events_keep_ids_and_the_open_event() {
        let chunks: Vec<reqwest::Result<Bytes>> = vec![Ok(Bytes::from_static(
            b"event: open\nid: 7:0\ndata: 7:0\n\nevent: put\nid: 8\ndata: {\"kind\":\"put\",\"key\":\"a\",\"mod_revision\":8}\n\n",
        ))];
        let items: Vec<PositionedEvent> = positioned_events(futures::stream::iter(chunks))
            .map(|item| item.expect("valid"))
            .collect()
            .await;
        assert_eq!(items.len(), 2);
        assert_eq!((items[0].id.as_str(), items[0].change.is_none()), ("7:0", true));
        assert_eq!(items[1].id, "8");
        assert_eq!(items[1].change.as_ref().map(|change| change.mod_revision), Some(8));
        // The plain stream yields the change only.
        let chunks: Vec<reqwest::Result<Bytes>> = vec![Ok(Bytes::from_static(
            b"event: open\nid: 7:0\ndata: 7:0\n\nevent: put\nid: 8\ndata: {\"kind\":\"put\",\"key\":\"a\",\"mod_revision\":8}\n\n",
        ))];
        let changes: Vec<_> = events(futures::stream::iter(chunks)).collect().await;
        assert_eq!(changes.len(), 1);
    }

    #[tokio::test]
    async fn an_error_event_is_the_last_item() {
        let events = collect(&[
            b"event: error\ndata: resume from revision 9\n\n",
            b"event: put\ndata: {\"kind\":\"put\",\"key\":\"a\",\"mod_revision\":10}\n\n",
        ])
        .await;
        assert_eq!(events.len(), 1, "nothing after the error");
        assert!(
            matches!(&events[0], Err(ClientError::Rejected { message, .. }) if message.contains("revision 9"))
        );
    }

    #[tokio::test]
    async fn an_event_that_never_ends_is_refused_at_the_limit() {
        // One data line that never ends, 4 KiB at a time, against a 64 KiB limit.
        let start = futures::stream::once(async { Ok(Bytes::from_static(b"data: ")) });
        let endless =
            start.chain(futures::stream::repeat_with(|| Ok(Bytes::from(vec![b'x'; 4096]))));
        let events: Vec<_> = events_up_to(endless, 64 << 10).collect().await;
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0], Err(ClientError::BadAnswer(message)) if message.contains("exceeds")),
            "{events:?}"
        );
    }
}
