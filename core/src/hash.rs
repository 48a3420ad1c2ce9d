//! FNV-1a (64-bit): a fixed, seedless hash, so that every node, build and run computes the
//! same digest of the same state. std's `DefaultHasher` is unspecified across releases and
//! `RandomState` is seeded per process — both useless for comparing nodes. The one copy of it:
//! state-machine digests, the simulator's trace hash, the test harness's chain digest and the
//! ids a node derives from names all use this.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A streaming FNV-1a hasher. It implements `Extend<u8>` so that postcard can serialise
/// straight into it (`postcard::to_extend`) without materialising the encoding.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fnv1a {
    state: u64,
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a { state: FNV_OFFSET_BASIS }
    }
}

impl Fnv1a {
    /// Continues a hash from a state an earlier `finish` returned (a digest chained across
    /// calls and stored as a number).
    pub fn resume(state: u64) -> Fnv1a {
        Fnv1a { state }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.state ^= u64::from(*byte);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// The little-endian bytes of `word`.
    pub fn write_u64(&mut self, word: u64) {
        self.write(&word.to_le_bytes());
    }

    pub fn finish(&self) -> u64 {
        self.state
    }
}

impl Extend<u8> for Fnv1a {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        for byte in bytes {
            self.write(&[byte]);
        }
    }
}

impl<'a> Extend<&'a u8> for Fnv1a {
    fn extend<I: IntoIterator<Item = &'a u8>>(&mut self, bytes: I) {
        for byte in bytes {
            self.write(&[*byte]);
        }
    }
}

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv1a::default();
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_digest_matches_published_fnv1a_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv): "", "a", "foobar".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let mut streamed = Fnv1a::default();
        streamed.extend(b"foo".iter().copied());
        streamed.extend(b"bar");
        assert_eq!(streamed.finish(), fnv1a(b"foobar"));
        let mut resumed = Fnv1a::resume(fnv1a(b"foo"));
        resumed.write(b"bar");
        assert_eq!(resumed.finish(), fnv1a(b"foobar"));
        let mut words = Fnv1a::default();
        words.write_u64(0x0102_0304_0506_0708);
        assert_eq!(words.finish(), fnv1a(&[8, 7, 6, 5, 4, 3, 2, 1]));
    }
}
