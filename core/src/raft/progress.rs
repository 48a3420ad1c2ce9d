//! What the leader knows about each member's log (Raft's `nextIndex[]`/`matchIndex[]`, plus
//! the replication mode).

use super::inflights::Inflights;
use super::types::LogIndex;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMode {
    /// The leader does not know where the logs agree: one message at a time, waiting for its
    /// answer (or the next heartbeat) before sending another.
    Probe,
    /// The logs agree up to `matched`: entries are streamed optimistically within the window.
    Replicate,
    /// The follower needs entries the leader has compacted; a snapshot is being sent.
    Snapshot { snapshot_index: LogIndex },
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log (and to be durable on that node).
    pub matched: LogIndex,
    /// Next index to send.
    pub next: LogIndex,
    pub mode: ReplicationMode,
    /// In `Probe`, set after sending until a response or the next heartbeat.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub recently_active: bool,
    /// The leader's tick when this node last answered (for "is a quorum reachable now?");
    /// `None` until it answers this leader.
    pub last_active_tick: Option<u64>,
    /// The latest ReadIndex round this node acknowledged.
    pub acked_read_round: u64,
    /// The highest commit index sent to this node, so the leader knows whom to tell when the
    /// commit index advances.
    pub commit_sent: LogIndex,
    /// Heartbeat answers received in a row while entries were in flight and `matched` did not
    /// move: the node is reachable but the entries were lost on the way.
    pub stalled_heartbeats: u32,
}

impl Progress {
    pub fn new(next: LogIndex, max_inflight_messages: usize, max_inflight_bytes: u64) -> Self {
        Progress {
            matched: 0,
            next,
            mode: ReplicationMode::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight_messages, max_inflight_bytes),
            recently_active: false,
            last_active_tick: None,
            acked_read_round: 0,
            commit_sent: 0,
            stalled_heartbeats: 0,
        }
    }

    /// Records an acknowledgement of everything up to `index`. Returns whether it told us
    /// something new.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
            self.stalled_heartbeats = 0;
        }
        self.next = self.next.max(index + 1);
        self.inflights.free_to(index);
        updated
    }

    pub fn become_probe(&mut self) {
        // After a snapshot the follower holds at least the snapshot; start just past it.
        if let ReplicationMode::Snapshot { snapshot_index } = self.mode {
            self.next = (self.matched + 1).max(snapshot_index + 1);
        } else {
            self.next = self.matched + 1;
        }
        self.mode = ReplicationMode::Probe;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_replicate(&mut self) {
        self.mode = ReplicationMode::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_snapshot(&mut self, snapshot_index: LogIndex) {
        self.mode = ReplicationMode::Snapshot { snapshot_index };
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// A heartbeat answer arrived. In `Replicate`, if entries stay unacknowledged across two
    /// answers the messages carrying them were lost (the network may drop anything): fall back
    /// to probing, which resends from `matched + 1`. Returns whether that happened.
    pub fn heartbeat_answered(&mut self, last_index: LogIndex) -> bool {
        const STALLED_ANSWERS_BEFORE_RESEND: u32 = 2;
        if self.mode != ReplicationMode::Replicate
            || self.inflights.count() == 0
            || self.matched >= last_index
        {
            self.stalled_heartbeats = 0;
            return false;
        }
        self.stalled_heartbeats += 1;
        if self.stalled_heartbeats < STALLED_ANSWERS_BEFORE_RESEND {
            return false;
        }
        self.stalled_heartbeats = 0;
        self.become_probe();
        true
    }

    /// Whether the leader should hold back further AppendEntries to this node.
    pub fn is_paused(&self) -> bool {
        match self.mode {
            ReplicationMode::Probe => self.probe_sent,
            ReplicationMode::Replicate => self.inflights.is_full(),
            ReplicationMode::Snapshot { .. } => true,
        }
    }

    /// Handles a rejection of the AppendEntries whose `prev_log_index` was `rejected`, with
    /// the next index to try computed from the follower's hint (`hint_index`, at most the
    /// follower's last index). Returns false for a stale rejection (of a message older than
    /// what we already know matches).
    pub fn reject(&mut self, rejected: LogIndex, hint_index: LogIndex, retry_at: LogIndex) -> bool {
        if rejected <= self.matched {
            // Everything at or below `matched` was acknowledged, so a rejection there is
            // normally stale. Unless the follower's log now ends below `matched`: then it lost
            // entries it had acknowledged (a disk that dropped synced writes, a restore), and
            // waiting for it to confirm `matched` again would wait forever. Start over from
            // what it holds. (If the rejection was only stale after all, this costs a probe.)
            if hint_index >= self.matched {
                return false;
            }
            self.matched = hint_index;
            self.become_probe();
            self.next = retry_at.clamp(1, hint_index + 1);
            return true;
        }
        match self.mode {
            ReplicationMode::Replicate => {
                self.become_probe();
                self.next = retry_at.max(self.matched + 1);
                true
            }
            _ => {
                // In probe mode only the latest probe matters: `next - 1` is what we sent.
                if self.next == 0 || self.next - 1 != rejected {
                    return false;
                }
                self.next = retry_at.max(self.matched + 1).min(self.next.saturating_sub(1).max(1));
                self.probe_sent = false;
                true
            }
        }
    }
}
