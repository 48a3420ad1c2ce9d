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

    /// Handles a rejection of the AppendEntries (or heartbeat commit) at `rejected`, with the
    /// next index to try computed from the follower's hint; `hint_index` is the highest index
    /// at which the follower's log may still match ours, going by that hint. Returns false for
    /// a stale rejection (of a message older than what we already know matches).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A node known to match up to `matched`, in `mode`, with `next` to send.
    fn progress(matched: LogIndex, next: LogIndex, mode: ReplicationMode) -> Progress {
        let mut progress = Progress::new(next, 4, u64::MAX);
        progress.matched = matched;
        progress.mode = mode;
        progress
    }

    #[test]
    fn an_acknowledgement_moves_matched_and_next_only_forward() {
        let mut p = progress(5, 6, ReplicationMode::Replicate);
        p.inflights.add(8, 10);
        p.probe_sent = true;
        p.stalled_heartbeats = 1;
        assert!(p.acknowledge(8));
        assert_eq!((p.matched, p.next, p.probe_sent, p.stalled_heartbeats), (8, 9, false, 0));
        assert_eq!(p.inflights.count(), 0, "the acknowledged message left the window");
        // The same index again, or an older one, tells nothing new and moves nothing back.
        p.probe_sent = true;
        assert!(!p.acknowledge(8));
        assert!(!p.acknowledge(3));
        assert_eq!((p.matched, p.next, p.probe_sent), (8, 9, true));
        // An acknowledgement never pulls `next` back below what was already sent.
        p.next = 20;
        assert!(p.acknowledge(10));
        assert_eq!((p.matched, p.next), (10, 20));
    }

    #[test]
    fn probing_restarts_after_what_matched_or_after_the_snapshot_sent() {
        let mut p = progress(10, 30, ReplicationMode::Replicate);
        p.inflights.add(29, 10);
        p.probe_sent = true;
        p.become_probe();
        assert_eq!(
            (p.mode, p.next, p.probe_sent, p.inflights.count()),
            (ReplicationMode::Probe, 11, false, 0)
        );
        let mut p = progress(10, 30, ReplicationMode::Snapshot { snapshot_index: 50 });
        p.become_probe();
        assert_eq!(p.next, 51, "the follower holds at least the snapshot");
        let mut p = progress(60, 61, ReplicationMode::Snapshot { snapshot_index: 50 });
        p.become_probe();
        assert_eq!(p.next, 61, "it already matched past the snapshot");
    }

    #[test]
    fn replicating_streams_from_just_after_matched() {
        let mut p = progress(10, 3, ReplicationMode::Probe);
        p.probe_sent = true;
        p.inflights.add(12, 10);
        p.become_replicate();
        assert_eq!(
            (p.mode, p.next, p.probe_sent, p.inflights.count()),
            (ReplicationMode::Replicate, 11, false, 0)
        );
        p.inflights.add(12, 10);
        p.become_snapshot(40);
        assert_eq!(p.mode, ReplicationMode::Snapshot { snapshot_index: 40 });
        assert_eq!(p.inflights.count(), 0);
    }

    #[test]
    fn entries_unacknowledged_across_two_heartbeat_answers_are_resent() {
        let mut p = progress(10, 15, ReplicationMode::Replicate);
        p.inflights.add(14, 10);
        assert!(!p.heartbeat_answered(14), "one answer may have overtaken the entries");
        assert_eq!(p.stalled_heartbeats, 1);
        assert!(p.heartbeat_answered(14));
        assert_eq!((p.mode, p.next, p.stalled_heartbeats), (ReplicationMode::Probe, 11, 0));

        // Nothing in flight, nothing behind, or not replicating: nothing stalls.
        let mut idle = progress(10, 11, ReplicationMode::Replicate);
        idle.stalled_heartbeats = 1;
        assert!(!idle.heartbeat_answered(14));
        assert_eq!(idle.stalled_heartbeats, 0);
        let mut caught_up = progress(14, 15, ReplicationMode::Replicate);
        caught_up.inflights.add(14, 10);
        caught_up.stalled_heartbeats = 1;
        assert!(!caught_up.heartbeat_answered(14));
        assert_eq!(caught_up.stalled_heartbeats, 0);
        let mut probing = progress(10, 11, ReplicationMode::Probe);
        probing.inflights.add(14, 10);
        assert!(!probing.heartbeat_answered(14));
        assert!(!probing.heartbeat_answered(14));
        assert_eq!(probing.mode, ReplicationMode::Probe);
    }

    #[test]
    fn what_pauses_sending_depends_on_the_mode() {
        let mut p = progress(0, 1, ReplicationMode::Probe);
        assert!(!p.is_paused());
        p.probe_sent = true;
        assert!(p.is_paused());
        let mut p = progress(0, 1, ReplicationMode::Replicate);
        for last in 1..=4 {
            assert!(!p.is_paused());
            p.inflights.add(last, 1);
        }
        assert!(p.is_paused(), "the window is full");
        assert!(progress(0, 1, ReplicationMode::Snapshot { snapshot_index: 9 }).is_paused());
    }

    #[test]
    fn a_stale_rejection_changes_nothing() {
        let mut p = progress(10, 20, ReplicationMode::Replicate);
        assert!(!p.reject(8, 15, 9));
        assert!(!p.reject(10, 10, 9));
        assert_eq!((p.matched, p.next, p.mode), (10, 20, ReplicationMode::Replicate));
    }

    #[test]
    fn a_rejection_from_a_log_shorter_than_it_acknowledged_starts_over_from_it() {
        let mut p = progress(10, 20, ReplicationMode::Replicate);
        assert!(p.reject(9, 6, 4));
        assert_eq!((p.matched, p.next, p.mode), (6, 4, ReplicationMode::Probe));
        let mut p = progress(10, 20, ReplicationMode::Replicate);
        assert!(p.reject(9, 6, 12));
        assert_eq!(p.next, 7, "never past what the follower holds");
        let mut p = progress(10, 20, ReplicationMode::Replicate);
        assert!(p.reject(9, 0, 0));
        assert_eq!((p.matched, p.next), (0, 1));
    }

    #[test]
    fn a_rejection_while_replicating_falls_back_to_probing() {
        let mut p = progress(10, 20, ReplicationMode::Replicate);
        assert!(p.reject(15, 15, 13));
        assert_eq!((p.matched, p.next, p.mode), (10, 13, ReplicationMode::Probe));
        let mut p = progress(10, 20, ReplicationMode::Replicate);
        assert!(p.reject(15, 15, 4));
        assert_eq!(p.next, 11, "never at or below what matched");
    }

    #[test]
    fn a_probe_rejection_counts_only_for_the_latest_probe() {
        let mut p = progress(5, 20, ReplicationMode::Probe);
        p.probe_sent = true;
        assert!(!p.reject(12, 12, 8), "an older probe's answer");
        assert!(p.probe_sent);
        assert!(p.reject(19, 12, 8));
        assert_eq!((p.next, p.probe_sent), (8, false));
        // The hint can neither go at or below `matched` nor past the probe that was refused.
        let mut p = progress(5, 20, ReplicationMode::Probe);
        assert!(p.reject(19, 30, 40));
        assert_eq!(p.next, 19);
        let mut p = progress(5, 20, ReplicationMode::Probe);
        assert!(p.reject(19, 2, 2));
        assert_eq!(p.next, 6);
        let mut p = progress(0, 0, ReplicationMode::Probe);
        assert!(!p.reject(3, 0, 1), "nothing was probed");
    }
}
