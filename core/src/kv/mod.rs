//! The deterministic key-value state machine, applied from committed Raft entries.
//!
//! A log entry's `EntryPayload::Command` holds a [`KvRequest`] encoded with
//! [`KvRequest::encode`]. The node:
//! 1. checks a request with [`KvStateMachine::validate`] (or [`KvLimits::validate`]) and
//!    stamps `leader_time_ms` with its wall clock before proposing it;
//! 2. applies each committed entry in log order with [`KvStateMachine::apply_command_bytes`]
//!    (or [`KvStateMachine::apply`]), or [`KvStateMachine::advance_applied_index`] for entries
//!    that carry no command, and feeds the returned [`KvEvent`]s to its watchers;
//! 3. serves reads with [`KvStateMachine::get`] / [`KvStateMachine::range`] after a ReadIndex
//!    barrier;
//! 4. as leader, proposes [`KvCommand::ExpireTick`] once its clock passes
//!    [`KvStateMachine::next_expiry_ms`];
//! 5. takes and installs snapshots with [`KvStateMachine::snapshot`] /
//!    [`KvStateMachine::restore`]; the simulator compares [`KvStateMachine::state_digest`]s.
//!
//! Files: `command.rs` (requests), `response.rs` (answers), `event.rs` (change events),
//! `error.rs`, `limits.rs`, `condition.rs` (guards and transaction compares), `keyspace.rs`
//! (keys, revisions), `expiry.rs` (TTL index), `session.rs` (exactly-once), `snapshot.rs`
//! (snapshots and the state digest, hashed with `crate::hash`), `state_machine.rs` (apply).

mod command;
mod condition;
mod error;
mod event;
mod expiry;
mod keyspace;
mod limits;
mod response;
mod session;
mod snapshot;
mod state_machine;

pub use command::{
    Compare, CompareOp, CompareTarget, Condition, KvCommand, KvRequest, SessionTag, Txn, TxnOp,
};
pub use error::{KvError, RequestError};
pub use event::{KvEvent, KvEventKind};
pub use limits::KvLimits;
pub use response::{KeyMeta, KeyValue, KvResponse, TxnOpResult};
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_WITH_SHARD_MAP};
pub use state_machine::{ApplyResult, KvStateMachine};
