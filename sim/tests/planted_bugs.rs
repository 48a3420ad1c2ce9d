//! The harness proves it can find bugs: each deliberately planted Raft, storage, state-machine,
//! read or watch bug must be caught — an invariant broken, a panic on an assertion, a
//! non-linearizable history, a read of a state that never existed, a watch that repeats or
//! loses a change, or a cluster that no longer makes progress — within a bounded number of
//! seeds. The seeds needed are printed (and reported in the README). Runs use the leader-churn
//! profile (leaders crashed or isolated every few hundred milliseconds), the standard one or
//! the sharded one, with 10 simulated seconds of faults each.

use conclave_sim::{
    DrawOptions, DrawProfile, FailureKind, Fault, Outcome, PlantedBug, RunConfig, RunOptions, run,
};

fn seeds_to_catch(bug: PlantedBug, profile: DrawProfile, bound: u64) -> (u64, String) {
    seeds_to_catch_among(bug, profile, bound, |_| true)
}

/// Like `seeds_to_catch`, but runs only the seeds whose drawn run satisfies `aimed` (a fault
/// aimed at the bug's class is in its schedule); the others are skipped, not counted.
fn seeds_to_catch_among(
    bug: PlantedBug,
    profile: DrawProfile,
    bound: u64,
    aimed: impl Fn(&RunConfig) -> bool,
) -> (u64, String) {
    let options = DrawOptions { fault_phase_ms: 10_000, planted_bug: Some(bug), profile };
    let mut run_seeds = 0;
    for seed in 0.. {
        if run_seeds == bound {
            break;
        }
        let config = RunConfig::draw(seed, &options);
        if !aimed(&config) {
            continue;
        }
        run_seeds += 1;
        let report = run(&config, RunOptions::default());
        match report.outcome {
            // An exhausted checker budget is not a catch: it proves nothing.
            Outcome::Fail { kind: FailureKind::CheckerUnknown, .. } => continue,
            Outcome::Fail { kind, detail } => {
                let first_line = detail.lines().next().unwrap_or_default().to_string();
                return (run_seeds, format!("{kind:?} at seed {seed}: {first_line}"));
            }
            Outcome::Pass | Outcome::LeaseAnomalyUnderExcessiveDrift => {}
        }
    }
    panic!("planted bug {} was not caught within {bound} seeds", bug.name());
}

/// Whether the schedule of `config` carries a `BounceLeaseBacker`.
fn bounces_a_lease_backer(config: &RunConfig) -> bool {
    config.schedule.iter().any(|timed| matches!(timed.fault, Fault::BounceLeaseBacker { .. }))
}

fn assert_caught(bug: PlantedBug, bound: u64) {
    assert_caught_in(bug, DrawProfile::LeaderChurn, bound);
}

fn assert_caught_in(bug: PlantedBug, profile: DrawProfile, bound: u64) -> String {
    let (seeds, how) = seeds_to_catch(bug, profile, bound);
    println!("planted bug {} caught after {seeds} {} seed(s): {how}", bug.name(), profile.name());
    how
}

/// Caught, and by the check whose report contains `check`.
fn assert_caught_by(bug: PlantedBug, bound: u64, check: &str) {
    let how = assert_caught_in(bug, DrawProfile::Standard, bound);
    assert!(how.contains(check), "{} was caught, but not by {check:?}: {how}", bug.name());
}

#[test]
fn ignoring_a_follower_whose_log_got_shorter_is_caught() {
    // Needs a disk that loses synced records (the standard profile's disk faults) on a
    // follower whose leader survives until the cluster is asked to converge.
    assert_caught_in(PlantedBug::IgnoreShortenedLog, DrawProfile::Standard, 400);
}

#[test]
fn recovery_that_truncates_at_damage_is_caught() {
    // Needs a disk damaged at rest (the standard profile's disk faults) in a record that
    // later records vouch for, in the last segment.
    assert_caught_in(PlantedBug::TruncateAtDamage, DrawProfile::Standard, 200);
}

#[test]
fn storage_bugs_are_caught_in_sharded_worlds_too() {
    // A node hosting many groups keeps one log for all of them: the disk loses the shared
    // log's newest records (each group only what its own peers hold) or is damaged at rest,
    // and each group's observer checks what its group was promised.
    assert_caught_in(PlantedBug::TruncateAtDamage, DrawProfile::Sharded, 100);
    assert_caught_in(PlantedBug::IgnoreShortenedLog, DrawProfile::Sharded, 100);
}

#[test]
fn recovery_that_trusts_a_damaged_hard_state_file_is_caught() {
    // Needs the newest hard-state slot damaged at rest after its node granted a vote.
    assert_caught_in(PlantedBug::HardStateFileOnly, DrawProfile::Standard, 200);
}

#[test]
fn a_watch_resumed_with_repeats_is_caught() {
    // The watcher resumes after every broken or abandoned stream; the check counts each change
    // it receives against what the replicas made.
    assert_caught_in(PlantedBug::WatchResumeRepeats, DrawProfile::Standard, 20);
}

#[test]
fn a_stale_range_read_that_hides_keys_is_caught_by_the_read_check() {
    // Only stale reads are wrong, and they are not in the linearizable history: the read
    // check holds each to the state of the store revision it was served at.
    assert_caught_by(PlantedBug::StaleRangeLosesMore, 20, "reads:");
}

#[test]
fn replicas_applying_by_their_own_clocks_are_caught_by_the_state_comparison() {
    // No Raft invariant breaks: the logs agree, the state machines do not.
    assert_caught_by(PlantedBug::ApplyByLocalClock, 20, "state-machine safety");
}

#[test]
fn a_lease_kept_after_a_timeout_now_is_caught_by_the_lease_check() {
    // Needs lease reads on, and the slow transfer: a TimeoutNow held past the transfer's
    // timeout, its sender cut from its peers as the hold ends. The lease check sees the old
    // leader still leasing after the target won, whether or not a read met a write.
    assert_caught_by(PlantedBug::LeaseSurvivesTimeoutNow, 200, "lease safety");
}

#[test]
fn a_restarted_node_voting_inside_a_lease_it_backed_is_caught_by_the_lease_check() {
    // Needs lease reads on and the aimed fault: a leader cut from its rivals, its lease
    // resting on backers that crash and come back quickly, while the clients only read (so
    // the rivals' logs stay electable). Only the seeds whose schedule carries it are run.
    let (seeds, how) = seeds_to_catch_among(
        PlantedBug::RestartedNodeVotesAtOnce,
        DrawProfile::Standard,
        60,
        bounces_a_lease_backer,
    );
    println!(
        "planted bug {} caught after {seeds} seed(s) carrying the aimed fault: {how}",
        PlantedBug::RestartedNodeVotesAtOnce.name()
    );
    assert!(how.contains("lease safety"), "caught, but not by the lease check: {how}");
}

#[test]
fn double_vote_is_caught() {
    assert_caught(PlantedBug::DoubleVote, 20);
}

#[test]
fn ack_before_sync_is_caught() {
    assert_caught(PlantedBug::AckBeforeSync, 20);
}

#[test]
fn granting_a_vote_before_it_is_durable_is_caught() {
    // The observer checks every granted vote against what storage reported durable, so this
    // is caught at the first election, whether or not a crash falls in the window.
    assert_caught(PlantedBug::VoteBeforeSync, 5);
}

#[test]
fn keeping_a_conflicting_suffix_is_caught() {
    assert_caught(PlantedBug::KeepConflictingSuffix, 50);
}

#[test]
fn stale_leader_reads_are_caught() {
    // Needs a read sent to a leader already cut off and replaced: seven leader-churn seeds in
    // 0..400 show it on the build that added range reads (first at seed 104).
    assert_caught(PlantedBug::StaleLeaderRead, 400);
}

#[test]
fn committing_an_old_term_entry_by_counting_is_caught() {
    // Raft's figure 8 needs three leaders in a row to die young; it is the rarest: about one
    // leader-churn seed in 200 shows it (three in seeds 0..1000 on one build; on another the
    // first was seed 579), so any change to timing can move the first catch by hundreds.
    assert_caught(PlantedBug::CommitOldTermByCounting, 2000);
}
