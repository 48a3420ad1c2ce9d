//! Sharding (DESIGN.md, "Sharding"): the keyspace is split into slots by a fixed hash of each
//! key ([`slot`]), and slots are owned by shards, each a Raft group, as the shard map records
//! ([`map`]). A node hosts replicas of many groups through one [`group_host::GroupHost`], which
//! batches their messages per peer node ([`node_batch`]), lets idle groups quiesce, and follows
//! its peers as nodes ([`peer_liveness`]). Listings across shards merge their pages, and
//! transactions stay within one shard ([`fan_out`]).

pub mod fan_out;
pub mod group_host;
pub mod leader_balance;
pub mod map;
pub mod map_keeper;
pub mod node_batch;
pub mod peer_liveness;
pub mod placement;
pub mod slot;

pub use fan_out::{CrossShard, ListedKey, MergedPage, ShardPage, merge_pages, single_shard};
pub use group_host::{GroupHost, HostConfig, HostCounters, HostReady};
pub use leader_balance::{LeaderMove, next_leader_move};
pub use map::{ShardId, ShardInfo, ShardMap, ShardMapDraft, ShardMapError};
pub use map_keeper::keep_map_from_meta_replica;
pub use node_batch::{GroupHeartbeat, GroupHeartbeatResponse, GroupMessage, Hosting, NodeBatch};
pub use placement::rendezvous;
pub use slot::{Slot, SlotCount, SlotCountError, hash_tag, slot_of};
