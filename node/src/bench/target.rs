//! Sending one operation to the system under test. Each connection (worker) holds its own
//! keep-alive HTTP/1.1 connection per node, on hyper's client connection directly: a
//! load generator shares the machine with the systems it measures, so every microsecond it
//! spends per request is taken from them (a pooled client with URL parsing and a per-request
//! timer cost several times what the request itself does).
//!
//! - Conclave: writes go to the leader (found from `/cluster/info`, followed on 307); reads are
//!   spread over the endpoints (a follower serves a linearizable read through ReadIndex).
//! - etcd: every request is spread over the endpoints (a member forwards writes to its leader);
//!   keys and values are base64 in JSON, linearizable reads are `serializable: false`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{Connection as Driver, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, LOCATION};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::options::{Plan, TargetKind};
use super::workload::Operation;
use crate::client::Consistency;

/// Why a request failed, for the report.
pub type ErrorKind = String;

pub struct Target {
    kind: TargetKind,
    endpoints: Vec<Arc<str>>,
    /// Shared, not copied, by every request: a load generator's allocations per request are
    /// CPU taken from the systems it measures on the same machine.
    leader: Mutex<Arc<str>>,
    consistency: Consistency,
}

/// One worker's connections: at most one open connection per node, reopened after a failure.
pub struct Connection {
    links: BTreeMap<String, Link>,
    read_base: Arc<str>,
    /// The request path, rebuilt in place for every request.
    path: String,
    /// etcd's JSON body, rebuilt in place for every request.
    json: String,
}

/// One HTTP/1.1 connection. Its driver (hyper's connection state machine) is polled by the
/// worker itself while a request is in flight, not by a task of its own: a separate task would
/// cost two task wake-ups per request, often across threads.
struct Link {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Driver<TokioIo<TcpStream>, Full<Bytes>>>>,
    /// The `Host` header of every request on this connection, made once.
    host: HeaderValue,
}

impl Link {
    /// Whether the peer closed the connection while it was idle: the driver then finishes as
    /// soon as it is polled.
    async fn closed(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.driver.as_mut() => true,
            () = std::future::ready(()) => false,
        }
    }
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
        Ok(Target {
            kind: plan.target_kind,
            endpoints: plan.endpoints.iter().map(|endpoint| Arc::from(endpoint.as_str())).collect(),
            leader: Mutex::new(Arc::from(leader)),
            consistency: plan.consistency,
        })
    }

    pub fn connection(&self, worker: usize) -> Connection {
        Connection {
            links: BTreeMap::new(),
            read_base: self.endpoints[worker % self.endpoints.len()].clone(),
            path: String::with_capacity(128),
            json: String::with_capacity(256),
        }
    }

    /// After `base` failed to answer: if it was taken for the leader, the next request tries
    /// the next endpoint, which redirects to the leader it knows (so a killed leader costs a
    /// few errors per worker, not every request until the run ends).
    fn suspect_leader(&self, base: &str) {
        let Ok(mut leader) = self.leader.lock() else { return };
        if **leader != *base {
            return;
        }
        let at = self.endpoints.iter().position(|endpoint| **endpoint == *base);
        let next = at.map_or(0, |at| (at + 1) % self.endpoints.len());
        *leader = self.endpoints[next].clone();
    }

    fn leader(&self) -> Arc<str> {
        self.leader.lock().map(|l| l.clone()).unwrap_or_else(|_| self.endpoints[0].clone())
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
        for _redirect in 0..3 {
            let leader = self.leader();
            connection.path.clear();
            let (base, method, content_type, body) = match operation {
                Operation::Put => {
                    let _ = write!(connection.path, "/kv/{key}");
                    (leader, Method::PUT, None, value.clone())
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
                    (base, Method::GET, None, Bytes::new())
                }
                Operation::Cas => {
                    let text = String::from_utf8_lossy(value);
                    let txn = serde_json::json!({
                        "compare": [{"key": key, "target": "value", "op": "=", "value": text}],
                        "success": [{"put": {"key": key, "value": text}}],
                        "failure": [],
                    });
                    connection.path.push_str("/txn");
                    (leader, Method::POST, Some("application/json"), Bytes::from(txn.to_string()))
                }
            };
            let answer = match connection.exchange(&base, method, content_type, body).await {
                Ok(answer) => answer,
                Err(kind) => {
                    self.suspect_leader(&base);
                    return Err(kind);
                }
            };
            match answer.status {
                StatusCode::OK | StatusCode::NOT_FOUND => return Ok(()),
                StatusCode::TEMPORARY_REDIRECT => {
                    let location = answer
                        .location
                        .as_deref()
                        .and_then(crate::client::endpoint::base_of_location);
                    match location {
                        Some(base) => {
                            authority_of(&base)?;
                            if let Ok(mut leader) = self.leader.lock() {
                                *leader = Arc::from(base);
                            }
                        }
                        None => return Err("307 without a location".into()),
                    }
                }
                _ => return Err(answer.error_kind()),
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
        let body = Bytes::copy_from_slice(connection.json.as_bytes());
        let base = connection.read_base.clone();
        let answer =
            connection.exchange(&base, Method::POST, Some("application/json"), body).await?;
        if answer.status.is_success() { Ok(()) } else { Err(answer.error_kind()) }
    }
}

/// What the generator needs of an answer; a success's body is read to the end and dropped.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    /// For an error: the start of the body's first line.
    reason: Option<String>,
}

impl Answer {
    fn error_kind(&self) -> ErrorKind {
        match &self.reason {
            Some(reason) if !reason.is_empty() => {
                format!("HTTP {}: {reason}", self.status.as_u16())
            }
            _ => format!("HTTP {}", self.status.as_u16()),
        }
    }
}

/// Error kinds are counted by name; a long body would make every kind unique.
const MAX_REASON_CHARS: usize = 48;

impl Connection {
    /// Sends `self.path` to `base` and reads the whole answer, within `REQUEST_TIMEOUT`.
    async fn exchange(
        &mut self,
        base: &str,
        method: Method,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, ErrorKind> {
        let authority = authority_of(base)?;
        let mut request = Request::builder().method(method).uri(self.path.as_str());
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let mut request = request.body(Full::new(body)).map_err(|e| format!("bad request: {e}"))?;
        let Link { sender, driver, host } = self.link(authority).await?;
        request.headers_mut().insert(HOST, host.clone());
        let exchange = async {
            sender.ready().await.map_err(|_| "transport")?;
            let response = sender.send_request(request).await.map_err(|_| "transport")?;
            let status = response.status();
            let location =
                response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).map(str::to_string);
            let body = response.into_body().collect().await.map_err(|_| "transport")?;
            // An error's kind is its status and the first line of its plain-text body ("HTTP
            // 503: busy: ..."), so a report tells a full queue from a missing leader.
            let reason = if status.is_success() || status.is_redirection() {
                None
            } else {
                let body = body.to_bytes();
                let line = String::from_utf8_lossy(&body);
                let line = line.lines().next().unwrap_or("").trim();
                Some(line.chars().take(MAX_REASON_CHARS).collect())
            };
            Ok::<_, &'static str>(Answer { status, location, reason })
        };
        let driven = async {
            tokio::select! {
                answer = exchange => answer,
                // The connection ended before the answer was complete.
                _ = driver.as_mut() => Err("transport"),
            }
        };
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, driven).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(kind)) => kind,
            Err(_elapsed) => "timeout",
        };
        // The connection's state is unknown: the next request opens a new one.
        self.links.remove(authority);
        Err(outcome.into())
    }

    /// The open connection to `authority`, opened (again) if there is none or it closed.
    async fn link(&mut self, authority: &str) -> Result<&mut Link, ErrorKind> {
        let usable = match self.links.get_mut(authority) {
            Some(link) => !link.closed().await,
            None => false,
        };
        if !usable {
            let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(authority))
                .await
                .map_err(|_| "connect")?
                .map_err(|_| "connect")?;
            let _ = stream.set_nodelay(true);
            let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| "connect")?;
            let host = HeaderValue::from_str(authority).map_err(|_| "bad endpoint")?;
            let link = Link { sender, driver: Box::pin(driver), host };
            self.links.insert(authority.to_string(), link);
        }
        self.links.get_mut(authority).ok_or_else(|| "connect".into())
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
