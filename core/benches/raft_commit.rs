//! Proposals committed per second by the Raft core alone: a 3-node in-memory cluster, no disk,
//! no network, every batch durable at once. "1 proposer" waits for each proposal to commit
//! before the next (latency-bound, like one client); "256 proposers" keeps 256 proposals
//! outstanding (throughput-bound, batching and pipelining at work).

use std::hint::black_box;

use conclave_core::raft::RaftConfig;
use conclave_core::raft::memory_cluster::{HarnessOptions, MemoryCluster};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn cluster() -> MemoryCluster {
    let options = HarnessOptions { auto_persist: true, check_invariants: false };
    let mut cluster = MemoryCluster::new(3, RaftConfig::default(), 7, options);
    cluster.elect_leader(10_000).expect("a leader");
    cluster
}

fn commit_rounds(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_commit_3_nodes");
    group.sample_size(20);
    for outstanding in [1u64, 256] {
        group.throughput(Throughput::Elements(outstanding));
        let name = if outstanding == 1 {
            "1_proposer".to_string()
        } else {
            format!("{outstanding}_proposers")
        };
        group.bench_function(name, |b| {
            let mut cluster = cluster();
            let leader = cluster.leader().expect("leader");
            let mut proposed = 0u64;
            b.iter(|| {
                let (last, _) = cluster.propose_many(leader, outstanding).expect("leader accepts");
                cluster.stabilize();
                assert!(cluster.raft(leader).log().committed() >= last);
                proposed += outstanding;
                if proposed.is_multiple_of(65_536) {
                    // Compact like the engine would, so the bench measures steady state.
                    for id in cluster.ids() {
                        cluster.snapshot(id);
                    }
                }
                black_box(last)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commit_rounds);
criterion_main!(benches);
