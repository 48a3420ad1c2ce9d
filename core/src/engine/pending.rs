//! Requests accepted by the engine and not yet answered: writes waiting for their log entry to
//! be applied, reads waiting for a read index and then for the state machine to reach it.

use std::collections::BTreeMap;

use super::error::EngineError;
use super::request::{ReadConsistency, ReadQuery, ReadResult, Reply};
use crate::kv::KvResponse;
use crate::raft::{ClusterConfig, LogIndex, Term};

pub(super) struct PendingWrite {
    pub term: Term,
    pub reply: Reply<KvResponse>,
}

pub(super) struct PendingRead {
    pub query: ReadQuery,
    pub reply: Reply<ReadResult>,
}

#[derive(Default)]
pub(super) struct Pending {
    /// By log index: the write proposed there and the term it was proposed in.
    pub writes: BTreeMap<LogIndex, PendingWrite>,
    /// Membership changes by the index of their configuration entry.
    pub membership: BTreeMap<LogIndex, (Term, Reply<ClusterConfig>)>,
    /// Reads waiting for Raft to confirm a read index, by context.
    pub reads_awaiting_index: BTreeMap<u64, PendingRead>,
    /// Reads with a read index, waiting for the state machine to apply it: (index, context).
    pub reads_awaiting_apply: BTreeMap<(LogIndex, u64), PendingRead>,
    pub next_read_context: u64,
}

impl Pending {
    pub fn count(&self) -> usize {
        self.writes.len()
            + self.membership.len()
            + self.reads_awaiting_index.len()
            + self.reads_awaiting_apply.len()
    }

    /// The entry at `index` (of `term`) was applied: answer a membership change proposed
    /// there — with the configuration if it is the one, or "not committed" if another entry won.
    pub fn resolve_membership(
        &mut self,
        index: LogIndex,
        term: Term,
        config: Option<&ClusterConfig>,
    ) {
        if let Some((proposed_term, reply)) = self.membership.remove(&index) {
            let outcome = match config {
                Some(config) if proposed_term == term => Ok(config.clone()),
                _ => Err(EngineError::NotCommitted),
            };
            let _ = reply.send(outcome);
        }
    }

    pub fn new_read_context(&mut self) -> u64 {
        self.next_read_context += 1;
        self.next_read_context
    }

    /// The entry at `index` (of `term`) was applied with `response`: answer the write proposed
    /// there, if any. A write proposed in another term lost its slot and did not take effect.
    pub fn resolve_write(
        &mut self,
        index: LogIndex,
        term: Term,
        response: Option<KvResponse>,
    ) -> Option<bool> {
        let pending = self.writes.remove(&index)?;
        let committed = pending.term == term;
        let outcome = match (committed, response) {
            (true, Some(response)) => Ok(response),
            (true, None) => Err(EngineError::Unknown),
            (false, _) => Err(EngineError::NotCommitted),
        };
        let _ = pending.reply.send(outcome);
        Some(committed)
    }

    /// A snapshot jumped the state machine to `index`: writes at or below it can no longer be
    /// matched to their outcome.
    pub fn writes_superseded_by_snapshot(&mut self, index: LogIndex) {
        let later_changes = self.membership.split_off(&(index + 1));
        for (_, (_, reply)) in std::mem::replace(&mut self.membership, later_changes) {
            let _ = reply.send(Err(EngineError::Unknown));
        }
        let later = self.writes.split_off(&(index + 1));
        for (_, pending) in std::mem::replace(&mut self.writes, later) {
            let _ = pending.reply.send(Err(EngineError::Unknown));
        }
    }

    /// Reads whose index the state machine has reached.
    pub fn reads_ready(&mut self, applied: LogIndex) -> Vec<PendingRead> {
        let later = self.reads_awaiting_apply.split_off(&(applied + 1, 0));
        std::mem::replace(&mut self.reads_awaiting_apply, later).into_values().collect()
    }

    pub fn fail_all(&mut self, error: EngineError) {
        for (_, (_, reply)) in std::mem::take(&mut self.membership) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, pending) in std::mem::take(&mut self.writes) {
            let _ = pending.reply.send(Err(error.clone()));
        }
        for (_, pending) in std::mem::take(&mut self.reads_awaiting_index) {
            let _ = pending.reply.send(Err(error.clone()));
        }
        for (_, pending) in std::mem::take(&mut self.reads_awaiting_apply) {
            let _ = pending.reply.send(Err(error.clone()));
        }
    }
}

/// Whether a read at `consistency` may use the leader's lease.
pub(super) fn allows_lease(consistency: ReadConsistency) -> bool {
    consistency == ReadConsistency::Lease
}
