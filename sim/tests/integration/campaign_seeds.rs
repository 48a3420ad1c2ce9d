//! Every seed that ever failed the 100,000-seed campaign (`sim/campaigns/results/`), run again
//! on every `cargo test`: each found a bug the 1,000 default seeds did not, in the product or in
//! the harness, and each must keep passing now that it is fixed. The fix of each is named beside
//! its seed; the campaign's own record says what failed.

use conclave_sim::{DrawOptions, Outcome, RunConfig, RunOptions, run};

/// (seed, what was fixed).
const ONCE_FAILED: [(u64, &str); 8] = [
    (10726, "a restarted voter backed a lease it could no longer vouch for"),
    (27209, "a member told to campaign was removed while TimeoutNow was on its way"),
    (63230, "a follower committed an entry a lost tail brought back, on a heartbeat"),
    (66228, "a lost synced tail brought back an overwritten older entry"),
    (67029, "the nemesis let two of three voters lose the same committed entry"),
    (78748, "a heartbeat was acknowledged before the term was durable"),
    (79451, "the lost-tail fault dropped a configuration change"),
    (87000, "the observer held a node to a rewrite whose sync failed"),
];

#[test]
fn every_seed_that_failed_a_campaign_passes() {
    let mut failures = Vec::new();
    for (seed, fixed) in ONCE_FAILED {
        let config = RunConfig::draw(seed, &DrawOptions::default());
        let report = run(&config, RunOptions::default());
        if let Outcome::Fail { kind, detail } = &report.outcome {
            failures.push(format!("seed {seed} ({fixed}) failed again ({kind:?}): {detail}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
