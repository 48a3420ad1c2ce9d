//! Full disks in the simulator, scripted: ENOSPC through the file-system seam for whole seconds,
//! first on one node, then on a majority (where no write can commit), then everything heals.
//! The writes refused meanwhile must not apply, nothing acknowledged may be lost (the history is
//! checked), every storage promise is checked at the seam (a full disk does not lie, so the
//! durability checks stay on), and the cluster must make progress and converge afterwards.

use conclave_sim::schedule::{Fault, TimedFault};
use conclave_sim::{DrawOptions, Outcome, RunConfig, RunOptions, run};

fn disk_full(nodes: &[u64], at_ms: u64, duration_ms: u64) -> TimedFault {
    TimedFault { at_ms, fault: Fault::DiskFull { nodes: nodes.to_vec(), duration_ms } }
}

#[test]
fn full_disks_on_one_node_and_on_a_majority_lose_nothing_and_the_cluster_recovers() {
    let mut refused = 0;
    let mut runs = 0;
    for seed in 0..6 {
        let mut config = RunConfig::draw(
            seed,
            &DrawOptions { fault_phase_ms: 12_000, ..DrawOptions::default() },
        );
        if config.nodes != 3 {
            continue;
        }
        config.spares = 0;
        config.swarm.families.clear();
        config.schedule = vec![
            disk_full(&[1], 1_000, 3_000),
            disk_full(&[2], 3_000, 2_000),
            // A majority: nothing commits until one of them has room again.
            disk_full(&[1, 2], 6_000, 3_000),
            disk_full(&[1, 2, 3], 9_500, 1_500),
        ];
        let report = run(&config, RunOptions::default());
        assert_eq!(report.outcome, Outcome::Pass, "seed {seed}: {}", config);
        println!(
            "seed {seed}: {} operations ({} ok), {} write attempts refused for a full disk, \
             {} restarts checked",
            report.operations,
            report.operations_ok,
            report.writes_refused_no_space,
            report.stats.restarts_checked
        );
        refused += report.writes_refused_no_space;
        runs += 1;
    }
    assert!(runs >= 2, "too few 3-node seeds in the range");
    assert!(refused > 0, "the full disks refused no write: the fault did not bite");
}
