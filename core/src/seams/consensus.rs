//! What a client-facing server needs from the replicated core: submit a write, get a read
//! served at the right consistency. The engine implements it with Raft; the simulator can
//! substitute a deliberately broken implementation to prove that the checker notices.

use std::future::Future;

use crate::engine::{EngineError, ReadConsistency, ReadQuery, ReadResult};
use crate::kv::{KvCommand, KvResponse, SessionTag};

pub trait Consensus {
    /// Replicates and applies a write; resolves with the state machine's answer.
    fn write(
        &self,
        command: KvCommand,
        session: Option<SessionTag>,
    ) -> impl Future<Output = Result<KvResponse, EngineError>>;
    /// Serves a read at the requested consistency.
    fn read(
        &self,
        query: ReadQuery,
        consistency: ReadConsistency,
    ) -> impl Future<Output = Result<ReadResult, EngineError>>;

    /// Answers a read on the caller's thread if `consistency` allows it without consensus
    /// work: a stale read, or a lease read on a leader whose lease holds at `now_ms` (the
    /// engine clock's monotonic ms). `None` means: ask `read`.
    fn read_locally(
        &self,
        _query: &ReadQuery,
        _consistency: ReadConsistency,
        _now_ms: &dyn Fn() -> u64,
    ) -> Option<ReadResult> {
        None
    }
}
