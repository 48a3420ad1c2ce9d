//! The partitions of a history built while its file is read, from the keys alone: what
//! `partition.rs` computes from a table in memory, here without keeping any operation.
//!
//! Each relevant operation is given an [`Anchor`] as it is read — its key, or for a
//! transaction or a range the first key it names, or its range prefixes when it names none —
//! and the keys it names are joined (union-find) at once. A range also joins every key of the
//! history its prefix covers; those are known only at the end, so [`KeyJoins::finish`] applies
//! the range joins then, once per distinct (key, prefixes) pair rather than once per operation.
//! The result is the same partition of keys as `partition.rs`'s, numbered the same way (by
//! smallest key, the keyless partition last), and each anchor's partition.

use std::collections::{BTreeSet, HashMap};

use crate::history::Op;
use crate::interner::Interner;
use crate::partition::{for_each_named_key, for_each_range};
use crate::union_find::DisjointSets;

/// Where an operation goes, as far as is known while the file is still being read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The partition of this key (an id of [`KeyJoins`]).
    Key(u32),
    /// The partition of the keys that these range prefixes (a prefix set's id) cover; the
    /// keyless partition if they cover none.
    Ranges(u32),
    /// The keyless partition: a transaction that names no key and reads no range.
    Keyless,
}

/// Anchors as one `u32` (a spilled record's tag): keys below [`RANGES_BIT`], prefix sets above.
const RANGES_BIT: u32 = 1 << 31;
const KEYLESS_TAG: u32 = u32::MAX;

impl Anchor {
    pub(crate) fn tag(self) -> u32 {
        match self {
            Anchor::Key(key) => key,
            Anchor::Ranges(set) => RANGES_BIT | set,
            Anchor::Keyless => KEYLESS_TAG,
        }
    }

    pub(crate) fn from_tag(tag: u32) -> Anchor {
        match tag {
            KEYLESS_TAG => Anchor::Keyless,
            _ if tag & RANGES_BIT != 0 => Anchor::Ranges(tag & !RANGES_BIT),
            _ => Anchor::Key(tag),
        }
    }
}

/// No key (in the range joins: a range operation that names none).
const NO_KEY: u32 = u32::MAX;

/// Keys and joins, growing as the file is read.
#[derive(Default)]
pub(crate) struct KeyJoins {
    keys: Interner,
    sets: DisjointSets,
    prefixes: Interner,
    /// Distinct sets of range prefixes (sorted prefix ids), by id.
    prefix_sets: Vec<Vec<u32>>,
    prefix_set_ids: HashMap<Vec<u32>, u32>,
    /// (a key the operation names, or [`NO_KEY`]; a prefix set): at the end, every key the
    /// prefixes cover joins that key (or, without one, the others it covers).
    range_joins: BTreeSet<(u32, u32)>,
    /// Reused per operation.
    named: Vec<u32>,
}

impl KeyJoins {
    fn key(&mut self, key: &str) -> u32 {
        let id = self.keys.intern(key);
        // Distinct keys are fewer than the bytes of a file (at most 4 GiB, each key quoted).
        assert!(id < RANGES_BIT, "fewer than 2^31 distinct keys");
        if id as usize == self.sets.len() {
            self.sets.push();
        }
        id
    }

    /// The anchor of a relevant operation (every key it names becomes a key of the history).
    pub(crate) fn anchor(&mut self, op: &Op) -> Anchor {
        if let Some(key) = op.key() {
            return Anchor::Key(self.key(key));
        }
        let mut named = std::mem::take(&mut self.named);
        named.clear();
        for_each_named_key(op, &mut |key| named.push(self.key(key)));
        for &key in &named {
            self.sets.union(named[0], key);
        }
        let mut prefixes: Vec<u32> = Vec::new();
        for_each_range(op, &mut |range| prefixes.push(self.prefixes.intern(&range.prefix)));
        let first = named.first().copied();
        self.named = named;
        if prefixes.is_empty() {
            return first.map_or(Anchor::Keyless, Anchor::Key);
        }
        prefixes.sort_unstable();
        prefixes.dedup();
        let set = match self.prefix_set_ids.get(&prefixes) {
            Some(&set) => set,
            None => {
                let set = self.prefix_sets.len() as u32;
                assert!(set < RANGES_BIT, "fewer than 2^31 distinct prefix sets");
                self.prefix_sets.push(prefixes.clone());
                self.prefix_set_ids.insert(prefixes, set);
                set
            }
        };
        self.range_joins.insert((first.unwrap_or(NO_KEY), set));
        first.map_or(Anchor::Ranges(set), Anchor::Key)
    }

    /// Applies the range joins and numbers the partitions.
    pub(crate) fn finish(mut self) -> Partitioning {
        let key_count = self.keys.len();
        // Keys in byte order, as `partition.rs` ranks them.
        let mut sorted: Vec<u32> = (0..key_count as u32).collect();
        sorted.sort_unstable_by(|&a, &b| self.keys.get(a).cmp(self.keys.get(b)));
        let covered = |keys: &Interner, prefix: &str| -> std::ops::Range<usize> {
            let from = sorted.partition_point(|&id| keys.get(id) < prefix);
            let to = from + sorted[from..].partition_point(|&id| keys.get(id).starts_with(prefix));
            from..to
        };
        // Per prefix set, any key it covers (its partition, once joined, is the set's).
        let mut covered_by_set: Vec<Option<u32>> = vec![None; self.prefix_sets.len()];
        for &(key, set) in &self.range_joins {
            let mut join_to = (key != NO_KEY).then_some(key);
            for &prefix in &self.prefix_sets[set as usize] {
                for &id in &sorted[covered(&self.keys, self.prefixes.get(prefix))] {
                    let to = *join_to.get_or_insert(id);
                    self.sets.union(to, id);
                    covered_by_set[set as usize].get_or_insert(id);
                }
            }
        }
        // Partitions numbered by their smallest key in byte order.
        let mut partition_of_root: Vec<Option<u32>> = vec![None; key_count];
        let mut partition_of_key: Vec<u32> = vec![0; key_count];
        let mut keys_of: Vec<Vec<u32>> = Vec::new();
        for &id in &sorted {
            let root = self.sets.find(id) as usize;
            let partition = *partition_of_root[root].get_or_insert_with(|| {
                keys_of.push(Vec::new());
                (keys_of.len() - 1) as u32
            });
            partition_of_key[id as usize] = partition;
            keys_of[partition as usize].push(id);
        }
        let keyless = keys_of.len() as u32;
        let partition_of_set = covered_by_set
            .iter()
            .map(|key| key.map_or(keyless, |key| partition_of_key[key as usize]))
            .collect();
        Partitioning { keys: self.keys, partition_of_key, partition_of_set, keys_of, keyless }
    }
}

/// The partitions of the history's keys: `0..keyless` in order of their smallest key, then
/// `keyless`, the partition of operations that touch no key.
pub(crate) struct Partitioning {
    keys: Interner,
    partition_of_key: Vec<u32>,
    partition_of_set: Vec<u32>,
    /// Per keyed partition, its keys (ids) in byte order.
    keys_of: Vec<Vec<u32>>,
    pub(crate) keyless: u32,
}

impl Partitioning {
    pub(crate) fn partition_of(&self, anchor: Anchor) -> u32 {
        match anchor {
            Anchor::Key(key) => self.partition_of_key[key as usize],
            Anchor::Ranges(set) => self.partition_of_set[set as usize],
            Anchor::Keyless => self.keyless,
        }
    }

    /// The keys of a partition (none for the keyless one), in byte order.
    pub(crate) fn keys_of(&self, partition: u32) -> Vec<&str> {
        match self.keys_of.get(partition as usize) {
            Some(ids) => ids.iter().map(|&id| self.keys.get(id)).collect(),
            None => Vec::new(),
        }
    }

    /// A key by its id.
    pub(crate) fn key(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.keys.len()).then(|| self.keys.get(id))
    }
}
