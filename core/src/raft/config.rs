//! Tunables of the Raft core, all with limits: every queue and message is bounded.

use thiserror::Error;

/// Raft timing is counted in ticks; the engine ticks the core every `tick_ms` milliseconds of
/// its clock. The defaults assume a 10 ms tick: heartbeats every 50 ms, elections after 500 to
/// 1000 ms of silence (the etcd range, scaled for a loopback or LAN cluster).
#[derive(Clone, Debug, PartialEq)]
pub struct RaftConfig {
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)` starts an election.
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Raft §9.6: a node first asks whether it *could* win before bumping its term, so a node
    /// rejoining from a partition cannot depose a healthy leader.
    pub pre_vote: bool,
    /// Raft §6.2: a leader that has not heard from a quorum for an election timeout steps down,
    /// and followers that heard from a leader recently ignore vote requests.
    pub check_quorum: bool,
    /// Lease reads (§6.4.1), off unless configured: the leader answers reads without a round
    /// trip while a quorum acknowledged it within the lease. Safe only if clocks drift by less
    /// than this bound over an election timeout.
    pub lease_read: Option<LeaseConfig>,
    /// At most this many entries in one AppendEntries message.
    pub max_entries_per_message: usize,
    /// At most this many bytes of entries in one AppendEntries message (one entry may exceed).
    pub max_message_bytes: u64,
    /// Pipelining window per follower: AppendEntries sent and not yet acknowledged.
    pub max_inflight_messages: usize,
    pub max_inflight_bytes: u64,
    /// Proposals are refused ("busy") while this much of the log is not committed.
    pub max_uncommitted_bytes: u64,
    pub max_uncommitted_entries: u64,
    /// ReadIndex requests waiting for confirmation are bounded too.
    pub max_pending_reads: usize,
    /// At most this many bytes of committed entries handed to the state machine per batch.
    pub max_apply_batch_bytes: u64,
    /// A deliberate bug, for the simulator's self-test (`planted-bugs` feature only).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<super::planted::PlantedBug>,
}

impl RaftConfig {
    /// The planted bug switched on, if any: always `None` in a build without the
    /// `planted-bugs` feature (every shipped build), so callers need no `cfg` of their own.
    pub fn planted(&self) -> Option<super::planted::PlantedBug> {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted_bug
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            None
        }
    }
}

/// The lease is the election timeout shortened by the worst clock drift: a follower that heard
/// from the leader refuses to vote for `election_timeout_ticks` of *its* clock, which may run
/// fast by up to `max_clock_drift_ppm` (parts per million) relative to the leader's.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub max_clock_drift_ppm: u32,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_timeout_ticks: 50,
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            lease_read: None,
            max_entries_per_message: 1024,
            max_message_bytes: 1024 * 1024,
            max_inflight_messages: 64,
            max_inflight_bytes: 16 * 1024 * 1024,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            max_uncommitted_entries: 200_000,
            max_pending_reads: 100_000,
            max_apply_batch_bytes: 4 * 1024 * 1024,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "heartbeat interval ({heartbeat} ticks) must be shorter than the election timeout ({election} ticks)"
    )]
    HeartbeatNotShorterThanElection { heartbeat: u32, election: u32 },
    #[error("{0} must be positive")]
    Zero(&'static str),
    #[error("lease reads need check_quorum (followers must refuse votes while a leader is alive)")]
    LeaseWithoutCheckQuorum,
    #[error("max_clock_drift_ppm {0} is too large for a lease (must be below 500000)")]
    DriftTooLarge(u32),
}

impl RaftConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (value, name) in [
            (self.election_timeout_ticks as u64, "election_timeout_ticks"),
            (self.heartbeat_interval_ticks as u64, "heartbeat_interval_ticks"),
            (self.max_entries_per_message as u64, "max_entries_per_message"),
            (self.max_message_bytes, "max_message_bytes"),
            (self.max_inflight_messages as u64, "max_inflight_messages"),
            (self.max_inflight_bytes, "max_inflight_bytes"),
            (self.max_uncommitted_bytes, "max_uncommitted_bytes"),
            (self.max_uncommitted_entries, "max_uncommitted_entries"),
            (self.max_pending_reads as u64, "max_pending_reads"),
            (self.max_apply_batch_bytes, "max_apply_batch_bytes"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.heartbeat_interval_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::HeartbeatNotShorterThanElection {
                heartbeat: self.heartbeat_interval_ticks,
                election: self.election_timeout_ticks,
            });
        }
        if let Some(lease) = self.lease_read {
            if !self.check_quorum {
                return Err(ConfigError::LeaseWithoutCheckQuorum);
            }
            if lease.max_clock_drift_ppm >= 500_000 {
                return Err(ConfigError::DriftTooLarge(lease.max_clock_drift_ppm));
            }
        }
        Ok(())
    }

    /// How many ticks after a quorum acknowledged a heartbeat the leader may still answer
    /// reads locally: the election timeout minus the drift margin minus one tick of rounding.
    pub fn lease_ticks(&self) -> Option<u64> {
        let lease = self.lease_read?;
        let timeout = self.election_timeout_ticks as u64;
        let margin = (timeout * lease.max_clock_drift_ppm as u64).div_ceil(1_000_000);
        Some(timeout.saturating_sub(margin).saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_lease(drift_ppm: u32) -> RaftConfig {
        let lease_read = Some(LeaseConfig { max_clock_drift_ppm: drift_ppm });
        RaftConfig { lease_read, ..RaftConfig::default() }
    }

    #[test]
    fn validate_refuses_each_unsafe_setting() {
        assert_eq!(RaftConfig::default().validate(), Ok(()));
        assert_eq!(with_lease(10_000).validate(), Ok(()));
        let no_window = RaftConfig { max_inflight_messages: 0, ..RaftConfig::default() };
        assert_eq!(no_window.validate(), Err(ConfigError::Zero("max_inflight_messages")));
        let slow_heartbeat = RaftConfig { heartbeat_interval_ticks: 50, ..RaftConfig::default() };
        assert_eq!(
            slow_heartbeat.validate(),
            Err(ConfigError::HeartbeatNotShorterThanElection { heartbeat: 50, election: 50 })
        );
        let no_check_quorum = RaftConfig { check_quorum: false, ..with_lease(10_000) };
        assert_eq!(no_check_quorum.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
        assert_eq!(with_lease(500_000).validate(), Err(ConfigError::DriftTooLarge(500_000)));
    }

    #[test]
    fn the_lease_is_the_election_timeout_less_the_drift_margin_and_a_tick() {
        // 50 ticks at 5% drift: a margin of 2.5 ticks, rounded up to 3, and one tick lost to
        // rounding when the lease is measured.
        assert_eq!(with_lease(50_000).lease_ticks(), Some(46));
        assert_eq!(with_lease(0).lease_ticks(), Some(49));
        assert_eq!(RaftConfig::default().lease_ticks(), None, "no lease unless configured");
    }

    /// The simulator's self-test (the planted-bug test) switches bugs on through this.
    #[cfg(feature = "planted-bugs")]
    #[test]
    fn a_planted_bug_is_reported_as_switched_on() {
        use super::super::planted::PlantedBug;
        let config =
            RaftConfig { planted_bug: Some(PlantedBug::DoubleVote), ..RaftConfig::default() };
        assert_eq!(config.planted(), Some(PlantedBug::DoubleVote));
        assert_eq!(RaftConfig::default().planted(), None);
    }
}
