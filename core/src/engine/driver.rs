//! The engine's loop. One iteration: wait for one input (storage progress, a peer message, a
//! client request, a tick) and take whatever else is already queued, up to a bound; then carry
//! out Raft's `Ready` — submit the persist batch, send the messages, apply committed entries,
//! answer writes and reads — and publish the status.
//!
//! Group commit and batching fall out of this shape: everything that arrives while a sync is
//! in flight is proposed, appended and handed to storage together, and the storage writer turns
//! whatever is queued into one sync.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::change_feed::ChangeFeed;
use super::config::EngineConfig;
use super::error::EngineError;
use super::handle::EngineHandle;
use super::local_reads::{LocalReads, execute_read};
use super::pending::{Pending, PendingRead, PendingWrite, allows_lease};
use super::probe::{CycleView, EngineProbe};
use super::request::{EngineRequest, ReadConsistency, ReadQuery, ReadResult, Reply};
use super::status::{EngineStatus, PeerStatus};
use crate::kv::{KvCommand, KvError, KvEvent, KvRequest, KvResponse, KvStateMachine, SessionTag};
use crate::raft::planted::is_planted;
use crate::raft::{
    ConfigError, Entry, EntryPayload, LogIndex, MembershipError, Message, MessageBody, NodeId,
    PlantedBug, ProposeError, Raft, ReadError, ReadState, Ready, RestoredState, Role, Snapshot,
    SnapshotMeta, SnapshotRequest, SoftState,
};
use crate::seams::storage::StorageFailure;
use crate::seams::{Clock, Storage, StorageJob, StorageProgress, Transport};
use crate::transport::PeerMessage;

/// Why the engine stopped on its own. Each is fatal for this process: the node must restart
/// and recover from disk.
#[derive(Debug, Error)]
pub enum EngineFailure {
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    #[error("snapshot from the leader could not be restored: {0}")]
    CorruptSnapshot(KvError),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("the state machine could not be created: {0}")]
    StateMachine(KvError),
}

impl From<ConfigError> for EngineFailure {
    fn from(error: ConfigError) -> Self {
        EngineFailure::InvalidConfig(error.to_string())
    }
}

/// Ticks fired at most per wake-up: after a long stall the engine catches up gradually instead
/// of firing an election timeout's worth of ticks at once.
const MAX_TICKS_PER_WAKE: u32 = 5;

/// After a snapshot was given up for lack of space, the next attempt waits at least this long
/// (and for the disk-full alarm to come down): a snapshot is big, and trying again at every
/// applied entry would fill the disk with attempts.
const SNAPSHOT_RETRY_AFTER_MS: u64 = 5_000;

pub struct Engine<T: Transport, S: Storage, C: Clock> {
    config: EngineConfig,
    raft: Raft,
    /// The state machine, shared with the handles for local reads (`local_reads.rs`).
    local: Arc<LocalReads>,
    /// When (monotonic ms) each recent tick was taken, newest last: turns the Raft lease,
    /// counted in ticks, into a deadline on the clock.
    tick_times_ms: VecDeque<(u64, u64)>,
    transport: T,
    storage: S,
    clock: C,
    requests: mpsc::Receiver<EngineRequest>,
    status: watch::Sender<EngineStatus>,
    events: broadcast::Sender<ChangeFeed>,
    pending: Pending,
    next_tick_ms: u64,
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
    /// The index of an `ExpireTick` this leader proposed and that has not been applied yet.
    expire_tick_in_flight: Option<u64>,
    last_leader: NodeId,
    leader_changes: u64,
    proposals_committed: u64,
    proposals_failed: u64,
    /// Set once a shutdown was requested: answered when storage has caught up.
    shutdown: Option<oneshot::Sender<()>>,
    /// False once the transport said it will deliver nothing more.
    transport_open: bool,
    probe: Option<Box<dyn EngineProbe>>,
    /// The changes of this cycle's applies, kept only for a probe.
    changes_for_probe: Vec<KvEvent>,
    /// The configurations (latest, last committed; by log index) and the leader the
    /// transport's peers were last set from.
    peers_config_index: Option<(LogIndex, LogIndex, NodeId)>,
    /// Every member address seen in any configuration since the start: a lagging follower may
    /// hear from a leader that its own (stale) configuration does not list, and must be able
    /// to answer it.
    known_addresses: BTreeMap<NodeId, String>,
}

impl<T: Transport, S: Storage, C: Clock> Engine<T, S, C> {
    /// A node restarted from `restored` (plus the state-machine snapshot `snapshot_data`, if the
    /// log starts after one). `rng_seed` seeds the election jitter.
    pub fn new(
        config: EngineConfig,
        restored: RestoredState,
        snapshot_data: Option<Bytes>,
        transport: T,
        storage: S,
        clock: C,
        rng_seed: u64,
    ) -> Result<(Self, EngineHandle), EngineFailure> {
        config.raft.validate()?;
        let entry_limit = config.kv_limits.max_value_bytes + config.kv_limits.max_key_bytes + 4096;
        if config.raft.max_message_bytes < entry_limit {
            return Err(EngineFailure::InvalidConfig(format!(
                "raft max_message_bytes ({}) must fit the largest write ({entry_limit} bytes)",
                config.raft.max_message_bytes
            )));
        }
        let kv = match snapshot_data {
            Some(data) => KvStateMachine::restore(&data).map_err(EngineFailure::CorruptSnapshot)?,
            None => KvStateMachine::new(config.kv_limits.clone())
                .map_err(EngineFailure::StateMachine)?,
        };
        assert_eq!(
            kv.applied_index(),
            restored.snapshot.last_index,
            "the state-machine snapshot and the log's snapshot point must agree"
        );
        let last_snapshot_index = restored.snapshot.last_index;
        let raft = Raft::new(config.node_id, config.raft.clone(), restored, rng_seed);
        let (request_sender, requests) = mpsc::channel(config.max_queued_requests);
        let (status_sender, status) = watch::channel(EngineStatus::initial(config.node_id));
        let (events, _) = broadcast::channel(config.event_buffer);
        let local = Arc::new(LocalReads::new(kv, config.raft.planted()));
        let handle = EngineHandle {
            requests: request_sender,
            status,
            events: events.clone(),
            local: local.clone(),
        };
        let started_ms = clock.monotonic_ms();
        let engine = Engine {
            tick_times_ms: VecDeque::from([(raft.tick_count(), started_ms)]),
            raft,
            local,
            transport,
            storage,
            requests,
            status: status_sender,
            events,
            pending: Pending::default(),
            next_tick_ms: clock.monotonic_ms() + config.tick_ms,
            clock,
            durable_batch: 0,
            last_submitted_batch: 0,
            snapshot_in_progress: None,
            disk_full: false,
            snapshots_abandoned: 0,
            snapshot_retry_at_ms: 0,
            last_snapshot_index,
            expire_tick_in_flight: None,
            last_leader: NodeId::NONE,
            leader_changes: 0,
            proposals_committed: 0,
            proposals_failed: 0,
            shutdown: None,
            transport_open: true,
            probe: None,
            changes_for_probe: Vec::new(),
            peers_config_index: None,
            known_addresses: BTreeMap::new(),
            config,
        };
        Ok((engine, handle))
    }

    /// Lets `probe` observe every cycle (the simulator's invariant checks).
    pub fn with_probe(mut self, probe: Box<dyn EngineProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Runs the node until shutdown (`Ok`) or a fatal failure. `storage_writer` is the
    /// storage's writer future, run concurrently with the engine's loop.
    pub async fn run(
        mut self,
        storage_writer: impl Future<Output = Result<(), StorageFailure>>,
    ) -> Result<(), EngineFailure> {
        let result = {
            let main = self.main_loop();
            tokio::pin!(main);
            tokio::pin!(storage_writer);
            tokio::select! {
                biased;
                result = &mut main => result,
                result = &mut storage_writer => match result {
                    Ok(()) => Err(EngineFailure::Storage(StorageFailure("the storage writer stopped".into()))),
                    Err(failure) => Err(EngineFailure::Storage(failure)),
                },
            }
        };
        let error = if result.is_ok() { EngineError::Stopped } else { EngineError::Unknown };
        self.pending.fail_all(error);
        result
    }

    async fn main_loop(&mut self) -> Result<(), EngineFailure> {
        loop {
            self.carry_out_ready().await?;
            if self.shutdown.is_some() && self.durable_batch >= self.last_submitted_batch {
                if let Some(done) = self.shutdown.take() {
                    let _ = done.send(());
                }
                return Ok(());
            }
            let until_tick_ms = self.next_tick_ms.saturating_sub(self.clock.monotonic_ms());
            let accepting = self.shutdown.is_none();
            tokio::select! {
                biased;
                progress = self.storage.progress_changed() => self.on_storage_progress(progress?),
                message = self.transport.recv(), if self.transport_open => {
                    match message {
                        Some(message) => {
                            self.on_peer_message(message);
                            for _ in 1..self.config.max_inputs_per_cycle {
                                let Some(message) = self.transport.try_recv() else { break };
                                self.on_peer_message(message);
                            }
                        }
                        // A transport that will never deliver again must not win every turn of
                        // this loop (it is polled before requests and ticks).
                        None => self.transport_open = false,
                    }
                }
                request = self.requests.recv(), if accepting => match request {
                    Some(request) => {
                        self.on_request(request);
                        for _ in 1..self.config.max_inputs_per_cycle {
                            let Ok(request) = self.requests.try_recv() else { break };
                            self.on_request(request);
                        }
                    }
                    // Every handle is gone: nobody can ask anything any more.
                    None => self.begin_shutdown(None),
                },
                () = self.clock.sleep_ms(until_tick_ms) => self.on_tick(),
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------------

    fn on_tick(&mut self) {
        let now_ms = self.clock.monotonic_ms();
        let mut fired = 0;
        while self.next_tick_ms <= now_ms && fired < MAX_TICKS_PER_WAKE {
            self.raft.tick();
            self.record_tick_time(now_ms);
            self.next_tick_ms += self.config.tick_ms;
            fired += 1;
        }
        if self.next_tick_ms <= now_ms {
            self.next_tick_ms = now_ms + self.config.tick_ms;
        }
        self.maybe_expire_keys();
    }

    fn on_peer_message(&mut self, message: PeerMessage) {
        match message {
            PeerMessage::Raft(message) => self.raft.step(message),
        }
    }

    fn on_storage_progress(&mut self, progress: StorageProgress) {
        self.disk_full = progress.disk_full;
        if progress.snapshots_abandoned > self.snapshots_abandoned {
            self.snapshots_abandoned = progress.snapshots_abandoned;
            self.snapshot_in_progress = None;
            self.snapshot_retry_at_ms = self.clock.monotonic_ms() + SNAPSHOT_RETRY_AFTER_MS;
        }
        if progress.durable_batch > self.durable_batch {
            self.durable_batch = progress.durable_batch;
            self.raft.persisted(progress.durable_batch);
        }
        if let Some((index, compact_to)) = self.snapshot_in_progress
            && progress.snapshot_index >= index
        {
            self.raft.compact(compact_to);
            self.last_snapshot_index = self.last_snapshot_index.max(index);
            self.snapshot_in_progress = None;
        }
    }

    fn on_request(&mut self, request: EngineRequest) {
        match request {
            EngineRequest::Write { command, session, reply } => {
                self.on_write(command, session, reply)
            }
            EngineRequest::Read { query, consistency, reply } => {
                self.on_read(query, consistency, reply)
            }
            EngineRequest::Snapshot { reply } => {
                let kv = self.local.kv();
                let applied = kv.applied_index();
                let result = match self.raft.log().term(applied) {
                    Some(last_term) => Ok(Snapshot {
                        meta: SnapshotMeta {
                            last_index: applied,
                            last_term,
                            config: self.raft.log().config_at(applied).clone(),
                        },
                        data: kv.snapshot(),
                    }),
                    // Applied entries are always in the log or its snapshot.
                    None => Err(EngineError::Busy),
                };
                let _ = reply.send(result);
            }
            EngineRequest::TransferLeadership { to, reply } => {
                let result = self.raft.transfer_leadership(to).map_err(|error| match error {
                    ProposeError::NotLeader { leader } => {
                        EngineError::NotLeader { leader: known(leader) }
                    }
                    _ => EngineError::Busy,
                });
                let _ = reply.send(result);
            }
            EngineRequest::ChangeMembership { change, reply } => {
                if self.pending.count() >= self.config.max_pending_requests {
                    let _ = reply.send(Err(EngineError::Busy));
                    return;
                }
                match self.raft.propose_membership(change, self.config.max_learner_lag_entries) {
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
            EngineRequest::Shutdown { reply } => self.begin_shutdown(Some(reply)),
        }
    }

    fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        let (sender, _receiver) = oneshot::channel();
        self.shutdown = Some(reply.unwrap_or(sender));
        self.requests.close();
    }

    fn on_write(
        &mut self,
        command: KvCommand,
        session: Option<SessionTag>,
        reply: Reply<KvResponse>,
    ) {
        if self.pending.count() >= self.config.max_pending_requests {
            let _ = reply.send(Err(EngineError::Busy));
            return;
        }
        if self.raft.role() != Role::Leader {
            let _ = reply.send(Err(EngineError::NotLeader { leader: known(self.raft.leader()) }));
            return;
        }
        if self.disk_full {
            // Refused before it is proposed: a write answered "no space" never takes effect.
            let _ = reply.send(Err(EngineError::NoSpace));
            return;
        }
        let request = KvRequest { session, leader_time_ms: self.clock.wall_ms(), command };
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
        match self.raft.propose(EntryPayload::Command(bytes)) {
            Ok((index, term)) => {
                self.pending.writes.insert(index, PendingWrite { term, reply });
            }
            Err(error) => {
                let _ = reply.send(Err(propose_error(error)));
            }
        }
    }

    fn on_read(
        &mut self,
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
        match self.raft.read_index(context, allows_lease(consistency)) {
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

    /// As leader, asks the state machine to expire keys whose TTL passed by this node's wall
    /// clock. Expiry itself happens at apply time, from the timestamp in the entry.
    fn maybe_expire_keys(&mut self) {
        if self.raft.role() != Role::Leader || self.expire_tick_in_flight.is_some() {
            return;
        }
        let now_ms = self.clock.wall_ms();
        if self.local.kv().next_expiry_ms().is_none_or(|due_ms| due_ms > now_ms) {
            return;
        }
        let request =
            KvRequest { session: None, leader_time_ms: now_ms, command: KvCommand::ExpireTick };
        let Ok(bytes) = request.encode() else { return };
        if let Ok((index, _)) = self.raft.propose(EntryPayload::Command(bytes)) {
            self.expire_tick_in_flight = Some(index);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Ready
    // ----------------------------------------------------------------------------------------

    async fn carry_out_ready(&mut self) -> Result<(), EngineFailure> {
        for peer in self.transport.take_unreachable() {
            self.raft.report_unreachable(peer);
        }
        for (peer, delivered) in self.transport.take_snapshot_reports() {
            self.raft.report_snapshot(peer, delivered);
        }
        // Carrying out a Ready can make more (a durable batch releases deferred answers), but
        // only a few rounds' worth; one that never drains is a bug in Raft that would spin this
        // loop forever without yielding, so tests fail on it instead of hanging.
        let mut rounds = 0u32;
        while self.raft.has_ready() {
            rounds += 1;
            debug_assert!(rounds <= 1_000, "Ready does not drain: {:?}", self.raft.ready_reasons());
            let ready = self.raft.ready();
            self.carry_out(ready).await?;
        }
        let kv = self.local.kv();
        for read in self.pending.reads_ready(kv.applied_index()) {
            let _ = read.reply.send(Ok(execute_read(&kv, &read.query)));
        }
        drop(kv);
        self.maybe_snapshot()?;
        self.update_transport_peers();
        self.publish_lease();
        self.publish_status();
        Ok(())
    }

    /// Keeps the transport's peer set equal to the members of the configuration in force and
    /// of the last committed one. Until a removal commits, the removed member may still be the
    /// leader collecting the acknowledgements that commit it: dropping its address on append
    /// would leave it unable to hear them.
    fn update_transport_peers(&mut self) {
        let log = self.raft.log();
        let leader = self.raft.leader();
        let key = (log.config_index(), log.config_index_at(log.committed()), leader);
        if self.peers_config_index == Some(key) {
            return;
        }
        self.peers_config_index = Some(key);
        let latest = log.config();
        let committed = log.config_at(log.committed());
        let mut members = latest.members();
        members.extend(committed.members());
        // A node joining a cluster has no configuration yet, only the addresses it was given:
        // it must still be able to answer the leader that is about to replicate one to it.
        let joining = members.is_empty();
        for config in [committed, latest] {
            for (id, address) in &config.addresses {
                self.known_addresses.insert(*id, address.clone());
            }
        }
        // The leader too, member or not as far as this node's configuration knows: a follower
        // that missed the entry adding it must still answer it, or it is never caught up. (If
        // no configuration this node ever saw has its address, the transport learns it from
        // the leader's own hello.) And this node itself: the transport tells peers where to
        // answer it.
        if !leader.is_none() {
            members.insert(leader);
        }
        members.insert(self.config.node_id);
        let peers: BTreeMap<NodeId, String> = self
            .known_addresses
            .iter()
            .filter(|(id, _)| joining || members.contains(id))
            .map(|(id, address)| (*id, address.clone()))
            .collect();
        self.transport.update_peers(&peers);
    }

    async fn carry_out(&mut self, ready: Ready) -> Result<(), EngineFailure> {
        let Ready {
            soft_state,
            persist,
            messages,
            snapshot_to_apply,
            committed_entries,
            reads,
            failed_reads,
            snapshot_requests,
        } = ready;
        if let Some(soft_state) = soft_state {
            self.on_soft_state(soft_state);
        }
        // Only a probe needs copies of what is handed on below.
        let observed = self.probe.as_ref().map(|_| {
            let batch = persist.as_ref().map(|batch| PersistedView {
                id: batch.id,
                entries: batch.entries.clone(),
                hard_state: batch.hard_state,
                snapshot: batch.snapshot.as_ref().map(|s| (s.meta.last_index, s.meta.last_term)),
            });
            (batch, messages.clone(), snapshot_to_apply.as_ref().map(|s| s.meta.clone()))
        });
        if let Some(batch) = persist {
            self.last_submitted_batch = batch.id;
            self.storage.submit(StorageJob::Persist(batch))?;
        }
        // Before any message leaves: one of them may be a TimeoutNow that ends the lease.
        self.revoke_lease_if_lost();
        for message in messages {
            let to = message.to;
            self.transport.send(to, PeerMessage::Raft(message));
        }
        if let Some(snapshot) = snapshot_to_apply {
            self.install_snapshot(snapshot)?;
        }
        self.apply(&committed_entries);
        if let (Some(probe), Some((batch, messages, snapshot))) = (self.probe.as_mut(), observed) {
            probe.observe(CycleView {
                raft: &self.raft,
                kv: &self.local.kv(),
                persist_batch: batch.as_ref().map(|batch| (batch.id, batch.entries.as_slice())),
                persist_hard_state: batch.as_ref().and_then(|batch| batch.hard_state),
                persist_snapshot: batch.as_ref().and_then(|batch| batch.snapshot),
                durable_batch: self.durable_batch,
                messages: &messages,
                snapshot_installed: snapshot.as_ref(),
                applied: &committed_entries,
                changes: &self.changes_for_probe,
            });
        }
        self.changes_for_probe.clear();
        for ReadState { context, index } in reads {
            if let Some(read) = self.pending.reads_awaiting_index.remove(&context) {
                self.pending.reads_awaiting_apply.insert((index, context), read);
            }
        }
        for context in failed_reads {
            if let Some(read) = self.pending.reads_awaiting_index.remove(&context) {
                let leader = known(self.raft.leader());
                let _ = read.reply.send(Err(EngineError::NotLeader { leader }));
            }
        }
        for request in snapshot_requests {
            self.send_snapshot(request).await?;
        }
        Ok(())
    }

    fn on_soft_state(&mut self, soft_state: SoftState) {
        if soft_state.leader != self.last_leader {
            self.last_leader = soft_state.leader;
            if !soft_state.leader.is_none() {
                self.leader_changes += 1;
            }
        }
        if soft_state.role != Role::Leader {
            self.expire_tick_in_flight = None;
        }
    }

    fn apply(&mut self, entries: &[Entry]) {
        let Some(last) = entries.last().map(|entry| entry.index) else { return };
        let mut kv = self.local.kv_mut();
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Command(bytes) => {
                    let result =
                        if is_planted(self.config.raft.planted(), PlantedBug::ApplyByLocalClock) {
                            apply_at_local_clock(&mut kv, entry.index, bytes, self.clock.wall_ms())
                        } else {
                            kv.apply_command_bytes(entry.index, bytes)
                        };
                    for event in result.events {
                        if self.probe.is_some() {
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
        drop(kv);
        self.raft.applied(last);
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), EngineFailure> {
        let kv = KvStateMachine::restore(&snapshot.data).map_err(EngineFailure::CorruptSnapshot)?;
        assert_eq!(
            kv.applied_index(),
            snapshot.meta.last_index,
            "snapshot metadata and content agree"
        );
        let revision = kv.revision();
        *self.local.kv_mut() = kv;
        let _ = self.events.send(ChangeFeed::Skipped { revision });
        self.pending.writes_superseded_by_snapshot(snapshot.meta.last_index);
        self.last_snapshot_index = snapshot.meta.last_index;
        self.raft.applied(snapshot.meta.last_index);
        Ok(())
    }

    async fn send_snapshot(&mut self, request: SnapshotRequest) -> Result<(), EngineFailure> {
        let snapshot = self.storage.load_snapshot().await?;
        match snapshot {
            Some(snapshot) if snapshot.meta.last_index >= request.min_index => {
                let message = Message {
                    from: self.config.node_id,
                    to: request.to,
                    term: request.term,
                    body: MessageBody::InstallSnapshot { snapshot },
                };
                let sent = self.transport.send(request.to, PeerMessage::Raft(message));
                // A streaming transport reports the outcome when the transfer ends; until then
                // the leader waits (the follower's progress stays paused in snapshot mode).
                if !sent || !self.transport.reports_snapshot_delivery() {
                    self.raft.report_snapshot(request.to, sent);
                }
            }
            _ => self.raft.report_snapshot(request.to, false),
        }
        Ok(())
    }

    /// Takes a snapshot of the state machine once enough entries were applied since the last.
    fn maybe_snapshot(&mut self) -> Result<(), EngineFailure> {
        if self.snapshot_in_progress.is_some()
            || self.disk_full
            || self.clock.monotonic_ms() < self.snapshot_retry_at_ms
        {
            return Ok(());
        }
        let applied = self.local.kv().applied_index();
        if applied < self.last_snapshot_index + self.config.snapshot_every_entries {
            return Ok(());
        }
        let Some(last_term) = self.raft.log().term(applied) else { return Ok(()) };
        let meta = SnapshotMeta {
            last_index: applied,
            last_term,
            config: self.raft.log().config_at(applied).clone(),
        };
        let snapshot = Snapshot { meta, data: self.local.kv().snapshot() };
        let compact_to = applied.saturating_sub(self.config.retained_log_entries);
        self.storage.submit(StorageJob::SaveSnapshot { snapshot, compact_to })?;
        self.snapshot_in_progress = Some((applied, compact_to));
        Ok(())
    }

    /// Publishes until when lease reads may be answered without the engine, at the end of a
    /// cycle, once everything committed is applied. The lease is measured from the tick at
    /// which its heartbeat round was sent: followers reset their election timers no earlier
    /// than that, and ticks are never taken early.
    fn publish_lease(&self) {
        let caught_up = self.local.kv().applied_index() >= self.raft.log().committed();
        let until_ms = match (self.raft.lease_start_tick(), self.config.raft.lease_ticks()) {
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
    fn revoke_lease_if_lost(&self) {
        if self.raft.lease_start_tick().is_none() {
            self.local.set_lease_until_ms(0);
        }
    }

    fn record_tick_time(&mut self, now_ms: u64) {
        self.tick_times_ms.push_back((self.raft.tick_count(), now_ms));
        // A lease never reaches further back than one election timeout.
        let keep = self.config.raft.election_timeout_ticks as usize + 2;
        while self.tick_times_ms.len() > keep {
            self.tick_times_ms.pop_front();
        }
    }

    /// When tick `tick` was taken, if it is recent enough to be remembered.
    fn tick_time_ms(&self, tick: u64) -> Option<u64> {
        self.tick_times_ms.iter().rev().find(|(at, _)| *at == tick).map(|(_, ms)| *ms)
    }

    fn publish_status(&mut self) {
        let raft = self.raft.status();
        let kv = self.local.kv();
        let last_index = raft.last_index;
        let peers = raft
            .matched
            .iter()
            .map(|(id, matched)| PeerStatus {
                id: *id,
                matched: *matched,
                lag: last_index.saturating_sub(*matched),
            })
            .collect();
        let status = EngineStatus {
            id: raft.id,
            role: raft.role,
            term: raft.term,
            leader: known(raft.leader),
            commit_index: raft.commit,
            applied_index: kv.applied_index(),
            last_index,
            snapshot_index: raft.first_index - 1,
            revision: kv.revision(),
            key_count: kv.key_count(),
            voters: raft.config.voters.iter().copied().collect(),
            learners: raft.config.learners.iter().copied().collect(),
            peer_addresses: self.shared_peer_addresses(&raft.config.addresses),
            peers,
            leader_changes: self.leader_changes,
            proposals_committed: self.proposals_committed,
            proposals_failed: self.proposals_failed,
            proposals_pending: self.pending.writes.len(),
            disk_full: self.disk_full,
            snapshots_abandoned: self.snapshots_abandoned,
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
        current: &BTreeMap<NodeId, String>,
    ) -> Arc<BTreeMap<NodeId, String>> {
        let published = &self.status.borrow().peer_addresses;
        if **published == *current { Arc::clone(published) } else { Arc::new(current.clone()) }
    }

    /// The Raft core, for the simulator's invariant checks.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }
}

/// What a probe is shown of a persist batch (copied only when a probe is attached).
struct PersistedView {
    id: u64,
    entries: Vec<Entry>,
    hard_state: Option<crate::raft::HardState>,
    snapshot: Option<(LogIndex, crate::raft::Term)>,
}

fn known(id: NodeId) -> Option<NodeId> {
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
