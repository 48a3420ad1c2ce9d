//! The memo cache of the search: every (linearized set, model state) pair already explored.
//!
//! Reaching a pair a second time cannot lead anywhere new — what can still be linearized
//! depends only on which operations are done and on the state — so the search skips it. This is
//! what turns the search over interleavings into one over distinct configurations (Lowe;
//! porcupine).
//!
//! Entries live in flat arenas (no allocation per entry) and are compared exactly, so a hash
//! collision costs a comparison, never a wrong verdict. Memory is bounded: once the cache holds
//! `max_bytes`, it stops remembering new pairs. The search stays exact without them, only
//! slower, and the step budget bounds the time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::linset::LinSet;
use crate::model::State;

/// The table's keys are already well-mixed 64-bit hashes; hashing them again is wasted work.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

const NO_ENTRY: u32 = u32::MAX;

#[derive(Debug)]
struct Entry {
    hash: u64,
    /// Canonical form of the linearized set: leading full words, then `words_len` words at
    /// `words_start` in the words arena.
    full_words: u32,
    words_len: u32,
    words_start: usize,
    /// The state's values at `state_start` in the states arena (`slot_count` of them).
    state_start: usize,
    /// Next entry with the same hash.
    next: u32,
}

pub(crate) struct MemoCache {
    /// Hash to the first entry of its chain. Lookups only: never iterated.
    table: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>,
    entries: Vec<Entry>,
    words: Vec<u64>,
    states: Vec<u32>,
    slot_count: usize,
    max_bytes: usize,
    full: bool,
}

impl MemoCache {
    pub(crate) fn new(slot_count: usize, max_bytes: usize) -> MemoCache {
        MemoCache {
            table: HashMap::default(),
            entries: Vec::new(),
            words: Vec::new(),
            states: Vec::new(),
            slot_count,
            max_bytes,
            full: false,
        }
    }

    fn size_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.words.capacity() * size_of::<u64>()
            + self.states.capacity() * size_of::<u32>()
            + self.table.capacity() * (size_of::<u64>() + size_of::<u32>() + 1)
    }

    /// Records `(linearized, state)` and returns true if it was not seen before. When the cache
    /// is full an unseen pair is reported as new but not recorded.
    pub(crate) fn insert_if_new(&mut self, linearized: &LinSet, state: &State) -> bool {
        assert_eq!(state.values().len(), self.slot_count);
        let hash = linearized.hash() ^ state.hash().rotate_left(29);
        let (full_words, words) = linearized.canonical();
        let head = self.table.get(&hash).copied().unwrap_or(NO_ENTRY);
        let mut cursor = head;
        while cursor != NO_ENTRY {
            let entry = &self.entries[cursor as usize];
            if entry.hash == hash
                && entry.full_words == full_words
                && entry.words_len as usize == words.len()
                && &self.words[entry.words_start..entry.words_start + words.len()] == words
                && &self.states[entry.state_start..entry.state_start + self.slot_count]
                    == state.values()
            {
                return false;
            }
            cursor = entry.next;
        }
        if self.full {
            return true;
        }
        let index = u32::try_from(self.entries.len()).unwrap_or(NO_ENTRY);
        if index == NO_ENTRY || self.size_bytes() >= self.max_bytes {
            self.full = true;
            return true;
        }
        self.entries.push(Entry {
            hash,
            full_words,
            words_len: words.len() as u32,
            words_start: self.words.len(),
            state_start: self.states.len(),
            next: head,
        });
        self.words.extend_from_slice(words);
        self.states.extend_from_slice(state.values());
        self.table.insert(hash, index);
        true
    }
}
