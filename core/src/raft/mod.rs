//! Sans-IO Raft.

pub mod types;

pub use types::*;
