//! Membership changes, one server at a time (Raft dissertation §4.1), with learners.
//!
//! A configuration takes effect as soon as it is appended. Changing one voter at a time keeps
//! every majority of the old configuration overlapping every majority of the new one, so two
//! disjoint majorities can never exist. Three extra rules close the known gaps:
//! - a second change waits until the first is committed;
//! - a new leader changes nothing before an entry of its own term is committed (otherwise a
//!   change from an earlier, uncommitted configuration can be lost and produce two leaders —
//!   the flaw in the original single-server algorithm, fixed by exactly this rule);
//! - a change that would leave the new voters without a reachable quorum is refused, and a
//!   learner is promoted only once it has caught up, so a promotion cannot stall commits.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::node::{ProposeError, Raft};
use super::ready::Role;
use super::types::{ClusterConfig, EntryPayload, LogIndex, NodeId, Term};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// A non-voting member that receives the log (and snapshots) to catch up.
    AddLearner { id: NodeId, address: String },
    /// A caught-up learner becomes a voter.
    Promote { id: NodeId },
    /// Any member leaves, the leader included (it steps down once the change commits).
    Remove { id: NodeId },
    /// A member's address changes (the node publishes where it serves clients, or moved):
    /// the voters stay the same, so no quorum can be lost, but it is still one change at a
    /// time, so that every configuration in the log differs from the previous by one step.
    SetAddress { id: NodeId, address: String },
}

#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipError {
    #[error("not the leader (leader: {leader})")]
    NotLeader { leader: NodeId },
    #[error("a configuration change is still in progress (index {index} is not committed yet)")]
    ChangeInProgress { index: LogIndex },
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    LeaderNotReady,
    #[error("{id} is already a member")]
    AlreadyMember { id: NodeId },
    #[error("{id} is not a learner")]
    NotALearner { id: NodeId },
    #[error("{id} is not a member")]
    NotAMember { id: NodeId },
    #[error("learner {id} is {lag} entries behind (promotion needs at most {max_lag})")]
    LearnerBehind { id: NodeId, lag: u64, max_lag: u64 },
    #[error("the change would leave {reachable} reachable voters of {voters}, fewer than a quorum")]
    WouldLoseQuorum { reachable: usize, voters: usize },
    #[error("cannot remove the last voter")]
    LastVoter,
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error(
        "{id} was told to campaign in this leader's term (a leadership transfer) and may still do \
         so; remove it once leadership has changed, or transfer leadership to another member first"
    )]
    TransferTargetMayCampaign { id: NodeId },
    #[error("too many uncommitted entries; retry later")]
    Busy,
}

impl Raft {
    /// Proposes a membership change as leader. Returns where the new configuration sits in
    /// the log and the configuration itself. `max_learner_lag` bounds how far behind the
    /// leader's log a learner may be when promoted.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
        max_learner_lag: u64,
    ) -> Result<(LogIndex, Term, ClusterConfig), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader { leader: self.leader });
        }
        if self.transfer_target.is_some() {
            return Err(MembershipError::TransferInProgress);
        }
        if self.log.config_index() > self.log.committed() {
            return Err(MembershipError::ChangeInProgress { index: self.log.config_index() });
        }
        if !self.leader_has_committed_in_term() {
            return Err(MembershipError::LeaderNotReady);
        }
        let current = self.log.config().clone();
        debug_assert!(
            !current.is_joint(),
            "single-server changes never create joint configurations"
        );
        let mut next = current.clone();
        match &change {
            MembershipChange::AddLearner { id, address } => {
                if current.contains(*id) {
                    return Err(MembershipError::AlreadyMember { id: *id });
                }
                next.learners.insert(*id);
                next.addresses.insert(*id, address.clone());
            }
            MembershipChange::Promote { id } => {
                if !current.learners.contains(id) {
                    return Err(MembershipError::NotALearner { id: *id });
                }
                let matched = self.progress.get(id).map_or(0, |p| p.matched);
                let lag = self.log.last_index().saturating_sub(matched);
                if lag > max_learner_lag {
                    return Err(MembershipError::LearnerBehind {
                        id: *id,
                        lag,
                        max_lag: max_learner_lag,
                    });
                }
                next.learners.remove(id);
                next.voters.insert(*id);
            }
            MembershipChange::Remove { id } => {
                if !current.contains(*id) {
                    return Err(MembershipError::NotAMember { id: *id });
                }
                if self.told_to_campaign.contains(id) {
                    return Err(MembershipError::TransferTargetMayCampaign { id: *id });
                }
                next.voters.remove(id);
                next.learners.remove(id);
                next.addresses.remove(id);
                if next.voters.is_empty() {
                    return Err(MembershipError::LastVoter);
                }
            }
            MembershipChange::SetAddress { id, address } => {
                if !current.contains(*id) {
                    return Err(MembershipError::NotAMember { id: *id });
                }
                next.addresses.insert(*id, address.clone());
            }
        }
        let reachable = next.voters.iter().filter(|id| self.is_reachable(**id)).count();
        if reachable < next.voters.len() / 2 + 1 {
            return Err(MembershipError::WouldLoseQuorum { reachable, voters: next.voters.len() });
        }
        // Leadership, a transfer in progress and a pending change were refused above with their
        // own errors; only the bounds on what may wait uncommitted are left to refuse it here.
        let (index, term) = self.propose(EntryPayload::Config(next.clone())).map_err(|error| {
            debug_assert!(
                matches!(error, ProposeError::Busy | ProposeError::TooLarge { .. }),
                "refused above already: {error}"
            );
            MembershipError::Busy
        })?;
        Ok((index, term, next))
    }

    /// Whether the leader heard from `id` within an election timeout (itself: always).
    fn is_reachable(&self, id: NodeId) -> bool {
        if id == self.id {
            return true;
        }
        let window = self.config.election_timeout_ticks as u64;
        self.progress
            .get(&id)
            .and_then(|p| p.last_active_tick)
            .is_some_and(|tick| self.tick_count.saturating_sub(tick) <= window)
    }
}
