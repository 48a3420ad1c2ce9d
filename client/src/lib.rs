//! The Rust client of a Conclave cluster (`conclave-client`): everything an application needs
//! to talk to a cluster, and nothing of the server (the `conclave` CLI is built on it).
//!
//! - **Leader discovery**: any endpoint will do; a follower answers writes with 307 and the
//!   leader's address, which the client follows and remembers, trying it first from then on.
//! - **Retries** (`retry.rs`): on 503 (no leader yet, busy) or a node that does not answer, the
//!   client moves on to the next endpoint after a growing, jittered pause, until the call's
//!   deadline.
//! - **Exactly-once writes**: writes carry a client session (registered with `POST /session`)
//!   and a sequence number; a write retried after a timeout or a failover reuses its number, so
//!   the cluster applies it once and answers the retry with the first outcome. A session holds
//!   one write at a time, so the client keeps a small pool of them for concurrent writes. In a
//!   sharded cluster a session lives in one shard's group: the client registers sessions per
//!   shard (`x-conclave-shard`) and tags each write with one of its key's shard.
//! - **Watches** (`watch_events.rs`): the server-sent event stream of `/watch`, parsed.
//! - **Sharded clusters** (`shard_routes.rs`): once a node's answer says the cluster is sharded,
//!   the client fetches the shard map and sends each key's requests straight to its shard's
//!   leader, refreshing the map when a routed request fails, is redirected or is refused as
//!   misdirected (421).
//! - **Connection pooling**: one `reqwest::Client` with keep-alive for every call.
//!
//! `api.rs` holds the JSON shapes of the HTTP API, shared with the server.

pub mod api;
mod attempts;
pub mod endpoint;
pub mod error;
mod retry;
pub mod shard_routes;
mod watch_events;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use self::api::{
    CLIENT_ID_HEADER, ClusterInfoJson, DELETED_HEADER, DELETED_KEYS_HEADER, KeyValueJson,
    MembersJson, RangeJson, SEQ_HEADER, SHARD_EPOCH_HEADER, SHARD_HEADER, SessionJson, ShardsJson,
    TxnRequestJson, TxnResponseJson, VersionJson, WatchEventJson,
};
use self::attempts::{AttemptFailure, Attempts};
pub use self::error::ClientError;
use self::retry::Failure;
use self::shard_routes::ShardRoutes;
pub use self::watch_events::{OPEN_EVENT, PositionedEvent, positioned_events};

/// How fresh a read must be (see DESIGN.md); linearizable unless asked otherwise.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Consistency {
    #[default]
    Linearizable,
    Lease,
    Stale,
}

impl Consistency {
    fn as_query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// One HTTP request's timeout.
    pub request_timeout: Duration,
    /// A whole call, retries included, gives up after this long.
    pub call_deadline: Duration,
    /// A call that has reached no node at all (every connection refused or not completed)
    /// gives up after this long, before its deadline: see `attempts.rs`. Also the limit on
    /// one connection's setup.
    pub dial_timeout: Duration,
    /// Tag writes with a session so retries apply once (on by default).
    pub sessions: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            call_deadline: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(5),
            sessions: true,
        }
    }
}

/// Where a watch starts (`Client::watch_from`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// With the changes made after the stream opens.
    Now,
    /// With the changes of this revision and after (a single group; a sharded cluster's
    /// revisions are per shard, so it refuses this).
    Revision(u64),
    /// Right after the change (or `open` event) with this SSE id.
    After(String),
}

/// One page of a listing (`Client::range_page`).
#[derive(Clone, Debug)]
pub struct RangePage<'a> {
    pub prefix: &'a str,
    /// The page after this key (the last key of the previous page).
    pub start_after: Option<&'a str>,
    /// At most this many keys (0 = the server's maximum, 10,000 by default).
    pub limit: u64,
    /// Keys and revisions, no values.
    pub keys_only: bool,
    pub consistency: Consistency,
}

impl<'a> RangePage<'a> {
    /// The first page of the keys under `prefix`, as large as the server allows.
    pub fn new(prefix: &'a str) -> Self {
        RangePage {
            prefix,
            start_after: None,
            limit: 0,
            keys_only: false,
            consistency: Consistency::Linearizable,
        }
    }
}

/// A value with its modification revision (the `ETag`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub mod_revision: u64,
}

/// A write's precondition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The key must not exist (`If-None-Match: *`).
    Absent,
    /// The key's modification revision must be this (`If-Match: "N"`).
    RevisionIs(u64),
}

#[derive(Clone, Copy, Debug)]
struct Session {
    client_id: u64,
    last_seq: u64,
    /// The shard it was registered in (`None`: a cluster not known to be sharded).
    shard: Option<u32>,
}

pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    leader: Mutex<Option<String>>,
    /// Idle sessions by the shard they were registered in (`None`: a cluster not known to be
    /// sharded, whose sessions live in its one group).
    sessions: Mutex<BTreeMap<Option<u32>, Vec<Session>>>,
    /// Set once the cluster answered that it has no sessions (501: a sharded node older than
    /// sessions per shard).
    sessions_unsupported: AtomicBool,
    /// A sharded cluster's routes, once known (`shard_routes.rs`).
    routes: Mutex<Routes>,
    options: ClientOptions,
}

/// What the client knows of where keys go.
#[derive(Default)]
struct Routes {
    current: Option<std::sync::Arc<ShardRoutes>>,
    /// The newest map epoch a node named (`x-conclave-shard-epoch`): the routes are fetched
    /// again while they are older.
    epoch_seen: u64,
    /// Set when a routed request failed or was sent on: fetch the routes again.
    stale: bool,
    /// No fetch before this (one failed or ran recently).
    next_fetch: Option<Instant>,
}

/// Fetches of the routes are at least this far apart.
const ROUTE_FETCH_INTERVAL: Duration = Duration::from_millis(500);

/// One logical request, resent as is on every attempt.
struct Call<'a> {
    method: Method,
    path_and_query: String,
    body: Bytes,
    headers: Vec<(&'a str, String)>,
    /// Whether to follow the leader on 307 (writes and linearizable reads).
    follow_leader: bool,
    /// The key it is about, for a sharded cluster's routes (single-key calls only).
    key: Option<&'a str>,
    /// The shard it is for, when it names one (a session's registration).
    shard: Option<u32>,
}

impl<'a> Call<'a> {
    /// A GET without body; `follow_leader` for reads that the leader must serve.
    fn read(path_and_query: String, follow_leader: bool) -> Call<'a> {
        Call {
            method: Method::GET,
            path_and_query,
            body: Bytes::new(),
            headers: Vec::new(),
            follow_leader,
            key: None,
            shard: None,
        }
    }

    /// The same call, routed by `key` in a sharded cluster.
    fn about(self, key: &'a str) -> Call<'a> {
        Call { key: Some(key), ..self }
    }

    /// A change the leader carries out.
    fn change(
        method: Method,
        path_and_query: String,
        body: Bytes,
        headers: Vec<(&'a str, String)>,
    ) -> Call<'a> {
        Call { method, path_and_query, body, headers, follow_leader: true, key: None, shard: None }
    }

    /// A change whose body is JSON.
    fn json_change(path_and_query: &str, body: String) -> Call<'a> {
        let headers = vec![("content-type", "application/json".to_string())];
        Call::change(Method::POST, path_and_query.to_string(), Bytes::from(body), headers)
    }
}

const SESSIONS_KEPT: usize = 64;
/// Redirects one attempt follows (a leader that changes while the redirect is in flight
/// redirects again); past this, the attempt fails and the next one starts over.
const MAX_REDIRECTS_PER_ATTEMPT: usize = 3;

impl Client {
    /// `endpoints`: any members of the cluster, as `host:port`, `:port` or URLs.
    pub fn new(endpoints: &[String], options: ClientOptions) -> Result<Client, ClientError> {
        let endpoints: Vec<String> =
            endpoints.iter().map(|e| endpoint::base_url(e)).collect::<Result<_, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.request_timeout)
            .connect_timeout(attempts::connect_timeout(options.dial_timeout))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| ClientError::BadEndpoint {
                endpoint: endpoints.join(","),
                reason: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Client {
            http,
            endpoints,
            leader: Mutex::new(None),
            sessions: Mutex::new(BTreeMap::new()),
            sessions_unsupported: AtomicBool::new(false),
            routes: Mutex::new(Routes::default()),
            options,
        })
    }

    /// The routes of a sharded cluster, fetched if they are missing, older than an epoch a
    /// node named, or stale (at most once per `ROUTE_FETCH_INTERVAL`); `None` for a cluster not
    /// known to be sharded.
    async fn current_routes(&self) -> Option<std::sync::Arc<ShardRoutes>> {
        let (current, wanted) = {
            let routes = self.routes.lock().ok()?;
            let outdated = routes.epoch_seen > routes.current.as_ref().map_or(0, |r| r.epoch);
            let due = routes.next_fetch.is_none_or(|at| Instant::now() >= at);
            (routes.current.clone(), (outdated || routes.stale) && due)
        };
        if wanted { self.fetch_routes().await.or(current) } else { current }
    }

    /// Where a call goes first in a sharded cluster: its key's or its shard's leader.
    async fn routed_target(&self, call: &Call<'_>) -> Option<String> {
        if call.key.is_none() && call.shard.is_none() {
            return None;
        }
        let routes = self.current_routes().await?;
        match (call.key, call.shard) {
            (Some(key), _) => routes.target_of(key).map(str::to_string),
            (None, Some(shard)) => routes.target_of_shard(shard).map(str::to_string),
            (None, None) => None,
        }
    }

    /// The shard of `key`, if the cluster is known to be sharded.
    async fn shard_of(&self, key: Option<&str>) -> Option<u32> {
        Some(self.current_routes().await?.shard_of(key?))
    }

    /// `/cluster/shards` from the first endpoint that answers it, as routes.
    async fn fetch_routes(&self) -> Option<std::sync::Arc<ShardRoutes>> {
        if let Ok(mut routes) = self.routes.lock() {
            routes.next_fetch = Some(Instant::now() + ROUTE_FETCH_INTERVAL);
        }
        for base in &self.endpoints {
            let Ok(response) = self.http.get(format!("{base}/cluster/shards")).send().await else {
                continue;
            };
            let Ok(shards) = json_of::<ShardsJson>(response).await else { continue };
            match ShardRoutes::from_json(&shards) {
                Ok(fetched) => {
                    let fetched = fetched.map(std::sync::Arc::new);
                    let mut routes = self.routes.lock().ok()?;
                    routes.current = fetched.clone();
                    routes.stale = false;
                    routes.epoch_seen = routes.epoch_seen.max(shards.epoch);
                    return fetched;
                }
                Err(reason) => tracing::warn!(%base, %reason, "an unusable shard map"),
            }
        }
        None
    }

    /// Notes what an answer says of the cluster's map: its epoch (sharded clusters name it).
    fn note_epoch(&self, response: &reqwest::Response) {
        let epoch = response.headers().get(SHARD_EPOCH_HEADER);
        let epoch = epoch.and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if let (Some(epoch), Ok(mut routes)) = (epoch, self.routes.lock()) {
            routes.epoch_seen = routes.epoch_seen.max(epoch);
        }
    }

    fn routes_are_stale(&self) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.stale = true;
        }
    }

    /// The leader this client last heard of, if any.
    pub fn known_leader(&self) -> Option<String> {
        self.leader.lock().ok().and_then(|leader| leader.clone())
    }

    fn remember_leader(&self, base: Option<String>) {
        if let Ok(mut leader) = self.leader.lock() {
            *leader = base;
        }
    }

    /// Where to send attempt number `attempt`: the known leader first, then round robin.
    fn target(&self, attempt: usize, follow_leader: bool) -> String {
        if follow_leader
            && attempt.is_multiple_of(2)
            && let Some(leader) = self.known_leader()
        {
            return leader;
        }
        self.endpoints[attempt % self.endpoints.len()].clone()
    }

    /// Sends `call` until a node gives an answer that is not "ask someone else" (see the
    /// module docs), or the call's deadline passes.
    async fn send(&self, call: &Call<'_>) -> Result<reqwest::Response, ClientError> {
        let deadline = Instant::now() + self.options.call_deadline;
        let attempts = AtomicUsize::new(0);
        let failures = Attempts::new(self.options.dial_timeout, self.endpoints.len());
        let outcome = retry::until_deadline(deadline, || async {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed);
            // A key of a sharded cluster goes to its shard's leader first; after a failure
            // there, to the endpoints (any node routes any key) while the routes refresh.
            let routed = match attempt.is_multiple_of(2) {
                true => self.routed_target(call).await,
                false => None,
            };
            let base = routed.clone().unwrap_or_else(|| self.target(attempt, call.follow_leader));
            let answered = self.attempt(call, base.clone()).await;
            if let Some(routed) = routed {
                let sent_on = answered.as_ref().is_ok_and(|(_, final_base)| *final_base != routed);
                if answered.is_err() || sent_on {
                    self.routes_are_stale();
                }
            }
            match answered {
                Ok((response, _)) => Ok(response),
                Err(failure) => match failures.record(failure) {
                    true => Err(Failure::Transient(())),
                    false => Err(Failure::Permanent(())),
                },
            }
        })
        .await;
        outcome.map_err(|()| failures.into_error())
    }

    /// One attempt at `call`, starting at `base` and following the leader's redirects: the
    /// answer and the node that gave it. An error says why this attempt got no answer.
    async fn attempt(
        &self,
        call: &Call<'_>,
        mut base: String,
    ) -> Result<(reqwest::Response, String), AttemptFailure> {
        for _ in 0..=MAX_REDIRECTS_PER_ATTEMPT {
            let mut request = self
                .http
                .request(call.method.clone(), format!("{base}{}", call.path_and_query))
                .body(call.body.clone());
            for (name, value) in &call.headers {
                request = request.header(*name, value);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    if self.known_leader().as_deref() == Some(base.as_str()) {
                        self.remember_leader(None);
                    }
                    return Err(AttemptFailure::of_send(
                        &base,
                        &error,
                        self.options.request_timeout,
                    ));
                }
            };
            match response.status() {
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {
                    let location = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .and_then(endpoint::base_of_location);
                    let Some(leader) = location else {
                        return Err(AttemptFailure::answered(
                            &base,
                            "redirected without a usable Location",
                        ));
                    };
                    self.remember_leader(Some(leader.clone()));
                    base = leader;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    self.remember_leader(None);
                    let reason = response.text().await.unwrap_or_default();
                    return Err(AttemptFailure::answered(&base, reason.trim()));
                }
                // A sharded cluster's node routed by a map older than the shard's: the
                // request was refused before it took effect, and the node refreshes its map.
                StatusCode::MISDIRECTED_REQUEST => {
                    self.note_epoch(&response);
                    self.routes_are_stale();
                    let reason = response.text().await.unwrap_or_default();
                    return Err(AttemptFailure::answered(&base, reason.trim()));
                }
                _ => {
                    self.note_epoch(&response);
                    return Ok((response, base));
                }
            }
        }
        let reason =
            format!("more than {MAX_REDIRECTS_PER_ATTEMPT} redirects in a row, the last to {base}");
        Err(AttemptFailure::answered(&base, reason))
    }

    /// Runs a write under a session (if sessions are on): the same sequence number on every
    /// retry, so a write that reached the log before a timeout is not applied twice. In a
    /// sharded cluster the session is one of the write's key's shard.
    async fn send_write(&self, mut call: Call<'_>) -> Result<reqwest::Response, ClientError> {
        if !self.options.sessions || self.sessions_unsupported.load(Ordering::Relaxed) {
            return self.send(&call).await;
        }
        let shard = self.shard_of(call.key).await;
        let Some(mut session) = self.take_session(shard, call.key).await? else {
            return self.send(&call).await;
        };
        session.last_seq += 1;
        call.headers.push((CLIENT_ID_HEADER, session.client_id.to_string()));
        call.headers.push((SEQ_HEADER, session.last_seq.to_string()));
        let deadline = Instant::now() + self.options.call_deadline;
        let result = retry::until_deadline(deadline, || async {
            match self.send(&call).await {
                // The node gave up waiting for the commit: retrying with the same number is
                // safe and learns the outcome.
                Ok(response) if response.status() == StatusCode::GATEWAY_TIMEOUT => {
                    Err(Failure::Transient(ClientError::Unknown(
                        "no outcome before the deadline".into(),
                    )))
                }
                Ok(response) => Ok(response),
                Err(error) => Err(Failure::Permanent(error)),
            }
        })
        .await;
        // After an error the write may still apply later: the session's number is spent, so
        // the session is not reused (a later write would look like this one's retry).
        if result.is_ok() {
            self.return_session(session.shard, session);
        }
        result
    }

    /// A session of `shard` from the pool, or a new one; `None` if the cluster has none to
    /// give (an older sharded node answers 501), after which this client writes without
    /// sessions. A sharded node asked for a session without a shard answers 400 and names its
    /// map's epoch: the client then learns the shard of `key` and asks again.
    async fn take_session(
        &self,
        shard: Option<u32>,
        key: Option<&str>,
    ) -> Result<Option<Session>, ClientError> {
        let pooled = self.sessions.lock().ok().and_then(|mut pool| pool.get_mut(&shard)?.pop());
        if let Some(session) = pooled {
            return Ok(Some(session));
        }
        let mut shard = shard;
        let mut response = self.register_session(shard).await?;
        if response.status() == StatusCode::BAD_REQUEST
            && shard.is_none()
            && let Some(key_shard) = self.shard_of(key).await
        {
            shard = Some(key_shard);
            response = self.register_session(shard).await?;
        }
        if response.status() == StatusCode::NOT_IMPLEMENTED {
            tracing::debug!("the cluster has no client sessions; writing without them");
            self.sessions_unsupported.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        let registered: SessionJson = json_of(response).await?;
        Ok(Some(Session { client_id: registered.client_id, last_seq: 0, shard }))
    }

    /// `POST /session`, in `shard` if given (at its leader, by the routes).
    async fn register_session(&self, shard: Option<u32>) -> Result<reqwest::Response, ClientError> {
        let headers = shard.map(|shard| (SHARD_HEADER, shard.to_string())).into_iter().collect();
        let mut call = Call::change(Method::POST, "/session".into(), Bytes::new(), headers);
        call.shard = shard;
        self.send(&call).await
    }

    fn return_session(&self, shard: Option<u32>, session: Session) {
        if let Ok(mut pool) = self.sessions.lock() {
            let idle = pool.entry(shard).or_default();
            if idle.len() < SESSIONS_KEPT {
                idle.push(session);
            }
        }
    }

    /// Sets `key` to `value`; returns the key's new modification revision.
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<&str>,
        precondition: Precondition,
    ) -> Result<u64, ClientError> {
        let mut path = key_path(key);
        if let Some(ttl) = ttl {
            path.push_str(&format!("?ttl={}", encode_component(ttl)));
        }
        let mut headers = Vec::new();
        match precondition {
            Precondition::None => {}
            Precondition::Absent => headers.push(("if-none-match", "*".to_string())),
            Precondition::RevisionIs(revision) => {
                headers.push(("if-match", format!("\"{revision}\"")))
            }
        }
        let call = Call::change(Method::PUT, path, value, headers).about(key);
        let response = self.send_write(call).await?;
        match response.status() {
            StatusCode::OK | StatusCode::CREATED => Ok(etag_of(&response).unwrap_or(0)),
            StatusCode::PRECONDITION_FAILED => {
                Err(ClientError::ConditionFailed { current_revision: etag_of(&response) })
            }
            _ => Err(rejected(response).await),
        }
    }

    /// The value of `key` and its modification revision, or `None`.
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Versioned>, ClientError> {
        let call = Call::read(
            format!("{}?consistency={}", key_path(key), consistency.as_query()),
            consistency != Consistency::Stale,
        )
        .about(key);
        let response = self.send(&call).await?;
        match response.status() {
            StatusCode::OK => {
                let mod_revision = etag_of(&response).unwrap_or(0);
                let value = response
                    .bytes()
                    .await
                    .map_err(|error| ClientError::BadAnswer(error.to_string()))?;
                Ok(Some(Versioned { value, mod_revision }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(rejected(response).await),
        }
    }

    /// Deletes `key`; `NotFound` if it did not exist.
    pub async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), ClientError> {
        let mut headers = Vec::new();
        if let Precondition::RevisionIs(revision) = precondition {
            headers.push(("if-match", format!("\"{revision}\"")));
        }
        let call = Call::change(Method::DELETE, key_path(key), Bytes::new(), headers).about(key);
        let response = self.send_write(call).await?;
        match response.status() {
            // A node answers 200 either way and says in a header whether the key existed
            // (older nodes answered 404 for a missing key).
            StatusCode::OK | StatusCode::NO_CONTENT => {
                let removed = response.headers().get(DELETED_HEADER);
                match removed.map(|value| value.as_bytes()) {
                    Some(b"0") => Err(ClientError::NotFound),
                    _ => Ok(()),
                }
            }
            StatusCode::NOT_FOUND => Err(ClientError::NotFound),
            StatusCode::PRECONDITION_FAILED => {
                Err(ClientError::ConditionFailed { current_revision: etag_of(&response) })
            }
            _ => Err(rejected(response).await),
        }
    }

    /// Keys starting with `prefix` (at most `limit`, 0 = the server's maximum).
    pub async fn range(
        &self,
        prefix: &str,
        limit: u64,
        consistency: Consistency,
    ) -> Result<RangeJson, ClientError> {
        self.range_page(&RangePage { limit, consistency, ..RangePage::new(prefix) }).await
    }

    /// One page of a listing: `more` says whether keys follow, and the last key of this page
    /// is where the next starts (`start_after`). Each page is read at its own moment, with
    /// the page's consistency; a listing of many pages is not one snapshot.
    pub async fn range_page(&self, page: &RangePage<'_>) -> Result<RangeJson, ClientError> {
        let mut path = format!(
            "/kv?prefix={}&limit={}&consistency={}",
            encode_component(page.prefix),
            page.limit,
            page.consistency.as_query()
        );
        if let Some(start_after) = page.start_after {
            path.push_str(&format!("&start_after={}", encode_component(start_after)));
        }
        if page.keys_only {
            path.push_str("&keys_only=true");
        }
        let call = Call::read(path, page.consistency != Consistency::Stale);
        ok_json(self.send(&call).await?).await
    }

    /// Deletes every key starting with `prefix` (an empty prefix: every key); returns how many
    /// were deleted. One log entry per shard. Sent without a session: a retry after a lost
    /// answer deletes again, which can only remove keys written under the prefix since.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, ClientError> {
        let path = format!("/kv?prefix={}", encode_component(prefix));
        let call = Call::change(Method::DELETE, path, Bytes::new(), Vec::new());
        let response = self.send(&call).await?;
        if response.status() != StatusCode::OK {
            return Err(rejected(response).await);
        }
        let deleted = response.headers().get(DELETED_KEYS_HEADER);
        let deleted = deleted.and_then(|value| value.to_str().ok()?.parse().ok());
        deleted.ok_or_else(|| ClientError::BadAnswer("no count of deleted keys".into()))
    }

    /// An etcd-style transaction (compare, then success or failure operations).
    pub async fn txn(&self, request: &TxnRequestJson) -> Result<TxnResponseJson, ClientError> {
        let body = serde_json::to_string(request)
            .map_err(|error| ClientError::BadAnswer(format!("cannot encode the txn: {error}")))?;
        let call = Call::json_change("/txn", body);
        let call = match request.first_key() {
            Some(key) => call.about(key),
            None => call,
        };
        ok_json(self.send_write(call).await?).await
    }

    /// The state of the node behind the first endpoint that answers.
    pub async fn cluster_info(&self) -> Result<ClusterInfoJson, ClientError> {
        ok_json(self.send(&Call::read("/cluster/info".into(), false)).await?).await
    }

    /// `/cluster/info` of one particular endpoint (no retries elsewhere).
    pub async fn cluster_info_of(&self, base: &str) -> Result<ClusterInfoJson, ClientError> {
        self.json_of(base, "/cluster/info").await
    }

    /// `GET path` of the node at `base` alone (no retry on another endpoint), as JSON.
    async fn json_of<T: serde::de::DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        let response = self.http.get(format!("{base}{path}")).send().await.map_err(|error| {
            let failure = AttemptFailure::of_send(base, &error, self.options.request_timeout);
            ClientError::Unavailable { tried: base.to_string(), errors: failure.reason }
        })?;
        ok_json(response).await
    }

    /// The version the node at `base` runs (`GET /version`).
    pub async fn version_of(&self, base: &str) -> Result<VersionJson, ClientError> {
        self.json_of(base, "/version").await
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The shard map and each shard's state, as the first endpoint that answers gathers it.
    pub async fn shards(&self) -> Result<ShardsJson, ClientError> {
        ok_json(self.send(&Call::read("/cluster/shards".into(), false)).await?).await
    }

    pub async fn members(&self) -> Result<MembersJson, ClientError> {
        // The leader's list has each member's lag; a follower's has none.
        let info = self.cluster_info().await?;
        if info.role != "leader"
            && let Some(leader) = &info.leader_http_address
            && let Ok(base) = endpoint::base_url(leader)
            && let Ok(members) = self.json_of(&base, "/cluster/members").await
        {
            return Ok(members);
        }
        Ok(MembersJson { members: info.members })
    }

    /// A membership change at the leader: `add-learner`, `promote` or `remove` of `member`
    /// (`[host]:port[/peer_port]`, `name=peer-url` to add a named member, or an id or a name
    /// otherwise). Returns the new voters and learners.
    pub async fn change_membership(
        &self,
        action: &str,
        member: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.change_membership_with(action, member, None).await
    }

    /// [`Client::change_membership`], giving a named member's client URL as it is added.
    pub async fn change_membership_with(
        &self,
        action: &str,
        member: &str,
        client_url: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut body = serde_json::json!({ "action": action, "member": member });
        if let Some(url) = client_url {
            body["client_url"] = serde_json::Value::from(url);
        }
        let call = Call::json_change("/cluster/members", body.to_string());
        // A refusal with Retry-After is one that time lifts (the previous change has not
        // committed yet, a new leader has not committed its first entry): sent again until
        // the call's deadline. Every change is refused or applied whole, so resending is safe.
        let deadline = Instant::now() + self.options.call_deadline;
        let response = retry::until_deadline(deadline, || async {
            let response = self.send(&call).await.map_err(Failure::Permanent)?;
            let transient = response.status() == StatusCode::CONFLICT
                && response.headers().contains_key(reqwest::header::RETRY_AFTER);
            match response.status() {
                StatusCode::OK => Ok(response),
                _ if transient => {
                    tracing::debug!("membership change refused for now; retrying");
                    Err(Failure::Transient(rejected(response).await))
                }
                _ => Err(Failure::Permanent(rejected(response).await)),
            }
        })
        .await?;
        json_of(response).await
    }

    /// Hands leadership to member `to`; resolves once it leads.
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), ClientError> {
        self.transfer_leadership_of(None, to).await
    }

    /// Hands the leadership of `shard` (a sharded cluster's; its meta group without one) to
    /// member `to`.
    pub async fn transfer_leadership_of(
        &self,
        shard: Option<u32>,
        to: u64,
    ) -> Result<(), ClientError> {
        let path = match shard {
            Some(shard) => format!("/cluster/leader?shard={shard}"),
            None => "/cluster/leader".to_string(),
        };
        let call = Call::json_change(&path, serde_json::json!({ "to": to }).to_string());
        let response = self.send(&call).await?;
        if response.status() != StatusCode::OK {
            return Err(rejected(response).await);
        }
        Ok(())
    }

    /// Changes of keys under `prefix`, from `start_revision` (or from now), as they happen.
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: Option<u64>,
    ) -> Result<impl Stream<Item = Result<WatchEventJson, ClientError>> + use<>, ClientError> {
        let start = start_revision.map_or(WatchStart::Now, WatchStart::Revision);
        let response = self.open_watch(prefix, &start).await?;
        Ok(watch_events::events(response.bytes_stream()))
    }

    /// Like [`Client::watch`], with each change's position (its SSE id): a watch that breaks
    /// resumes exactly after the last change it delivered with `WatchStart::After(id)`, on any
    /// node. A position the node's history no longer holds is refused (410) with the reason.
    pub async fn watch_from(
        &self,
        prefix: &str,
        start: &WatchStart,
    ) -> Result<impl Stream<Item = Result<PositionedEvent, ClientError>> + use<>, ClientError> {
        let response = self.open_watch(prefix, start).await?;
        Ok(positioned_events(response.bytes_stream()))
    }

    /// Opens `/watch` on the first endpoint that takes it (a node that is down, shutting down or
    /// full of watchers is skipped), until the call's deadline.
    async fn open_watch(
        &self,
        prefix: &str,
        start: &WatchStart,
    ) -> Result<reqwest::Response, ClientError> {
        let mut path = format!("/watch?prefix={}", encode_component(prefix));
        if let WatchStart::Revision(revision) = start {
            path.push_str(&format!("&start_revision={revision}"));
        }
        let deadline = Instant::now() + self.options.call_deadline;
        let attempts = AtomicUsize::new(0);
        let failures = Attempts::new(self.options.dial_timeout, self.endpoints.len());
        retry::until_deadline(deadline, || async {
            let base = self.target(attempts.fetch_add(1, Ordering::Relaxed), false);
            // A watch lives as long as the caller wants: no request timeout on the stream.
            let mut request = self
                .http
                .get(format!("{base}{path}"))
                .header("accept", "text/event-stream")
                .timeout(Duration::from_secs(365 * 24 * 3600));
            if let WatchStart::After(id) = start {
                request = request.header("last-event-id", id);
            }
            match request.send().await {
                Ok(response) if response.status() == StatusCode::OK => Ok(response),
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let reason = response.text().await.unwrap_or_default();
                    match failures.record(AttemptFailure::answered(&base, reason.trim())) {
                        true => Err(Failure::Transient(None)),
                        false => Err(Failure::Permanent(None)),
                    }
                }
                Ok(response) => Err(Failure::Permanent(Some(rejected(response).await))),
                Err(error) => {
                    let failure =
                        AttemptFailure::of_send(&base, &error, self.options.request_timeout);
                    match failures.record(failure) {
                        true => Err(Failure::Transient(None)),
                        false => Err(Failure::Permanent(None)),
                    }
                }
            }
        })
        .await
        .map_err(|rejected| rejected.unwrap_or_else(|| failures.into_error()))
    }

    /// Whether the cluster is sharded (its nodes said so), as far as this client knows.
    pub async fn is_sharded(&self) -> bool {
        self.current_routes().await.is_some()
    }
}

/// `/kv/` and the key, percent-encoded so any UTF-8 key (spaces, `?`, `/`, emoji) survives.
fn key_path(key: &str) -> String {
    format!("/kv/{}", encode_component(key))
}

/// `text` percent-encoded for a path segment or a query value.
pub fn encode_component(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn etag_of(response: &reqwest::Response) -> Option<u64> {
    let etag = response.headers().get(reqwest::header::ETAG)?.to_str().ok()?;
    etag.trim_matches('"').parse().ok()
}

async fn rejected(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let message = response.text().await.unwrap_or_default().trim().to_string();
    match status {
        404 if message == "key not found" => ClientError::NotFound,
        504 => ClientError::Unknown(message),
        _ => ClientError::Rejected { status, message },
    }
}

/// The JSON body of a 200, or the refusal.
async fn ok_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ClientError> {
    if response.status() != StatusCode::OK {
        return Err(rejected(response).await);
    }
    json_of(response).await
}

async fn json_of<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ClientError> {
    let bytes =
        response.bytes().await.map_err(|error| ClientError::BadAnswer(error.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|error| ClientError::BadAnswer(error.to_string()))
}

/// The value of a JSON key-value, as bytes.
pub fn value_bytes(kv: &KeyValueJson) -> Result<Bytes, ClientError> {
    kv.bytes().map_err(ClientError::BadAnswer)
}
