//! The TCP transport. One outbound connection per peer, written by a task that owns a bounded
//! queue (by count and by bytes: a slow peer cannot exhaust memory; excess is dropped and Raft
//! resends). Inbound connections are accepted up to a limit and read by one task each; a newer
//! connection from the same peer replaces the older one.
//!
//! Streams can stall without an error — a dead peer, or turmoil's TCP, which never retransmits
//! a dropped segment — so the receiver acknowledges frames and the sender replaces any
//! connection whose frames stay unacknowledged past the delivery deadline. That deadline is the
//! transport's per-RPC deadline; Raft messages are one-way, so there is no reply to wait for.
//!
//! Tasks are spawned with `spawn_local`: the transport must run inside a `LocalSet` (turmoil
//! hosts do; the node runs its engine thread on one). They stop when the transport is dropped.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{
    Frame, FrameError, PROTOCOL_VERSION, decode_frame, encode_frame, read_frame, write_frame,
};
use super::inbound_buffer::{InboundBuffer, READ_CHUNK_BYTES};
use super::network::Network;
use super::peer_message::PeerMessage;
use super::snapshot_stream::{ChunkOutcome, IncomingTransfers, OutgoingTransfer};
use crate::raft::{Message, MessageBody, NodeId, Snapshot};
use crate::seams::clock::{Clock, with_deadline};
use crate::seams::transport::{SnapshotReport, Transport};
use crate::shard::ShardId;

/// A receiver acknowledges plain messages within `delivery_deadline_ms / ACK_DELAY_DIVISOR`
/// of the first unacknowledged one: often enough that a healthy stream never looks stalled.
const ACK_DELAY_DIVISOR: u64 = 16;

/// The largest first frame accepted on an inbound connection. A `Hello` is a few dozen bytes;
/// until it has named a member of this cluster, a connection may make us buffer no more.
const MAX_HELLO_FRAME_BYTES: u32 = 256;

/// Where the transport listens for its peers.
pub enum PeerListener<L> {
    /// Bound by the caller already (so that a port in use is reported before anything starts).
    Bound(L),
    /// Bound when the transport first has a peer: a node that is its whole cluster needs no
    /// peer port until members are added. A failed bind is retried and logged.
    OnDemand(String),
    /// No peer port at all (a cluster of one that was given none): peers cannot reach it.
    Never,
}

#[derive(Clone, Debug)]
pub struct TcpTransportConfig {
    /// Nodes of different clusters refuse each other's connections.
    pub cluster_id: u64,
    pub max_frame_bytes: u32,
    pub peer_queue_messages: usize,
    pub peer_queue_bytes: u64,
    pub inbound_queue_messages: usize,
    pub max_inbound_connections: usize,
    pub connect_timeout_ms: u64,
    /// A connection whose frames stay unacknowledged this long is replaced.
    pub delivery_deadline_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// At most this many bytes are coalesced into one write.
    pub max_write_batch_bytes: usize,
    /// Snapshots travel in chunks of this size (see `snapshot_stream.rs`).
    pub snapshot_chunk_bytes: usize,
    /// Chunks written but not yet acknowledged, at most.
    pub snapshot_window_chunks: usize,
    /// A snapshot transfer not delivered in this time is given up (Raft asks again). Separate
    /// from the delivery deadline: a large snapshot takes far longer than a heartbeat.
    pub snapshot_timeout_ms: u64,
    /// The largest snapshot this node accepts from a peer (what it buffers while receiving).
    pub max_snapshot_bytes: u64,
    /// Bytes all inbound connections together may hold in their read buffers; a connection
    /// that would take the total past it is closed (a correct peer reconnects and Raft
    /// resends), so that peers announcing large frames cannot exhaust memory.
    pub max_inbound_buffered_bytes: u64,
}

impl Default for TcpTransportConfig {
    fn default() -> Self {
        TcpTransportConfig {
            cluster_id: 0,
            max_frame_bytes: 64 * 1024 * 1024,
            peer_queue_messages: 8_192,
            peer_queue_bytes: 64 * 1024 * 1024,
            inbound_queue_messages: 16_384,
            max_inbound_connections: 64,
            connect_timeout_ms: 1_000,
            delivery_deadline_ms: 1_000,
            backoff_min_ms: 10,
            backoff_max_ms: 1_000,
            max_write_batch_bytes: 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_window_chunks: 4,
            snapshot_timeout_ms: 120_000,
            max_snapshot_bytes: 4 * 1024 * 1024 * 1024,
            max_inbound_buffered_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Counters for metrics and the simulator's trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportCounters {
    pub messages_sent: u64,
    pub messages_dropped_queue_full: u64,
    pub messages_received: u64,
    /// `Ack` frames received from peers (each covers every frame before it).
    pub acknowledgements_received: u64,
    pub connections_opened: u64,
    pub connections_replaced_stalled: u64,
    pub connections_failed: u64,
    pub inbound_rejected: u64,
    /// Inbound connections closed because the read buffers of all of them held too much.
    pub inbound_closed_over_budget: u64,
    pub snapshot_chunks_sent: u64,
    /// Transfers continued after a lost connection or a receiver's resume request.
    pub snapshot_transfers_resumed: u64,
    pub snapshots_delivered: u64,
    pub snapshot_transfers_given_up: u64,
    pub snapshots_received: u64,
}

/// A read-only view of a transport's counters that outlives the transport.
#[derive(Clone)]
pub struct TransportCountersHandle(Rc<Shared>);

impl TransportCountersHandle {
    pub fn get(&self) -> TransportCounters {
        self.0.counters.borrow().clone()
    }
}

struct Shared {
    counters: RefCell<TransportCounters>,
    unreachable: RefCell<BTreeSet<NodeId>>,
    inbound_connections: Cell<usize>,
    /// Bytes held in the read buffers of all inbound connections.
    inbound_buffered_bytes: Rc<Cell<u64>>,
    /// The reader of the newest connection from each peer.
    readers: RefCell<BTreeMap<NodeId, JoinHandle<()>>>,
    /// Snapshots being received, per peer, kept across connections.
    incoming_snapshots: RefCell<IncomingTransfers>,
    /// Snapshot transfers that ended: (peer, delivered).
    snapshot_reports: RefCell<Vec<SnapshotReport>>,
    /// This node's own peer address as the configuration gives it (sent in every hello).
    own_address: RefCell<Option<String>>,
    /// Addresses peers gave in their hellos: how to answer a node that the configuration this
    /// node has does not list (a new leader added while this node lagged behind).
    learned_addresses: RefCell<BTreeMap<NodeId, String>>,
}

/// Longest address a hello may carry; an address is a host name and a port.
const MAX_REPLY_ADDRESS_BYTES: usize = 255;

struct PeerQueue {
    sender: mpsc::Sender<PeerMessage>,
    queued_bytes: Rc<Cell<u64>>,
}

/// Starts the writer for one peer (kept so peers can be added when membership changes).
type WriterFactory = Box<dyn Fn(NodeId, String) -> (PeerQueue, JoinHandle<()>)>;

pub struct TcpTransport {
    local: NodeId,
    config: TcpTransportConfig,
    peers: BTreeMap<NodeId, PeerQueue>,
    addresses: BTreeMap<NodeId, String>,
    writers: BTreeMap<NodeId, JoinHandle<()>>,
    start_writer: WriterFactory,
    inbound: mpsc::Receiver<PeerMessage>,
    shared: Rc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    /// Starts listening, for a transport whose listener is bound on demand (see
    /// [`PeerListener::OnDemand`]); taken when the first peer appears.
    listen_on_demand: Option<Box<dyn FnOnce() -> JoinHandle<()>>>,
    /// Keeps the inbound queue open while nothing listens yet: a closed queue would make
    /// `recv` return at once, forever.
    _inbound_sender: mpsc::Sender<PeerMessage>,
    /// Peers reached at an address they gave in a hello, not one from `update_peers`; kept
    /// across `update_peers` (bounded by the nodes that ever connected).
    learned_peers: BTreeSet<NodeId>,
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        for task in self.tasks.iter().chain(self.writers.values()) {
            task.abort();
        }
        for (_, reader) in std::mem::take(&mut *self.shared.readers.borrow_mut()) {
            reader.abort();
        }
    }
}

/// Approximate bytes a message occupies in a queue.
fn message_bytes(message: &PeerMessage) -> u64 {
    fn raft_message_bytes(message: &Message) -> u64 {
        64 + match &message.body {
            MessageBody::AppendRequest { entries, .. } => {
                entries.iter().map(|e| e.size_bytes()).sum()
            }
            MessageBody::InstallSnapshot { snapshot } => snapshot.data.len() as u64,
            _ => 0,
        }
    }
    match message {
        PeerMessage::Raft(message) | PeerMessage::Group { message, .. } => {
            raft_message_bytes(message)
        }
        PeerMessage::Batch(batch) => {
            let heartbeats = batch.heartbeats.len() + batch.heartbeat_responses.len();
            64 + 32 * heartbeats as u64
                + batch.messages.iter().map(|m| raft_message_bytes(&m.message)).sum::<u64>()
        }
    }
}

/// The snapshot a message carries, if it is an `InstallSnapshot` (of a single group, or of a
/// hosted group sent outside any batch), with its group.
fn snapshot_of(message: &PeerMessage) -> Option<(Option<ShardId>, &Message, &Snapshot)> {
    let (shard, message) = match message {
        PeerMessage::Raft(message) => (None, message),
        PeerMessage::Group { shard, message } => (Some(*shard), message),
        PeerMessage::Batch(_) => return None,
    };
    match &message.body {
        MessageBody::InstallSnapshot { snapshot } => Some((shard, message, snapshot)),
        _ => None,
    }
}

impl TcpTransport {
    /// Binds `listen_address` and starts a writer for each peer (`peers` maps ids to addresses;
    /// the local node may be included and is skipped).
    pub async fn start<N: Network, C: Clock>(
        network: N,
        clock: C,
        local: NodeId,
        listen_address: &str,
        peers: &BTreeMap<NodeId, String>,
        config: TcpTransportConfig,
        rng_seed: u64,
    ) -> std::io::Result<Self> {
        let listener = network.bind(listen_address).await?;
        let listener = PeerListener::Bound(listener);
        Ok(Self::start_with(network, clock, local, listener, peers, config, rng_seed))
    }

    /// Starts the transport on `listener` (bound, or to bind once a peer appears) with a writer
    /// for each peer.
    pub fn start_with<N: Network, C: Clock>(
        network: N,
        clock: C,
        local: NodeId,
        listener: PeerListener<N::Listener>,
        peers: &BTreeMap<NodeId, String>,
        config: TcpTransportConfig,
        rng_seed: u64,
    ) -> Self {
        let shared = Rc::new(Shared {
            counters: RefCell::new(TransportCounters::default()),
            unreachable: RefCell::new(BTreeSet::new()),
            inbound_connections: Cell::new(0),
            inbound_buffered_bytes: Rc::new(Cell::new(0)),
            readers: RefCell::new(BTreeMap::new()),
            incoming_snapshots: RefCell::new(IncomingTransfers::default()),
            snapshot_reports: RefCell::new(Vec::new()),
            own_address: RefCell::new(None),
            learned_addresses: RefCell::new(BTreeMap::new()),
        });
        let (inbound_sender, inbound) = mpsc::channel(config.inbound_queue_messages);
        let accept = {
            let (network, clock, config, shared) =
                (network.clone(), clock.clone(), config.clone(), shared.clone());
            let inbound_sender = inbound_sender.clone();
            move |listener| {
                accept_loop(network, clock, listener, local, config, inbound_sender, shared)
            }
        };
        let mut tasks = Vec::new();
        let mut listen_on_demand: Option<Box<dyn FnOnce() -> JoinHandle<()>>> = None;
        match listener {
            PeerListener::Bound(listener) => tasks.push(tokio::task::spawn_local(accept(listener))),
            PeerListener::OnDemand(address) => {
                let (network, clock) = (network.clone(), clock.clone());
                let retry_ms = config.backoff_max_ms;
                listen_on_demand = Some(Box::new(move || {
                    tokio::task::spawn_local(async move {
                        let listener = bind_until_bound(&network, &clock, &address, retry_ms).await;
                        accept(listener).await
                    })
                }));
            }
            PeerListener::Never => {
                listen_on_demand = Some(Box::new(|| {
                    tokio::task::spawn_local(async {
                        tracing::warn!(
                            "this node has peers but no peer port to hear them on: restart it \
                             with --peer-port"
                        );
                    })
                }));
            }
        }
        let factory_shared = shared.clone();
        let factory_config = config.clone();
        let start_writer: WriterFactory = Box::new(move |peer: NodeId, address: String| {
            let (sender, receiver) = mpsc::channel(factory_config.peer_queue_messages);
            let queued_bytes = Rc::new(Cell::new(0));
            let writer = PeerWriter {
                network: network.clone(),
                clock: clock.clone(),
                config: factory_config.clone(),
                local,
                peer,
                address,
                queue: receiver,
                queued_bytes: queued_bytes.clone(),
                shared: factory_shared.clone(),
                rng: ChaCha8Rng::seed_from_u64(rng_seed ^ peer.0.rotate_left(17)),
                transfer: None,
            };
            (PeerQueue { sender, queued_bytes }, tokio::task::spawn_local(writer.run()))
        });
        let mut transport = TcpTransport {
            local,
            config,
            peers: BTreeMap::new(),
            addresses: BTreeMap::new(),
            writers: BTreeMap::new(),
            start_writer,
            inbound,
            shared,
            tasks,
            listen_on_demand,
            _inbound_sender: inbound_sender,
            learned_peers: BTreeSet::new(),
        };
        transport.update_peers(peers);
        transport
    }

    pub fn counters(&self) -> TransportCounters {
        self.shared.counters.borrow().clone()
    }

    /// Reads the counters after the transport moved into the engine (metrics, the simulator).
    pub fn counters_handle(&self) -> TransportCountersHandle {
        TransportCountersHandle(self.shared.clone())
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, to: NodeId, message: PeerMessage) -> bool {
        if to == self.local {
            return false;
        }
        if !self.peers.contains_key(&to) {
            let learned = self.shared.learned_addresses.borrow().get(&to).cloned();
            let Some(address) = learned else { return false };
            // A node our configuration does not list spoke to us first (it leads, or asks
            // for votes): answer it where it said it listens.
            let (queue, writer) = (self.start_writer)(to, address.clone());
            self.peers.insert(to, queue);
            self.writers.insert(to, writer);
            self.addresses.insert(to, address);
            self.learned_peers.insert(to);
        }
        let Some(queue) = self.peers.get(&to) else { return false };
        let size_bytes = message_bytes(&message);
        let over_budget = queue.queued_bytes.get() + size_bytes > self.config.peer_queue_bytes;
        if over_budget || queue.sender.try_send(message).is_err() {
            self.shared.counters.borrow_mut().messages_dropped_queue_full += 1;
            return false;
        }
        queue.queued_bytes.set(queue.queued_bytes.get() + size_bytes);
        true
    }

    async fn recv(&mut self) -> Option<PeerMessage> {
        self.inbound.recv().await
    }

    fn try_recv(&mut self) -> Option<PeerMessage> {
        self.inbound.try_recv().ok()
    }

    fn take_unreachable(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut *self.shared.unreachable.borrow_mut()).into_iter().collect()
    }

    fn reports_snapshot_delivery(&self) -> bool {
        true
    }

    fn take_snapshot_reports(&mut self) -> Vec<SnapshotReport> {
        std::mem::take(&mut *self.shared.snapshot_reports.borrow_mut())
    }

    fn update_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        if let Some(own) = peers.get(&self.local) {
            *self.shared.own_address.borrow_mut() = Some(own.clone());
        }
        let wanted: BTreeMap<NodeId, String> = peers
            .iter()
            .filter(|(id, _)| **id != self.local)
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        for id in wanted.keys() {
            self.learned_peers.remove(id);
        }
        let stale: Vec<NodeId> = self
            .addresses
            .iter()
            .filter(|(id, address)| {
                // A peer reached at its own word stays until the configuration names it.
                let learned = self.learned_peers.contains(id) && !wanted.contains_key(id);
                !learned && wanted.get(id) != Some(*address)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            // Dropping the queue ends the writer; aborting makes sure a stalled one goes too.
            self.peers.remove(&id);
            self.addresses.remove(&id);
            if let Some(writer) = self.writers.remove(&id) {
                writer.abort();
            }
            // A transfer the aborted writer carried ends here (harmless if there was none).
            let report = SnapshotReport { peer: id, shard: None, delivered: false };
            self.shared.snapshot_reports.borrow_mut().push(report);
        }
        if !wanted.is_empty()
            && let Some(listen) = self.listen_on_demand.take()
        {
            self.tasks.push(listen());
        }
        for (id, address) in wanted {
            if !self.addresses.contains_key(&id) {
                let (queue, writer) = (self.start_writer)(id, address.clone());
                self.peers.insert(id, queue);
                self.writers.insert(id, writer);
                self.addresses.insert(id, address);
            }
        }
    }
}

struct PeerWriter<N: Network, C: Clock> {
    network: N,
    clock: C,
    config: TcpTransportConfig,
    local: NodeId,
    peer: NodeId,
    address: String,
    queue: mpsc::Receiver<PeerMessage>,
    queued_bytes: Rc<Cell<u64>>,
    shared: Rc<Shared>,
    rng: ChaCha8Rng,
    /// The snapshot being streamed to this peer; it survives reconnections.
    transfer: Option<OutgoingTransfer>,
}

impl<N: Network, C: Clock> PeerWriter<N, C> {
    async fn run(mut self) {
        let mut backoff_ms = self.config.backoff_min_ms;
        loop {
            let connected = with_deadline(
                &self.clock,
                self.config.connect_timeout_ms,
                self.network.connect(&self.address),
            )
            .await;
            let stream = match connected {
                Some(Ok(stream)) => stream,
                _ => {
                    self.connection_lost(false);
                    self.give_up_transfer_if_late();
                    // Messages queued for a peer we cannot reach are stale by the time it is
                    // back; Raft will resend what matters.
                    self.discard_queue();
                    let jitter_ms = self.rng.random_range(0..=backoff_ms / 2);
                    self.clock.sleep_ms(backoff_ms + jitter_ms).await;
                    backoff_ms = (backoff_ms * 2).min(self.config.backoff_max_ms);
                    if self.queue.is_closed() {
                        return;
                    }
                    continue;
                }
            };
            self.shared.counters.borrow_mut().connections_opened += 1;
            backoff_ms = self.config.backoff_min_ms;
            match self.serve(stream).await {
                ServeEnd::TransportDropped => return,
                ServeEnd::Stalled => {
                    self.shared.counters.borrow_mut().connections_replaced_stalled += 1;
                    self.connection_lost(true);
                }
                ServeEnd::Failed => self.connection_lost(true),
            }
        }
    }

    fn connection_lost(&mut self, was_connected: bool) {
        if was_connected {
            self.shared.counters.borrow_mut().connections_failed += 1;
        }
        self.shared.unreachable.borrow_mut().insert(self.peer);
        if let Some(transfer) = &mut self.transfer {
            transfer.connection_lost();
            if was_connected {
                self.shared.counters.borrow_mut().snapshot_transfers_resumed += 1;
            }
        }
    }

    fn report_transfer(&mut self, delivered: bool) {
        if let Some(transfer) = self.transfer.take() {
            let mut counters = self.shared.counters.borrow_mut();
            if delivered {
                counters.snapshots_delivered += 1;
            } else {
                counters.snapshot_transfers_given_up += 1;
            }
            drop(counters);
            let report = SnapshotReport { peer: self.peer, shard: transfer.shard, delivered };
            self.shared.snapshot_reports.borrow_mut().push(report);
        }
    }

    fn give_up_transfer_if_late(&mut self) {
        let late = self.transfer.as_ref().is_some_and(|transfer| {
            self.clock.monotonic_ms().saturating_sub(transfer.started_ms)
                > self.config.snapshot_timeout_ms
        });
        if late {
            tracing::warn!(peer = %self.peer, "giving up a snapshot transfer that took too long");
            self.report_transfer(false);
        }
    }

    /// Takes an `InstallSnapshot` off the queue: it is streamed in chunks, not framed whole.
    /// Returns the message back if it is anything else.
    fn start_transfer(&mut self, message: PeerMessage) -> Option<PeerMessage> {
        let Some((shard, raft_message, snapshot)) = snapshot_of(&message) else {
            return Some(message);
        };
        let now_ms = self.clock.monotonic_ms();
        let transfer = OutgoingTransfer::new(shard, raft_message, snapshot.clone(), now_ms);
        match &self.transfer {
            // The leader asked again for the snapshot already on its way: keep streaming it.
            Some(current) if current.key() == transfer.key() => {}
            // One transfer per peer at a time: another group's snapshot is given up at once,
            // and that group's leader asks again later.
            Some(current) if current.shard != shard => {
                self.shared.counters.borrow_mut().snapshot_transfers_given_up += 1;
                let report = SnapshotReport { peer: self.peer, shard, delivered: false };
                self.shared.snapshot_reports.borrow_mut().push(report);
            }
            // A newer snapshot (or a new term) replaces the transfer; its report covers both.
            _ => self.transfer = Some(transfer),
        }
        None
    }

    fn discard_queue(&mut self) {
        while let Ok(message) = self.queue.try_recv() {
            if let Some((shard, _, _)) = snapshot_of(&message) {
                // The engine waits for a report on every snapshot it handed over; without one
                // the leader would wait for this follower forever.
                let report = SnapshotReport { peer: self.peer, shard, delivered: false };
                self.shared.snapshot_reports.borrow_mut().push(report);
            }
        }
        self.queued_bytes.set(0);
    }

    fn chunk_may_go(&self) -> bool {
        self.transfer.as_ref().is_some_and(|transfer| {
            transfer.has_unsent()
                && transfer.in_flight_chunks() < self.config.snapshot_window_chunks.max(1)
        })
    }

    /// Writes queued messages to one connection until it fails or stalls.
    async fn serve(&mut self, stream: N::Stream) -> ServeEnd {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let hello = Frame::Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: self.config.cluster_id,
            from: self.local,
            to: self.peer,
            reply_to: self.shared.own_address.borrow().clone(),
        };
        let deadline_ms = self.config.delivery_deadline_ms;
        let max_frame_bytes = self.config.max_frame_bytes;
        match with_deadline(
            &self.clock,
            deadline_ms,
            write_frame(&mut writer, &hello, max_frame_bytes),
        )
        .await
        {
            Some(Ok(())) => {}
            _ => return ServeEnd::Failed,
        }
        let mut sent: u64 = 0;
        let mut acknowledged: u64 = 0;
        // When the oldest unacknowledged frame was written (or acknowledgements last advanced).
        let mut waiting_since_ms: Option<u64> = None;
        let mut ack_bytes = Vec::with_capacity(256);
        let mut read_buffer = [0u8; 256];
        let mut batch = Vec::with_capacity(64 * 1024);
        loop {
            // Checked on every turn, not only when the timer below fires: a peer that keeps
            // sending (a pre-candidate retrying every few ticks) restarts that timer before it
            // ever fires, and a dead connection would then be fed forever.
            if let Some(since_ms) = waiting_since_ms
                && self.clock.monotonic_ms().saturating_sub(since_ms) > deadline_ms
            {
                return ServeEnd::Stalled;
            }
            self.give_up_transfer_if_late();
            let check_ms = deadline_ms / 4 + 1;
            tokio::select! {
                biased;
                message = self.queue.recv() => {
                    let Some(message) = message else { return ServeEnd::TransportDropped };
                    batch.clear();
                    let mut count = 0u64;
                    let mut next = Some(message);
                    while let Some(message) = next.take() {
                        self.queued_bytes.set(self.queued_bytes.get().saturating_sub(message_bytes(&message)));
                        let Some(message) = self.start_transfer(message) else {
                            next = self.queue.try_recv().ok();
                            continue;
                        };
                        match encode_frame(&Frame::Message(message), &mut batch, max_frame_bytes) {
                            Ok(()) => count += 1,
                            Err(error) => tracing::warn!(peer = %self.peer, %error, "dropping an unencodable message"),
                        }
                        if batch.len() < self.config.max_write_batch_bytes {
                            next = self.queue.try_recv().ok();
                        }
                    }
                    if count == 0 {
                        continue;
                    }
                    let write = async {
                        writer.write_all(&batch).await?;
                        writer.flush().await
                    };
                    match with_deadline(&self.clock, deadline_ms, write).await {
                        Some(Ok(())) => {}
                        _ => return ServeEnd::Failed,
                    }
                    if sent == acknowledged {
                        waiting_since_ms = Some(self.clock.monotonic_ms());
                    }
                    sent += count;
                    self.shared.counters.borrow_mut().messages_sent += count;
                }
                read = reader.read(&mut read_buffer) => {
                    let read = match read {
                        Ok(0) | Err(_) => return ServeEnd::Failed,
                        Ok(read) => read,
                    };
                    ack_bytes.extend_from_slice(&read_buffer[..read]);
                    loop {
                        match decode_frame::<Frame>(&ack_bytes, max_frame_bytes) {
                            Ok(Some((Frame::Ack { received }, used))) => {
                                ack_bytes.drain(..used);
                                self.shared.counters.borrow_mut().acknowledgements_received += 1;
                                if received > acknowledged && received <= sent {
                                    acknowledged = received;
                                    waiting_since_ms = (acknowledged < sent).then(|| self.clock.monotonic_ms());
                                }
                                if let Some(transfer) = &mut self.transfer {
                                    transfer.frames_acknowledged(received);
                                    if transfer.is_delivered() {
                                        self.report_transfer(true);
                                    }
                                }
                            }
                            Ok(Some((Frame::SnapshotResume { key, offset }, used))) => {
                                ack_bytes.drain(..used);
                                if let Some(transfer) = &mut self.transfer
                                    && transfer.key() == key
                                {
                                    transfer.resume_at(offset);
                                    self.shared.counters.borrow_mut().snapshot_transfers_resumed += 1;
                                }
                            }
                            Ok(None) => break,
                            // Only acks travel this way; anything else is a broken peer.
                            Ok(Some(_)) | Err(_) => return ServeEnd::Failed,
                        }
                    }
                }
                () = std::future::ready(()), if self.chunk_may_go() => {
                    let Some(transfer) = &mut self.transfer else { continue };
                    let chunk = transfer.next_chunk(self.config.snapshot_chunk_bytes, sent + 1);
                    batch.clear();
                    if let Err(error) = encode_frame(&Frame::SnapshotChunk(chunk), &mut batch, max_frame_bytes) {
                        tracing::warn!(peer = %self.peer, %error, "cannot encode a snapshot chunk; giving the transfer up");
                        self.report_transfer(false);
                        continue;
                    }
                    let write = async {
                        writer.write_all(&batch).await?;
                        writer.flush().await
                    };
                    match with_deadline(&self.clock, deadline_ms, write).await {
                        Some(Ok(())) => {}
                        _ => return ServeEnd::Failed,
                    }
                    if sent == acknowledged {
                        waiting_since_ms = Some(self.clock.monotonic_ms());
                    }
                    sent += 1;
                    self.shared.counters.borrow_mut().snapshot_chunks_sent += 1;
                }
                () = self.clock.sleep_ms(check_ms) => {}
            }
        }
    }
}

enum ServeEnd {
    TransportDropped,
    Stalled,
    Failed,
}

/// Binds the peer port of a transport that listens on demand; a failure (the port is taken)
/// is logged and retried, since the node keeps serving its clients meanwhile.
async fn bind_until_bound<N: Network, C: Clock>(
    network: &N,
    clock: &C,
    address: &str,
    retry_ms: u64,
) -> N::Listener {
    loop {
        match network.bind(address).await {
            Ok(listener) => {
                tracing::info!(%address, "listening for peers");
                return listener;
            }
            Err(error) => {
                tracing::warn!(%address, %error, "cannot listen for peers; retrying");
                clock.sleep_ms(retry_ms).await;
            }
        }
    }
}

async fn accept_loop<N: Network, C: Clock>(
    network: N,
    clock: C,
    listener: N::Listener,
    local: NodeId,
    config: TcpTransportConfig,
    inbound: mpsc::Sender<PeerMessage>,
    shared: Rc<Shared>,
) {
    loop {
        let stream = match network.accept(&listener).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a peer connection failed");
                clock.sleep_ms(config.backoff_min_ms).await;
                continue;
            }
        };
        if shared.inbound_connections.get() >= config.max_inbound_connections {
            shared.counters.borrow_mut().inbound_rejected += 1;
            drop(stream);
            continue;
        }
        shared.inbound_connections.set(shared.inbound_connections.get() + 1);
        let reader = InboundConnection {
            clock: clock.clone(),
            config: config.clone(),
            local,
            inbound: inbound.clone(),
            shared: shared.clone(),
        };
        let task_shared = shared.clone();
        tokio::task::spawn_local(async move {
            let handshake = reader.handshake::<N>(stream).await;
            if let Some((from, stream)) = handshake {
                // The newest connection from a peer replaces its older ones.
                let serving = tokio::task::spawn_local(reader.serve::<N>(stream, from));
                if let Some(previous) = task_shared.readers.borrow_mut().insert(from, serving) {
                    previous.abort();
                }
            } else {
                task_shared
                    .inbound_connections
                    .set(task_shared.inbound_connections.get().saturating_sub(1));
            }
        });
    }
}

struct InboundConnection<C: Clock> {
    clock: C,
    config: TcpTransportConfig,
    local: NodeId,
    inbound: mpsc::Sender<PeerMessage>,
    shared: Rc<Shared>,
}

/// Decrements the connection count however the reader ends (including being aborted).
struct ConnectionSlot(Rc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.inbound_connections.set(self.0.inbound_connections.get().saturating_sub(1));
    }
}

impl<C: Clock> InboundConnection<C> {
    /// Reads and checks the `Hello` frame; `None` drops the connection.
    async fn handshake<N: Network>(&self, mut stream: N::Stream) -> Option<(NodeId, N::Stream)> {
        let hello = with_deadline(
            &self.clock,
            self.config.delivery_deadline_ms,
            read_frame::<Frame, _>(&mut stream, MAX_HELLO_FRAME_BYTES),
        )
        .await;
        match hello {
            Some(Ok(Frame::Hello { protocol_version, cluster_id, from, to, reply_to }))
                if protocol_version == PROTOCOL_VERSION
                    && cluster_id == self.config.cluster_id
                    && to == self.local =>
            {
                if let Some(address) = reply_to.filter(|a| a.len() <= MAX_REPLY_ADDRESS_BYTES) {
                    self.shared.learned_addresses.borrow_mut().insert(from, address);
                }
                Some((from, stream))
            }
            other => {
                tracing::debug!(?other, "refused a peer connection");
                None
            }
        }
    }

    async fn serve<N: Network>(self, stream: N::Stream, from: NodeId) {
        let _slot = ConnectionSlot(self.shared.clone());
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buffer = InboundBuffer::new(
            self.shared.inbound_buffered_bytes.clone(),
            self.config.max_inbound_buffered_bytes,
            self.config.max_frame_bytes,
        );
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut received: u64 = 0;
        let mut acknowledged: u64 = 0;
        // Frames for the sender (acknowledgements, resume requests), written together.
        let mut replies: Vec<u8> = Vec::with_capacity(256);
        // Plain messages are acknowledged after a delay, covering all that arrived meanwhile:
        // acknowledging every read doubled the writes, reads and wake-ups of both ends under
        // load. The sender only needs to hear progress well within its delivery deadline.
        // Snapshot chunks and resume requests are answered at once: they pace a transfer.
        let ack_delay_ms = (self.config.delivery_deadline_ms / ACK_DELAY_DIVISOR).max(1);
        let clock = self.clock.clone();
        let mut ack_timer: Option<Pin<Box<dyn Future<Output = ()> + '_>>> = None;
        // When the armed timer falls due: a stream that always has bytes ready would otherwise
        // starve the timer branch (the read is polled first) and never be acknowledged.
        let mut ack_due_ms: u64 = 0;
        loop {
            let read = tokio::select! {
                biased;
                read = reader.read(&mut chunk) => read,
                () = async { ack_timer.as_mut().expect("guarded by the condition").await },
                    if ack_timer.is_some() => {
                    ack_timer = None;
                    if !self.write_replies(&mut writer, &mut replies, received, &mut acknowledged).await {
                        return;
                    }
                    continue;
                }
            };
            let read = match read {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if !buffer.extend(&chunk[..read]) {
                self.shared.counters.borrow_mut().inbound_closed_over_budget += 1;
                tracing::warn!(
                    peer = %from,
                    limit_bytes = self.config.max_inbound_buffered_bytes,
                    "inbound peer connections buffer too much; closing this one"
                );
                return;
            }
            let buffer_bytes = buffer.bytes();
            let mut consumed = 0;
            let mut pacing_transfer = false;
            loop {
                match decode_frame::<Frame>(&buffer_bytes[consumed..], self.config.max_frame_bytes)
                {
                    Ok(Some((Frame::Message(message), used))) => {
                        consumed += used;
                        received += 1;
                        self.shared.counters.borrow_mut().messages_received += 1;
                        // Waiting here pushes back on the sender through TCP flow control.
                        if self.inbound.send(message).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some((Frame::SnapshotChunk(chunk), used))) => {
                        consumed += used;
                        received += 1;
                        pacing_transfer = true;
                        let outcome = self.shared.incoming_snapshots.borrow_mut().accept(
                            from,
                            self.local,
                            chunk,
                            self.config.max_snapshot_bytes,
                        );
                        match outcome {
                            ChunkOutcome::Stored | ChunkOutcome::Ignored => {}
                            ChunkOutcome::Complete { shard, message } => {
                                self.shared.counters.borrow_mut().snapshots_received += 1;
                                let message = match shard {
                                    None => PeerMessage::Raft(message),
                                    Some(shard) => PeerMessage::Group { shard, message },
                                };
                                if self.inbound.send(message).await.is_err() {
                                    return;
                                }
                            }
                            ChunkOutcome::Resume { key, offset } => {
                                if encode_frame(
                                    &Frame::SnapshotResume { key, offset },
                                    &mut replies,
                                    self.config.max_frame_bytes,
                                )
                                .is_err()
                                {
                                    return;
                                }
                            }
                            ChunkOutcome::TooLarge { total_bytes, limit_bytes } => {
                                tracing::warn!(
                                    peer = %from,
                                    total_bytes,
                                    limit_bytes,
                                    "a peer offered a snapshot larger than this node accepts; closing"
                                );
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Ok(Some((other, _))) => {
                        tracing::debug!(?other, "unexpected frame from a peer; closing");
                        return;
                    }
                    Err(error) => {
                        report_bad_peer(&error);
                        return;
                    }
                }
            }
            buffer.consume(consumed);
            let ack_overdue = ack_timer.is_some() && clock.monotonic_ms() >= ack_due_ms;
            if pacing_transfer || !replies.is_empty() || ack_overdue {
                ack_timer = None;
                if !self.write_replies(&mut writer, &mut replies, received, &mut acknowledged).await
                {
                    return;
                }
            } else if received > acknowledged && ack_timer.is_none() {
                ack_due_ms = clock.monotonic_ms() + ack_delay_ms;
                ack_timer = Some(Box::pin(clock.sleep_ms(ack_delay_ms)));
            }
        }
    }

    /// Writes the pending replies and an acknowledgement of every frame received so far (if
    /// any is unacknowledged); false if the connection is to be dropped.
    async fn write_replies(
        &self,
        writer: &mut (impl AsyncWriteExt + Unpin),
        replies: &mut Vec<u8>,
        received: u64,
        acknowledged: &mut u64,
    ) -> bool {
        if received <= *acknowledged && replies.is_empty() {
            return true;
        }
        // Resume requests first, so the sender rewinds before it counts the acknowledgement of
        // the chunks that asked for them.
        if received > *acknowledged
            && encode_frame(&Frame::Ack { received }, replies, self.config.max_frame_bytes).is_err()
        {
            return false;
        }
        let write = async {
            writer.write_all(replies).await?;
            writer.flush().await
        };
        let written = with_deadline(&self.clock, self.config.delivery_deadline_ms, write).await;
        replies.clear();
        match written {
            Some(Ok(())) => {
                *acknowledged = received;
                true
            }
            _ => false,
        }
    }
}

fn report_bad_peer(error: &FrameError) {
    tracing::warn!(%error, "a peer sent an invalid frame; closing its connection");
}
