//! A Raft-shaped workload for the storage crash tests and the model that judges recovery.
//!
//! The workload produces the jobs a Raft node would hand its storage (appends, suffix
//! overwrites after a term change, votes, commit advances, local snapshots with compaction,
//! snapshots installed from a leader), keeps the state each job leads to, and learns from the
//! storage's progress which of them were reported durable. After a crash, the recovered state
//! must be one of the states at or after the last one reported durable (so: everything
//! reported durable is recovered exactly, and nothing is invented); term and vote at least as
//! new as the durable ones; a commit index that never covers an entry other than the committed
//! one. This file is shared with `sim/tests/integration/storage_crash.rs` (the same checks on
//! turmoil's file system).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use conclave_core::raft::memory_cluster::DurableState;
use conclave_core::raft::{
    ClusterConfig, Entry, EntryPayload, HardState, LogIndex, NodeId, PersistBatch, Snapshot,
    SnapshotMeta,
};
use conclave_core::seams::storage::{StorageJob, StorageProgress};
use conclave_core::storage::Recovered;
use proptest::prelude::*;

#[derive(Clone, Debug)]
pub enum Op {
    /// Append `count` entries; with `overwrite` > 0, first replace up to that many uncommitted
    /// entries at the end of the log (a new leader's suffix overwrite, in a new term).
    Append { count: u8, overwrite: u8 },
    /// A new term, voting or not.
    NewTerm { vote: bool },
    /// Advance the commit index (only over entries reported durable).
    Commit { advance: u8 },
    /// Snapshot the state machine at the commit index, compacting up to `retain` entries behind.
    LocalSnapshot { retain: u8 },
    /// Install a leader's snapshot `ahead` entries past the commit index; `matching` when the
    /// local log holds its last entry (the suffix survives), otherwise in a new term (it does not).
    InstallSnapshot { ahead: u8, matching: bool },
    /// Let the writer carry out everything queued (one group commit).
    Pump,
    /// The machine loses power after this many more file-system operations.
    PowerCut { after_ops: u16 },
    /// Crash and recover; `cut_recovery` also cuts the power during the first recovery attempt.
    Crash { cut_recovery: Option<u8> },
}

pub fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..=6, prop_oneof![3 => Just(0u8), 1 => 1u8..=4])
            .prop_map(|(count, overwrite)| Op::Append { count, overwrite }),
        1 => any::<bool>().prop_map(|vote| Op::NewTerm { vote }),
        3 => (1u8..=12).prop_map(|advance| Op::Commit { advance }),
        1 => (0u8..=6).prop_map(|retain| Op::LocalSnapshot { retain }),
        1 => (1u8..=8, any::<bool>()).prop_map(|(ahead, matching)| Op::InstallSnapshot { ahead, matching }),
        5 => Just(Op::Pump),
        1 => (0u16..=40).prop_map(|after_ops| Op::PowerCut { after_ops }),
        1 => prop::option::of(0u8..=12).prop_map(|cut_recovery| Op::Crash { cut_recovery }),
    ]
}

pub fn ops_strategy(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 1..max_len)
}

fn snapshot_data(index: LogIndex, term: u64) -> Bytes {
    Bytes::from(format!("state machine at {index} (term {term})"))
}

fn config() -> ClusterConfig {
    ClusterConfig::with_voters([NodeId(1), NodeId(2), NodeId(3)])
}

fn last_index(state: &DurableState) -> LogIndex {
    let floor = state.snapshot.as_ref().map_or(0, |s| s.meta.last_index);
    state.entries.last().map_or(floor, |e| e.index.max(floor))
}

fn floor(state: &DurableState) -> LogIndex {
    state.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
}

fn entry_at(state: &DurableState, index: LogIndex) -> Option<&Entry> {
    state.entries.iter().find(|e| e.index == index)
}

fn term_at(state: &DurableState, index: LogIndex) -> Option<u64> {
    if let Some(snapshot) = &state.snapshot
        && snapshot.meta.last_index == index
    {
        return Some(snapshot.meta.last_term);
    }
    entry_at(state, index).map(|e| e.term)
}

/// Counters, to show the test explores what it claims to.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    pub jobs: u64,
    pub crashes: u64,
    pub recoveries_with_repairs: u64,
    pub recovered_beyond_durable: u64,
    pub overwrites: u64,
    pub installs: u64,
    pub local_snapshots: u64,
}

#[derive(Clone, Debug, Default)]
struct Knowledge {
    commit: LogIndex,
    committed: BTreeMap<LogIndex, Option<Entry>>,
    committed_snapshot_terms: BTreeMap<LogIndex, u64>,
}

pub struct Workload {
    term: u64,
    vote: NodeId,
    /// Highest commit index handed out; entries up to it are never overwritten.
    commit: LogIndex,
    /// What is known committed: an entry, or `None` when only a snapshot covered the index.
    committed: BTreeMap<LogIndex, Option<Entry>>,
    /// The committed snapshot terms by index.
    committed_snapshot_terms: BTreeMap<LogIndex, u64>,
    /// The state after all submitted jobs.
    state: DurableState,
    /// States the recovered one may equal, in submission order; `[0]` is the recovered start.
    candidates: Vec<(DurableState, (u64, NodeId))>,
    /// What was known committed when each candidate was submitted (same positions).
    knowledge: Vec<Knowledge>,
    /// The candidate the last recovered state matched.
    matched: Option<usize>,
    /// Candidates up to this position were reported durable.
    durable: usize,
    batch_position: BTreeMap<u64, usize>,
    snapshot_position: Vec<(LogIndex, usize)>,
    next_batch: u64,
    pub coverage: Coverage,
}

impl Workload {
    pub fn new(recovered: &Recovered) -> Workload {
        let mut workload = Workload {
            term: 0,
            vote: NodeId::NONE,
            commit: 0,
            committed: BTreeMap::new(),
            committed_snapshot_terms: BTreeMap::new(),
            state: DurableState::default(),
            candidates: Vec::new(),
            knowledge: Vec::new(),
            matched: None,
            durable: 0,
            batch_position: BTreeMap::new(),
            snapshot_position: Vec::new(),
            next_batch: 1,
            coverage: Coverage::default(),
        };
        workload.restart(recovered);
        workload
    }

    /// Continues from what a new incarnation recovered (batch ids start again at 1).
    pub fn restart(&mut self, recovered: &Recovered) {
        let restored = &recovered.restored;
        let snapshot = recovered
            .snapshot_data
            .as_ref()
            .map(|data| Snapshot { meta: restored.snapshot.clone(), data: data.clone() });
        self.state = DurableState {
            hard_state: restored.hard_state,
            snapshot,
            entries: restored.entries.clone(),
        };
        let max_log_term = restored.entries.iter().map(|e| e.term).max().unwrap_or(0);
        self.term = restored.hard_state.term.max(max_log_term).max(restored.snapshot.last_term);
        self.vote = if self.term == restored.hard_state.term {
            restored.hard_state.vote
        } else {
            NodeId::NONE
        };
        // What was known committed when the recovered state was submitted: a commit learned
        // with a job that did not survive is forgotten with it (this single node is the whole
        // "cluster" of the model).
        if let Some(matched) = self.matched.take() {
            // The newest knowledge the recovered log agrees with (the hard state may be ahead
            // of the log, so later than the matched candidate).
            let position = (matched..self.knowledge.len())
                .rev()
                .find(|&p| self.knowledge_fits(&self.knowledge[p], &self.state))
                .unwrap_or(matched);
            let knowledge = self.knowledge[position].clone();
            self.commit = knowledge.commit;
            self.committed = knowledge.committed;
            self.committed_snapshot_terms = knowledge.committed_snapshot_terms;
        }
        self.candidates =
            vec![(self.state.clone(), (restored.hard_state.term, restored.hard_state.vote))];
        self.knowledge = vec![self.current_knowledge()];
        self.durable = 0;
        self.batch_position.clear();
        self.snapshot_position.clear();
        self.next_batch = 1;
    }

    fn knowledge_fits(&self, knowledge: &Knowledge, state: &DurableState) -> bool {
        knowledge.commit <= last_index(state)
            && knowledge.committed.iter().all(|(index, entry)| {
                match (entry, entry_at(state, *index)) {
                    (Some(expected), Some(found)) => expected == found,
                    _ => *index <= floor(state),
                }
            })
    }

    fn current_knowledge(&self) -> Knowledge {
        Knowledge {
            commit: self.commit,
            committed: self.committed.clone(),
            committed_snapshot_terms: self.committed_snapshot_terms.clone(),
        }
    }

    fn push_candidate(&mut self, state: DurableState, term_vote: (u64, NodeId)) {
        self.candidates.push((state, term_vote));
        self.knowledge.push(self.current_knowledge());
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit.min(last_index(&self.state)),
        }
    }

    fn push_batch(
        &mut self,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> StorageJob {
        let id = self.next_batch;
        self.next_batch += 1;
        let batch = PersistBatch { id, snapshot, entries, hard_state };
        if batch.snapshot.is_some() {
            // Recovery may find the snapshot file but not the records after it.
            let mut partial = self.state.clone();
            partial.apply(&PersistBatch { entries: Vec::new(), hard_state: None, ..batch.clone() });
            let tv = self.candidates.last().map_or((0, NodeId::NONE), |c| c.1);
            self.push_candidate(partial, tv);
        }
        self.state.apply(&batch);
        self.push_candidate(self.state.clone(), (self.term, self.vote));
        self.batch_position.insert(id, self.candidates.len() - 1);
        self.coverage.jobs += 1;
        StorageJob::Persist(batch)
    }

    /// The jobs one operation hands to storage (none for Pump, PowerCut, Crash).
    pub fn jobs_for(&mut self, op: &Op) -> Vec<StorageJob> {
        let all_durable = self.durable + 1 == self.candidates.len();
        match *op {
            Op::Append { count, overwrite } => {
                let last = last_index(&self.state);
                let lowest = self.commit.max(floor(&self.state)) + 1;
                let start = (last + 1).saturating_sub(u64::from(overwrite)).max(lowest);
                let mut hard_state = None;
                if start <= last || self.term == 0 {
                    // Only a new leader overwrites a suffix, in a new term.
                    self.term += 1;
                    self.vote = NodeId::NONE;
                    hard_state = Some(self.hard_state());
                    if start <= last {
                        self.coverage.overwrites += 1;
                    }
                }
                let entries: Vec<Entry> = (start..start + u64::from(count))
                    .map(|index| Entry {
                        term: self.term,
                        index,
                        payload: EntryPayload::Command(Bytes::from(format!(
                            "{index}@{}:{}",
                            self.term,
                            "x".repeat(40)
                        ))),
                    })
                    .collect();
                vec![self.push_batch(None, entries, hard_state)]
            }
            Op::NewTerm { vote } => {
                self.term += 1;
                self.vote = if vote { NodeId(2) } else { NodeId::NONE };
                let hard_state = Some(self.hard_state());
                vec![self.push_batch(None, Vec::new(), hard_state)]
            }
            Op::Commit { advance } if all_durable => {
                let target = (self.commit + u64::from(advance)).min(last_index(&self.state));
                if target <= self.commit {
                    return Vec::new();
                }
                for index in self.commit + 1..=target {
                    let known = entry_at(&self.state, index).cloned();
                    if known.is_none() && index != floor(&self.state) {
                        // Below the snapshot: covered by it, content unknown here.
                        assert!(index < floor(&self.state));
                    }
                    self.committed.insert(index, known);
                }
                self.commit = target;
                let hard_state = Some(self.hard_state());
                vec![self.push_batch(None, Vec::new(), hard_state)]
            }
            Op::Commit { .. } => Vec::new(),
            Op::LocalSnapshot { retain } => {
                let index = self.commit;
                if index <= floor(&self.state) {
                    return Vec::new();
                }
                let Some(term) = term_at(&self.state, index) else { return Vec::new() };
                let snapshot = Snapshot {
                    meta: SnapshotMeta { last_index: index, last_term: term, config: config() },
                    data: snapshot_data(index, term),
                };
                let compact_to = index.saturating_sub(u64::from(retain));
                self.state.snapshot = Some(snapshot.clone());
                self.state.entries.retain(|e| e.index > compact_to);
                self.push_candidate(self.state.clone(), (self.term, self.vote));
                self.snapshot_position.push((index, self.candidates.len() - 1));
                self.committed_snapshot_terms.insert(index, term);
                self.coverage.jobs += 1;
                self.coverage.local_snapshots += 1;
                vec![StorageJob::SaveSnapshot { snapshot, compact_to }]
            }
            Op::InstallSnapshot { ahead, matching } => {
                let last = last_index(&self.state);
                let (index, term) = if matching {
                    let index = (self.commit + u64::from(ahead)).min(last);
                    if index <= self.commit.max(floor(&self.state)) {
                        return Vec::new();
                    }
                    match term_at(&self.state, index) {
                        Some(term) => (index, term),
                        None => return Vec::new(),
                    }
                } else {
                    // A leader of a newer term: its snapshot's last term is newer than anything
                    // in this log, so the log cannot match it.
                    self.term += 1;
                    self.vote = NodeId::NONE;
                    (self.commit.max(floor(&self.state)) + u64::from(ahead), self.term)
                };
                for at in self.commit + 1..=index {
                    let known = if matching { entry_at(&self.state, at).cloned() } else { None };
                    self.committed.insert(at, known);
                }
                self.committed_snapshot_terms.insert(index, term);
                self.commit = index;
                let snapshot = Snapshot {
                    meta: SnapshotMeta { last_index: index, last_term: term, config: config() },
                    data: snapshot_data(index, term),
                };
                self.coverage.installs += 1;
                let hard_state = HardState { term: self.term, vote: self.vote, commit: index };
                vec![self.push_batch(Some(snapshot), Vec::new(), Some(hard_state))]
            }
            Op::Pump | Op::PowerCut { .. } | Op::Crash { .. } => Vec::new(),
        }
    }

    /// Whether the storage reported everything submitted so far as done.
    pub fn is_caught_up(&self, progress: StorageProgress) -> bool {
        let last_batch = self.next_batch - 1;
        let last_snapshot = self.snapshot_position.last().map_or(0, |(index, _)| *index);
        progress.durable_batch >= last_batch && progress.snapshot_index >= last_snapshot
    }

    /// What the storage reported done.
    pub fn on_progress(&mut self, progress: StorageProgress) {
        if let Some(&position) = self.batch_position.get(&progress.durable_batch) {
            self.durable = self.durable.max(position);
        }
        for &(index, position) in &self.snapshot_position {
            if index <= progress.snapshot_index {
                self.durable = self.durable.max(position);
            }
        }
    }

    /// Judges a recovered state (see the module docs). `Err` explains the violation.
    pub fn check_recovered(&mut self, recovered: &Recovered) -> Result<(), String> {
        self.coverage.crashes += 1;
        if !recovered.repairs.is_empty() {
            self.coverage.recoveries_with_repairs += 1;
        }
        let restored = &recovered.restored;
        let r_floor = restored.snapshot.last_index;
        for (offset, entry) in restored.entries.iter().enumerate() {
            if entry.index != r_floor + 1 + offset as u64 {
                return Err(format!(
                    "restored entries are not contiguous after the snapshot at {r_floor}"
                ));
            }
        }
        if recovered.snapshot_data.is_some() != (r_floor > 0) {
            return Err("snapshot data present without a snapshot, or missing".into());
        }
        let recovered_state = DurableState {
            hard_state: restored.hard_state,
            snapshot: recovered
                .snapshot_data
                .as_ref()
                .map(|data| Snapshot { meta: restored.snapshot.clone(), data: data.clone() }),
            entries: restored.entries.clone(),
        };
        if let Some(snapshot) = &recovered_state.snapshot
            && snapshot.data != snapshot_data(snapshot.meta.last_index, snapshot.meta.last_term)
        {
            return Err(format!("snapshot at {} has the wrong data", snapshot.meta.last_index));
        }
        // Term and vote: those of a job at or after the durable point.
        let term_vote = (restored.hard_state.term, restored.hard_state.vote);
        let allowed: BTreeSet<(u64, NodeId)> =
            self.candidates[self.durable..].iter().map(|c| c.1).collect();
        if !allowed.contains(&term_vote) {
            return Err(format!("recovered term/vote {term_vote:?}, expected one of {allowed:?}"));
        }
        // Commit never claims an entry other than the committed one.
        let last = last_index(&recovered_state);
        if restored.hard_state.commit > self.commit {
            return Err(format!(
                "recovered commit {} beyond any commit given ({})",
                restored.hard_state.commit, self.commit
            ));
        }
        for index in r_floor + 1..=restored.hard_state.commit.min(last) {
            if let (Some(Some(expected)), Some(entry)) =
                (self.committed.get(&index), entry_at(&recovered_state, index))
                && expected != entry
            {
                return Err(format!(
                    "commit {} covers index {index}, which holds another entry",
                    restored.hard_state.commit
                ));
            }
        }
        // The log: one of the states at or after the durable point.
        let matching = self.candidates[self.durable..]
            .iter()
            .position(|(candidate, _)| self.agrees(&recovered_state, candidate));
        if let Some(offset) = matching {
            self.matched = Some(self.durable + offset);
        }
        match matching {
            Some(0) => {}
            Some(_) => self.coverage.recovered_beyond_durable += 1,
            None => {
                let describe = |s: &DurableState| {
                    format!(
                        "floor {} last {} ({} entries)",
                        floor(s),
                        last_index(s),
                        s.entries.len()
                    )
                };
                return Err(format!(
                    "recovered log [{}] matches no state at or after the durable one [{}]; submitted up to [{}]",
                    describe(&recovered_state),
                    describe(&self.candidates[self.durable].0),
                    describe(&self.state),
                ));
            }
        }
        Ok(())
    }

    fn agrees(&self, recovered: &DurableState, candidate: &DurableState) -> bool {
        if last_index(recovered) != last_index(candidate) {
            return false;
        }
        let r_floor = floor(recovered);
        let c_floor = floor(candidate);
        for entry in recovered.entries.iter().filter(|e| e.index > r_floor) {
            match entry_at(candidate, entry.index) {
                Some(expected) if expected == entry => {}
                Some(_) => return false,
                None if entry.index <= c_floor => match self.committed.get(&entry.index) {
                    Some(Some(expected)) if expected == entry => {}
                    _ => return false,
                },
                None => return false,
            }
        }
        for expected in candidate.entries.iter().filter(|e| e.index > r_floor.max(c_floor)) {
            if entry_at(recovered, expected.index) != Some(expected) {
                return false;
            }
        }
        if r_floor > 0 {
            let r_term = term_at(recovered, r_floor);
            let known = term_at(candidate, r_floor)
                .or_else(|| self.committed_snapshot_terms.get(&r_floor).copied())
                .or_else(|| self.committed.get(&r_floor).and_then(|e| e.as_ref().map(|e| e.term)));
            if known.is_none() || r_term != known {
                return false;
            }
        }
        true
    }
}
