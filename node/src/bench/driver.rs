//! Runs the load: `connections` workers, each with one request outstanding. Closed loop: the
//! next request leaves when the previous answered. Open loop (`--rate`): worker `w` sends its
//! k-th request at `start + (k * connections + w) / rate`; a late answer delays the following
//! requests, and their latency is measured from when they were due, so a stall is not hidden
//! (no coordinated omission). Only requests due after the warm-up are recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::options::Plan;
use super::target::Target;
use super::workload::{Operation, Workload, key_name, value_of};

pub struct Outcome {
    /// Latencies in microseconds, all operations.
    pub latency_us: Histogram<u64>,
    pub by_operation: BTreeMap<Operation, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    pub measured: Duration,
}

struct WorkerOutcome {
    by_operation: BTreeMap<Operation, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

pub async fn run(plan: &Plan, target: &Arc<Target>) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut workers = Vec::new();
    for worker in 0..plan.connections {
        let mut connection = target.connection(worker);
        let target = target.clone();
        let plan = plan.clone();
        workers.push(tokio::spawn(async move {
            let mut workload = Workload::new(&plan, worker);
            let value = workload.value();
            let mut out = WorkerOutcome { by_operation: BTreeMap::new(), errors: BTreeMap::new() };
            let mut sent: u64 = 0;
            loop {
                let due = match plan.rate_per_second {
                    None => Instant::now(),
                    Some(rate) => {
                        let slot = sent * plan.connections as u64 + worker as u64;
                        start + Duration::from_secs_f64(slot as f64 / rate as f64)
                    }
                };
                if due >= end {
                    break;
                }
                // Only an open loop waits: a timer, even one already due, costs a tick of the
                // timer wheel (about a millisecond), which a closed loop must not add.
                if due > Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
                sent += 1;
                let (operation, key) = workload.next();
                let result = target.send(&mut connection, operation, &key, &value).await;
                if due < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => {
                        // Recorded once, per operation; the histogram of all operations is
                        // their sum, made when the run ends.
                        let micros = due.elapsed().as_micros().clamp(1, 100_000_000) as u64;
                        let _ = out
                            .by_operation
                            .entry(operation)
                            .or_insert_with(histogram)
                            .record(micros);
                    }
                    Err(kind) => *out.errors.entry(kind).or_insert(0) += 1,
                }
            }
            out
        }));
    }
    let mut outcome = Outcome {
        latency_us: histogram(),
        by_operation: BTreeMap::new(),
        errors: BTreeMap::new(),
        measured: plan.duration,
    };
    for worker in workers {
        let out = worker.await?;
        for (operation, histogram_of) in out.by_operation {
            outcome.latency_us.add(&histogram_of)?;
            outcome.by_operation.entry(operation).or_insert_with(histogram).add(&histogram_of)?;
        }
        for (kind, count) in out.errors {
            *outcome.errors.entry(kind).or_insert(0) += count;
        }
    }
    Ok(outcome)
}

/// Writes every key once, with all connections.
pub async fn preload(plan: &Plan, target: &Arc<Target>) -> anyhow::Result<()> {
    let value = value_of(plan.value_bytes);
    let mut workers = Vec::new();
    for worker in 0..plan.connections {
        let mut connection = target.connection(worker);
        let target = target.clone();
        let value = value.clone();
        let (keys, key_bytes, stride) = (plan.keys, plan.key_bytes, plan.connections as u64);
        workers.push(tokio::spawn(async move {
            let mut index = worker as u64;
            while index < keys {
                let key = key_name(index, key_bytes);
                // Retried: a preload must be complete.
                let mut attempts = 0;
                while let Err(kind) =
                    target.send(&mut connection, Operation::Put, &key, &value).await
                {
                    attempts += 1;
                    if attempts > 20 {
                        return Err(anyhow::anyhow!("preloading {key} failed: {kind}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                index += stride;
            }
            Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}
