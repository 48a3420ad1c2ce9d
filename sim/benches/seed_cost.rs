//! What a simulated seed costs, and how much of it is the simulator's floor.
//!
//! - `turmoil_floor/hosts=N`: one turmoil step (1 ms) of N hosts whose software only sleeps
//!   on a 10 ms timer, as an idle node does between Raft ticks. turmoil steps every running
//!   host's runtime at every tick whether or not anything is due, so this is a fixed cost per
//!   host per simulated millisecond that no change to Conclave's code can remove.
//! - `seed/simulated_ms`: a whole standard seed (seed 7: 3 nodes and the clients' host, 2 s of
//!   faults, then liveness, convergence and drain), per simulated millisecond.
//!
//! The floor per host-step times the hosts stepped, over the seed's cost per simulated
//! millisecond, is the share of a seed that is turmoil's stepping rather than the cluster's
//! work and the checks.

use std::hint::black_box;
use std::time::Duration;

use conclave_sim::{DrawOptions, RunConfig, RunOptions, run};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const STEPS: u64 = 1_000;

fn turmoil_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("turmoil_floor");
    for hosts in [1u64, 6] {
        // Elements: host-steps (one host, one simulated millisecond).
        group.throughput(Throughput::Elements(STEPS * hosts));
        group.bench_function(format!("hosts={hosts}"), |b| {
            b.iter(|| {
                let mut sim = turmoil::Builder::new()
                    .simulation_duration(Duration::from_secs(3_600))
                    .tick_duration(Duration::from_millis(1))
                    .build();
                for host in 0..hosts {
                    sim.host(format!("h{host}"), || async {
                        loop {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    });
                }
                for _ in 0..STEPS {
                    black_box(sim.step().expect("idle hosts do not fail"));
                }
            });
        });
    }
    group.finish();
}

fn seed(c: &mut Criterion) {
    let options = DrawOptions { fault_phase_ms: 2_000, ..DrawOptions::default() };
    let config = RunConfig::draw(7, &options);
    let simulated_ms = run(&config, RunOptions::default()).sim_ms;
    // What the floor is compared with: the hosts stepped (nodes, spares and the clients' host)
    // and the simulated time of one iteration.
    let header = config.to_string();
    eprintln!(
        "{} ({} hosts stepped, {simulated_ms} simulated ms)",
        header.lines().next().unwrap_or_default(),
        config.nodes + config.spares + 1
    );
    let mut group = c.benchmark_group("seed");
    group.sample_size(10);
    group.throughput(Throughput::Elements(simulated_ms));
    group.bench_function("simulated_ms", |b| {
        b.iter(|| black_box(run(&config, RunOptions::default()).trace_hash));
    });
    group.finish();
}

criterion_group!(benches, turmoil_floor, seed);
criterion_main!(benches);
