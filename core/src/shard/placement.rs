//! Where a shard's replicas go: rendezvous (highest-random-weight) hashing of shard and member.
//!
//! Every member gets a score for every shard from a fixed mix of the two ids; a shard's
//! replicas are the `replication` members with the highest scores, best first. Why rendezvous
//! and not a ring with virtual nodes: it needs no ring to build, keep or agree on — a
//! placement is a pure function of the shard and the member list — and it moves the minimum
//! when membership changes: a member that joins takes a replica of exactly the shards where it
//! outscores one of the current replicas (about R/N of them), and every other shard keeps its
//! replicas; a member that leaves is replaced, in each of its shards, by the next best member,
//! and nothing else moves. Scores are independent per member, so replicas spread evenly.
//!
//! The placement chosen is recorded in the shard map, so the mix below is not part of any
//! on-disk contract; its tests pin it all the same, so that a change is a decision.

use super::map::ShardId;
use crate::raft::NodeId;

/// A 64-bit finaliser with full avalanche (SplitMix64's): every input bit flips about half of
/// the output bits, which the score needs — ids are small, close integers.
fn mix(mut word: u64) -> u64 {
    word = (word ^ (word >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    word = (word ^ (word >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    word ^ (word >> 31)
}

/// `member`'s score for `shard`: higher wins.
pub fn score(shard: ShardId, member: NodeId) -> u64 {
    mix(mix(u64::from(shard.0)) ^ member.0)
}

/// The `replication` members (all of them, if fewer) that hold `shard`'s replicas, best first.
/// Ties — only for equal ids, which a member list does not have — go to the smaller id.
pub fn rendezvous(shard: ShardId, members: &[NodeId], replication: usize) -> Vec<NodeId> {
    let mut ranked: Vec<(u64, NodeId)> =
        members.iter().map(|member| (score(shard, *member), *member)).collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.dedup_by_key(|(_, member)| *member);
    ranked.into_iter().take(replication).map(|(_, member)| member).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn members(count: u64) -> Vec<NodeId> {
        (1..=count).map(NodeId).collect()
    }

    #[test]
    fn the_mix_is_splitmix64s_and_placements_are_pinned() {
        // SplitMix64 seeded with 0 first outputs mix(0 + its increment): a published vector.
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        // Fixed vectors, computed by an independent implementation of the same score: a
        // change to the mix changes where new shards go.
        assert_eq!(rendezvous(ShardId(0), &members(5), 3), vec![NodeId(2), NodeId(4), NodeId(5)]);
        assert_eq!(rendezvous(ShardId(1), &members(5), 3), vec![NodeId(2), NodeId(3), NodeId(5)]);
        assert_eq!(rendezvous(ShardId(7), &members(5), 3), vec![NodeId(4), NodeId(1), NodeId(5)]);
    }

    #[test]
    fn a_shard_gets_distinct_members_and_no_more_than_there_are() {
        let five = members(5);
        for shard in (0..100).map(ShardId) {
            let placed = rendezvous(shard, &five, 3);
            assert_eq!(placed.len(), 3);
            assert!(placed.iter().all(|member| five.contains(member)));
            assert!(placed[0] != placed[1] && placed[1] != placed[2] && placed[0] != placed[2]);
            // The order of the member list does not matter.
            let reversed: Vec<NodeId> = five.iter().rev().copied().collect();
            assert_eq!(rendezvous(shard, &reversed, 3), placed);
        }
        assert_eq!(rendezvous(ShardId(3), &members(2), 3).len(), 2);
        assert!(rendezvous(ShardId(3), &[], 3).is_empty());
    }

    #[test]
    fn replicas_spread_evenly_over_the_members() {
        const SHARDS: u32 = 3_000;
        let ten = members(10);
        let mut held: BTreeMap<NodeId, u32> = BTreeMap::new();
        for shard in (0..SHARDS).map(ShardId) {
            for member in rendezvous(shard, &ten, 3) {
                *held.entry(member).or_default() += 1;
            }
        }
        let fair = SHARDS * 3 / 10;
        for (member, count) in held {
            assert!(count.abs_diff(fair) * 10 < fair, "{member} holds {count}, fair is {fair}");
        }
    }

    #[test]
    fn a_member_joining_or_leaving_moves_only_the_replicas_it_takes_or_leaves() {
        const SHARDS: u32 = 3_000;
        let ten = members(10);
        let eleven = members(11);
        let mut taken: u32 = 0;
        for shard in (0..SHARDS).map(ShardId) {
            let before = rendezvous(shard, &ten, 3);
            let after = rendezvous(shard, &eleven, 3);
            if after.contains(&NodeId(11)) {
                taken += 1;
                // The newcomer replaces exactly one replica; the other two stay.
                assert_eq!(after.iter().filter(|member| before.contains(member)).count(), 2);
            } else {
                assert_eq!(after, before, "{shard} moved without the newcomer");
            }
            // The newcomer leaving again restores the old placement.
            assert_eq!(rendezvous(shard, &ten, 3), before);
        }
        // About R/N of the shards (3/11 of 3,000 is 818) take the newcomer.
        let expected = SHARDS * 3 / 11;
        assert!(taken.abs_diff(expected) * 10 < expected, "{taken} shards moved, about {expected}");
    }
}
