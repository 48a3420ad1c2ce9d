//! The benchmark's report: throughput, latency percentiles per operation, errors by kind; as
//! text or as one JSON object (`--bench-json`) for scripts.

use hdrhistogram::Histogram;

use super::driver::Outcome;
use super::options::{Plan, TargetKind};

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn summary(histogram: &Histogram<u64>, seconds: f64) -> serde_json::Value {
    serde_json::json!({
        "ops": histogram.len(),
        "ops_per_second": histogram.len() as f64 / seconds,
        "p50_ms": ms(histogram, 0.50),
        "p90_ms": ms(histogram, 0.90),
        "p99_ms": ms(histogram, 0.99),
        "p999_ms": ms(histogram, 0.999),
        "max_ms": histogram.max() as f64 / 1000.0,
    })
}

pub fn print(plan: &Plan, outcome: &Outcome) -> anyhow::Result<()> {
    let seconds = outcome.measured.as_secs_f64();
    let target = match plan.target_kind {
        TargetKind::Conclave => "conclave",
        TargetKind::Etcd => "etcd",
    };
    let errors: u64 = outcome.errors.values().sum();
    if plan.json {
        let by_operation: serde_json::Map<String, serde_json::Value> = outcome
            .by_operation
            .iter()
            .map(|(operation, histogram)| {
                (format!("{operation:?}").to_lowercase(), summary(histogram, seconds))
            })
            .collect();
        let report = serde_json::json!({
            "target": target,
            "connections": plan.connections,
            "rate_per_second": plan.rate_per_second,
            "duration_s": seconds,
            "all": summary(&outcome.latency_us, seconds),
            "by_operation": by_operation,
            "errors": outcome.errors,
        });
        println!("{report}");
        return Ok(());
    }
    let mode = plan
        .rate_per_second
        .map_or("closed loop".to_string(), |rate| format!("open loop at {rate}/s"));
    println!("{target}: {} connections, {mode}, {seconds:.1} s measured", plan.connections);
    println!(
        "{:<6} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let mut rows: Vec<(String, &Histogram<u64>)> = outcome
        .by_operation
        .iter()
        .map(|(operation, histogram)| (format!("{operation:?}").to_lowercase(), histogram))
        .collect();
    if rows.len() > 1 {
        rows.push(("all".into(), &outcome.latency_us));
    }
    for (name, histogram) in rows {
        println!(
            "{:<6} {:>10} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            name,
            histogram.len(),
            histogram.len() as f64 / seconds,
            ms(histogram, 0.50),
            ms(histogram, 0.90),
            ms(histogram, 0.99),
            ms(histogram, 0.999),
            histogram.max() as f64 / 1000.0
        );
    }
    if errors > 0 {
        println!("errors: {errors} {:?}", outcome.errors);
    } else {
        println!("errors: none");
    }
    Ok(())
}
