//! Deliberately planted bugs (Raft, storage, watches), to prove the simulator catches what it
//! claims to catch.
//! The enum always exists; setting one requires the `planted-bugs` feature, which only the
//! simulator's builds enable.

/// Each variant breaks one rule of Raft.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Grant a vote even after voting for another candidate in the same term.
    DoubleVote,
    /// Commit an entry of an earlier term by counting its replicas (figure 8).
    CommitOldTermByCounting,
    /// Acknowledge appended entries before they are durable.
    AckBeforeSync,
    /// Send a granted vote before the vote is durable (a crash in that window lets the node
    /// vote again in the same term).
    VoteBeforeSync,
    /// Answer ReadIndex requests at once, without confirming leadership or waiting for the
    /// leader's first commit.
    StaleLeaderRead,
    /// On a conflicting entry, overwrite it but keep the stale entries after it.
    KeepConflictingSuffix,
    /// Treat every rejection at or below a follower's matched index as stale, even when the
    /// follower's log has become shorter than that (it lost entries it had acknowledged): the
    /// leader then never catches it up.
    IgnoreShortenedLog,
    /// Storage: recovery takes a damaged record anywhere in the last segment for a torn tail and
    /// truncates the log there, even when later records vouch that it had been synced.
    TruncateAtDamage,
    /// Storage: recovery trusts the hard-state file alone, ignoring the log's newer copy of the
    /// term and vote (a damaged newest slot then silently rolls the vote back).
    HardStateFileOnly,
    /// Watches: a resumed watch starts again at the revision of the last change it delivered,
    /// sending that revision's delivered changes a second time.
    WatchResumeRepeats,
    /// Reads: a stale range read served locally says no more keys follow even when its limit
    /// cut it short (the local read path's own range code, apart from the engine's).
    StaleRangeLosesMore,
    /// State machine: an entry is applied at the applying node's own clock instead of the
    /// leader time the entry carries, so replicas expire TTL keys at different revisions.
    ApplyByLocalClock,
    /// Leases: a leader that sent TimeoutNow keeps leasing once the transfer is given up,
    /// although the target may still win with the TimeoutNow it holds.
    LeaseSurvivesTimeoutNow,
    /// Leases: a node that just restarted grants votes at once, although the lease of the
    /// leader it acknowledged before it went down may rest on that acknowledgement.
    RestartedNodeVotesAtOnce,
}

/// Whether `bug` is planted in a component (storage, a watch) configured with `planted`
/// (always false without the feature).
pub fn is_planted(planted: Option<PlantedBug>, bug: PlantedBug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        planted == Some(bug)
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = (planted, bug);
        false
    }
}

impl super::node::Raft {
    /// Whether `bug` is planted in this node (always false without the feature).
    pub(super) fn planted(&self, bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.config.planted_bug == Some(bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }
}
