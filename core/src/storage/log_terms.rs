//! The terms of the log the writer has written, as runs of equal terms: enough to decide, when
//! a snapshot from the leader is installed, whether the log holds the snapshot's last entry
//! (then the entries after it stay) — the same rule Raft applies — and to write that decision
//! into the log record, so that replay never has to guess it from entries that compaction may
//! have removed. Entries of one term are contiguous, so the runs stay few (one per term change).

use crate::raft::{Entry, LogIndex, Term};

/// At most this many runs are kept; the oldest are dropped (they are far below any snapshot a
/// leader could still send). Raft terms change rarely, so this is never reached in practice.
const MAX_RUNS: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogTerms {
    /// (first index, term), ascending by index; each run ends where the next begins.
    runs: Vec<(LogIndex, Term)>,
    /// The last index of the log; 0 when empty.
    last: LogIndex,
    /// The snapshot the log starts after: (index, term).
    floor: (LogIndex, Term),
}

impl LogTerms {
    /// The log after a snapshot at `floor`, holding `entries` (contiguous, after the floor).
    pub fn new(floor: (LogIndex, Term), entries: &[Entry]) -> LogTerms {
        let mut terms = LogTerms { runs: Vec::new(), last: floor.0, floor };
        terms.append(entries);
        terms
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.floor.0 {
            return Some(self.floor.1);
        }
        if index < self.floor.0 || index > self.last {
            return None;
        }
        let run = self.runs.partition_point(|(first, _)| *first <= index);
        run.checked_sub(1).map(|at| self.runs[at].1)
    }

    /// Appends entries, first dropping every entry at or after the first new one.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        debug_assert!(first.index > self.floor.0, "entries after the snapshot only");
        self.runs.retain(|(start, _)| *start < first.index);
        for entry in entries {
            if self.runs.last().is_none_or(|(_, term)| *term != entry.term) {
                self.runs.push((entry.index, entry.term));
            }
        }
        self.last = entries[entries.len() - 1].index;
        if self.runs.len() > MAX_RUNS {
            let drop = self.runs.len() - MAX_RUNS;
            self.runs.drain(..drop);
        }
    }

    /// Installs a leader's snapshot; returns whether the entries after it stay.
    pub fn install(&mut self, index: LogIndex, term: Term) -> bool {
        let keeps_suffix = self.term(index) == Some(term);
        if keeps_suffix {
            self.runs.retain(|(start, _)| *start > index);
            if let Some(covering) = self.runs.first().map(|(start, _)| *start)
                && covering > index + 1
            {
                // The run that contained `index` continues after it.
                self.runs.insert(0, (index + 1, term));
            } else if self.runs.is_empty() && self.last > index {
                self.runs.push((index + 1, term));
            }
        } else {
            self.runs.clear();
            self.last = index;
        }
        self.floor = (index, term);
        keeps_suffix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::EntryPayload;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range.map(|index| Entry { term, index, payload: EntryPayload::Noop }).collect()
    }

    #[test]
    fn terms_follow_appends_and_overwrites() {
        let mut terms = LogTerms::new((0, 0), &entries(1..=5, 1));
        terms.append(&entries(6..=8, 2));
        assert_eq!(
            (terms.term(0), terms.term(5), terms.term(6), terms.term(8), terms.term(9)),
            (Some(0), Some(1), Some(2), Some(2), None)
        );
        terms.append(&entries(4..=4, 3));
        assert_eq!((terms.term(3), terms.term(4), terms.term(5)), (Some(1), Some(3), None));
    }

    #[test]
    fn install_keeps_the_suffix_only_when_the_entry_matches() {
        let mut terms = LogTerms::new((0, 0), &entries(1..=10, 1));
        assert!(terms.install(6, 1));
        assert_eq!(
            (terms.term(5), terms.term(6), terms.term(7), terms.term(10)),
            (None, Some(1), Some(1), Some(1))
        );
        assert!(!terms.install(8, 2));
        assert_eq!((terms.term(8), terms.term(9)), (Some(2), None));
        terms.append(&entries(9..=9, 2));
        assert!(!terms.install(12, 2), "a log that does not reach the snapshot");
    }
}
