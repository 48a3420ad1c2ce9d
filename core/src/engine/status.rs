//! A snapshot of the engine's state for status pages, metrics and the simulator's checks.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::raft::{LogIndex, NodeId, Role, Term};
use crate::shard::ShardMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub last_index: LogIndex,
    pub snapshot_index: LogIndex,
    pub revision: u64,
    pub key_count: usize,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Where each member's peer transport listens, from the configuration in effect: how a
    /// node finds members added after it started. Shared, and rebuilt only when it changes.
    pub peer_addresses: Arc<BTreeMap<NodeId, String>>,
    /// Leader only: replication progress of every member.
    pub peers: Vec<PeerStatus>,
    pub leader_changes: u64,
    pub proposals_committed: u64,
    pub proposals_failed: u64,
    pub proposals_pending: usize,
    /// The disk-full alarm is up: client writes are refused (see `storage/space.rs`).
    pub disk_full: bool,
    /// Local snapshots given up for lack of space since the start.
    pub snapshots_abandoned: u64,
    /// The shard map this replica's state machine holds, as applied here (the meta group's;
    /// `None` elsewhere). Shared, and rebuilt only when its epoch changes: watching the status
    /// is how a node follows the map.
    pub shard_map: Option<Arc<ShardMap>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub matched: LogIndex,
    /// Entries the member is behind the leader's log.
    pub lag: u64,
}

impl EngineStatus {
    pub fn initial(id: NodeId) -> Self {
        EngineStatus {
            id,
            role: Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            snapshot_index: 0,
            revision: 0,
            key_count: 0,
            voters: Vec::new(),
            learners: Vec::new(),
            peer_addresses: Arc::default(),
            peers: Vec::new(),
            leader_changes: 0,
            proposals_committed: 0,
            proposals_failed: 0,
            proposals_pending: 0,
            disk_full: false,
            snapshots_abandoned: 0,
            shard_map: None,
        }
    }
}
