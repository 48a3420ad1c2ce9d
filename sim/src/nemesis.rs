//! The nemesis carries out a run's fault schedule on the simulation: it cuts links (counting
//! overlapping cuts so one healing partition does not undo another), crashes and restarts
//! nodes, skews clocks, slows the network and breaks disks — and undoes each fault when its
//! time is up. "The leader" is resolved when the fault fires.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use turmoil::Sim;

use crate::admin::{AdminCommand, AdminShared};
use crate::clock::SimClock;
use crate::disk::DiskFaults;
use crate::lost_tail::TailLoss;
use crate::observers::Observers;
use crate::schedule::{
    DiskFaultKind, Fault, FaultFamily, NodeEvent, PartitionKind, Target, TimedFault,
};
use crate::workload::WorkloadShared;

/// Something to undo later.
#[derive(Clone, Debug)]
enum FollowUp {
    Reconnect(Vec<(u64, u64)>),
    Restart(u64),
    ClockDriftEnds(u64),
    LatencyEnds,
    DiskHeals(u64),
    /// The full disks of these nodes have room again.
    DiskSpaceFreed(Vec<u64>),
    /// A trap springs on `node` (`what` it is, for the log).
    CrashSprung {
        node: u64,
        down_ms: u64,
        what: &'static str,
    },
    /// A `BounceLeaseBacker` crashes `backer`, which then hears nothing from `leader` for
    /// `deaf_ms` (what is left of the leader's cut).
    BounceBacker {
        leader: u64,
        backer: u64,
        down_ms: u64,
        deaf_ms: u64,
    },
    /// The supervisor restarts a node that stopped on its own.
    SupervisorRestart(u64),
    /// A `SlowTransfer`'s old leader is cut from its peers (see `Fault::SlowTransfer`) for
    /// `isolate_ms`: both ways from all but the target, and from the target's answers.
    IsolateOldLeader {
        leader: u64,
        to: u64,
        isolate_ms: u64,
    },
    /// A `SlowTransfer`'s held link delivers what the old leader sent on it.
    ReleaseHold,
    /// A read-only stretch of the clients ends.
    WritesResume,
    /// A `BounceLeaseBacker`'s cut starts, once the clients' writes have settled.
    CutLeaseRivals {
        pick: u64,
        cut_ms: u64,
        crash_after_ms: u64,
        down_ms: u64,
    },
}

/// How long before the hold of a `SlowTransfer` ends its old leader is cut off: after its
/// last lease round, before the transfer is given up (and it may take proposals again, which
/// would leave the target behind the other followers and unelectable).
const ISOLATE_BEFORE_RELEASE_MS: u64 = 40;

/// How long a supervisor waits before restarting a node that stopped on its own.
const SUPERVISOR_RESTART_MS: u64 = 1_000;

pub struct Nemesis {
    schedule: Vec<TimedFault>,
    next: usize,
    nodes: u64,
    follow_ups: BTreeMap<(u64, u64), FollowUp>,
    follow_up_seq: u64,
    /// Directed links cut, with how many faults cut each.
    cuts: BTreeMap<(u64, u64), u32>,
    /// The link a `SlowTransfer` holds, if any (turmoil holds both directions). Cuts of it
    /// are counted but applied only once it is released (turmoil does not combine the two).
    held: Option<(u64, u64)>,
    /// Armed by `SlowTransfer`: the next TimeoutNow sent is held for `hold_ms`, then its
    /// sender hears none of its peers for `isolate_ms`.
    timeout_now_trap: Option<(u64, u64)>,
    down: BTreeSet<u64>,
    /// Nodes that stopped on their own, with a supervisor restart scheduled.
    restarting: BTreeSet<u64>,
    clocks: Vec<SimClock>,
    disks: Vec<DiskFaults>,
    base_max_latency: Duration,
    latency_spikes: u32,
    /// Traps armed by `CrashNewLeader`: (delay, downtime), first armed first.
    new_leader_traps: std::collections::VecDeque<(u64, u64)>,
    /// Traps armed by `CrashOnEvent`: (event, delay, downtime), first armed first.
    event_traps: Vec<(NodeEvent, u64, u64)>,
    /// The leader (node, term) seen at the previous step, to notice elections.
    last_leader: Option<u64>,
    admin: Rc<AdminShared>,
    /// The clients' shared state: `BounceLeaseBacker` makes them read only for a while.
    workload: Rc<WorkloadShared>,
    /// Counts nodes' returns on their own (see `NodeContext::exits`); the last count handled.
    node_exits: Rc<Cell<u64>>,
    node_exits_seen: u64,
    pub fired: BTreeSet<FaultFamily>,
    /// What happened, in order, for reports.
    pub log: Vec<String>,
}

/// The host all clients run in (see `run.rs`), and its number among the nemesis's links.
pub const CLIENTS_HOST: &str = "clients";
pub const CLIENTS: u64 = 0;

fn name(node: u64) -> String {
    if node == CLIENTS { CLIENTS_HOST.to_string() } else { format!("n{node}") }
}

/// The parts of the run the nemesis acts on besides the network: the nodes' clocks and
/// disks, the operator, the clients, and the count of nodes that stopped on their own.
pub struct NemesisLevers {
    pub clocks: Vec<SimClock>,
    pub disks: Vec<DiskFaults>,
    pub admin: Rc<AdminShared>,
    pub workload: Rc<WorkloadShared>,
    pub node_exits: Rc<Cell<u64>>,
}

impl Nemesis {
    pub fn new(
        schedule: Vec<TimedFault>,
        nodes: u64,
        base_max_latency: Duration,
        levers: NemesisLevers,
    ) -> Self {
        let NemesisLevers { clocks, disks, admin, workload, node_exits } = levers;
        Nemesis {
            schedule,
            next: 0,
            nodes,
            follow_ups: BTreeMap::new(),
            follow_up_seq: 0,
            cuts: BTreeMap::new(),
            held: None,
            timeout_now_trap: None,
            down: BTreeSet::new(),
            restarting: BTreeSet::new(),
            clocks,
            disks,
            base_max_latency,
            latency_spikes: 0,
            new_leader_traps: std::collections::VecDeque::new(),
            event_traps: Vec::new(),
            last_leader: None,
            admin,
            workload,
            node_exits,
            node_exits_seen: 0,
            fired: BTreeSet::new(),
            log: Vec::new(),
        }
    }

    pub fn is_down(&self, node: u64) -> bool {
        self.down.contains(&node)
    }

    /// Operator actions go to the admin client, which carries them out through the leader.
    fn ask_operator(&mut self, command: AdminCommand) -> bool {
        self.admin.queue.borrow_mut().push_back(command);
        true
    }

    /// Crashes `node` until `restart_at_ms`; false (nothing done) if it is down already.
    fn crash(
        &mut self,
        node: u64,
        restart_at_ms: u64,
        sim: &mut Sim<'_>,
        observers: &Observers,
    ) -> bool {
        if !self.down.insert(node) {
            return false;
        }
        sim.crash(name(node));
        observers.on_node_down(crate::node_host::node_id(node));
        self.later(restart_at_ms, FollowUp::Restart(node));
        true
    }

    fn later(&mut self, at_ms: u64, follow_up: FollowUp) {
        self.follow_up_seq += 1;
        self.follow_ups.insert((at_ms, self.follow_up_seq), follow_up);
    }

    /// Fires every fault and follow-up due at `now_ms`.
    pub fn step(&mut self, now_ms: u64, sim: &mut Sim<'_>, observers: &Observers) {
        // A node that stopped on its own (its disk failed it) is restarted a little later, as
        // a process supervisor would; if the damage is real it refuses to start again.
        if self.node_exits.get() != self.node_exits_seen {
            self.node_exits_seen = self.node_exits.get();
            for node in 1..=self.nodes {
                if !self.down.contains(&node)
                    && !self.restarting.contains(&node)
                    && !sim.is_host_running(name(node))
                {
                    self.restarting.insert(node);
                    self.later(now_ms + SUPERVISOR_RESTART_MS, FollowUp::SupervisorRestart(node));
                }
            }
        }
        let leader = observers.meta().borrow().current_leader().map(|id| id.0);
        if leader.is_some()
            && leader != self.last_leader
            && let Some((delay_ms, down_ms)) = self.new_leader_traps.pop_front()
            && let Some(node) = leader
        {
            let what = "the new leader";
            self.later(now_ms + delay_ms, FollowUp::CrashSprung { node, down_ms, what });
        }
        self.last_leader = leader;
        let timeout_nows = observers.take_timeout_nows();
        for (leader, to) in timeout_nows {
            if self.held.is_none()
                && let Some((hold_ms, isolate_ms)) = self.timeout_now_trap.take()
            {
                let (leader, to) = (leader.0, to.0);
                self.held = Some((leader, to));
                sim.hold(name(leader), name(to));
                let isolate_at_ms = (now_ms + hold_ms).saturating_sub(ISOLATE_BEFORE_RELEASE_MS);
                self.later(
                    isolate_at_ms.max(now_ms + 1),
                    FollowUp::IsolateOldLeader { leader, to, isolate_ms },
                );
                self.later(now_ms + hold_ms, FollowUp::ReleaseHold);
                self.log.push(format!(
                    "{:>7.3} s  n{leader} sent TimeoutNow to n{to}: the link holds it {hold_ms} ms",
                    now_ms as f64 / 1000.0
                ));
            }
        }
        let events = observers.take_events();
        for (node, event) in events {
            let Some(at) = self.event_traps.iter().position(|(kind, _, _)| *kind == event) else {
                continue;
            };
            let (_, delay_ms, down_ms) = self.event_traps.remove(at);
            self.log.push(format!(
                "{:>7.3} s  {node} {}: the trap springs in {delay_ms} ms",
                now_ms as f64 / 1000.0,
                event.describe()
            ));
            let (node, what) = (node.0, event.describe());
            self.later(now_ms + delay_ms, FollowUp::CrashSprung { node, down_ms, what });
        }
        while let Some(first) = self.follow_ups.first_key_value() {
            if first.0.0 > now_ms {
                break;
            }
            let Some((_, follow_up)) = self.follow_ups.pop_first() else { break };
            self.undo(now_ms, follow_up, sim, observers);
        }
        while self.next < self.schedule.len() && self.schedule[self.next].at_ms <= now_ms {
            let fault = self.schedule[self.next].fault.clone();
            self.next += 1;
            self.fire(now_ms, fault, sim, observers);
        }
    }

    fn fire(&mut self, now_ms: u64, fault: Fault, sim: &mut Sim<'_>, observers: &Observers) {
        let leader = observers.meta().borrow().current_leader().map(|id| id.0);
        let description = fault.to_string();
        let family = fault.family();
        let applied = match fault {
            Fault::Partition { kind, duration_ms } => {
                let links = self.links_for(&kind, leader);
                if links.is_empty() {
                    false
                } else {
                    for (from, to) in &links {
                        self.cut(*from, *to, sim);
                    }
                    self.later(now_ms + duration_ms, FollowUp::Reconnect(links));
                    true
                }
            }
            Fault::Crash { target, down_ms } => {
                let node = match target {
                    Target::Node(node) => Some(node),
                    Target::Leader => leader,
                };
                node.is_some_and(|node| self.crash(node, now_ms + down_ms, sim, observers))
            }
            Fault::CrashNewLeader { delay_ms, down_ms } => {
                self.new_leader_traps.push_back((delay_ms, down_ms));
                true
            }
            Fault::CrashOnEvent { event, delay_ms, down_ms } => {
                self.event_traps.push((event, delay_ms, down_ms));
                true
            }
            Fault::LeaderClockDrift { drift_ppm, duration_ms } => match leader {
                Some(node) => {
                    self.clocks[(node - 1) as usize].set_drift(now_ms, drift_ppm);
                    self.later(now_ms + duration_ms, FollowUp::ClockDriftEnds(node));
                    true
                }
                None => false,
            },
            Fault::Grow { node } => self.ask_operator(AdminCommand::Grow { node }),
            Fault::Shrink { target } => match resolve(target, leader) {
                Some(node) => self.ask_operator(AdminCommand::Shrink { node }),
                None => false,
            },
            Fault::Replace { old, new } => match resolve(old, leader) {
                Some(old) if old != new => self.ask_operator(AdminCommand::Replace { old, new }),
                _ => false,
            },
            Fault::TransferLeadership { to } => {
                self.ask_operator(AdminCommand::TransferLeadership { to })
            }
            Fault::SlowTransfer { to, hold_ms, isolate_ms } => {
                // The hold starts when the leader sends the TimeoutNow (see `step`): before
                // it, the target must stay caught up, or no TimeoutNow is sent at all.
                self.timeout_now_trap = Some((hold_ms, isolate_ms));
                self.ask_operator(AdminCommand::TransferLeadership { to })
            }
            Fault::BounceLeaseBacker { pick, settle_ms, cut_ms, crash_after_ms, down_ms } => {
                let spells = &self.workload.read_only_spells;
                spells.set(spells.get() + 1);
                self.later(now_ms + settle_ms + cut_ms, FollowUp::WritesResume);
                let cut = FollowUp::CutLeaseRivals { pick, cut_ms, crash_after_ms, down_ms };
                self.later(now_ms + settle_ms, cut);
                true
            }
            Fault::ClockDrift { node, drift_ppm, duration_ms } => {
                self.clocks[(node - 1) as usize].set_drift(now_ms, drift_ppm);
                self.later(now_ms + duration_ms, FollowUp::ClockDriftEnds(node));
                true
            }
            Fault::ClockJump { node, delta_ms } => {
                self.clocks[(node - 1) as usize].jump_wall(delta_ms);
                true
            }
            Fault::LatencySpike { max_latency_ms, duration_ms } => {
                self.latency_spikes += 1;
                sim.set_max_message_latency(Duration::from_millis(max_latency_ms));
                self.later(now_ms + duration_ms, FollowUp::LatencyEnds);
                true
            }
            Fault::Disk { node, kind, duration_ms } => {
                let disk = &self.disks[(node - 1) as usize];
                match kind {
                    DiskFaultKind::Eio { permille } => disk.set_io_error_permille(permille),
                    DiskFaultKind::NoSpace => disk.set_no_space(true),
                    DiskFaultKind::CorruptReads { permille } => {
                        disk.set_corrupt_read_permille(permille)
                    }
                }
                // None of these faults changes what the disk holds: failed calls and corrupted
                // reads are transient, so the node's durability promises stay checked (a
                // recovery that mistook a bad read for a torn tail would break them).
                self.later(now_ms + duration_ms, FollowUp::DiskHeals(node));
                true
            }
            Fault::DiskFull { nodes, duration_ms } => {
                for node in &nodes {
                    self.disks[(node - 1) as usize].set_no_space(true);
                }
                self.later(now_ms + duration_ms, FollowUp::DiskSpaceFreed(nodes));
                true
            }
            Fault::DamageAtRest { node, damage, down_ms } => {
                let crashed = self.crash(node, now_ms + down_ms, sim, observers);
                if crashed {
                    self.disks[(node - 1) as usize].plan_at_rest_damage(damage);
                }
                crashed
            }
            Fault::CrashLosingTail { node, down_ms, records } => {
                // What the others hold, computed before this node goes down, not counting those
                // that are down with a loss of their own still to come (campaign seed 67029:
                // two of three voters planned to lose the same committed entry).
                let losing: Vec<conclave_core::raft::NodeId> = (1..=self.nodes)
                    .filter(|other| self.disks[(other - 1) as usize].has_planned_tail_loss())
                    .map(crate::node_host::node_id)
                    .collect();
                // Each group's own floor: a node hosting many groups keeps one log for all of
                // them, and each group's entries are held by that group's voters.
                let id = crate::node_host::node_id(node);
                let floors: std::collections::BTreeMap<_, _> = observers
                    .iter()
                    .map(|(shard, observer)| {
                        (shard, observer.borrow().held_durably_without(id, &losing))
                    })
                    .filter(|(_, floor)| *floor > 0)
                    .collect();
                let crashed = self.crash(node, now_ms + down_ms, sim, observers);
                if crashed && !floors.is_empty() {
                    let plan = TailLoss { floors, max_records: records };
                    self.disks[(node - 1) as usize].plan_tail_loss(plan);
                }
                crashed
            }
        };
        if applied {
            self.log.push(format!("{:>7.3} s  {description}", now_ms as f64 / 1000.0));
            self.fired.insert(family);
            observers.meta().borrow_mut().note_fault(family_name(family));
            observers.meta().borrow_mut().trace.add(0xfa17_0000 + now_ms);
        } else {
            self.log.push(format!("{:>7.3} s  (skipped: {description})", now_ms as f64 / 1000.0));
        }
    }

    fn links_for(&self, kind: &PartitionKind, leader: Option<u64>) -> Vec<(u64, u64)> {
        let everyone: Vec<u64> = (1..=self.nodes).collect();
        let both_ways = |left: &[u64], right: &[u64]| {
            let mut links = Vec::new();
            for a in left {
                for b in right {
                    links.push((*a, *b));
                    links.push((*b, *a));
                }
            }
            links
        };
        match kind {
            PartitionKind::Split { side } => {
                let rest: Vec<u64> =
                    everyone.iter().copied().filter(|n| !side.contains(n)).collect();
                both_ways(side, &rest)
            }
            PartitionKind::LeaderFromClients => match leader {
                Some(leader) => vec![(CLIENTS, leader), (leader, CLIENTS)],
                None => Vec::new(),
            },
            PartitionKind::IsolateLeader => match leader {
                Some(leader) => {
                    let rest: Vec<u64> =
                        everyone.iter().copied().filter(|n| *n != leader).collect();
                    both_ways(&[leader], &rest)
                }
                None => Vec::new(),
            },
            PartitionKind::OneWay { from, to } => {
                from.iter().flat_map(|f| to.iter().map(move |t| (*f, *t))).collect()
            }
            PartitionKind::Bridge { left, right, .. } => both_ways(left, right),
        }
    }

    fn is_held(&self, from: u64, to: u64) -> bool {
        self.held.is_some_and(|(a, b)| (a, b) == (from, to) || (b, a) == (from, to))
    }

    fn cut(&mut self, from: u64, to: u64, sim: &mut Sim<'_>) {
        let count = self.cuts.entry((from, to)).or_insert(0);
        *count += 1;
        if *count == 1 && !self.is_held(from, to) {
            sim.partition_oneway(name(from), name(to));
        }
    }

    fn reconnect(&mut self, from: u64, to: u64, sim: &mut Sim<'_>) {
        if let Some(count) = self.cuts.get_mut(&(from, to)) {
            *count -= 1;
            if *count == 0 {
                self.cuts.remove(&(from, to));
                if !self.is_held(from, to) {
                    sim.repair_oneway(name(from), name(to));
                }
            }
        }
    }

    /// Ends the hold of a `SlowTransfer`: the held messages are delivered, and cuts made
    /// meanwhile take effect.
    fn release_hold(&mut self, sim: &mut Sim<'_>) {
        let Some((a, b)) = self.held.take() else { return };
        sim.release(name(a), name(b));
        for (from, to) in [(a, b), (b, a)] {
            if self.cuts.contains_key(&(from, to)) {
                sim.partition_oneway(name(from), name(to));
            }
        }
    }

    fn undo(&mut self, now_ms: u64, follow_up: FollowUp, sim: &mut Sim<'_>, observers: &Observers) {
        match follow_up {
            FollowUp::Reconnect(links) => {
                for (from, to) in links {
                    self.reconnect(from, to, sim);
                }
            }
            FollowUp::IsolateOldLeader { leader, to, isolate_ms } => {
                // Never `leader -> to`: cutting it would drop the held TimeoutNow. The cut of
                // `to -> leader` waits for the release (the link is held), and then drops
                // only what `to` had sent, so nothing `to` does (its campaign) reaches the old
                // leader, which keeps believing it leads.
                let mut links: Vec<(u64, u64)> = (1..=self.nodes)
                    .filter(|peer| *peer != leader && *peer != to)
                    .flat_map(|peer| [(leader, peer), (peer, leader)])
                    .collect();
                links.push((to, leader));
                for (from, to) in &links {
                    self.cut(*from, *to, sim);
                }
                self.later(now_ms + isolate_ms, FollowUp::Reconnect(links));
            }
            FollowUp::ReleaseHold => self.release_hold(sim),
            FollowUp::CutLeaseRivals { pick, cut_ms, crash_after_ms, down_ms } => {
                let leader = observers.meta().borrow().current_leader().map(|id| id.0);
                let voters = observers.meta().borrow().committed_voters();
                let Some((leader, backers, rivals)) =
                    leader.and_then(|leader| lease_backers(leader, &voters, pick))
                else {
                    let at = now_ms as f64 / 1000.0;
                    self.log.push(format!("{at:>7.3} s  (no leader to cut from its rivals)"));
                    return;
                };
                let links: Vec<(u64, u64)> =
                    rivals.iter().flat_map(|r| [(leader, *r), (*r, leader)]).collect();
                for (from, to) in &links {
                    self.cut(*from, *to, sim);
                }
                self.later(now_ms + cut_ms, FollowUp::Reconnect(links));
                // The rivals need this many restarted backers to make a quorum: one with an
                // odd number of voters, two with an even one.
                let quorum = voters.len() / 2 + 1;
                let deaf_ms = cut_ms - crash_after_ms;
                for backer in backers.iter().take(quorum - rivals.len()) {
                    let backer = *backer;
                    let bounce = FollowUp::BounceBacker { leader, backer, down_ms, deaf_ms };
                    self.later(now_ms + crash_after_ms, bounce);
                }
                self.log.push(format!(
                    "{:>7.3} s  cut n{leader} from {{{}}}; its lease rests on {{{}}}",
                    now_ms as f64 / 1000.0,
                    rivals.iter().map(|n| format!("n{n}")).collect::<Vec<_>>().join(", "),
                    backers.iter().map(|n| format!("n{n}")).collect::<Vec<_>>().join(", "),
                ));
            }
            FollowUp::WritesResume => {
                let spells = &self.workload.read_only_spells;
                spells.set(spells.get().saturating_sub(1));
            }
            FollowUp::Restart(node) => {
                if self.down.remove(&node) {
                    sim.bounce(name(node));
                }
            }
            FollowUp::ClockDriftEnds(node) => self.clocks[(node - 1) as usize].set_drift(now_ms, 0),
            FollowUp::LatencyEnds => {
                self.latency_spikes = self.latency_spikes.saturating_sub(1);
                if self.latency_spikes == 0 {
                    sim.set_max_message_latency(self.base_max_latency);
                }
            }
            FollowUp::DiskHeals(node) => {
                self.disks[(node - 1) as usize].heal();
                // A node its disk stopped is restarted once the disk works again, as a
                // process supervisor would (if the damage is real it refuses to start).
                if !self.down.contains(&node) && !sim.is_host_running(name(node)) {
                    sim.bounce(name(node));
                    self.log.push(format!(
                        "{:>7.3} s  restart n{node}, which its disk had stopped",
                        now_ms as f64 / 1000.0
                    ));
                }
            }
            FollowUp::DiskSpaceFreed(nodes) => {
                for node in nodes {
                    self.disks[(node - 1) as usize].set_no_space(false);
                }
            }
            FollowUp::SupervisorRestart(node) => {
                self.restarting.remove(&node);
                if !self.down.contains(&node) && !sim.is_host_running(name(node)) {
                    sim.bounce(name(node));
                    let at = now_ms as f64 / 1000.0;
                    self.log.push(format!(
                        "{at:>7.3} s  restart n{node}, which had stopped on its own"
                    ));
                }
            }
            FollowUp::CrashSprung { node, down_ms, what } => {
                // The observer is not told (unlike `crash`): it goes on naming the sprung node
                // as the leader until it sees the next one, and the faults aimed at "the
                // leader" meanwhile find it down and are skipped — the schedules the
                // planted-bug bounds were measured with.
                if self.down.insert(node) {
                    sim.crash(name(node));
                    self.log.push(format!(
                        "{:>7.3} s  crash n{node} (it {what}), restart after {down_ms} ms",
                        now_ms as f64 / 1000.0
                    ));
                    self.later(now_ms + down_ms, FollowUp::Restart(node));
                }
            }
            FollowUp::BounceBacker { leader, backer, down_ms, deaf_ms } => {
                if self.crash(backer, now_ms + down_ms, sim, observers) {
                    self.cut(leader, backer, sim);
                    self.later(now_ms + deaf_ms, FollowUp::Reconnect(vec![(leader, backer)]));
                    self.log.push(format!(
                        "{:>7.3} s  crash n{backer} (it backs n{leader}'s lease), restart after \
                         {down_ms} ms, deaf to n{leader} for {deaf_ms} ms",
                        now_ms as f64 / 1000.0
                    ));
                }
            }
        }
    }

    /// Ends every fault at once (the liveness phase). Nodes whose disk stopped them are
    /// restarted too: if the damage is real they refuse to start, which is correct.
    pub fn heal_all(&mut self, now_ms: u64, sim: &mut Sim<'_>) {
        // Before the cuts are repaired: turmoil does not combine a hold with them.
        self.release_hold(sim);
        for ((from, to), _) in std::mem::take(&mut self.cuts) {
            sim.repair_oneway(name(from), name(to));
        }
        self.down.clear();
        self.restarting.clear();
        // Crashed nodes, and nodes that stopped because their disk failed them.
        for node in 1..=self.nodes {
            if !sim.is_host_running(name(node)) {
                sim.bounce(name(node));
            }
        }
        for clock in &self.clocks {
            clock.set_drift(now_ms, 0);
        }
        for disk in &self.disks {
            disk.heal();
        }
        for node in 1..=self.nodes {
            if !sim.is_host_running(name(node)) {
                sim.bounce(name(node));
            }
        }
        self.latency_spikes = 0;
        sim.set_max_message_latency(self.base_max_latency);
        self.follow_ups.clear();
        self.new_leader_traps.clear();
        self.event_traps.clear();
        self.timeout_now_trap = None;
        self.admin.queue.borrow_mut().clear();
        self.workload.read_only_spells.set(0);
        self.next = self.schedule.len();
        self.log.push(format!("{:>7.3} s  heal everything", now_ms as f64 / 1000.0));
    }
}

pub fn family_name(family: FaultFamily) -> &'static str {
    match family {
        FaultFamily::Membership => "membership",
        FaultFamily::Partition => "partition",
        FaultFamily::Crash => "crash",
        FaultFamily::Clock => "clock",
        FaultFamily::Latency => "latency",
        FaultFamily::Disk => "disk",
    }
}

/// Splits the voters other than `leader` into its backers (with it, a bare quorum) and the
/// rivals that could elect another leader without it; `pick` rotates who is which. None if
/// `leader` is no voter or the cluster is too small to have rivals.
fn lease_backers(
    leader: u64,
    voters: &[conclave_core::raft::NodeId],
    pick: u64,
) -> Option<(u64, Vec<u64>, Vec<u64>)> {
    if voters.len() < 3 || !voters.iter().any(|v| v.0 == leader) {
        return None;
    }
    let mut others: Vec<u64> = voters.iter().map(|v| v.0).filter(|v| *v != leader).collect();
    let turn = (pick % others.len() as u64) as usize;
    others.rotate_left(turn);
    let rivals = others.split_off(voters.len() / 2);
    Some((leader, others, rivals))
}

fn resolve(target: Target, leader: Option<u64>) -> Option<u64> {
    match target {
        Target::Node(node) => Some(node),
        Target::Leader => leader,
    }
}
