//! Majorities over a (possibly joint) configuration. Every decision — an election won, an index
//! committed, a read confirmed, leadership still held — is "a majority of the voters", or during
//! joint consensus "a majority of the new voters *and* a majority of the old ones" (§4.3).

use std::collections::BTreeSet;

use super::types::{ClusterConfig, NodeId};

/// The largest value that a majority of `voters` has reached, given each voter's value. A
/// voter without a value counts as 0. An empty voter set imposes no constraint (`u64::MAX`),
/// which is what joint consensus needs when there is no outgoing configuration.
pub fn majority_value(voters: &BTreeSet<NodeId>, value_of: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut values: Vec<u64> = voters.iter().map(|id| value_of(*id)).collect();
    values.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the value at position n/2 (0-based, descending) is reached by n/2 + 1.
    values[voters.len() / 2]
}

/// `majority_value` over a configuration, joint-aware.
pub fn committed_value(config: &ClusterConfig, value_of: impl Fn(NodeId) -> u64) -> u64 {
    let incoming = majority_value(&config.voters, &value_of);
    let outgoing = majority_value(&config.outgoing_voters, &value_of);
    incoming.min(outgoing)
}

/// The outcome of a vote count.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    Won,
    Lost,
    Pending,
}

fn tally_one(voters: &BTreeSet<NodeId>, vote_of: &impl Fn(NodeId) -> Option<bool>) -> VoteOutcome {
    if voters.is_empty() {
        return VoteOutcome::Won;
    }
    let needed = voters.len() / 2 + 1;
    let granted = voters.iter().filter(|id| vote_of(**id) == Some(true)).count();
    let missing = voters.iter().filter(|id| vote_of(**id).is_none()).count();
    if granted >= needed {
        VoteOutcome::Won
    } else if granted + missing >= needed {
        VoteOutcome::Pending
    } else {
        VoteOutcome::Lost
    }
}

/// Counts votes (`Some(granted)`, `None` = no answer yet) over a joint-aware configuration.
pub fn tally(config: &ClusterConfig, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteOutcome {
    match (tally_one(&config.voters, &vote_of), tally_one(&config.outgoing_voters, &vote_of)) {
        (VoteOutcome::Won, VoteOutcome::Won) => VoteOutcome::Won,
        (VoteOutcome::Lost, _) | (_, VoteOutcome::Lost) => VoteOutcome::Lost,
        _ => VoteOutcome::Pending,
    }
}

/// Whether the nodes for which `is_ok` holds form a quorum.
pub fn is_quorum(config: &ClusterConfig, is_ok: impl Fn(NodeId) -> bool) -> bool {
    tally(config, |id| Some(is_ok(id))) == VoteOutcome::Won
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[u64]) -> BTreeSet<NodeId> {
        raw.iter().map(|id| NodeId(*id)).collect()
    }

    #[test]
    fn majority_value_is_reached_by_a_majority() {
        let voters = ids(&[1, 2, 3, 4, 5]);
        let matched = |id: NodeId| [0, 9, 7, 7, 3, 1][id.0 as usize];
        // 9, 7, 7 are >= 7: three of five.
        assert_eq!(majority_value(&voters, matched), 7);
        let voters = ids(&[1, 2, 3, 4]);
        // 9, 7, 7, 3: three of four needed, so 7.
        assert_eq!(majority_value(&voters, matched), 7);
    }

    #[test]
    fn joint_configuration_needs_both_majorities() {
        let config = ClusterConfig {
            voters: ids(&[1, 2, 3]),
            outgoing_voters: ids(&[3, 4, 5]),
            ..Default::default()
        };
        let matched = |id: NodeId| [0, 10, 10, 10, 2, 2][id.0 as usize];
        assert_eq!(committed_value(&config, matched), 2);
        let votes = |id: NodeId| Some(id.0 <= 3);
        assert_eq!(tally(&config, votes), VoteOutcome::Lost);
        let votes = |id: NodeId| if id.0 <= 4 { Some(true) } else { None };
        assert_eq!(tally(&config, votes), VoteOutcome::Won);
    }

    #[test]
    fn pending_until_the_outcome_is_decided() {
        let config = ClusterConfig::with_voters(ids(&[1, 2, 3]));
        assert_eq!(tally(&config, |id| (id.0 == 1).then_some(true)), VoteOutcome::Pending);
        assert_eq!(tally(&config, |id| Some(id.0 == 1)), VoteOutcome::Lost);
    }
}
