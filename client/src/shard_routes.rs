//! Where a sharded cluster's keys go, as the client keeps it: the slot of each key (the same
//! hash the cluster uses, pinned by the vectors below), the shard that owns each slot, and the
//! address of each shard's leader — from `GET /cluster/shards`, fetched when a node's answer
//! says the cluster is sharded (`x-conclave-shard-epoch`) and again whenever a routed request
//! fails, is redirected or is refused as misdirected. A route is only a first guess: any node
//! serves any key (it forwards what it does not lead), so a stale route costs a hop, never a
//! wrong answer.

use std::collections::BTreeMap;

use crate::api::ShardsJson;

/// The part of `key` that decides its slot: the bytes between the first `{` and the first `}`
/// after it, if there are any; otherwise the whole key (`{}` and an unclosed `{` do not count).
/// The cluster's rule (DESIGN.md, "Sharding"; `conclave_core::shard::hash_tag`), written here
/// too because this crate depends on nothing of the server; both are pinned by the same fixed
/// vectors, so neither can drift alone.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|byte| *byte == b'{') else { return key };
    let after_open = &key[open + 1..];
    match after_open.iter().position(|byte| *byte == b'}') {
        Some(close) if close > 0 => &after_open[..close],
        _ => key,
    }
}

/// The slot of `key` among `slot_count` slots: CRC32C of its hash tag, modulo the count.
pub fn slot_of(key: &[u8], slot_count: u32) -> u32 {
    crc32c::crc32c(hash_tag(key)) % slot_count.max(1)
}

/// A sharded cluster's routes at one map epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRoutes {
    pub epoch: u64,
    /// The shard of each slot.
    owners: Vec<u32>,
    /// Each shard's leader (or, while none is known, its first replica), as a base URL.
    targets: BTreeMap<u32, String>,
}

/// The most slots a map may have (the cluster's own bound).
const MAX_SLOTS: u32 = 1 << 16;

impl ShardRoutes {
    /// The routes `/cluster/shards` gives; `Ok(None)` for a single-group cluster (epoch 0),
    /// `Err` for an answer that does not add up (slots out of range or owned twice).
    pub fn from_json(shards: &ShardsJson) -> Result<Option<ShardRoutes>, String> {
        if shards.epoch == 0 {
            return Ok(None);
        }
        if shards.slot_count == 0 || shards.slot_count > MAX_SLOTS {
            return Err(format!("a map of {} slots", shards.slot_count));
        }
        let mut owners: Vec<Option<u32>> = vec![None; shards.slot_count as usize];
        let mut targets = BTreeMap::new();
        for shard in &shards.shards {
            for range in shard.slots.split(',').filter(|range| !range.is_empty()) {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                let parse = |text: &str| text.trim().parse::<u32>().ok();
                let (Some(start), Some(end)) = (parse(start), parse(end)) else {
                    return Err(format!("shard {}: slot range {range:?}", shard.shard));
                };
                if start > end || end >= shards.slot_count {
                    return Err(format!("shard {}: slot range {range:?}", shard.shard));
                }
                for slot in start..=end {
                    if owners[slot as usize].replace(shard.shard).is_some() {
                        return Err(format!("slot {slot} is owned twice"));
                    }
                }
            }
            let member = shard.leader.or_else(|| shard.replicas.first().copied());
            if let Some(address) = member.and_then(|id| shards.addresses.get(&id)) {
                targets.insert(shard.shard, format!("http://{address}"));
            }
        }
        let owners = owners
            .into_iter()
            .enumerate()
            .map(|(slot, owner)| owner.ok_or_else(|| format!("slot {slot} has no shard")))
            .collect::<Result<Vec<u32>, String>>()?;
        Ok(Some(ShardRoutes { epoch: shards.epoch, owners, targets }))
    }

    /// The shard that owns `key`'s slot.
    pub fn shard_of(&self, key: &str) -> u32 {
        self.owners[slot_of(key.as_bytes(), self.owners.len() as u32) as usize]
    }

    /// The base URL to send a request for `key` to first, if the routes name one.
    pub fn target_of(&self, key: &str) -> Option<&str> {
        self.target_of_shard(self.shard_of(key))
    }

    /// The base URL of `shard`'s leader (or first replica), if the routes name one.
    pub fn target_of_shard(&self, shard: u32) -> Option<&str> {
        self.targets.get(&shard).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ShardJson;

    /// The vectors the cluster's own slot function is pinned to (`conclave_core::shard::slot`):
    /// the remainder of the published CRC32C check values.
    #[test]
    fn fixed_slot_vectors() {
        assert_eq!(slot_of(b"123456789", 1024), 0xe306_9283 % 1024);
        assert_eq!(slot_of(b"{123456789}.name", 1024), 0xe306_9283 % 1024);
        assert_eq!(slot_of(b"x{123456789}{y}", 1024), 0xe306_9283 % 1024);
        assert_eq!(slot_of(&[0u8; 32], 16_384), 0x8a91_36aa % 16_384);
        assert_eq!(slot_of(&[0xffu8; 32], 7), 0x62a8_ab43 % 7);
        assert_eq!(slot_of(b"anything", 1), 0);
        assert_eq!(hash_tag(b"a{b{c}d}"), b"b{c");
        assert_eq!(hash_tag(b"{}user"), b"{}user");
    }

    fn shard(shard: u32, slots: &str, replicas: &[u64], leader: Option<u64>) -> ShardJson {
        ShardJson {
            shard,
            slots: slots.into(),
            replicas: replicas.to_vec(),
            leader,
            ..ShardJson::default()
        }
    }

    fn map(shards: Vec<ShardJson>) -> ShardsJson {
        let addresses =
            (1..=3).map(|id| (id, format!("10.0.0.{id}:8001"))).collect::<BTreeMap<_, _>>();
        ShardsJson { epoch: 3, slot_count: 1024, shards, addresses }
    }

    #[test]
    fn a_key_goes_to_its_shards_leader_or_first_replica() {
        let routes = ShardRoutes::from_json(&map(vec![
            shard(0, "0-511", &[1, 2], Some(2)),
            shard(1, "512-1023", &[3, 1], None),
        ]))
        .expect("valid")
        .expect("sharded");
        let key_in = |low: bool| {
            (0..1000)
                .map(|i| format!("key{i}"))
                .find(|key| (slot_of(key.as_bytes(), 1024) < 512) == low)
                .expect("keys of both halves")
        };
        assert_eq!(routes.target_of(&key_in(true)), Some("http://10.0.0.2:8001"));
        assert_eq!(routes.target_of(&key_in(false)), Some("http://10.0.0.3:8001"));
    }

    #[test]
    fn a_single_group_has_no_routes_and_broken_maps_are_refused() {
        let single = ShardsJson { epoch: 0, ..map(vec![shard(0, "0-1023", &[1], Some(1))]) };
        assert_eq!(ShardRoutes::from_json(&single), Ok(None));
        for broken in [
            vec![shard(0, "0-511", &[1], None)], // a hole
            vec![shard(0, "0-600", &[1], None), shard(1, "512-1023", &[2], None)], // overlap
            vec![shard(0, "0-1024", &[1], None)], // out of range
            vec![shard(0, "x-3", &[1], None)],   // not a number
        ] {
            assert!(ShardRoutes::from_json(&map(broken)).is_err());
        }
    }
}
