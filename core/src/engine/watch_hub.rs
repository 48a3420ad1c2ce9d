//! Fan-out of change events to watch streams, with a bounded in-memory history so that a watch
//! can start from a past revision.
//!
//! The hub subscribes to the engine before the engine's first cycle, so it sees every change
//! this process applies (after a restart the engine re-applies the log from its snapshot, so
//! history resumes from the snapshot's revision). It keeps the newest events, at most
//! `max_events` and [`MAX_HISTORY_BYTES`]; `floor` is the lowest revision whose events are all
//! still held. A watch from a revision below the floor is refused as compacted (HTTP 410, as
//! etcd does) instead of silently skipping events: the client must re-read the keys and watch
//! from the current revision.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use super::change_feed::ChangeFeed;
use crate::kv::KvEvent;
use tokio::sync::broadcast;

/// Key and value bytes kept in the history at most.
pub const MAX_HISTORY_BYTES: usize = 64 << 20;
/// Live events buffered per watcher before a slow one is cut off.
const LIVE_BUFFER_EVENTS: usize = 4_096;

#[derive(Clone, Debug)]
pub enum HubMessage {
    Event(Arc<KvEvent>),
    /// The history cannot continue: the hub fell behind the engine and lost events, or a
    /// snapshot install skipped changes. Every watch ends, to resume where a history still
    /// holds its place.
    Gap,
}

/// Where a watch starts: the held events from its start revision, then the live channel,
/// subscribed under the same lock so that no event falls between them or comes twice.
pub struct WatchStart {
    pub past: Vec<Arc<KvEvent>>,
    pub live: broadcast::Receiver<HubMessage>,
    /// Events of lower revisions are not the watch's to send.
    pub from_revision: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Compacted {
    pub requested: u64,
    /// The lowest revision that can be replayed, if any.
    pub floor: Option<u64>,
}

struct History {
    events: VecDeque<Arc<KvEvent>>,
    bytes: usize,
    floor: Option<u64>,
    /// After a gap the next event may be one of several of its revision: the floor starts
    /// after it.
    after_gap: bool,
    last_revision: u64,
}

pub struct WatchHub {
    history: Mutex<History>,
    /// The live channel, made by the first watch: its buffer (`LIVE_BUFFER_EVENTS` slots) is
    /// allocated up front, and a sharded node keeps a hub per hosted group — a thousand idle
    /// groups' buffers would cost a quarter of a gigabyte before anyone watched.
    live: OnceLock<broadcast::Sender<HubMessage>>,
    max_events: usize,
}

fn event_bytes(event: &KvEvent) -> usize {
    64 + event.key.len() + event.value.len()
}

impl WatchHub {
    pub fn new(max_events: usize) -> Arc<WatchHub> {
        Arc::new(WatchHub {
            history: Mutex::new(History {
                events: VecDeque::new(),
                bytes: 0,
                floor: None,
                after_gap: false,
                last_revision: 0,
            }),
            live: OnceLock::new(),
            max_events: max_events.max(1),
        })
    }

    /// Sends `message` to the watchers, if any ever subscribed (the caller holds the lock).
    fn send_live(&self, message: HubMessage) {
        if let Some(live) = self.live.get() {
            let _ = live.send(message);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        // A panic while holding the lock leaves consistent data (each step is one push/pop).
        self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Feeds the hub from the engine until the engine stops.
    pub async fn run(self: Arc<Self>, mut feed: broadcast::Receiver<ChangeFeed>) {
        loop {
            match feed.recv().await {
                Ok(ChangeFeed::Change(event)) => self.push(event),
                Ok(ChangeFeed::Skipped { revision }) => self.skipped_to(revision),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Only a watcher that is open now loses its place; with none, the history
                    // just starts again (a watch from an old revision then hears it is gone).
                    let watchers = self.live.get().map_or(0, |live| live.receiver_count());
                    if watchers > 0 {
                        tracing::warn!(
                            missed,
                            watchers,
                            "watch history fell behind the engine; open watches restart"
                        );
                    } else {
                        tracing::debug!(missed, "watch history fell behind the engine");
                    }
                    self.gap();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    pub(crate) fn push(&self, event: KvEvent) {
        let event = Arc::new(event);
        let mut history = self.lock();
        let revision = event.mod_revision;
        history.last_revision = history.last_revision.max(revision);
        if history.floor.is_none() {
            history.floor = Some(if history.after_gap { revision + 1 } else { revision });
        }
        history.bytes += event_bytes(&event);
        history.events.push_back(event.clone());
        while history.events.len() > self.max_events || history.bytes > MAX_HISTORY_BYTES {
            let Some(oldest) = history.events.pop_front() else { break };
            history.bytes -= event_bytes(&oldest);
            let floor = history.floor.unwrap_or(0).max(oldest.mod_revision + 1);
            history.floor = Some(floor);
        }
        // Sent under the lock, so that a subscriber sees each event exactly once: either in
        // the history it copied or on the live channel it joined.
        self.send_live(HubMessage::Event(event));
    }

    pub(crate) fn gap(&self) {
        let mut history = self.lock();
        history.events.clear();
        history.bytes = 0;
        history.floor = None;
        history.after_gap = true;
        self.send_live(HubMessage::Gap);
    }

    /// The store jumped to `revision` (a snapshot installed) without making the changes before
    /// it here: what the history holds cannot continue into what comes next. Every watch
    /// ends (to resume where a history still holds its place), and only watches from after
    /// `revision` can be served from now on.
    pub(crate) fn skipped_to(&self, revision: u64) {
        let mut history = self.lock();
        history.events.clear();
        history.bytes = 0;
        history.floor = Some(revision + 1);
        history.after_gap = false;
        history.last_revision = history.last_revision.max(revision);
        self.send_live(HubMessage::Gap);
    }

    /// Events from `start_revision` on (`None`: only future events): the ones held, then a
    /// live subscription. `current_revision` is the store's revision as the caller knows it.
    pub fn watch_from(
        &self,
        start_revision: Option<u64>,
        current_revision: u64,
    ) -> Result<WatchStart, Compacted> {
        let history = self.lock();
        // Under the lock, as `push` sends: no event falls between the history and the channel.
        let live = self.live.get_or_init(|| broadcast::channel(LIVE_BUFFER_EVENTS).0).subscribe();
        let newest = history.last_revision.max(current_revision);
        // "From now" starts after the newest revision: a revision whose first events were
        // already sent would otherwise be seen in part.
        let Some(start) = start_revision else {
            return Ok(WatchStart { past: Vec::new(), live, from_revision: newest + 1 });
        };
        if start > newest {
            return Ok(WatchStart { past: Vec::new(), live, from_revision: start });
        }
        match history.floor {
            Some(floor) if start >= floor => {
                let past =
                    history.events.iter().filter(|e| e.mod_revision >= start).cloned().collect();
                Ok(WatchStart { past, live, from_revision: start })
            }
            floor => Err(Compacted { requested: start, floor }),
        }
    }

    /// The lowest revision a watch can start from, if any.
    pub fn floor(&self) -> Option<u64> {
        self.lock().floor
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event(key: &str, revision: u64) -> KvEvent {
        KvEvent::put(key, Bytes::from_static(b"v"), revision)
    }

    #[test]
    fn replays_from_a_held_revision_and_refuses_an_evicted_one() {
        let hub = WatchHub::new(3);
        for revision in 5..=9 {
            hub.push(event("k", revision));
        }
        assert_eq!(hub.floor(), Some(7));
        let start = hub.watch_from(Some(8), 9).expect("held");
        assert_eq!(start.past.iter().map(|e| e.mod_revision).collect::<Vec<_>>(), vec![8, 9]);
        assert_eq!(
            hub.watch_from(Some(6), 9).err(),
            Some(Compacted { requested: 6, floor: Some(7) })
        );
        // The future needs no history; "now" starts after the newest revision.
        assert!(hub.watch_from(Some(10), 9).expect("future").past.is_empty());
        let now = hub.watch_from(None, 9).expect("now");
        assert!(now.past.is_empty());
        assert_eq!(now.from_revision, 10);
    }

    #[test]
    fn a_snapshot_install_ends_watches_and_refuses_revisions_it_skipped() {
        let hub = WatchHub::new(10);
        hub.push(event("a", 3));
        let mut live = hub.watch_from(Some(3), 3).expect("held").live;
        // The store jumps from revision 3 to 9: changes 4..=9 were never made here.
        hub.skipped_to(9);
        assert!(matches!(live.try_recv(), Ok(HubMessage::Gap)), "live watches end");
        assert_eq!(
            hub.watch_from(Some(4), 9).err(),
            Some(Compacted { requested: 4, floor: Some(10) })
        );
        assert!(hub.watch_from(Some(9), 9).is_err());
        hub.push(event("b", 10));
        assert_eq!(hub.watch_from(Some(10), 10).expect("held").past.len(), 1);
        assert_eq!(hub.watch_from(None, 10).expect("now").from_revision, 11);
    }

    #[test]
    fn a_gap_restarts_the_history_after_the_next_revision() {
        let hub = WatchHub::new(10);
        hub.push(event("a", 1));
        let mut live = hub.watch_from(Some(1), 1).expect("held").live;
        hub.gap();
        assert!(matches!(live.try_recv(), Ok(HubMessage::Gap)));
        hub.push(event("b", 4));
        hub.push(event("c", 5));
        assert_eq!(hub.floor(), Some(5));
        assert!(hub.watch_from(Some(4), 5).is_err());
        assert_eq!(hub.watch_from(Some(5), 5).expect("held").past.len(), 1);
    }
}
