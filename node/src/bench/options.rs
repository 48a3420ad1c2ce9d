//! The flags of `conclave bench`, checked and turned into a [`Plan`].

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use conclave_client::Consistency;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// Conclave's HTTP API (`PUT|GET /kv/{key}`).
    Conclave,
    /// etcd's v3 JSON gateway (`POST /v3/kv/put`, `/v3/kv/range`).
    Etcd,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The system's HTTP endpoints, comma-separated (`:8001,:8002,:8003` or `host:port`).
    #[arg(long = "target-endpoints", default_value = "127.0.0.1:8001")]
    pub target_endpoints: String,
    #[arg(long, value_enum, default_value_t = TargetKind::Conclave)]
    pub target: TargetKind,
    /// Concurrent connections, each with one request outstanding.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Measured duration (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Unmeasured load before the measurement.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Open loop: requests per second over all connections, due at fixed times (latency counts
    /// from when a request was due). Without it: closed loop, as fast as answers come.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    #[arg(long, default_value_t = 16)]
    pub key_bytes: usize,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Operation mix in percent, e.g. `put=100`, `get=90,put=10`, `put=50,get=40,cas=10`.
    #[arg(long, default_value = "put=100")]
    pub mix: String,
    /// Read consistency (for etcd: `stale` and `lease` are serializable reads).
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Write every key once before measuring (reads then find values).
    #[arg(long)]
    pub preload: bool,
    /// Print the report as one JSON object.
    #[arg(long = "bench-json")]
    pub json: bool,
}

#[derive(Clone, Debug)]
pub struct Mix {
    pub put_percent: u32,
    pub get_percent: u32,
    pub cas_percent: u32,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub target_kind: TargetKind,
    pub endpoints: Vec<String>,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub rate_per_second: Option<u64>,
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub mix: Mix,
    pub consistency: Consistency,
    pub preload: bool,
    pub json: bool,
}

/// A run or warm-up length, in the grammar of [`crate::duration`].
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    crate::duration::parse_duration(text).map_err(anyhow::Error::msg)
}

fn parse_mix(text: &str) -> anyhow::Result<Mix> {
    let mut mix = Mix { put_percent: 0, get_percent: 0, cas_percent: 0 };
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, percent) = part
            .split_once('=')
            .with_context(|| format!("--mix {part:?}: expected name=percent"))?;
        let percent: u32 =
            percent.trim().parse().with_context(|| format!("--mix {part:?}: not a percentage"))?;
        match name.trim() {
            "put" => mix.put_percent = percent,
            "get" => mix.get_percent = percent,
            "cas" => mix.cas_percent = percent,
            other => bail!("--mix: unknown operation {other:?} (put, get, cas)"),
        }
    }
    if mix.put_percent + mix.get_percent + mix.cas_percent != 100 {
        bail!("--mix {text:?} must add up to 100");
    }
    Ok(mix)
}

impl BenchArgs {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let endpoints = conclave_client::endpoint::parse_endpoints(&self.target_endpoints)?;
        if self.connections == 0 || self.connections > 10_000 {
            bail!("--connections must be 1 to 10000");
        }
        if self.keys == 0 || self.key_bytes == 0 || self.value_bytes == 0 {
            bail!("--keys, --key-bytes and --value-bytes must be positive");
        }
        if self.rate == Some(0) {
            bail!("--rate must be positive");
        }
        let duration = parse_duration(&self.duration).context("--duration")?;
        if duration.is_zero() {
            bail!("--duration must be positive");
        }
        let warmup = parse_duration(&self.warmup).context("--warmup")?;
        let mix = parse_mix(&self.mix)?;
        if mix.cas_percent > 0 && self.target == TargetKind::Etcd {
            bail!("cas is measured on Conclave only (etcd's txn has another shape)");
        }
        Ok(Plan {
            target_kind: self.target,
            endpoints,
            connections: self.connections,
            duration,
            warmup,
            rate_per_second: self.rate,
            keys: self.keys,
            key_bytes: self.key_bytes.max(8),
            value_bytes: self.value_bytes,
            mix,
            consistency: self.consistency,
            preload: self.preload,
            json: self.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_mixes_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5_400));
        assert!(parse_duration("10 parsecs").is_err());
        let mix = parse_mix("get=90,put=10").unwrap();
        assert_eq!((mix.get_percent, mix.put_percent, mix.cas_percent), (90, 10, 0));
        assert!(parse_mix("put=50").is_err());
        assert!(parse_mix("delete=100").is_err());
    }
}
