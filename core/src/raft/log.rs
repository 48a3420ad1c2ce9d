//! The replicated log as one node sees it: a compacted prefix (the snapshot), the entries after
//! it, and the positions that matter — committed, handed to the state machine, applied, handed
//! to storage, durable.
//!
//! The whole log after the latest snapshot stays in memory (as etcd's `MemoryStorage` does);
//! the storage engine only makes it durable. Memory is bounded by compaction: the engine takes a
//! snapshot and calls [`RaftLog::compact`] once the log grows past its thresholds.

use std::collections::VecDeque;

use super::types::{ClusterConfig, Entry, EntryPayload, LogIndex, SnapshotMeta, Term};

/// The local log and its cursors. Invariants (checked by [`RaftLog::check_invariants`]):
/// `snapshot_index <= applied <= applying <= committed <= last_index`,
/// `persisted <= last_index`, `unstable_from <= last_index + 1`, entries are contiguous and
/// their terms never decrease.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// The last index and term covered by the latest snapshot (0, 0 before any snapshot).
    snapshot_index: LogIndex,
    snapshot_term: Term,
    /// Entries `snapshot_index + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
    committed: LogIndex,
    /// Highest index already handed out for applying (in a `Ready`).
    applying: LogIndex,
    /// Highest index the state machine reported applied.
    applied: LogIndex,
    /// First index not yet handed to storage.
    unstable_from: LogIndex,
    /// Highest index known to be durable *with the term it has in this log*.
    persisted: LogIndex,
    /// Every configuration in the log, oldest first; the first one is the snapshot's.
    configs: Vec<(LogIndex, ClusterConfig)>,
    /// Batches handed to storage and not yet reported durable: (batch id, last index written).
    /// A truncation caps the index: entries written by an older batch at a truncated position
    /// are not this log's content any more, so that batch's durability says nothing about them.
    in_storage: VecDeque<(u64, LogIndex)>,
    /// The planted bug `KeepConflictingSuffix` (simulator self-test only).
    keep_conflicting_suffix: bool,
}

/// A follower's answer when the leader's `prev_log_index/prev_log_term` do not match:
/// an index at or below which the logs might agree, and this log's term there. The leader uses
/// it to skip a whole term of mismatching entries per round trip instead of one entry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    pub index: LogIndex,
    pub term: Term,
}

impl RaftLog {
    /// A log restored from storage: the snapshot's metadata (or the empty prefix), the entries
    /// after it, all of them durable, and the last known commit index.
    pub fn restore(snapshot: &SnapshotMeta, entries: Vec<Entry>, commit: LogIndex) -> Self {
        let mut log = RaftLog {
            snapshot_index: snapshot.last_index,
            snapshot_term: snapshot.last_term,
            entries: VecDeque::new(),
            committed: snapshot.last_index,
            applying: snapshot.last_index,
            applied: snapshot.last_index,
            unstable_from: snapshot.last_index + 1,
            persisted: snapshot.last_index,
            configs: vec![(snapshot.last_index, snapshot.config.clone())],
            in_storage: VecDeque::new(),
            keep_conflicting_suffix: false,
        };
        for entry in entries {
            if entry.index <= log.snapshot_index {
                continue; // already covered by the snapshot
            }
            assert_eq!(entry.index, log.last_index() + 1, "restored entries must be contiguous");
            log.push(entry);
        }
        log.unstable_from = log.last_index() + 1;
        log.persisted = log.last_index();
        // A commit index beyond the durable log can happen when the hard state was written
        // after a log truncation that a crash undid; never trust it past the last entry.
        log.committed = commit.clamp(log.snapshot_index, log.last_index());
        log.check_invariants();
        log
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// The first index still held as an entry (one past the snapshot).
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |entry| entry.term)
    }

    pub fn committed(&self) -> LogIndex {
        self.committed
    }

    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    pub fn applying(&self) -> LogIndex {
        self.applying
    }

    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The term of the entry at `index`, if this log still knows it (the snapshot's last entry
    /// included; compacted or missing entries are `None`).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        let offset = usize::try_from(index - self.snapshot_index - 1).ok()?;
        self.entries.get(offset)
    }

    /// Whether `(index, term)` names an entry of this log.
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours if its last term is
    /// higher, or equal with an index at least as high.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The configuration in force: the latest one in the log, committed or not (§4.1).
    pub fn config(&self) -> &ClusterConfig {
        &self.configs.last().expect("the snapshot's configuration is always present").1
    }

    /// The configuration in force at `index` (for a snapshot taken there). Indexes before the
    /// snapshot get the snapshot's configuration.
    pub fn config_at(&self, index: LogIndex) -> &ClusterConfig {
        self.configs
            .iter()
            .rev()
            .find(|(config_index, _)| *config_index <= index)
            .map_or(&self.configs[0].1, |(_, config)| config)
    }

    /// The index of the entry that carried the configuration in force at `index`.
    pub fn config_index_at(&self, index: LogIndex) -> LogIndex {
        self.configs
            .iter()
            .rev()
            .find(|(config_index, _)| *config_index <= index)
            .map_or(self.configs[0].0, |(config_index, _)| *config_index)
    }

    /// The index of the entry that carried the configuration in force.
    pub fn config_index(&self) -> LogIndex {
        self.configs.last().expect("the snapshot's configuration is always present").0
    }

    /// Entries in `lo..=hi`, at most `max_count` of them and — beyond the first, which is always
    /// included so that progress is possible — at most `max_bytes` in total.
    pub fn slice(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_count: usize,
        max_bytes: u64,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        if lo <= self.snapshot_index || hi < lo {
            return out;
        }
        let mut size_bytes = 0;
        let mut index = lo;
        while index <= hi.min(self.last_index()) && out.len() < max_count {
            let Some(entry) = self.entry(index) else { break };
            size_bytes += entry.size_bytes();
            if !out.is_empty() && size_bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index += 1;
        }
        out
    }

    /// Appends entries created by this node as leader. Returns the new last index.
    pub fn append_as_leader(&mut self, entries: impl IntoIterator<Item = Entry>) -> LogIndex {
        for entry in entries {
            assert_eq!(entry.index, self.last_index() + 1, "leader appends must be contiguous");
            assert!(entry.term >= self.last_term(), "terms in the log never decrease");
            self.push(entry);
        }
        self.last_index()
    }

    /// The follower side of AppendEntries (Raft §5.3). If the log contains
    /// `(prev_index, prev_term)`, appends `entries` — truncating only from the first entry that
    /// actually conflicts, so that a stale or duplicate message never removes entries — and
    /// returns the index of the last entry the message covers. Otherwise returns a hint.
    pub fn try_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
    ) -> Result<LogIndex, ConflictHint> {
        if prev_index < self.snapshot_index {
            // Everything up to the snapshot is committed and therefore identical on every
            // node; skip the part of the message the snapshot already covers.
            let skip = (self.snapshot_index - prev_index) as usize;
            if skip > entries.len() {
                return Ok(self.snapshot_index);
            }
            let Some(covered) = skip.checked_sub(1).map(|i| &entries[i]) else {
                return Ok(self.snapshot_index);
            };
            return self.try_append(covered.index, covered.term, &entries[skip..]);
        }
        if !self.matches(prev_index, prev_term) {
            return Err(self.conflict_hint(prev_index, prev_term));
        }
        let last_new = prev_index + entries.len() as u64;
        for (offset, entry) in entries.iter().enumerate() {
            let index = prev_index + 1 + offset as u64;
            if entry.index != index {
                // A malformed message; treat it as not matching rather than corrupting the log.
                return Err(self.conflict_hint(prev_index, prev_term));
            }
            match self.term(index) {
                Some(term) if term == entry.term => continue,
                Some(_) if self.keep_conflicting_suffix => {
                    // The planted bug: replace the entry but keep the stale ones after it.
                    let offset = (index - self.snapshot_index - 1) as usize;
                    self.entries[offset] = entry.clone();
                    self.unstable_from = self.unstable_from.min(index);
                    self.persisted = self.persisted.min(index - 1);
                }
                Some(_) => {
                    assert!(
                        index > self.committed,
                        "a leader asked to overwrite committed entry {index} (commit {})",
                        self.committed
                    );
                    self.truncate_from(index);
                    self.push(entry.clone());
                }
                None => self.push(entry.clone()),
            }
        }
        Ok(last_new)
    }

    /// A hint for a leader whose `(prev_index, prev_term)` did not match: the largest index at
    /// or below `prev_index` whose term is at most `prev_term` (the logs cannot agree above it).
    pub(super) fn conflict_hint(&self, prev_index: LogIndex, prev_term: Term) -> ConflictHint {
        let (index, term) =
            self.find_conflict_by_term(prev_index.min(self.last_index()), prev_term);
        ConflictHint { index, term }
    }

    /// The largest index `<= index` whose term is `<= term`, with that term. Used on both sides
    /// of a rejection: the follower to build its hint, the leader to jump back over a term.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut index = index.min(self.last_index());
        while index > self.snapshot_index {
            match self.term(index) {
                Some(found) if found <= term => return (index, found),
                _ => index -= 1,
            }
        }
        (self.snapshot_index, self.snapshot_term)
    }

    /// Every entry enters the log here, so the order invariants are checked where they could
    /// break, once per entry, rather than by walking the whole log after every step.
    fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1, "log indexes are contiguous");
        debug_assert!(entry.term >= self.last_term(), "terms in the log never decrease");
        if let EntryPayload::Config(config) = &entry.payload {
            self.configs.push((entry.index, config.clone()));
        }
        self.entries.push_back(entry);
    }

    /// Removes every entry from `index` on. The durable and unstable cursors follow: what was
    /// written at those indexes is no longer this log's content.
    fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.snapshot_index && index > self.committed);
        let keep = (index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.configs.retain(|(config_index, _)| *config_index < index);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index - 1);
        for (_, last) in self.in_storage.iter_mut() {
            *last = (*last).min(index - 1);
        }
    }

    /// Advances the commit index (never backwards, never past the log).
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Entries not yet handed to storage; marks them handed as part of batch `batch_id`.
    pub fn take_unstable(&mut self, batch_id: u64) -> Vec<Entry> {
        let from = self.unstable_from;
        let last = self.last_index();
        self.unstable_from = last + 1;
        debug_assert!(self.in_storage.back().is_none_or(|(id, _)| *id < batch_id));
        self.in_storage.push_back((batch_id, last));
        self.slice(from, last, usize::MAX, u64::MAX)
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Storage reports every batch up to `batch_id` durable. Storage writes batches in order, so
    /// all of them are; each one makes durable what it wrote that is still in this log.
    pub fn persisted_batch(&mut self, batch_id: u64) {
        while let Some(&(id, last)) = self.in_storage.front() {
            if id > batch_id {
                break;
            }
            self.in_storage.pop_front();
            let last = last.min(self.last_index());
            if last > self.persisted {
                self.persisted = last;
            }
        }
    }

    /// Committed entries not yet handed out for applying, up to `max_bytes` (at least one).
    pub fn take_committed(&mut self, max_bytes: u64) -> Vec<Entry> {
        if self.applying >= self.committed {
            return Vec::new();
        }
        let entries = self.slice(self.applying + 1, self.committed, usize::MAX, max_bytes);
        if let Some(last) = entries.last() {
            self.applying = last.index;
        }
        entries
    }

    pub fn has_committed_to_apply(&self) -> bool {
        self.applying < self.committed
    }

    /// The state machine reports entries up to `index` applied.
    pub fn applied_to(&mut self, index: LogIndex) {
        let index = index.min(self.applying);
        if index > self.applied {
            self.applied = index;
        }
    }

    /// Discards entries up to `index`, which a snapshot now covers. The snapshot must cover only
    /// applied entries; entries after it are kept.
    pub fn compact(&mut self, index: LogIndex) -> bool {
        if index <= self.snapshot_index || index > self.applied {
            return false;
        }
        let Some(term) = self.term(index) else { return false };
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        // Keep the configuration in force at the new snapshot point as the base entry.
        let base = self
            .configs
            .iter()
            .rev()
            .find(|(config_index, _)| *config_index <= index)
            .map(|(_, config)| config.clone())
            .unwrap_or_default();
        self.configs.retain(|(config_index, _)| *config_index > index);
        self.configs.insert(0, (index, base));
        self.unstable_from = self.unstable_from.max(index + 1);
        self.persisted = self.persisted.max(index);
        true
    }

    /// Replaces the log by a snapshot received from the leader (§7). If the log already holds
    /// the snapshot's last entry, the entries after it are consistent and are kept; otherwise
    /// the whole log is discarded — it conflicts with committed state.
    pub fn install_snapshot(&mut self, meta: &SnapshotMeta) {
        assert!(meta.last_index > self.committed);
        // Until the batch carrying the snapshot is durable, only the old committed prefix is
        // known durable *and* consistent with the snapshot (committed entries agree everywhere)
        // — unless the log holds the snapshot's last entry: then the whole log agrees with the
        // snapshot and storage keeps it, so everything durable stays durable. (Lowering it
        // would retract acknowledgements the leader may already have counted.)
        let durable_consistent = if self.matches(meta.last_index, meta.last_term) {
            self.persisted
        } else {
            self.persisted.min(self.committed)
        };
        if self.matches(meta.last_index, meta.last_term) {
            let keep_from = meta.last_index;
            let drop = (keep_from - self.snapshot_index) as usize;
            self.entries.drain(..drop);
            self.configs.retain(|(config_index, _)| *config_index > meta.last_index);
        } else {
            self.entries.clear();
            self.configs.clear();
            self.unstable_from = meta.last_index + 1;
            for (_, last) in self.in_storage.iter_mut() {
                *last = (*last).min(durable_consistent);
            }
        }
        self.snapshot_index = meta.last_index;
        self.snapshot_term = meta.last_term;
        self.configs.insert(0, (meta.last_index, meta.config.clone()));
        self.committed = meta.last_index;
        self.applying = meta.last_index;
        self.applied = meta.last_index;
        self.unstable_from = self.unstable_from.max(meta.last_index + 1);
        // The snapshot is durable only once storage reports the batch that carries it: that
        // batch is the next `take_unstable`, whose marker covers `last_index()`.
        self.persisted = durable_consistent;
    }

    #[cfg(feature = "planted-bugs")]
    pub fn plant_keep_conflicting_suffix(&mut self, enabled: bool) {
        self.keep_conflicting_suffix = enabled;
    }

    /// Debug-build check of the invariants listed on the type.
    pub fn check_invariants(&self) {
        debug_assert!(self.snapshot_index <= self.applied);
        debug_assert!(self.applied <= self.applying);
        debug_assert!(self.applying <= self.committed);
        debug_assert!(self.committed <= self.last_index());
        debug_assert!(self.persisted <= self.last_index());
        debug_assert!(self.unstable_from <= self.last_index() + 1);
        debug_assert!(!self.configs.is_empty());
        // `push` checks order and contiguity entry by entry; truncating either end keeps
        // both, so the ends are all that is left to check.
        if let (Some(first), Some(last)) = (self.entries.front(), self.entries.back()) {
            debug_assert_eq!(first.index, self.snapshot_index + 1);
            debug_assert!(first.term >= self.snapshot_term, "terms in the log never decrease");
            debug_assert_eq!(last.index, self.snapshot_index + self.entries.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry { index, term, payload: EntryPayload::Noop }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms.iter().enumerate().map(|(i, t)| entry(i as u64 + 1, *t)).collect();
        RaftLog::restore(&SnapshotMeta::default(), entries, 0)
    }

    #[test]
    fn duplicate_or_stale_append_never_truncates() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        // A delayed copy of an older message that covers only a prefix of what we have.
        assert_eq!(log.try_append(1, 1, &[entry(2, 1)]), Ok(2));
        assert_eq!(log.last_index(), 4, "matching prefix must not truncate the suffix");
    }

    #[test]
    fn installing_a_snapshot_the_log_already_holds_keeps_its_durable_suffix() {
        // Entries 1..=6 durable and acknowledged; the leader, which counted those
        // acknowledgements, then sends a snapshot at 4 (it had compacted past our match index).
        let mut log = log_with_terms(&[1, 1, 1, 1, 1, 1]);
        log.commit_to(2);
        let meta = SnapshotMeta { last_index: 4, last_term: 1, ..SnapshotMeta::default() };
        log.install_snapshot(&meta);
        assert_eq!(log.last_index(), 6);
        assert_eq!(log.persisted(), 6, "durable entries must stay durable");
    }

    #[test]
    fn installing_a_conflicting_snapshot_keeps_only_the_committed_prefix_durable() {
        let mut log = log_with_terms(&[1, 1, 1, 1, 1, 1]);
        log.commit_to(2);
        let meta = SnapshotMeta { last_index: 4, last_term: 2, ..SnapshotMeta::default() };
        log.install_snapshot(&meta);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.persisted(), 2);
    }

    #[test]
    fn conflicting_suffix_is_replaced() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(log.try_append(2, 1, &[entry(3, 3)]), Ok(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.persisted(), 2, "the overwritten entries are no longer durable content");
    }

    #[test]
    fn mismatch_returns_a_hint_that_skips_a_whole_term() {
        // Follower: terms 1 1 1 4 4 4 4; leader probes at (7, 6).
        let log = log_with_terms(&[1, 1, 1, 4, 4, 4, 4]);
        let mut copy = log.clone();
        let hint = copy.try_append(7, 6, &[]).unwrap_err();
        // Every entry from 4 to 7 has term 4 <= 6, so index 7 itself is the candidate.
        assert_eq!(hint, ConflictHint { index: 7, term: 4 });
        let hint = copy.try_append(7, 3, &[]).unwrap_err();
        assert_eq!(hint, ConflictHint { index: 3, term: 1 });
        assert_eq!(log.find_conflict_by_term(10, 2), (3, 1));
    }

    #[test]
    fn durability_of_an_overwritten_batch_does_not_cover_its_replacement() {
        let mut log = log_with_terms(&[1, 1]);
        assert_eq!(log.try_append(2, 1, &[entry(3, 2), entry(4, 2), entry(5, 2)]), Ok(5));
        assert_eq!(log.take_unstable(1).len(), 3);
        // A new leader overwrites 4..5 before batch 1 is durable.
        assert_eq!(log.try_append(3, 2, &[entry(4, 3)]), Ok(4));
        assert_eq!(log.take_unstable(2).len(), 1);
        log.persisted_batch(1);
        assert_eq!(log.persisted(), 3, "batch 1 wrote index 4 with term 2, not term 3");
        log.persisted_batch(2);
        assert_eq!(log.persisted(), 4);
    }

    #[test]
    fn commit_and_apply_cursors_only_move_forward() {
        let mut log = log_with_terms(&[1, 1, 1]);
        assert!(log.commit_to(2));
        assert!(!log.commit_to(1));
        assert_eq!(log.take_committed(u64::MAX).len(), 2);
        log.applied_to(2);
        log.applied_to(1);
        assert_eq!(log.applied(), 2);
        assert!(log.commit_to(100), "commit is capped at the last index");
        assert_eq!(log.committed(), 3);
    }

    #[test]
    fn compaction_keeps_the_suffix_and_the_config() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.commit_to(3);
        log.take_committed(u64::MAX);
        log.applied_to(3);
        assert!(log.compact(3));
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        assert_eq!(log.last_index(), 4);
        log.check_invariants();
    }

    #[test]
    fn append_behind_the_snapshot_skips_the_covered_part() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.commit_to(3);
        log.take_committed(u64::MAX);
        log.applied_to(3);
        log.compact(3);
        let result = log.try_append(1, 1, &[entry(2, 1), entry(3, 2), entry(4, 2), entry(5, 2)]);
        assert_eq!(result, Ok(5));
        assert_eq!(log.last_index(), 5);
    }
}
