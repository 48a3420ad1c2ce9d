//! The observers of a world: one [`Observer`] per Raft group — one in a single-group world, one
//! per shard in a sharded one. Each group's Raft invariants are its own (terms, logs and
//! commits of different groups are unrelated); what spans groups lives here: a node's crash
//! concerns every group it hosts, the nemesis's traps spring on any group's events, and every
//! change a group applies must be of a key whose slot that group owns.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use conclave_core::engine::{CycleView, EngineProbe};
use conclave_core::kv::{KvEvent, KvRequest};
use conclave_core::raft::{Entry, EntryPayload, LogIndex, NodeId};
use conclave_core::shard::{ShardId, ShardMap};

use crate::observer::{ObservedStats, Observer};
use crate::schedule::NodeEvent;
use crate::trace::TraceHash;

pub struct Observers {
    groups: BTreeMap<ShardId, Rc<RefCell<Observer>>>,
    /// The map the world was created with (sharded worlds only): which group owns each key.
    map: Option<Arc<ShardMap>>,
}

impl Observers {
    /// A single-group world of `voters` voters (nodes 1 to `voters`).
    pub fn single_group(voters: usize) -> Observers {
        let observer = Rc::new(RefCell::new(Observer::new(voters)));
        Observers { groups: BTreeMap::from([(ShardId::META, observer)]), map: None }
    }

    /// A sharded world: an observer per shard of `map`, each knowing its group's replicas.
    pub fn sharded(map: Arc<ShardMap>) -> Observers {
        let groups = map
            .shards()
            .map(|(shard, info)| {
                (shard, Rc::new(RefCell::new(Observer::with_voters(&info.replicas))))
            })
            .collect();
        Observers { groups, map: Some(map) }
    }

    /// The meta group's observer (the only one in a single-group world): the nemesis aims
    /// its leader-targeted faults at that group's leader.
    pub fn meta(&self) -> &Rc<RefCell<Observer>> {
        &self.groups[&ShardId::META]
    }

    pub fn group(&self, shard: ShardId) -> &Rc<RefCell<Observer>> {
        &self.groups[&shard]
    }

    pub fn is_sharded(&self) -> bool {
        self.map.is_some()
    }

    pub fn shard_of_key(&self, key: &str) -> ShardId {
        self.map.as_ref().map_or(ShardId::META, |map| map.shard_of_key(key.as_bytes()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &Rc<RefCell<Observer>>)> {
        self.groups.iter().map(|(shard, observer)| (*shard, observer))
    }

    /// The first violation any group's observer saw, naming the group in a sharded world.
    pub fn first_violation(&self) -> Option<String> {
        self.groups.iter().find_map(|(shard, observer)| {
            let observer = observer.borrow();
            let violation = observer.violations().first()?;
            Some(if self.is_sharded() {
                format!("{shard}: {violation}")
            } else {
                violation.clone()
            })
        })
    }

    /// `node` crashed or stopped: it leads none of its groups any more.
    pub fn on_node_down(&self, node: NodeId) {
        for observer in self.groups.values() {
            observer.borrow_mut().on_node_down(node);
        }
    }

    /// The node events every group saw since the last call, in group order.
    pub fn take_events(&self) -> Vec<(NodeId, NodeEvent)> {
        self.groups.values().flat_map(|observer| observer.borrow_mut().take_events()).collect()
    }

    pub fn take_timeout_nows(&self) -> Vec<(NodeId, NodeId)> {
        self.groups
            .values()
            .flat_map(|observer| observer.borrow_mut().take_timeout_nows())
            .collect()
    }

    /// Whether every group has a leader (liveness after healing).
    pub fn every_group_led(&self) -> bool {
        self.groups.values().all(|observer| observer.borrow().current_leader().is_some())
    }

    /// Each group's highest commit index: what its members must reach to have converged.
    pub fn commit_targets(&self) -> BTreeMap<ShardId, LogIndex> {
        self.iter().map(|(shard, observer)| (shard, observer.borrow().max_commit())).collect()
    }

    /// The members of each group still below that group's target, as "member at commit N"
    /// (naming the group in a sharded world).
    pub fn members_behind(&self, targets: &BTreeMap<ShardId, LogIndex>) -> Vec<String> {
        self.iter()
            .flat_map(|(shard, observer)| {
                let target = targets.get(&shard).copied().unwrap_or(0);
                let behind = observer.borrow().members_behind(target);
                behind.into_iter().map(move |(id, commit)| {
                    if self.is_sharded() {
                        format!("{id} of {shard} at commit {commit} (target {target})")
                    } else {
                        format!("{id} at commit {commit}")
                    }
                })
            })
            .collect()
    }

    /// One line per node of every group, for liveness failures.
    pub fn node_summaries(&self) -> Vec<String> {
        self.iter()
            .flat_map(|(shard, observer)| {
                let lines = observer.borrow().node_summaries();
                lines.into_iter().map(move |line| {
                    if self.is_sharded() { format!("{shard} {line}") } else { line }
                })
            })
            .collect()
    }

    /// The groups' statistics, summed.
    pub fn final_stats(&self) -> ObservedStats {
        let mut total = ObservedStats::default();
        for observer in self.groups.values() {
            total.add(&observer.borrow().final_stats());
        }
        total
    }

    /// The trace of what the groups did: the one group's, or their hashes folded in group
    /// order.
    pub fn trace(&self) -> TraceHash {
        if !self.is_sharded() {
            return self.meta().borrow().trace;
        }
        let mut trace = TraceHash::default();
        for observer in self.groups.values() {
            trace.add(observer.borrow().trace.value());
        }
        trace
    }

    /// Every group's TTL expiries, merged (keys are unique to one group).
    pub fn expiries(&self) -> BTreeMap<(String, String), u64> {
        let mut merged = BTreeMap::new();
        for observer in self.groups.values() {
            merged.extend(observer.borrow().expiries.iter().map(|(k, v)| (k.clone(), *v)));
        }
        merged
    }
}

/// The probe one engine instance reports through: each cycle to its group's observer.
pub struct NodeProbe {
    pub node: NodeId,
    pub observers: Rc<Observers>,
}

impl EngineProbe for NodeProbe {
    fn observe(&mut self, view: CycleView<'_>) {
        let shard = view.shard;
        let misplaced = self.observers.map.as_ref().and_then(|map| {
            misplaced_key(map, shard, view.applied, view.changes).map(|(key, revision)| {
                let owner = map.shard_of_key(key.as_bytes());
                let at = match revision {
                    Some(revision) => format!(" (a change at revision {revision})"),
                    None => String::new(),
                };
                format!("{} applied a command on key {key:?}{at}, which {owner} owns", self.node)
            })
        });
        let mut observer = self.observers.group(shard).borrow_mut();
        observer.observe(self.node, view);
        if let Some(violation) = misplaced {
            observer.report_violation(violation);
        }
    }
}

/// The first key that `shard` applied a command on (every command, whether it changed
/// anything or not: a failed compare-and-swap reads its key too) or changed (TTL expiries are
/// the state machine's own), though `map` gives its slot to another shard; with the revision
/// of the change, if it was one.
fn misplaced_key(
    map: &ShardMap,
    shard: ShardId,
    applied: &[Entry],
    changes: &[KvEvent],
) -> Option<(String, Option<u64>)> {
    let foreign = |key: &str| map.shard_of_key(key.as_bytes()) != shard;
    for entry in applied {
        let EntryPayload::Command(bytes) = &entry.payload else { continue };
        let Ok(request) = KvRequest::decode(bytes) else { continue };
        if let Some(key) = request.command.point_keys().into_iter().find(|key| foreign(key)) {
            return Some((key.to_string(), None));
        }
    }
    let change = changes.iter().find(|change| foreign(&change.key))?;
    Some((change.key.clone(), Some(change.mod_revision)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use conclave_core::kv::{Condition, KvCommand, KvEventKind};
    use conclave_core::shard::SlotCount;

    use super::*;

    fn map() -> ShardMap {
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        ShardMap::bootstrap(SlotCount::new(64).expect("64 slots"), 4, &members, 3).expect("a map")
    }

    fn put(key: &str, index: u64) -> Entry {
        let command = KvCommand::Put {
            key: key.into(),
            value: Bytes::from_static(b"v"),
            ttl_ms: None,
            condition: Condition::Always,
        };
        let request = KvRequest { command, session: None, leader_time_ms: 0 };
        let bytes = request.encode().expect("a small request encodes");
        Entry { index, term: 1, payload: EntryPayload::Command(bytes) }
    }

    /// Two keys that the map gives to different shards.
    fn keys_of_two_shards(map: &ShardMap) -> (String, String) {
        let first = "k0".to_string();
        let other = (1..1000)
            .map(|n| format!("k{n}"))
            .find(|key| map.shard_of_key(key.as_bytes()) != map.shard_of_key(first.as_bytes()))
            .expect("64 slots over 4 shards");
        (first, other)
    }

    #[test]
    fn a_command_on_a_key_of_another_shard_is_found() {
        let map = map();
        let (own, foreign) = keys_of_two_shards(&map);
        let shard = map.shard_of_key(own.as_bytes());
        assert_eq!(misplaced_key(&map, shard, &[put(&own, 1)], &[]), None);
        let found = misplaced_key(&map, shard, &[put(&own, 1), put(&foreign, 2)], &[]);
        assert_eq!(found, Some((foreign, None)));
    }

    #[test]
    fn a_change_of_a_key_of_another_shard_is_found() {
        let map = map();
        let (own, foreign) = keys_of_two_shards(&map);
        let shard = map.shard_of_key(own.as_bytes());
        let change = |key: &str| KvEvent {
            key: key.into(),
            kind: KvEventKind::Expire,
            value: Bytes::from_static(b"v"),
            mod_revision: 7,
        };
        assert_eq!(misplaced_key(&map, shard, &[], &[change(&own)]), None);
        assert_eq!(misplaced_key(&map, shard, &[], &[change(&foreign)]), Some((foreign, Some(7))));
    }
}
