//! Engine settings. Every queue the engine owns is bounded by one of these.

use crate::kv::KvLimits;
use crate::raft::{NodeId, RaftConfig};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub node_id: NodeId,
    pub raft: RaftConfig,
    /// Milliseconds of the node's clock per Raft tick.
    pub tick_ms: u64,
    pub kv_limits: KvLimits,
    /// Client requests waiting to enter the engine; beyond this, callers get "busy".
    pub max_queued_requests: usize,
    /// Writes and reads accepted and not yet answered.
    pub max_pending_requests: usize,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept behind a snapshot so that a briefly lagging follower catches up from the
    /// log instead of needing the whole snapshot.
    pub retained_log_entries: u64,
    /// At most this many inbound messages or requests handled before the engine persists,
    /// sends and applies: a bound on latency under load.
    pub max_inputs_per_cycle: usize,
    /// Watch events buffered for slow subscribers before they miss some. The buffer is
    /// allocated up front, once per group.
    pub event_buffer: usize,
    /// The same for each group of a node hosting many (`Engine::hosting`): smaller, or a
    /// thousand groups' buffers alone would take hundreds of megabytes (a subscriber that
    /// falls behind resumes from the watch history, as after any gap).
    pub event_buffer_per_hosted_group: usize,
    /// A learner is promoted only when at most this many entries behind the leader.
    pub max_learner_lag_entries: u64,
}

impl EngineConfig {
    pub fn new(node_id: NodeId) -> Self {
        let kv_limits = KvLimits::default();
        // One entry must fit in one message: the largest value plus its key and framing.
        let largest_entry_bytes = kv_limits.max_value_bytes + kv_limits.max_key_bytes + 64 * 1024;
        let raft = RaftConfig {
            max_message_bytes: RaftConfig::default().max_message_bytes.max(largest_entry_bytes),
            ..RaftConfig::default()
        };
        EngineConfig {
            node_id,
            raft,
            tick_ms: 10,
            kv_limits,
            max_queued_requests: 16_384,
            max_pending_requests: 65_536,
            snapshot_every_entries: 50_000,
            retained_log_entries: 5_000,
            max_inputs_per_cycle: 1_024,
            event_buffer: 4_096,
            event_buffer_per_hosted_group: 256,
            max_learner_lag_entries: 1_000,
        }
    }
}
