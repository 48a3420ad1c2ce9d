//! The TTL index: keys ordered by deadline, so that expiring the due keys costs O(due keys)
//! rather than a scan of the whole key space.

use std::collections::BTreeSet;

/// `(expires_at_ms, key)` for every key that has a TTL. Ordered by deadline, ties by key, so
/// keys due at the same instant always expire in the same order on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExpiryIndex {
    by_deadline: BTreeSet<(u64, String)>,
}

impl ExpiryIndex {
    pub(crate) fn insert(&mut self, expires_at_ms: u64, key: &str) {
        let inserted = self.by_deadline.insert((expires_at_ms, key.to_owned()));
        assert!(inserted, "key {key:?} already indexed at {expires_at_ms}");
    }

    pub(crate) fn remove(&mut self, expires_at_ms: u64, key: &str) {
        let removed = self.by_deadline.remove(&(expires_at_ms, key.to_owned()));
        assert!(removed, "key {key:?} was not indexed at {expires_at_ms}");
    }

    /// The earliest deadline, if any key has a TTL.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.first().map(|(deadline_ms, _)| *deadline_ms)
    }

    /// Removes and returns the earliest entry if it is due at `now_ms` (deadline <= now).
    pub(crate) fn pop_due(&mut self, now_ms: u64) -> Option<(u64, String)> {
        match self.by_deadline.first() {
            Some((deadline_ms, _)) if *deadline_ms <= now_ms => self.by_deadline.pop_first(),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_deadline.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_expiry_pops_due_keys_in_deadline_then_key_order() {
        let mut index = ExpiryIndex::default();
        index.insert(20, "b");
        index.insert(10, "z");
        index.insert(20, "a");
        index.insert(30, "c");
        assert_eq!(index.next_deadline_ms(), Some(10));
        let mut due = Vec::new();
        while let Some(entry) = index.pop_due(20) {
            due.push(entry);
        }
        assert_eq!(due, vec![(10, "z".into()), (20, "a".into()), (20, "b".into())]);
        assert_eq!(index.next_deadline_ms(), Some(30));
        assert_eq!(index.pop_due(29), None);
        index.remove(30, "c");
        assert_eq!(index.len(), 0);
        assert_eq!(index.next_deadline_ms(), None);
    }
}
