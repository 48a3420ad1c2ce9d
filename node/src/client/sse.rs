//! Server-sent events (the `/watch` stream) parsed into watch events: lines `event:`, `id:`,
//! `data:` up to a blank line; `:` lines are keep-alives. An `error` event (the watcher fell
//! behind, or the node lost history) ends the stream with its message.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::error::ClientError;
use crate::api::WatchEventJson;

/// The longest event this client accepts (a value is at most a few MiB).
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    name: String,
    data: String,
}

/// Splits complete events off the front of `buffer`.
fn take_events(
    buffer: &mut BytesMut,
    pending: &mut Pending,
) -> Vec<Result<WatchEventJson, ClientError>> {
    let mut events = Vec::new();
    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
        let line = buffer.split_to(end + 1);
        let line = String::from_utf8_lossy(&line[..end]);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            let done = std::mem::take(pending);
            if done.data.is_empty() && done.name.is_empty() {
                continue;
            }
            if done.name == "error" {
                events.push(Err(ClientError::Rejected { status: 200, message: done.data }));
            } else {
                events.push(
                    serde_json::from_str(&done.data)
                        .map_err(|error| ClientError::BadAnswer(format!("watch event: {error}"))),
                );
            }
        } else if let Some(name) = line.strip_prefix("event:") {
            pending.name = name.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            if !pending.data.is_empty() {
                pending.data.push('\n');
            }
            pending.data.push_str(data.strip_prefix(' ').unwrap_or(data));
        }
        // `id:` and `:` keep-alive lines carry nothing the event does not.
    }
    events
}

pub fn events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Unpin + Send + 'static,
) -> impl Stream<Item = Result<WatchEventJson, ClientError>> {
    let state = (body, BytesMut::new(), Pending::default(), false);
    futures::stream::unfold(state, |(mut body, mut buffer, mut pending, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let ready = take_events(&mut buffer, &mut pending);
            if !ready.is_empty() {
                let ends = ready.iter().any(|event| event.is_err());
                let batch = futures::stream::iter(ready);
                return Some((batch, (body, buffer, pending, ends)));
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    buffer.extend_from_slice(&chunk);
                    if buffer.len() > MAX_EVENT_BYTES {
                        let error = ClientError::BadAnswer("a watch event exceeds 64 MiB".into());
                        return Some((
                            futures::stream::iter(vec![Err(error)]),
                            (body, buffer, pending, true),
                        ));
                    }
                }
                Some(Err(error)) => {
                    let error = ClientError::Unavailable {
                        tried: "the watch stream".into(),
                        last_error: error.to_string(),
                    };
                    return Some((
                        futures::stream::iter(vec![Err(error)]),
                        (body, buffer, pending, true),
                    ));
                }
                None => return None,
            }
        }
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines_and_keep_alives_ignored() {
        let mut buffer = BytesMut::from(
            &b": keep-alive\n\nevent: put\nid: 4\ndata: {\"kind\":\"put\",\"key\":\"a\",\"value\":\"1\",\"mod_revision\":4}\n\nevent: delete\nid: 5\ndata: {\"kind\":\"delete\",\"key\":\"a\",\"mod_revision\":5}\n"[..],
        );
        let mut pending = Pending::default();
        let events = take_events(&mut buffer, &mut pending);
        assert_eq!(events.len(), 1, "the second event is not complete yet");
        let first = events.into_iter().next().unwrap().unwrap();
        assert_eq!((first.kind.as_str(), first.key.as_str(), first.mod_revision), ("put", "a", 4));
        buffer.extend_from_slice(b"\n");
        let second = take_events(&mut buffer, &mut pending).into_iter().next().unwrap().unwrap();
        assert_eq!((second.kind.as_str(), second.mod_revision), ("delete", 5));
    }

    #[test]
    fn an_error_event_is_an_error() {
        let mut buffer = BytesMut::from(&b"event: error\ndata: resume from revision 9\n\n"[..]);
        let events = take_events(&mut buffer, &mut Pending::default());
        assert!(
            matches!(&events[0], Err(ClientError::Rejected { message, .. }) if message.contains("revision 9"))
        );
    }
}
