//! Observation of the engine from outside, for the simulator's invariant checks and trace
//! hash. Production runs without a probe; the calls cost nothing then.

use crate::kv::KvStateMachine;
use crate::raft::{Entry, Message, Raft, SnapshotMeta};

/// What one `Ready` did, seen right after the engine carried it out.
pub struct CycleView<'a> {
    pub raft: &'a Raft,
    pub kv: &'a KvStateMachine,
    /// The persist batch handed to storage, if any: its id and entries.
    pub persist_batch: Option<(u64, &'a [Entry])>,
    pub messages: &'a [Message],
    pub snapshot_installed: Option<&'a SnapshotMeta>,
    pub applied: &'a [Entry],
}

pub trait EngineProbe {
    fn observe(&mut self, view: CycleView<'_>);
}
