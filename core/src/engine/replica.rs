//! [`Replica`]: what one Raft group's replica on a node owns besides its Raft core — the
//! state machine, the requests waiting on it, its snapshot schedule, its lease deadline and
//! its status — and how it turns client requests and carried-out `Ready`s into state-machine
//! work and answers.
//!
//! Why apart from the engine's loop (`driver.rs`): the loop owns what a node has once (the
//! transport, the storage, the clock, the request queue), a replica what a node has once per
//! group. A node that hosts many groups (`crate::shard::GroupHost` owns their Raft cores)
//! drives one replica per group from one loop; so a replica never owns its `Raft` but is
//! handed it, and never touches the transport or the storage itself: it returns the jobs the
//! loop is to submit.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::change_feed::ChangeFeed;
use super::config::EngineConfig;
use super::error::EngineError;
use super::local_reads::{LocalReads, execute_read};
use super::pending::{Pending, PendingRead, PendingWrite, allows_lease};
use super::request::{ReadConsistency, ReadQuery, ReadResult, Reply};
use super::status::{EngineStatus, PeerStatus};
use crate::kv::{KvCommand, KvError, KvEvent, KvRequest, KvResponse, KvStateMachine, SessionTag};
use crate::raft::planted::is_planted;
use crate::raft::{
    ClusterConfig, Entry, EntryPayload, LogIndex, MembershipChange, MembershipError, NodeId,
    PlantedBug, ProposeError, Raft, ReadError, ReadState, Role, Snapshot, SnapshotMeta, SoftState,
};
use crate::seams::{Clock, StorageJob, StorageProgress};
use crate::shard::{ShardId, ShardMap};

/// After a snapshot was given up for lack of space, the next attempt waits at least this long
/// (and for the disk-full alarm to come down): a snapshot is big, and trying again at every
/// applied entry would fill the disk with attempts.
const SNAPSHOT_RETRY_AFTER_MS: u64 = 5_000;

pub(super) struct Replica {
    config: EngineConfig,
    /// The group this replica belongs to (shard 0 on a single group's node), for the logs.
    shard: ShardId,
    /// The state machine, shared with the handles for local reads (`local_reads.rs`).
    local: Arc<LocalReads>,
    /// When (monotonic ms) each recent tick was taken, newest last: turns the Raft lease,
    /// counted in ticks, into a deadline on the clock.
    tick_times_ms: VecDeque<(u64, u64)>,
    status: watch::Sender<EngineStatus>,
    events: broadcast::Sender<ChangeFeed>,
    pending: Pending,
    durable_batch: u64,
    last_submitted_batch: u64,
    /// A snapshot being saved: (its last index, the index the log is compacted to after it).
    snapshot_in_progress: Option<(u64, u64)>,
    /// The disk-full alarm of the storage, as last reported: client writes are refused.
    disk_full: bool,
    /// Snapshots the storage gave up for lack of space, as last reported.
    snapshots_abandoned: u64,
    /// No snapshot is attempted before this time (monotonic ms), after one was given up.
    snapshot_retry_at_ms: u64,
    last_snapshot_index: u64,
    /// How far the storage asked this group to compact its log, as last seen (0: never).
    compaction_wanted: u64,
    /// The index of an `ExpireTick` this leader proposed and that has not been applied yet.
    expire_tick_in_flight: Option<u64>,
    last_leader: NodeId,
    /// The role at the last soft state: a campaign is logged when it starts, not per round.
    last_role: Role,
    leader_changes: u64,
    proposals_committed: u64,
    proposals_failed: u64,
    /// The state machine's earliest TTL deadline, as of its last change.
    next_expiry_ms: Option<u64>,
    /// Whether a probe watches: only then are the changes of a cycle's applies kept.
    observed: bool,
    /// The changes of this cycle's applies, kept only for a probe.
    changes_for_probe: Vec<KvEvent>,
}

impl Replica {
    /// A replica whose state machine is `kv` and whose Raft core is `raft`, started at
    /// `started_ms` (monotonic), with a change feed of `event_buffer` events.
    pub fn new(
        config: &EngineConfig,
        shard: ShardId,
        kv: KvStateMachine,
        raft: &Raft,
        started_ms: u64,
        event_buffer: usize,
    ) -> Self {
        assert_eq!(raft.id(), config.node_id, "a replica runs this node's Raft core");
        let (status, _) = watch::channel(EngineStatus::initial(config.node_id));
        let (events, _) = broadcast::channel(event_buffer);
        let last_snapshot_index = kv.applied_index();
        let next_expiry_ms = kv.next_expiry_ms();
        Replica {
            shard,
            next_expiry_ms,
            local: Arc::new(LocalReads::new(kv, config.raft.planted())),
            tick_times_ms: VecDeque::from([(raft.tick_count(), started_ms)]),
            status,
            events,
            pending: Pending::default(),
            durable_batch: 0,
            last_submitted_batch: 0,
            snapshot_in_progress: None,
            disk_full: false,
            snapshots_abandoned: 0,
            snapshot_retry_at_ms: 0,
            last_snapshot_index,
            compaction_wanted: 0,
            expire_tick_in_flight: None,
            last_leader: NodeId::NONE,
            last_role: Role::Follower,
            leader_changes: 0,
            proposals_committed: 0,
            proposals_failed: 0,
            observed: false,
            changes_for_probe: Vec::new(),
            config: config.clone(),
        }
    }

    pub fn local(&self) -> &Arc<LocalReads> {
        &self.local
    }

    pub fn status_receiver(&self) -> watch::Receiver<EngineStatus> {
        self.status.subscribe()
    }

    pub fn events(&self) -> &broadcast::Sender<ChangeFeed> {
        &self.events
    }

    /// A probe watches from now on: keep each cycle's changes for it.
    pub fn observe(&mut self) {
        self.observed = true;
    }

    /// Every persist batch submitted so far is durable.
    pub fn storage_caught_up(&self) -> bool {
        self.durable_batch >= self.last_submitted_batch
    }

    /// Whether the storage owes this replica a report: a batch or snapshot it was given, or
    /// the end of a disk-full alarm.
    pub fn awaits_storage(&self) -> bool {
        !self.storage_caught_up() || self.snapshot_in_progress.is_some() || self.disk_full
    }

    pub fn durable_batch(&self) -> u64 {
        self.durable_batch
    }

    /// The persist batch `id` was handed to storage.
    pub fn submitted(&mut self, id: u64) {
        self.last_submitted_batch = id;
    }

    /// The changes of this cycle's applies (for a probe); cleared by the next call.
    pub fn take_changes_for_probe(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.changes_for_probe)
    }

    pub fn fail_all(&mut self, error: EngineError) {
        self.pending.fail_all(error);
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    pub fn on_storage_progress<C: Clock>(
        &mut self,
        raft: &mut Raft,
        clock: &C,
        progress: StorageProgress,
    ) {
        self.disk_full = progress.disk_full;
        if progress.snapshots_abandoned > self.snapshots_abandoned {
            self.snapshots_abandoned = progress.snapshots_abandoned;
            self.snapshot_in_progress = None;
            self.snapshot_retry_at_ms = clock.monotonic_ms() + SNAPSHOT_RETRY_AFTER_MS;
        }
        if progress.durable_batch > self.durable_batch {
            self.durable_batch = progress.durable_batch;
            raft.persisted(progress.durable_batch);
        }
        if let Some((index, compact_to)) = self.snapshot_in_progress
            && progress.snapshot_index >= index
        {
            raft.compact(compact_to);
            self.last_snapshot_index = self.last_snapshot_index.max(index);
            self.snapshot_in_progress = None;
            tracing::info!(
                shard = self.shard.0,
                index,
                compacted_to = compact_to,
                "took a snapshot and compacted the log"
            );
        }
    }

    pub fn on_write<C: Clock>(
        &mut self,
        raft: &mut Raft,
        clock: &C,
        command: KvCommand,
        session: Option<SessionTag>,
        reply: Reply<KvResponse>,
    ) {
        if self.pending.count() >= self.config.max_pending_requests {
            let _ = reply.send(Err(EngineError::Busy));
            return;
        }
        if raft.role() != Role::Leader {
            let _ = reply.send(Err(EngineError::NotLeader { leader: known(raft.leader()) }));
            return;
        }
        if self.disk_full {
            // Refused before it is proposed: a write answered "no space" never takes effect.
            let _ = reply.send(Err(EngineError::NoSpace));
            return;
        }
        let request = KvRequest { session, leader_time_ms: clock.wall_ms(), command };
        if let Err(error) = self.local.kv().validate(&request) {
            let _ = reply.send(Err(EngineError::Invalid(error)));
            return;
        }
        let bytes = match request.encode() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "a validated request failed to encode");
                let _ = reply.send(Err(EngineError::Busy));
                return;
            }
        };
        match raft.propose(EntryPayload::Command(bytes)) {
            Ok((index, term)) => {
                self.pending.writes.insert(index, PendingWrite { term, reply });
            }
            Err(error) => {
                let _ = reply.send(Err(propose_error(error)));
            }
        }
    }

    pub fn on_read(
        &mut self,
        raft: &mut Raft,
        query: ReadQuery,
        consistency: ReadConsistency,
        reply: Reply<ReadResult>,
    ) {
        if consistency == ReadConsistency::Stale {
            let _ = reply.send(Ok(execute_read(&self.local.kv(), &query)));
            return;
        }
        if self.pending.count() >= self.config.max_pending_requests {
            let _ = reply.send(Err(EngineError::Busy));
            return;
        }
        let context = self.pending.new_read_context();
        match raft.read_index(context, allows_lease(consistency)) {
            Ok(()) => {
                self.pending.reads_awaiting_index.insert(context, PendingRead { query, reply });
            }
            Err(ReadError::NoLeader) => {
                let _ = reply.send(Err(EngineError::NotLeader { leader: None }));
            }
            Err(ReadError::Busy) => {
                let _ = reply.send(Err(EngineError::Busy));
            }
        }
    }

    /// A snapshot of the state machine as applied now, for a backup.
    pub fn on_snapshot_request(&self, raft: &Raft, reply: Reply<Snapshot>) {
        let kv = self.local.kv();
        let applied = kv.applied_index();
        let result = match raft.log().term(applied) {
            Some(last_term) => Ok(Snapshot {
                meta: SnapshotMeta {
                    last_index: applied,
                    last_term,
                    config: raft.log().config_at(applied).clone(),
                },
                data: kv.snapshot(),
            }),
            // Applied entries are always in the log or its snapshot.
            None => Err(EngineError::Busy),
        };
        let _ = reply.send(result);
    }

    pub fn on_transfer_leadership(&self, raft: &mut Raft, to: NodeId, reply: Reply<()>) {
        let result = raft.transfer_leadership(to).map_err(|error| match error {
            ProposeError::NotLeader { leader } => EngineError::NotLeader { leader: known(leader) },
            _ => EngineError::Busy,
        });
        let _ = reply.send(result);
    }

    pub fn on_change_membership(
        &mut self,
        raft: &mut Raft,
        change: MembershipChange,
        reply: Reply<ClusterConfig>,
    ) {
        if self.pending.count() >= self.config.max_pending_requests {
            let _ = reply.send(Err(EngineError::Busy));
            return;
        }
        match raft.propose_membership(change, self.config.max_learner_lag_entries) {
            Ok((index, term, _)) => {
                self.pending.membership.insert(index, (term, reply));
            }
            Err(MembershipError::NotLeader { leader }) => {
                let _ = reply.send(Err(EngineError::NotLeader { leader: known(leader) }));
            }
            Err(refused) => {
                let _ = reply.send(Err(EngineError::MembershipRefused(refused)));
            }
        }
    }

    /// As leader, asks the state machine to expire keys whose TTL passed by this node's wall
    /// clock. Expiry itself happens at apply time, from the timestamp in the entry.
    pub fn maybe_expire_keys<C: Clock>(&mut self, raft: &mut Raft, clock: &C) {
        if raft.role() != Role::Leader || self.expire_tick_in_flight.is_some() {
            return;
        }
        let now_ms = clock.wall_ms();
        if self.local.kv().next_expiry_ms().is_none_or(|due_ms| due_ms > now_ms) {
            return;
        }
        let request =
            KvRequest { session: None, leader_time_ms: now_ms, command: KvCommand::ExpireTick };
        let Ok(bytes) = request.encode() else { return };
        if let Ok((index, _)) = raft.propose(EntryPayload::Command(bytes)) {
            self.expire_tick_in_flight = Some(index);
        }
    }

    /// Whether [`Replica::maybe_expire_keys`] may propose: it is the leader, with no expiry in
    /// flight, and a key's TTL has passed. Checked without waking a quiescent group.
    pub fn expiry_may_be_due<C: Clock>(&self, raft: &Raft, clock: &C) -> bool {
        self.next_expiry_ms.is_some_and(|due_ms| due_ms <= clock.wall_ms())
            && raft.role() == Role::Leader
            && self.expire_tick_in_flight.is_none()
    }

    /// Whether any key has a TTL that has passed at `now_wall_ms` (from the state machine's
    /// last change, without locking it): cheap enough to ask of every hosted group at every
    /// tick.
    pub fn has_expiry_due(&self, now_wall_ms: u64) -> bool {
        self.next_expiry_ms.is_some_and(|due_ms| due_ms <= now_wall_ms)
    }

    /// When the first key with a TTL expires, in wall-clock ms (as of the state machine's last
    /// change); `None` if no key has one.
    pub fn next_expiry_wall_ms(&self) -> Option<u64> {
        self.next_expiry_ms
    }

    /// Raft took tick number `tick` at `now_ms` (monotonic). A group that did not tick (it is
    /// quiescent) reports the same tick again, which is not recorded twice.
    pub fn record_tick_time(&mut self, tick: u64, now_ms: u64) {
        if self.tick_times_ms.back().is_some_and(|(at, _)| *at == tick) {
            return;
        }
        self.tick_times_ms.push_back((tick, now_ms));
        // A lease never reaches further back than one election timeout.
        let keep = self.config.raft.election_timeout_ticks as usize + 2;
        while self.tick_times_ms.len() > keep {
            self.tick_times_ms.pop_front();
        }
    }

    // ----------------------------------------------------------------------------------------
    // Carrying out a Ready
    // ----------------------------------------------------------------------------------------

    pub fn on_soft_state(&mut self, soft_state: SoftState) {
        let SoftState { role, term, leader } = soft_state;
        let shard = self.shard.0;
        if leader != self.last_leader {
            self.last_leader = leader;
            if leader == self.config.node_id {
                tracing::info!(shard, term, "this node leads");
            } else if !leader.is_none() {
                tracing::info!(shard, term, leader = leader.0, "following a new leader");
            } else {
                tracing::info!(shard, term, ?role, "no leader");
            }
            if !leader.is_none() {
                self.leader_changes += 1;
            }
        }
        if matches!(role, Role::Candidate | Role::PreCandidate) && role != self.last_role {
            tracing::info!(shard, term, ?role, "campaigning for leadership");
        }
        self.last_role = role;
        if soft_state.role != Role::Leader {
            self.expire_tick_in_flight = None;
        }
    }

    pub fn apply<C: Clock>(&mut self, raft: &mut Raft, clock: &C, entries: &[Entry]) {
        let Some(last) = entries.last().map(|entry| entry.index) else { return };
        let mut kv = self.local.kv_mut();
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Command(bytes) => {
                    let result =
                        if is_planted(self.config.raft.planted(), PlantedBug::ApplyByLocalClock) {
                            apply_at_local_clock(&mut kv, entry.index, bytes, clock.wall_ms())
                        } else {
                            kv.apply_command_bytes(entry.index, bytes)
                        };
                    for event in result.events {
                        if self.observed {
                            self.changes_for_probe.push(event.clone());
                        }
                        // No subscriber is not an error: events are best effort.
                        let _ = self.events.send(ChangeFeed::Change(event));
                    }
                    Some(result.response)
                }
                EntryPayload::Noop => {
                    kv.advance_applied_index(entry.index);
                    None
                }
                EntryPayload::Config(config) => {
                    tracing::info!(
                        shard = self.shard.0,
                        index = entry.index,
                        term = entry.term,
                        voters = ?config.voters,
                        learners = ?config.learners,
                        "configuration changed"
                    );
                    kv.advance_applied_index(entry.index);
                    self.pending.resolve_membership(entry.index, entry.term, Some(config));
                    None
                }
            };
            if self.expire_tick_in_flight.is_some_and(|index| index <= entry.index) {
                self.expire_tick_in_flight = None;
            }
            if !matches!(entry.payload, EntryPayload::Config(_)) {
                self.pending.resolve_membership(entry.index, entry.term, None);
            }
            match self.pending.resolve_write(entry.index, entry.term, response) {
                Some(true) => self.proposals_committed += 1,
                Some(false) => self.proposals_failed += 1,
                None => {}
            }
        }
        debug_assert_eq!(kv.applied_index(), last);
        self.next_expiry_ms = kv.next_expiry_ms();
        drop(kv);
        raft.applied(last);
    }

    /// Replaces the state machine with the leader's snapshot.
    pub fn install_snapshot(&mut self, raft: &mut Raft, snapshot: Snapshot) -> Result<(), KvError> {
        let kv = KvStateMachine::restore(&snapshot.data)?;
        assert_eq!(
            kv.applied_index(),
            snapshot.meta.last_index,
            "snapshot metadata and content agree"
        );
        let revision = kv.revision();
        self.next_expiry_ms = kv.next_expiry_ms();
        *self.local.kv_mut() = kv;
        let _ = self.events.send(ChangeFeed::Skipped { revision });
        self.pending.writes_superseded_by_snapshot(snapshot.meta.last_index);
        self.last_snapshot_index = snapshot.meta.last_index;
        raft.applied(snapshot.meta.last_index);
        tracing::info!(
            shard = self.shard.0,
            index = snapshot.meta.last_index,
            term = snapshot.meta.last_term,
            leader = raft.leader().0,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Raft confirmed read indexes (`reads`) or gave reads up (`failed_reads`).
    pub fn on_read_states(&mut self, raft: &Raft, reads: Vec<ReadState>, failed_reads: Vec<u64>) {
        for ReadState { context, index } in reads {
            if let Some(read) = self.pending.reads_awaiting_index.remove(&context) {
                self.pending.reads_awaiting_apply.insert((index, context), read);
            }
        }
        for context in failed_reads {
            if let Some(read) = self.pending.reads_awaiting_index.remove(&context) {
                let leader = known(raft.leader());
                let _ = read.reply.send(Err(EngineError::NotLeader { leader }));
            }
        }
    }

    /// Answers the reads whose index the state machine has reached.
    pub fn answer_applied_reads(&mut self) {
        let kv = self.local.kv();
        for read in self.pending.reads_ready(kv.applied_index()) {
            let _ = read.reply.send(Ok(execute_read(&kv, &read.query)));
        }
    }

    /// How far the storage asked this group to compact its log, as last seen.
    pub fn compaction_wanted(&self) -> u64 {
        self.compaction_wanted
    }

    /// The storage asks for the log to be compacted up to `index` (a shared log that the
    /// group's old records keep from shrinking): the next `snapshot_due` takes a snapshot for
    /// it, once the group has applied that far, whatever the snapshot schedule says.
    pub fn ask_compaction(&mut self, index: u64) {
        self.compaction_wanted = self.compaction_wanted.max(index);
    }

    /// The job that saves a snapshot of the state machine, once enough entries were applied
    /// since the last one, or once the storage asked for a compaction the group can do.
    pub fn snapshot_due<C: Clock>(&mut self, raft: &Raft, clock: &C) -> Option<StorageJob> {
        if self.snapshot_in_progress.is_some()
            || self.disk_full
            || clock.monotonic_ms() < self.snapshot_retry_at_ms
        {
            return None;
        }
        let applied = self.local.kv().applied_index();
        let compacted_to = raft.log().first_index().saturating_sub(1);
        let asked = self.compaction_wanted > compacted_to && applied >= self.compaction_wanted;
        if !asked && applied < self.last_snapshot_index + self.config.snapshot_every_entries {
            return None;
        }
        let last_term = raft.log().term(applied)?;
        let meta = SnapshotMeta {
            last_index: applied,
            last_term,
            config: raft.log().config_at(applied).clone(),
        };
        let snapshot = Snapshot { meta, data: self.local.kv().snapshot() };
        let mut compact_to = applied.saturating_sub(self.config.retained_log_entries);
        if asked {
            // The entries kept for lagging followers give way: a follower that needs them
            // gets the snapshot instead.
            compact_to = compact_to.max(self.compaction_wanted);
        }
        debug_assert!(compact_to <= applied, "the log is compacted only up to what is applied");
        self.snapshot_in_progress = Some((applied, compact_to));
        Some(StorageJob::SaveSnapshot { snapshot, compact_to })
    }

    /// Publishes until when lease reads may be answered without the engine, at the end of a
    /// cycle, once everything committed is applied. The lease is measured from the tick at
    /// which its heartbeat round was sent: followers reset their election timers no earlier
    /// than that, and ticks are never taken early.
    pub fn publish_lease(&self, raft: &Raft) {
        let caught_up = self.local.kv().applied_index() >= raft.log().committed();
        let until_ms = match (raft.lease_start_tick(), self.config.raft.lease_ticks()) {
            (Some(start_tick), Some(lease_ticks)) if caught_up => self
                .tick_time_ms(start_tick)
                .map_or(0, |start_ms| start_ms + lease_ticks * self.config.tick_ms),
            _ => 0,
        };
        self.local.set_lease_until_ms(until_ms);
    }

    /// Mid-cycle, the lease may only be withdrawn, never granted: the entries this cycle
    /// commits are not applied yet, and a leader's first commit in its term is what makes its
    /// predecessor's acknowledged writes readable.
    pub fn revoke_lease_if_lost(&self, raft: &Raft) {
        if raft.lease_start_tick().is_none() {
            self.local.set_lease_until_ms(0);
        }
    }

    /// When tick `tick` was taken, if it is recent enough to be remembered.
    fn tick_time_ms(&self, tick: u64) -> Option<u64> {
        self.tick_times_ms.iter().rev().find(|(at, _)| *at == tick).map(|(_, ms)| *ms)
    }

    /// Publishes the group's status if it changed. Called for every group given input on every
    /// cycle, so it reads the core in place: built from `Raft::status`, which copies the
    /// configuration and the progress map, publishing took about a sixth of a busy hosting
    /// node's engine loop (a profile under `bench/sharding.sh`'s 16-shard load).
    pub fn publish_status(&mut self, raft: &Raft) {
        let kv = self.local.kv();
        let log = raft.log();
        let config = log.config();
        let last_index = log.last_index();
        let peers = raft
            .matched_indexes()
            .map(|(id, matched)| PeerStatus {
                id,
                matched,
                lag: last_index.saturating_sub(matched),
            })
            .collect();
        let status = EngineStatus {
            id: raft.id(),
            role: raft.role(),
            term: raft.term(),
            leader: known(raft.leader()),
            commit_index: log.committed(),
            applied_index: kv.applied_index(),
            last_index,
            snapshot_index: log.first_index() - 1,
            revision: kv.revision(),
            key_count: kv.key_count(),
            voters: config.voters.iter().copied().collect(),
            learners: config.learners.iter().copied().collect(),
            peer_addresses: self.shared_peer_addresses(&config.addresses),
            peers,
            leader_changes: self.leader_changes,
            proposals_committed: self.proposals_committed,
            proposals_failed: self.proposals_failed,
            proposals_pending: self.pending.writes.len(),
            disk_full: self.disk_full,
            snapshots_abandoned: self.snapshots_abandoned,
            shard_map: self.shared_shard_map(kv.shard_map()),
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }

    /// The configuration's peer addresses, shared with the last published status unless they
    /// changed (they change only with membership, and the status is published every cycle).
    fn shared_peer_addresses(
        &self,
        current: &std::collections::BTreeMap<NodeId, String>,
    ) -> Arc<std::collections::BTreeMap<NodeId, String>> {
        let published = &self.status.borrow().peer_addresses;
        if **published == *current { Arc::clone(published) } else { Arc::new(current.clone()) }
    }

    /// The state machine's shard map, shared with the last published status unless its epoch
    /// changed (each epoch is taken once, so the epoch names the map).
    fn shared_shard_map(&self, current: Option<&ShardMap>) -> Option<Arc<ShardMap>> {
        let current = current?;
        match &self.status.borrow().shard_map {
            Some(published) if published.epoch() == current.epoch() => Some(Arc::clone(published)),
            _ => Some(Arc::new(current.clone())),
        }
    }
}

pub(super) fn known(id: NodeId) -> Option<NodeId> {
    (!id.is_none()).then_some(id)
}

fn propose_error(error: ProposeError) -> EngineError {
    match error {
        ProposeError::NotLeader { leader } => EngineError::NotLeader { leader: known(leader) },
        ProposeError::Busy
        | ProposeError::TransferInProgress
        | ProposeError::ConfigChangeInProgress { .. } => EngineError::Busy,
        ProposeError::TooLarge { .. } => EngineError::Busy,
    }
}

/// The planted bug `ApplyByLocalClock`: the entry's command applied as if its leader had
/// stamped it with `local_wall_ms`, the applying node's own clock.
fn apply_at_local_clock(
    kv: &mut KvStateMachine,
    index: LogIndex,
    bytes: &[u8],
    local_wall_ms: u64,
) -> crate::kv::ApplyResult {
    match KvRequest::decode(bytes) {
        Ok(request) => kv.apply(index, &KvRequest { leader_time_ms: local_wall_ms, ..request }),
        Err(_) => kv.apply_command_bytes(index, bytes),
    }
}
