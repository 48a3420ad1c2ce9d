//! The shard map: which shard owns each slot, which members hold each shard's replicas, and an
//! epoch that every change increases. The meta group (shard 0) holds it in its state machine;
//! every node follows it and routes by the newest map it has seen, and a shard refuses a slot it
//! does not own at its epoch, so a stale map costs a retry, never a misplaced write.
//!
//! Shard 0 is the meta group and also owns data slots: with one shard (the default) the
//! cluster is exactly the single-group cluster it has always been. With N shards the slots are
//! split into N contiguous, nearly equal ranges at bootstrap; later changes (placement in part 2
//! of the sharding work) move replicas and, one day, slots.
//!
//! Invariants, checked by [`ShardMap::validate`] on every map built or changed: every slot is
//! owned by exactly one shard of the map (the slot table is total by construction), every shard
//! has at least one replica and no member twice, and the epoch only grows.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::placement::rendezvous;
use super::slot::{Slot, SlotCount, SlotCountError, slot_of};
use crate::raft::NodeId;

/// A shard: a Raft group that owns a set of slots. Shard 0 is the meta group.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl ShardId {
    pub const META: ShardId = ShardId(0);
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// What the map records of one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The members that hold a replica, in the order placement chose them.
    pub replicas: Vec<NodeId>,
}

/// Why a map (or a change to it) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardMapError {
    #[error("a cluster has between 1 and {max} shards, not {given}", max = ShardMap::MAX_SHARDS)]
    ShardCount { given: u64 },
    #[error("{shards} shards cannot share {slots} slots: every shard needs at least one")]
    FewerSlotsThanShards { shards: u32, slots: u32 },
    #[error("{0} has no replicas")]
    NoReplicas(ShardId),
    #[error("{shard} lists member {member} twice")]
    DuplicateReplica { shard: ShardId, member: NodeId },
    #[error("{slot} is owned by {shard}, which the map does not have")]
    UnknownOwner { slot: Slot, shard: ShardId },
    #[error("the map has {found} slot owners for {expected} slots")]
    SlotTable { found: usize, expected: u32 },
    #[error("the map has no meta group (shard 0)")]
    NoMetaGroup,
    #[error("{0} is not in the map")]
    UnknownShard(ShardId),
    #[error(transparent)]
    SlotCount(#[from] SlotCountError),
    #[error("{shard} lists {count} replicas, the limit is {max}", max = ShardMap::MAX_REPLICAS)]
    TooManyReplicas { shard: ShardId, count: usize },
    #[error("the map's epoch must be at least 1")]
    ZeroEpoch,
}

/// The shard map at one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    epoch: u64,
    slot_count: SlotCount,
    /// The owner of each slot, indexed by slot number.
    owners: Vec<ShardId>,
    shards: BTreeMap<ShardId, ShardInfo>,
}

impl ShardMap {
    /// More shards than this would not fit a useful number of replicas on a cluster of
    /// reasonable size; it also bounds the map's size in a Raft entry.
    pub const MAX_SHARDS: u32 = 4096;
    /// A Raft group with more voters than this would be slower, not safer; the bound also
    /// keeps a map from another node (or a log entry) from naming members without end.
    pub const MAX_REPLICAS: usize = 9;
    /// The meta group's replicas in a map made by [`ShardMap::bootstrap`] (fewer if the
    /// cluster has fewer members): five voters survive the loss of two.
    pub const META_REPLICATION: usize = 5;

    /// The map a cluster is created with: `shards` shards (shard 0 the meta group), the slots
    /// split into contiguous ranges of nearly equal size, every shard replicated on `replicas`.
    pub fn initial(
        slot_count: SlotCount,
        shards: u64,
        replicas: &[NodeId],
    ) -> Result<ShardMap, ShardMapError> {
        Self::build(slot_count, shards, |_| replicas.to_vec())
    }

    /// Like [`ShardMap::initial`], but each shard replicated on the `replication` members of
    /// `members` that rendezvous hashing picks for it (`placement.rs`; all of them if fewer).
    pub fn placed(
        slot_count: SlotCount,
        shards: u64,
        members: &[NodeId],
        replication: usize,
    ) -> Result<ShardMap, ShardMapError> {
        Self::build(slot_count, shards, |shard| rendezvous(shard, members, replication))
    }

    /// The map a cluster of `members` is created with (`conclave serve --shards N`): like
    /// [`ShardMap::placed`], except that the meta group is replicated on up to
    /// [`ShardMap::META_REPLICATION`] members whatever `replication` is. Why wider: every node
    /// that holds a meta replica learns each new map from its own replica, without asking
    /// another node; and the map is what every request is routed by, so it should survive the
    /// loss of more members than a data shard does. Every member is a meta replica in clusters
    /// of up to five.
    pub fn bootstrap(
        slot_count: SlotCount,
        shards: u64,
        members: &[NodeId],
        replication: usize,
    ) -> Result<ShardMap, ShardMapError> {
        let meta_replication = replication.max(Self::META_REPLICATION);
        Self::build(slot_count, shards, |shard| {
            let wanted = if shard == ShardId::META { meta_replication } else { replication };
            rendezvous(shard, members, wanted)
        })
    }

    fn build(
        slot_count: SlotCount,
        shards: u64,
        replicas_of: impl Fn(ShardId) -> Vec<NodeId>,
    ) -> Result<ShardMap, ShardMapError> {
        let shard_count = match u32::try_from(shards) {
            Ok(count) if (1..=Self::MAX_SHARDS).contains(&count) => count,
            _ => return Err(ShardMapError::ShardCount { given: shards }),
        };
        if shard_count > slot_count.get() {
            return Err(ShardMapError::FewerSlotsThanShards {
                shards: shard_count,
                slots: slot_count.get(),
            });
        }
        // Slot s goes to shard floor(s * N / S): ranges whose sizes differ by at most one.
        let owners = slot_count
            .all()
            .map(|slot| {
                let shard =
                    u64::from(slot.0) * u64::from(shard_count) / u64::from(slot_count.get());
                ShardId(shard as u32)
            })
            .collect();
        let shards = (0..shard_count)
            .map(|id| (ShardId(id), ShardInfo { replicas: replicas_of(ShardId(id)) }))
            .collect();
        let map = ShardMap { epoch: 1, slot_count, owners, shards };
        map.validate()?;
        Ok(map)
    }

    /// Checks the invariants in the module docs (all but the epoch's growth, which
    /// [`ShardMap::changed`] enforces).
    pub fn validate(&self) -> Result<(), ShardMapError> {
        // A map decoded from a log entry or a snapshot was never built by `initial`: its
        // numbers are checked here too.
        SlotCount::new(u64::from(self.slot_count.get()))?;
        if self.epoch == 0 {
            return Err(ShardMapError::ZeroEpoch);
        }
        if self.shards.len() > Self::MAX_SHARDS as usize {
            return Err(ShardMapError::ShardCount { given: self.shards.len() as u64 });
        }
        if self.owners.len() != self.slot_count.get() as usize {
            return Err(ShardMapError::SlotTable {
                found: self.owners.len(),
                expected: self.slot_count.get(),
            });
        }
        if !self.shards.contains_key(&ShardId::META) {
            return Err(ShardMapError::NoMetaGroup);
        }
        for (slot, shard) in self.owners.iter().enumerate() {
            if !self.shards.contains_key(shard) {
                return Err(ShardMapError::UnknownOwner { slot: Slot(slot as u32), shard: *shard });
            }
        }
        for (shard, info) in &self.shards {
            if info.replicas.is_empty() {
                return Err(ShardMapError::NoReplicas(*shard));
            }
            if info.replicas.len() > Self::MAX_REPLICAS {
                let count = info.replicas.len();
                return Err(ShardMapError::TooManyReplicas { shard: *shard, count });
            }
            for (position, member) in info.replicas.iter().enumerate() {
                if info.replicas[..position].contains(member) {
                    return Err(ShardMapError::DuplicateReplica { shard: *shard, member: *member });
                }
            }
        }
        Ok(())
    }

    /// A copy changed by `change`, at the next epoch, if the result is a valid map.
    pub fn changed(
        &self,
        change: impl FnOnce(&mut ShardMapDraft<'_>) -> Result<(), ShardMapError>,
    ) -> Result<ShardMap, ShardMapError> {
        let mut next = self.clone();
        change(&mut ShardMapDraft { map: &mut next })?;
        next.epoch = self.epoch + 1;
        next.validate()?;
        Ok(next)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn slot_count(&self) -> SlotCount {
        self.slot_count
    }

    /// The shard that owns `key` at this epoch.
    pub fn shard_of_key(&self, key: &[u8]) -> ShardId {
        self.owner(slot_of(key, self.slot_count))
    }

    /// The shard that owns `slot` (slots beyond the count wrap, as `slot_of` never makes them).
    pub fn owner(&self, slot: Slot) -> ShardId {
        self.owners[(slot.0 % self.slot_count.get()) as usize]
    }

    /// The slots `shard` owns, in order.
    pub fn slots_of(&self, shard: ShardId) -> impl Iterator<Item = Slot> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, owner)| **owner == shard)
            .map(|(slot, _)| Slot(slot as u32))
    }

    pub fn shard(&self, shard: ShardId) -> Option<&ShardInfo> {
        self.shards.get(&shard)
    }

    /// Every shard, in id order.
    pub fn shards(&self) -> impl Iterator<Item = (ShardId, &ShardInfo)> {
        self.shards.iter().map(|(id, info)| (*id, info))
    }

    /// The shards with a replica on `member`, in id order.
    pub fn shards_on(&self, member: NodeId) -> impl Iterator<Item = ShardId> + '_ {
        self.shards
            .iter()
            .filter(move |(_, info)| info.replicas.contains(&member))
            .map(|(id, _)| *id)
    }
}

/// A map being changed inside [`ShardMap::changed`]; it is validated as a whole afterwards, so
/// a change may pass through invalid states (add a shard, then give it slots).
pub struct ShardMapDraft<'a> {
    map: &'a mut ShardMap,
}

impl ShardMapDraft<'_> {
    pub fn set_replicas(
        &mut self,
        shard: ShardId,
        replicas: Vec<NodeId>,
    ) -> Result<(), ShardMapError> {
        let info = self.map.shards.get_mut(&shard).ok_or(ShardMapError::UnknownShard(shard))?;
        info.replicas = replicas;
        Ok(())
    }

    pub fn add_shard(
        &mut self,
        shard: ShardId,
        replicas: Vec<NodeId>,
    ) -> Result<(), ShardMapError> {
        if self.map.shards.len() >= ShardMap::MAX_SHARDS as usize {
            return Err(ShardMapError::ShardCount { given: self.map.shards.len() as u64 + 1 });
        }
        self.map.shards.insert(shard, ShardInfo { replicas });
        Ok(())
    }

    pub fn assign_slot(&mut self, slot: Slot, shard: ShardId) -> Result<(), ShardMapError> {
        if !self.map.shards.contains_key(&shard) {
            return Err(ShardMapError::UnknownShard(shard));
        }
        let count = self.map.slot_count.get();
        let owner = self
            .map
            .owners
            .get_mut(slot.0 as usize)
            .ok_or(ShardMapError::SlotTable { found: slot.0 as usize + 1, expected: count })?;
        *owner = shard;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|id| NodeId(*id)).collect()
    }

    #[test]
    fn a_placed_map_gives_each_shard_its_rendezvous_replicas() {
        let five = members(&[1, 2, 3, 4, 5]);
        let map = ShardMap::placed(SlotCount::DEFAULT, 8, &five, 3).unwrap();
        for (shard, info) in map.shards() {
            assert_eq!(info.replicas, rendezvous(shard, &five, 3), "{shard}");
        }
        // Eight shards of three replicas on five members: each holds some, none holds all.
        for member in &five {
            let held = map.shards_on(*member).count();
            assert!((1..8).contains(&held), "{member} holds {held} shards");
        }
        // More replicas than members: every member, once.
        let small = ShardMap::placed(SlotCount::DEFAULT, 2, &five[..2], 3).unwrap();
        assert!(small.shards().all(|(_, info)| info.replicas.len() == 2));
        assert_eq!(
            ShardMap::placed(SlotCount::DEFAULT, 2, &[], 3),
            Err(ShardMapError::NoReplicas(ShardId(0)))
        );
    }

    #[test]
    fn a_bootstrap_map_puts_the_meta_group_on_up_to_five_members() {
        let seven = members(&[1, 2, 3, 4, 5, 6, 7]);
        let map = ShardMap::bootstrap(SlotCount::DEFAULT, 8, &seven, 3).unwrap();
        assert_eq!(
            map.shard(ShardId::META).unwrap().replicas,
            rendezvous(ShardId::META, &seven, 5)
        );
        for (shard, info) in map.shards().filter(|(shard, _)| *shard != ShardId::META) {
            assert_eq!(info.replicas, rendezvous(shard, &seven, 3), "{shard}");
        }
        // Up to five members: every one holds a meta replica, so every node hosts a group.
        let five = &seven[..5];
        let map = ShardMap::bootstrap(SlotCount::DEFAULT, 8, five, 3).unwrap();
        let mut meta = map.shard(ShardId::META).unwrap().replicas.clone();
        meta.sort();
        assert_eq!(meta, five);
        // A replication factor above five widens the meta group with it.
        let map = ShardMap::bootstrap(SlotCount::DEFAULT, 2, &seven, 7).unwrap();
        assert_eq!(map.shard(ShardId::META).unwrap().replicas.len(), 7);
    }

    #[test]
    fn one_shard_owns_every_slot() {
        let map = ShardMap::initial(SlotCount::DEFAULT, 1, &members(&[1, 2, 3])).unwrap();
        assert_eq!(map.epoch(), 1);
        assert_eq!(map.shards().count(), 1);
        assert_eq!(map.slots_of(ShardId::META).count(), 1024);
        assert_eq!(map.shard_of_key(b"anything"), ShardId::META);
    }

    #[test]
    fn slots_split_into_contiguous_nearly_equal_ranges() {
        let slots = SlotCount::new(10).unwrap();
        let map = ShardMap::initial(slots, 3, &members(&[1, 2, 3])).unwrap();
        let owners: Vec<u32> = slots.all().map(|slot| map.owner(slot).0).collect();
        assert_eq!(owners, vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        let map = ShardMap::initial(SlotCount::DEFAULT, 7, &members(&[1])).unwrap();
        let sizes: Vec<usize> = (0..7).map(|id| map.slots_of(ShardId(id)).count()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1024);
        assert!(sizes.iter().all(|size| *size == 146 || *size == 147), "{sizes:?}");
        // Contiguous: the owner never goes back to a smaller shard.
        let owners: Vec<ShardId> = SlotCount::DEFAULT.all().map(|slot| map.owner(slot)).collect();
        assert!(owners.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn a_key_routes_by_its_tag() {
        let map = ShardMap::initial(SlotCount::DEFAULT, 16, &members(&[1, 2, 3])).unwrap();
        assert_eq!(map.shard_of_key(b"{user42}.name"), map.shard_of_key(b"{user42}.cart"));
        assert_eq!(
            map.shard_of_key(b"{user42}.name"),
            map.owner(slot_of(b"user42", SlotCount::DEFAULT))
        );
        let used: std::collections::BTreeSet<ShardId> =
            (0..1000).map(|i| map.shard_of_key(format!("k{i}").as_bytes())).collect();
        assert_eq!(used.len(), 16, "1,000 keys reach every one of 16 shards");
    }

    #[test]
    fn bad_initial_maps_are_refused() {
        let three = members(&[1, 2, 3]);
        assert_eq!(
            ShardMap::initial(SlotCount::DEFAULT, 0, &three),
            Err(ShardMapError::ShardCount { given: 0 })
        );
        assert_eq!(
            ShardMap::initial(SlotCount::DEFAULT, 4097, &three),
            Err(ShardMapError::ShardCount { given: 4097 })
        );
        assert_eq!(
            ShardMap::initial(SlotCount::new(4).unwrap(), 5, &three),
            Err(ShardMapError::FewerSlotsThanShards { shards: 5, slots: 4 })
        );
        assert_eq!(
            ShardMap::initial(SlotCount::DEFAULT, 2, &[]),
            Err(ShardMapError::NoReplicas(ShardId(0)))
        );
        assert_eq!(
            ShardMap::initial(SlotCount::DEFAULT, 2, &members(&[1, 2, 1])),
            Err(ShardMapError::DuplicateReplica { shard: ShardId(0), member: NodeId(1) })
        );
    }

    #[test]
    fn every_change_is_validated_and_bumps_the_epoch() {
        let map = ShardMap::initial(SlotCount::new(8).unwrap(), 2, &members(&[1, 2, 3])).unwrap();
        let moved = map
            .changed(|draft| {
                draft.add_shard(ShardId(2), members(&[2, 3, 4]))?;
                draft.assign_slot(Slot(7), ShardId(2))?;
                draft.set_replicas(ShardId(1), members(&[1, 2, 4]))
            })
            .unwrap();
        assert_eq!(moved.epoch(), 2);
        assert_eq!(moved.owner(Slot(7)), ShardId(2));
        assert_eq!(moved.owner(Slot(6)), ShardId(1));
        assert_eq!(moved.shards_on(NodeId(4)).collect::<Vec<_>>(), vec![ShardId(1), ShardId(2)]);
        assert_eq!(map.epoch(), 1, "the original is unchanged");

        assert_eq!(
            map.changed(|draft| draft.set_replicas(ShardId(1), Vec::new())),
            Err(ShardMapError::NoReplicas(ShardId(1)))
        );
        assert_eq!(
            map.changed(|draft| draft.assign_slot(Slot(0), ShardId(9))),
            Err(ShardMapError::UnknownShard(ShardId(9)))
        );
        assert_eq!(
            map.changed(|draft| draft.assign_slot(Slot(8), ShardId(1))),
            Err(ShardMapError::SlotTable { found: 9, expected: 8 })
        );
        // A shard added but given no slots is allowed (it is being filled); one listed twice
        // is not.
        assert_eq!(
            map.changed(|draft| draft.add_shard(ShardId(5), members(&[4, 4]))),
            Err(ShardMapError::DuplicateReplica { shard: ShardId(5), member: NodeId(4) })
        );
    }

    #[test]
    fn a_map_survives_encoding() {
        let map = ShardMap::initial(SlotCount::DEFAULT, 16, &members(&[1, 2, 3])).unwrap();
        let bytes = postcard::to_allocvec(&map).unwrap();
        assert!(bytes.len() < 2048, "a 1,024-slot map encodes in {} bytes", bytes.len());
        let decoded: ShardMap = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, map);
        decoded.validate().unwrap();
    }

    /// A decoded map is checked, not trusted: a table of the wrong length or an owner that is
    /// not a shard is refused.
    #[test]
    fn validate_refuses_what_decoding_may_produce() {
        let mut map = ShardMap::initial(SlotCount::new(4).unwrap(), 2, &members(&[1])).unwrap();
        map.owners.pop();
        assert_eq!(map.validate(), Err(ShardMapError::SlotTable { found: 3, expected: 4 }));
        map.owners.push(ShardId(3));
        assert_eq!(
            map.validate(),
            Err(ShardMapError::UnknownOwner { slot: Slot(3), shard: ShardId(3) })
        );
        map.owners[3] = ShardId(1);
        map.shards.remove(&ShardId::META);
        assert_eq!(map.validate(), Err(ShardMapError::NoMetaGroup));
    }
}
