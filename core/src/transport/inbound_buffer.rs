//! The read buffer of an inbound peer connection, and the memory budget all of them share.
//!
//! A peer announces each frame's length before sending it, and a frame may be as large as the
//! frame limit (64 MiB by default). Without a shared budget, peers streaming large frames at
//! once — or one that announces them and never finishes — could make a node buffer without
//! bound; with it, the connection that would exceed the budget is closed and its peer
//! reconnects, while the others go on.

use std::cell::Cell;
use std::rc::Rc;

/// How many bytes one read from a connection asks for.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The smallest capacity an inbound read buffer takes: one read's worth.
const MIN_READ_BUFFER_BYTES: usize = READ_CHUNK_BYTES;

/// A read buffer is given back to the allocator once it is this much larger than what it holds:
/// one large message must not pin its size for the connection's life.
const SHRINK_BUFFER_ABOVE_BYTES: usize = 4 << 20;

/// An inbound connection's read buffer, counted against the budget all inbound connections
/// share (`max_inbound_buffered_bytes`) by the memory it holds (its capacity, not just what it
/// holds now); returned to the budget when it drops.
///
/// When a frame does not fit, the buffer grows once to the end of that frame (as its header
/// announces it, capped by the frame limit), charging the whole frame at once. Growing by
/// doubling instead copied the frame at every step and left the old copies to the allocator,
/// which keeps freed memory for a while: a node fed many large frames at once held nearly
/// twice its budget. Reserved pages that no byte has reached yet cost no memory.
pub struct InboundBuffer {
    bytes: Vec<u8>,
    /// The capacity charged to the shared budget.
    charged: usize,
    /// What all inbound buffers of the transport are charged, together.
    total_charged: Rc<Cell<u64>>,
    budget_bytes: u64,
    max_frame_bytes: u32,
}

impl InboundBuffer {
    /// A buffer charged to `total_charged`, which together must stay within `budget_bytes`.
    pub fn new(total_charged: Rc<Cell<u64>>, budget_bytes: u64, max_frame_bytes: u32) -> Self {
        InboundBuffer {
            bytes: Vec::new(),
            charged: 0,
            total_charged,
            budget_bytes,
            max_frame_bytes,
        }
    }

    /// Appends `data` unless the shared budget would be exceeded; returns whether it did.
    pub fn extend(&mut self, data: &[u8]) -> bool {
        let needed = self.bytes.len() + data.len();
        if needed > self.bytes.capacity() {
            let target = needed.max(MIN_READ_BUFFER_BYTES).max(self.front_frame_end(data));
            let total = self.total_charged.get();
            if total + (target - self.charged) as u64 > self.budget_bytes {
                return false;
            }
            self.bytes.reserve_exact(target - self.bytes.len());
            self.recharge();
        }
        self.bytes.extend_from_slice(data);
        true
    }

    /// Where the frame at the front of the buffer ends, once its length is known (`frame.rs`:
    /// a 4-byte length, a 4-byte checksum, the payload), with `data` about to be appended.
    /// A length over the limit counts as the limit: the decoder refuses that frame anyway.
    fn front_frame_end(&self, data: &[u8]) -> usize {
        let mut length = [0u8; 4];
        let held = self.bytes.len().min(4);
        length[..held].copy_from_slice(&self.bytes[..held]);
        let wanted = 4 - held;
        if data.len() < wanted {
            return 0;
        }
        length[held..].copy_from_slice(&data[..wanted]);
        8 + u32::from_le_bytes(length).min(self.max_frame_bytes) as usize
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Drops the first `count` bytes (decoded frames).
    pub fn consume(&mut self, count: usize) {
        self.bytes.drain(..count);
        if self.bytes.capacity() > SHRINK_BUFFER_ABOVE_BYTES
            && self.bytes.len() < MIN_READ_BUFFER_BYTES
        {
            self.bytes.shrink_to(MIN_READ_BUFFER_BYTES);
            self.recharge();
        }
    }

    /// Charges the budget for the buffer's current capacity.
    fn recharge(&mut self) {
        let total = &self.total_charged;
        let capacity = self.bytes.capacity();
        total.set((total.get() + capacity as u64).saturating_sub(self.charged as u64));
        self.charged = capacity;
    }
}

impl Drop for InboundBuffer {
    fn drop(&mut self) {
        let total = &self.total_charged;
        total.set(total.get().saturating_sub(self.charged as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET_BYTES: u64 = 8 << 20;
    const MAX_FRAME_BYTES: u32 = 4 << 20;

    /// A frame header (`frame.rs`): the payload's length, then a checksum (not checked here).
    fn header(payload_bytes: u32) -> Vec<u8> {
        let mut bytes = payload_bytes.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4]);
        bytes
    }

    fn buffer(total: &Rc<Cell<u64>>) -> InboundBuffer {
        InboundBuffer::new(total.clone(), BUDGET_BYTES, MAX_FRAME_BYTES)
    }

    #[test]
    fn a_large_frame_is_reserved_once_to_its_end_and_never_reallocated() {
        let total = Rc::new(Cell::new(0));
        let mut inbound = buffer(&total);
        let payload_bytes: u32 = 1 << 20;
        assert!(inbound.extend(&header(payload_bytes)));
        let frame_end = 8 + payload_bytes as usize;
        assert!(inbound.bytes.capacity() >= frame_end);
        let reserved_at = inbound.bytes.as_ptr();
        let chunk = vec![7u8; READ_CHUNK_BYTES];
        while inbound.bytes().len() + chunk.len() <= frame_end {
            assert!(inbound.extend(&chunk));
        }
        assert_eq!(inbound.bytes.as_ptr(), reserved_at, "the frame never moved");
        assert_eq!(total.get(), inbound.bytes.capacity() as u64, "charged for what it holds");
    }

    #[test]
    fn a_length_split_across_reads_is_still_known() {
        let total = Rc::new(Cell::new(0));
        let mut inbound = buffer(&total);
        let payload_bytes: u32 = 3 << 20;
        let bytes = header(payload_bytes);
        assert!(inbound.extend(&bytes[..2]));
        assert!(inbound.extend(&bytes[2..]));
        assert!(inbound.bytes.capacity() < 8 + payload_bytes as usize, "two bytes told nothing");
        // The next read that does not fit grows the buffer to the frame's end at once.
        assert!(inbound.extend(&vec![0u8; READ_CHUNK_BYTES]));
        assert!(inbound.bytes.capacity() >= 8 + payload_bytes as usize);
    }

    #[test]
    fn announced_lengths_count_against_the_budget_capped_by_the_frame_limit() {
        let total = Rc::new(Cell::new(0));
        let mut first = buffer(&total);
        // Announces far more than the limit: charged as a frame of the limit, not refused here
        // (the decoder refuses it and closes the connection).
        assert!(first.extend(&header(u32::MAX)));
        assert_eq!(total.get(), first.bytes.capacity() as u64);
        assert!(total.get() <= u64::from(MAX_FRAME_BYTES) + 8 + READ_CHUNK_BYTES as u64);
        let mut second = buffer(&total);
        assert!(second.extend(&header(MAX_FRAME_BYTES / 2)));
        // A third large frame would go past the budget: refused, nothing charged for it.
        let charged_before = total.get();
        let mut third = buffer(&total);
        assert!(!third.extend(&header(MAX_FRAME_BYTES)));
        assert_eq!(total.get(), charged_before);
        // Closing a connection gives its memory back; the next one fits.
        drop(first);
        assert!(third.extend(&header(MAX_FRAME_BYTES)));
    }

    #[test]
    fn consumed_large_buffers_shrink_and_give_their_charge_back() {
        let total = Rc::new(Cell::new(0));
        let mut inbound = buffer(&total);
        let payload_bytes = MAX_FRAME_BYTES;
        assert!(8 + payload_bytes as usize > SHRINK_BUFFER_ABOVE_BYTES);
        let mut frame = header(payload_bytes);
        frame.resize(8 + payload_bytes as usize, 1);
        assert!(inbound.extend(&frame));
        assert!(total.get() >= frame.len() as u64);
        inbound.consume(frame.len());
        assert!(inbound.bytes().is_empty());
        assert!(total.get() <= MIN_READ_BUFFER_BYTES as u64 * 2, "charged {}", total.get());
        drop(inbound);
        assert_eq!(total.get(), 0);
    }
}
