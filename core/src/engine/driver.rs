//! The engine's loop. One iteration: wait for one input (storage progress, a peer message, a
//! client request, a tick) and take whatever else is already queued, up to a bound; then carry
//! out Raft's `Ready` — submit the persist batch, send the messages, apply committed entries,
//! answer writes and reads — and publish the status.
//!
//! Group commit and batching fall out of this shape: everything that arrives while a sync is
//! in flight is proposed, appended and handed to storage together, and the storage writer turns
//! whatever is queued into one sync.
//!
//! The loop owns what a node has once (transport, clock, request queue); what each group's
//! replica owns besides its Raft core is in `replica.rs`. A node of a single-group cluster
//! runs one Raft core and sends its messages one by one ([`Engine::new`]); a node hosting
//! replicas of many groups ([`Engine::hosting`]) runs their cores in a
//! [`GroupHost`](crate::shard::GroupHost), which coalesces their messages into one batch per
//! peer node and lets idle groups quiesce. Each group has its own storage for now, so N
//! groups cost N syncs per cycle; a shared log is what removes that (see the sharding issue).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::config::EngineConfig;
use super::error::EngineError;
use super::handle::EngineHandle;
use super::probe::{CycleView, EngineProbe};
use super::replica::Replica;
use super::request::EngineRequest;
use super::slot_ownership::SlotOwnership;
use crate::kv::{KvError, KvStateMachine};
use crate::raft::{
    ConfigError, Entry, LogIndex, Message, MessageBody, NodeId, Raft, ReadState, Ready,
    RestoredState, Snapshot, SnapshotMeta, SnapshotRequest,
};
use crate::seams::storage::StorageFailure;
use crate::seams::transport::SnapshotReport;
use crate::seams::{Clock, Storage, StorageJob, StorageProgress, Transport};
use crate::shard::{GroupHost, HostConfig, ShardId};
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

/// How often a node hosting many groups looks at all of them for work that no input brings
/// (see `Engine::on_tick`).
const HOSTED_SWEEP_INTERVAL_MS: u64 = 100;

/// The shard of a single-group cluster's one group.
const SINGLE_GROUP: ShardId = ShardId(0);

/// The Raft cores the loop drives.
// An engine has one of these for its whole life: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Cores {
    /// A node of a single-group cluster: messages travel one by one (`PeerMessage::Raft`).
    One(Raft),
    /// A node hosting replicas of many groups: messages travel in one batch per peer node.
    Hosted(GroupHost),
}

impl Cores {
    fn get(&self, shard: ShardId) -> Option<&Raft> {
        match self {
            Cores::One(raft) => (shard == SINGLE_GROUP).then_some(raft),
            Cores::Hosted(host) => host.group(shard),
        }
    }

    /// A group given work (a request): a quiescent one wakes.
    fn for_work(&mut self, shard: ShardId) -> Option<&mut Raft> {
        match self {
            Cores::One(raft) => (shard == SINGLE_GROUP).then_some(raft),
            Cores::Hosted(host) => host.group_mut(shard),
        }
    }

    /// A group told what became of its earlier output (persisted, applied, a snapshot's
    /// fate), which gives it no new work and must not wake it.
    fn for_report(&mut self, shard: ShardId) -> Option<&mut Raft> {
        match self {
            Cores::One(raft) => (shard == SINGLE_GROUP).then_some(raft),
            Cores::Hosted(host) => host.group_mut_without_waking(shard),
        }
    }

    fn all(&self) -> Vec<(ShardId, &Raft)> {
        match self {
            Cores::One(raft) => vec![(SINGLE_GROUP, raft)],
            Cores::Hosted(host) => host
                .shards()
                .map(|shard| (shard, host.group(shard).expect("listed by the host")))
                .collect(),
        }
    }
}

/// One hosted group to start: its durable state as recovered and its storage.
pub struct HostedGroupStart<S> {
    pub shard: ShardId,
    pub restored: RestoredState,
    /// The state-machine snapshot, if its log starts after one.
    pub snapshot_data: Option<Bytes>,
    pub storage: S,
}

pub struct Engine<T: Transport, S: Storage, C: Clock> {
    config: EngineConfig,
    cores: Cores,
    /// Everything else each group's replica on this node owns, by shard.
    replicas: BTreeMap<ShardId, Replica>,
    /// Each group's storage, by shard.
    storages: BTreeMap<ShardId, S>,
    transport: T,
    clock: C,
    requests: mpsc::Receiver<(ShardId, EngineRequest)>,
    next_tick_ms: u64,
    /// Ticks the loop is sleeping past (`Engine::ms_until_next_tick`): taken together when it
    /// wakes, or first thing when an input arrives before.
    deferred_ticks: u32,
    /// A hosting node's next look at all its groups (`HOSTED_SWEEP_INTERVAL_MS`).
    next_sweep_ms: u64,
    /// The groups whose replica awaits a report from its storage (`Replica::awaits_storage`),
    /// kept up to date for every group given input.
    awaiting_storage: BTreeSet<ShardId>,
    /// Hosted groups given any input this cycle: only their status and lease can have moved.
    touched: BTreeSet<ShardId>,
    /// Set once a shutdown was requested: answered when storage has caught up.
    shutdown: Option<oneshot::Sender<()>>,
    /// False once the transport said it will deliver nothing more.
    transport_open: bool,
    probe: Option<Box<dyn EngineProbe>>,
    /// Per group, the configurations (latest, last committed; by log index) and the leader
    /// the transport's peers were last set from.
    peers_key: BTreeMap<ShardId, (LogIndex, LogIndex, NodeId)>,
    /// Every member address seen in any configuration since the start: a lagging follower may
    /// hear from a leader that its own (stale) configuration does not list, and must be able
    /// to answer it.
    known_addresses: BTreeMap<NodeId, String>,
}

impl<T: Transport, S: Storage, C: Clock> Engine<T, S, C> {
    /// A node of a single-group cluster, restarted from `restored` (plus the state-machine
    /// snapshot `snapshot_data`, if the log starts after one). `rng_seed` seeds the election
    /// jitter.
    pub fn new(
        config: EngineConfig,
        restored: RestoredState,
        snapshot_data: Option<Bytes>,
        transport: T,
        storage: S,
        clock: C,
        rng_seed: u64,
    ) -> Result<(Self, EngineHandle), EngineFailure> {
        validate(&config)?;
        let kv = restore_state_machine(&config, &restored, snapshot_data)?;
        let raft = Raft::new(config.node_id, config.raft.clone(), restored, rng_seed);
        let replica = Replica::new(
            &config,
            ShardId::META,
            kv,
            &raft,
            clock.monotonic_ms(),
            config.event_buffer,
        );
        let (mut engine, mut handles) = Engine::assemble(
            config,
            Cores::One(raft),
            BTreeMap::from([(SINGLE_GROUP, replica)]),
            BTreeMap::from([(SINGLE_GROUP, storage)]),
            transport,
            clock,
        );
        let handle = handles.remove(&SINGLE_GROUP).expect("the one group has a handle");
        engine.touched.clear();
        Ok((engine, handle))
    }

    /// A node hosting a replica of each of `groups` (at least one), driven through one
    /// [`GroupHost`]; returns a handle per group. `rng_seed` must differ at every start of
    /// the node: it seeds each group's election jitter and the host's incarnation.
    pub fn hosting(
        config: EngineConfig,
        host_config: HostConfig,
        groups: Vec<HostedGroupStart<S>>,
        transport: T,
        clock: C,
        rng_seed: u64,
    ) -> Result<(Self, BTreeMap<ShardId, EngineHandle>), EngineFailure> {
        validate(&config)?;
        if groups.is_empty() {
            return Err(EngineFailure::InvalidConfig("a node must host at least one group".into()));
        }
        let mut host = GroupHost::new(config.node_id, host_config, rng_seed);
        let mut replicas = BTreeMap::new();
        let mut storages = BTreeMap::new();
        for group in groups {
            if replicas.contains_key(&group.shard) {
                return Err(EngineFailure::InvalidConfig(format!(
                    "{} is listed twice among the hosted groups",
                    group.shard
                )));
            }
            let kv = restore_state_machine(&config, &group.restored, group.snapshot_data)?;
            // Each group's jitter from its own seed: groups that started together must not
            // time out together.
            let group_seed =
                rng_seed ^ u64::from(group.shard.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let raft = Raft::new(config.node_id, config.raft.clone(), group.restored, group_seed);
            let event_buffer = config.event_buffer_per_hosted_group;
            let replica =
                Replica::new(&config, group.shard, kv, &raft, clock.monotonic_ms(), event_buffer);
            replicas.insert(group.shard, replica);
            storages.insert(group.shard, group.storage);
            host.add_group(group.shard, raft);
        }
        Ok(Engine::assemble(config, Cores::Hosted(host), replicas, storages, transport, clock))
    }

    fn assemble(
        config: EngineConfig,
        cores: Cores,
        replicas: BTreeMap<ShardId, Replica>,
        storages: BTreeMap<ShardId, S>,
        transport: T,
        clock: C,
    ) -> (Self, BTreeMap<ShardId, EngineHandle>) {
        assert_eq!(
            replicas.keys().collect::<Vec<_>>(),
            storages.keys().collect::<Vec<_>>(),
            "every group has a replica and a storage"
        );
        let (request_sender, requests) = mpsc::channel(config.max_queued_requests);
        let ownership = Arc::new(SlotOwnership::default());
        let handles = replicas
            .iter()
            .map(|(shard, replica)| {
                let handle = EngineHandle {
                    shard: *shard,
                    requests: request_sender.clone(),
                    status: replica.status_receiver(),
                    events: replica.events().clone(),
                    local: replica.local().clone(),
                    ownership: ownership.clone(),
                };
                (*shard, handle)
            })
            .collect();
        let engine = Engine {
            touched: replicas.keys().copied().collect(),
            cores,
            replicas,
            storages,
            transport,
            requests,
            next_tick_ms: clock.monotonic_ms() + config.tick_ms,
            deferred_ticks: 0,
            next_sweep_ms: 0,
            awaiting_storage: BTreeSet::new(),
            clock,
            shutdown: None,
            transport_open: true,
            probe: None,
            peers_key: BTreeMap::new(),
            known_addresses: BTreeMap::new(),
            config,
        };
        (engine, handles)
    }

    /// Lets `probe` observe every cycle (the simulator's invariant checks).
    pub fn with_probe(mut self, probe: Box<dyn EngineProbe>) -> Self {
        self.probe = Some(probe);
        if let Cores::Hosted(host) = &mut self.cores {
            host.copy_messages_for_probe();
        }
        for replica in self.replicas.values_mut() {
            replica.observe();
        }
        self
    }

    /// Runs the node until shutdown (`Ok`) or a fatal failure. `storage_writer` is the
    /// storage's writer future (for hosted groups, all their writers joined), run
    /// concurrently with the engine's loop.
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
        for replica in self.replicas.values_mut() {
            replica.fail_all(error.clone());
        }
        result
    }

    async fn main_loop(&mut self) -> Result<(), EngineFailure> {
        loop {
            self.carry_out_ready().await?;
            if self.shutdown.is_some()
                && self.replicas.values().all(|replica| replica.storage_caught_up())
            {
                if let Some(done) = self.shutdown.take() {
                    let _ = done.send(());
                }
                return Ok(());
            }
            let until_tick_ms = self.ms_until_next_tick();
            let accepting = self.shutdown.is_none();
            tokio::select! {
                biased;
                (shard, progress) = progress_of_any(&mut self.storages, &self.awaiting_storage) => {
                    self.take_deferred_ticks();
                    self.on_storage_progress(shard, progress?);
                    self.take_reported_progress()?;
                }
                message = self.transport.recv(), if self.transport_open => {
                    self.take_deferred_ticks();
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
                    Some((shard, request)) => {
                        self.take_deferred_ticks();
                        self.on_request(shard, request);
                        for _ in 1..self.config.max_inputs_per_cycle {
                            let Ok((shard, request)) = self.requests.try_recv() else { break };
                            self.on_request(shard, request);
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

    /// How long the loop may sleep before its next tick. A hosting node whose groups are all
    /// quiescent sleeps past the ticks that would only count its peers' silence
    /// (`GroupHost::quiet_ticks_ahead`), up to the next ping or peer timeout, the next sweep
    /// or the first key expiry of any group: an idle node then wakes about ten times a second
    /// instead of a hundred, and those wake-ups were most of its CPU. A single group ticks
    /// every tick, as it always has.
    fn ms_until_next_tick(&mut self) -> u64 {
        let now_ms = self.clock.monotonic_ms();
        self.deferred_ticks = 0;
        let mut wake_ms = self.next_tick_ms;
        if let Cores::Hosted(host) = &self.cores {
            let quiet_ticks = u64::from(host.quiet_ticks_ahead());
            if quiet_ticks > 0 {
                let now_wall_ms = self.clock.wall_ms();
                let first_expiry_ms =
                    self.replicas.values().filter_map(Replica::next_expiry_wall_ms).min().map_or(
                        u64::MAX,
                        |due_wall_ms| {
                            now_ms.saturating_add(due_wall_ms.saturating_sub(now_wall_ms))
                        },
                    );
                wake_ms = (self.next_tick_ms + quiet_ticks * self.config.tick_ms)
                    .min(self.next_sweep_ms)
                    .min(first_expiry_ms)
                    .max(self.next_tick_ms);
                let deferred = (wake_ms - self.next_tick_ms) / self.config.tick_ms;
                self.deferred_ticks = u32::try_from(deferred).expect("at most the quiet ticks");
            }
        }
        wake_ms.saturating_sub(now_ms)
    }

    /// An input arrived while the loop slept past quiet ticks: the ticks due before it come
    /// first, so that a peer heard from now is not counted silent for ticks already past.
    fn take_deferred_ticks(&mut self) {
        if self.deferred_ticks > 0 && self.next_tick_ms <= self.clock.monotonic_ms() {
            self.on_tick();
        }
        self.deferred_ticks = 0;
    }

    fn on_tick(&mut self) {
        let now_ms = self.clock.monotonic_ms();
        let mut fired = 0;
        // Deferred ticks were planned, not a stall: they are all taken at once.
        let max_ticks = MAX_TICKS_PER_WAKE.saturating_add(self.deferred_ticks);
        self.deferred_ticks = 0;
        while self.next_tick_ms <= now_ms && fired < max_ticks {
            match &mut self.cores {
                Cores::One(raft) => {
                    raft.tick();
                    let replica = self.replicas.get_mut(&SINGLE_GROUP).expect("the one group");
                    replica.record_tick_time(raft.tick_count(), now_ms);
                }
                Cores::Hosted(host) => {
                    host.tick();
                    for shard in host.awake_shards() {
                        let tick = host.group(shard).expect("awake groups are hosted").tick_count();
                        let replica = self.replicas.get_mut(&shard).expect("every group");
                        replica.record_tick_time(tick, now_ms);
                        self.touched.insert(shard);
                    }
                }
            }
            self.next_tick_ms += self.config.tick_ms;
            fired += 1;
        }
        if self.next_tick_ms <= now_ms {
            self.next_tick_ms = now_ms + self.config.tick_ms;
        }
        // A node hosting many groups looks at every one of them (compaction asked for, keys
        // due to expire) once per sweep interval, not at every tick: at 1,000 groups and a
        // 10 ms tick, looking at every tick cost most of an idle node's CPU. Neither waits on
        // it for correctness: a read never returns an expired key, and compaction only frees
        // disk space. A single group looks at every tick, as it always has.
        if let Cores::Hosted(_) = self.cores {
            if now_ms < self.next_sweep_ms {
                return;
            }
            self.next_sweep_ms = now_ms + HOSTED_SWEEP_INTERVAL_MS;
            // A shared log asks groups whose old records keep it from shrinking to compact.
            // The two maps have the same keys (`Engine::assemble` checks).
            for ((shard, storage), replica) in self.storages.iter().zip(self.replicas.values_mut())
            {
                let wanted = storage.compaction_wanted();
                if wanted > replica.compaction_wanted() {
                    replica.ask_compaction(wanted);
                    self.touched.insert(*shard);
                }
            }
        }
        let now_wall_ms = self.clock.wall_ms();
        for (shard, replica) in &mut self.replicas {
            if !replica.has_expiry_due(now_wall_ms) {
                continue;
            }
            let Some(raft) = self.cores.get(*shard) else { continue };
            if !replica.expiry_may_be_due(raft, &self.clock) {
                continue;
            }
            let raft = self.cores.for_work(*shard).expect("checked above");
            replica.maybe_expire_keys(raft, &self.clock);
            self.touched.insert(*shard);
        }
    }

    fn on_peer_message(&mut self, message: PeerMessage) {
        match (&mut self.cores, message) {
            (Cores::One(raft), PeerMessage::Raft(message)) => raft.step(message),
            (Cores::Hosted(host), PeerMessage::Batch(batch)) => host.step(batch),
            (Cores::Hosted(host), PeerMessage::Group { shard, message }) => {
                host.step_group_message(shard, message)
            }
            // A peer of the other kind (a single-group node and a multi-group one): the two
            // cannot be in one cluster, and their messages mean nothing to each other.
            (_, message) => {
                tracing::warn!(kind = message.kind(), "dropped a message of the other cluster kind")
            }
        }
    }

    fn on_storage_progress(&mut self, shard: ShardId, progress: StorageProgress) {
        let (Some(raft), Some(replica)) =
            (self.cores.for_report(shard), self.replicas.get_mut(&shard))
        else {
            return;
        };
        replica.on_storage_progress(raft, &self.clock, progress);
        self.touched.insert(shard);
    }

    /// Takes the progress every other awaited storage has already reported. One sync of a
    /// shared log makes many groups' batches durable at once: taken one per turn of the loop,
    /// each would be carried out on its own, and its acknowledgements would leave in a message
    /// of their own to each peer instead of in one batch per peer with the others'.
    fn take_reported_progress(&mut self) -> Result<(), StorageFailure> {
        if self.awaiting_storage.len() <= 1 {
            return Ok(());
        }
        let awaiting: Vec<ShardId> = self.awaiting_storage.iter().copied().collect();
        for shard in awaiting {
            let storage = self.storages.get_mut(&shard).expect("every group has a storage");
            // Cancel-safe (`Storage::progress_changed`): a storage with no news is asked again
            // at the next turn of the loop.
            if let Some(progress) = storage.progress_changed().now_or_never() {
                self.on_storage_progress(shard, progress?);
            }
        }
        Ok(())
    }

    fn on_request(&mut self, shard: ShardId, request: EngineRequest) {
        if let EngineRequest::Shutdown { reply } = request {
            self.begin_shutdown(Some(reply));
            return;
        }
        let (Some(replica), true) =
            (self.replicas.get_mut(&shard), self.cores.get(shard).is_some())
        else {
            request.refuse(EngineError::NotHosted { shard: shard.0 });
            return;
        };
        self.touched.insert(shard);
        if let EngineRequest::Snapshot { reply } = request {
            let raft = self.cores.get(shard).expect("checked above");
            replica.on_snapshot_request(raft, reply);
            return;
        }
        let raft = self.cores.for_work(shard).expect("checked above");
        match request {
            EngineRequest::Write { command, session, reply } => {
                replica.on_write(raft, &self.clock, command, session, reply)
            }
            EngineRequest::Read { query, consistency, reply } => {
                replica.on_read(raft, query, consistency, reply)
            }
            EngineRequest::TransferLeadership { to, reply } => {
                replica.on_transfer_leadership(raft, to, reply)
            }
            EngineRequest::ChangeMembership { change, reply } => {
                replica.on_change_membership(raft, change, reply)
            }
            EngineRequest::Snapshot { .. } | EngineRequest::Shutdown { .. } => {
                unreachable!("handled above")
            }
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
            match &mut self.cores {
                Cores::One(raft) => raft.report_unreachable(peer),
                // Hosted groups follow their peers as nodes (`peer_liveness.rs`).
                Cores::Hosted(_) => {}
            }
        }
        for report in self.transport.take_snapshot_reports() {
            let SnapshotReport { peer, shard, delivered } = report;
            match (&mut self.cores, shard) {
                (Cores::One(raft), None) => raft.report_snapshot(peer, delivered),
                (Cores::Hosted(host), Some(shard)) => {
                    if let Some(raft) = host.group_mut_without_waking(shard) {
                        raft.report_snapshot(peer, delivered);
                    }
                }
                // Whatever transfer to the peer was under way ended: every group that may
                // have been sending it one hears so (a group that was not ignores it).
                (Cores::Hosted(host), None) => {
                    let shards: Vec<ShardId> = host.shards().collect();
                    for shard in shards {
                        let raft = host.group_mut_without_waking(shard).expect("listed");
                        raft.report_snapshot(peer, delivered);
                    }
                }
                (Cores::One(_), Some(_)) => {}
            }
        }
        // Carrying out a Ready can make more (a durable batch releases deferred answers), but
        // only a few rounds' worth; one that never drains is a bug in Raft that would spin this
        // loop forever without yielding, so tests fail on it instead of hanging.
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            match &mut self.cores {
                Cores::One(raft) => {
                    if !raft.has_ready() {
                        break;
                    }
                    debug_assert!(
                        rounds <= 1_000,
                        "Ready does not drain: {:?}",
                        raft.ready_reasons()
                    );
                    let ready = raft.ready();
                    let (rest, messages) = self.begin_ready(SINGLE_GROUP, ready)?;
                    for message in messages {
                        let to = message.to;
                        self.transport.send(to, PeerMessage::Raft(message));
                    }
                    self.finish_ready(rest).await?;
                }
                Cores::Hosted(host) => {
                    if !host.has_ready() {
                        break;
                    }
                    debug_assert!(rounds <= 1_000, "the hosted groups' Ready does not drain");
                    let host_ready = host.ready();
                    let mut rests = Vec::with_capacity(host_ready.groups.len());
                    for (shard, ready) in host_ready.groups {
                        self.touched.insert(shard);
                        // The host batches every message; a probe's copies are not sent again.
                        let (rest, copies) = self.begin_ready(shard, ready)?;
                        debug_assert!(
                            copies.is_empty() || self.probe.is_some(),
                            "the host batches every message"
                        );
                        rests.push(rest);
                    }
                    for batch in host_ready.batches {
                        let to = batch.to;
                        self.transport.send(to, PeerMessage::Batch(batch));
                    }
                    for rest in rests {
                        self.finish_ready(rest).await?;
                    }
                }
            }
        }
        let touched = match self.cores {
            Cores::One(_) => BTreeSet::from([SINGLE_GROUP]),
            Cores::Hosted(_) => std::mem::take(&mut self.touched),
        };
        for shard in &touched {
            let (Some(raft), Some(replica)) =
                (self.cores.get(*shard), self.replicas.get_mut(shard))
            else {
                continue;
            };
            replica.answer_applied_reads();
            if let Some(job) = replica.snapshot_due(raft, &self.clock) {
                self.storages.get_mut(shard).expect("every group has a storage").submit(job)?;
            }
        }
        self.update_transport_peers(&touched);
        for shard in &touched {
            let (Some(raft), Some(replica)) =
                (self.cores.get(*shard), self.replicas.get_mut(shard))
            else {
                continue;
            };
            replica.publish_lease(raft);
            replica.publish_status(raft);
            // Only a group given input can have submitted a job or taken a storage report.
            if replica.awaits_storage() {
                self.awaiting_storage.insert(*shard);
            } else {
                self.awaiting_storage.remove(shard);
            }
        }
        Ok(())
    }

    /// Keeps the transport's peer set equal to the members of every group's configuration in
    /// force and of its last committed one. Until a removal commits, the removed member may
    /// still be the leader collecting the acknowledgements that commit it: dropping its
    /// address on append would leave it unable to hear them.
    fn update_transport_peers(&mut self, touched: &BTreeSet<ShardId>) {
        // Only a group given input can have changed its configuration or leader.
        let mut changed = false;
        for shard in touched {
            let Some(raft) = self.cores.get(*shard) else { continue };
            let log = raft.log();
            let key = (log.config_index(), log.config_index_at(log.committed()), raft.leader());
            changed |= self.peers_key.insert(*shard, key) != Some(key);
        }
        if !changed {
            return;
        }
        let groups = self.cores.all();
        let mut members = BTreeSet::new();
        for (_, raft) in &groups {
            let log = raft.log();
            let (latest, committed) = (log.config(), log.config_at(log.committed()));
            members.extend(latest.members());
            members.extend(committed.members());
            for config in [committed, latest] {
                for (id, address) in &config.addresses {
                    self.known_addresses.insert(*id, address.clone());
                }
            }
        }
        // A node joining a cluster has no configuration yet, only the addresses it was given:
        // it must still be able to answer the leader that is about to replicate one to it.
        let joining = members.is_empty();
        // The leaders too, members or not as far as this node's configurations know: a
        // follower that missed the entry adding its leader must still answer it, or it is
        // never caught up. (If no configuration this node ever saw has its address, the
        // transport learns it from the leader's own hello.) And this node itself: the
        // transport tells peers where to answer it.
        for (_, raft) in &groups {
            if !raft.leader().is_none() {
                members.insert(raft.leader());
            }
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

    /// The first half of carrying out a group's `Ready`, before its messages leave: the role
    /// change, the persist batch handed to storage, and the lease withdrawn if lost (one of
    /// the messages may be a TimeoutNow that ends it). Returns the rest and the messages.
    fn begin_ready(
        &mut self,
        shard: ShardId,
        ready: Ready,
    ) -> Result<(ReadyRest, Vec<Message>), EngineFailure> {
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
        let replica = self.replicas.get_mut(&shard).expect("a ready group has a replica");
        if let Some(soft_state) = soft_state {
            replica.on_soft_state(soft_state);
        }
        // Only a probe needs copies of what is handed on below.
        let observed = self.probe.as_ref().map(|_| {
            let batch = persist.as_ref().map(|batch| PersistedView {
                id: batch.id,
                entries: batch.entries.clone(),
                hard_state: batch.hard_state,
                snapshot: batch.snapshot.as_ref().map(|s| (s.meta.last_index, s.meta.last_term)),
            });
            Observed {
                batch,
                messages: messages.clone(),
                snapshot: snapshot_to_apply.as_ref().map(|s| s.meta.clone()),
            }
        });
        if let Some(batch) = persist {
            replica.submitted(batch.id);
            let storage = self.storages.get_mut(&shard).expect("every group has a storage");
            storage.submit(StorageJob::Persist(batch))?;
        }
        let raft = self.cores.get(shard).expect("a ready group is hosted");
        replica.revoke_lease_if_lost(raft);
        let rest = ReadyRest {
            shard,
            snapshot_to_apply,
            committed_entries,
            reads,
            failed_reads,
            snapshot_requests,
            observed,
        };
        Ok((rest, messages))
    }

    /// The second half, once the messages left: install a snapshot, apply, answer reads, send
    /// the snapshots followers need.
    async fn finish_ready(&mut self, rest: ReadyRest) -> Result<(), EngineFailure> {
        let shard = rest.shard;
        let replica = self.replicas.get_mut(&shard).expect("a ready group has a replica");
        let raft = self.cores.for_report(shard).expect("a ready group is hosted");
        if let Some(snapshot) = rest.snapshot_to_apply {
            replica.install_snapshot(raft, snapshot).map_err(EngineFailure::CorruptSnapshot)?;
        }
        replica.apply(raft, &self.clock, &rest.committed_entries);
        let changes = replica.take_changes_for_probe();
        if let (Some(probe), Some(observed)) = (self.probe.as_mut(), rest.observed) {
            let batch = observed.batch.as_ref();
            probe.observe(CycleView {
                shard,
                raft,
                kv: &replica.local().kv(),
                persist_batch: batch.map(|batch| (batch.id, batch.entries.as_slice())),
                persist_hard_state: batch.and_then(|batch| batch.hard_state),
                persist_snapshot: batch.and_then(|batch| batch.snapshot),
                durable_batch: replica.durable_batch(),
                messages: &observed.messages,
                snapshot_installed: observed.snapshot.as_ref(),
                applied: &rest.committed_entries,
                changes: &changes,
            });
        }
        replica.on_read_states(raft, rest.reads, rest.failed_reads);
        for request in rest.snapshot_requests {
            self.send_snapshot(shard, request).await?;
        }
        Ok(())
    }

    async fn send_snapshot(
        &mut self,
        shard: ShardId,
        request: SnapshotRequest,
    ) -> Result<(), EngineFailure> {
        let storage = self.storages.get_mut(&shard).expect("every group has a storage");
        let snapshot: Option<Snapshot> = storage.load_snapshot().await?;
        let snapshot = snapshot.filter(|snapshot| snapshot.meta.last_index >= request.min_index);
        let Some(snapshot) = snapshot else {
            let raft = self.cores.for_report(shard).expect("a ready group is hosted");
            raft.report_snapshot(request.to, false);
            return Ok(());
        };
        let message = Message {
            from: self.config.node_id,
            to: request.to,
            term: request.term,
            body: MessageBody::InstallSnapshot { snapshot },
        };
        // A hosted group's snapshot leaves outside its node's batch, so that the transport
        // streams it in pieces as it streams a single group's.
        let message = match self.cores {
            Cores::One(_) => PeerMessage::Raft(message),
            Cores::Hosted(_) => PeerMessage::Group { shard, message },
        };
        let sent = self.transport.send(request.to, message);
        // A streaming transport reports the outcome when the transfer ends; until then the
        // leader waits (the follower's progress stays paused in snapshot mode).
        if !sent || !self.transport.reports_snapshot_delivery() {
            let raft = self.cores.for_report(shard).expect("a ready group is hosted");
            raft.report_snapshot(request.to, sent);
        }
        Ok(())
    }

    /// Shard `shard`'s Raft core, for the simulator's invariant checks.
    pub fn group(&self, shard: ShardId) -> Option<&Raft> {
        self.cores.get(shard)
    }
}

/// Checks the settings every engine needs.
fn validate(config: &EngineConfig) -> Result<(), EngineFailure> {
    config.raft.validate()?;
    let entry_limit = config.kv_limits.max_value_bytes + config.kv_limits.max_key_bytes + 4096;
    if config.raft.max_message_bytes < entry_limit {
        return Err(EngineFailure::InvalidConfig(format!(
            "raft max_message_bytes ({}) must fit the largest write ({entry_limit} bytes)",
            config.raft.max_message_bytes
        )));
    }
    Ok(())
}

/// A group's state machine as of its log's snapshot point.
fn restore_state_machine(
    config: &EngineConfig,
    restored: &RestoredState,
    snapshot_data: Option<Bytes>,
) -> Result<KvStateMachine, EngineFailure> {
    let kv = match snapshot_data {
        Some(data) => KvStateMachine::restore(&data).map_err(EngineFailure::CorruptSnapshot)?,
        None => {
            KvStateMachine::new(config.kv_limits.clone()).map_err(EngineFailure::StateMachine)?
        }
    };
    assert_eq!(
        kv.applied_index(),
        restored.snapshot.last_index,
        "the state-machine snapshot and the log's snapshot point must agree"
    );
    Ok(kv)
}

/// The next progress of any group's storage, in shard order when several moved at once.
/// With many groups, only the storages whose replica awaits something from them are asked: an
/// idle group's storage has nothing to report, and asking a thousand of them at every turn
/// of the loop is what would make idle groups cost CPU.
async fn progress_of_any<S: Storage>(
    storages: &mut BTreeMap<ShardId, S>,
    awaiting: &BTreeSet<ShardId>,
) -> (ShardId, Result<StorageProgress, StorageFailure>) {
    if storages.len() == 1 {
        let (shard, storage) = storages.iter_mut().next().expect("one storage");
        return (*shard, storage.progress_changed().await);
    }
    // Not the replicas' own answer (`Replica::awaits_storage`) for each of them: the loop
    // waits here at every turn, and looking at a thousand replicas (or storages) each time cost
    // an idle node more than everything else it does.
    if awaiting.is_empty() {
        // Nothing outstanding: the next submission ends this wait (the loop polls anew).
        return std::future::pending().await;
    }
    let waiting: Vec<_> = storages
        .iter_mut()
        .filter(|(shard, _)| awaiting.contains(shard))
        .map(|(shard, storage)| Box::pin(async move { (*shard, storage.progress_changed().await) }))
        .collect();
    if waiting.is_empty() {
        // Nothing outstanding: the next submission ends this wait (the loop polls anew).
        return std::future::pending().await;
    }
    futures::future::select_all(waiting).await.0
}

/// What is left of a group's `Ready` after its first half (`Engine::begin_ready`).
struct ReadyRest {
    shard: ShardId,
    snapshot_to_apply: Option<Snapshot>,
    committed_entries: Vec<Entry>,
    reads: Vec<ReadState>,
    failed_reads: Vec<u64>,
    snapshot_requests: Vec<SnapshotRequest>,
    observed: Option<Observed>,
}

/// Copies for a probe of what a `Ready` handed on.
struct Observed {
    batch: Option<PersistedView>,
    messages: Vec<Message>,
    snapshot: Option<SnapshotMeta>,
}

/// What a probe is shown of a persist batch (copied only when a probe is attached).
struct PersistedView {
    id: u64,
    entries: Vec<Entry>,
    hard_state: Option<crate::raft::HardState>,
    snapshot: Option<(LogIndex, crate::raft::Term)>,
}
