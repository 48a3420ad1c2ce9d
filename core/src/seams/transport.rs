//! Sending messages to peers: best effort. A message may be dropped, delayed, duplicated or
//! reordered; Raft tolerates all of it. The transport only promises not to block the engine and
//! not to hand it damaged data.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::rc::Rc;

use tokio::sync::mpsc;

use crate::raft::NodeId;
use crate::shard::ShardId;
use crate::transport::PeerMessage;

pub trait Transport {
    /// Queues `message` for `to`; never waits. Returns false if it was dropped at once (unknown
    /// peer, queue full).
    fn send(&mut self, to: NodeId, message: PeerMessage) -> bool;
    /// The next message from any peer. Cancel-safe: a message is never lost by dropping the
    /// future.
    fn recv(&mut self) -> impl Future<Output = Option<PeerMessage>>;
    /// A message that already arrived, without waiting.
    fn try_recv(&mut self) -> Option<PeerMessage>;
    /// Peers whose connection failed since the last call.
    fn take_unreachable(&mut self) -> Vec<NodeId>;
    /// The cluster's members changed: connect to new ones, drop removed ones.
    fn update_peers(&mut self, peers: &BTreeMap<NodeId, String>);
    /// Whether this transport reports when a snapshot was delivered or given up (through
    /// [`Transport::take_snapshot_reports`]). One that does not is assumed to have delivered a
    /// snapshot as soon as `send` accepted it.
    fn reports_snapshot_delivery(&self) -> bool {
        false
    }
    /// Snapshot transfers that ended since the last call.
    fn take_snapshot_reports(&mut self) -> Vec<SnapshotReport> {
        Vec::new()
    }
}

/// How a snapshot transfer to a peer ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    pub peer: NodeId,
    /// The group whose snapshot it was, on nodes hosting many. `None`: a single-group node's
    /// snapshot, or, on a node hosting many, whatever transfer to `peer` was under way (its
    /// connection was dropped with the peer).
    pub shard: Option<ShardId>,
    pub delivered: bool,
}

/// An in-process network for engine tests: every node's inbox is a channel; links can be cut.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Rc<RefCell<MemoryNetworkInner>>,
}

#[derive(Default)]
struct MemoryNetworkInner {
    inboxes: BTreeMap<NodeId, mpsc::UnboundedSender<PeerMessage>>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    delivered: u64,
    delivered_from: BTreeMap<NodeId, u64>,
}

impl MemoryNetwork {
    /// Attaches a node and returns its transport.
    pub fn join(&self, id: NodeId) -> MemoryTransport {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inner.borrow_mut().inboxes.insert(id, sender);
        MemoryTransport { id, network: self.clone(), inbox: receiver }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut inner = self.inner.borrow_mut();
        inner.blocked.insert((a, b));
        inner.blocked.insert((b, a));
    }

    pub fn heal(&self) {
        self.inner.borrow_mut().blocked.clear();
    }

    pub fn delivered(&self) -> u64 {
        self.inner.borrow().delivered
    }

    /// The messages `from` sent that were delivered.
    pub fn delivered_from(&self, from: NodeId) -> u64 {
        self.inner.borrow().delivered_from.get(&from).copied().unwrap_or(0)
    }
}

pub struct MemoryTransport {
    id: NodeId,
    network: MemoryNetwork,
    inbox: mpsc::UnboundedReceiver<PeerMessage>,
}

impl Transport for MemoryTransport {
    fn send(&mut self, to: NodeId, message: PeerMessage) -> bool {
        let mut inner = self.network.inner.borrow_mut();
        if inner.blocked.contains(&(self.id, to)) {
            return false;
        }
        let Some(inbox) = inner.inboxes.get(&to) else { return false };
        let sent = inbox.send(message).is_ok();
        inner.delivered += sent as u64;
        *inner.delivered_from.entry(self.id).or_default() += sent as u64;
        sent
    }

    async fn recv(&mut self) -> Option<PeerMessage> {
        self.inbox.recv().await
    }

    fn try_recv(&mut self) -> Option<PeerMessage> {
        self.inbox.try_recv().ok()
    }

    fn take_unreachable(&mut self) -> Vec<NodeId> {
        Vec::new()
    }

    fn update_peers(&mut self, _peers: &BTreeMap<NodeId, String>) {
        // Every node of the in-memory network is reachable by id.
    }
}
