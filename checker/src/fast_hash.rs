//! A fixed, fast hasher for the checker's interning table (`interner.rs`), which hashes
//! millions of short strings per check: the standard SipHash costs more than everything else
//! the partitioner does. Fixed, so that nothing depends on a random seed; the table is only
//! looked up, never iterated, so its order cannot reach a result.
//!
//! The mixing is FxHash's (a multiply and a rotate per word, as in rustc), finished with
//! SplitMix64's finaliser so that the low bits the table uses depend on every input bit.

use std::hash::Hasher;

use crate::model::mix64;

/// FxHash's multiplier (from the golden ratio).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length first: the last word is padded with zeros, which must not make "a" and
        // "a\0" the same.
        self.add(bytes.len() as u64);
        let mut rest = bytes;
        while let Some((word, tail)) = rest.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*word));
            rest = tail;
        }
        if !rest.is_empty() {
            // Byte by byte: a copy of fewer than eight bytes would be a call to memcpy.
            let word = rest
                .iter()
                .enumerate()
                .fold(0u64, |word, (index, &byte)| word | u64::from(byte) << (8 * index));
            self.add(word);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_u32(&mut self, word: u32) {
        self.add(u64::from(word));
    }

    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }

    fn write_usize(&mut self, word: usize) {
        self.add(word as u64);
    }

    fn finish(&self) -> u64 {
        mix64(self.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash_of(text: &str) -> u64 {
        let mut hasher = FastHasher::default();
        text.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn equal_strings_hash_equally_and_near_strings_differently() {
        assert_eq!(hash_of("k0042"), hash_of("k0042"));
        let hashes: std::collections::BTreeSet<u64> =
            (0..10_000).map(|index| hash_of(&format!("v{index}"))).collect();
        assert_eq!(hashes.len(), 10_000);
        // Strings that differ only past the first word, or only in length, differ too.
        assert_ne!(hash_of("abcdefgh1"), hash_of("abcdefgh2"));
        assert_ne!(hash_of("abc"), hash_of("abc\0"));
    }
}
