//! An in-memory cluster of Raft cores for tests and benchmarks: a message pool the test
//! delivers, drops, duplicates and reorders at will; per-node durable state plus the batches
//! handed to "storage" and not yet durable (lost on a crash); a toy state machine; and the
//! Raft safety invariants, checked after every step.
//!
//! No I/O, no clock, no threads: a test is a pure function of its actions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::config::RaftConfig;
use super::message::Message;
use super::node::{Raft, RestoredState};
use super::ready::{PersistBatch, Ready, Role};
use super::types::{
    ClusterConfig, Entry, EntryPayload, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term,
};

/// What a node has made durable.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl DurableState {
    /// What a node restarting from this state hands to `Raft::new`.
    pub fn restored(&self, initial: &ClusterConfig) -> RestoredState {
        RestoredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot_meta(initial),
            entries: self.entries.clone(),
        }
    }

    fn snapshot_meta(&self, initial: &ClusterConfig) -> SnapshotMeta {
        match &self.snapshot {
            Some(snapshot) => snapshot.meta.clone(),
            None => SnapshotMeta { config: initial.clone(), ..Default::default() },
        }
    }

    /// The term of the durable entry at `index` (the snapshot's last entry included).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if let Some(snapshot) = &self.snapshot {
            if index == snapshot.meta.last_index {
                return Some(snapshot.meta.last_term);
            }
            if index < snapshot.meta.last_index {
                return None;
            }
        }
        self.entries.iter().find(|entry| entry.index == index).map(|entry| entry.term)
    }

    /// Whether the durable state contains committed entry `(index, term)`, directly or inside
    /// a snapshot.
    pub fn holds(&self, index: LogIndex, term: Term) -> bool {
        if self.snapshot.as_ref().is_some_and(|s| index <= s.meta.last_index) {
            return true;
        }
        self.term(index) == Some(term)
    }

    /// Applies a persist batch in the order `PersistBatch` prescribes.
    pub fn apply(&mut self, batch: &PersistBatch) {
        if let Some(snapshot) = &batch.snapshot {
            let meta = &snapshot.meta;
            let keeps_suffix = self.term(meta.last_index) == Some(meta.last_term);
            if keeps_suffix {
                self.entries.retain(|entry| entry.index > meta.last_index);
            } else {
                self.entries.clear();
            }
            self.snapshot = Some(snapshot.clone());
        }
        if let Some(first) = batch.entries.first() {
            self.entries.retain(|entry| entry.index < first.index);
            assert!(
                self.entries.last().is_none_or(|last| last.index + 1 == first.index)
                    || self.snapshot.as_ref().is_some_and(|s| s.meta.last_index + 1 == first.index),
                "a persist batch left a gap in the durable log"
            );
            self.entries.extend(batch.entries.iter().cloned());
        }
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = hard_state;
        }
    }
}

/// The toy state machine: a hash chain over applied commands, so two nodes that applied the
/// same commands in the same order have the same digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    pub applied_index: LogIndex,
    pub digest: u64,
    pub commands: u64,
}

impl ChainState {
    fn apply(&mut self, entry: &Entry) {
        assert_eq!(entry.index, self.applied_index + 1, "entries are applied in order, once");
        self.applied_index = entry.index;
        if let EntryPayload::Command(bytes) = &entry.payload {
            self.commands += 1;
            // Chained FNV-1a: fixed, so digests are comparable across runs.
            let mut hasher = crate::hash::Fnv1a::resume(self.digest);
            hasher.write(bytes);
            hasher.write_u64(entry.index);
            self.digest = hasher.finish();
        }
    }

    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&self.digest.to_le_bytes());
        out.extend_from_slice(&self.commands.to_le_bytes());
        Bytes::from(out)
    }

    fn decode(bytes: &[u8]) -> Self {
        let word = |i: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(raw)
        };
        ChainState { applied_index: word(0), digest: word(1), commands: word(2) }
    }
}

pub struct MemoryNode {
    pub id: NodeId,
    /// `None` while crashed.
    pub raft: Option<Raft>,
    pub durable: DurableState,
    /// Batches handed to storage, oldest first, not yet durable.
    pub unsynced: VecDeque<PersistBatch>,
    pub state: ChainState,
    /// Reads served: (context, read index, state-machine digest when served).
    pub reads_served: Vec<(u64, LogIndex)>,
    pub reads_failed: Vec<u64>,
    pub incarnation: u32,
    last_commit: LogIndex,
}

/// Global knowledge for the invariant checks.
#[derive(Default)]
struct History {
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// Every entry known committed: index -> entry.
    committed: BTreeMap<LogIndex, Entry>,
    /// The term in which each index was first seen committed (the committing leader's, since
    /// it commits before anyone else learns of it).
    committed_in_term: BTreeMap<LogIndex, Term>,
    /// The configuration that committed each index: that of the first node seen committing it,
    /// which is the leader (a leader counts a commit under its newest configuration, as soon as
    /// it is appended — §4.1).
    committed_under: BTreeMap<LogIndex, ClusterConfig>,
    /// Every applied entry: index -> (term, digest after applying it).
    applied: BTreeMap<LogIndex, (Term, u64)>,
    /// Read contexts -> the highest commit index any node knew when the read was requested.
    read_floor: BTreeMap<u64, LogIndex>,
}

/// Knobs for how the harness treats storage.
#[derive(Copy, Clone, Debug)]
pub struct HarnessOptions {
    /// Make every batch durable immediately (benchmarks, simple scenarios).
    pub auto_persist: bool,
    /// Run the invariant checks after every step (costly; off in benchmarks).
    pub check_invariants: bool,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions { auto_persist: true, check_invariants: true }
    }
}

pub struct MemoryCluster {
    pub nodes: BTreeMap<NodeId, MemoryNode>,
    /// Messages sent and not yet delivered or dropped, in sending order.
    pub in_flight: Vec<Message>,
    /// Links that drop every message: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    pub config: RaftConfig,
    initial_config: ClusterConfig,
    pub options: HarnessOptions,
    seed: u64,
    history: History,
    next_command: u64,
    next_read_context: u64,
}

impl MemoryCluster {
    /// A new cluster of `size` voters with ids 1..=size.
    pub fn new(size: u64, config: RaftConfig, seed: u64, options: HarnessOptions) -> Self {
        Self::with_spares(size, 0, config, seed, options)
    }

    /// `voters` voters with ids 1..=voters, plus `spares` nodes (the next ids) that run but are
    /// not members until added.
    pub fn with_spares(
        voters: u64,
        spares: u64,
        config: RaftConfig,
        seed: u64,
        options: HarnessOptions,
    ) -> Self {
        let ids: Vec<NodeId> = (1..=voters + spares).map(NodeId).collect();
        let mut initial_config = ClusterConfig::with_voters((1..=voters).map(NodeId));
        initial_config.addresses = ids.iter().map(|id| (*id, format!("n{}", id.0))).collect();
        let mut cluster = MemoryCluster {
            nodes: BTreeMap::new(),
            in_flight: Vec::new(),
            blocked: BTreeSet::new(),
            config,
            initial_config,
            options,
            seed,
            history: History::default(),
            next_command: 0,
            next_read_context: 0,
        };
        for id in ids {
            cluster.nodes.insert(
                id,
                MemoryNode {
                    id,
                    raft: None,
                    durable: DurableState::default(),
                    unsynced: VecDeque::new(),
                    state: ChainState::default(),
                    reads_served: Vec::new(),
                    reads_failed: Vec::new(),
                    incarnation: 0,
                    last_commit: 0,
                },
            );
            cluster.start(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.nodes[&id].raft.as_ref().expect("node is running")
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).expect("node is running")
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raft.is_some())
    }

    /// Starts (or restarts) a node from its durable state.
    fn start(&mut self, id: NodeId) {
        let initial = self.initial_config.clone();
        let seed = self.seed;
        let config = self.config.clone();
        let node = self.nodes.get_mut(&id).expect("known node");
        node.incarnation += 1;
        let restored = RestoredState {
            hard_state: node.durable.hard_state,
            snapshot: node.durable.snapshot_meta(&initial),
            entries: node.durable.entries.clone(),
        };
        node.state = match &node.durable.snapshot {
            Some(snapshot) => ChainState::decode(&snapshot.data),
            None => ChainState::default(),
        };
        node.last_commit = 0;
        let rng_seed = seed ^ (id.0 << 32) ^ node.incarnation as u64;
        node.raft = Some(Raft::new(id, config, restored, rng_seed));
    }

    /// Crashes a node: it stops, and every batch not yet durable is lost.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.raft = None;
        node.unsynced.clear();
        self.in_flight.retain(|message| message.to != id);
    }

    pub fn restart(&mut self, id: NodeId) {
        if !self.is_running(id) {
            self.start(id);
        }
    }

    /// Blocks both directions between the two groups.
    pub fn partition(&mut self, left: &[NodeId], right: &[NodeId]) {
        for a in left {
            for b in right {
                self.blocked.insert((*a, *b));
                self.blocked.insert((*b, *a));
            }
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.ids().into_iter().filter(|other| *other != id).collect();
        self.partition(&[id], &others);
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    // ----------------------------------------------------------------------------------------
    // Steps
    // ----------------------------------------------------------------------------------------

    pub fn tick(&mut self, id: NodeId) {
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
            raft.tick();
        }
        self.process(id);
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// Proposes a fresh, unique command at `id`. Returns its (index, term) if accepted.
    pub fn propose(&mut self, id: NodeId) -> Option<(LogIndex, Term)> {
        self.next_command += 1;
        let payload = EntryPayload::Command(Bytes::from(self.next_command.to_le_bytes().to_vec()));
        let result = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())?.propose(payload).ok();
        self.process(id);
        result
    }

    /// Proposes `count` fresh commands at `id` *together*, as concurrent clients would: the
    /// engine collects them before asking for the next `Ready`, so they share messages and
    /// storage batches. Returns the (index, term) of the last one accepted.
    pub fn propose_many(&mut self, id: NodeId, count: u64) -> Option<(LogIndex, Term)> {
        let mut last = None;
        for _ in 0..count {
            self.next_command += 1;
            let payload =
                EntryPayload::Command(Bytes::from(self.next_command.to_le_bytes().to_vec()));
            let raft = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())?;
            if let Ok(position) = raft.propose(payload) {
                last = Some(position);
            }
        }
        self.process(id);
        last
    }

    pub fn propose_payload(
        &mut self,
        id: NodeId,
        payload: EntryPayload,
    ) -> Option<(LogIndex, Term)> {
        let result = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())?.propose(payload).ok();
        self.process(id);
        result
    }

    /// Requests a linearizable read at `id`; returns its context.
    pub fn read(&mut self, id: NodeId) -> Option<u64> {
        self.next_read_context += 1;
        let context = self.next_read_context;
        let floor = self.max_commit();
        let raft = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())?;
        raft.read_index(context, true).ok()?;
        self.history.read_floor.insert(context, floor);
        self.process(id);
        Some(context)
    }

    /// Delivers the in-flight message at `position` (any position: that is reordering).
    pub fn deliver(&mut self, position: usize) {
        if position >= self.in_flight.len() {
            return;
        }
        let message = self.in_flight.remove(position);
        self.deliver_message(message);
    }

    fn deliver_message(&mut self, message: Message) {
        if self.blocked.contains(&(message.from, message.to)) {
            return;
        }
        let to = message.to;
        if let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) {
            raft.step(message);
            self.process(to);
        }
    }

    pub fn drop_message(&mut self, position: usize) {
        if position < self.in_flight.len() {
            self.in_flight.remove(position);
        }
    }

    pub fn duplicate(&mut self, position: usize) {
        if let Some(message) = self.in_flight.get(position).cloned() {
            self.in_flight.push(message);
        }
    }

    /// Makes the oldest unsynced batch of `id` durable.
    pub fn persist_one(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(batch) = node.unsynced.pop_front() else { return };
        node.durable.apply(&batch);
        if let Some(raft) = node.raft.as_mut() {
            raft.persisted(batch.id);
        }
        self.process(id);
    }

    pub fn persist_all(&mut self, id: NodeId) {
        while self.nodes.get(&id).is_some_and(|n| !n.unsynced.is_empty()) {
            self.persist_one(id);
        }
    }

    /// Takes a snapshot of `id`'s state machine and compacts its log up to the applied index.
    pub fn snapshot(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(raft) = node.raft.as_mut() else { return };
        let index = node.state.applied_index;
        let Some(term) = raft.log().term(index) else { return };
        // Only what is durable may be compacted from the durable log.
        if index == 0 || node.durable.term(index) != Some(term) {
            return;
        }
        let config = raft.log().config_at(index).clone();
        let snapshot = Snapshot {
            meta: SnapshotMeta { last_index: index, last_term: term, config },
            data: node.state.encode(),
        };
        node.durable.entries.retain(|entry| entry.index > index);
        node.durable.snapshot = Some(snapshot);
        raft.compact(index);
    }

    /// Delivers, persists and processes until nothing moves (no ticks).
    pub fn stabilize(&mut self) {
        for _round in 0..10_000 {
            let mut moved = false;
            for id in self.ids() {
                if self.nodes[&id].unsynced.is_empty() {
                    continue;
                }
                self.persist_all(id);
                moved = true;
            }
            if !self.in_flight.is_empty() {
                let messages = std::mem::take(&mut self.in_flight);
                for message in messages {
                    self.deliver_message(message);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster did not stabilize in 10,000 rounds");
    }

    /// Ticks everyone until some node is leader and the cluster is quiet; returns the leader.
    pub fn elect_leader(&mut self, max_ticks: u32) -> Option<NodeId> {
        for _ in 0..max_ticks {
            self.stabilize();
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            self.tick_all();
        }
        self.stabilize();
        self.leader()
    }

    /// The leader of the highest term among running nodes, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|node| node.raft.as_ref())
            .filter(|raft| raft.role() == Role::Leader)
            .max_by_key(|raft| raft.term())
            .map(|raft| raft.id())
    }

    pub fn max_commit(&self) -> LogIndex {
        self.history.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Drains `id`'s Ready, acting on it as an engine would.
    pub fn process(&mut self, id: NodeId) {
        for round in 0.. {
            let Some(node) = self.nodes.get_mut(&id) else { return };
            let Some(raft) = node.raft.as_mut() else { return };
            if !raft.has_ready() {
                break;
            }
            // Each Ready hands out what is pending; one that never drains is a core bug.
            assert!(round < 1_000, "{id}: Ready does not drain ({:?})", raft.ready_reasons());
            let ready = raft.ready();
            self.handle_ready(id, ready);
        }
        if self.options.check_invariants {
            self.check_invariants();
        }
    }

    fn handle_ready(&mut self, id: NodeId, ready: Ready) {
        let auto_persist = self.options.auto_persist;
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(batch) = ready.persist {
            node.unsynced.push_back(batch);
        }
        self.in_flight.extend(ready.messages);
        if let Some(snapshot) = ready.snapshot_to_apply {
            node.state = ChainState::decode(&snapshot.data);
            assert_eq!(node.state.applied_index, snapshot.meta.last_index);
        }
        let mut last_applied = None;
        for entry in &ready.committed_entries {
            node.state.apply(entry);
            last_applied = Some(entry.index);
            let record = (entry.term, node.state.digest);
            match self.history.applied.get(&entry.index) {
                Some(existing) => assert_eq!(
                    *existing, record,
                    "state-machine safety: {id} applied a different entry or reached a different state at index {}",
                    entry.index
                ),
                None => {
                    self.history.applied.insert(entry.index, record);
                }
            }
        }
        for read in &ready.reads {
            node.reads_served.push((read.context, read.index));
            if let Some(floor) = self.history.read_floor.get(&read.context) {
                assert!(
                    read.index >= *floor,
                    "linearizable read {} on {id} at index {} misses writes committed before it (floor {floor})",
                    read.context,
                    read.index
                );
            }
        }
        node.reads_failed.extend(ready.failed_reads.iter().copied());
        let raft = node.raft.as_mut().expect("running");
        if let Some(index) = last_applied {
            raft.applied(index);
        }
        for request in ready.snapshot_requests {
            let snapshot = node.durable.snapshot.clone();
            let to = request.to;
            match snapshot {
                Some(snapshot) if snapshot.meta.last_index >= request.min_index => {
                    self.in_flight.push(Message {
                        from: id,
                        to,
                        term: request.term,
                        body: super::message::MessageBody::InstallSnapshot { snapshot },
                    });
                    raft.report_snapshot(to, true);
                }
                _ => raft.report_snapshot(to, false),
            }
        }
        if auto_persist {
            while let Some(batch) = node.unsynced.pop_front() {
                node.durable.apply(&batch);
                raft.persisted(batch.id);
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Invariants
    // ----------------------------------------------------------------------------------------

    /// Election safety, log matching, leader completeness, state-machine safety (in
    /// `handle_ready`), monotonic commit, committed entries durable on a majority, read freshness
    /// (in `handle_ready`). Panics with a description on the first violation.
    pub fn check_invariants(&mut self) {
        let ids = self.ids();
        for id in &ids {
            let node = self.nodes.get_mut(id).expect("known");
            let Some(raft) = node.raft.as_ref() else { continue };
            raft.log().check_invariants();
            let commit = raft.log().committed();
            assert!(
                commit >= node.last_commit,
                "{id}: commit went backwards ({} -> {commit})",
                node.last_commit
            );
            let previous_commit = node.last_commit;
            node.last_commit = commit;
            // New committed entries must agree with what anyone else saw committed there, and
            // must already be durable on a majority.
            for index in (previous_commit + 1).max(raft.log().first_index())..=commit {
                let Some(entry) = raft.log().entry(index) else { continue };
                match self.history.committed.get(&index) {
                    Some(known) => {
                        assert_eq!(known, entry, "{id}: committed entry {index} differs")
                    }
                    None => {
                        if let EntryPayload::Config(next) = &entry.payload {
                            // No two disjoint majorities: committed configurations change one
                            // voter at a time.
                            let previous =
                                config_before(&self.history.committed, &self.initial_config, index);
                            let changed =
                                previous.voters.symmetric_difference(&next.voters).count();
                            assert!(
                                changed <= 1,
                                "configuration at {index} changes {changed} voters at once"
                            );
                        }
                        self.history.committed.insert(index, entry.clone());
                        self.history.committed_in_term.insert(index, raft.term());
                        self.history.committed_under.insert(index, raft.log().config().clone());
                    }
                }
            }
            if raft.role() == Role::Leader {
                let term = raft.term();
                match self.history.leaders_by_term.get(&term) {
                    Some(other) => {
                        assert_eq!(other, id, "election safety: two leaders in term {term}")
                    }
                    None => {
                        self.history.leaders_by_term.insert(term, *id);
                        // Leader completeness (§5.4): a leader holds every entry committed in
                        // an earlier term. Not those committed in a later one: a candidate of
                        // an old term can still win it with votes that were slow to arrive,
                        // after a newer leader committed (it can commit nothing itself).
                        for (index, entry) in self.history.committed.iter() {
                            let committed_in = self.history.committed_in_term[index];
                            if *index > raft.log().snapshot_index() && committed_in < term {
                                assert_eq!(
                                    raft.log().entry(*index),
                                    Some(entry),
                                    "leader completeness: leader {id} of term {term} lacks committed entry {index}"
                                );
                            }
                        }
                    }
                }
            }
        }
        self.check_durable_majority();
        self.check_log_matching();
    }

    /// Every committed entry must be durable on a majority — the promise behind an
    /// acknowledged write. Per step only the newest entries are checked (cheap); call
    /// [`MemoryCluster::check_all_committed_durable`] at the end of a run for all of them.
    fn check_durable_majority(&self) {
        self.check_committed_durable(64);
    }

    pub fn check_all_committed_durable(&self) {
        self.check_committed_durable(usize::MAX);
    }

    fn check_committed_durable(&self, newest: usize) {
        for (index, entry) in self.history.committed.iter().rev().take(newest) {
            let config = self
                .history
                .committed_under
                .get(index)
                .cloned()
                .unwrap_or_else(|| self.config_at(*index));
            let voters = &config.voters;
            let holders = voters
                .iter()
                .filter(|id| {
                    self.nodes.get(id).is_some_and(|node| node.durable.holds(*index, entry.term))
                })
                .count();
            assert!(
                holders > voters.len() / 2,
                "committed entry {index} (term {}) is durable on only {holders} of the {} voters that committed it",
                entry.term,
                voters.len()
            );
        }
    }

    /// The configuration in force at `index`, as the cluster's history records it.
    fn config_at(&self, index: LogIndex) -> ClusterConfig {
        config_before(&self.history.committed, &self.initial_config, index + 1)
    }

    /// Proposes a membership change at the leader; returns the new configuration if accepted.
    pub fn change_membership(
        &mut self,
        change: super::membership::MembershipChange,
    ) -> Result<ClusterConfig, super::membership::MembershipError> {
        let leader = self
            .leader()
            .ok_or(super::membership::MembershipError::NotLeader { leader: NodeId::NONE })?;
        let result =
            self.raft_mut(leader).propose_membership(change, 10).map(|(_, _, config)| config);
        self.process(leader);
        result
    }

    fn check_log_matching(&self) {
        let running: Vec<&Raft> =
            self.nodes.values().filter_map(|node| node.raft.as_ref()).collect();
        for (i, a) in running.iter().enumerate() {
            for b in &running[i + 1..] {
                let (a, b) = (a.log(), b.log());
                let low = a.first_index().max(b.first_index());
                let high = a.last_index().min(b.last_index());
                let mut matched = false;
                let mut index = high;
                while index >= low && index > 0 {
                    let (ea, eb) = (a.entry(index), b.entry(index));
                    if matched {
                        assert_eq!(
                            ea, eb,
                            "log matching: logs agree at a later index but differ at {index}"
                        );
                    } else if ea.map(|e| e.term) == eb.map(|e| e.term) {
                        assert_eq!(
                            ea, eb,
                            "log matching: same index and term {index} but different entries"
                        );
                        matched = true;
                    }
                    index -= 1;
                }
            }
        }
    }

    /// The state machines of every running node that applied up to the same index agree.
    pub fn applied_digests(&self) -> Vec<(NodeId, LogIndex, u64)> {
        self.nodes
            .values()
            .filter(|node| node.raft.is_some())
            .map(|node| (node.id, node.state.applied_index, node.state.digest))
            .collect()
    }
}

/// The configuration in force just before `index`: the last committed configuration entry below
/// it, or the initial configuration.
fn config_before(
    committed: &BTreeMap<LogIndex, Entry>,
    initial: &ClusterConfig,
    index: LogIndex,
) -> ClusterConfig {
    committed
        .range(..index)
        .rev()
        .find_map(|(_, entry)| match &entry.payload {
            EntryPayload::Config(config) => Some(config.clone()),
            _ => None,
        })
        .unwrap_or_else(|| initial.clone())
}
