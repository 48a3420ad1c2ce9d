//! Sans-IO Raft: a pure state machine: inputs in (`tick`, `step`, `propose`, `read_index`,
//! `persisted`, `applied`), one output batch out (`ready`). See `node.rs` for the contract.

pub mod config;
mod election;
pub mod inflights;
pub mod log;
pub mod membership;
pub mod memory_cluster;
pub mod message;
mod node;
pub(crate) mod planted;
pub mod progress;
mod quiescence;
pub mod quorum;
pub mod read_index;
pub mod ready;
mod replication;
pub mod scenario;
pub mod types;

pub use config::{ConfigError, LeaseConfig, RaftConfig};
pub use membership::{MembershipChange, MembershipError};
pub use message::{Message, MessageBody};
pub use node::{ProposeError, Raft, RaftCounters, ReadError, RestoredState, Status};
pub use planted::PlantedBug;
pub use ready::{PersistBatch, ReadState, Ready, Role, SnapshotRequest, SoftState};
pub use types::*;
