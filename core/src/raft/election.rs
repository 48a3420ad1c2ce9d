//! Leader election (Raft §5.2), PreVote (§9.6), CheckQuorum and leader stickiness (§6.2, §9.6),
//! role transitions and term handling.

use std::collections::BTreeMap;

use super::message::{Message, MessageBody};
use super::node::Raft;
use super::progress::Progress;
use super::quorum::{self, VoteOutcome};
use super::ready::Role;
use super::types::{Entry, EntryPayload, LogIndex, NodeId, Term};

impl Raft {
    /// Follower / candidate tick: start an election when the randomized timeout expires.
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        // A sole voter has nobody to wait for: no other node can lead, so an election timeout
        // would only keep the cluster unavailable for its length.
        let timed_out =
            self.election_elapsed >= self.randomized_election_timeout || self.is_single_voter();
        if timed_out && self.is_promotable() {
            self.start_campaign(self.config.pre_vote, false);
        }
    }

    /// Leader tick: heartbeats, CheckQuorum, leadership-transfer timeout.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.transfer_target.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_timeout_ticks {
                // The target did not take over within an election timeout: keep leading.
                self.transfer_target = None;
            }
        }
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.counters.check_quorum_step_downs += 1;
                let term = self.term;
                self.become_follower(term, NodeId::NONE);
                return;
            }
            for (id, progress) in self.progress.iter_mut() {
                progress.recently_active = *id == self.id;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let config = self.log.config();
        quorum::is_quorum(config, |id| {
            id == self.id || self.progress.get(&id).is_some_and(|p| p.recently_active)
        })
    }

    /// Starts a pre-vote round, or a real election. `transfer` marks an election ordered by
    /// the previous leader, which followers honour even inside their leader lease.
    pub(super) fn start_campaign(&mut self, pre_vote: bool, transfer: bool) {
        self.votes = BTreeMap::new();
        let campaign_term = if pre_vote {
            // A pre-candidate changes neither its term nor its vote: it only asks.
            self.role = Role::PreCandidate;
            self.leader = NodeId::NONE;
            self.reset_election_timer();
            self.counters.pre_votes_started += 1;
            self.votes.insert(self.id, true);
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        let config = self.log.config();
        let voters: Vec<NodeId> = config
            .members()
            .into_iter()
            .filter(|id| *id != self.id && config.is_voter(*id))
            .collect();
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        // Campaigning outside its newest configuration (`is_promotable`'s second case): say
        // which entry removed it, so that voters holding that entry refuse.
        let removed_by = if config.is_voter(self.id) {
            None
        } else {
            let index = self.log.config_index();
            self.log.term(index).map(|term| (index, term))
        };
        for voter in voters {
            self.send_with_term(
                voter,
                campaign_term,
                MessageBody::VoteRequest {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    transfer,
                    removed_by,
                },
            );
        }
        if pre_vote {
            self.check_votes();
        }
    }

    fn become_candidate(&mut self) {
        self.fail_pending_reads();
        self.role = Role::Candidate;
        self.term += 1;
        self.vote = self.id;
        self.leader = NodeId::NONE;
        self.reset_election_timer();
        self.counters.elections_started += 1;
        // The vote for itself counts only once term and vote are durable: a candidate that
        // crashed and forgot it would be free to vote again in the same term.
        let own_vote = MessageBody::VoteResponse { pre_vote: false, granted: true };
        let id = self.id;
        self.send_after_persist(id, own_vote);
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: NodeId) {
        if self.role == Role::Leader || term != self.term {
            self.fail_pending_reads();
        }
        if term > self.term {
            self.term = term;
            self.vote = NodeId::NONE;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.transfer_target = None;
        self.lease_expires_tick = 0;
        self.leader_noop_index = 0;
        self.replication_pending.clear();
        self.reset_election_timer();
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        assert_eq!(self.vote, self.id, "a leader voted for itself in its term");
        self.role = Role::Leader;
        self.leader = self.id;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.uncommitted_bytes = 0;
        self.transfer_target = None;
        self.lease_expires_tick = 0;
        self.lease_forfeited = false;
        self.told_to_campaign.clear();
        self.counters.leader_terms += 1;
        self.progress.clear();
        let next = self.log.last_index() + 1;
        for member in self.log.config().members() {
            let mut progress = Progress::new(
                next,
                self.config.max_inflight_messages,
                self.config.max_inflight_bytes,
            );
            // Followers count as active at the start of the term, so CheckQuorum measures
            // a full election timeout before judging them.
            progress.recently_active = true;
            self.progress.insert(member, progress);
            self.replication_pending.insert(member);
        }
        self.progress.entry(self.id).or_insert_with(|| {
            Progress::new(next, self.config.max_inflight_messages, self.config.max_inflight_bytes)
        });
        self.replication_pending.remove(&self.id);
        if let Some(own) = self.progress.get_mut(&self.id) {
            own.matched = self.log.persisted();
            own.recently_active = true;
        }
        // The no-op (§5.4.2, §6.4): entries of earlier terms commit only once an entry of this
        // term does, and reads wait for it so the commit index is at least every earlier
        // leader's.
        let noop = Entry { term: self.term, index: next, payload: EntryPayload::Noop };
        self.leader_noop_index = noop.index;
        self.append_as_leader(noop);
    }

    /// Decides what a message from a higher term does to us. Returns false if it is to be
    /// ignored entirely.
    pub(super) fn accept_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::VoteRequest { pre_vote, transfer, .. } => {
                // Deliberately no test of whether the candidate is a voter of *our* newest
                // configuration: ours may be stale (we may not have received the entry that
                // promoted it), and refusing it can leave the cluster without any electable
                // node. A removed node is kept out by PreVote (if its log lacks the entry that
                // removed it, the members' logs are ahead of its own, so it never wins a
                // pre-vote), by `removed_by` (if its log holds that entry, the members that
                // hold it too refuse: see `handle_vote_request`) and by the stickiness below.
                //
                // Leader stickiness: a follower that heard from a live leader within the
                // minimum election timeout ignores vote requests — a node returning from a
                // partition cannot disrupt the cluster, and lease reads stay safe.
                //
                // With leases, a node that restarted less than an election timeout ago
                // counts as having heard from a leader: it may have acknowledged a heartbeat
                // just before it crashed, and that acknowledgement may be what a leader's
                // lease rests on. Granting at once would let a rival win inside that lease.
                // (A node that started in term 0 never acknowledged anyone.)
                let heard_from_leader = !self.leader.is_none()
                    && self.election_elapsed < self.config.election_timeout_ticks;
                let just_restarted = !self
                    .planted(super::planted::PlantedBug::RestartedNodeVotesAtOnce)
                    && self.config.lease_read.is_some()
                    && self.started_in_term > 0
                    && self.tick_count < u64::from(self.config.election_timeout_ticks);
                let in_lease = self.config.check_quorum && (heard_from_leader || just_restarted);
                if in_lease && !transfer {
                    return false;
                }
                if !pre_vote {
                    self.become_follower(message.term, NodeId::NONE);
                }
                true
            }
            // A granted pre-vote echoes the term we would campaign in; it is not a newer term.
            MessageBody::VoteResponse { pre_vote: true, granted: true } => true,
            MessageBody::AppendRequest { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow => {
                self.become_follower(message.term, message.from);
                true
            }
            _ => {
                self.become_follower(message.term, NodeId::NONE);
                true
            }
        }
    }

    /// A message from an older term. Most are ignored; a stale leader and a stale pre-candidate
    /// are told the current term, so a node coming back from a partition learns it quickly.
    pub(super) fn handle_stale_term(&mut self, message: Message) {
        match message.body {
            MessageBody::AppendRequest { .. } | MessageBody::Heartbeat { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                self.send(
                    message.from,
                    MessageBody::AppendResponse {
                        success: false,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                    },
                );
            }
            MessageBody::VoteRequest { pre_vote: true, .. } => {
                self.send(
                    message.from,
                    MessageBody::VoteResponse { pre_vote: true, granted: false },
                );
            }
            _ => self.counters.messages_dropped += 1,
        }
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        request_term: Term,
        pre_vote: bool,
        (last_log_index, last_log_term): (LogIndex, Term),
        removed_by: Option<(LogIndex, Term)>,
    ) {
        // Already voted for this candidate (a retransmission), or free to vote: no vote yet and
        // no leader known in this term. A pre-vote for a future term is always "free".
        let can_vote = self.vote == from
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && request_term > self.term)
            || (!pre_vote && self.planted(super::planted::PlantedBug::DoubleVote));
        // Whether `from` is a voter is the candidate's business (it counts votes against its
        // own configuration): ours may not yet hold the entry that made it one.
        //
        // One exception: a candidate campaigning although its newest configuration removed it
        // (it does not know that the removal committed; `is_promotable`) is refused by a voter
        // holding that same entry. By log matching our configuration at that index is the one
        // that removed it, so the change needs no help from the candidate: among the voters
        // that would have elected it, the most up-to-date holder of the entry is a voter of
        // that configuration and would be granted by all of them. Only a voter lacking the
        // entry — the case `is_promotable` lets a removed node campaign for — still grants it.
        let knows_removal = removed_by.is_some_and(|(index, term)| self.log.matches(index, term));
        let grant =
            can_vote && !knows_removal && self.log.is_up_to_date(last_log_index, last_log_term);
        if pre_vote {
            let term = if grant { request_term } else { self.term };
            self.send_with_term(
                from,
                term,
                MessageBody::VoteResponse { pre_vote: true, granted: grant },
            );
            return;
        }
        if grant {
            self.vote = from;
            self.reset_election_timer();
            // §5.2 / persistence contract: the grant leaves only once the vote is durable.
            let grant = MessageBody::VoteResponse { pre_vote: false, granted: true };
            if self.planted(super::planted::PlantedBug::VoteBeforeSync) {
                self.send(from, grant);
            } else {
                self.send_after_persist(from, grant);
            }
        } else {
            self.send(from, MessageBody::VoteResponse { pre_vote: false, granted: false });
        }
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool) {
        let expected_role = if pre_vote { Role::PreCandidate } else { Role::Candidate };
        if self.role != expected_role || !self.log.config().is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.check_votes();
    }

    fn check_votes(&mut self) {
        let outcome = quorum::tally(self.log.config(), |id| self.votes.get(&id).copied());
        match (outcome, self.role) {
            (VoteOutcome::Won, Role::PreCandidate) => self.start_campaign(false, false),
            (VoteOutcome::Won, Role::Candidate) => self.become_leader(),
            (VoteOutcome::Lost, Role::PreCandidate | Role::Candidate) => {
                let term = self.term;
                self.become_follower(term, NodeId::NONE);
            }
            _ => {}
        }
    }
}
