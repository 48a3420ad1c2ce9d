//! The vocabulary shared by the Raft core, the storage engine and the engine driver.
//!
//! Everything here is plain data with a stable `serde` representation: entries and hard state
//! go to disk (postcard), messages go over the wire (postcard). Field order is part of the
//! format — append new fields at the end and bump `storage::FORMAT_VERSION` when changing them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity inside a cluster. The `conclave` binary derives it from the node's
/// `:port` name (see `node/`), the simulator numbers hosts from 1. Zero is never a node.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The "nobody" id, used where the Raft paper writes `null` (no vote, no known leader).
    pub const NONE: NodeId = NodeId(0);

    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A Raft term. Terms only grow; every message carries its sender's term.
pub type Term = u64;

/// A position in the replicated log. Index 0 is the empty prefix; the first entry is index 1.
pub type LogIndex = u64;

/// What a log entry carries. The core never looks inside `Command`: the bytes belong to the
/// state machine (the KV store encodes its requests there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit entries of earlier terms (Raft §5.4.2)
    /// and serve ReadIndex requests (§6.4).
    Noop,
    /// An opaque state-machine command.
    Command(bytes::Bytes),
    /// A new cluster configuration; it takes effect as soon as it is appended (§4.1).
    Config(ClusterConfig),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate size in bytes, used for the byte limits on messages, in-flight windows and
    /// uncommitted data. It need not match the encoded size exactly, only track it.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 24;
        let payload = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(bytes) => bytes.len() as u64,
            EntryPayload::Config(config) => 16 * config.member_count() as u64,
        };
        HEADER_BYTES + payload
    }
}

/// The state Raft must make durable before answering a vote (term, vote) and that lets a
/// restarted node skip re-applying what it already knew to be committed (commit).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    /// The candidate voted for in `term`, or `NodeId::NONE`.
    pub vote: NodeId,
    pub commit: LogIndex,
}

/// Cluster membership. `voters` decide elections and commitment; `learners` only receive the
/// log. While a joint-consensus change is in progress (§4.3), `outgoing_voters` holds the old
/// voter set and every decision needs a majority of *both* sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub outgoing_voters: BTreeSet<NodeId>,
    /// Where each member's peer transport listens (`host:port`). Carried in the log so that
    /// every node learns how to reach a member added later.
    pub addresses: BTreeMap<NodeId, String>,
}

impl ClusterConfig {
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ClusterConfig { voters: voters.into_iter().collect(), ..Default::default() }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing_voters.is_empty()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing_voters.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member the leader replicates to, in id order (deterministic).
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.outgoing_voters.iter().copied());
        all.extend(self.learners.iter().copied());
        all
    }

    pub fn member_count(&self) -> usize {
        self.members().len()
    }
}

/// Describes the state a snapshot captures: everything up to and including `last_index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    /// The configuration in force at `last_index`.
    pub config: ClusterConfig,
}

/// A complete snapshot: its metadata and the state machine's serialized state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: bytes::Bytes,
}
