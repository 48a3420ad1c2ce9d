//! The pipelining window towards one follower: AppendEntries messages sent and not yet
//! acknowledged, bounded by count and by bytes so a slow follower cannot make the leader buffer
//! (or the network carry) an unbounded amount.

use std::collections::VecDeque;

use super::types::LogIndex;

#[derive(Clone, Debug)]
pub struct Inflights {
    /// (last index carried by the message, bytes it carried), in sending order.
    sent: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        assert!(max_count > 0 && max_bytes > 0);
        Inflights { sent: VecDeque::new(), bytes: 0, max_count, max_bytes }
    }

    pub fn is_full(&self) -> bool {
        self.sent.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    pub fn count(&self) -> usize {
        self.sent.len()
    }

    pub fn add(&mut self, last_index: LogIndex, size_bytes: u64) {
        debug_assert!(self.sent.back().is_none_or(|(last, _)| *last < last_index));
        self.sent.push_back((last_index, size_bytes));
        self.bytes += size_bytes;
    }

    /// Frees every message whose entries are all at or below `index` (acknowledged).
    pub fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, size_bytes)) = self.sent.front() {
            if last > index {
                break;
            }
            self.sent.pop_front();
            self.bytes -= size_bytes;
        }
    }

    pub fn reset(&mut self) {
        self.sent.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_bounded_by_count_and_bytes() {
        let mut window = Inflights::new(2, 100);
        window.add(5, 10);
        assert!(!window.is_full());
        window.add(9, 10);
        assert!(window.is_full(), "two messages fill a window of two");
        window.free_to(5);
        assert!(!window.is_full());
        window.add(12, 95);
        assert!(window.is_full(), "105 bytes exceed a window of 100");
        window.free_to(100);
        assert_eq!(window.count(), 0);
        // Freed messages give their bytes back: the whole budget is there again.
        window.add(101, 99);
        assert!(!window.is_full(), "99 bytes fit an empty window of 100");
        window.free_to(101);
        window.add(102, 99);
        assert!(!window.is_full(), "and again once those are acknowledged");
    }
}
