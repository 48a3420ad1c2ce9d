//! The client side of the engine: cheap to clone, usable from any task of the runtime the
//! engine runs on (HTTP handlers, the simulator's client server).

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::change_feed::ChangeFeed;
use super::error::EngineError;
use super::local_reads::LocalReads;
use super::request::{EngineRequest, ReadConsistency, ReadQuery, ReadResult};
use super::slot_ownership::SlotOwnership;
use super::status::EngineStatus;
use crate::kv::{KvCommand, KvResponse, SessionTag};
use crate::raft::{ClusterConfig, MembershipChange, NodeId, Snapshot};
use crate::seams::Consensus;
use crate::shard::{ShardId, ShardMap};

#[derive(Clone)]
pub struct EngineHandle {
    /// The group this handle's requests go to.
    pub(super) shard: ShardId,
    pub(super) requests: mpsc::Sender<(ShardId, EngineRequest)>,
    pub(super) status: watch::Receiver<EngineStatus>,
    pub(super) events: broadcast::Sender<ChangeFeed>,
    pub(super) local: Arc<LocalReads>,
    /// Shared by every handle of the engine (`slot_ownership.rs`).
    pub(super) ownership: Arc<SlotOwnership>,
}

impl EngineHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(super::request::Reply<T>) -> EngineRequest,
    ) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        match self.requests.try_send((self.shard, make(reply))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(EngineError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(EngineError::Stopped),
        }
        answer.await.unwrap_or(Err(EngineError::Stopped))
    }

    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), EngineError> {
        self.call(|reply| EngineRequest::TransferLeadership { to, reply }).await
    }

    /// Changes the cluster's membership (at the leader); resolves once the new configuration is
    /// committed and applied.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterConfig, EngineError> {
        self.call(|reply| EngineRequest::ChangeMembership { change, reply }).await
    }

    /// A consistent image of this node's state machine at its applied index, with the index,
    /// term and configuration there: what an online backup stores. A follower's image may be
    /// behind the leader's; ask the leader for the freshest.
    pub async fn snapshot_now(&self) -> Result<Snapshot, EngineError> {
        self.call(|reply| EngineRequest::Snapshot { reply }).await
    }

    /// Asks the engine to finish its storage work and stop.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.requests.send((self.shard, EngineRequest::Shutdown { reply })).await.is_ok() {
            let _ = done.await;
        }
    }

    /// The group this handle serves (shard 0 in a single-group cluster).
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn status(&self) -> EngineStatus {
        self.status.borrow().clone()
    }

    /// The shard map this group's state machine holds (the meta group's), as applied on this
    /// node; follow [`Self::status_receiver`] to see it change.
    pub fn shard_map(&self) -> Option<Arc<ShardMap>> {
        self.status.borrow().shard_map.clone()
    }

    /// Gives every handle of this node `map` to check keys against, if it is newer than the
    /// one they have; returns whether it was.
    pub fn follow_shard_map(&self, map: Arc<ShardMap>) -> bool {
        self.ownership.follow(map)
    }

    /// The newest shard map this node's handles check keys against.
    pub fn followed_shard_map(&self) -> Option<Arc<ShardMap>> {
        self.ownership.map()
    }

    /// Where member `id`'s peer transport listens, by the configuration in effect.
    pub fn peer_address(&self, id: NodeId) -> Option<String> {
        self.status.borrow().peer_addresses.get(&id).cloned()
    }

    pub fn status_receiver(&self) -> watch::Receiver<EngineStatus> {
        self.status.clone()
    }

    /// Change events of every applied write, in order, and the jumps past changes a snapshot
    /// install makes. A subscriber that falls more than the configured buffer behind is told
    /// how many it missed (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeFeed> {
        self.events.subscribe()
    }
}

impl Consensus for EngineHandle {
    fn read_locally(
        &self,
        query: &ReadQuery,
        consistency: ReadConsistency,
        now_ms: &dyn Fn() -> u64,
    ) -> Option<ReadResult> {
        // A refusal is not a local answer: the engine path gives it (`read`).
        self.ownership.check(self.shard, query.key()).ok()?;
        self.local.try_read(query, consistency, now_ms)
    }

    async fn write(
        &self,
        command: KvCommand,
        session: Option<SessionTag>,
    ) -> Result<KvResponse, EngineError> {
        self.ownership.check(self.shard, command.point_keys())?;
        self.call(|reply| EngineRequest::Write { command, session, reply }).await
    }

    async fn read(
        &self,
        query: ReadQuery,
        consistency: ReadConsistency,
    ) -> Result<ReadResult, EngineError> {
        self.ownership.check(self.shard, query.key())?;
        self.call(|reply| EngineRequest::Read { query, consistency, reply }).await
    }
}
