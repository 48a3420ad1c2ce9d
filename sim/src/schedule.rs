//! What a run is: the cluster, the workload, the knobs drawn per seed (swarm testing: some
//! seeds are calm, some are storms) and an explicit, timed list of faults. Everything is drawn
//! from the seed, but once drawn the schedule is plain data — so a failing run can be shrunk
//! (faults dropped, the run shortened, clients removed), saved as JSON and replayed.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::at_rest_damage::AtRestDamage;

/// A fault family. Each run reports which ones fired.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultFamily {
    Partition,
    Crash,
    Clock,
    Latency,
    Disk,
    /// Operator actions: membership changes and leadership transfers.
    Membership,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Node(u64),
    /// Whoever leads when the fault fires.
    Leader,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionKind {
    /// `side` against everyone else.
    Split { side: Vec<u64> },
    /// The current leader against everyone else.
    IsolateLeader,
    /// Messages from `from` to `to` are dropped; the other direction works.
    OneWay { from: Vec<u64>, to: Vec<u64> },
    /// `left` and `right` cannot talk; `bridge` talks to both.
    Bridge { bridge: u64, left: Vec<u64>, right: Vec<u64> },
    /// The clients cannot reach the current leader (nor it them); the nodes still can: the
    /// reverse of `IsolateLeader`, whose leader is cut from its peers but not its clients.
    LeaderFromClients,
}

/// Something a node does that a crash can be timed on (see `Fault::CrashOnEvent`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeEvent {
    /// It sent a granted vote.
    VoteGranted,
    /// It installed a snapshot received from the leader.
    SnapshotInstalled,
    /// It took a snapshot of its own and compacted its log.
    SnapshotTaken,
    /// As leader, it committed a configuration change.
    ConfigCommitted,
}

impl NodeEvent {
    pub const ALL: [NodeEvent; 4] = [
        NodeEvent::VoteGranted,
        NodeEvent::SnapshotInstalled,
        NodeEvent::SnapshotTaken,
        NodeEvent::ConfigCommitted,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            NodeEvent::VoteGranted => "grants a vote",
            NodeEvent::SnapshotInstalled => "installs a snapshot from the leader",
            NodeEvent::SnapshotTaken => "takes a snapshot",
            NodeEvent::ConfigCommitted => "commits a configuration change",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFaultKind {
    /// I/O calls fail with EIO with this probability (per mille).
    Eio { permille: u32 },
    /// The disk is full: writes fail with ENOSPC.
    NoSpace,
    /// Reads return corrupted bytes with this probability (per mille).
    CorruptReads { permille: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    Partition {
        kind: PartitionKind,
        duration_ms: u64,
    },
    /// Kill the node (unsynced writes are lost, possibly torn), restart it after `down_ms`.
    Crash {
        target: Target,
        down_ms: u64,
    },
    /// The node's clock runs fast (+) or slow (−) by `drift_ppm` for a while.
    ClockDrift {
        node: u64,
        drift_ppm: i64,
        duration_ms: u64,
    },
    /// The node's wall clock steps by `delta_ms`.
    ClockJump {
        node: u64,
        delta_ms: i64,
    },
    /// Every message takes up to `max_latency_ms` for a while.
    LatencySpike {
        max_latency_ms: u64,
        duration_ms: u64,
    },
    Disk {
        node: u64,
        kind: DiskFaultKind,
        duration_ms: u64,
    },
    /// Every disk of `nodes` (one node, or a majority) is full for whole seconds: those nodes
    /// refuse client writes and keep serving; nothing acknowledged may be lost and nothing
    /// refused may ever apply.
    DiskFull {
        nodes: Vec<u64>,
        duration_ms: u64,
    },
    /// Crash `node` and restart it after `down_ms` with its newest synced log records (at most
    /// `records`) gone — only entries a majority of the other voters hold durably, so Raft
    /// stays safe (see `lost_tail.rs`). The leader must catch up the shortened log.
    CrashLosingTail {
        node: u64,
        down_ms: u64,
        records: u32,
    },
    /// Kill the node and damage data it had synced (`at_rest_damage.rs`) before it restarts
    /// after `down_ms`. Only one node of a run is ever damaged this way.
    DamageAtRest {
        node: u64,
        damage: AtRestDamage,
        down_ms: u64,
    },
    /// Arms a trap: the next leader to be elected after this point is crashed `delay_ms` after
    /// its election (mid-replication, before its first entries reach everyone), and restarted
    /// after `down_ms`. Young leaders dying is where Raft's subtle cases live (figure 8).
    CrashNewLeader {
        delay_ms: u64,
        down_ms: u64,
    },
    /// Arms a trap: the next node that does `event` is crashed `delay_ms` after it (a few
    /// milliseconds: inside the window the event opens), and restarted after `down_ms`.
    CrashOnEvent {
        event: NodeEvent,
        delay_ms: u64,
        down_ms: u64,
    },
    /// Whoever leads when this fires gets a drifting clock: the node whose lease matters.
    LeaderClockDrift {
        drift_ppm: i64,
        duration_ms: u64,
    },
    /// Operator: add `node` as a learner, then promote it once it has caught up.
    Grow {
        node: u64,
    },
    /// Operator: remove a voter (the leader included), never below three voters.
    Shrink {
        target: Target,
    },
    /// Operator: grow `new`, then remove `old` — replacing a machine.
    Replace {
        old: Target,
        new: u64,
    },
    /// Operator: hand leadership to `to`.
    TransferLeadership {
        to: u64,
    },
    /// Operator: hand leadership to `to`, but the link between the leader and `to` holds
    /// every message (the TimeoutNow included) for `hold_ms`, a little longer than an
    /// election timeout, so the leader gives the transfer up before `to` acts on it. Shortly
    /// before the hold ends, the old leader is cut from its peers for `isolate_ms` (its clients
    /// still reach it, and it can still reach `to`): `to` wins with the late TimeoutNow while
    /// the old leader learns nothing of it, and must not lease meanwhile (see
    /// `Raft::send_timeout_now`).
    SlowTransfer {
        to: u64,
        hold_ms: u64,
        isolate_ms: u64,
    },
    /// Aimed at what a restart forgets. The clients only read from now on (a read-mostly
    /// stretch: followers' logs level out). `settle_ms` later, the leader is cut (both ways,
    /// for `cut_ms`) from the voters that could elect a rival, so that its lease rests on the
    /// rest, its backers (a bare quorum with it; `pick` rotates which). `crash_after_ms` later
    /// as many backers as the rivals need for a quorum (one, or two with an even number of
    /// voters) are crashed and restarted after `down_ms`, and for the rest of the cut they do
    /// not hear the leader: they come back inside the lease they backed while the cut-off
    /// voters campaign, and must not hand them the election while the old leader still
    /// leases (see `Raft::accept_higher_term`). Writes resume when the cut ends.
    BounceLeaseBacker {
        pick: u64,
        settle_ms: u64,
        cut_ms: u64,
        crash_after_ms: u64,
        down_ms: u64,
    },
}

impl Fault {
    pub fn family(&self) -> FaultFamily {
        match self {
            Fault::Partition { .. } => FaultFamily::Partition,
            Fault::Crash { .. }
            | Fault::CrashNewLeader { .. }
            | Fault::CrashOnEvent { .. }
            | Fault::BounceLeaseBacker { .. } => FaultFamily::Crash,
            Fault::ClockDrift { .. } | Fault::ClockJump { .. } | Fault::LeaderClockDrift { .. } => {
                FaultFamily::Clock
            }
            Fault::LatencySpike { .. } => FaultFamily::Latency,
            Fault::Disk { .. }
            | Fault::DiskFull { .. }
            | Fault::CrashLosingTail { .. }
            | Fault::DamageAtRest { .. } => FaultFamily::Disk,
            Fault::Grow { .. }
            | Fault::Shrink { .. }
            | Fault::Replace { .. }
            | Fault::TransferLeadership { .. }
            | Fault::SlowTransfer { .. } => FaultFamily::Membership,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedFault {
    pub at_ms: u64,
    pub fault: Fault,
}

/// Whether clock drift stays within what lease reads assume.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClockMode {
    WithinBound,
    /// Drift beyond the lease's assumption: lease reads may return stale data, and a run that
    /// shows it is reported as such (never hidden, never counted as a pass of the bound).
    ExceedsBound,
}

/// Knobs drawn per seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swarm {
    pub min_latency_ms: u64,
    pub max_latency_ms: u64,
    pub client_think_max_ms: u64,
    pub client_timeout_ms: u64,
    /// Percentages of the operation mix; the rest are puts.
    pub read_percent: u32,
    pub delete_percent: u32,
    pub cas_percent: u32,
    pub create_percent: u32,
    pub txn_percent: u32,
    pub lease_reads: bool,
    pub clock_mode: ClockMode,
    /// The drift bound the lease assumes, in ppm.
    pub lease_drift_bound_ppm: u32,
    pub max_entries_per_message: usize,
    pub max_inflight_messages: usize,
    pub snapshot_every_entries: u64,
    pub retained_log_entries: u64,
    pub tick_ms: u64,
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Writes survive a crash only in whole blocks of this size (torn writes).
    pub torn_write_block_bytes: u64,
    pub disk_sync_ms: u64,
    pub families: Vec<FaultFamily>,
    /// Snapshots travel between nodes in chunks of this size: small chunks make most snapshot
    /// installs multi-chunk transfers that partitions and crashes interrupt and resume.
    #[serde(default = "default_snapshot_chunk_bytes")]
    pub snapshot_chunk_bytes: usize,
}

fn default_snapshot_chunk_bytes() -> usize {
    1024
}

/// A planted bug to switch on (simulator builds only; see `conclave-core`'s `planted-bugs`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PlantedBug {
    DoubleVote,
    CommitOldTermByCounting,
    AckBeforeSync,
    VoteBeforeSync,
    StaleLeaderRead,
    KeepConflictingSuffix,
    IgnoreShortenedLog,
    TruncateAtDamage,
    HardStateFileOnly,
    WatchResumeRepeats,
    StaleRangeLosesMore,
    ApplyByLocalClock,
    LeaseSurvivesTimeoutNow,
    RestartedNodeVotesAtOnce,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 14] = [
        PlantedBug::DoubleVote,
        PlantedBug::CommitOldTermByCounting,
        PlantedBug::AckBeforeSync,
        PlantedBug::VoteBeforeSync,
        PlantedBug::StaleLeaderRead,
        PlantedBug::KeepConflictingSuffix,
        PlantedBug::IgnoreShortenedLog,
        PlantedBug::TruncateAtDamage,
        PlantedBug::HardStateFileOnly,
        PlantedBug::WatchResumeRepeats,
        PlantedBug::StaleRangeLosesMore,
        PlantedBug::ApplyByLocalClock,
        PlantedBug::LeaseSurvivesTimeoutNow,
        PlantedBug::RestartedNodeVotesAtOnce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::DoubleVote => "double-vote",
            PlantedBug::CommitOldTermByCounting => "commit-old-term-by-counting",
            PlantedBug::AckBeforeSync => "ack-before-sync",
            PlantedBug::VoteBeforeSync => "vote-before-sync",
            PlantedBug::StaleLeaderRead => "stale-leader-read",
            PlantedBug::KeepConflictingSuffix => "keep-conflicting-suffix",
            PlantedBug::IgnoreShortenedLog => "ignore-shortened-log",
            PlantedBug::TruncateAtDamage => "truncate-at-damage",
            PlantedBug::HardStateFileOnly => "hard-state-file-only",
            PlantedBug::WatchResumeRepeats => "watch-resume-repeats",
            PlantedBug::StaleRangeLosesMore => "stale-range-loses-more",
            PlantedBug::ApplyByLocalClock => "apply-by-local-clock",
            PlantedBug::LeaseSurvivesTimeoutNow => "lease-survives-timeout-now",
            PlantedBug::RestartedNodeVotesAtOnce => "restarted-node-votes-at-once",
        }
    }

    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    pub seed: u64,
    /// Voters at the start.
    pub nodes: u64,
    /// Hosts that run from the start but join only when the nemesis adds them.
    pub spares: u64,
    pub clients: u64,
    pub keys: u64,
    /// Faults happen during this phase; then everything heals.
    pub fault_phase_ms: u64,
    /// After healing, a leader and `liveness_ops` new operations must appear within this.
    pub liveness_timeout_ms: u64,
    pub liveness_ops: u64,
    /// `None`: clients keep going until the run ends.
    pub ops_per_client: Option<u64>,
    pub swarm: Swarm,
    pub schedule: Vec<TimedFault>,
    pub planted_bug: Option<PlantedBug>,
    /// Raft groups (1: today's single-group cluster). Above 1 the world is sharded: shard 0
    /// is the meta group, and every shard's replicas are placed on the nodes by the same
    /// bootstrap map `conclave serve --shards` computes ([`RunConfig::shard_map`]).
    #[serde(default = "one_shard")]
    pub shards: u64,
}

fn one_shard() -> u64 {
    1
}

/// Slots of a sharded simulated world: few, so that the slot table stays small, but many
/// more than the 16 shards at most.
pub const SIM_SLOTS: u64 = 256;
/// Replicas of each data shard in a sharded simulated world (the meta group has up to five).
pub const SIM_REPLICATION: usize = 3;

/// Which kind of world to draw.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrawProfile {
    /// Every fault family, each on or off per seed, calm seeds and storms.
    #[default]
    Standard,
    /// The hard cases of the Raft paper (figure 8, deposed leaders): the leader is crashed or
    /// isolated every few hundred milliseconds and comes back quickly, and each AppendEntries
    /// carries one entry so a new leader's no-op travels apart from older entries.
    LeaderChurn,
    /// Sharded worlds: 4 to 7 nodes, 2 to 16 Raft groups of 3 replicas (the meta group on up
    /// to 5) placed by rendezvous hashing, so that each node hosts some groups, all of them in
    /// one engine over one shared log. Every fault of the standard draw but membership changes
    /// (leadership transfers of the meta group stay): sharded nodes refuse them. Lost synced
    /// tails and damage at rest hit the shared log and the groups' files, each group losing
    /// only what its own peers hold.
    Sharded,
}

impl DrawProfile {
    pub fn name(self) -> &'static str {
        match self {
            DrawProfile::Standard => "standard",
            DrawProfile::LeaderChurn => "leader-churn",
            DrawProfile::Sharded => "sharded",
        }
    }

    pub fn from_name(name: &str) -> Option<DrawProfile> {
        [DrawProfile::Standard, DrawProfile::LeaderChurn, DrawProfile::Sharded]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// Defaults a campaign or a test can override before drawing.
#[derive(Clone, Debug)]
pub struct DrawOptions {
    pub fault_phase_ms: u64,
    pub planted_bug: Option<PlantedBug>,
    pub profile: DrawProfile,
}

impl Default for DrawOptions {
    fn default() -> Self {
        DrawOptions { fault_phase_ms: 20_000, planted_bug: None, profile: DrawProfile::Standard }
    }
}

fn pick_nodes(rng: &mut ChaCha8Rng, nodes: u64, count: u64) -> Vec<u64> {
    let mut all: Vec<u64> = (1..=nodes).collect();
    let mut chosen = Vec::new();
    for _ in 0..count.min(nodes) {
        let at = rng.random_range(0..all.len());
        chosen.push(all.remove(at));
    }
    chosen.sort_unstable();
    chosen
}

impl RunConfig {
    /// Draws a whole run from `seed`.
    pub fn draw(seed: u64, options: &DrawOptions) -> RunConfig {
        match options.profile {
            DrawProfile::Standard => Self::draw_standard(seed, options),
            DrawProfile::LeaderChurn => Self::draw_leader_churn(seed, options),
            DrawProfile::Sharded => Self::draw_sharded(seed, options),
        }
    }

    /// The map a sharded world is created with (`None` for a single group): the one a
    /// `conclave serve --shards` cluster of these nodes would compute.
    pub fn shard_map(&self) -> Option<std::sync::Arc<conclave_core::shard::ShardMap>> {
        use conclave_core::raft::NodeId;
        use conclave_core::shard::{ShardMap, SlotCount};
        if self.shards <= 1 {
            return None;
        }
        let slots = SlotCount::new(SIM_SLOTS).expect("a valid slot count");
        let members: Vec<NodeId> = (1..=self.nodes).map(NodeId).collect();
        let map = ShardMap::bootstrap(slots, self.shards, &members, SIM_REPLICATION)
            .expect("a sharded world's map is valid");
        Some(std::sync::Arc::new(map))
    }

    fn draw_sharded(seed: u64, options: &DrawOptions) -> RunConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a4d_ed00_0000_0000);
        let nodes = rng.random_range(4..=7);
        let mut config = Self::draw_world(seed, options, nodes);
        config.shards = rng.random_range(2..=16);
        // More keys than a single group's worlds: they spread over the shards, and each pair
        // shares a hash tag (`workload.rs`) so that transactions stay within a shard.
        config.keys = rng.random_range(4..=12);
        // Of the operator's actions, the leadership transfers (of the meta group) stay: a
        // sharded node refuses membership changes, so the worlds have no spares either.
        config.spares = 0;
        config.schedule.retain(|timed| match timed.fault {
            Fault::BounceLeaseBacker { .. }
            | Fault::Grow { .. }
            | Fault::Shrink { .. }
            | Fault::Replace { .. } => false,
            Fault::TransferLeadership { to } | Fault::SlowTransfer { to, .. } => to <= nodes,
            _ => true,
        });
        config
    }

    fn draw_leader_churn(seed: u64, options: &DrawOptions) -> RunConfig {
        let mut config = Self::draw_standard(seed, options);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1ead_e4c4_0000_0000);
        let swarm = &mut config.swarm;
        swarm.families = vec![FaultFamily::Crash, FaultFamily::Partition];
        swarm.max_entries_per_message = 1;
        swarm.max_inflight_messages = rng.random_range(1..=4);
        swarm.client_think_max_ms = rng.random_range(0..=5);
        swarm.clock_mode = ClockMode::WithinBound;
        swarm.lease_reads = false;
        config.clients = rng.random_range(4..=8);
        config.keys = rng.random_range(1..=3);
        let mut schedule = Vec::new();
        let mut at_ms = rng.random_range(200..=600);
        while at_ms < options.fault_phase_ms.saturating_sub(200) {
            let fault = match rng.random_range(0..10) {
                0..=3 => Fault::CrashNewLeader {
                    delay_ms: rng.random_range(0..=20),
                    down_ms: rng.random_range(5..=400),
                },
                4..=6 => {
                    Fault::Crash { target: Target::Leader, down_ms: rng.random_range(5..=300) }
                }
                _ => Fault::Partition {
                    kind: PartitionKind::IsolateLeader,
                    duration_ms: rng.random_range(100..=1_500),
                },
            };
            schedule.push(TimedFault { at_ms, fault });
            at_ms += rng.random_range(150..=700);
        }
        config.schedule = schedule;
        config
    }

    fn draw_standard(seed: u64, options: &DrawOptions) -> RunConfig {
        Self::draw_world(seed, options, 0)
    }

    /// The standard draw, with `nodes` voters if not 0 (else 3 or 5 drawn).
    fn draw_world(seed: u64, options: &DrawOptions, nodes: u64) -> RunConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let drawn_nodes = if rng.random_bool(0.7) { 3 } else { 5 };
        let nodes = if nodes == 0 { drawn_nodes } else { nodes };
        let calm = rng.random_bool(0.1);
        let all_families = [
            FaultFamily::Partition,
            FaultFamily::Crash,
            FaultFamily::Clock,
            FaultFamily::Latency,
            FaultFamily::Disk,
            FaultFamily::Membership,
        ];
        let mut families: Vec<FaultFamily> =
            all_families.into_iter().filter(|_| !calm && rng.random_bool(0.6)).collect();
        if !calm && families.is_empty() {
            families.push(all_families[rng.random_range(0..all_families.len())]);
        }
        let lease_reads = rng.random_bool(0.3);
        let clock_mode =
            if lease_reads && families.contains(&FaultFamily::Clock) && rng.random_bool(0.25) {
                ClockMode::ExceedsBound
            } else {
                ClockMode::WithinBound
            };
        let min_latency_ms = rng.random_range(0..=2);
        let swarm = Swarm {
            min_latency_ms,
            max_latency_ms: min_latency_ms + rng.random_range(1..=10),
            client_think_max_ms: rng.random_range(0..=40),
            client_timeout_ms: rng.random_range(300..=1_500),
            read_percent: rng.random_range(20..=50),
            delete_percent: rng.random_range(0..=10),
            cas_percent: rng.random_range(5..=25),
            create_percent: rng.random_range(0..=10),
            txn_percent: rng.random_range(0..=10),
            lease_reads,
            clock_mode,
            lease_drift_bound_ppm: 50_000,
            max_entries_per_message: [1, 4, 64, 1024][rng.random_range(0..4)],
            max_inflight_messages: [1, 4, 64][rng.random_range(0..3)],
            snapshot_every_entries: [50, 200, 100_000][rng.random_range(0..3)],
            retained_log_entries: [0, 10, 100][rng.random_range(0..3)],
            tick_ms: 10,
            election_timeout_ticks: rng.random_range(15..=30),
            heartbeat_interval_ticks: rng.random_range(2..=5),
            torn_write_block_bytes: [512, 4096][rng.random_range(0..2)],
            disk_sync_ms: rng.random_range(0..=3),
            families: families.clone(),
            // Not drawn from `rng`: adding it must not change the rest of every seed's draw.
            snapshot_chunk_bytes: [24, 64, 256, 1 << 20]
                [(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 62) as usize],
        };
        let fault_phase_ms = options.fault_phase_ms;
        let spares =
            if families.contains(&FaultFamily::Membership) { rng.random_range(1..=2) } else { 0 };
        let mut schedule = draw_schedule(&mut rng, nodes, spares, &swarm, fault_phase_ms);
        if families.contains(&FaultFamily::Disk) {
            // From a generator of their own: adding them left every other draw of a seed as it
            // was.
            let mut storage_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0d15_c0f5_0000_0000);
            schedule.extend(draw_storage_faults(&mut storage_rng, nodes, fault_phase_ms));
        }
        if families.contains(&FaultFamily::Disk) {
            let mut damage_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xda3a_9e00_0000_0000);
            let damage = draw_damage_at_rest(&mut damage_rng, nodes, fault_phase_ms);
            // The damaged node never also loses a synced tail: each of those faults may only
            // take what the rest of the cluster holds, and the two together could take more.
            if let Some(TimedFault { fault: Fault::DamageAtRest { node: victim, .. }, .. }) =
                damage.first()
            {
                schedule.retain(|timed| {
                    !matches!(timed.fault, Fault::CrashLosingTail { node, .. } if node == *victim)
                });
            }
            schedule.extend(damage);
        }
        let mut aim_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0a1e_d000_0000_0000);
        schedule.extend(draw_aimed_faults(&mut aim_rng, &swarm, fault_phase_ms));
        schedule.sort_by_key(|fault| fault.at_ms);
        RunConfig {
            seed,
            nodes,
            spares,
            clients: rng.random_range(2..=6),
            keys: rng.random_range(2..=6),
            fault_phase_ms,
            liveness_timeout_ms: 20_000,
            liveness_ops: 10,
            ops_per_client: None,
            swarm,
            schedule,
            planted_bug: options.planted_bug,
            shards: 1,
        }
    }

    /// Fault families that appear in the schedule.
    pub fn scheduled_families(&self) -> Vec<FaultFamily> {
        let mut families: Vec<FaultFamily> =
            self.schedule.iter().map(|f| f.fault.family()).collect();
        families.sort_unstable();
        families.dedup();
        families
    }
}

fn draw_schedule(
    rng: &mut ChaCha8Rng,
    nodes: u64,
    spares: u64,
    swarm: &Swarm,
    phase_ms: u64,
) -> Vec<TimedFault> {
    let hosts = nodes + spares;
    let mut schedule = Vec::new();
    // Disk faults stay on a minority, so the cluster must remain available throughout.
    let victim_count = rng.random_range(1..=(nodes - 1) / 2);
    let disk_victims = pick_nodes(rng, nodes, victim_count);
    for family in &swarm.families {
        // Storms and drizzles: the mean gap between faults of a family varies per seed.
        let mean_gap_ms = rng.random_range(500..=5_000u64);
        let mut at_ms = rng.random_range(0..=mean_gap_ms);
        while at_ms < phase_ms.saturating_sub(200) {
            let fault = match family {
                FaultFamily::Partition => Fault::Partition {
                    kind: match rng.random_range(0..4) {
                        0 => {
                            let size = rng.random_range(1..=nodes / 2);
                            PartitionKind::Split { side: pick_nodes(rng, nodes, size) }
                        }
                        1 => PartitionKind::IsolateLeader,
                        2 => {
                            let from = pick_nodes(rng, nodes, 1);
                            let to: Vec<u64> = (1..=nodes).filter(|n| !from.contains(n)).collect();
                            PartitionKind::OneWay { from, to }
                        }
                        _ => {
                            let mut order = pick_nodes(rng, nodes, nodes);
                            let at = rng.random_range(0..order.len());
                            let bridge = order.remove(at);
                            let split = order.len() / 2;
                            PartitionKind::Bridge {
                                bridge,
                                left: order[..split].to_vec(),
                                right: order[split..].to_vec(),
                            }
                        }
                    },
                    duration_ms: rng.random_range(100..=3_000),
                },
                FaultFamily::Crash => Fault::Crash {
                    target: if rng.random_bool(0.4) {
                        Target::Leader
                    } else {
                        Target::Node(rng.random_range(1..=nodes))
                    },
                    down_ms: rng.random_range(10..=2_000),
                },
                FaultFamily::Clock => {
                    let node = rng.random_range(1..=nodes);
                    let bound = swarm.lease_drift_bound_ppm as i64;
                    if rng.random_bool(0.3) {
                        Fault::ClockJump { node, delta_ms: rng.random_range(-60_000..=60_000) }
                    } else {
                        let drift_ppm = match swarm.clock_mode {
                            // Stay strictly within the bound the lease assumes.
                            ClockMode::WithinBound => rng.random_range(-bound / 2..=bound / 2),
                            ClockMode::ExceedsBound => rng.random_range(4 * bound..=10 * bound),
                        };
                        Fault::ClockDrift {
                            node,
                            drift_ppm,
                            duration_ms: rng.random_range(500..=8_000),
                        }
                    }
                }
                FaultFamily::Latency => Fault::LatencySpike {
                    max_latency_ms: rng.random_range(20..=300),
                    duration_ms: rng.random_range(100..=2_000),
                },
                FaultFamily::Membership => match rng.random_range(0..5) {
                    0 => Fault::Grow { node: rng.random_range(1..=hosts) },
                    1 => Fault::Shrink {
                        target: if rng.random_bool(0.3) {
                            Target::Leader
                        } else {
                            Target::Node(rng.random_range(1..=hosts))
                        },
                    },
                    2 => Fault::Replace {
                        old: if rng.random_bool(0.4) {
                            Target::Leader
                        } else {
                            Target::Node(rng.random_range(1..=hosts))
                        },
                        new: rng.random_range(1..=hosts),
                    },
                    3 => Fault::TransferLeadership { to: rng.random_range(1..=hosts) },
                    _ => {
                        let election_timeout_ms =
                            u64::from(swarm.election_timeout_ticks) * swarm.tick_ms;
                        Fault::SlowTransfer {
                            to: rng.random_range(1..=hosts),
                            // The transfer is given up an election timeout after the
                            // TimeoutNow (by the leader's clock, which may drift a little).
                            hold_ms: election_timeout_ms + rng.random_range(5..=40),
                            isolate_ms: rng.random_range(200..=2_000),
                        }
                    }
                },
                FaultFamily::Disk => Fault::Disk {
                    node: disk_victims[rng.random_range(0..disk_victims.len())],
                    kind: match rng.random_range(0..3) {
                        0 => DiskFaultKind::Eio { permille: rng.random_range(1..=200) },
                        1 => DiskFaultKind::NoSpace,
                        _ => DiskFaultKind::CorruptReads { permille: rng.random_range(1..=200) },
                    },
                    duration_ms: rng.random_range(100..=3_000),
                },
            };
            schedule.push(TimedFault { at_ms, fault });
            at_ms += rng.random_range(mean_gap_ms / 2..=mean_gap_ms * 3 / 2).max(50);
        }
    }
    schedule.sort_by_key(|fault| fault.at_ms);
    schedule
}

/// Faults aimed at the moments that matter, drawn per family the seed has on: crashes timed on
/// a node's events, the leader's clock drifting (its lease is the one that matters), and the
/// leader cut from its clients while its peers still reach it.
fn draw_aimed_faults(rng: &mut ChaCha8Rng, swarm: &Swarm, phase_ms: u64) -> Vec<TimedFault> {
    let mut faults = Vec::new();
    let at = |rng: &mut ChaCha8Rng| rng.random_range(0..phase_ms.saturating_sub(1_000).max(1));
    if swarm.families.contains(&FaultFamily::Crash) {
        for _ in 0..rng.random_range(0..=3) {
            let fault = Fault::CrashOnEvent {
                event: NodeEvent::ALL[rng.random_range(0..NodeEvent::ALL.len())],
                delay_ms: rng.random_range(0..=5),
                down_ms: rng.random_range(10..=1_000),
            };
            faults.push(TimedFault { at_ms: at(rng), fault });
        }
    }
    if swarm.families.contains(&FaultFamily::Clock) && rng.random_bool(0.5) {
        let bound = swarm.lease_drift_bound_ppm as i64;
        let drift_ppm = match swarm.clock_mode {
            ClockMode::WithinBound => rng.random_range(-bound / 2..=bound / 2),
            ClockMode::ExceedsBound => rng.random_range(4 * bound..=10 * bound),
        };
        let fault =
            Fault::LeaderClockDrift { drift_ppm, duration_ms: rng.random_range(500..=6_000) };
        faults.push(TimedFault { at_ms: at(rng), fault });
    }
    if swarm.families.contains(&FaultFamily::Partition) && rng.random_bool(0.5) {
        let fault = Fault::Partition {
            kind: PartitionKind::LeaderFromClients,
            duration_ms: rng.random_range(200..=3_000),
        };
        faults.push(TimedFault { at_ms: at(rng), fault });
    }
    // Only a leased leader can be wronged by a restart's amnesia. The crash comes late in the
    // rivals' first election timeout and the restart is quick: the rivals then campaign
    // after the backers are back and, for most of their timeout's range, before the lease
    // that rested on the backers' last acknowledgement runs out.
    if swarm.lease_reads && swarm.families.contains(&FaultFamily::Crash) {
        let election_timeout_ms = swarm.tick_ms * u64::from(swarm.election_timeout_ticks);
        for _ in 0..rng.random_range(0..=2) {
            let fault = Fault::BounceLeaseBacker {
                pick: rng.random_range(0..5),
                settle_ms: rng.random_range(100..=600),
                cut_ms: rng.random_range(3 * election_timeout_ms..=6 * election_timeout_ms),
                crash_after_ms: rng
                    .random_range(election_timeout_ms * 7 / 10..=election_timeout_ms * 9 / 10),
                down_ms: rng.random_range(5..=(election_timeout_ms / 10).max(6)),
            };
            faults.push(TimedFault { at_ms: at(rng), fault });
        }
    }
    faults
}

/// Whole seconds of full disks (on one node, on a majority) and crashes that lose synced
/// records, drawn for seeds whose disks fail.
fn draw_storage_faults(rng: &mut ChaCha8Rng, nodes: u64, phase_ms: u64) -> Vec<TimedFault> {
    let mut faults = Vec::new();
    let at = |rng: &mut ChaCha8Rng| rng.random_range(0..phase_ms.saturating_sub(1_000).max(1));
    if rng.random_bool(0.5) {
        let fault = Fault::DiskFull {
            nodes: pick_nodes(rng, nodes, 1),
            duration_ms: rng.random_range(1_000..=5_000),
        };
        faults.push(TimedFault { at_ms: at(rng), fault });
    }
    if rng.random_bool(0.35) {
        let fault = Fault::DiskFull {
            nodes: pick_nodes(rng, nodes, nodes / 2 + 1),
            duration_ms: rng.random_range(1_000..=4_000),
        };
        faults.push(TimedFault { at_ms: at(rng), fault });
    }
    for _ in 0..rng.random_range(0..=2) {
        let fault = Fault::CrashLosingTail {
            node: rng.random_range(1..=nodes),
            down_ms: rng.random_range(10..=1_000),
            records: rng.random_range(1..=4),
        };
        faults.push(TimedFault { at_ms: at(rng), fault });
    }
    faults
}

/// Damage to data at rest, all on one node (a minority of one, so the cluster survives it).
fn draw_damage_at_rest(rng: &mut ChaCha8Rng, nodes: u64, phase_ms: u64) -> Vec<TimedFault> {
    if !rng.random_bool(0.6) {
        return Vec::new();
    }
    let node = rng.random_range(1..=nodes);
    (0..rng.random_range(1..=3))
        .map(|_| TimedFault {
            at_ms: rng.random_range(1_000..phase_ms.saturating_sub(1_000).max(1_001)),
            fault: Fault::DamageAtRest {
                node,
                damage: AtRestDamage::ALL[rng.random_range(0..AtRestDamage::ALL.len())],
                down_ms: rng.random_range(10..=1_000),
            },
        })
        .collect()
}

fn names(nodes: &[u64]) -> String {
    nodes.iter().map(|n| format!("n{n}")).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { kind, duration_ms } => {
                match kind {
                    PartitionKind::Split { side } => {
                        write!(f, "partition {{{}}} from the rest", names(side))?
                    }
                    PartitionKind::IsolateLeader => write!(f, "isolate the leader")?,
                    PartitionKind::LeaderFromClients => {
                        write!(f, "cut the leader off from the clients")?
                    }
                    PartitionKind::OneWay { from, to } => {
                        write!(f, "drop messages from {{{}}} to {{{}}}", names(from), names(to))?
                    }
                    PartitionKind::Bridge { bridge, left, right } => write!(
                        f,
                        "partition {{{}}} | {{{}}} with n{bridge} bridging",
                        names(left),
                        names(right)
                    )?,
                }
                write!(f, " for {duration_ms} ms")
            }
            Fault::Crash { target: Target::Leader, down_ms } => {
                write!(f, "crash the leader, restart after {down_ms} ms")
            }
            Fault::Crash { target: Target::Node(node), down_ms } => {
                write!(f, "crash n{node}, restart after {down_ms} ms")
            }
            Fault::CrashNewLeader { delay_ms, down_ms } => write!(
                f,
                "crash the next new leader {delay_ms} ms after its election, restart after {down_ms} ms"
            ),
            Fault::CrashOnEvent { event, delay_ms, down_ms } => write!(
                f,
                "crash the next node that {} {delay_ms} ms after, restart after {down_ms} ms",
                event.describe()
            ),
            Fault::LeaderClockDrift { drift_ppm, duration_ms } => write!(
                f,
                "the leader's clock drifts {:+.1}% for {duration_ms} ms",
                *drift_ppm as f64 / 10_000.0
            ),
            Fault::Grow { node } => write!(f, "add n{node} as a learner, then promote it"),
            Fault::Shrink { target: Target::Leader } => {
                write!(f, "remove the leader from the cluster")
            }
            Fault::Shrink { target: Target::Node(node) } => {
                write!(f, "remove n{node} from the cluster")
            }
            Fault::Replace { old: Target::Leader, new } => {
                write!(f, "replace the leader by n{new}")
            }
            Fault::Replace { old: Target::Node(old), new } => write!(f, "replace n{old} by n{new}"),
            Fault::TransferLeadership { to } => write!(f, "transfer leadership to n{to}"),
            Fault::SlowTransfer { to, hold_ms, isolate_ms } => write!(
                f,
                "transfer leadership to n{to} with the link to it held {hold_ms} ms, and the old \
                 leader cut from its peers for {isolate_ms} ms as the hold ends"
            ),
            Fault::BounceLeaseBacker { pick, settle_ms, cut_ms, crash_after_ms, down_ms } => {
                write!(
                    f,
                    "clients only read; {settle_ms} ms later cut the leader from the voters \
                     outside a bare quorum for {cut_ms} ms; {crash_after_ms} ms into it crash \
                     the backers the rivals need (pick {pick}), restart them after {down_ms} ms, deaf to \
                     the leader while the cut lasts; then writes resume"
                )
            }
            Fault::ClockDrift { node, drift_ppm, duration_ms } => {
                write!(
                    f,
                    "n{node}'s clock drifts {:+.1}% for {duration_ms} ms",
                    *drift_ppm as f64 / 10_000.0
                )
            }
            Fault::ClockJump { node, delta_ms } => {
                write!(f, "n{node}'s wall clock jumps {delta_ms:+} ms")
            }
            Fault::LatencySpike { max_latency_ms, duration_ms } => {
                write!(f, "message latency up to {max_latency_ms} ms for {duration_ms} ms")
            }
            Fault::Disk { node, kind, duration_ms } => {
                match kind {
                    DiskFaultKind::Eio { permille } => {
                        write!(f, "n{node}'s disk fails {}‰ of I/O with EIO", permille)?
                    }
                    DiskFaultKind::NoSpace => write!(f, "n{node}'s disk is full (ENOSPC)")?,
                    DiskFaultKind::CorruptReads { permille } => {
                        write!(f, "n{node}'s disk corrupts {}‰ of reads", permille)?
                    }
                }
                write!(f, " for {duration_ms} ms")
            }
            Fault::DiskFull { nodes, duration_ms } => {
                write!(
                    f,
                    "the disks of {{{}}} are full (ENOSPC) for {duration_ms} ms",
                    names(nodes)
                )
            }
            Fault::CrashLosingTail { node, down_ms, records } => write!(
                f,
                "crash n{node}, restart after {down_ms} ms with up to {records} of its newest \
                 synced log records lost"
            ),
            Fault::DamageAtRest { node, damage, down_ms } => {
                write!(
                    f,
                    "crash n{node}, damage its disk at rest ({damage}), restart after {down_ms} ms"
                )
            }
        }
    }
}

impl fmt::Display for RunConfig {
    /// The schedule as readable steps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} nodes{}{}, {} clients, {} keys, {} ms of faults{}",
            self.seed,
            self.nodes,
            if self.spares > 0 { format!(" (+{} spare)", self.spares) } else { String::new() },
            if self.shards > 1 { format!(", {} shards", self.shards) } else { String::new() },
            self.clients,
            self.keys,
            self.fault_phase_ms,
            self.planted_bug.map(|b| format!(", planted bug {}", b.name())).unwrap_or_default()
        )?;
        if self.schedule.is_empty() {
            writeln!(f, "  (no faults)")?;
        }
        for (step, timed) in self.schedule.iter().enumerate() {
            writeln!(
                f,
                "  {:>2}. at {:>6.3} s: {}",
                step + 1,
                timed.at_ms as f64 / 1000.0,
                timed.fault
            )?;
        }
        write!(
            f,
            "  then heal everything; require a leader and {} new operations",
            self.liveness_ops
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_is_a_function_of_the_seed() {
        let options = DrawOptions::default();
        assert_eq!(RunConfig::draw(7, &options), RunConfig::draw(7, &options));
        assert_ne!(RunConfig::draw(7, &options), RunConfig::draw(8, &options));
    }

    #[test]
    fn disk_faults_stay_on_a_minority() {
        for seed in 0..300 {
            let config = RunConfig::draw(seed, &DrawOptions::default());
            let mut victims: Vec<u64> = config
                .schedule
                .iter()
                .filter_map(
                    |f| if let Fault::Disk { node, .. } = f.fault { Some(node) } else { None },
                )
                .collect();
            victims.sort_unstable();
            victims.dedup();
            assert!(victims.len() as u64 <= (config.nodes - 1) / 2, "seed {seed}: {victims:?}");
        }
    }

    #[test]
    fn schedules_round_trip_through_json() {
        let config = RunConfig::draw(11, &DrawOptions::default());
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<RunConfig>(&json).unwrap(), config);
    }
}

#[cfg(test)]
mod calm_rate {
    use super::*;

    #[test]
    fn about_one_seed_in_ten_is_calm() {
        let calm = (0..1000)
            .filter(|seed| RunConfig::draw(*seed, &DrawOptions::default()).schedule.is_empty())
            .count();
        assert!((50..=200).contains(&calm), "{calm} of 1000 seeds have no faults");
    }
}
