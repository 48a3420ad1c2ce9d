//! Sending one operation to the system under test. Each connection (worker) holds its own
//! keep-alive HTTP/1.1 connection per node (`http1.rs`): a load generator shares the machine
//! with the systems it measures, so every microsecond it spends per request is taken from them.
//!
//! - Conclave: writes go to the leader (found from `/cluster/info`, followed on 307); reads are
//!   spread over the endpoints (a follower serves a linearizable read through ReadIndex). In a
//!   sharded cluster each key goes to its shard's leader (from `/cluster/shards`), as the
//!   cluster's clients do; a read to an endpoint without a replica of
//!   the key's shard is routed there by the node.
//! - etcd: every request is spread over the endpoints (a member forwards writes to its leader);
//!   keys and values are base64 in JSON, linearizable reads are `serializable: false`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use super::http1::{Answer, Failure, Link};
use super::options::{Plan, TargetKind};
use super::workload::Operation;
use conclave_client::Consistency;
use conclave_client::api::ShardsJson;
use conclave_client::shard_routes::ShardRoutes;

/// Why a request failed, for the report.
pub type ErrorKind = String;

pub struct Target {
    kind: TargetKind,
    endpoints: Vec<Arc<str>>,
    /// The leader of each shard, by shard number (a single group: one). Shared, not copied, by
    /// every request: a load generator's allocations per request are CPU taken from the
    /// systems it measures on the same machine.
    leaders: Vec<Mutex<Arc<str>>>,
    /// A sharded Conclave cluster's routes: each key goes straight to its shard's leader, as
    /// the cluster's own clients do.
    routes: Option<ShardRoutes>,
    consistency: Consistency,
}

/// A sharded cluster's routes and each shard's leader (`None`: a single group), from the first
/// endpoint that answers `/cluster/shards` — the client library's routes
/// (`conclave_client::shard_routes`), so that the benchmark sends each key where a client would.
async fn shard_leaders(
    probe: &reqwest::Client,
    endpoints: &[String],
) -> anyhow::Result<Option<(ShardRoutes, Vec<Option<String>>)>> {
    for base in endpoints {
        let Ok(answer) = probe.get(format!("{base}/cluster/shards")).send().await else {
            continue;
        };
        let shards: ShardsJson = serde_json::from_slice(&answer.bytes().await?)
            .with_context(|| format!("{base}/cluster/shards is not a shard list"))?;
        let Some(routes) = ShardRoutes::from_json(&shards).map_err(anyhow::Error::msg)? else {
            return Ok(None);
        };
        let count = shards.shards.iter().map(|shard| shard.shard as usize + 1).max().unwrap_or(1);
        let mut leaders = vec![None; count];
        for shard in &shards.shards {
            leaders[shard.shard as usize] = routes.target_of_shard(shard.shard).map(str::to_string);
        }
        return Ok(Some((routes, leaders)));
    }
    bail!("no Conclave endpoint answers /cluster/shards")
}

/// One worker's connections: at most one open connection per node, reopened after a failure.
pub struct Connection {
    links: BTreeMap<String, Link>,
    read_base: Arc<str>,
    /// The request path, rebuilt in place for every request.
    path: String,
    /// etcd's JSON body, rebuilt in place for every request.
    json: String,
    /// A CAS request's JSON body.
    txn: Vec<u8>,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `host:port` of a `http://host:port` base URL.
fn authority_of(base: &str) -> Result<&str, ErrorKind> {
    base.strip_prefix("http://")
        .ok_or_else(|| format!("{base}: conclave bench speaks plain http:// only"))
}

impl Target {
    pub async fn connect(plan: &Plan) -> anyhow::Result<Target> {
        for base in &plan.endpoints {
            authority_of(base).map_err(anyhow::Error::msg)?;
        }
        let probe = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let mut leader = plan.endpoints[0].clone();
        match plan.target_kind {
            TargetKind::Conclave => {
                let mut found = None;
                for base in &plan.endpoints {
                    let info: serde_json::Value =
                        match probe.get(format!("{base}/cluster/info")).send().await {
                            Ok(response) => response.json_value().await.unwrap_or_default(),
                            Err(_) => continue,
                        };
                    if let Some(address) = info["leader_http_address"].as_str() {
                        found = Some(format!("http://{address}"));
                        break;
                    }
                }
                leader = found.context("no Conclave endpoint knows a leader")?;
            }
            TargetKind::Etcd => {
                let answer = probe
                    .post(format!("{leader}/v3/maintenance/status"))
                    .body("{}")
                    .send()
                    .await
                    .with_context(|| format!("etcd at {leader} does not answer"))?;
                if !answer.status().is_success() {
                    bail!("etcd at {leader} answered {}", answer.status());
                }
            }
        }
        let (routes, leaders) = match plan.target_kind {
            TargetKind::Conclave => match shard_leaders(&probe, &plan.endpoints).await? {
                Some((routes, leaders)) => {
                    let leaders = leaders
                        .into_iter()
                        .map(|found| Mutex::new(Arc::from(found.unwrap_or_else(|| leader.clone()))))
                        .collect();
                    (Some(routes), leaders)
                }
                None => (None, vec![Mutex::new(Arc::from(leader))]),
            },
            TargetKind::Etcd => (None, vec![Mutex::new(Arc::from(leader))]),
        };
        Ok(Target {
            kind: plan.target_kind,
            endpoints: plan.endpoints.iter().map(|endpoint| Arc::from(endpoint.as_str())).collect(),
            leaders,
            routes,
            consistency: plan.consistency,
        })
    }

    /// The number of shards the target has (1 for a single group, or etcd).
    pub fn shard_count(&self) -> usize {
        self.leaders.len()
    }

    /// Which of `leaders` serves `key`.
    fn shard_of(&self, key: &str) -> usize {
        let shard = self.routes.as_ref().map_or(0, |routes| routes.shard_of(key));
        (shard as usize).min(self.leaders.len() - 1)
    }

    pub fn connection(&self, worker: usize) -> Connection {
        Connection {
            links: BTreeMap::new(),
            read_base: self.endpoints[worker % self.endpoints.len()].clone(),
            path: String::with_capacity(128),
            json: String::with_capacity(256),
            txn: Vec::new(),
        }
    }

    /// After `base` failed to answer: if it was taken for the leader, the next request tries
    /// the next endpoint, which redirects to the leader it knows (so a killed leader costs a
    /// few errors per worker, not every request until the run ends).
    fn suspect_leader(&self, shard: usize, base: &str) {
        let Ok(mut leader) = self.leaders[shard].lock() else { return };
        if **leader != *base {
            return;
        }
        let at = self.endpoints.iter().position(|endpoint| **endpoint == *base);
        let next = at.map_or(0, |at| (at + 1) % self.endpoints.len());
        *leader = self.endpoints[next].clone();
    }

    fn leader(&self, shard: usize) -> Arc<str> {
        let leader = self.leaders[shard].lock();
        leader.map(|l| l.clone()).unwrap_or_else(|_| self.endpoints[0].clone())
    }

    pub async fn send(
        &self,
        connection: &mut Connection,
        operation: Operation,
        key: &str,
        value: &Bytes,
    ) -> Result<(), ErrorKind> {
        match self.kind {
            TargetKind::Conclave => self.send_conclave(connection, operation, key, value).await,
            TargetKind::Etcd => self.send_etcd(connection, operation, key, value).await,
        }
    }

    async fn send_conclave(
        &self,
        connection: &mut Connection,
        operation: Operation,
        key: &str,
        value: &Bytes,
    ) -> Result<(), ErrorKind> {
        let shard = self.shard_of(key);
        for _redirect in 0..3 {
            let leader = self.leader(shard);
            connection.path.clear();
            let (base, method, content_type, body) = match operation {
                Operation::Put => {
                    let _ = write!(connection.path, "/kv/{key}");
                    (leader, "PUT", None, Body::Value)
                }
                Operation::Get => {
                    let consistency = match self.consistency {
                        Consistency::Linearizable => "linearizable",
                        Consistency::Lease => "lease",
                        Consistency::Stale => "stale",
                    };
                    let _ = write!(connection.path, "/kv/{key}?consistency={consistency}");
                    let base = if self.consistency == Consistency::Lease {
                        leader
                    } else {
                        connection.read_base.clone()
                    };
                    (base, "GET", None, Body::Empty)
                }
                Operation::Cas => {
                    let text = String::from_utf8_lossy(value);
                    let txn = serde_json::json!({
                        "compare": [{"key": key, "target": "value", "op": "=", "value": text}],
                        "success": [{"put": {"key": key, "value": text}}],
                        "failure": [],
                    });
                    connection.txn = txn.to_string().into_bytes();
                    connection.path.push_str("/txn");
                    (leader, "POST", Some("application/json"), Body::Txn)
                }
            };
            let answer = match connection.exchange(&base, method, content_type, body, value).await {
                Ok(answer) => answer,
                Err(kind) => {
                    self.suspect_leader(shard, &base);
                    return Err(kind);
                }
            };
            match answer.status {
                200 | 404 => return Ok(()),
                307 => {
                    let location = answer
                        .location
                        .as_deref()
                        .and_then(conclave_client::endpoint::base_of_location);
                    match location {
                        Some(base) => {
                            authority_of(&base)?;
                            if let Ok(mut leader) = self.leaders[shard].lock() {
                                *leader = Arc::from(base);
                            }
                        }
                        None => return Err("307 without a location".into()),
                    }
                }
                _ => return Err(error_kind(&answer)),
            }
        }
        Err("redirected too often".into())
    }

    async fn send_etcd(
        &self,
        connection: &mut Connection,
        operation: Operation,
        key: &str,
        value: &Bytes,
    ) -> Result<(), ErrorKind> {
        // Base64 has no characters that need escaping in JSON.
        let json = &mut connection.json;
        json.clear();
        json.push_str("{\"key\":\"");
        BASE64.encode_string(key.as_bytes(), json);
        let path = match operation {
            Operation::Put => {
                json.push_str("\",\"value\":\"");
                BASE64.encode_string(value, json);
                json.push_str("\"}");
                "/v3/kv/put"
            }
            Operation::Get => {
                let serializable = self.consistency != Consistency::Linearizable;
                let _ = write!(json, "\",\"serializable\":{serializable}}}");
                "/v3/kv/range"
            }
            Operation::Cas => return Err("cas is not measured on etcd".into()),
        };
        connection.path.clear();
        connection.path.push_str(path);
        let base = connection.read_base.clone();
        let answer =
            connection.exchange(&base, "POST", Some("application/json"), Body::Json, value).await?;
        if (200..300).contains(&answer.status) { Ok(()) } else { Err(error_kind(&answer)) }
    }
}

/// Which of the connection's buffers a request sends as its body.
#[derive(Clone, Copy)]
enum Body {
    Empty,
    /// The workload's value, as is.
    Value,
    /// `Connection::json` (etcd's requests).
    Json,
    /// `Connection::txn` (a CAS).
    Txn,
}

/// An error's kind is its status and the first line of its plain-text body ("HTTP 503: busy:
/// ..."), so a report tells a full queue from a missing leader.
fn error_kind(answer: &Answer) -> ErrorKind {
    let line = answer.error_body.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    let line: String =
        line.lines().next().unwrap_or("").trim().chars().take(MAX_REASON_CHARS).collect();
    if line.is_empty() {
        format!("HTTP {}", answer.status)
    } else {
        format!("HTTP {}: {line}", answer.status)
    }
}

/// Error kinds are counted by name; a long body would make every kind unique.
const MAX_REASON_CHARS: usize = 48;

impl Connection {
    /// Sends `self.path` to `base` and reads the whole answer, within `REQUEST_TIMEOUT`.
    async fn exchange(
        &mut self,
        base: &str,
        method: &str,
        content_type: Option<&str>,
        body: Body,
        value: &[u8],
    ) -> Result<Answer, ErrorKind> {
        let authority = authority_of(base)?;
        let Connection { links, path, json, txn, .. } = self;
        let body = match body {
            Body::Empty => &[][..],
            Body::Value => value,
            Body::Json => json.as_bytes(),
            Body::Txn => txn.as_slice(),
        };
        let exchange = async {
            // A server may close a keep-alive connection while it is idle; that is no failure
            // of the request, which then goes once more on a new connection.
            for attempt in 0..2 {
                let link = match links.get_mut(authority) {
                    Some(link) => link,
                    None => {
                        let link = Link::connect(authority).await.map_err(|_| "connect")?;
                        links.entry(authority.to_string()).or_insert(link)
                    }
                };
                match link.exchange(method, path, content_type, body).await {
                    Ok(answer) => {
                        if link.closing {
                            links.remove(authority);
                        }
                        return Ok(answer);
                    }
                    Err(Failure::ClosedBeforeAnswer) if attempt == 0 => {
                        links.remove(authority);
                    }
                    Err(Failure::Protocol) => return Err("protocol"),
                    Err(_) => return Err("transport"),
                }
            }
            Err("transport")
        };
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(kind)) => kind,
            Err(_elapsed) => "timeout",
        };
        // The connection's state is unknown: the next request opens a new one.
        self.links.remove(authority);
        Err(outcome.into())
    }
}

trait JsonValue {
    async fn json_value(self) -> Option<serde_json::Value>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Option<serde_json::Value> {
        let bytes = self.bytes().await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
