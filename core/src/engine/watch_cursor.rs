//! One watch stream's place in the change history, and resumption that delivers every change
//! exactly once.
//!
//! Several changes can share a revision: a transaction's, or the expiries that took effect
//! with a request. A position therefore names a revision *and* how many of its changes under
//! the watch's prefix were delivered. Resuming by revision alone either repeats the delivered
//! ones (resume at the revision) or loses the rest (resume after it) whenever a stream ends
//! between two changes of one revision. As a token (an SSE event id) the position after the
//! first change of revision `R` is `R`, after its next ones `R.1`, `R.2`, …: revisions with a
//! single change keep plain numeric ids, and a plain `R` keeps meaning "everything of R seen"
//! for them.
//!
//! The index counts changes under the prefix only, so a token is valid on every replica (they
//! apply the same changes in the same order) but only for the same prefix.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::watch_hub::{Compacted, HubMessage, WatchHub};
use crate::kv::KvEvent;
use crate::raft::PlantedBug;
use crate::raft::planted::is_planted;

/// Everything before this point was delivered: the changes of lower revisions, and the first
/// `delivered_at_revision` changes (under the prefix) of `revision`. Ordered as the stream
/// runs.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct WatchPosition {
    pub revision: u64,
    pub delivered_at_revision: u32,
}

impl WatchPosition {
    /// Before every change of `revision`.
    pub fn start_of(revision: u64) -> Self {
        WatchPosition { revision, delivered_at_revision: 0 }
    }

    /// The token of a position after at least one change of its revision (`None` before any:
    /// such a position is a start revision, not an event id).
    pub fn token(&self) -> Option<String> {
        match self.delivered_at_revision {
            0 => None,
            1 => Some(self.revision.to_string()),
            delivered => Some(format!("{}.{}", self.revision, delivered - 1)),
        }
    }

    /// Reads a token written by [`WatchPosition::token`].
    pub fn parse_token(token: &str) -> Option<Self> {
        let (revision, index) = match token.trim().split_once('.') {
            Some((revision, index)) => (revision, index.parse::<u32>().ok()?),
            None => (token.trim(), 0),
        };
        let revision = revision.parse::<u64>().ok()?;
        Some(WatchPosition { revision, delivered_at_revision: index.checked_add(1)? })
    }
}

/// What a watch stream yields next.
#[derive(Debug)]
pub enum WatchItem {
    /// A change, and the position just after it.
    Change { event: Arc<KvEvent>, after: WatchPosition },
    /// The stream cannot go on without losing changes (`reason`); a new watch from `resume`
    /// can, on this node or another, if its history still holds that revision.
    Lost { reason: &'static str, resume: WatchPosition },
    /// The node stopped feeding watches.
    Closed,
}

pub struct WatchCursor {
    past: VecDeque<Arc<KvEvent>>,
    live: broadcast::Receiver<HubMessage>,
    prefix: String,
    revision: u64,
    /// Changes under the prefix of `revision` passed so far, delivered now or before.
    passed: u32,
    /// Changes of `revision` the client already has (resuming within a revision).
    already_delivered: u32,
    finished: bool,
}

impl WatchCursor {
    /// A watch of the keys under `prefix` from `from` (`None`: from now on).
    /// `current_revision` is the store's revision as the caller knows it; `planted_bug` lets
    /// the simulator prove its watch check (never set in production).
    pub fn open(
        hub: &WatchHub,
        prefix: String,
        from: Option<WatchPosition>,
        current_revision: u64,
        planted_bug: Option<PlantedBug>,
    ) -> Result<Self, Compacted> {
        let start = hub.watch_from(from.map(|position| position.revision), current_revision)?;
        let mut already_delivered = from
            .filter(|position| position.revision == start.from_revision)
            .map_or(0, |position| position.delivered_at_revision);
        if is_planted(planted_bug, PlantedBug::WatchResumeRepeats) {
            already_delivered = 0;
        }
        Ok(WatchCursor {
            past: start.past.into(),
            live: start.live,
            prefix,
            revision: start.from_revision,
            passed: 0,
            already_delivered,
            finished: false,
        })
    }

    /// Where a new watch would pick up what this one has not delivered.
    pub fn position(&self) -> WatchPosition {
        WatchPosition { revision: self.revision, delivered_at_revision: self.passed }
    }

    /// The position after `event` if it is this watch's to deliver now.
    fn admit(&mut self, event: &KvEvent) -> Option<WatchPosition> {
        if !event.key.starts_with(&self.prefix) || event.mod_revision < self.revision {
            return None;
        }
        if event.mod_revision > self.revision {
            self.revision = event.mod_revision;
            self.passed = 0;
            self.already_delivered = 0;
        }
        let index = self.passed;
        self.passed += 1;
        (index >= self.already_delivered).then(|| self.position())
    }

    /// The next change under the prefix. Cancel-safe: an item is consumed only when returned.
    pub async fn next(&mut self) -> WatchItem {
        if self.finished {
            return WatchItem::Closed;
        }
        while let Some(event) = self.past.pop_front() {
            if let Some(after) = self.admit(&event) {
                return WatchItem::Change { event, after };
            }
        }
        loop {
            match self.live.recv().await {
                Ok(HubMessage::Event(event)) => {
                    if let Some(after) = self.admit(&event) {
                        return WatchItem::Change { event, after };
                    }
                }
                Ok(HubMessage::Gap) => return self.lost("the node lost events"),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return self.lost("this watcher fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.finished = true;
                    return WatchItem::Closed;
                }
            }
        }
    }

    fn lost(&mut self, reason: &'static str) -> WatchItem {
        self.finished = true;
        WatchItem::Lost { reason, resume: self.position() }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn put(key: &str, revision: u64) -> KvEvent {
        KvEvent::put(key, Bytes::from_static(b"v"), revision)
    }

    fn next_now(cursor: &mut WatchCursor) -> Option<(String, WatchPosition)> {
        let item = poll_once(cursor.next());
        match item {
            Some(WatchItem::Change { event, after }) => Some((event.key.clone(), after)),
            _ => None,
        }
    }

    /// Polls a future once: the cursor answers at once when an event is there.
    fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn tokens_name_the_change_within_its_revision() {
        let first = WatchPosition { revision: 17, delivered_at_revision: 1 };
        let third = WatchPosition { revision: 17, delivered_at_revision: 3 };
        assert_eq!(first.token().as_deref(), Some("17"));
        assert_eq!(third.token().as_deref(), Some("17.2"));
        assert_eq!(WatchPosition::start_of(17).token(), None);
        assert_eq!(WatchPosition::parse_token("17"), Some(first));
        assert_eq!(WatchPosition::parse_token("17.2"), Some(third));
        for bad in ["", "x", "17.", "17.x", "-1", "17.4294967295"] {
            assert_eq!(WatchPosition::parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_watch_resumed_inside_a_revision_gets_each_change_exactly_once() {
        let hub = WatchHub::new(100);
        hub.push(put("a/1", 5));
        hub.push(put("b/1", 6)); // another prefix: not counted
        hub.push(put("a/2", 6));
        hub.push(put("a/3", 6));
        hub.push(put("a/4", 7));
        let mut first =
            WatchCursor::open(&hub, "a/".into(), Some(WatchPosition::start_of(5)), 7, None)
                .expect("held");
        assert_eq!(next_now(&mut first).map(|(key, _)| key).as_deref(), Some("a/1"));
        let (key, cut_at) = next_now(&mut first).expect("a change");
        assert_eq!((key.as_str(), cut_at.token().as_deref()), ("a/2", Some("6")));
        // The stream ends here, between the two changes of revision 6.
        let resume = WatchPosition::parse_token(&cut_at.token().unwrap()).unwrap();
        let mut second = WatchCursor::open(&hub, "a/".into(), Some(resume), 7, None).expect("held");
        let rest: Vec<String> = std::iter::from_fn(|| {
            next_now(&mut second).map(|(key, after)| format!("{key}@{}", after.token().unwrap()))
        })
        .collect();
        assert_eq!(rest, ["a/3@6.1", "a/4@7"]);
        // Live changes after the history continue the count.
        hub.push(put("a/5", 8));
        assert_eq!(next_now(&mut second).map(|(key, _)| key).as_deref(), Some("a/5"));
    }

    #[test]
    fn a_watch_from_now_never_sees_part_of_a_revision() {
        let hub = WatchHub::new(100);
        hub.push(put("a", 3));
        let mut cursor = WatchCursor::open(&hub, String::new(), None, 3, None).expect("now");
        // The rest of revision 3 arrives after the watch began: not this watch's.
        hub.push(put("b", 3));
        hub.push(put("c", 4));
        assert_eq!(next_now(&mut cursor).map(|(key, _)| key).as_deref(), Some("c"));
    }

    #[test]
    fn a_gap_ends_the_stream_with_the_position_to_resume_from() {
        let hub = WatchHub::new(100);
        hub.push(put("a", 3));
        hub.push(put("b", 3));
        let mut cursor =
            WatchCursor::open(&hub, String::new(), Some(WatchPosition::start_of(3)), 3, None)
                .expect("held");
        assert!(next_now(&mut cursor).is_some());
        hub.gap();
        assert!(next_now(&mut cursor).is_some(), "held changes come first");
        match poll_once(cursor.next()) {
            Some(WatchItem::Lost { resume, .. }) => {
                assert_eq!(resume, WatchPosition { revision: 3, delivered_at_revision: 2 });
            }
            other => panic!("expected the stream to end, got {other:?}"),
        }
    }
}
