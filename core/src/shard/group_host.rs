//! [`GroupHost`]: the replicas of many Raft groups on one node, driven as one. It is sans-IO
//! like the Raft core: the engine ticks it, steps it with the batches other nodes sent, and
//! carries out what [`GroupHost::ready`] returns.
//!
//! What hosting many groups needs beyond running many `Raft`s side by side:
//!
//! - **One batch per node pair.** Every message the groups send to one peer node leaves in
//!   one [`NodeBatch`] per `ready`, heartbeats coalesced (`node_batch.rs`), so the cost of a
//!   heartbeat interval between two nodes does not grow with the number of groups.
//! - **Quiescence.** A group with nothing to do stops ticking: its leader, once idle for
//!   `quiesce_after_idle_ticks`, sends a last heartbeat marked "quiesce" and stops; a caught-up
//!   follower that receives it stops too (see `raft/quiescence.rs` for what "idle" means and
//!   why a quiescent leader holds no lease). A quiescent group costs nothing per tick. It wakes
//!   on any input that may need it awake: a proposal, read or transfer ([`GroupHost::group_mut`]),
//!   any message other than heartbeats from its leader and their answers, output of its own
//!   that is more than a heartbeat answer, and any change in whether its members are heard from.
//! - **Node liveness instead of per-group timers.** Followers of a quiescent group run no
//!   election timer, so the host follows its peers as nodes (`peer_liveness.rs`): it sends
//!   each peer at least an empty batch every `ping_interval_ticks`, and wakes every group
//!   with a member that falls silent for `peer_timeout_ticks` (its followers then elect a new
//!   leader as usual), that is heard again (it may need catching up), or whose node restarted
//!   or dropped a replica without falling silent (its batches carry a [`Hosting`] version). A
//!   group whose leader node dies is thus led again after `peer_timeout_ticks` plus one to
//!   three election timeouts (woken followers refuse votes until their own timer, which stood
//!   still while they were quiescent, runs out, unless the candidate cleared its own leader).
//!   A group woken this way has its tick count caught up, so a membership change proposed
//!   right after may be refused as losing quorum until a heartbeat round is answered (the
//!   members look inactive): such refusals are retried.
//!
//! Everything iterates in shard and node order: the host is deterministic, as the simulator
//! requires.

use std::collections::{BTreeMap, BTreeSet};

use super::map::ShardId;
use super::node_batch::{Hosting, NodeBatch};
use super::peer_liveness::PeerLiveness;
use crate::raft::{EntryPayload, Message, MessageBody, NodeId, Raft, RaftConfig, Ready, Role};

/// The host's timing, in ticks of the groups' clock.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Each peer node gets at least an empty batch this often (the node-level heartbeat).
    pub ping_interval_ticks: u32,
    /// A peer silent for this long is down: groups with it as a member wake.
    pub peer_timeout_ticks: u32,
    /// A leader quiesces after its group has been idle for this many consecutive ticks.
    pub quiesce_after_idle_ticks: u32,
}

impl HostConfig {
    /// Timing matched to the groups' Raft configuration: a peer down after an election
    /// timeout of silence (what a follower would wait for its leader), pings four times per
    /// such timeout (or as often as heartbeats, if those are rarer), and quiescence after two
    /// heartbeat intervals of idleness (long enough for the last commit index to have reached
    /// every follower).
    ///
    /// Why not a ping per heartbeat interval: pings are what an idle node spends its CPU on
    /// (each one wakes the sender's and the receiver's engine), and four chances per timeout
    /// already let a ping or two be lost or late without a peer being taken for down. With the
    /// node's defaults (50 ms heartbeats, 500 ms election timeout) a peer gets 8 pings a
    /// second instead of 20.
    pub fn for_raft(raft: &RaftConfig) -> HostConfig {
        HostConfig {
            ping_interval_ticks: raft.heartbeat_interval_ticks.max(raft.election_timeout_ticks / 4),
            peer_timeout_ticks: raft.election_timeout_ticks,
            quiesce_after_idle_ticks: 2 * raft.heartbeat_interval_ticks,
        }
    }
}

/// What the host has done, since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// Ticks given to groups (a quiescent group gets none).
    pub group_ticks: u64,
    pub quiesced: u64,
    pub woken: u64,
    pub batches_sent: u64,
    /// Group messages in those batches, heartbeats included.
    pub group_messages_sent: u64,
    /// Messages for a group this node does not host (dropped).
    pub unknown_group_messages: u64,
}

/// What the engine must carry out after the host's inputs.
#[derive(Debug, Default)]
pub struct HostReady {
    /// Each group's `Ready`, without its messages (they are in `batches`; a copy stays with a
    /// probe attached, `GroupHost::copy_messages_for_probe`). The engine handles
    /// each as it handles a single group's, reporting through
    /// [`GroupHost::group_mut_without_waking`].
    pub groups: Vec<(ShardId, Ready)>,
    /// One batch per peer node with something to send (or a ping due).
    pub batches: Vec<NodeBatch>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Activity {
    Awake {
        idle_ticks: u32,
    },
    /// Not ticked since host tick `since_tick` (the last tick it got).
    Quiescent {
        since_tick: u64,
    },
}

struct HostedGroup {
    raft: Raft,
    activity: Activity,
}

pub struct GroupHost {
    id: NodeId,
    config: HostConfig,
    /// Ticks since the host started.
    tick: u64,
    groups: BTreeMap<ShardId, HostedGroup>,
    /// The groups that tick.
    awake: BTreeSet<ShardId>,
    /// Groups given any input since the last `ready`: only they can have something ready.
    touched: BTreeSet<ShardId>,
    liveness: PeerLiveness,
    /// What this node hosts, announced in every batch.
    hosting: Hosting,
    outbox: BTreeMap<NodeId, NodeBatch>,
    counters: HostCounters,
    /// Whether each group's `Ready` keeps a copy of the messages it sent (batched all the
    /// same), for an engine probe to check them (the simulator's observer).
    copy_messages: bool,
}

impl GroupHost {
    /// A host for node `id`; `incarnation` must differ at every start of the node (the
    /// engine takes it from its random source): peers learn from it that the node restarted.
    pub fn new(id: NodeId, config: HostConfig, incarnation: u64) -> GroupHost {
        assert!(!id.is_none(), "node id 0 is reserved");
        assert!(
            config.ping_interval_ticks > 0
                && config.quiesce_after_idle_ticks > 0
                && config.peer_timeout_ticks > config.ping_interval_ticks,
            "a peer must get several pings within its timeout: {config:?}"
        );
        GroupHost {
            id,
            config,
            tick: 0,
            groups: BTreeMap::new(),
            awake: BTreeSet::new(),
            touched: BTreeSet::new(),
            liveness: PeerLiveness::new(config.peer_timeout_ticks),
            hosting: Hosting { incarnation, groups_removed: 0 },
            outbox: BTreeMap::new(),
            counters: HostCounters::default(),
            copy_messages: false,
        }
    }

    /// From now on each group's `Ready` from [`GroupHost::ready`] keeps a copy of the messages
    /// it sent in `messages` (which the engine must not send again), and a group whose Ready
    /// held only messages is listed too: a probe sees every acknowledgement and vote a group
    /// sends, as it does on a single group's node.
    pub fn copy_messages_for_probe(&mut self) {
        self.copy_messages = true;
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Starts hosting `shard`'s replica `raft` (awake).
    pub fn add_group(&mut self, shard: ShardId, raft: Raft) {
        assert_eq!(raft.id(), self.id, "a group's replica on this node has this node's id");
        let activity = Activity::Awake { idle_ticks: 0 };
        let previous = self.groups.insert(shard, HostedGroup { raft, activity });
        assert!(previous.is_none(), "{shard} is already hosted here");
        self.awake.insert(shard);
        self.touched.insert(shard);
        self.refresh_peers();
    }

    /// Stops hosting `shard`; returns its replica.
    pub fn remove_group(&mut self, shard: ShardId) -> Option<Raft> {
        let group = self.groups.remove(&shard)?;
        self.awake.remove(&shard);
        self.touched.remove(&shard);
        self.hosting.groups_removed += 1;
        self.refresh_peers();
        Some(group.raft)
    }

    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.groups.keys().copied()
    }

    pub fn group(&self, shard: ShardId) -> Option<&Raft> {
        self.groups.get(&shard).map(|group| &group.raft)
    }

    /// A group to give work to (a proposal, a read, a transfer): it wakes.
    pub fn group_mut(&mut self, shard: ShardId) -> Option<&mut Raft> {
        self.wake(shard);
        self.group_mut_without_waking(shard)
    }

    /// A group to report to (persisted, applied, compacted, a snapshot's outcome), which gives
    /// it no new work and must not wake it.
    pub fn group_mut_without_waking(&mut self, shard: ShardId) -> Option<&mut Raft> {
        let group = self.groups.get_mut(&shard)?;
        self.touched.insert(shard);
        Some(&mut group.raft)
    }

    /// The groups that tick (not quiescent), in shard order.
    pub fn awake_shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.awake.iter().copied()
    }

    /// Takes in one group message that came outside a batch (a snapshot, which the transport
    /// streams on its own).
    pub fn step_group_message(&mut self, shard: ShardId, message: Message) {
        if message.to != self.id {
            self.counters.unknown_group_messages += 1;
            return;
        }
        match self.group_mut(shard) {
            Some(raft) => raft.step(message),
            None => self.counters.unknown_group_messages += 1,
        }
    }

    /// Whether the next `ready` has anything: a group given input, or a batch to send.
    pub fn has_ready(&self) -> bool {
        !self.touched.is_empty() || !self.outbox.is_empty()
    }

    pub fn is_quiescent(&self, shard: ShardId) -> bool {
        self.groups
            .get(&shard)
            .is_some_and(|group| matches!(group.activity, Activity::Quiescent { .. }))
    }

    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Whether this node currently hears from `peer`.
    pub fn is_live(&self, peer: NodeId) -> bool {
        peer == self.id || self.liveness.is_live(peer)
    }

    /// How many of the coming ticks, from the next one on, do nothing but count the peers'
    /// silence, so that they may be taken late and together: every group quiescent, nothing
    /// ready, and no ping or peer timeout due at them. The tick after them is due on time.
    /// 0 whenever any group is awake.
    pub fn quiet_ticks_ahead(&self) -> u32 {
        if !self.awake.is_empty() || self.has_ready() {
            return 0;
        }
        let ping_interval = u64::from(self.config.ping_interval_ticks);
        let until_ping = ping_interval - self.tick % ping_interval;
        let until_timeout = self.liveness.ticks_until_a_timeout().map_or(u64::MAX, u64::from);
        // `until_*` count from the next tick (1): the eventful tick itself is not quiet.
        let quiet = until_ping.min(until_timeout) - 1;
        u32::try_from(quiet).expect("below the ping interval")
    }

    /// One tick: idle leaders quiesce, awake groups tick, peers are pinged when due, and
    /// groups with a member that has just fallen silent wake.
    pub fn tick(&mut self) {
        self.tick += 1;
        let fell_silent = self.liveness.tick();
        let awake: Vec<ShardId> = self.awake.iter().copied().collect();
        for shard in awake {
            if self.quiesce_if_idle(shard) {
                continue;
            }
            let group = self.groups.get_mut(&shard).expect("awake groups are hosted");
            group.raft.tick();
            self.counters.group_ticks += 1;
            self.touched.insert(shard);
        }
        // After the ticking: a group woken now counts this tick among those it missed.
        for peer in fell_silent {
            self.wake_groups_with(peer);
        }
        if self.tick.is_multiple_of(u64::from(self.config.ping_interval_ticks)) {
            let peers: Vec<NodeId> = self.liveness.peers().collect();
            for peer in peers {
                let (id, hosting) = (self.id, self.hosting);
                self.outbox.entry(peer).or_insert_with(|| NodeBatch::new(id, peer, hosting));
            }
        }
    }

    /// Takes in a batch another node sent.
    pub fn step(&mut self, batch: NodeBatch) {
        if batch.to != self.id || batch.from == self.id {
            self.counters.unknown_group_messages += batch.group_message_count() as u64;
            return;
        }
        let (from, to) = (batch.from, batch.to);
        if self.liveness.heard(from, batch.hosting) {
            self.wake_groups_with(from);
        }
        for heartbeat in batch.heartbeats {
            if !self.groups.contains_key(&heartbeat.shard) {
                self.counters.unknown_group_messages += 1;
                continue;
            }
            if !heartbeat.quiesce {
                self.wake(heartbeat.shard);
            }
            let group = self.groups.get_mut(&heartbeat.shard).expect("checked above");
            group.raft.step(heartbeat.message(from, to));
            self.touched.insert(heartbeat.shard);
            if heartbeat.quiesce {
                if group.raft.can_quiesce_as_follower(from) {
                    self.quiesce_follower(heartbeat.shard);
                } else {
                    self.wake(heartbeat.shard);
                }
            }
        }
        for answer in batch.heartbeat_responses {
            // An answer to a heartbeat needs no ticking; if it shows the follower behind, the
            // leader's output wakes it (see `ready`).
            match self.group_mut_without_waking(answer.shard) {
                Some(raft) => raft.step(answer.message(from, to)),
                None => self.counters.unknown_group_messages += 1,
            }
        }
        for message in batch.messages {
            match self.group_mut(message.shard) {
                Some(raft) => raft.step(message.message),
                None => self.counters.unknown_group_messages += 1,
            }
        }
    }

    /// Everything the groups given input since the last call have ready, and the batches to
    /// send.
    pub fn ready(&mut self) -> HostReady {
        let mut groups = Vec::new();
        let mut members_may_have_changed = false;
        for shard in std::mem::take(&mut self.touched) {
            let Some(group) = self.groups.get_mut(&shard) else { continue };
            if !group.raft.has_ready() {
                continue;
            }
            let mut ready = group.raft.ready();
            let messages = std::mem::take(&mut ready.messages);
            if matches!(group.activity, Activity::Quiescent { .. })
                && needs_awake(&ready, &messages)
            {
                self.wake(shard);
            }
            members_may_have_changed |= ready.snapshot_to_apply.is_some()
                || ready
                    .committed_entries
                    .iter()
                    .any(|entry| matches!(entry.payload, EntryPayload::Config(_)));
            let had_messages = !messages.is_empty();
            if self.copy_messages {
                ready.messages = messages.clone();
            }
            for message in messages {
                self.send(shard, message, false);
            }
            if !ready.is_empty() || (self.copy_messages && had_messages) {
                groups.push((shard, ready));
            }
        }
        if members_may_have_changed {
            self.refresh_peers();
        }
        let batches: Vec<NodeBatch> = std::mem::take(&mut self.outbox).into_values().collect();
        self.counters.batches_sent += batches.len() as u64;
        self.counters.group_messages_sent +=
            batches.iter().map(|batch| batch.group_message_count() as u64).sum::<u64>();
        HostReady { groups, batches }
    }

    fn send(&mut self, shard: ShardId, message: Message, quiesce: bool) {
        let (to, id, hosting) = (message.to, self.id, self.hosting);
        self.outbox
            .entry(to)
            .or_insert_with(|| NodeBatch::new(id, to, hosting))
            .push(shard, message, quiesce);
    }

    /// Quiesces `shard` if it is a leader that has been idle long enough; true if it did.
    fn quiesce_if_idle(&mut self, shard: ShardId) -> bool {
        let liveness = &self.liveness;
        let id = self.id;
        let group = self.groups.get_mut(&shard).expect("awake groups are hosted");
        let Activity::Awake { idle_ticks } = &mut group.activity else {
            unreachable!("only awake groups are checked")
        };
        let is_live = |peer: NodeId| peer == id || liveness.is_live(peer);
        if group.raft.role() != Role::Leader || !group.raft.can_quiesce(is_live) {
            *idle_ticks = 0;
            return false;
        }
        *idle_ticks += 1;
        if *idle_ticks < self.config.quiesce_after_idle_ticks {
            return false;
        }
        let last_heartbeats = group.raft.quiesce();
        // It stops before this tick reaches it: its last tick was the previous one.
        group.activity = Activity::Quiescent { since_tick: self.tick - 1 };
        self.awake.remove(&shard);
        self.counters.quiesced += 1;
        for heartbeat in last_heartbeats {
            self.send(shard, heartbeat, true);
        }
        true
    }

    fn quiesce_follower(&mut self, shard: ShardId) {
        let group = self.groups.get_mut(&shard).expect("the caller checked");
        if let Activity::Awake { .. } = group.activity {
            group.activity = Activity::Quiescent { since_tick: self.tick };
            self.awake.remove(&shard);
            self.counters.quiesced += 1;
        }
    }

    fn wake(&mut self, shard: ShardId) {
        let Some(group) = self.groups.get_mut(&shard) else { return };
        if let Activity::Quiescent { since_tick } = group.activity {
            group.raft.resume_after(self.tick - since_tick);
            group.activity = Activity::Awake { idle_ticks: 0 };
            self.awake.insert(shard);
            self.touched.insert(shard);
            self.counters.woken += 1;
        }
    }

    /// Wakes every group that has `peer` as a member or as its leader.
    fn wake_groups_with(&mut self, peer: NodeId) {
        let shards: Vec<ShardId> = self
            .groups
            .iter()
            .filter(|(_, group)| {
                group.raft.leader() == peer || group.raft.log().config().contains(peer)
            })
            .map(|(shard, _)| *shard)
            .collect();
        for shard in shards {
            self.wake(shard);
        }
    }

    /// The peers to follow: every other member of every hosted group.
    fn refresh_peers(&mut self) {
        let mut peers = BTreeSet::new();
        for group in self.groups.values() {
            peers.extend(group.raft.log().config().members());
        }
        peers.remove(&self.id);
        self.liveness.set_peers(peers);
    }
}

/// Whether a quiescent group's output needs it awake: anything but answers to heartbeats and
/// the commit index they brought (a follower's hard state).
fn needs_awake(ready: &Ready, messages: &[Message]) -> bool {
    let persists_more_than_commit = ready
        .persist
        .as_ref()
        .is_some_and(|batch| !batch.entries.is_empty() || batch.snapshot.is_some());
    let sends_more_than_answers = messages
        .iter()
        .any(|message| !matches!(message.body, MessageBody::HeartbeatResponse { .. }));
    persists_more_than_commit
        || sends_more_than_answers
        || ready.soft_state.is_some()
        || !ready.reads.is_empty()
        || !ready.failed_reads.is_empty()
        || !ready.snapshot_requests.is_empty()
}
