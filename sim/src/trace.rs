//! The run's trace hash: FNV-1a over everything the simulation observes (messages, disk
//! batches, applied entries, faults, client operations). Two runs of one seed must agree.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(OFFSET_BASIS)
    }
}

impl TraceHash {
    pub fn add(&mut self, word: u64) {
        for byte in word.to_le_bytes() {
            self.0 ^= byte as u64;
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    pub fn add_bytes(&mut self, bytes: &[u8]) {
        self.add(bytes.len() as u64);
        for byte in bytes {
            self.0 ^= *byte as u64;
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}
