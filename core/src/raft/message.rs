//! Messages between Raft nodes. The core consumes and produces them; the transport frames,
//! checksums and delivers them — or drops, delays, duplicates and reorders them.

use serde::{Deserialize, Serialize};

use super::types::{Entry, LogIndex, NodeId, Snapshot, Term};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term — except in a granted pre-vote response, which echoes the term the
    /// candidate *would* campaign in (the responder's own term does not change on a pre-vote).
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (§5.2), or a pre-vote (§9.6) when `pre_vote` is set: the receiver answers
    /// as it would vote but changes neither its term nor its vote. `transfer` marks an election
    /// started by a leadership transfer, which followers honour even while they have a leader.
    /// `removed_by` is set when the newest configuration in the candidate's log does not list it
    /// as a voter: the (index, term) of that configuration's entry (see `Raft::is_promotable`).
    VoteRequest {
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
        transfer: bool,
        removed_by: Option<(LogIndex, Term)>,
    },
    VoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// AppendEntries (§5.3). An empty `entries` is a probe.
    AppendRequest {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    },
    /// On success `index` is the last index the follower now holds matching the leader; on
    /// rejection it echoes the rejected `prev_log_index` and `hint` says where to look next.
    AppendResponse {
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    },
    /// Heartbeats carry no entries (so they are cheap); they confirm leadership for ReadIndex
    /// rounds (`read_round`) and advance the follower's commit index to `commit`, the entry of
    /// term `commit_term` it is known to hold. The follower checks that it does: a disk that
    /// lost synced writes can bring back older entries at indexes it had acknowledged, and
    /// committing those would apply entries the cluster never committed. If it does not, it
    /// answers with an `AppendResponse` rejection of `commit`, so the leader repairs its log.
    Heartbeat {
        commit: LogIndex,
        commit_term: Term,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// InstallSnapshot (§7). The transport may stream it in chunks; the core sees it whole.
    InstallSnapshot {
        snapshot: Snapshot,
    },
    /// A follower asks the leader for a read index on behalf of its client; `lease` allows the
    /// leader to answer from its lease.
    ReadIndexRequest {
        context: u64,
        lease: bool,
    },
    /// The leader's answer: the index to wait for, or `None` if it could not serve the read.
    ReadIndexResponse {
        context: u64,
        index: Option<LogIndex>,
    },
    /// Leadership transfer (§3.10): start an election now, without waiting or pre-voting.
    TimeoutNow,
}

impl MessageBody {
    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::VoteRequest { pre_vote: true, .. } => "pre_vote_request",
            MessageBody::VoteRequest { .. } => "vote_request",
            MessageBody::VoteResponse { pre_vote: true, .. } => "pre_vote_response",
            MessageBody::VoteResponse { .. } => "vote_response",
            MessageBody::AppendRequest { .. } => "append_request",
            MessageBody::AppendResponse { .. } => "append_response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_response",
            MessageBody::InstallSnapshot { .. } => "install_snapshot",
            MessageBody::ReadIndexRequest { .. } => "read_index_request",
            MessageBody::ReadIndexResponse { .. } => "read_index_response",
            MessageBody::TimeoutNow => "timeout_now",
        }
    }
}
