//! conclave-core: everything that must behave identically in production and in simulation.
//!
//! - [`raft`]: the sans-IO Raft state machine (inputs in, one output batch out);
//! - [`kv`]: the deterministic key-value state machine applied from committed entries;
//! - [`storage`]: the write-ahead log, hard state, snapshots and recovery, over a file-system seam;
//! - [`seams`]: the traits through which the engine meets the outside world;
//! - [`shard`]: slots, shards and the shard map that routes a key to its Raft group;
//! - [`engine`]: the async driver that turns Raft's output batches into calls on the seams;
//! - [`hash`]: the one fixed, seedless hash (FNV-1a) for digests and derived ids.
//!
//! Nothing in this crate reads a wall clock, spawns a thread, draws OS randomness or iterates a
//! hash map: the simulator relies on a run being a pure function of its seed.

pub mod engine;
pub mod hash;
pub mod kv;
pub mod raft;
pub mod seams;
pub mod shard;
pub mod storage;
pub mod transport;
