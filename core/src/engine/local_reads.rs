//! Reads answered on the caller's thread, without a trip through the engine: stale reads on
//! any node, and lease reads on a leader whose lease holds.
//!
//! The engine owns the state machine but keeps it here, behind a lock that only it writes
//! through, and publishes until when its lease holds. A handle that sees a valid lease reads
//! the state machine directly. That is as safe as the engine answering the read itself: the
//! engine applies a write before acknowledging it, so every write acknowledged before the read
//! began is in the state machine, and while the lease holds no other leader can have
//! acknowledged anything. The lease is checked again after the read, so the whole read lies
//! within it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::request::{ReadConsistency, ReadQuery, ReadResult};
use crate::kv::KvStateMachine;
use crate::raft::PlantedBug;
use crate::raft::planted::is_planted;

pub struct LocalReads {
    kv: RwLock<KvStateMachine>,
    /// Until when (exclusive; the engine clock's monotonic ms) this node is a leader holding a
    /// lease with its state machine caught up to its term; 0 when it is not.
    lease_until_ms: AtomicU64,
    /// A deliberately planted bug (simulator builds only; see `raft::planted`).
    planted_bug: Option<PlantedBug>,
}

impl LocalReads {
    pub(super) fn new(kv: KvStateMachine, planted_bug: Option<PlantedBug>) -> LocalReads {
        LocalReads { kv: RwLock::new(kv), lease_until_ms: AtomicU64::new(0), planted_bug }
    }

    /// The state machine, for reading. A panic while it was written ends the process, so a
    /// poisoned lock cannot be observed by a live engine; readers may take the data as it is.
    pub(super) fn kv(&self) -> RwLockReadGuard<'_, KvStateMachine> {
        self.kv.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state machine, for the engine to change.
    pub(super) fn kv_mut(&self) -> RwLockWriteGuard<'_, KvStateMachine> {
        self.kv.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the lease. The engine clears it (0) *before* it sends anything that lets
    /// another node become leader (TimeoutNow), so no read can pass the check afterwards.
    pub(super) fn set_lease_until_ms(&self, until_ms: u64) {
        self.lease_until_ms.store(until_ms, Ordering::SeqCst);
    }

    pub(super) fn lease_until_ms(&self) -> u64 {
        self.lease_until_ms.load(Ordering::SeqCst)
    }

    /// Answers `query` here if `consistency` allows it at `now_ms` (the engine clock's
    /// monotonic ms, read by the caller just before); `None` means the engine must answer.
    pub fn try_read(
        &self,
        query: &ReadQuery,
        consistency: ReadConsistency,
        now_ms: impl Fn() -> u64,
    ) -> Option<ReadResult> {
        match consistency {
            ReadConsistency::Stale => {
                let mut result = execute_read(&self.kv(), query);
                if is_planted(self.planted_bug, PlantedBug::StaleRangeLosesMore)
                    && let ReadResult::Range { more, .. } = &mut result
                {
                    *more = false;
                }
                Some(result)
            }
            ReadConsistency::Lease => {
                if now_ms() >= self.lease_until_ms() {
                    return None;
                }
                let result = execute_read(&self.kv(), query);
                // The read took time: it must have ended while the lease still held.
                (now_ms() < self.lease_until_ms()).then_some(result)
            }
            ReadConsistency::Linearizable => None,
        }
    }
}

/// Answers `query` from the state machine as it is.
pub(super) fn execute_read(kv: &KvStateMachine, query: &ReadQuery) -> ReadResult {
    let revision = kv.revision();
    let applied_index = kv.applied_index();
    match query {
        ReadQuery::Get { key } => ReadResult::Value { value: kv.get(key), revision, applied_index },
        ReadQuery::Range { prefix, start_after, limit } => {
            let limit = kv.limits().effective_range_limit(*limit);
            let (entries, more) = kv.range_after(prefix, start_after.as_deref(), limit);
            ReadResult::Range { entries, more, revision, applied_index }
        }
    }
}
