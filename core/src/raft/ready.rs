//! The one output of the Raft core: everything the engine must do after a batch of inputs.

use super::message::Message;
use super::types::{Entry, HardState, LogIndex, NodeId, Snapshot, Term};

/// What the engine must do, in this order:
/// 1. hand `persist` to storage (it may be written in parallel with the rest — the leader's
///    messages do not wait for its own disk) and call `Raft::persisted(batch.id)` once durable;
/// 2. send `messages`;
/// 3. if `snapshot_to_apply` is set, restore the state machine from it, then apply
///    `committed_entries` in order and report `Raft::applied`;
/// 4. serve each read of `reads` once the applied index reaches its `index`;
/// 5. answer the reads in `failed_reads` with "retry elsewhere"; send a snapshot to each peer
///    in `snapshot_requests`.
#[derive(Debug, Default)]
pub struct Ready {
    /// Set when role, term or leader changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    pub persist: Option<PersistBatch>,
    pub messages: Vec<Message>,
    pub snapshot_to_apply: Option<Snapshot>,
    pub committed_entries: Vec<Entry>,
    pub reads: Vec<ReadState>,
    pub failed_reads: Vec<u64>,
    pub snapshot_requests: Vec<SnapshotRequest>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.persist.is_none()
            && self.messages.is_empty()
            && self.snapshot_to_apply.is_none()
            && self.committed_entries.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && self.snapshot_requests.is_empty()
    }
}

/// What storage must make durable, as one unit, in this order: the snapshot (replacing the log
/// up to its last index), then the entries (first truncating any existing entries at or after
/// `entries[0].index`), then the hard state. Batches must become durable in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistBatch {
    pub id: u64,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: NodeId,
}

/// A linearizable read may be served from the state machine once it has applied `index`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub context: u64,
    pub index: LogIndex,
}

/// Send the current snapshot to `to` (a follower that needs entries the leader compacted).
/// The engine must report the outcome with `Raft::report_snapshot`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub to: NodeId,
    pub term: Term,
    /// The follower needs a snapshot covering at least this index.
    pub min_index: LogIndex,
}
