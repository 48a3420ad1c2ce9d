//! Which slot a key belongs to (see DESIGN.md, "Sharding"): `slot = CRC32C(tag) mod S`, where the
//! tag is the text inside the key's first `{…}` when that is not empty (as in Redis Cluster, so
//! that related keys — `{user42}.name`, `{user42}.cart` — share a slot and a shard, and can be
//! in one transaction), and the whole key otherwise.
//!
//! The function is part of the cluster's on-disk contract: every node of every version must map
//! a key to the same slot for the cluster's whole life, so it is specified here byte for byte and
//! tested against fixed vectors, never left to a hasher whose output may change between
//! releases. CRC32C is the checksum the log already uses, and its vectors are published (RFC
//! 3720, appendix B.4).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A slot number, below the cluster's [`SlotCount`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot(pub u32);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {}", self.0)
    }
}

/// The number of slots, fixed when the cluster is created.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCount(u32);

/// Why a slot count was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a cluster has between 1 and {max} slots, not {given}", max = SlotCount::MAX)]
pub struct SlotCountError {
    pub given: u64,
}

impl SlotCount {
    /// The default: enough slots to spread over hundreds of shards, few enough that the map
    /// (one shard id per slot) stays a few kilobytes.
    pub const DEFAULT: SlotCount = SlotCount(1024);
    /// The map holds one entry per slot and travels in every map update; past this it would be
    /// larger than a Raft entry should be.
    pub const MAX: u32 = 16_384;

    pub fn new(count: u64) -> Result<SlotCount, SlotCountError> {
        match u32::try_from(count) {
            Ok(count) if (1..=Self::MAX).contains(&count) => Ok(SlotCount(count)),
            _ => Err(SlotCountError { given: count }),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Every slot, in order.
    pub fn all(self) -> impl Iterator<Item = Slot> {
        (0..self.0).map(Slot)
    }
}

impl Default for SlotCount {
    fn default() -> Self {
        SlotCount::DEFAULT
    }
}

/// The part of `key` that decides its slot: the bytes between the first `{` and the first `}`
/// after it, if there are any; otherwise the whole key (`{}` and an unclosed `{` do not count).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|byte| *byte == b'{') else { return key };
    let after_open = &key[open + 1..];
    match after_open.iter().position(|byte| *byte == b'}') {
        Some(close) if close > 0 => &after_open[..close],
        _ => key,
    }
}

/// The slot of `key` in a cluster of `slots` slots.
pub fn slot_of(key: &[u8], slots: SlotCount) -> Slot {
    Slot(crc32c::crc32c(hash_tag(key)) % slots.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published CRC32C check values: "123456789" (the catalogue's check string) and RFC 3720
    /// appendix B.4. If these fail, keys would land in other slots than on other builds.
    #[test]
    fn the_hash_is_crc32c_as_published() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c::crc32c(&ascending), 0x46dd_794e);
        let descending: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c::crc32c(&descending), 0x113f_db5c);
    }

    /// The vectors above, as slots: the remainder of the published CRC, so a change of hash,
    /// of tag rule or of reduction shows here.
    #[test]
    fn fixed_slot_vectors() {
        let slots = SlotCount::DEFAULT;
        assert_eq!(slot_of(b"123456789", slots), Slot(0xe306_9283 % 1024));
        assert_eq!(slot_of(b"{123456789}.name", slots), Slot(0xe306_9283 % 1024));
        assert_eq!(slot_of(b"x{123456789}{y}", slots), Slot(0xe306_9283 % 1024));
        assert_eq!(
            slot_of(&[0u8; 32], SlotCount::new(16_384).unwrap()),
            Slot(0x8a91_36aa % 16_384)
        );
        assert_eq!(slot_of(&[0xffu8; 32], SlotCount::new(7).unwrap()), Slot(0x62a8_ab43 % 7));
        assert_eq!(slot_of(b"anything", SlotCount::new(1).unwrap()), Slot(0));
    }

    #[test]
    fn the_tag_is_the_first_non_empty_braces() {
        assert_eq!(hash_tag(b"{user42}.name"), b"user42");
        assert_eq!(hash_tag(b"cart:{user42}"), b"user42");
        assert_eq!(hash_tag(b"a{b}c{d}"), b"b");
        // Redis Cluster's rule: the first `}` after the first `{`, even if another `{` follows.
        assert_eq!(hash_tag(b"a{b{c}d}"), b"b{c");
        // No tag: the whole key.
        assert_eq!(hash_tag(b"plain"), b"plain");
        assert_eq!(hash_tag(b"{}user"), b"{}user");
        assert_eq!(hash_tag(b"{unclosed"), b"{unclosed");
        assert_eq!(hash_tag(b"}{"), b"}{");
        assert_eq!(hash_tag(b""), b"");
    }

    #[test]
    fn keys_sharing_a_tag_share_a_slot() {
        let slots = SlotCount::DEFAULT;
        let slot = slot_of(b"{user42}.name", slots);
        for key in [&b"{user42}.cart"[..], b"orders:{user42}", b"user42", b"{user42}"] {
            assert_eq!(slot_of(key, slots), slot, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn slot_counts_are_bounded() {
        assert_eq!(SlotCount::new(0), Err(SlotCountError { given: 0 }));
        assert_eq!(SlotCount::new(16_385), Err(SlotCountError { given: 16_385 }));
        assert_eq!(SlotCount::new(u64::MAX), Err(SlotCountError { given: u64::MAX }));
        assert_eq!(SlotCount::new(16_384).map(SlotCount::get), Ok(16_384));
        assert_eq!(SlotCount::default().all().count(), 1024);
        assert_eq!(
            SlotCountError { given: 0 }.to_string(),
            "a cluster has between 1 and 16384 slots, not 0"
        );
    }

    /// Slots spread keys evenly enough to balance shards: 100,000 distinct keys over 1,024
    /// slots put every slot within 50% of the mean (about five standard deviations).
    #[test]
    fn keys_spread_over_the_slots() {
        let slots = SlotCount::DEFAULT;
        let mut counts = vec![0u32; slots.get() as usize];
        for i in 0..100_000 {
            counts[slot_of(format!("key-{i}").as_bytes(), slots).0 as usize] += 1;
        }
        let mean = 100_000.0 / f64::from(slots.get());
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(f64::from(*min) > mean * 0.5 && f64::from(*max) < mean * 1.5, "{min}..{max}");
    }
}
