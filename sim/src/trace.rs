//! The run's trace hash: FNV-1a over everything the simulation observes (messages, disk
//! batches, applied entries, faults, client operations). Two runs of one seed must agree.

use conclave_core::hash::Fnv1a;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHash(Fnv1a);

impl TraceHash {
    pub fn add(&mut self, word: u64) {
        self.0.write_u64(word);
    }

    pub fn add_bytes(&mut self, bytes: &[u8]) {
        self.add(bytes.len() as u64);
        self.0.write(bytes);
    }

    pub fn value(&self) -> u64 {
        self.0.finish()
    }
}
