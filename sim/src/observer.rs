//! The simulator's eyes: every node's engine reports each cycle here (through an
//! [`EngineProbe`]), and the safety invariants are checked incrementally, as things happen:
//!
//! - **election safety**: at most one leader per term;
//! - **log matching**: an (index, term) names one entry on every node, ever;
//! - **leader completeness**: a new leader holds every entry committed in an earlier term;
//! - **state-machine safety**: every node applies the same entry at an index, reaches the
//!   same state (digests compared at checkpoints) and makes the same changes at each revision
//!   (the changes watches deliver);
//! - **monotonic commit**: a node's commit index never goes backwards while it runs;
//! - **durability**: an entry is committed only once it is durable on a majority, and a node
//!   restarted from its disk recovers everything it reported durable.
//!
//! It also folds everything observable into the run's trace hash, which must be identical when
//! the same seed runs twice.

use std::collections::{BTreeMap, BTreeSet};

use conclave_core::engine::CycleView;
use conclave_core::kv::{KvEvent, KvEventKind};
use conclave_core::raft::{
    Entry, EntryPayload, LogIndex, MessageBody, NodeId, RestoredState, Role, Term,
};
use conclave_core::transport::tcp::TransportCountersHandle;

use crate::at_rest_damage::AtRestDamage;
use crate::schedule::NodeEvent;
use crate::trace::TraceHash;

#[derive(Default)]
struct NodeView {
    incarnation: u32,
    commit: LogIndex,
    /// The durable prefix this node reported, with the term at its end.
    persisted: (LogIndex, Term),
    /// Entries this node reported durable, by index (pruned once committed and checked).
    durable_terms: BTreeMap<LogIndex, Term>,
    /// Everything up to here is durable inside a snapshot.
    durable_floor: LogIndex,
    /// The one node whose data at rest the run damages (`at_rest_damage.rs`): its promises
    /// stay checked on every restart, but what it holds never counts as the cluster's copy.
    damage_victim: bool,
    /// Its data was damaged at rest before the start in progress.
    damaged_since_start: bool,
    applied: LogIndex,
    /// This node's log as prefix hashes: index -> (term, hash of every entry up to it).
    chain: BTreeMap<LogIndex, (Term, u64)>,
    last_seen: LastSeen,
    /// What the storage seam reported durable, followed independently of Raft's bookkeeping.
    seam: SeamView,
    /// The log's snapshot index when last observed (a rise without an install: a snapshot
    /// taken).
    snapshot_index: LogIndex,
}

/// One node's durable state as the storage seam reports it: the persist batches handed to
/// storage, applied once storage reports them durable. Every acknowledgement and granted vote
/// that leaves the node is checked against it at once — whether or not a crash follows.
#[derive(Default)]
struct SeamView {
    /// Handed to storage, not yet reported durable.
    pending: BTreeMap<u64, PendingBatch>,
    durable_batch: u64,
    /// The durable log's tail, index -> term; everything at or below `floor` is durable too.
    durable_terms: BTreeMap<LogIndex, Term>,
    floor: LogIndex,
    /// The durable term and vote.
    vote: (Term, NodeId),
    /// The last vote granted and the last entry acknowledged, as sent (checked at restart).
    granted: Option<(Term, NodeId)>,
    acked: Option<(LogIndex, Term)>,
}

struct PendingBatch {
    entries: Vec<(LogIndex, Term)>,
    hard_state: Option<(Term, NodeId)>,
    snapshot: Option<(LogIndex, Term)>,
}

impl SeamView {
    /// A new incarnation starts from what recovery found.
    fn restart(&mut self, restored: &RestoredState) {
        self.pending.clear();
        self.durable_batch = 0;
        self.floor = restored.snapshot.last_index;
        self.durable_terms =
            restored.entries.iter().map(|entry| (entry.index, entry.term)).collect();
        self.vote = (restored.hard_state.term, restored.hard_state.vote);
    }

    /// Storage reported every batch up to `durable_batch` durable.
    fn advance(&mut self, durable_batch: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > durable_batch {
                break;
            }
            let batch = entry.remove();
            if let Some(vote) = batch.hard_state {
                self.vote = vote;
            }
            if let Some((index, term)) = batch.snapshot {
                self.durable_terms.retain(|at, _| *at > index);
                self.durable_terms.insert(index, term);
                self.floor = self.floor.max(index);
            }
            if let Some((first, _)) = batch.entries.first() {
                self.durable_terms.split_off(first);
                self.durable_terms.extend(batch.entries.iter().copied());
            }
        }
        self.durable_batch = self.durable_batch.max(durable_batch);
    }

    fn holds(&self, index: LogIndex, term: Term) -> bool {
        index <= self.floor || self.durable_terms.get(&index) == Some(&term)
    }

    /// Forgets the tail below `index` (it is durable and committed): memory stays bounded.
    fn prune_below(&mut self, index: LogIndex) {
        let durable_end = self.durable_terms.keys().next_back().copied().unwrap_or(self.floor);
        let prune_to = index.min(durable_end);
        if prune_to > self.floor {
            self.durable_terms = self.durable_terms.split_off(&prune_to);
            self.floor = prune_to.saturating_sub(1);
        }
    }
}

/// A node's state when last observed.
#[derive(Default)]
struct LastSeen {
    running: bool,
    role: Option<Role>,
    term: Term,
    leader: NodeId,
    commit: LogIndex,
    last_index: LogIndex,
    voters: Vec<u64>,
    learners: Vec<u64>,
}

/// Counters for the run report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedStats {
    pub leader_terms: u64,
    pub config_changes: u64,
    pub entries_committed: u64,
    pub messages: u64,
    pub snapshots_installed: u64,
    pub snapshot_messages: u64,
    pub restarts_checked: u64,
    pub engine_failures: u64,
    /// Snapshot streaming, summed over every node incarnation's transport.
    pub snapshot_chunks_sent: u64,
    pub snapshots_streamed: u64,
    pub snapshot_transfers_resumed: u64,
    /// Restarts whose disk lost its newest synced records (`lost_tail.rs`), and entries lost.
    pub tails_lost: u64,
    pub tail_entries_lost: u64,
    /// Damage done to synced data at rest (`at_rest_damage.rs`), starts refused by recovery,
    /// and restarts after such damage that recovered and kept every promise.
    pub damaged_at_rest: u64,
    pub refused_starts: u64,
    pub damaged_restarts_intact: u64,
}

/// One line per count, in words, for a replay's report.
impl std::fmt::Display for ObservedStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ObservedStats {
            leader_terms,
            config_changes,
            entries_committed,
            messages,
            snapshots_installed,
            snapshot_messages,
            restarts_checked,
            engine_failures,
            snapshot_chunks_sent,
            snapshots_streamed,
            snapshot_transfers_resumed,
            tails_lost,
            tail_entries_lost,
            damaged_at_rest,
            refused_starts,
            damaged_restarts_intact,
        } = self;
        writeln!(f, "  leader terms: {leader_terms}")?;
        writeln!(f, "  configuration changes committed: {config_changes}")?;
        writeln!(f, "  entries committed: {entries_committed}")?;
        writeln!(f, "  messages sent: {messages}")?;
        writeln!(
            f,
            "  snapshots installed: {snapshots_installed} ({snapshot_messages} snapshot messages)"
        )?;
        writeln!(
            f,
            "  snapshot streaming: {snapshots_streamed} delivered in {snapshot_chunks_sent} chunks, {snapshot_transfers_resumed} transfers resumed"
        )?;
        writeln!(f, "  restarts checked against what the node had promised: {restarts_checked}")?;
        writeln!(f, "  nodes that stopped on their own: {engine_failures}")?;
        writeln!(
            f,
            "  restarts that lost their newest synced records: {tails_lost} ({tail_entries_lost} entries)"
        )?;
        write!(
            f,
            "  damage at rest: {damaged_at_rest} times; {refused_starts} starts refused by recovery, {damaged_restarts_intact} damaged restarts kept every promise"
        )
    }
}

impl ObservedStats {
    /// Adds `other`'s counts to these (the groups of a sharded world).
    pub fn add(&mut self, other: &ObservedStats) {
        let ObservedStats {
            leader_terms,
            config_changes,
            entries_committed,
            messages,
            snapshots_installed,
            snapshot_messages,
            restarts_checked,
            engine_failures,
            snapshot_chunks_sent,
            snapshots_streamed,
            snapshot_transfers_resumed,
            tails_lost,
            tail_entries_lost,
            damaged_at_rest,
            refused_starts,
            damaged_restarts_intact,
        } = other;
        self.leader_terms += leader_terms;
        self.config_changes += config_changes;
        self.entries_committed += entries_committed;
        self.messages += messages;
        self.snapshots_installed += snapshots_installed;
        self.snapshot_messages += snapshot_messages;
        self.restarts_checked += restarts_checked;
        self.engine_failures += engine_failures;
        self.snapshot_chunks_sent += snapshot_chunks_sent;
        self.snapshots_streamed += snapshots_streamed;
        self.snapshot_transfers_resumed += snapshot_transfers_resumed;
        self.tails_lost += tails_lost;
        self.tail_entries_lost += tail_entries_lost;
        self.damaged_at_rest += damaged_at_rest;
        self.refused_starts += refused_starts;
        self.damaged_restarts_intact += damaged_restarts_intact;
    }
}

pub struct Observer {
    violations: Vec<String>,
    pub trace: TraceHash,
    leaders_by_term: BTreeMap<Term, NodeId>,
    entry_hashes: BTreeMap<(LogIndex, Term), u64>,
    /// (index, term) -> the hash of the whole log prefix ending there, as any node held it.
    prefix_hashes: BTreeMap<(LogIndex, Term), u64>,
    committed: BTreeMap<LogIndex, (Term, u64)>,
    /// The term each index was first seen committed in: its leader's, which commits it first.
    committed_in_term: BTreeMap<LogIndex, Term>,
    applied: BTreeMap<LogIndex, (Term, u64)>,
    digests: BTreeMap<LogIndex, (NodeId, u64)>,
    nodes: BTreeMap<NodeId, NodeView>,
    current_leader: Option<(NodeId, Term)>,
    /// Voters of the last committed configuration.
    committed_voters: std::collections::BTreeSet<NodeId>,
    /// Voters and learners of the last committed configuration, and of any committed so far.
    committed_members: BTreeSet<NodeId>,
    ever_members: BTreeSet<NodeId>,
    /// Who was first seen in each term, and whether it had been removed from the cluster then.
    term_starters: BTreeMap<Term, (NodeId, bool)>,
    pub stats: ObservedStats,
    /// (key, value) -> when a node first applied the expiry of that value's TTL (µs). Every
    /// expiry is applied from the log by some node before any snapshot can carry it.
    pub expiries: BTreeMap<(String, String), u64>,
    /// Revision -> the changes made at it, in order, as the first node to apply it made them:
    /// what a watch must deliver (`watch_check.rs`).
    pub changes: BTreeMap<u64, Vec<KvEvent>>,
    /// Why nodes stopped on their own (storage failures), for the report.
    pub node_stops: Vec<String>,
    pub fault_kinds: BTreeSet<&'static str>,
    /// Every transport started, for the snapshot-streaming totals.
    transports: Vec<TransportCountersHandle>,
    /// What nodes did since the nemesis last looked (it times crashes on them).
    events: Vec<(NodeId, NodeEvent)>,
    /// TimeoutNow messages sent since the nemesis last looked: (leader, target).
    timeout_nows: Vec<(NodeId, NodeId)>,
    /// Leaders seen holding a lease after a newer leader was elected (see `check_lease`), one
    /// entry per (leader, term, newer term); `run.rs` excuses those whose lease rested on a
    /// clock that drifted past the lease's bound.
    pub lease_overlaps: LeaseOverlaps,
    /// The votes granted in each term, by candidate: who elected each leader.
    granted_votes: BTreeMap<(Term, NodeId), BTreeSet<NodeId>>,
}

/// Lease overlaps by (leader, its term, the newer term).
pub type LeaseOverlaps = BTreeMap<(NodeId, Term, Term), LeaseOverlap>;

/// A leader that believed its lease held while another node already led a newer term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOverlap {
    pub node: NodeId,
    pub term: Term,
    pub newer_leader: NodeId,
    pub newer_term: Term,
    /// The newer leader and the nodes that voted for it: a lease is safe only while their
    /// clocks, too, keep within the bound (a fast clock times an election out early).
    pub newer_electorate: Vec<NodeId>,
    /// Simulated time of the first and the last cycle that showed it.
    pub first_ms: u64,
    pub last_ms: u64,
}

impl Observer {
    pub fn on_transport_started(&mut self, counters: TransportCountersHandle) {
        self.transports.push(counters);
    }

    /// The statistics, with the transports' snapshot-streaming counters summed in.
    pub fn final_stats(&self) -> ObservedStats {
        let mut stats = self.stats.clone();
        for handle in &self.transports {
            let counters = handle.get();
            stats.snapshot_chunks_sent += counters.snapshot_chunks_sent;
            stats.snapshots_streamed += counters.snapshots_delivered;
            stats.snapshot_transfers_resumed += counters.snapshot_transfers_resumed;
        }
        stats
    }
}

pub fn payload_hash(entry: &Entry) -> u64 {
    let mut hash = TraceHash::default();
    match &entry.payload {
        EntryPayload::Noop => hash.add(1),
        EntryPayload::Command(bytes) => {
            hash.add(2);
            hash.add_bytes(bytes);
        }
        EntryPayload::Config(config) => {
            hash.add(3);
            for id in config.members() {
                hash.add(id.0 + if config.is_voter(id) { 1 << 32 } else { 0 });
            }
        }
    }
    hash.value()
}

impl Observer {
    /// The observer of a group whose voters are nodes 1 to `voters`.
    pub fn new(voters: usize) -> Self {
        let voters: Vec<NodeId> = (1..=voters as u64).map(NodeId).collect();
        Self::with_voters(&voters)
    }

    /// The observer of a group that starts with `voters`.
    pub fn with_voters(voters: &[NodeId]) -> Self {
        Observer {
            violations: Vec::new(),
            trace: TraceHash::default(),
            leaders_by_term: BTreeMap::new(),
            entry_hashes: BTreeMap::new(),
            prefix_hashes: BTreeMap::new(),
            committed: BTreeMap::new(),
            committed_in_term: BTreeMap::new(),
            applied: BTreeMap::new(),
            digests: BTreeMap::new(),
            nodes: BTreeMap::new(),
            current_leader: None,
            committed_voters: voters.iter().copied().collect(),
            committed_members: voters.iter().copied().collect(),
            ever_members: voters.iter().copied().collect(),
            term_starters: BTreeMap::new(),
            stats: ObservedStats::default(),
            expiries: BTreeMap::new(),
            changes: BTreeMap::new(),
            node_stops: Vec::new(),
            fault_kinds: BTreeSet::new(),
            transports: Vec::new(),
            events: Vec::new(),
            timeout_nows: Vec::new(),
            lease_overlaps: BTreeMap::new(),
            granted_votes: BTreeMap::new(),
        }
    }

    /// The node events seen since the last call (see `NodeEvent`).
    pub fn take_events(&mut self) -> Vec<(NodeId, NodeEvent)> {
        std::mem::take(&mut self.events)
    }

    /// The TimeoutNow messages sent since the last call, as (leader, target): the nemesis
    /// holds one on its way (`Fault::SlowTransfer`).
    pub fn take_timeout_nows(&mut self) -> Vec<(NodeId, NodeId)> {
        std::mem::take(&mut self.timeout_nows)
    }

    /// A node removed from the cluster must never disrupt it: a term it starts (it never
    /// learned of its removal and campaigns) must never become a member's term.
    fn check_no_disruption_by_removed_nodes(&mut self, node: NodeId, term: Term) {
        let removed = self.ever_members.contains(&node) && !self.committed_members.contains(&node);
        match self.term_starters.get(&term).copied() {
            None => {
                self.term_starters.insert(term, (node, removed));
            }
            Some((starter, true)) if starter != node && self.committed_members.contains(&node) => {
                self.violation(format!(
                    "{starter}, removed from the cluster, started term {term} and member {node} adopted it"
                ));
            }
            Some(_) => {}
        }
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// A violation found outside this observer's own checks (`observers.rs`).
    pub fn report_violation(&mut self, description: String) {
        self.violation(description);
    }

    fn violation(&mut self, description: String) {
        // The first violation is what matters; later ones are usually consequences.
        if self.violations.len() < 8 {
            self.violations.push(description);
        }
    }

    /// The leader of the highest term seen, if it has not been replaced.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.current_leader.map(|(id, _)| id)
    }

    /// The voters of the newest committed configuration.
    pub fn committed_voters(&self) -> Vec<NodeId> {
        self.committed_voters.iter().copied().collect()
    }

    pub fn max_commit(&self) -> LogIndex {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// The highest index up to which a majority of the committed voters other than `node` hold
    /// the committed log durably, not counting the voters in `losing` (whose disks are already
    /// to lose synced records at their next start, so what they hold now may not last): what
    /// `node` may lose without Raft losing it.
    pub fn held_durably_without(&self, node: NodeId, losing: &[NodeId]) -> LogIndex {
        let needed = self.committed_voters.len() / 2 + 1;
        let mut held: Vec<LogIndex> = self
            .committed_voters
            .iter()
            .filter(|voter| **voter != node && !losing.contains(voter))
            .map(|voter| self.committed_prefix_durable_on(*voter))
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(needed - 1).copied().unwrap_or(0)
    }

    /// How far `node`'s durable log is the committed log (0 when that cannot be told).
    fn committed_prefix_durable_on(&self, node: NodeId) -> LogIndex {
        let Some(view) = self.nodes.get(&node) else { return 0 };
        if view.damage_victim {
            return 0;
        }
        let index = view.persisted.0.min(self.max_commit());
        if index <= view.durable_floor {
            return index;
        }
        // Its log holds the committed term at `index`, so (log matching, checked) the committed
        // prefix up to it; and `index` is at or below what it reported durable.
        match (view.chain.get(&index), self.committed.get(&index)) {
            (Some((term, _)), Some((committed_term, _))) if term == committed_term => index,
            _ => 0,
        }
    }

    /// `node`'s disk lost its newest synced records before this start (an injected fault, see
    /// `lost_tail.rs`): its durability promise now ends at what it kept. A shared log's loss
    /// is told to each group that lost entries; `counts_restart` is set for one of them, so
    /// that the run's statistics count the restart once.
    pub fn on_tail_lost(
        &mut self,
        node: NodeId,
        lost: Option<crate::lost_tail::LostTail>,
        counts_restart: bool,
    ) {
        let Some(lost) = lost else { return };
        self.stats.tails_lost += u64::from(counts_restart);
        self.stats.tail_entries_lost += lost.last + 1 - lost.first;
        self.trace.add(0x7a11_0000 + node.0);
        self.trace.add(lost.first);
        self.trace.add(lost.last);
        let view = self.nodes.entry(node).or_default();
        view.persisted = lost.kept;
        view.durable_terms.retain(|index, _| *index < lost.first);
        // The acknowledgements of what was lost are voided with it.
        view.seam.acked = (lost.kept.0 > 0).then_some(lost.kept);
    }

    /// `node` is the run's damage victim (see `damage_victim`).
    pub fn mark_damage_victim(&mut self, node: NodeId) {
        self.nodes.entry(node).or_default().damage_victim = true;
    }

    /// The nemesis damaged `node`'s synced data before this start.
    pub fn on_damaged_at_rest(&mut self, node: NodeId, damage: AtRestDamage, description: &str) {
        self.stats.damaged_at_rest += 1;
        self.trace.add(0xda3a_0000 + node.0);
        self.trace
            .add(AtRestDamage::ALL.iter().position(|kind| *kind == damage).unwrap_or(0) as u64);
        self.node_stops.push(format!("{node}: disk damaged at rest: {description}"));
        let view = self.nodes.entry(node).or_default();
        assert!(view.damage_victim, "{node} damaged at rest but not marked the run's victim");
        view.damaged_since_start = true;
    }

    /// Recovery refused to start `node`. Expected only when something damaged its disk or
    /// made it fail; otherwise the cluster lost a member for nothing.
    pub fn on_recovery_refused(&mut self, node: NodeId, reason: &str, expected: bool) {
        self.stats.refused_starts += 1;
        if !expected {
            self.violation(format!(
                "recovery: {node} refused to start although nothing damaged its disk or made it \
                 fail: {reason}"
            ));
        }
        self.on_engine_stopped(node, format!("recovery refused: {reason}"));
    }

    pub fn note_fault(&mut self, kind: &'static str) {
        self.fault_kinds.insert(kind);
    }

    /// Extends `node`'s prefix-hash chain with `entries` (after truncating at the first) and
    /// checks Log Matching in full: two logs holding the same (index, term) hold identical
    /// entries up to it. `base` is the (index, term) just before the first entry.
    fn extend_chain(&mut self, node: NodeId, base: (LogIndex, Term), entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let anchor = if base.0 == 0 {
            Some(0)
        } else {
            let view = self.nodes.entry(node).or_default();
            match view.chain.get(&base.0) {
                Some((term, hash)) if *term == base.1 => Some(*hash),
                _ => self.prefix_hashes.get(&base).copied(),
            }
        };
        let view = self.nodes.entry(node).or_default();
        view.chain.split_off(&first.index);
        // Without an anchor (a prefix this observer never saw) the chain cannot be checked;
        // it starts again at the next snapshot or restart.
        let Some(mut prefix) = anchor else { return };
        let mut checked = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut hash = TraceHash::default();
            hash.add(prefix);
            hash.add(entry.index);
            hash.add(entry.term);
            hash.add(payload_hash(entry));
            prefix = hash.value();
            checked.push((entry.index, entry.term, prefix));
        }
        for (index, term, prefix) in checked {
            self.nodes.entry(node).or_default().chain.insert(index, (term, prefix));
            match self.prefix_hashes.get(&(index, term)) {
                Some(known) if *known != prefix => {
                    self.violation(format!(
                        "log matching: {node}'s log agrees with another at index {index} term {term} \
                         but differs before it"
                    ));
                    return;
                }
                Some(_) => {}
                None => {
                    self.prefix_hashes.insert((index, term), prefix);
                }
            }
        }
    }

    /// A node starts (again) from what its storage recovered. Everything it reported durable
    /// before must be there.
    pub fn on_recovered(&mut self, node: NodeId, restored: &RestoredState) {
        let violations_before = self.violations.len();
        self.check_recovery(node, restored);
        let view = self.nodes.entry(node).or_default();
        if std::mem::take(&mut view.damaged_since_start)
            && self.violations.len() == violations_before
        {
            self.stats.damaged_restarts_intact += 1;
        }
    }

    fn check_recovery(&mut self, node: NodeId, restored: &RestoredState) {
        let base = (restored.snapshot.last_index, restored.snapshot.last_term);
        {
            let view = self.nodes.entry(node).or_default();
            view.chain.clear();
            if let Some(prefix) = self.prefix_hashes.get(&base).copied() {
                view.chain.insert(base.0, (base.1, prefix));
            }
        }
        // Storage keeps a tail of entries behind the snapshot; the log starts after it.
        let after_snapshot: Vec<Entry> =
            restored.entries.iter().filter(|entry| entry.index > base.0).cloned().collect();
        self.extend_chain(node, base, &after_snapshot);
        self.check_seam_promises_kept(node, restored);
        let view = self.nodes.entry(node).or_default();
        view.seam.restart(restored);
        view.snapshot_index = restored.snapshot.last_index;
        view.incarnation += 1;
        view.commit = 0;
        view.applied = restored.snapshot.last_index;
        let (index, term) = view.persisted;
        self.trace.add(0xdead_0000 + node.0);
        self.trace.add(restored.snapshot.last_index);
        self.trace.add(restored.entries.len() as u64);
        if index == 0 {
            return;
        }
        self.stats.restarts_checked += 1;
        if !restored_holds(restored, index, term) {
            let last = restored.entries.last().map_or(restored.snapshot.last_index, |e| e.index);
            self.violation(format!(
                "durability: {node} reported entries up to index {index} (term {term}) durable, \
                 but recovered only up to index {last} after a restart"
            ));
        }
    }

    /// A restarted node must hold every vote it granted and every entry it acknowledged: it
    /// promised them durable — whatever its disk went through. (A disk that lost its tail on
    /// purpose voids the promise for what it lost, see `on_tail_lost`.)
    fn check_seam_promises_kept(&mut self, node: NodeId, restored: &RestoredState) {
        let Some(view) = self.nodes.get(&node) else { return };
        let (granted, acked) = (view.seam.granted, view.seam.acked);
        let hard_state = &restored.hard_state;
        if let Some((term, candidate)) = granted
            && (hard_state.term < term || (hard_state.term == term && hard_state.vote != candidate))
        {
            self.violation(format!(
                "durability: {node} granted its vote to {candidate} in term {term} but restarted \
                 with term {} and vote {}",
                hard_state.term, hard_state.vote
            ));
        }
        if let Some((index, term)) = acked
            && !restored_holds(restored, index, term)
        {
            let last = restored.entries.last().map_or(restored.snapshot.last_index, |e| e.index);
            self.violation(format!(
                "durability: {node} acknowledged entry {index} (term {term}) but restarted \
                 without it (snapshot at {}, log up to {last})",
                restored.snapshot.last_index
            ));
        }
    }

    /// Lease safety at the seam: a lease is a promise that no other leader exists while it
    /// holds, so a leader that believes its lease holds (it may answer reads from it, locally
    /// or for its followers) must not see any node elected in a newer term before now. The
    /// history checker would notice only if a write at the new leader and a read from the
    /// lease happened to meet; this sees the lease itself.
    fn check_lease(&mut self, node: NodeId, raft: &conclave_core::raft::Raft) {
        if raft.role() != Role::Leader || raft.lease_start_tick().is_none() {
            return;
        }
        let Some((newer_term, newer_leader)) =
            self.leaders_by_term.range(raft.term() + 1..).next().map(|(t, l)| (*t, *l))
        else {
            return;
        };
        let at_ms = turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64);
        let granted = self.granted_votes.get(&(newer_term, newer_leader));
        let newer_electorate: Vec<NodeId> =
            std::iter::once(newer_leader).chain(granted.into_iter().flatten().copied()).collect();
        self.lease_overlaps
            .entry((node, raft.term(), newer_term))
            .and_modify(|overlap| overlap.last_ms = at_ms)
            .or_insert(LeaseOverlap {
                node,
                term: raft.term(),
                newer_leader,
                newer_term,
                newer_electorate,
                first_ms: at_ms,
                last_ms: at_ms,
            });
    }

    /// Records the events crashes can be timed on (configuration commits are noted where they
    /// are checked).
    fn note_events(&mut self, node: NodeId, view: &CycleView<'_>) {
        let mut granted = false;
        for message in view.messages.iter() {
            if matches!(message.body, MessageBody::VoteResponse { pre_vote: false, granted: true })
            {
                granted = true;
                self.granted_votes.entry((message.term, message.to)).or_default().insert(node);
            }
        }
        if granted {
            self.events.push((node, NodeEvent::VoteGranted));
        }
        for message in view.messages.iter() {
            if matches!(message.body, MessageBody::TimeoutNow) {
                self.timeout_nows.push((node, message.to));
            }
        }
        let snapshot_index = view.raft.log().snapshot_index();
        let node_view = self.nodes.entry(node).or_default();
        let taken = snapshot_index > node_view.snapshot_index && view.snapshot_installed.is_none();
        node_view.snapshot_index = snapshot_index;
        if view.snapshot_installed.is_some() {
            self.events.push((node, NodeEvent::SnapshotInstalled));
        } else if taken {
            self.events.push((node, NodeEvent::SnapshotTaken));
        }
    }

    /// Checks what leaves a node against what its storage reported durable (see `SeamView`).
    /// Records the changes a node's applies made. The first node to apply a revision records
    /// its changes; every other must make exactly the same ones (a replica whose state machine
    /// depends on anything but the log would not). Expiries are also timed: when the first
    /// node applied each (a TTL's expiry shows in no client request).
    fn note_changes(&mut self, node: NodeId, changes: &[KvEvent]) {
        let now_us = turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_micros() as u64);
        for event in changes.iter().filter(|event| event.kind == KvEventKind::Expire) {
            let value = String::from_utf8_lossy(&event.value).into_owned();
            self.expiries.entry((event.key.clone(), value)).or_insert(now_us);
        }
        // One entry's apply makes all of a revision's changes, so a cycle holds whole
        // revisions.
        for group in changes.chunk_by(|a, b| a.mod_revision == b.mod_revision) {
            let revision = group[0].mod_revision;
            match self.changes.get(&revision) {
                None => {
                    self.changes.insert(revision, group.to_vec());
                }
                Some(known) if known.as_slice() != group => self.violation(format!(
                    "{node} made other changes at revision {revision} than a replica before it: \
                     {group:?}, not {known:?}"
                )),
                Some(_) => {}
            }
        }
    }

    fn check_seams(&mut self, node: NodeId, view: &CycleView<'_>) {
        let log = view.raft.log();
        let Some(node_view) = self.nodes.get_mut(&node) else { return };
        let seam = &mut node_view.seam;
        if let Some((id, entries)) = view.persist_batch {
            let batch = PendingBatch {
                entries: entries.iter().map(|entry| (entry.index, entry.term)).collect(),
                hard_state: view.persist_hard_state.map(|hs| (hs.term, hs.vote)),
                snapshot: view.persist_snapshot,
            };
            // A batch that rewrites the acknowledged entry (a newer leader's conflicting suffix)
            // is the node's own decision, and a legitimate one: no leader overwrites a committed
            // entry (leader completeness, checked). Its promise shrinks to what the rewrite
            // keeps, at once — the rewrite may reach the disk even if its sync then fails.
            if let (Some(acked), Some(&(first, _))) = (seam.acked, batch.entries.first())
                && first <= acked.0
                && !batch.entries.contains(&acked)
            {
                let kept = first - 1;
                seam.acked = (kept > log.snapshot_index())
                    .then(|| log.term(kept).map(|term| (kept, term)))
                    .flatten();
            }
            seam.pending.insert(id, batch);
        }
        seam.advance(view.durable_batch);
        let mut broken = Vec::new();
        for message in view.messages {
            match message.body {
                MessageBody::AppendResponse { success: true, index, .. } if index > 0 => {
                    let term = log.term(index);
                    let durable = match term {
                        Some(term) => seam.holds(index, term),
                        // Compacted away: the engine compacts only what a durable snapshot
                        // covers.
                        None => index <= seam.floor || index <= log.snapshot_index(),
                    };
                    if !durable {
                        broken.push(format!(
                            "durability at the seam: {node} acknowledged index {index} (term \
                             {term:?}) to {} before its storage reported it durable",
                            message.to
                        ));
                    }
                    seam.acked = Some((index, term.unwrap_or(0)));
                }
                MessageBody::VoteResponse { pre_vote: false, granted: true } => {
                    if seam.vote != (message.term, message.to) {
                        broken.push(format!(
                            "durability at the seam: {node} granted its vote to {} in term {} \
                             while its durable vote was {:?}",
                            message.to, message.term, seam.vote
                        ));
                    }
                    // Election safety rests on one vote per term: a second candidate granted
                    // in the same term is a broken vote, durable or not.
                    if let Some((term, earlier)) = seam.granted
                        && term == message.term
                        && earlier != message.to
                    {
                        broken.push(format!(
                            "election safety: {node} granted its vote in term {term} to {earlier} \
                             and then to {}",
                            message.to
                        ));
                    }
                    seam.granted = Some((message.term, message.to));
                }
                _ => {}
            }
        }
        seam.prune_below(log.committed().saturating_sub(1));
        for description in broken {
            self.violation(description);
        }
    }

    pub fn on_engine_stopped(&mut self, node: NodeId, reason: String) {
        self.stats.engine_failures += 1;
        self.trace.add(0x5707_0000 + node.0);
        self.node_stops.push(format!("{node}: {reason}"));
        self.on_node_down(node);
    }

    /// A node crashed or stopped: it leads nothing any more.
    pub fn on_node_down(&mut self, node: NodeId) {
        if self.current_leader.is_some_and(|(id, _)| id == node) {
            self.current_leader = None;
        }
        if let Some(view) = self.nodes.get_mut(&node) {
            view.last_seen.running = false;
        }
    }

    /// Running members of the last committed configuration whose commit index is below
    /// `target`, with theirs: after healing, every member must catch up (a follower a leader
    /// has stopped replicating to would otherwise go unnoticed while the others make progress).
    pub fn members_behind(&self, target: LogIndex) -> Vec<(NodeId, LogIndex)> {
        self.committed_members
            .iter()
            .filter_map(|id| {
                let seen = &self.nodes.get(id)?.last_seen;
                (seen.running && seen.commit < target).then_some((*id, seen.commit))
            })
            .collect()
    }

    /// One line per node: what it looked like when last observed (for liveness failures).
    pub fn node_summaries(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(id, view)| {
                let seen = &view.last_seen;
                format!(
                    "{id}: {} {:?} term {} leader {} commit {} last {} durable {} voters {:?} \
                     learners {:?}",
                    if seen.running { "running" } else { "down" },
                    seen.role,
                    seen.term,
                    seen.leader,
                    seen.commit,
                    seen.last_index,
                    view.persisted.0,
                    seen.voters,
                    seen.learners
                )
            })
            .collect()
    }

    pub(crate) fn observe(&mut self, node: NodeId, view: CycleView<'_>) {
        let raft = view.raft;
        let log = raft.log();
        {
            let config = log.config();
            self.nodes.entry(node).or_default().last_seen = LastSeen {
                running: true,
                role: Some(raft.role()),
                term: raft.term(),
                leader: raft.leader(),
                commit: log.committed(),
                last_index: log.last_index(),
                voters: config.voters.iter().map(|id| id.0).collect(),
                learners: config.learners.iter().map(|id| id.0).collect(),
            };
        }
        self.trace.add(node.0);
        self.trace.add(raft.term());
        self.check_no_disruption_by_removed_nodes(node, raft.term());
        self.check_seams(node, &view);
        self.check_lease(node, raft);
        self.note_events(node, &view);
        self.note_changes(node, view.changes);

        // A snapshot installed from the leader replaces the log up to its index.
        if let Some(meta) = view.snapshot_installed {
            let anchor = self.prefix_hashes.get(&(meta.last_index, meta.last_term)).copied();
            let node_view = self.nodes.entry(node).or_default();
            node_view.chain.clear();
            if let Some(prefix) = anchor {
                node_view.chain.insert(meta.last_index, (meta.last_term, prefix));
            }
        }
        // Log matching: one entry per (index, term), everywhere, forever; and the same prefix
        // before it.
        if let Some((_, entries)) = view.persist_batch
            && let Some(first) = entries.first()
        {
            let base_index = first.index - 1;
            let base_term = log.term(base_index).unwrap_or(0);
            self.extend_chain(node, (base_index, base_term), entries);
        }
        if let Some((batch_id, entries)) = view.persist_batch {
            self.trace.add(batch_id);
            for entry in entries {
                let hash = payload_hash(entry);
                self.trace.add(entry.index);
                self.trace.add(hash);
                match self.entry_hashes.get(&(entry.index, entry.term)) {
                    Some(known) if *known != hash => self.violation(format!(
                        "log matching: {node} wrote a different entry at index {} term {}",
                        entry.index, entry.term
                    )),
                    Some(_) => {}
                    None => {
                        self.entry_hashes.insert((entry.index, entry.term), hash);
                    }
                }
            }
        }
        for message in view.messages {
            self.stats.messages += 1;
            self.trace.add(message.to.0);
            self.trace.add(message.term);
            self.trace.add_bytes(message.body.kind().as_bytes());
            if let MessageBody::InstallSnapshot { .. } = message.body {
                self.stats.snapshot_messages += 1;
            }
        }
        if view.snapshot_installed.is_some() {
            self.stats.snapshots_installed += 1;
        }

        // Durability as this node reports it.
        let persisted = log.persisted();
        {
            let entry = self.nodes.entry(node).or_default();
            if persisted < entry.persisted.0 {
                entry.durable_terms.retain(|index, _| *index <= persisted);
            }
            let from = entry.persisted.0.min(persisted) + 1;
            for index in from.max(log.first_index())..=persisted {
                if let Some(term) = log.term(index) {
                    entry.durable_terms.insert(index, term);
                }
            }
            if persisted >= log.snapshot_index() {
                entry.durable_floor = entry.durable_floor.max(log.snapshot_index());
            }
            entry.persisted = (persisted, log.term(persisted).unwrap_or(0));
        }

        // Election safety, and leader completeness for each new leader.
        if raft.role() == Role::Leader {
            let term = raft.term();
            match self.leaders_by_term.get(&term) {
                Some(other) if *other != node => self.violation(format!(
                    "election safety: {other} and {node} are both leaders of term {term}"
                )),
                Some(_) => {}
                None => {
                    self.leaders_by_term.insert(term, node);
                    self.stats.leader_terms += 1;
                    // Entries committed in an earlier term (§5.4): a candidate of an old term
                    // can still win it with votes slow to arrive, after a newer leader
                    // committed, and need not hold what that one committed.
                    let missing = self
                        .committed
                        .iter()
                        .find(|(index, (committed_term, hash))| {
                            **index > log.snapshot_index()
                                && self.committed_in_term[*index] < term
                                && log.entry(**index).is_none_or(|e| {
                                    e.term != *committed_term || payload_hash(e) != *hash
                                })
                        })
                        .map(|(index, _)| *index);
                    if let Some(index) = missing {
                        self.violation(format!(
                            "leader completeness: {node}, leader of term {term}, lacks committed entry {index}"
                        ));
                    }
                }
            }
            if self.current_leader.is_none_or(|(_, leader_term)| term >= leader_term) {
                self.current_leader = Some((node, term));
            }
        } else if self.current_leader.is_some_and(|(id, _)| id == node) {
            self.current_leader = None;
        }

        // Commit: monotonic, consistent across nodes, durable on a majority when it happens.
        let commit = log.committed();
        let previous = self.nodes.get(&node).map_or(0, |v| v.commit);
        if commit < previous {
            self.violation(format!("{node}'s commit index went backwards: {previous} -> {commit}"));
        }
        for index in (previous + 1).max(log.first_index())..=commit {
            let Some(entry) = log.entry(index) else { continue };
            let record = (entry.term, payload_hash(entry));
            match self.committed.get(&index) {
                Some(known) if *known != record => {
                    self.violation(format!("{node} committed a different entry at index {index}"))
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, record);
                    self.committed_in_term.insert(index, raft.term());
                    self.stats.entries_committed += 1;
                    // The first node seen committing an index is its leader, which counts the
                    // commit under its newest configuration (appended, perhaps not committed).
                    let voters = &log.config().voters;
                    let holders = voters
                        .iter()
                        .filter(|id| {
                            self.nodes.get(id).is_some_and(|v| {
                                v.durable_floor >= index
                                    || v.durable_terms.get(&index) == Some(&entry.term)
                            })
                        })
                        .count();
                    if holders <= voters.len() / 2 {
                        let detail: Vec<String> = voters
                            .iter()
                            .map(|id| match self.nodes.get(id) {
                                Some(v) => format!(
                                    "{id}: persisted {:?}, snapshot floor {}, durable term at {index}: {:?}",
                                    v.persisted,
                                    v.durable_floor,
                                    v.durable_terms.get(&index)
                                ),
                                None => format!("{id}: never observed"),
                            })
                            .collect();
                        self.violation(format!(
                            "durability: entry {index} (term {}) committed by {node} while durable on only {holders} of {} voters ({})",
                            entry.term,
                            voters.len(),
                            detail.join("; ")
                        ));
                    }
                    if let EntryPayload::Config(next) = &entry.payload {
                        // No two disjoint majorities: committed configurations differ by at
                        // most one voter.
                        self.stats.config_changes += 1;
                        self.events.push((node, NodeEvent::ConfigCommitted));
                        let changed =
                            self.committed_voters.symmetric_difference(&next.voters).count();
                        if changed > 1 {
                            self.violation(format!(
                                "configuration at {index} changes {changed} voters at once"
                            ));
                        }
                        self.committed_voters = next.voters.clone();
                        self.committed_members = next.members();
                        self.ever_members.extend(next.members());
                    }
                }
            }
        }
        if let Some(view_entry) = self.nodes.get_mut(&node) {
            view_entry.commit = commit;
            // Committed entries were checked when they committed; only the tail matters now.
            let keep_from = commit.saturating_sub(1);
            view_entry.durable_terms.retain(|index, _| *index >= keep_from);
        }

        // State-machine safety.
        if let Some(meta) = view.snapshot_installed
            && let Some(entry) = self.nodes.get_mut(&node)
        {
            entry.applied = meta.last_index;
        }
        for entry in view.applied {
            let record = (entry.term, payload_hash(entry));
            self.trace.add(entry.index);
            match self.applied.get(&entry.index) {
                Some(known) if *known != record => self.violation(format!(
                    "state-machine safety: {node} applied a different entry at index {}",
                    entry.index
                )),
                Some(_) => {}
                None => {
                    self.applied.insert(entry.index, record);
                }
            }
        }
        // Same index, same state: compare the whole state machine whenever a node advances.
        let applied = view.kv.applied_index();
        let last_applied = self.nodes.get(&node).map_or(0, |v| v.applied);
        if applied > last_applied {
            let digest = view.kv.state_digest();
            match self.digests.get(&applied) {
                Some((other, known)) if *known != digest => self.violation(format!(
                    "state-machine safety: {node} and {other} reached different states at index {applied}"
                )),
                Some(_) => {}
                None => {
                    self.digests.insert(applied, (node, digest));
                }
            }
        }
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.applied = applied;
        }
    }
}

/// Whether a restarted node's state holds entry `index` of `term`: inside its snapshot, or in
/// its log. Term 0 stands for an entry reported durable (or acknowledged) once compacted from
/// memory, when its term was not at hand: the index alone is checked.
fn restored_holds(restored: &RestoredState, index: LogIndex, term: Term) -> bool {
    restored.snapshot.last_index >= index
        || restored
            .entries
            .iter()
            .any(|entry| entry.index == index && (entry.term == term || term == 0))
}
