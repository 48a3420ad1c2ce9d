//! Requests that span shards (DESIGN.md, "Sharding", routing): a prefix listing asks every
//! shard and merges their pages in key order; a transaction must stay within one shard.
//!
//! A listing with a limit of L asks each shard for at most L keys after the same cursor. The
//! shards' keys are disjoint, so the first L keys of the merged pages are exactly the first L
//! keys of the whole keyspace after the cursor, and the last of them is the next cursor. There
//! is no cross-shard snapshot: each shard's page is linearizable on its own, and revisions are
//! per shard.

use std::collections::BTreeSet;
use std::fmt;

use super::map::{ShardId, ShardMap};
use crate::kv::KeyValue;

/// One shard's answer to a listing: its entries (`KeyValue`s, or their JSON form at a node
/// that relays other nodes' answers) in key order, and whether it has more after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPage<T = KeyValue> {
    pub shard: ShardId,
    pub kvs: Vec<T>,
    pub more: bool,
}

/// The merged page of a listing across shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedPage<T = KeyValue> {
    /// At most the limit, in key order.
    pub kvs: Vec<T>,
    /// Keys follow the last one returned (in some shard): ask again after it.
    pub more: bool,
}

/// The key of an entry of a listing.
pub trait ListedKey {
    fn listed_key(&self) -> &str;
}

impl ListedKey for KeyValue {
    fn listed_key(&self) -> &str {
        &self.key
    }
}

/// Merges the shards' pages of one listing into its first `limit` keys. Each page must be in
/// strictly increasing key order and answer the same cursor with at most `limit` keys.
pub fn merge_pages<T: ListedKey>(pages: Vec<ShardPage<T>>, limit: usize) -> MergedPage<T> {
    let mut more = false;
    let mut kvs = Vec::with_capacity(pages.iter().map(|page| page.kvs.len()).sum());
    for page in pages {
        assert!(page.kvs.len() <= limit, "{} answered more than the limit", page.shard);
        debug_assert!(page.kvs.windows(2).all(|pair| pair[0].listed_key() < pair[1].listed_key()));
        more |= page.more;
        kvs.extend(page.kvs);
    }
    kvs.sort_unstable_by(|a, b| a.listed_key().cmp(b.listed_key()));
    debug_assert!(
        kvs.windows(2).all(|pair| pair[0].listed_key() != pair[1].listed_key()),
        "shards share a key"
    );
    if kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    MergedPage { kvs, more }
}

/// A transaction whose keys fall in more than one shard, with a key of each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CrossShard {
    /// Each shard the keys fall in, with the first of its keys, in shard order.
    pub shards: Vec<(ShardId, String)>,
}

impl fmt::Display for CrossShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the keys of one transaction must be in one shard, these are in")?;
        for (position, (shard, key)) in self.shards.iter().enumerate() {
            let separator = if position == 0 { " " } else { ", " };
            write!(f, "{separator}{shard} (key {key:?})")?;
        }
        write!(f, "; give related keys one hash tag, as in {{user42}}.name and {{user42}}.cart")
    }
}

/// The one shard that owns all of `keys` (`None` for no keys), or which shards they span.
pub fn single_shard<'a>(
    map: &ShardMap,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<Option<ShardId>, CrossShard> {
    let mut seen: Vec<(ShardId, String)> = Vec::new();
    let mut shards = BTreeSet::new();
    for key in keys {
        let shard = map.shard_of_key(key.as_bytes());
        if shards.insert(shard) {
            seen.push((shard, key.to_owned()));
        }
    }
    match seen.len() {
        0 => Ok(None),
        1 => Ok(Some(seen[0].0)),
        _ => {
            seen.sort_by_key(|(shard, _)| *shard);
            Err(CrossShard { shards: seen })
        }
    }
}
