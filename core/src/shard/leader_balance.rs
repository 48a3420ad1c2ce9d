//! Which shard leadership to move next so that members lead about as many shards each.
//!
//! A shard's leader takes its proposals, its replication fan-out and its linearizable reads, so
//! a member leading more shards than the others does more of the cluster's work. Elections land
//! wherever a timer fires first, and a member that restarts finds its shards led by the others:
//! left alone, leaderships pile up. They are moved by leadership transfer, one at a time, from
//! a member to a replica of the same shard that leads at least two fewer shards. Each such move
//! lowers the sum of the squares of the members' counts by at least 2, so a sequence of moves
//! always ends, at a placement where no member could hand a shard to one of its replicas that
//! leads two fewer; where every member holds a replica of every shard, that means every member
//! leads within one of the others.

use std::collections::{BTreeMap, BTreeSet};

use super::ShardId;
use crate::raft::NodeId;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaderMove {
    pub shard: ShardId,
    pub from: NodeId,
    pub to: NodeId,
}

/// The next move, if any: of all shards led by an `available` member, and all their
/// `available` replicas leading at least two fewer shards than that leader, the pair with the
/// largest difference (ties: the lower shard, then the replica listed first). `replicas` are each
/// shard's replicas, `leaders` the shards whose leader is known. A member that is not
/// `available` (not answering) neither gives nor takes a leadership, and its shards are not
/// counted.
pub fn next_leader_move(
    replicas: &BTreeMap<ShardId, Vec<NodeId>>,
    leaders: &BTreeMap<ShardId, NodeId>,
    available: &BTreeSet<NodeId>,
) -> Option<LeaderMove> {
    let mut led: BTreeMap<NodeId, usize> = BTreeMap::new();
    for members in replicas.values() {
        for member in members.iter().filter(|member| available.contains(member)) {
            led.entry(*member).or_insert(0);
        }
    }
    for (shard, leader) in leaders {
        if replicas.contains_key(shard)
            && let Some(count) = led.get_mut(leader)
        {
            *count += 1;
        }
    }
    let mut best: Option<(usize, LeaderMove)> = None;
    for (shard, leader) in leaders {
        let (Some(from_count), Some(members)) = (led.get(leader), replicas.get(shard)) else {
            continue;
        };
        for member in members.iter().filter(|member| *member != leader) {
            let Some(to_count) = led.get(member) else { continue };
            let gap = from_count.saturating_sub(*to_count);
            let better = best.as_ref().is_none_or(|(best_gap, _)| gap > *best_gap);
            if gap >= 2 && better {
                best = Some((gap, LeaderMove { shard: *shard, from: *leader, to: *member }));
            }
        }
    }
    best.map(|(_, chosen)| chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{ShardMap, SlotCount};
    use proptest::prelude::*;

    fn members(count: u64) -> Vec<NodeId> {
        (1..=count).map(NodeId).collect()
    }

    fn replicas_of(map: &ShardMap) -> BTreeMap<ShardId, Vec<NodeId>> {
        map.shards().map(|(shard, info)| (shard, info.replicas.clone())).collect()
    }

    fn counts(leaders: &BTreeMap<ShardId, NodeId>) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for leader in leaders.values() {
            *counts.entry(*leader).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn every_shard_led_by_one_member_is_spread_over_all_three() {
        let all = members(3);
        let replicas: BTreeMap<ShardId, Vec<NodeId>> =
            (0..12).map(|shard| (ShardId(shard), all.clone())).collect();
        let mut leaders: BTreeMap<ShardId, NodeId> =
            (0..12).map(|shard| (ShardId(shard), NodeId(1))).collect();
        let available: BTreeSet<NodeId> = all.iter().copied().collect();
        let mut moves = 0;
        while let Some(chosen) = next_leader_move(&replicas, &leaders, &available) {
            assert_eq!(leaders[&chosen.shard], chosen.from);
            leaders.insert(chosen.shard, chosen.to);
            moves += 1;
        }
        assert_eq!(moves, 8, "eight leaderships leave node 1");
        assert!(counts(&leaders).values().all(|count| *count == 4), "{leaders:?}");
    }

    #[test]
    fn a_member_that_does_not_answer_takes_nothing() {
        let all = members(3);
        let replicas: BTreeMap<ShardId, Vec<NodeId>> =
            (0..4).map(|shard| (ShardId(shard), all.clone())).collect();
        let leaders: BTreeMap<ShardId, NodeId> =
            (0..4).map(|shard| (ShardId(shard), NodeId(1))).collect();
        let available: BTreeSet<NodeId> = [NodeId(1), NodeId(2)].into();
        let chosen = next_leader_move(&replicas, &leaders, &available).unwrap();
        assert_eq!(chosen.to, NodeId(2));
        let only_leader: BTreeSet<NodeId> = [NodeId(1)].into();
        assert_eq!(next_leader_move(&replicas, &leaders, &only_leader), None);
    }

    #[test]
    fn balanced_leaders_stay_where_they_are() {
        let all = members(3);
        let replicas: BTreeMap<ShardId, Vec<NodeId>> =
            (0..5).map(|shard| (ShardId(shard), all.clone())).collect();
        let leaders: BTreeMap<ShardId, NodeId> =
            (0..5).map(|shard| (ShardId(shard), NodeId(1 + u64::from(shard) % 3))).collect();
        let available = all.iter().copied().collect();
        assert_eq!(next_leader_move(&replicas, &leaders, &available), None);
    }

    proptest! {
        /// From any leaders on any bootstrap placement, the moves end within shards² steps,
        /// each from the shard's leader to one of its replicas; at the end no leader has a
        /// replica leading two fewer shards.
        #[test]
        fn moves_always_end_balanced(
            member_count in 3u64..8,
            shard_count in 1u64..40,
            replication in 3usize..5,
            picks in proptest::collection::vec(0usize..16, 40),
        ) {
            let all = members(member_count);
            let map = ShardMap::bootstrap(SlotCount::DEFAULT, shard_count, &all, replication)
                .unwrap();
            let replicas = replicas_of(&map);
            let mut leaders: BTreeMap<ShardId, NodeId> = replicas
                .iter()
                .map(|(shard, members)| (*shard, members[picks[shard.0 as usize] % members.len()]))
                .collect();
            let available: BTreeSet<NodeId> = all.iter().copied().collect();
            let mut moves = 0;
            while let Some(chosen) = next_leader_move(&replicas, &leaders, &available) {
                prop_assert_eq!(leaders[&chosen.shard], chosen.from);
                prop_assert!(replicas[&chosen.shard].contains(&chosen.to));
                leaders.insert(chosen.shard, chosen.to);
                moves += 1;
                prop_assert!(moves <= shard_count * shard_count, "the moves do not end");
            }
            let counts = counts(&leaders);
            for (shard, leader) in &leaders {
                for member in &replicas[shard] {
                    let (from, to) = (counts[leader], counts.get(member).copied().unwrap_or(0));
                    prop_assert!(from < to + 2, "{shard} could still move");
                }
            }
        }
    }
}
