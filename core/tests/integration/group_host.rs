//! Many Raft groups per node through `GroupHost`, on an in-memory network of three nodes that
//! persist and apply at once: every group elects a leader over coalesced batches; idle groups
//! quiesce and then cost no ticks and no group messages; a proposal wakes only its group;
//! groups led by a node that dies elect new leaders although they were quiescent, and the node
//! is caught up when it returns; a quiescent leader answers no read from a lease; the same
//! seeds give the same run.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use conclave_core::raft::{
    EntryPayload, LeaseConfig, NodeId, Raft, RaftConfig, RestoredState, Role, Term,
};
use conclave_core::shard::{GroupHost, HostConfig, HostCounters, NodeBatch, ShardId};

const NODES: u64 = 3;
const SHARDS: u32 = 24;
/// Generous bounds on how long things may take, in ticks (election timeout 50, heartbeat 5).
const SETTLE_TICKS: u64 = 1_000;

fn raft_config() -> RaftConfig {
    RaftConfig {
        lease_read: Some(LeaseConfig { max_clock_drift_ppm: 50_000 }),
        ..Default::default()
    }
}

struct Network {
    hosts: BTreeMap<NodeId, GroupHost>,
    down: BTreeSet<NodeId>,
    ticks: u64,
    /// Commands applied, per node and shard, in order.
    applied: BTreeMap<(NodeId, ShardId), Vec<Bytes>>,
    /// Reads released, per node and shard (their contexts).
    reads: BTreeMap<(NodeId, ShardId), Vec<u64>>,
    /// The most batches one node sent another within one tick.
    max_batches_per_pair_per_tick: usize,
    /// The most group messages one batch carried.
    max_group_messages_per_batch: usize,
}

impl Network {
    fn new(seed: u64) -> Network {
        Network::with_host_config(seed, HostConfig::for_raft(&raft_config()))
    }

    fn with_host_config(seed: u64, host_config: HostConfig) -> Network {
        let config = raft_config();
        let voters: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let mut hosts = BTreeMap::new();
        for &node in &voters {
            let mut host = GroupHost::new(node, host_config, node.0);
            for shard in 0..SHARDS {
                let rng_seed = seed ^ (node.0 << 32) ^ u64::from(shard);
                let raft = Raft::new(
                    node,
                    config.clone(),
                    RestoredState::bootstrap(voters.iter().copied()),
                    rng_seed,
                );
                host.add_group(ShardId(shard), raft);
            }
            hosts.insert(node, host);
        }
        Network {
            hosts,
            down: BTreeSet::new(),
            ticks: 0,
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            max_batches_per_pair_per_tick: 0,
            max_group_messages_per_batch: 0,
        }
    }

    fn host(&mut self, node: NodeId) -> &mut GroupHost {
        self.hosts.get_mut(&node).expect("a node of the network")
    }

    /// Carries out `node`'s output (persisting and applying at once); returns the batches it
    /// sends, and whether any group had something ready.
    fn carry_out(&mut self, node: NodeId) -> (Vec<NodeBatch>, bool) {
        let ready = self.host(node).ready();
        let progressed = !ready.groups.is_empty();
        for (shard, ready) in ready.groups {
            assert!(ready.snapshot_to_apply.is_none(), "nothing is compacted here");
            let raft = self.host(node).group_mut_without_waking(shard).expect("hosted");
            if let Some(batch) = ready.persist {
                raft.persisted(batch.id);
            }
            if let Some(last) = ready.committed_entries.last() {
                raft.applied(last.index);
            }
            let applied = self.applied.entry((node, shard)).or_default();
            for entry in &ready.committed_entries {
                if let EntryPayload::Command(command) = &entry.payload {
                    applied.push(command.clone());
                }
            }
            let reads = self.reads.entry((node, shard)).or_default();
            reads.extend(ready.reads.iter().map(|read| read.context));
        }
        (ready.batches, progressed)
    }

    /// Carries out every live host's output and delivers every batch, until nothing moves.
    fn settle(&mut self) {
        let mut sent_this_tick: BTreeMap<(NodeId, NodeId), usize> = BTreeMap::new();
        loop {
            let mut in_flight: Vec<NodeBatch> = Vec::new();
            let mut progressed = false;
            let live: Vec<NodeId> =
                self.hosts.keys().copied().filter(|node| !self.down.contains(node)).collect();
            for node in live {
                let (batches, node_progressed) = self.carry_out(node);
                progressed |= node_progressed;
                for batch in batches {
                    let count = sent_this_tick.entry((batch.from, batch.to)).or_default();
                    *count += 1;
                    self.max_batches_per_pair_per_tick =
                        self.max_batches_per_pair_per_tick.max(*count);
                    self.max_group_messages_per_batch =
                        self.max_group_messages_per_batch.max(batch.group_message_count());
                    in_flight.push(batch);
                }
            }
            if in_flight.is_empty() && !progressed {
                return;
            }
            self.deliver(in_flight);
        }
    }

    fn deliver(&mut self, batches: Vec<NodeBatch>) {
        for batch in batches {
            if !self.down.contains(&batch.to) && !self.down.contains(&batch.from) {
                self.host(batch.to).step(batch);
            }
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        let live: Vec<NodeId> =
            self.hosts.keys().copied().filter(|node| !self.down.contains(node)).collect();
        for node in live {
            self.host(node).tick();
        }
        self.settle();
    }

    /// Ticks until `done` holds; panics after `limit` ticks.
    fn tick_until(&mut self, limit: u64, what: &str, done: impl Fn(&Network) -> bool) {
        for _ in 0..limit {
            if done(self) {
                return;
            }
            self.tick();
        }
        assert!(done(self), "{what}: not within {limit} ticks");
    }

    /// The leader of `shard` that the live nodes agree on, in the highest term they know.
    fn leader_of(&self, shard: ShardId) -> Option<(NodeId, Term)> {
        let live = self.hosts.iter().filter(|(node, _)| !self.down.contains(node));
        let views: BTreeSet<(NodeId, Term)> = live
            .filter_map(|(_, host)| host.group(shard))
            .map(|raft| (raft.leader(), raft.term()))
            .collect();
        let (leader, term) = *views.iter().next()?;
        let agreed = views.len() == 1 && !leader.is_none() && !self.down.contains(&leader);
        let leads = agreed
            && self.hosts[&leader].group(shard).is_some_and(|raft| raft.role() == Role::Leader);
        leads.then_some((leader, term))
    }

    /// Proposes `command` at `shard`'s leader, which must take it.
    fn propose_at_leader(&mut self, shard: ShardId, command: &Bytes) {
        let (leader, _) = self.leader_of(shard).expect("led");
        self.host(leader)
            .group_mut(shard)
            .expect("hosted")
            .propose(EntryPayload::Command(command.clone()))
            .expect("the leader takes it");
    }

    fn every_group_led(&self) -> bool {
        (0..SHARDS).all(|shard| self.leader_of(ShardId(shard)).is_some())
    }

    fn every_live_group_quiescent(&self) -> bool {
        self.hosts
            .iter()
            .filter(|(node, _)| !self.down.contains(node))
            .all(|(_, host)| host.shards().all(|shard| host.is_quiescent(shard)))
    }

    fn counters(&self) -> BTreeMap<NodeId, HostCounters> {
        self.hosts.iter().map(|(node, host)| (*node, host.counters().clone())).collect()
    }

    /// A network whose groups are all led and all quiescent.
    fn quiet(seed: u64) -> Network {
        let mut network = Network::new(seed);
        network.tick_until(SETTLE_TICKS, "every group led", Network::every_group_led);
        network.tick_until(
            SETTLE_TICKS,
            "every group quiescent",
            Network::every_live_group_quiescent,
        );
        network
    }
}

#[test]
fn node_pairs_exchange_at_most_two_batches_a_tick_whatever_the_number_of_groups() {
    // Groups that never quiesce, so that every leader heartbeats all along.
    let busy =
        HostConfig { quiesce_after_idle_ticks: u32::MAX, ..HostConfig::for_raft(&raft_config()) };
    let mut network = Network::with_host_config(3, busy);
    network.tick_until(SETTLE_TICKS, "every group led", Network::every_group_led);
    let before = network.counters();
    network.max_batches_per_pair_per_tick = 0;
    let ticks = 100;
    for _ in 0..ticks {
        network.tick();
    }
    // In a tick, a node sends its peer one batch of heartbeats (of every group it leads that
    // is due) and one of answers (to the peer's heartbeats): two, however many groups.
    assert!(
        network.max_batches_per_pair_per_tick <= 2,
        "{} batches from one node to another in one tick",
        network.max_batches_per_pair_per_tick
    );
    let after = network.counters();
    let messages: u64 = after.values().map(|c| c.group_messages_sent).sum::<u64>()
        - before.values().map(|c| c.group_messages_sent).sum::<u64>();
    let batches: u64 = after.values().map(|c| c.batches_sent).sum::<u64>()
        - before.values().map(|c| c.batches_sent).sum::<u64>();
    // Every group's leader heartbeats both followers every 5 ticks, and both answer.
    let heartbeat_interval = u64::from(raft_config().heartbeat_interval_ticks);
    let expected_messages = u64::from(SHARDS) * 2 * 2 * ticks / heartbeat_interval;
    assert!(
        messages >= expected_messages,
        "{messages} group messages, {expected_messages} expected"
    );
    let ordered_pairs = NODES * (NODES - 1);
    assert!(batches <= 2 * ordered_pairs * ticks, "{batches} batches");
    assert!(messages > batches, "{batches} batches for {messages} group messages: no coalescing");
}

#[test]
fn idle_groups_quiesce_and_then_cost_no_ticks_and_no_group_messages() {
    let mut network = Network::quiet(7);
    let before = network.counters();
    let ping_interval_ticks = u64::from(HostConfig::for_raft(&raft_config()).ping_interval_ticks);
    // A whole number of ping intervals: any such window holds the same number of pings.
    let quiet_ticks = 40 * ping_interval_ticks;
    for _ in 0..quiet_ticks {
        network.tick();
    }
    let after = network.counters();
    for (node, counters) in &after {
        let earlier = &before[node];
        assert_eq!(counters.group_ticks, earlier.group_ticks, "{node}: a quiescent group ticked");
        assert_eq!(counters.woken, earlier.woken, "{node}: a group woke with nothing to do");
        assert_eq!(
            counters.group_messages_sent, earlier.group_messages_sent,
            "{node}: quiescent groups sent messages"
        );
        // Only the node-level pings: one per peer per ping interval (a quarter of the
        // election timeout with these settings, rarer than heartbeats).
        let pings = counters.batches_sent - earlier.batches_sent;
        assert!(ping_interval_ticks > u64::from(raft_config().heartbeat_interval_ticks));
        let expected = (NODES - 1) * quiet_ticks / ping_interval_ticks;
        assert_eq!(pings, expected, "{node}: pings sent while quiet");
    }
}

#[test]
fn the_ticks_a_quiet_host_may_take_late_are_those_with_nothing_to_do() {
    let mut network = Network::quiet(13);
    let nodes: Vec<NodeId> = network.hosts.keys().copied().collect();
    for node in nodes {
        let quiet = network.host(node).quiet_ticks_ahead();
        assert!(quiet > 0, "{node}: every group quiescent, yet no quiet tick ahead");
        for _ in 0..quiet {
            network.host(node).tick();
            assert!(!network.host(node).has_ready(), "{node}: a quiet tick had work");
        }
        // The tick after them pings the peers (or finds one silent): not quiet.
        network.host(node).tick();
        assert!(network.host(node).has_ready(), "{node}: the eventful tick did nothing");
        assert_eq!(network.host(node).quiet_ticks_ahead(), 0, "{node}: with batches to send");
        network.settle();
    }
    // A group given work is awake: its leader's host has no quiet tick ahead.
    let shard = ShardId(2);
    network.propose_at_leader(shard, &Bytes::from_static(b"wake"));
    let (leader, _) = network.leader_of(shard).expect("led");
    assert_eq!(network.host(leader).quiet_ticks_ahead(), 0);
}

#[test]
fn a_proposal_wakes_only_its_group_and_commits_on_every_replica() {
    let mut network = Network::quiet(11);
    let shard = ShardId(5);
    let woken_before = network.counters();
    let command = Bytes::from_static(b"set x=1");
    network.propose_at_leader(shard, &command);
    network.settle();
    network.tick_until(SETTLE_TICKS, "applied on every replica", |network| {
        (1..=NODES).all(|node| {
            network
                .applied
                .get(&(NodeId(node), shard))
                .is_some_and(|applied| applied == &vec![command.clone()])
        })
    });
    for (node, counters) in network.counters() {
        assert_eq!(counters.woken, woken_before[&node].woken + 1, "{node}: only {shard} woke");
    }
    for other in (0..SHARDS).map(ShardId).filter(|other| *other != shard) {
        assert!(network.hosts.values().all(|host| host.is_quiescent(other)), "{other} woke");
    }
    network.tick_until(
        SETTLE_TICKS,
        "the group quiesces again",
        Network::every_live_group_quiescent,
    );
}

#[test]
fn groups_led_by_a_node_that_dies_elect_new_leaders_and_it_catches_up_on_return() {
    let mut network = Network::quiet(23);
    let leaders: BTreeMap<ShardId, NodeId> = (0..SHARDS)
        .map(|shard| (ShardId(shard), network.leader_of(ShardId(shard)).expect("led").0))
        .collect();
    let dead = NodeId(1);
    let led_by_dead: Vec<ShardId> =
        leaders.iter().filter(|(_, leader)| **leader == dead).map(|(shard, _)| *shard).collect();
    assert!(!led_by_dead.is_empty(), "seed 23 gives node 1 some leaderships");
    network.down.insert(dead);
    network.tick_until(SETTLE_TICKS, "every group led by a survivor", Network::every_group_led);
    for shard in &led_by_dead {
        let (leader, _) = network.leader_of(*shard).expect("led");
        assert_ne!(leader, dead);
    }
    // With a member down the groups still quiesce (the live ones are a quorum).
    network.tick_until(
        SETTLE_TICKS,
        "quiescent without node 1",
        Network::every_live_group_quiescent,
    );

    // A write while node 1 is away, then it returns: heard again, its groups wake and it
    // learns the new leaders and the write.
    let shard = led_by_dead[0];
    let command = Bytes::from_static(b"written while node 1 was down");
    network.propose_at_leader(shard, &command);
    network.down.remove(&dead);
    network.tick_until(SETTLE_TICKS, "node 1 caught up", |network| {
        network.applied.get(&(dead, shard)).is_some_and(|applied| applied.contains(&command))
            && network.every_group_led()
    });
    network.tick_until(SETTLE_TICKS, "all quiescent again", Network::every_live_group_quiescent);
}

#[test]
fn followers_of_a_leader_replica_that_went_away_elect_another_though_its_node_lives_on() {
    let mut network = Network::quiet(41);
    let shard = ShardId(9);
    let (leader, _) = network.leader_of(shard).expect("led");
    // The replica goes (without a membership change), the node keeps pinging: only the
    // changed hosting version in its batches tells the quiescent followers.
    network.host(leader).remove_group(shard).expect("it was hosted");
    network.tick_until(SETTLE_TICKS, "another replica leads", |network| {
        network.leader_of(shard).is_some_and(|(new_leader, _)| new_leader != leader)
    });
    // The other groups settle again. This one stays awake: a member it cannot replicate to
    // (alive, but without the replica) keeps it from being idle until a membership change
    // replaces that member.
    network.tick_until(SETTLE_TICKS, "the other groups quiescent again", |network| {
        network.hosts.values().all(|host| {
            host.shards().filter(|other| *other != shard).all(|other| host.is_quiescent(other))
        })
    });
    let (new_leader, _) = network.leader_of(shard).expect("led");
    assert!(!network.hosts[&new_leader].is_quiescent(shard));
}

#[test]
fn a_quiescent_leader_answers_no_read_from_its_lease() {
    let mut network = Network::quiet(31);
    let shard = ShardId(3);
    let (leader, _) = network.leader_of(shard).expect("led");
    // A long quiet time: a lease counted in the stopped ticks would still look valid.
    for _ in 0..300 {
        network.tick();
    }
    // Nothing may serve reads from its lease meanwhile (the engine publishes leases from
    // `lease_start_tick`), since its tick count stood still.
    assert!(network.hosts[&leader].is_quiescent(shard));
    assert_eq!(network.hosts[&leader].group(shard).expect("hosted").lease_start_tick(), None);
    let ticks = network.ticks;
    let raft = network.host(leader).group_mut(shard).expect("hosted");
    // Woken, its clock caught up with the ticks it missed (every node started at tick 0).
    assert_eq!(raft.tick_count(), ticks, "the woken leader's clock");
    raft.read_index(42, true).expect("the leader takes the read");
    let (batches, _) = network.carry_out(leader);
    let released_at_once = network.reads.get(&(leader, shard)).is_some_and(|r| r.contains(&42));
    assert!(!released_at_once, "a read answered from a lease the quiescent leader gave up");
    // The heartbeat round confirms the read.
    network.deliver(batches);
    network.settle();
    network.tick_until(100, "the read released after a heartbeat round", |network| {
        network.reads.get(&(leader, shard)).is_some_and(|reads| reads.contains(&42))
    });
}

#[test]
fn the_same_seeds_give_the_same_run() {
    let first = Network::quiet(5);
    let second = Network::quiet(5);
    assert_eq!(first.ticks, second.ticks);
    assert_eq!(first.counters(), second.counters());
    let leaders = |network: &Network| -> Vec<Option<(NodeId, Term)>> {
        (0..SHARDS).map(|shard| network.leader_of(ShardId(shard))).collect()
    };
    assert_eq!(leaders(&first), leaders(&second));
}
