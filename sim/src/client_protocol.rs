//! The simulated clients' protocol to a node: a request, one reply, framed like peer traffic
//! (length, CRC32C, postcard). The real node speaks HTTP; the simulator needs only this.

use conclave_core::engine::{EngineError, ReadConsistency, ReadQuery, ReadResult, WatchPosition};
use conclave_core::kv::{KvCommand, KvEvent, KvResponse, SessionTag};
use conclave_core::raft::{ClusterConfig, MembershipChange, NodeId};
use conclave_core::shard::{ShardId, ShardMap};
use serde::{Deserialize, Serialize};

/// The client port on every simulated node.
pub const CLIENT_PORT: u16 = 9000;
/// The peer (Raft) port on every simulated node.
pub const PEER_PORT: u16 = 7000;
/// Client frames are small; a larger one is a bug or garbage.
pub const MAX_CLIENT_FRAME_BYTES: u32 = 4 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientCall {
    Write {
        command: KvCommand,
        session: Option<SessionTag>,
    },
    Read {
        query: ReadQuery,
        consistency: ReadConsistency,
    },
    /// Operator calls, from the nemesis's admin client.
    ChangeMembership {
        change: MembershipChange,
        /// A removal of a voter is declined when the leader's newest configuration has this
        /// many voters or fewer. The leader judges, not the operator: the operator's view can
        /// miss a change whose answer it never received (a timed-out removal that committed
        /// after all), and acting on that view once shrank a cluster to two voters, which the
        /// loss of one disk then stopped for good.
        min_voters: usize,
    },
    TransferLeadership {
        to: NodeId,
    },
    /// The changes of keys under `prefix` from `from` (`None`: from now on). The connection
    /// then carries only `ClientAnswer::Watch` replies, until the stream ends.
    Watch {
        prefix: String,
        from: Option<WatchPosition>,
    },
    /// The shard map the node follows (a sharded node without a meta replica asks the nodes
    /// that have one, as a production node asks for `/cluster/shard-map`).
    ShardMap,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub id: u64,
    /// The group the request is for: the shard the client's map gives its key (shard 0 in a
    /// single-group world), as the production client names it in a header.
    pub shard: ShardId,
    pub call: ClientCall,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAnswer {
    Write(KvResponse),
    Read(ReadResult),
    Membership(ClusterConfig),
    Transferring,
    /// The node declined an operator call before proposing anything, for this reason.
    Declined(String),
    Watch(WatchFrame),
    ShardMap(Option<ShardMap>),
}

/// One message of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchFrame {
    /// A change, and the position just after it.
    Change { event: KvEvent, after: WatchPosition },
    /// The stream ends; a watch from `resume` picks up where it stopped.
    Lost { reason: String, resume: WatchPosition },
    /// The node's history no longer holds the requested revision; the stream ends.
    Compacted { requested: u64, floor: Option<u64> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    pub id: u64,
    pub result: Result<ClientAnswer, EngineError>,
}
