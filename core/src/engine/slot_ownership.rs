//! Which keys this node's handles may serve: a request for a key whose slot another shard owns
//! is refused with the owner and the map's epoch (`EngineError::WrongShard`, HTTP 421), so a
//! router or client with an older map refreshes and asks again instead of writing a key into a
//! group that does not own it.
//!
//! The map is the newest the node has seen of the meta group's (`EngineHandle::follow_shard_map`;
//! the node follows the meta group's status). Until it has one — a single-group cluster never
//! does — every key is served. The check runs in the handles, before the engine or a local
//! read: both paths are covered, and a refusal costs the engine nothing. Range listings are not
//! checked: a shard lists its own keys, and a listing across shards asks every shard
//! (`shard/fan_out.rs`).

use std::sync::{Arc, RwLock};

use super::error::EngineError;
use crate::shard::{ShardId, ShardMap};

#[derive(Default)]
pub struct SlotOwnership {
    map: RwLock<Option<Arc<ShardMap>>>,
}

impl SlotOwnership {
    /// Takes `map` if it is newer than the one held; returns whether it did.
    pub fn follow(&self, map: Arc<ShardMap>) -> bool {
        let mut held = self.map.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.as_ref().is_some_and(|held| held.epoch() >= map.epoch()) {
            return false;
        }
        *held = Some(map);
        true
    }

    /// The map held, if any.
    pub fn map(&self) -> Option<Arc<ShardMap>> {
        self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Refuses the request if the map gives any of `keys` to a shard other than `shard`.
    pub fn check<'a>(
        &self,
        shard: ShardId,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), EngineError> {
        let held = self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(map) = held.as_ref() else { return Ok(()) };
        for key in keys {
            let owner = map.shard_of_key(key.as_bytes());
            if owner != shard {
                return Err(EngineError::WrongShard { owner: owner.0, epoch: map.epoch() });
            }
        }
        Ok(())
    }
}
