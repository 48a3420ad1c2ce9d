//! Which peer nodes this node hears from, counted in ticks. Quiescent groups do not run their
//! own election timers, so the host wakes them when the node-level view changes: a peer that
//! falls silent (its groups may need a new leader) or that is heard again (it may need
//! catching up). Every batch counts as hearing from its sender, and an empty batch is sent
//! every heartbeat interval for exactly this purpose.

use std::collections::BTreeMap;

use crate::raft::NodeId;

#[derive(Debug)]
pub struct PeerLiveness {
    /// A peer silent for this many ticks is considered down.
    timeout_ticks: u32,
    /// Ticks since each known peer was last heard from.
    silence_ticks: BTreeMap<NodeId, u32>,
}

impl PeerLiveness {
    pub fn new(timeout_ticks: u32) -> PeerLiveness {
        assert!(timeout_ticks > 0, "a peer needs some time to be heard");
        PeerLiveness { timeout_ticks, silence_ticks: BTreeMap::new() }
    }

    /// Sets the peers to follow. New peers start as just heard (a node that starts gives its
    /// peers a timeout to show up); peers no longer listed are forgotten.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        let previous = std::mem::take(&mut self.silence_ticks);
        for peer in peers {
            let silence = previous.get(&peer).copied().unwrap_or(0);
            self.silence_ticks.insert(peer, silence);
        }
    }

    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.silence_ticks.keys().copied()
    }

    pub fn is_live(&self, peer: NodeId) -> bool {
        self.silence_ticks.get(&peer).is_some_and(|silence| *silence < self.timeout_ticks)
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

    /// `peer` was heard from; returns whether it had been considered down. Unknown senders
    /// are not followed (the groups say who the peers are).
    pub fn heard(&mut self, peer: NodeId) -> bool {
        let Some(silence) = self.silence_ticks.get_mut(&peer) else { return false };
        let was_down = *silence >= self.timeout_ticks;
        *silence = 0;
        was_down
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
        assert!(!liveness.heard(NodeId(2)), "it was live");
        assert!(liveness.tick().is_empty());
        assert_eq!(liveness.tick(), vec![NodeId(3)], "3 ticks without news of 3");
        assert!(liveness.is_live(NodeId(2)) && !liveness.is_live(NodeId(3)));
        assert!(liveness.tick().contains(&NodeId(2)));
        assert!(liveness.tick().is_empty(), "silence is reported once");
        assert!(liveness.heard(NodeId(3)), "back from down");
        assert!(liveness.is_live(NodeId(3)));
        assert!(!liveness.heard(NodeId(9)) && !liveness.is_live(NodeId(9)), "not a peer");
    }
}
