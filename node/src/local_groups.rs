//! The Raft groups this node hosts, and where a request for a key or a shard goes: to a group
//! here, or to a node that holds a replica of its shard (DESIGN.md, "Sharding", routing).
//!
//! A single-group node hosts one group and routes everything to it. A sharded node routes by
//! the newest shard map it follows (the meta group's, see `shard_map_keeper.rs`), or by the
//! map the cluster was created with until it follows one: both name the same owners until
//! placement moves replicas, and a group that does not own a key refuses it (`WrongShard`)
//! whichever map the router used, so a stale map costs a retry, never a misplaced write.

use std::collections::BTreeMap;
use std::sync::Arc;

use conclave_core::engine::EngineHandle;
use conclave_core::kv::{KvCommand, TxnOp};
use conclave_core::raft::NodeId;
use conclave_core::shard::{CrossShard, ShardId, ShardMap, single_shard};

/// Where a request goes.
#[derive(Clone)]
pub enum Route {
    /// To this node's replica of the shard.
    Here(EngineHandle),
    /// To a node that holds a replica of `shard`: this one holds none.
    Elsewhere { shard: ShardId, replicas: Vec<NodeId> },
}

/// Why a command cannot be routed to one shard.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unroutable {
    #[error(transparent)]
    CrossShard(CrossShard),
    #[error(
        "a range inside a transaction spans every shard of a sharded cluster; read the range \
         with GET /kv?prefix= instead"
    )]
    RangeInTransaction,
}

pub struct LocalGroups {
    /// The node's main group (see `engine_thread::RunningEngine::handle`).
    main: EngineHandle,
    /// Every hosted group, by shard.
    hosted: BTreeMap<ShardId, EngineHandle>,
    /// The map the cluster was created with; `None` for a single group.
    bootstrap_map: Option<Arc<ShardMap>>,
}

impl LocalGroups {
    pub fn new(
        main: EngineHandle,
        hosted: BTreeMap<ShardId, EngineHandle>,
        bootstrap_map: Option<Arc<ShardMap>>,
    ) -> LocalGroups {
        assert!(!hosted.is_empty(), "a node hosts at least one group");
        assert!(hosted.contains_key(&main.shard()), "the main group is one of the hosted groups");
        LocalGroups { main, hosted, bootstrap_map }
    }

    pub fn main(&self) -> &EngineHandle {
        &self.main
    }

    pub fn is_sharded(&self) -> bool {
        self.bootstrap_map.is_some()
    }

    /// The map requests are routed by: the newest followed, else the bootstrap map; `None`
    /// for a single group.
    pub fn map(&self) -> Option<Arc<ShardMap>> {
        self.bootstrap_map.as_ref()?;
        self.main.followed_shard_map().or_else(|| self.bootstrap_map.clone())
    }

    /// The hosted groups, by shard.
    pub fn hosted(&self) -> &BTreeMap<ShardId, EngineHandle> {
        &self.hosted
    }

    pub fn hosts(&self, shard: ShardId) -> bool {
        self.hosted.contains_key(&shard)
    }

    /// Where a request for `shard` goes.
    pub fn route_shard(&self, shard: ShardId) -> Route {
        if let Some(handle) = self.hosted.get(&shard) {
            return Route::Here(handle.clone());
        }
        let replicas = self
            .map()
            .and_then(|map| map.shard(shard).map(|info| info.replicas.clone()))
            .unwrap_or_default();
        Route::Elsewhere { shard, replicas }
    }

    /// Where a request for `key` goes.
    pub fn route_key(&self, key: &str) -> Route {
        match self.map() {
            None => Route::Here(self.main.clone()),
            Some(map) => self.route_shard(map.shard_of_key(key.as_bytes())),
        }
    }

    /// Where `command` goes: the shard of its keys. A keyless command (a clear, a session)
    /// goes to the main group; the caller fans a clear out itself.
    pub fn route_command(&self, command: &KvCommand) -> Result<Route, Unroutable> {
        let Some(map) = self.map() else { return Ok(Route::Here(self.main.clone())) };
        if let KvCommand::Txn(txn) = command {
            let ops = txn.success.iter().chain(&txn.failure);
            if ops.into_iter().any(|op| matches!(op, TxnOp::Range { .. })) {
                return Err(Unroutable::RangeInTransaction);
            }
        }
        match single_shard(&map, command.point_keys()) {
            Ok(Some(shard)) => Ok(self.route_shard(shard)),
            Ok(None) => Ok(Route::Here(self.main.clone())),
            Err(cross) => Err(Unroutable::CrossShard(cross)),
        }
    }
}
