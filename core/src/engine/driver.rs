//! The engine's loop. One iteration: wait for one input (storage progress, a peer message, a
//! client request, a tick) and take whatever else is already queued, up to a bound; then carry
//! out Raft's `Ready` — submit the persist batch, send the messages, apply committed entries,
//! answer writes and reads — and publish the status.
//!
//! Group commit and batching fall out of this shape: everything that arrives while a sync is
//! in flight is proposed, appended and handed to storage together, and the storage writer turns
//! whatever is queued into one sync.
//!
//! The loop owns what a node has once (transport, storage, clock, request queue); what its
//! group's replica owns besides the Raft core is in `replica.rs`.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::config::EngineConfig;
use super::error::EngineError;
use super::handle::EngineHandle;
use super::probe::{CycleView, EngineProbe};
use super::replica::Replica;
use super::request::EngineRequest;
use crate::kv::{KvError, KvStateMachine};
use crate::raft::{
    ConfigError, Entry, LogIndex, Message, MessageBody, NodeId, Raft, Ready, RestoredState,
    SnapshotRequest,
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

pub struct Engine<T: Transport, S: Storage, C: Clock> {
    config: EngineConfig,
    raft: Raft,
    /// Everything else the group's replica on this node owns.
    replica: Replica,
    transport: T,
    storage: S,
    clock: C,
    requests: mpsc::Receiver<EngineRequest>,
    next_tick_ms: u64,
    /// Set once a shutdown was requested: answered when storage has caught up.
    shutdown: Option<oneshot::Sender<()>>,
    /// False once the transport said it will deliver nothing more.
    transport_open: bool,
    probe: Option<Box<dyn EngineProbe>>,
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
        let raft = Raft::new(config.node_id, config.raft.clone(), restored, rng_seed);
        let (request_sender, requests) = mpsc::channel(config.max_queued_requests);
        let replica = Replica::new(&config, kv, &raft, clock.monotonic_ms());
        let handle = EngineHandle {
            requests: request_sender,
            status: replica.status_receiver(),
            events: replica.events().clone(),
            local: replica.local().clone(),
        };
        let engine = Engine {
            raft,
            replica,
            transport,
            storage,
            requests,
            next_tick_ms: clock.monotonic_ms() + config.tick_ms,
            clock,
            shutdown: None,
            transport_open: true,
            probe: None,
            peers_config_index: None,
            known_addresses: BTreeMap::new(),
            config,
        };
        Ok((engine, handle))
    }

    /// Lets `probe` observe every cycle (the simulator's invariant checks).
    pub fn with_probe(mut self, probe: Box<dyn EngineProbe>) -> Self {
        self.probe = Some(probe);
        self.replica.observe();
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
        self.replica.fail_all(error);
        result
    }

    async fn main_loop(&mut self) -> Result<(), EngineFailure> {
        loop {
            self.carry_out_ready().await?;
            if self.shutdown.is_some() && self.replica.storage_caught_up() {
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
            self.replica.record_tick_time(self.raft.tick_count(), now_ms);
            self.next_tick_ms += self.config.tick_ms;
            fired += 1;
        }
        if self.next_tick_ms <= now_ms {
            self.next_tick_ms = now_ms + self.config.tick_ms;
        }
        self.replica.maybe_expire_keys(&mut self.raft, &self.clock);
    }

    fn on_peer_message(&mut self, message: PeerMessage) {
        match message {
            PeerMessage::Raft(message) => self.raft.step(message),
        }
    }

    fn on_storage_progress(&mut self, progress: StorageProgress) {
        self.replica.on_storage_progress(&mut self.raft, &self.clock, progress);
    }

    fn on_request(&mut self, request: EngineRequest) {
        let (raft, replica) = (&mut self.raft, &mut self.replica);
        match request {
            EngineRequest::Write { command, session, reply } => {
                replica.on_write(raft, &self.clock, command, session, reply)
            }
            EngineRequest::Read { query, consistency, reply } => {
                replica.on_read(raft, query, consistency, reply)
            }
            EngineRequest::Snapshot { reply } => replica.on_snapshot_request(raft, reply),
            EngineRequest::TransferLeadership { to, reply } => {
                replica.on_transfer_leadership(raft, to, reply)
            }
            EngineRequest::ChangeMembership { change, reply } => {
                replica.on_change_membership(raft, change, reply)
            }
            EngineRequest::Shutdown { reply } => self.begin_shutdown(Some(reply)),
        }
    }

    fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        let (sender, _receiver) = oneshot::channel();
        self.shutdown = Some(reply.unwrap_or(sender));
        self.requests.close();
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
        self.replica.answer_applied_reads();
        if let Some(job) = self.replica.snapshot_due(&self.raft, &self.clock) {
            self.storage.submit(job)?;
        }
        self.update_transport_peers();
        self.replica.publish_lease(&self.raft);
        self.replica.publish_status(&self.raft);
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
            self.replica.on_soft_state(soft_state);
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
            self.replica.submitted(batch.id);
            self.storage.submit(StorageJob::Persist(batch))?;
        }
        // Before any message leaves: one of them may be a TimeoutNow that ends the lease.
        self.replica.revoke_lease_if_lost(&self.raft);
        for message in messages {
            let to = message.to;
            self.transport.send(to, PeerMessage::Raft(message));
        }
        if let Some(snapshot) = snapshot_to_apply {
            self.replica
                .install_snapshot(&mut self.raft, snapshot)
                .map_err(EngineFailure::CorruptSnapshot)?;
        }
        self.replica.apply(&mut self.raft, &self.clock, &committed_entries);
        let changes = self.replica.take_changes_for_probe();
        if let (Some(probe), Some((batch, messages, snapshot))) = (self.probe.as_mut(), observed) {
            probe.observe(CycleView {
                raft: &self.raft,
                kv: &self.replica.local().kv(),
                persist_batch: batch.as_ref().map(|batch| (batch.id, batch.entries.as_slice())),
                persist_hard_state: batch.as_ref().and_then(|batch| batch.hard_state),
                persist_snapshot: batch.as_ref().and_then(|batch| batch.snapshot),
                durable_batch: self.replica.durable_batch(),
                messages: &messages,
                snapshot_installed: snapshot.as_ref(),
                applied: &committed_entries,
                changes: &changes,
            });
        }
        self.replica.on_read_states(&self.raft, reads, failed_reads);
        for request in snapshot_requests {
            self.send_snapshot(request).await?;
        }
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
