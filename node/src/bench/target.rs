//! Sending one operation to the system under test. Each connection (worker) has its own HTTP
//! client holding one keep-alive connection per node.
//!
//! - Conclave: writes go to the leader (found from `/cluster/info`, followed on 307); reads are
//!   spread over the endpoints (a follower serves a linearizable read through ReadIndex).
//! - etcd: every request is spread over the endpoints (a member forwards writes to its leader);
//!   keys and values are base64 in JSON, linearizable reads are `serializable: false`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use reqwest::StatusCode;

use super::options::{Plan, TargetKind};
use super::workload::Operation;
use crate::client::Consistency;

/// Why a request failed, for the report.
pub type ErrorKind = String;

pub struct Target {
    kind: TargetKind,
    endpoints: Vec<String>,
    leader: Arc<Mutex<String>>,
    consistency: Consistency,
}

pub struct Connection {
    http: reqwest::Client,
    read_base: String,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    pub async fn connect(plan: &Plan) -> anyhow::Result<Target> {
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
        Ok(Target {
            kind: plan.target_kind,
            endpoints: plan.endpoints.clone(),
            leader: Arc::new(Mutex::new(leader)),
            consistency: plan.consistency,
        })
    }

    pub fn connection(&self, worker: usize) -> anyhow::Result<Connection> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()?;
        Ok(Connection { http, read_base: self.endpoints[worker % self.endpoints.len()].clone() })
    }

    fn leader(&self) -> String {
        self.leader.lock().map(|l| l.clone()).unwrap_or_else(|_| self.endpoints[0].clone())
    }

    pub async fn send(
        &self,
        connection: &Connection,
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
        connection: &Connection,
        operation: Operation,
        key: &str,
        value: &Bytes,
    ) -> Result<(), ErrorKind> {
        for _redirect in 0..3 {
            let leader = self.leader();
            let request = match operation {
                Operation::Put => {
                    connection.http.put(format!("{leader}/kv/{key}")).body(value.clone())
                }
                Operation::Get => {
                    let consistency = match self.consistency {
                        Consistency::Linearizable => "linearizable",
                        Consistency::Lease => "lease",
                        Consistency::Stale => "stale",
                    };
                    let base = if self.consistency == Consistency::Lease {
                        &leader
                    } else {
                        &connection.read_base
                    };
                    connection.http.get(format!("{base}/kv/{key}?consistency={consistency}"))
                }
                Operation::Cas => {
                    let text = String::from_utf8_lossy(value);
                    let txn = serde_json::json!({
                        "compare": [{"key": key, "target": "value", "op": "=", "value": text}],
                        "success": [{"put": {"key": key, "value": text}}],
                        "failure": [],
                    });
                    connection.http.post(format!("{leader}/txn")).json_body(&txn)
                }
            };
            let response = request.send().await.map_err(classify)?;
            match response.status() {
                StatusCode::OK | StatusCode::NOT_FOUND => {
                    let _ = response.bytes().await.map_err(classify)?;
                    return Ok(());
                }
                StatusCode::TEMPORARY_REDIRECT => {
                    let location = response
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .and_then(crate::client::endpoint::base_of_location);
                    match location {
                        Some(base) => {
                            if let Ok(mut leader) = self.leader.lock() {
                                *leader = base;
                            }
                        }
                        None => return Err("307 without a location".into()),
                    }
                }
                status => return Err(format!("HTTP {}", status.as_u16())),
            }
        }
        Err("redirected too often".into())
    }

    async fn send_etcd(
        &self,
        connection: &Connection,
        operation: Operation,
        key: &str,
        value: &Bytes,
    ) -> Result<(), ErrorKind> {
        let key64 = BASE64.encode(key.as_bytes());
        let (path, body) = match operation {
            Operation::Put => {
                ("/v3/kv/put", serde_json::json!({ "key": key64, "value": BASE64.encode(value) }))
            }
            Operation::Get => (
                "/v3/kv/range",
                serde_json::json!({
                    "key": key64,
                    "serializable": self.consistency != Consistency::Linearizable,
                }),
            ),
            Operation::Cas => return Err("cas is not measured on etcd".into()),
        };
        let response = connection
            .http
            .post(format!("{}{path}", connection.read_base))
            .json_body(&body)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let _ = response.bytes().await.map_err(classify)?;
        if status.is_success() { Ok(()) } else { Err(format!("HTTP {}", status.as_u16())) }
    }
}

fn classify(error: reqwest::Error) -> ErrorKind {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// JSON bodies without reqwest's `json` feature in the main build.
trait JsonBody {
    fn json_body(self, value: &serde_json::Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json").body(value.to_string())
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
