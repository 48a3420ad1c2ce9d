//! Sharding (DESIGN.md, "Sharding"): the keyspace is split into slots by a fixed hash of each
//! key ([`slot`]), and slots are owned by shards, each a Raft group, as the shard map records
//! ([`map`]).

pub mod map;
pub mod slot;

pub use map::{ShardId, ShardInfo, ShardMap, ShardMapDraft, ShardMapError};
pub use slot::{Slot, SlotCount, SlotCountError, hash_tag, slot_of};
