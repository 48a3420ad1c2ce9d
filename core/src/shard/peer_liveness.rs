//! Which peer nodes this node hears from, counted in ticks. Quiescent groups do not run their
//! own election timers, so the host wakes them when the node-level view changes: a peer that
//! falls silent (its groups may need a new leader), that is heard again (it may need
//! catching up), or whose [`Hosting`] changed (it restarted, or dropped a replica, without
//! falling silent). Every batch counts as hearing from its sender, and an empty batch is sent
//! every heartbeat interval for exactly this purpose.

use std::collections::BTreeMap;

use super::node_batch::Hosting;
use crate::raft::NodeId;

#[derive(Debug)]
pub struct PeerLiveness {
    /// A peer silent for this many ticks is considered down.
    timeout_ticks: u32,
    /// Ticks since each known peer was last heard from.
    silence_ticks: BTreeMap<NodeId, u32>,
    /// The hosting each peer last announced.
    hosting: BTreeMap<NodeId, Hosting>,
}

impl PeerLiveness {
    pub fn new(timeout_ticks: u32) -> PeerLiveness {
        assert!(timeout_ticks > 0, "a peer needs some time to be heard");
        PeerLiveness { timeout_ticks, silence_ticks: BTreeMap::new(), hosting: BTreeMap::new() }
    }

    /// Sets the peers to follow. New peers start as just heard (a node that starts gives its
    /// peers a timeout to show up); peers no longer listed are forgotten.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        let previous = std::mem::take(&mut self.silence_ticks);
        for peer in peers {
            let silence = previous.get(&peer).copied().unwrap_or(0);
            self.silence_ticks.insert(peer, silence);
        }
        let silence_ticks = &self.silence_ticks;
        self.hosting.retain(|peer, _| silence_ticks.contains_key(peer));
    }

    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.silence_ticks.keys().copied()
    }

    pub fn is_live(&self, peer: NodeId) -> bool {
        self.silence_ticks.get(&peer).is_some_and(|silence| *silence < self.timeout_ticks)
    }

    /// In how many ticks the first live peer falls silent for a timeout if nobody is heard
    /// from (1: at the next tick); `None` if no peer is live.
    pub fn ticks_until_a_timeout(&self) -> Option<u32> {
        self.silence_ticks
            .values()
            .filter(|silence| **silence < self.timeout_ticks)
            .map(|silence| self.timeout_ticks - silence)
            .min()
    }

    /// One tick passed; returns the peers that have just become silent for a timeout.
    pub fn tick(&mut self) -> Vec<NodeId> {
        let mut fell_silent = Vec::new();
        for (peer, silence) in &mut self.silence_ticks {
            *silence = silence.saturating_add(1);
            if *silence == self.timeout_ticks {
                fell_silent.push(*peer);
            }
        }
        fell_silent
    }

    /// `peer` was heard from, in `hosting`; returns whether that is news for its groups: it
    /// had been considered down, or its hosting changed since it was last heard. Unknown
    /// senders are not followed (the groups say who the peers are).
    pub fn heard(&mut self, peer: NodeId, hosting: Hosting) -> bool {
        let Some(silence) = self.silence_ticks.get_mut(&peer) else { return false };
        let was_down = *silence >= self.timeout_ticks;
        *silence = 0;
        let previous = self.hosting.insert(peer, hosting);
        let hosting_changed = previous.is_some_and(|previous| previous != hosting);
        was_down || hosting_changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_goes_down_after_the_timeout_and_comes_back_when_heard() {
        let mut liveness = PeerLiveness::new(3);
        liveness.set_peers([NodeId(2), NodeId(3)]);
        assert!(liveness.tick().is_empty());
        let hosting = Hosting::default();
        assert!(!liveness.heard(NodeId(2), hosting), "it was live");
        assert!(liveness.tick().is_empty());
        assert_eq!(liveness.tick(), vec![NodeId(3)], "3 ticks without news of 3");
        assert!(liveness.is_live(NodeId(2)) && !liveness.is_live(NodeId(3)));
        assert!(liveness.tick().contains(&NodeId(2)));
        assert!(liveness.tick().is_empty(), "silence is reported once");
        assert!(liveness.heard(NodeId(3), hosting), "back from down");
        assert!(liveness.is_live(NodeId(3)));
        assert!(!liveness.heard(NodeId(9), hosting) && !liveness.is_live(NodeId(9)), "not a peer");
    }

    #[test]
    fn the_next_timeout_is_that_of_the_longest_silent_live_peer() {
        let mut liveness = PeerLiveness::new(4);
        assert_eq!(liveness.ticks_until_a_timeout(), None, "no peers");
        liveness.set_peers([NodeId(2), NodeId(3)]);
        assert_eq!(liveness.ticks_until_a_timeout(), Some(4));
        liveness.tick();
        liveness.heard(NodeId(2), Hosting::default());
        assert_eq!(liveness.ticks_until_a_timeout(), Some(3), "3 was silent for a tick");
        for _ in 0..3 {
            liveness.tick();
        }
        assert!(!liveness.is_live(NodeId(3)));
        assert_eq!(liveness.ticks_until_a_timeout(), Some(1), "a down peer times out no more");
        liveness.tick();
        assert_eq!(liveness.ticks_until_a_timeout(), None, "both down");
    }

    #[test]
    fn a_peer_that_restarted_or_dropped_a_replica_is_news() {
        let mut liveness = PeerLiveness::new(10);
        liveness.set_peers([NodeId(2)]);
        let first = Hosting { incarnation: 7, groups_removed: 0 };
        assert!(!liveness.heard(NodeId(2), first), "the first word from a peer is no change");
        assert!(!liveness.heard(NodeId(2), first));
        let dropped = Hosting { incarnation: 7, groups_removed: 1 };
        assert!(liveness.heard(NodeId(2), dropped));
        assert!(!liveness.heard(NodeId(2), dropped));
        assert!(liveness.heard(NodeId(2), Hosting { incarnation: 8, groups_removed: 0 }));
    }
}
