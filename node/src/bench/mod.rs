//! `conclave bench`: a load generator for Conclave's HTTP API and, with `--target etcd`, for
//! etcd's v3 JSON gateway, so one tool measures both systems the same way.
//!
//! - `options.rs`: the flags; `workload.rs`: keys, values and the operation mix;
//! - `target.rs`: how one operation is sent to each system, over `http1.rs`, a lean keep-alive
//!   HTTP/1.1 client;
//! - `driver.rs`: closed loop (each connection sends its next request when the previous one
//!   answered) and open loop (`--rate`: requests are due at fixed times and latency is measured
//!   from when a request was due, so a stall is charged to every request it delayed);
//! - `report.rs`: throughput, latency percentiles (HdrHistogram), errors by kind, `--json`.

mod driver;
mod http1;
pub mod options;
mod report;
mod target;
mod workload;

pub use options::BenchArgs;

/// Runs the benchmark the flags describe and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let target = std::sync::Arc::new(target::Target::connect(&plan).await?);
    if target.shard_count() > 1 && !plan.json {
        eprintln!(
            "sharded cluster: {} shards, each key sent to its shard's leader",
            target.shard_count()
        );
    }
    if plan.preload {
        let started = std::time::Instant::now();
        driver::preload(&plan, &target).await?;
        if !plan.json {
            eprintln!("preloaded {} keys in {:.1} s", plan.keys, started.elapsed().as_secs_f64());
        }
    }
    let outcome = driver::run(&plan, &target).await?;
    report::print(&plan, &outcome)
}
