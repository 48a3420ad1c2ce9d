//! Prometheus metrics (text exposition format). The engine keeps its own counters in its status;
//! they are copied into the registry at each scrape, so a scrape always shows the engine's
//! latest state without the engine knowing about Prometheus.

use std::borrow::Cow;
use std::sync::Mutex;

use conclave_core::engine::EngineStatus;
use conclave_core::raft::Role;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::process_metrics::ProcessMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: Cow<'static, str>,
    /// The route's template (`/kv/{*key}`), never the raw path: keys must not become labels.
    pub route: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub route: Cow<'static, str>,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    has_leader: Gauge,
    term: Gauge,
    is_leader: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    keys: Gauge,
    leader_changes: Counter,
    /// Entries committed and applied as this node knows them: counted on every node (etcd's
    /// `proposals_committed_total` and `proposals_applied_total`).
    proposals_committed: Counter,
    proposals_applied: Counter,
    /// Client writes this node proposed, committed and failed.
    writes_committed: Counter,
    proposals_failed: Counter,
    is_learner: Gauge,
    data_dir_bytes: Gauge,
    process: ProcessMetrics,
    proposals_pending: Gauge,
    disk_full: Gauge,
    snapshots_abandoned: Counter,
    peer_lag: Family<PeerLabels, Gauge>,
    pub fsync_seconds: Histogram,
    pub request_seconds: HistogramFamily<RouteLabels>,
    pub responses: Family<ResponseLabels, Counter>,
    pub open_connections: Gauge,
    pub refused_connections: Counter,
    pub watchers: Gauge,
    /// Serialises scrapes: counters are advanced by the difference to the engine's value.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut top = Registry::default();
        let registry = top.sub_registry_with_prefix("conclave");
        let metrics = Metrics {
            has_leader: Gauge::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            keys: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_applied: Counter::default(),
            writes_committed: Counter::default(),
            proposals_failed: Counter::default(),
            is_learner: Gauge::default(),
            data_dir_bytes: Gauge::default(),
            process: ProcessMetrics::default(),
            proposals_pending: Gauge::default(),
            disk_full: Gauge::default(),
            snapshots_abandoned: Counter::default(),
            peer_lag: Family::default(),
            fsync_seconds: latency_histogram(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            responses: Family::default(),
            open_connections: Gauge::default(),
            refused_connections: Counter::default(),
            watchers: Gauge::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "has_leader",
            "1 if this node knows a leader",
            metrics.has_leader.clone(),
        );
        registry.register("is_leader", "1 if this node is the leader", metrics.is_leader.clone());
        registry.register("term", "Current Raft term", metrics.term.clone());
        registry.register("commit_index", "Raft commit index", metrics.commit_index.clone());
        registry.register("applied_index", "Last applied log index", metrics.applied_index.clone());
        registry.register("keys", "Keys stored", metrics.keys.clone());
        registry.register(
            "leader_changes",
            "Leader changes seen by this node",
            metrics.leader_changes.clone(),
        );
        registry.register(
            "proposals_committed",
            "Log entries committed, as this node knows them (every node counts them)",
            metrics.proposals_committed.clone(),
        );
        registry.register(
            "proposals_applied",
            "Log entries applied to this node's state machine",
            metrics.proposals_applied.clone(),
        );
        registry.register(
            "writes_committed",
            "Client writes this node proposed that committed",
            metrics.writes_committed.clone(),
        );
        registry.register(
            "proposals_failed",
            "Client writes this node proposed that failed",
            metrics.proposals_failed.clone(),
        );
        registry.register(
            "is_learner",
            "1 if this node is a learner (a non-voting member)",
            metrics.is_learner.clone(),
        );
        registry.register(
            "data_dir_bytes",
            "Bytes of the files in this node's data directory",
            metrics.data_dir_bytes.clone(),
        );
        registry.register(
            "build",
            "The version this node runs",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "proposals_pending",
            "Proposals waiting to commit",
            metrics.proposals_pending.clone(),
        );
        registry.register(
            "disk_full",
            "1 while the disk-full alarm is up (client writes refused with 507 until space is \
             freed)",
            metrics.disk_full.clone(),
        );
        registry.register(
            "snapshots_abandoned",
            "Snapshots given up because they did not fit on the disk (retried later)",
            metrics.snapshots_abandoned.clone(),
        );
        registry.register(
            "peer_lag_entries",
            "Leader only: log entries each member is behind",
            metrics.peer_lag.clone(),
        );
        registry.register(
            "fsync_duration_seconds",
            "Time of each fdatasync/fsync of the write-ahead log",
            metrics.fsync_seconds.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP responses by route and code",
            metrics.responses.clone(),
        );
        registry.register(
            "http_open_connections",
            "Open HTTP connections",
            metrics.open_connections.clone(),
        );
        registry.register(
            "http_refused_connections",
            "HTTP connections refused with 503 because --max-connections were open",
            metrics.refused_connections.clone(),
        );
        registry.register("watchers", "Open watch streams", metrics.watchers.clone());
        metrics.process.register(&mut top);
        Metrics { registry: top, ..metrics }
    }

    /// Copies the engine's status (and the data directory's size, if known) in, then renders
    /// the text format.
    pub fn render(&self, status: &EngineStatus, data_dir_bytes: Option<u64>) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.is_leader.set(i64::from(status.role == Role::Leader));
        self.term.set(status.term as i64);
        self.commit_index.set(status.commit_index as i64);
        self.applied_index.set(status.applied_index as i64);
        self.keys.set(status.key_count as i64);
        self.proposals_pending.set(status.proposals_pending as i64);
        self.disk_full.set(i64::from(status.disk_full));
        advance(&self.snapshots_abandoned, status.snapshots_abandoned);
        advance(&self.leader_changes, status.leader_changes);
        advance(&self.proposals_committed, status.commit_index);
        advance(&self.proposals_applied, status.applied_index);
        advance(&self.writes_committed, status.proposals_committed);
        advance(&self.proposals_failed, status.proposals_failed);
        self.is_learner.set(i64::from(status.learners.contains(&status.id)));
        if let Some(bytes) = data_dir_bytes {
            self.data_dir_bytes.set(bytes as i64);
        }
        self.process.refresh();
        self.peer_lag.clear();
        for peer in &status.peers {
            let labels = PeerLabels { peer: peer.id.0.to_string() };
            self.peer_lag.get_or_create(&labels).set(peer.lag as i64);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text = "# encoding the metrics failed\n".into();
        }
        text
    }
}

/// Moves a Prometheus counter up to the engine's cumulative value.
fn advance(counter: &Counter, engine_value: u64) {
    let current = counter.get();
    if engine_value > current {
        counter.inc_by(engine_value - current);
    }
}
