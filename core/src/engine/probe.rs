//! Observation of the engine from outside, for the simulator's invariant checks and trace
//! hash. Production runs without a probe; the calls cost nothing then.

use crate::kv::{KvEvent, KvStateMachine};
use crate::raft::{Entry, HardState, LogIndex, Message, Raft, SnapshotMeta, Term};
use crate::shard::ShardId;

/// What one `Ready` did, seen right after the engine carried it out.
pub struct CycleView<'a> {
    /// The group this cycle was of (shard 0 in a single-group cluster).
    pub shard: ShardId,
    pub raft: &'a Raft,
    pub kv: &'a KvStateMachine,
    /// The persist batch handed to storage, if any: its id and entries.
    pub persist_batch: Option<(u64, &'a [Entry])>,
    /// That batch's hard state, and the (last index, last term) of the snapshot it installs.
    pub persist_hard_state: Option<HardState>,
    pub persist_snapshot: Option<(LogIndex, Term)>,
    /// Every persist batch up to this id is durable, as the storage seam reported it (not as
    /// Raft believes): a probe checks the messages that leave against it.
    pub durable_batch: u64,
    pub messages: &'a [Message],
    pub snapshot_installed: Option<&'a SnapshotMeta>,
    pub applied: &'a [Entry],
    /// The changes those entries made, in order, as watches see them — expiries included
    /// (when a TTL's expiry took effect, which no client request shows).
    pub changes: &'a [KvEvent],
}

pub trait EngineProbe {
    fn observe(&mut self, view: CycleView<'_>);
}
