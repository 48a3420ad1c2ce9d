//! The simulated clients' protocol to a node: a request, one reply, framed like peer traffic
//! (length, CRC32C, postcard). The real node speaks HTTP; the simulator needs only this.

use conclave_core::engine::{EngineError, ReadConsistency, ReadQuery, ReadResult};
use conclave_core::kv::{KvCommand, KvResponse, SessionTag};
use conclave_core::raft::{ClusterConfig, MembershipChange, NodeId};
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
    },
    TransferLeadership {
        to: NodeId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub id: u64,
    pub call: ClientCall,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAnswer {
    Write(KvResponse),
    Read(ReadResult),
    Membership(ClusterConfig),
    Transferring,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    pub id: u64,
    pub result: Result<ClientAnswer, EngineError>,
}
