//! The engine: the async driver that runs one node. It owns the Raft core and the key-value
//! state machine (one of each per group, on a node hosting many: `replica.rs`), feeds them
//! inputs from the seams (messages, client requests, clock ticks, storage progress) and carries
//! out each `Ready` (persist, send, apply, answer).
//!
//! It is a single future with no spawned tasks or threads of its own, so it runs identically
//! on a production runtime and inside a turmoil host.

mod change_feed;
mod config;
mod driver;
mod error;
mod handle;
mod local_reads;
mod pending;
mod probe;
mod replica;
mod request;
mod slot_ownership;
mod status;
mod watch_cursor;
mod watch_hub;

pub use change_feed::ChangeFeed;
pub use config::EngineConfig;
pub use driver::{Engine, EngineFailure, HostedGroupStart};
pub use error::EngineError;
pub use handle::EngineHandle;
pub use probe::{CycleView, EngineProbe};
pub use request::{ReadConsistency, ReadQuery, ReadResult};
pub use status::{EngineStatus, PeerStatus};
pub use watch_cursor::{WatchCursor, WatchItem, WatchPosition};
pub use watch_hub::{Compacted, HubMessage, MAX_HISTORY_BYTES, WatchHub, WatchStart};
