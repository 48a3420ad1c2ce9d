//! Interning strings into dense `u32` ids, storing each distinct string once.
//!
//! A history of ten million operations holds about as many distinct values; as `String`s each
//! would cost a 24-byte header and a 32-byte allocation. Here they share one byte arena, with an
//! end offset per id and an open-addressing table of ids (linear probing, load at most one half,
//! [`FastHasher`]). Ids are given in order of first appearance, so a history interns the same
//! way every time.

use std::hash::Hasher;

use crate::fast_hash::FastHasher;

/// Distinct strings, at most: ids are `u32`.
const IDS_MAX: usize = u32::MAX as usize - 1;

#[derive(Debug, Default)]
pub(crate) struct Interner {
    /// Every distinct string, back to back.
    bytes: Vec<u8>,
    /// `ends[id]`: where string `id` ends in `bytes` (it starts where `id - 1` ends).
    ends: Vec<u64>,
    /// Open addressing: (`id + 1`, the high half of its hash), or (0, _) for an empty slot.
    /// Its length is a power of two. The hash half spares most byte comparisons of a probe.
    slots: Vec<(u32, u32)>,
}

fn hash_of(text: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write(text);
    hasher.finish()
}

impl Interner {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, id: u32) -> &str {
        // Only whole `&str`s are ever appended, so every range is on char boundaries.
        match std::str::from_utf8(self.bytes_of(id)) {
            Ok(text) => text,
            Err(_) => unreachable!("the arena holds whole UTF-8 strings"),
        }
    }

    fn bytes_of(&self, id: u32) -> &[u8] {
        let end = self.ends[id as usize] as usize;
        let start = match id {
            0 => 0,
            _ => self.ends[id as usize - 1] as usize,
        };
        &self.bytes[start..end]
    }

    /// The slot holding `text` (hashed `hash`), or the empty slot where it would go.
    fn probe(&self, text: &[u8], hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let tag = (hash >> 32) as u32;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                (0, _) => return slot,
                (occupied, seen) if seen == tag && self.bytes_of(occupied - 1) == text => {
                    return slot;
                }
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// The id of `text`, new if it was not seen before.
    pub(crate) fn intern(&mut self, text: &str) -> u32 {
        if 2 * (self.len() + 1) > self.slots.len() {
            self.grow();
        }
        let hash = hash_of(text.as_bytes());
        let slot = self.probe(text.as_bytes(), hash);
        if self.slots[slot].0 != 0 {
            return self.slots[slot].0 - 1;
        }
        assert!(self.len() < IDS_MAX, "more distinct strings than u32 ids");
        let id = self.len() as u32;
        self.bytes.extend_from_slice(text.as_bytes());
        self.ends.push(self.bytes.len() as u64);
        self.slots[slot] = (id + 1, (hash >> 32) as u32);
        id
    }

    /// The id of `text` if it was interned (not after [`Interner::freeze`]).
    pub(crate) fn find(&self, text: &str) -> Option<u32> {
        assert!(!self.slots.is_empty() || self.len() == 0, "looked up after freeze");
        if self.slots.is_empty() {
            return None;
        }
        let slot = self.probe(text.as_bytes(), hash_of(text.as_bytes()));
        self.slots[slot].0.checked_sub(1)
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let mut slots = vec![(0u32, 0u32); capacity];
        let mask = capacity - 1;
        for id in 0..self.len() as u32 {
            let hash = hash_of(self.bytes_of(id));
            let mut slot = hash as usize & mask;
            while slots[slot].0 != 0 {
                slot = (slot + 1) & mask;
            }
            slots[slot] = (id + 1, (hash >> 32) as u32);
        }
        self.slots = slots;
    }

    /// Frees the lookup table once no more strings will be interned (the strings stay).
    pub(crate) fn freeze(&mut self) {
        self.slots = Vec::new();
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_in_first_seen_order_and_stable() {
        let mut interner = Interner::default();
        let words: Vec<String> = (0..1_000).map(|index| format!("v{}", index % 300)).collect();
        let ids: Vec<u32> = words.iter().map(|word| interner.intern(word)).collect();
        assert_eq!(interner.len(), 300);
        for (word, &id) in words.iter().zip(&ids) {
            assert_eq!(interner.get(id), word);
            assert_eq!(interner.find(word), Some(id));
        }
        assert_eq!(ids[..3], [0, 1, 2]);
        assert_eq!(interner.find("absent"), None);
        assert_eq!(interner.intern(""), 300);
        assert_eq!(interner.get(300), "");
        interner.freeze();
        assert_eq!(interner.get(7), "v7");
        assert!(Interner::default().find("x").is_none());
    }
}
