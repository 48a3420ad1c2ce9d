//! Quiescence: a group with nothing to do stops ticking (no heartbeats, no election timer), so
//! that a node can host thousands of idle groups at no cost (CockroachDB's "quiesced ranges").
//! The decision and the waking up belong to the host that drives many groups
//! (`shard/group_host.rs`); this file is what the core must offer it.
//!
//! - A leader may quiesce once its group is idle: everything is committed, durable and
//!   applied, every live member holds the whole log and has been told the commit index, no read
//!   or transfer is pending, and the live voters are a quorum. It then sends one last heartbeat
//!   (which the host marks as "quiesce") and stops ticking.
//! - A quiescent leader holds **no lease**: its clock (the tick count) stands still while real
//!   time passes, so a lease counted in ticks would never expire. It gives the lease up when
//!   it quiesces, and answers that arrive while it is quiescent do not renew it. Its first
//!   read after waking goes through a heartbeat round, which renews the lease.
//! - On waking, the ticks the group missed are added to its tick count (leases, and the
//!   "recently active" windows of membership changes, are measured in ticks), without running
//!   them: a follower's election timer does not jump forward, so waking never starts an
//!   election by itself.

use super::message::{Message, MessageBody};
use super::node::Raft;
use super::ready::Role;
use super::types::NodeId;

impl Raft {
    /// Whether this leader's group is idle enough to quiesce (see the module docs). `is_live`
    /// says which members the host currently hears from.
    pub fn can_quiesce(&self, is_live: impl Fn(NodeId) -> bool) -> bool {
        let last_index = self.log.last_index();
        let committed = self.log.committed();
        if self.role != Role::Leader
            || self.transfer_target.is_some()
            || !self.leader_has_committed_in_term()
            || committed != last_index
            || self.log.persisted() != last_index
            || self.log.applied() != committed
            || !self.reads.is_empty()
            || !self.messages.is_empty()
            || !self.snapshot_requests.is_empty()
            || self.log.config().is_joint()
        {
            return false;
        }
        let followers_caught_up = self.progress.iter().all(|(id, progress)| {
            *id == self.id
                || !is_live(*id)
                || (progress.matched == last_index && progress.commit_sent >= committed)
        });
        let config = self.log.config();
        let live_voters =
            config.voters.iter().filter(|id| **id == self.id || is_live(**id)).count();
        followers_caught_up && live_voters > config.voters.len() / 2
    }

    /// Quiesces this idle leader: gives up its lease and returns the last heartbeat for each
    /// follower, which the host sends marked "quiesce".
    pub fn quiesce(&mut self) -> Vec<Message> {
        assert_eq!(self.role, Role::Leader, "only a leader decides to quiesce");
        self.lease_expires_tick = 0;
        self.quiescent = true;
        self.progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(to, progress)| {
                let (commit, commit_term) = self.heartbeat_commit(progress.matched);
                Message {
                    from: self.id,
                    to: *to,
                    term: self.term,
                    // Round 0 confirms no read: a quiescent leader serves none without waking.
                    body: MessageBody::Heartbeat { commit, commit_term, read_round: 0 },
                }
            })
            .collect()
    }

    /// Whether this follower may quiesce after its leader `leader` said so: it follows that
    /// leader and holds exactly the committed log (anything more would need the leader awake
    /// to settle). It then stops ticking; it holds no lease in any case.
    pub fn can_quiesce_as_follower(&self, leader: NodeId) -> bool {
        self.role == Role::Follower
            && self.leader == leader
            && self.log.last_index() == self.log.committed()
    }

    /// The group wakes after `missed_ticks` ticks of quiescence: its tick count catches up
    /// (see the module docs), nothing else moves.
    pub fn resume_after(&mut self, missed_ticks: u64) {
        self.tick_count += missed_ticks;
        self.quiescent = false;
    }
}
