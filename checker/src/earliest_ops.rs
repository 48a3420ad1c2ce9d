//! The first operations of a history by call time, kept while the file streams past: what a
//! timeline draws when there is no violation to centre it on. A bounded max-heap, so that the
//! sample costs its size whatever the order of the file.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::history::{History, OpIndex, Operation, Time};

struct Entry {
    call: Time,
    index: OpIndex,
    line: usize,
    operation: Operation,
}

impl Entry {
    fn order(&self) -> (Time, OpIndex) {
        (self.call, self.index)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> Ordering {
        self.order().cmp(&other.order())
    }
}

/// The `count` operations first by (call, history index).
pub(crate) struct EarliestOps {
    count: usize,
    /// Its top is the latest kept, the first to go.
    heap: BinaryHeap<Entry>,
}

impl EarliestOps {
    pub(crate) fn new(count: usize) -> EarliestOps {
        EarliestOps { count, heap: BinaryHeap::with_capacity(count) }
    }

    /// Offers the `index`th operation of the history, read from `line`.
    pub(crate) fn offer(&mut self, index: OpIndex, line: usize, operation: &Operation) {
        let order = (operation.call, index);
        if self.heap.len() == self.count {
            match self.heap.peek() {
                Some(latest) if order < latest.order() => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        let operation = operation.clone();
        self.heap.push(Entry { call: operation.call, index, line, operation });
    }

    /// The operations kept, as a history in (call, index) order, and the history index of
    /// each.
    pub(crate) fn into_history(self) -> (History, Vec<OpIndex>) {
        let entries = self.heap.into_sorted_vec();
        let indexes = entries.iter().map(|entry| entry.index).collect();
        let lines = entries.iter().map(|entry| entry.line).collect();
        let ops = entries.into_iter().map(|entry| entry.operation).collect();
        match History::from_parts(ops, lines) {
            Ok(history) => (history, indexes),
            Err(error) => unreachable!("a subset of a valid history is valid: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    #[test]
    fn keeps_the_first_by_call_then_index_whatever_the_order() {
        let mut earliest = EarliestOps::new(3);
        let calls = [50, 10, 40, 10, 30, 60, 20];
        for (index, &call) in calls.iter().enumerate() {
            let operation = Operation::ok(index as u64, call, call + 1, Op::put("k", "v"));
            earliest.offer(index, index + 1, &operation);
        }
        let (history, indexes) = earliest.into_history();
        assert_eq!(indexes, vec![1, 3, 6]);
        let calls: Vec<u64> = history.ops().iter().map(|op| op.call).collect();
        assert_eq!(calls, vec![10, 10, 20]);
        assert_eq!(history.source_line(2), Some(7));
        assert!(EarliestOps::new(0).into_history().0.is_empty());
    }
}
