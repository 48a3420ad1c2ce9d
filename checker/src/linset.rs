//! The set of operations linearized so far, as a bitset with an incremental hash and a compact
//! canonical form for the memo cache.
//!
//! Operations are numbered in call order and the search linearizes them roughly in that order,
//! so the set is almost always "everything below some point, plus a few ops near it". The
//! canonical form drops the leading all-ones words and the trailing zero words, which keeps a
//! cache entry a few words long even for a partition of a hundred thousand operations.

use crate::model::mix64;

#[derive(Debug)]
pub(crate) struct LinSet {
    words: Vec<u64>,
    /// XOR of `member_hash(op)` over the members.
    hash: u64,
    /// `words[..full_words]` are all ones, and `words[full_words]` is not (if it exists).
    full_words: usize,
    /// `words[high..]` are all zero, and `words[high - 1]` is not (if `high > 0`).
    high: usize,
}

fn member_hash(op: u32) -> u64 {
    mix64(u64::from(op) ^ 0x11e4_a512_e5e7)
}

impl LinSet {
    pub(crate) fn new(op_count: usize) -> LinSet {
        LinSet { words: vec![0; op_count.div_ceil(64)], hash: 0, full_words: 0, high: 0 }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn contains(&self, op: u32) -> bool {
        self.words[op as usize / 64] & (1 << (op % 64)) != 0
    }

    pub(crate) fn insert(&mut self, op: u32) {
        assert!(!self.contains(op));
        let word = op as usize / 64;
        self.words[word] |= 1 << (op % 64);
        self.hash ^= member_hash(op);
        self.high = self.high.max(word + 1);
        while self.full_words < self.words.len() && self.words[self.full_words] == u64::MAX {
            self.full_words += 1;
        }
    }

    pub(crate) fn remove(&mut self, op: u32) {
        assert!(self.contains(op));
        let word = op as usize / 64;
        self.words[word] &= !(1 << (op % 64));
        self.hash ^= member_hash(op);
        self.full_words = self.full_words.min(word);
        while self.high > 0 && self.words[self.high - 1] == 0 {
            self.high -= 1;
        }
    }

    /// `(number of leading all-ones words, the words between them and the trailing zeros)`:
    /// equal sets, and only equal sets, have equal canonical forms.
    pub(crate) fn canonical(&self) -> (u32, &[u64]) {
        // Leading all-ones words are non-zero, so they end at or before the last non-zero one.
        assert!(self.full_words <= self.high);
        let start = self.full_words;
        (start as u32, &self.words[start..self.high])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_and_hash_depend_only_on_membership() {
        let mut a = LinSet::new(300);
        let mut b = LinSet::new(300);
        for op in 0..130 {
            a.insert(op);
        }
        a.insert(200);
        a.insert(140);
        a.remove(140);
        b.insert(200);
        for op in (0..130).rev() {
            b.insert(op);
        }
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.canonical().0, 2);
        b.remove(5);
        assert_ne!(a.canonical(), b.canonical());
        assert_eq!(b.canonical().0, 0);
        for op in (0..130).chain([200]).filter(|&op| op != 5) {
            b.remove(op);
        }
        assert_eq!(b.canonical(), (0, &[][..]));
        assert_eq!(b.hash(), 0);
    }
}
