//! ReadIndex (Raft §6.4): a leader serves a linearizable read at its commit index once it has
//! confirmed — after the read arrived — that it is still the leader, by hearing from a quorum.
//!
//! Confirmation rides on heartbeat *rounds*. Every heartbeat broadcast starts a numbered round;
//! a read joins the first round that starts after it arrives; a round is confirmed when a quorum
//! acknowledged it or any later round. Reads that arrive together share one round trip, and a
//! new round is started at once when a read finds none in flight, so an idle leader answers a
//! read in one round trip rather than waiting for the next heartbeat.

use std::collections::VecDeque;

use super::types::{LogIndex, NodeId};

/// One read waiting for confirmation. `from` is the node that will serve it: the leader itself
/// or a follower that forwarded the request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PendingRead {
    pub context: u64,
    pub from: NodeId,
}

#[derive(Clone, Debug, Default)]
pub struct ReadQueue {
    /// Reads that arrived before the leader committed an entry of its own term: until then
    /// its commit index may be behind what an earlier leader acknowledged (§6.4, step 1).
    waiting_for_leader_commit: VecDeque<PendingRead>,
    /// Reads that will join the next round.
    waiting_for_round: VecDeque<PendingRead>,
    /// Reads in a started round: (round, read index, read).
    in_round: VecDeque<(u64, LogIndex, PendingRead)>,
    /// The latest round started.
    pub last_round: u64,
    /// Recent rounds and the tick each started at, for lease reads; bounded.
    round_ticks: VecDeque<(u64, u64)>,
}

/// How many recent rounds keep their start tick. Older rounds are useless for a lease anyway:
/// with one round per heartbeat this covers far more than an election timeout.
const MAX_REMEMBERED_ROUNDS: usize = 1024;

impl ReadQueue {
    pub fn len(&self) -> usize {
        self.waiting_for_leader_commit.len() + self.waiting_for_round.len() + self.in_round.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn wait_for_leader_commit(&mut self, read: PendingRead) {
        self.waiting_for_leader_commit.push_back(read);
    }

    pub fn wait_for_round(&mut self, read: PendingRead) {
        self.waiting_for_round.push_back(read);
    }

    /// The leader committed an entry of its term: the held-back reads may join a round.
    pub fn leader_committed(&mut self) {
        self.waiting_for_round.extend(self.waiting_for_leader_commit.drain(..));
    }

    pub fn has_reads_waiting_for_round(&self) -> bool {
        !self.waiting_for_round.is_empty()
    }

    /// Whether a round with reads in it has not been confirmed yet.
    pub fn has_round_in_flight(&self) -> bool {
        !self.in_round.is_empty()
    }

    /// Starts round `last_round + 1` at `tick`; waiting reads join it with read index `commit`.
    pub fn start_round(&mut self, tick: u64, commit: LogIndex) -> u64 {
        self.last_round += 1;
        let round = self.last_round;
        for read in self.waiting_for_round.drain(..) {
            self.in_round.push_back((round, commit, read));
        }
        self.round_ticks.push_back((round, tick));
        if self.round_ticks.len() > MAX_REMEMBERED_ROUNDS {
            self.round_ticks.pop_front();
        }
        round
    }

    /// The tick at which `round` started, if still remembered.
    pub fn round_tick(&self, round: u64) -> Option<u64> {
        self.round_ticks.iter().rev().find(|(r, _)| *r == round).map(|(_, tick)| *tick)
    }

    /// Releases every read whose round is at or below `confirmed_round`.
    pub fn confirm(&mut self, confirmed_round: u64) -> Vec<(LogIndex, PendingRead)> {
        let mut released = Vec::new();
        while let Some(&(round, index, read)) = self.in_round.front() {
            if round > confirmed_round {
                break;
            }
            self.in_round.pop_front();
            released.push((index, read));
        }
        released
    }

    /// Leadership is lost: every pending read fails.
    pub fn drain_all(&mut self) -> Vec<PendingRead> {
        let mut failed: Vec<PendingRead> = self.waiting_for_leader_commit.drain(..).collect();
        failed.extend(self.waiting_for_round.drain(..));
        failed.extend(self.in_round.drain(..).map(|(_, _, read)| read));
        self.round_ticks.clear();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(context: u64) -> PendingRead {
        PendingRead { context, from: NodeId(1) }
    }

    #[test]
    fn a_read_is_released_only_by_a_round_that_started_after_it() {
        let mut queue = ReadQueue::default();
        queue.wait_for_round(read(1));
        let first = queue.start_round(10, 7);
        queue.wait_for_round(read(2));
        // Confirming the first round releases read 1 only: read 2 arrived after it started.
        assert_eq!(queue.confirm(first), vec![(7, read(1))]);
        let second = queue.start_round(11, 9);
        assert_eq!(queue.confirm(second), vec![(9, read(2))]);
        assert!(queue.is_empty());
    }

    #[test]
    fn reads_before_the_leaders_first_commit_are_held_back() {
        let mut queue = ReadQueue::default();
        queue.wait_for_leader_commit(read(1));
        assert!(!queue.has_reads_waiting_for_round());
        queue.leader_committed();
        assert!(queue.has_reads_waiting_for_round());
        assert_eq!(queue.drain_all(), vec![read(1)]);
    }

    #[test]
    fn every_waiting_read_counts_until_it_is_released() {
        let mut queue = ReadQueue::default();
        assert_eq!((queue.len(), queue.is_empty()), (0, true));
        queue.wait_for_leader_commit(read(1));
        queue.wait_for_round(read(2));
        let round = queue.start_round(5, 3);
        queue.wait_for_round(read(3));
        // One read held back, one in a round, one waiting for the next round.
        assert_eq!((queue.len(), queue.is_empty()), (3, false));
        assert!(queue.has_round_in_flight());
        assert_eq!(queue.confirm(round), vec![(3, read(2))]);
        assert!(!queue.has_round_in_flight());
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn a_confirmed_round_releases_it_and_every_earlier_round_in_order() {
        let mut queue = ReadQueue::default();
        let mut rounds = Vec::new();
        for context in 1..=3 {
            queue.wait_for_round(read(context));
            rounds.push(queue.start_round(context, 10 * context));
        }
        assert_eq!(rounds, vec![1, 2, 3]);
        // Nothing is released by a round older than every read.
        assert_eq!(queue.confirm(0), vec![]);
        assert_eq!(queue.confirm(2), vec![(10, read(1)), (20, read(2))]);
        // Confirming a round again releases nothing more.
        assert_eq!(queue.confirm(2), vec![]);
        assert_eq!(queue.confirm(3), vec![(30, read(3))]);
    }

    #[test]
    fn the_start_tick_of_each_recent_round_is_remembered() {
        let mut queue = ReadQueue::default();
        let rounds = MAX_REMEMBERED_ROUNDS as u64 + 6;
        for round in 1..=rounds {
            assert_eq!(queue.start_round(round * 10, 0), round);
        }
        // Exactly the newest MAX_REMEMBERED_ROUNDS rounds, each with its own tick.
        assert_eq!(queue.round_tick(rounds), Some(rounds * 10));
        assert_eq!(queue.round_tick(rounds - 1), Some((rounds - 1) * 10));
        assert_eq!(queue.round_tick(7), Some(70));
        assert_eq!(queue.round_tick(6), None);
        assert_eq!(queue.round_tick(rounds + 1), None);
        queue.drain_all();
        assert_eq!(queue.round_tick(rounds), None, "a deposed leader keeps no lease rounds");
    }
}
