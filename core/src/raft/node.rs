//! The Raft state machine of one node: its state, its six inputs and its one output.
//!
//! Inputs: [`Raft::tick`], [`Raft::step`], [`Raft::propose`], [`Raft::read_index`],
//! [`Raft::persisted`], [`Raft::applied`] (plus a few operator hooks). Output: [`Raft::ready`].
//! The core never blocks, never reads a clock and never does I/O; its only randomness is the
//! election jitter, drawn from a ChaCha generator seeded by the caller.
//!
//! Elections live in `election.rs`, log replication and commitment in `replication.rs`, reads
//! in `read_index.rs` / below; this file holds the state, the dispatch and the output batch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use super::config::RaftConfig;
use super::log::RaftLog;
use super::message::{Message, MessageBody};
use super::progress::Progress;
use super::read_index::{PendingRead, ReadQueue};
use super::ready::{PersistBatch, ReadState, Ready, Role, SnapshotRequest, SoftState};
use super::types::{
    ClusterConfig, Entry, EntryPayload, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term,
};

/// Durable state a node starts from (what the storage engine recovered).
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    pub hard_state: HardState,
    /// The snapshot's metadata; `SnapshotMeta::default()` when there is none. For a brand-new
    /// cluster this carries the initial configuration at index 0.
    pub snapshot: SnapshotMeta,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl RestoredState {
    /// The state of a node in a brand-new cluster whose initial members are `voters`.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>) -> Self {
        RestoredState {
            snapshot: SnapshotMeta {
                config: ClusterConfig::with_voters(voters),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader})")]
    NotLeader { leader: NodeId },
    #[error("too many uncommitted proposals; retry later")]
    Busy,
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error("proposal of {size_bytes} bytes exceeds the message limit of {limit_bytes} bytes")]
    TooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error("a configuration change is already in progress (at index {index})")]
    ConfigChangeInProgress { index: LogIndex },
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("no known leader")]
    NoLeader,
    #[error("too many pending reads; retry later")]
    Busy,
}

/// Counters the simulator and the metrics endpoint read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftCounters {
    pub elections_started: u64,
    pub pre_votes_started: u64,
    pub leader_terms: u64,
    pub messages_dropped: u64,
    pub proposals_rejected_busy: u64,
    pub check_quorum_step_downs: u64,
    /// Heartbeats whose commit index this follower did not advance to, because its log does
    /// not hold the leader's entry there (see `MessageBody::Heartbeat`).
    pub unverified_commits_refused: u64,
}

/// A summary for status pages and invariant checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: NodeId,
    pub leader: NodeId,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub persisted: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub last_term: Term,
    pub config: ClusterConfig,
    /// Leader only: (member, matched index).
    pub matched: Vec<(NodeId, LogIndex)>,
}

/// A message that may leave only once the batch with id `after_batch` is durable: a granted
/// vote, an acknowledged append, a candidate's vote for itself. It is dropped if the term moved
/// on meanwhile — an answer from an older term is useless and could be misread.
#[derive(Debug)]
struct DeferredMessage {
    after_batch: u64,
    term: Term,
    message: Message,
}

pub struct Raft {
    pub(super) id: NodeId,
    pub(super) config: RaftConfig,
    pub(super) term: Term,
    pub(super) vote: NodeId,
    pub(super) role: Role,
    pub(super) leader: NodeId,
    pub(super) log: RaftLog,
    pub(super) rng: ChaCha8Rng,

    /// Ticks since the last election timer reset (followers, candidates) or since the last
    /// CheckQuorum round (leaders).
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    pub(super) randomized_election_timeout: u32,
    /// Ticks since the node started; the time base for leases.
    pub(super) tick_count: u64,
    /// The term this node restarted in: past 0, it may have acknowledged a leader just
    /// before it went down (see `accept_higher_term`).
    pub(super) started_in_term: Term,

    /// Votes received in the current (pre-)campaign.
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Leader only: per member, including itself.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Leader only: bytes of entries proposed in this term and not yet committed.
    pub(super) uncommitted_bytes: u64,
    /// Leader only: the index of its no-op; it may serve reads once this is committed.
    pub(super) leader_noop_index: LogIndex,
    pub(super) reads: ReadQueue,
    /// Leader only: the target of a leadership transfer in progress, and ticks since it began.
    pub(super) transfer_target: Option<NodeId>,
    pub(super) transfer_elapsed: u32,
    /// Leader only: the tick until which a lease read may be answered locally.
    pub(super) lease_expires_tick: u64,
    /// The host stopped ticking this group (`quiescence.rs`): no lease is valid meanwhile.
    pub(super) quiescent: bool,
    /// Leader only: it sent TimeoutNow in this term, so another leader may appear at any time
    /// (even after the transfer is given up): no lease until the term ends.
    pub(super) lease_forfeited: bool,
    /// Leader only: the members it sent TimeoutNow in this term. Such a message may still be on
    /// its way when the transfer is given up, and its target campaigns whenever it arrives:
    /// removed meanwhile, it would start a term the remaining members adopt. So none of them is
    /// removed until the term ends (`membership.rs`).
    pub(super) told_to_campaign: BTreeSet<NodeId>,

    // --- output being accumulated until the next `ready()` ---
    pub(super) messages: Vec<Message>,
    deferred: VecDeque<DeferredMessage>,
    /// The id the next persist batch will carry; `durable_batch` is the last reported durable.
    next_batch_id: u64,
    durable_batch: u64,
    /// The hard state last handed to storage.
    persisted_hard_state: HardState,
    /// The batch that carries the current term and vote to disk (0: they came from disk).
    term_batch: u64,
    pub(super) snapshot_to_persist: Option<Snapshot>,
    snapshot_to_apply: Option<Snapshot>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) failed_reads: Vec<u64>,
    pub(super) snapshot_requests: Vec<SnapshotRequest>,
    /// Leader: members that may have entries to send.
    pub(super) replication_pending: BTreeSet<NodeId>,
    last_soft_state: SoftState,
    pub(super) counters: RaftCounters,
}

impl Raft {
    /// A node restarted from `restored`. `rng_seed` seeds the election jitter: the simulator
    /// derives it from the run's seed, the real node from the OS.
    pub fn new(id: NodeId, config: RaftConfig, restored: RestoredState, rng_seed: u64) -> Self {
        assert!(!id.is_none(), "node id 0 is reserved");
        config.validate().expect("the engine validates the Raft configuration before start");
        #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
        let mut log =
            RaftLog::restore(&restored.snapshot, restored.entries, restored.hard_state.commit);
        #[cfg(feature = "planted-bugs")]
        log.plant_keep_conflicting_suffix(
            config.planted_bug == Some(super::planted::PlantedBug::KeepConflictingSuffix),
        );
        let hard_state = HardState { commit: log.committed(), ..restored.hard_state };
        let soft_state =
            SoftState { role: Role::Follower, term: hard_state.term, leader: NodeId::NONE };
        let mut raft = Raft {
            id,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: NodeId::NONE,
            log,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            tick_count: 0,
            started_in_term: hard_state.term,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            uncommitted_bytes: 0,
            leader_noop_index: 0,
            reads: ReadQueue::default(),
            transfer_target: None,
            transfer_elapsed: 0,
            lease_expires_tick: 0,
            quiescent: false,
            lease_forfeited: false,
            told_to_campaign: BTreeSet::new(),
            messages: Vec::new(),
            deferred: VecDeque::new(),
            next_batch_id: 1,
            durable_batch: 0,
            persisted_hard_state: hard_state,
            term_batch: 0,
            snapshot_to_persist: None,
            snapshot_to_apply: None,
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            snapshot_requests: Vec::new(),
            replication_pending: BTreeSet::new(),
            last_soft_state: soft_state,
            counters: RaftCounters::default(),
            config,
        };
        raft.reset_election_timer();
        // A sole voter campaigns at once, at every start: it alone decides the election, and
        // a node that is the whole cluster must be writable the moment it is up.
        if raft.is_single_voter() {
            raft.start_campaign(false, false);
        }
        raft
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    /// One unit of logical time passed.
    pub fn tick(&mut self) {
        self.tick_count += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Handles a message from another node. Messages not addressed to this node, from this
    /// node, or that make no sense in the current state are dropped; none can make the core
    /// panic or break an invariant.
    pub fn step(&mut self, message: Message) {
        if message.to != self.id || message.from == self.id || message.from.is_none() {
            self.counters.messages_dropped += 1;
            return;
        }
        self.step_checked(message);
    }

    /// Appends a command (or configuration) as leader. Returns where it will be in the log if
    /// it commits; whether it does is learned by watching the committed entries.
    pub fn propose(&mut self, payload: EntryPayload) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let entry = Entry { term: self.term, index: self.log.last_index() + 1, payload };
        let size_bytes = entry.size_bytes();
        if size_bytes > self.config.max_message_bytes {
            return Err(ProposeError::TooLarge {
                size_bytes,
                limit_bytes: self.config.max_message_bytes,
            });
        }
        let uncommitted_entries = self.log.last_index() - self.log.committed();
        if uncommitted_entries >= self.config.max_uncommitted_entries
            || self.uncommitted_bytes + size_bytes > self.config.max_uncommitted_bytes
        {
            self.counters.proposals_rejected_busy += 1;
            return Err(ProposeError::Busy);
        }
        if let EntryPayload::Config(new_config) = &entry.payload {
            // One change at a time: a second change may start only once the first committed,
            // otherwise two overlapping changes could produce disjoint majorities (§4.1).
            if self.log.config_index() > self.log.committed() {
                return Err(ProposeError::ConfigChangeInProgress {
                    index: self.log.config_index(),
                });
            }
            debug_assert!(!new_config.voters.is_empty());
        }
        self.uncommitted_bytes += size_bytes;
        let position = (entry.index, entry.term);
        self.append_as_leader(entry);
        Ok(position)
    }

    /// Asks for a linearizable read barrier. `context` comes back in `Ready::reads` (serve the
    /// read once the state machine has applied the returned index) or `Ready::failed_reads`.
    /// With `allow_lease`, a leader holding a valid lease (if leases are configured) answers at
    /// once instead of confirming leadership with a heartbeat round.
    pub fn read_index(&mut self, context: u64, allow_lease: bool) -> Result<(), ReadError> {
        if self.reads.len() >= self.config.max_pending_reads {
            return Err(ReadError::Busy);
        }
        match self.role {
            Role::Leader => {
                self.leader_read(PendingRead { context, from: self.id }, allow_lease);
                Ok(())
            }
            _ if !self.leader.is_none() => {
                let to = self.leader;
                self.send(to, MessageBody::ReadIndexRequest { context, lease: allow_lease });
                Ok(())
            }
            _ => Err(ReadError::NoLeader),
        }
    }

    /// Storage reports every persist batch up to `batch_id` durable.
    pub fn persisted(&mut self, batch_id: u64) {
        assert!(batch_id < self.next_batch_id, "batch {batch_id} was never handed out");
        if batch_id <= self.durable_batch {
            return;
        }
        self.durable_batch = batch_id;
        self.log.persisted_batch(batch_id);
        if self.role == Role::Leader {
            let persisted = self.log.persisted();
            if let Some(progress) = self.progress.get_mut(&self.id)
                && progress.acknowledge(persisted)
            {
                self.maybe_commit();
            }
        }
        self.release_deferred();
    }

    /// The state machine applied every committed entry up to `index`.
    pub fn applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
    }

    /// The engine saved a snapshot of the state machine covering the log up to `index`; the
    /// entries up to it may be dropped from memory.
    pub fn compact(&mut self, index: LogIndex) -> bool {
        self.log.compact(index)
    }

    /// The engine finished (or gave up) sending a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.progress.get_mut(&to)
            && matches!(progress.mode, super::progress::ReplicationMode::Snapshot { .. })
        {
            if !success {
                // Retry from the matched index; a new snapshot request follows if still needed.
                progress.matched = progress.matched.min(self.log.last_index());
            }
            progress.become_probe();
            self.replication_pending.insert(to);
        }
    }

    /// The transport could not deliver to `to`: stop streaming optimistically to it.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if self.role != Role::Leader || to == self.id {
            return;
        }
        if let Some(progress) = self.progress.get_mut(&to)
            && progress.mode == super::progress::ReplicationMode::Replicate
        {
            progress.become_probe();
        }
    }

    /// Starts handing leadership to `target` (§3.10): bring it up to date, then tell it to
    /// campaign at once. New proposals are refused until the transfer completes or times out.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if target == self.id || !self.log.config().voters.contains(&target) {
            return Ok(());
        }
        self.transfer_target = Some(target);
        self.transfer_elapsed = 0;
        // A lease is a promise that no other leader exists; we are about to create one.
        self.lease_expires_tick = 0;
        let caught_up =
            self.progress.get(&target).is_some_and(|p| p.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.replication_pending.insert(target);
        }
        Ok(())
    }

    /// Starts an election now (an operator's or test's nudge; the timer does this normally).
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.is_promotable() {
            self.start_campaign(self.config.pre_vote, false);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Output
    // ----------------------------------------------------------------------------------------

    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || self.log.has_unstable()
            || self.hard_state() != self.persisted_hard_state
            || self.snapshot_to_persist.is_some()
            || self.log.has_committed_to_apply()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
            || !self.snapshot_requests.is_empty()
            || !self.replication_pending.is_empty()
            || self.commit_needs_announcing()
            || self.soft_state() != self.last_soft_state
            || self.deferred.front().is_some_and(|d| d.after_batch <= self.durable_batch)
    }

    /// Which parts of the state make `has_ready` true (for diagnosing a Ready that never drains).
    pub fn ready_reasons(&self) -> Vec<&'static str> {
        let deferred_due =
            self.deferred.front().is_some_and(|d| d.after_batch <= self.durable_batch);
        [
            (!self.messages.is_empty(), "messages"),
            (self.log.has_unstable(), "unstable entries"),
            (self.hard_state() != self.persisted_hard_state, "hard state"),
            (self.snapshot_to_persist.is_some(), "snapshot to persist"),
            (self.log.has_committed_to_apply(), "committed entries"),
            (!self.read_states.is_empty(), "reads"),
            (!self.failed_reads.is_empty(), "failed reads"),
            (!self.snapshot_requests.is_empty(), "snapshot requests"),
            (!self.replication_pending.is_empty(), "replication pending"),
            (self.commit_needs_announcing(), "commit to announce"),
            (self.soft_state() != self.last_soft_state, "soft state"),
            (deferred_due, "deferred messages"),
        ]
        .into_iter()
        .filter_map(|(holds, reason)| holds.then_some(reason))
        .collect()
    }

    /// Collects everything the engine must do now (see [`Ready`] for the order).
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_replication();
        } else {
            self.replication_pending.clear();
        }
        let mut ready = Ready::default();

        let soft_state = self.soft_state();
        if soft_state != self.last_soft_state {
            self.last_soft_state = soft_state;
            ready.soft_state = Some(soft_state);
        }

        let hard_state = self.hard_state();
        let snapshot = self.snapshot_to_persist.take();
        let needs_batch = self.log.has_unstable()
            || hard_state != self.persisted_hard_state
            || snapshot.is_some();
        if needs_batch {
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            let entries = self.log.take_unstable(id);
            let hard_state_changed = hard_state != self.persisted_hard_state;
            let persisted = self.persisted_hard_state;
            if (hard_state.term, hard_state.vote) != (persisted.term, persisted.vote) {
                self.term_batch = id;
            }
            self.persisted_hard_state = hard_state;
            ready.persist = Some(PersistBatch {
                id,
                snapshot,
                entries,
                hard_state: hard_state_changed.then_some(hard_state),
            });
        } else {
            // Messages waiting for "the next batch" depend on nothing new: the latest batch
            // already handed out covers them.
            let last_issued = self.next_batch_id - 1;
            for deferred in self.deferred.iter_mut() {
                deferred.after_batch = deferred.after_batch.min(last_issued);
            }
            self.release_deferred();
        }

        ready.messages = std::mem::take(&mut self.messages);
        ready.snapshot_to_apply = self.snapshot_to_apply.take();
        ready.committed_entries = self.log.take_committed(self.config.max_apply_batch_bytes);
        ready.reads = std::mem::take(&mut self.read_states);
        ready.failed_reads = std::mem::take(&mut self.failed_reads);
        ready.snapshot_requests = std::mem::take(&mut self.snapshot_requests);
        self.log.check_invariants();
        ready
    }

    // ----------------------------------------------------------------------------------------
    // Queries
    // ----------------------------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    pub fn counters(&self) -> &RaftCounters {
        &self.counters
    }

    pub fn raft_config(&self) -> &RaftConfig {
        &self.config
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed() }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState { role: self.role, term: self.term, leader: self.leader }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed(),
            applied: self.log.applied(),
            persisted: self.log.persisted(),
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            config: self.log.config().clone(),
            matched: self.progress.iter().map(|(id, p)| (*id, p.matched)).collect(),
        }
    }

    /// Each member's matched index as this node's progress tracks it (a leader's view; as in
    /// [`Raft::status`], without copying anything).
    pub fn matched_indexes(&self) -> impl Iterator<Item = (NodeId, LogIndex)> + '_ {
        self.progress.iter().map(|(id, progress)| (*id, progress.matched))
    }

    /// Leader: some caught-up follower has not been told the current commit index.
    fn commit_needs_announcing(&self) -> bool {
        let committed = self.log.committed();
        self.role == Role::Leader
            && self.progress.iter().any(|(id, p)| {
                *id != self.id
                    && p.mode == super::progress::ReplicationMode::Replicate
                    && !p.is_paused()
                    && p.commit_sent < committed.min(p.matched)
            })
    }

    /// Whether a leadership transfer is in progress (leader only).
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer_target
    }

    // ----------------------------------------------------------------------------------------
    // Internals shared by the other files
    // ----------------------------------------------------------------------------------------

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message { from: self.id, to, term: self.term, body });
    }

    /// Tells `to` to campaign at once. From here on `to` may win this term's successor
    /// election whenever the message arrives, so this leader gives up its lease for good.
    pub(super) fn send_timeout_now(&mut self, to: NodeId) {
        self.lease_expires_tick = 0;
        self.lease_forfeited = !self.planted(super::planted::PlantedBug::LeaseSurvivesTimeoutNow);
        self.told_to_campaign.insert(to);
        self.send(to, MessageBody::TimeoutNow);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.messages.push(Message { from: self.id, to, term, body });
    }

    /// Whether this node's term and vote are on its disk. Until they are, nothing it says in
    /// this term may promise anything: a node that crashes before they reach the disk comes
    /// back in an older term, with no memory of what it promised.
    pub(super) fn term_is_durable(&self) -> bool {
        let persisted = &self.persisted_hard_state;
        (persisted.term, persisted.vote) == (self.term, self.vote)
            && self.term_batch <= self.durable_batch
    }

    /// Queues a message that may leave only once everything this node holds now is durable.
    pub(super) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.id, to, term: self.term, body };
        self.deferred.push_back(DeferredMessage {
            after_batch: self.next_batch_id,
            term: self.term,
            message,
        });
    }

    fn release_deferred(&mut self) {
        while let Some(front) = self.deferred.front() {
            if front.after_batch > self.durable_batch {
                break;
            }
            let Some(deferred) = self.deferred.pop_front() else { break };
            if deferred.term != self.term {
                continue;
            }
            if deferred.message.to == self.id {
                // A candidate's own vote, now durable: count it like any other.
                self.step_checked(deferred.message);
            } else {
                self.messages.push(deferred.message);
            }
        }
    }

    /// `step` after the addressing checks (also used for the node's own deferred vote).
    fn step_checked(&mut self, message: Message) {
        if message.term > self.term {
            if !self.accept_higher_term(&message) {
                return;
            }
        } else if message.term < self.term {
            self.handle_stale_term(message);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
                removed_by,
                ..
            } => self.handle_vote_request(
                from,
                message.term,
                pre_vote,
                (last_log_index, last_log_term),
                removed_by,
            ),
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(from, pre_vote, granted)
            }
            MessageBody::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => self.handle_append_request(
                from,
                prev_log_index,
                prev_log_term,
                &entries,
                leader_commit,
            ),
            MessageBody::AppendResponse { success, index, hint_index, hint_term } => {
                self.handle_append_response(from, success, index, hint_index, hint_term)
            }
            MessageBody::Heartbeat { commit, commit_term, read_round } => {
                self.handle_heartbeat(from, (commit, commit_term), read_round)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round)
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.handle_install_snapshot(from, snapshot)
            }
            MessageBody::ReadIndexRequest { context, lease } => {
                self.handle_read_index_request(from, context, lease)
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.handle_read_index_response(from, context, index)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
        }
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_timeout_ticks;
        self.randomized_election_timeout = base + self.rng.random_range(0..base);
    }

    /// Whether this node may campaign: a voter of the configuration in force, or of the last
    /// committed one. The second case matters when the only copy of an uncommitted change
    /// removing this node is its own log: it must still be able to win (votes counted under its
    /// latest configuration, as always), commit the change and step down — otherwise the
    /// others, whose logs are shorter, can never get its vote and the cluster is stuck.
    ///
    /// The commit index is not durable, and a removed node may not have heard that its removal
    /// committed (a leader that committed its own removal and crashed before its commit index
    /// reached the disk restarts below it). So "committed" here is only what this node knows,
    /// and the second case can let a node whose removal *has* committed campaign. Its vote
    /// requests therefore carry where the configuration that removed it sits in its log
    /// (`removed_by`), and a voter that holds that same entry refuses them (see
    /// `handle_vote_request`): such a voter can finish the change itself.
    pub(super) fn is_promotable(&self) -> bool {
        self.log.config().is_voter(self.id)
            || self.log.config_at(self.log.committed()).is_voter(self.id)
    }

    // ----------------------------------------------------------------------------------------
    // Reads
    // ----------------------------------------------------------------------------------------

    /// A read arriving at the leader, its own or forwarded by a follower.
    fn leader_read(&mut self, read: PendingRead, allow_lease: bool) {
        if self.planted(super::planted::PlantedBug::StaleLeaderRead) {
            let index = self.log.committed();
            self.release_read(index, read);
            return;
        }
        if !self.leader_has_committed_in_term() {
            self.reads.wait_for_leader_commit(read);
            return;
        }
        if allow_lease && self.lease_is_valid() {
            let index = self.log.committed();
            self.release_read(index, read);
            return;
        }
        self.reads.wait_for_round(read);
        if self.is_single_voter() {
            let round = self.reads.start_round(self.tick_count, self.log.committed());
            self.confirm_reads(round);
        } else if !self.reads.has_round_in_flight() {
            self.broadcast_heartbeat();
        }
    }

    pub(super) fn leader_has_committed_in_term(&self) -> bool {
        self.leader_noop_index != 0 && self.log.committed() >= self.leader_noop_index
    }

    /// While this leader may answer reads from its lease: the tick at which the heartbeat round
    /// the lease rests on was sent. The lease lasts `RaftConfig::lease_ticks` from there.
    /// `None` without a valid lease, during a transfer, or before the leader committed an entry
    /// of its term (until then its state machine may lack writes acknowledged by its predecessor).
    pub fn lease_start_tick(&self) -> Option<u64> {
        if self.role != Role::Leader
            || !self.lease_is_valid()
            || !self.leader_has_committed_in_term()
        {
            return None;
        }
        let lease_ticks = self.config.lease_ticks()?;
        Some(self.lease_expires_tick.saturating_sub(lease_ticks))
    }

    /// Ticks since the node started.
    pub fn tick_count(&self) -> u64 {
        self.tick_count
    }

    fn lease_is_valid(&self) -> bool {
        self.config.lease_read.is_some()
            && self.transfer_target.is_none()
            && !self.quiescent
            && !self.lease_forfeited
            && self.tick_count < self.lease_expires_tick
    }

    pub(super) fn is_single_voter(&self) -> bool {
        let config = self.log.config();
        config.voters.len() == 1 && config.voters.contains(&self.id) && !config.is_joint()
    }

    pub(super) fn release_read(&mut self, index: LogIndex, read: PendingRead) {
        if read.from == self.id {
            self.read_states.push(ReadState { context: read.context, index });
        } else {
            self.send(
                read.from,
                MessageBody::ReadIndexResponse { context: read.context, index: Some(index) },
            );
        }
    }

    /// Releases the reads confirmed by `round`, and starts the next round if reads are waiting.
    pub(super) fn confirm_reads(&mut self, round: u64) {
        for (index, read) in self.reads.confirm(round) {
            self.release_read(index, read);
        }
        // A quiescent leader and one that sent TimeoutNow hold no lease (see those fields).
        if self.config.lease_read.is_some()
            && !self.quiescent
            && !self.lease_forfeited
            && let Some(started) = self.reads.round_tick(round)
            && let Some(lease_ticks) = self.config.lease_ticks()
        {
            // The lease is measured from when the round was *sent*: followers reset their
            // election timers no earlier than that.
            self.lease_expires_tick = self.lease_expires_tick.max(started + lease_ticks);
        }
        if self.reads.has_reads_waiting_for_round() && !self.reads.has_round_in_flight() {
            self.broadcast_heartbeat();
        }
    }

    fn handle_read_index_request(&mut self, from: NodeId, context: u64, lease: bool) {
        if self.role != Role::Leader {
            self.send(from, MessageBody::ReadIndexResponse { context, index: None });
            return;
        }
        if self.reads.len() >= self.config.max_pending_reads {
            self.send(from, MessageBody::ReadIndexResponse { context, index: None });
            return;
        }
        self.leader_read(PendingRead { context, from }, lease);
    }

    fn handle_read_index_response(&mut self, from: NodeId, context: u64, index: Option<LogIndex>) {
        if from != self.leader {
            return;
        }
        match index {
            Some(index) => self.read_states.push(ReadState { context, index }),
            None => self.failed_reads.push(context),
        }
    }

    /// Fails every pending read (leadership lost or changed).
    pub(super) fn fail_pending_reads(&mut self) {
        for read in self.reads.drain_all() {
            if read.from == self.id {
                self.failed_reads.push(read.context);
            } else {
                self.send(
                    read.from,
                    MessageBody::ReadIndexResponse { context: read.context, index: None },
                );
            }
        }
    }

    /// Leadership transfer: the target campaigns at once, even inside a leader's lease.
    fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || from != self.leader || !self.is_promotable() {
            return;
        }
        self.start_campaign(false, true);
    }

    /// Called by the other files when the log's configuration may have changed.
    pub(super) fn config_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members = self.log.config().members();
        self.progress.retain(|id, _| members.contains(id) || *id == self.id);
        // Start a new member at the configuration entry itself, so the first flush probes it
        // at once instead of waiting for a heartbeat.
        let next = self.log.last_index().max(1);
        for member in members {
            if !self.progress.contains_key(&member) {
                let progress = Progress::new(
                    next,
                    self.config.max_inflight_messages,
                    self.config.max_inflight_bytes,
                );
                self.progress.insert(member, progress);
                self.replication_pending.insert(member);
            }
        }
    }

    /// Records that a snapshot must be persisted and applied (follower installing one).
    pub(super) fn stage_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot_to_persist = Some(snapshot.clone());
        self.snapshot_to_apply = Some(snapshot);
    }
}
