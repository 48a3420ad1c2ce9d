//! FNV-1a (64-bit): a fixed, seedless hash, so that every node, build and run computes the
//! same digest of the same state. std's `DefaultHasher` is unspecified across releases and
//! `RandomState` is seeded per process — both useless for comparing nodes.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A streaming FNV-1a hasher. It implements `Extend<u8>` so that postcard can serialise
/// straight into it (`postcard::to_extend`) without materialising the encoding.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Fnv1a {
    state: u64,
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a { state: FNV_OFFSET_BASIS }
    }
}

impl Fnv1a {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.state ^= u64::from(*byte);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
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
#[cfg(test)]
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
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
    }
}
