//! Listings merged across shards and transactions confined to one (`shard/fan_out.rs`): a
//! paged listing over any split of the keyspace returns every key exactly once, in order, as
//! one group holding every key would.

use std::collections::BTreeSet;

use bytes::Bytes;
use conclave_core::kv::{KeyMeta, KeyValue};
use conclave_core::raft::NodeId;
use conclave_core::shard::{
    CrossShard, ShardId, ShardMap, ShardPage, SlotCount, merge_pages, single_shard,
};
use proptest::prelude::*;

fn key_value(key: &str) -> KeyValue {
    let meta = KeyMeta { create_revision: 1, mod_revision: 1, version: 1, expires_at_ms: None };
    KeyValue { key: key.to_owned(), value: Bytes::from_static(b"v"), meta }
}

/// What one shard answers for a listing after `cursor`: at most `limit` of its keys.
fn page(shard: ShardId, keys: &BTreeSet<String>, cursor: Option<&str>, limit: usize) -> ShardPage {
    let after: Vec<&String> =
        keys.iter().filter(|key| cursor.is_none_or(|cursor| key.as_str() > cursor)).collect();
    ShardPage {
        shard,
        kvs: after.iter().take(limit).map(|key| key_value(key)).collect(),
        more: after.len() > limit,
    }
}

proptest! {
    #[test]
    fn paging_through_merged_shards_returns_every_key_once_in_order(
        keys in prop::collection::btree_set("[a-e]{1,3}", 0..60),
        shard_of in prop::collection::vec(0u32..4, 60),
        limit in 1usize..7,
    ) {
        // Split the keys over four shards, by position.
        let mut shards: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 4];
        for (position, key) in keys.iter().enumerate() {
            shards[shard_of[position] as usize].insert(key.clone());
        }
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let pages = shards
                .iter()
                .enumerate()
                .map(|(id, keys)| page(ShardId(id as u32), keys, cursor.as_deref(), limit))
                .collect();
            let merged = merge_pages(pages, limit);
            prop_assert!(merged.kvs.len() <= limit);
            // A page is full or the listing is at its end.
            prop_assert!(merged.kvs.len() == limit || !merged.more);
            listed.extend(merged.kvs.iter().map(|kv| kv.key.clone()));
            match merged.kvs.last() {
                Some(last) if merged.more => cursor = Some(last.key.clone()),
                _ => break,
            }
        }
        prop_assert_eq!(listed, keys.into_iter().collect::<Vec<_>>());
    }
}

#[test]
fn a_transactions_keys_must_share_a_shard_and_hash_tags_keep_them_together() {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let map = ShardMap::initial(SlotCount::DEFAULT, 8, &members).expect("a valid map");
    assert_eq!(single_shard(&map, []), Ok(None));
    // Keys with one hash tag are in one shard, whatever else they hold.
    let tagged = ["{user42}.name", "{user42}.cart", "orders/{user42}"];
    let shard = single_shard(&map, tagged).expect("one shard").expect("some shard");
    assert_eq!(shard, map.shard_of_key(b"user42"));
    // Keys spread over shards are refused, naming each shard with one of its keys.
    let spread: Vec<String> = (0..64).map(|i| format!("key-{i}")).collect();
    let error = single_shard(&map, spread.iter().map(String::as_str)).expect_err("spans shards");
    let CrossShard { shards } = &error;
    assert!(shards.len() > 1);
    assert!(shards.windows(2).all(|pair| pair[0].0 < pair[1].0), "in shard order");
    for (shard, key) in shards {
        assert_eq!(map.shard_of_key(key.as_bytes()), *shard);
    }
    let message = error.to_string();
    assert!(message.contains("hash tag") && message.contains(&shards[0].1), "{message}");
}
