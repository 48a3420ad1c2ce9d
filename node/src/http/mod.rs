//! The HTTP API (see DESIGN.md, "HTTP API (node)"): routes, shared state, and the server loop.
//!
//! Files: `server.rs` (accept loop, connection limits, graceful shutdown), `kv.rs` (keys,
//! ranges, clear, sessions), `txn.rs`, `watch.rs` (server-sent events), `cluster.rs` (info,
//! members, health, metrics), `leader.rs` (redirect or forward to the leader), `observe.rs`
//! (latency metrics), `leader_balancer.rs` (a sharded cluster's leaderships kept even), `service.rs` (the fast path for single-key requests, in front of the
//! router), `key_request.rs` (the head of a single-key request, parsed), `key.rs`, `params.rs`,
//! `reply.rs`.

mod admin;
mod backup;
mod cluster;
mod fan_out;
mod key;
pub mod key_request;
mod kv;
mod leader;
mod leader_balancer;
mod observe;
pub mod params;
mod propose;
mod reply;
pub mod server;
mod service;
mod sharded_watch;
mod shards;
mod txn;
mod watch;

pub use leader_balancer::run as balance_leaders;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, delete, get, post};
use conclave_core::engine::EngineHandle;
use conclave_core::raft::NodeId;
use conclave_core::shard::ShardId;
use tokio::sync::{Semaphore, watch as signal};

use crate::clock::OsClock;
use crate::config::NodeConfig;
use crate::local_groups::LocalGroups;
use crate::metrics::Metrics;
use conclave_core::engine::WatchHub;

/// What every handler can reach.
pub struct AppState {
    pub config: Arc<NodeConfig>,
    /// The node's main group (`RunningEngine::handle`): membership, status, backups.
    pub engine: EngineHandle,
    /// Every group this node hosts, and where a request for a key or a shard goes.
    pub groups: Arc<LocalGroups>,
    /// The engine's clock, for reads answered without the engine (`propose::read`).
    pub clock: OsClock,
    /// Each hosted group's watch history.
    pub hubs: BTreeMap<ShardId, Arc<WatchHub>>,
    pub metrics: Arc<Metrics>,
    /// Pooled connections to the leader, for forwarding.
    pub forwarder: reqwest::Client,
    /// Flips to true when the node starts shutting down: watch streams end.
    pub shutdown: signal::Receiver<bool>,
    /// Bounds the number of open watch streams.
    pub watchers: Arc<Semaphore>,
}

impl AppState {
    /// The HTTP address of a member, for redirects and forwarding: what it advertised, by the
    /// configuration in the log (see `NodeConfig::http_address_of`).
    pub fn http_address_of(&self, id: NodeId) -> Option<String> {
        self.config.http_address_of(id, self.engine.peer_address(id).as_deref())
    }
}

/// What the server calls for each request: single-key requests on a fast path, the rest through
/// [`router`].
pub fn service(state: Arc<AppState>) -> service::ApiService {
    service::ApiService::new(state.clone(), router(state))
}

pub fn router(state: Arc<AppState>) -> Router {
    let not_allowed = || any(reply_method_not_allowed);
    Router::new()
        .route(
            "/kv",
            get(kv::range)
                .put(kv::empty_key)
                .delete(kv::delete_prefix)
                .fallback(reply_method_not_allowed),
        )
        .route(
            "/kv/",
            get(kv::empty_key)
                .put(kv::empty_key)
                .delete(kv::empty_key)
                .fallback(reply_method_not_allowed),
        )
        .route(
            observe::KEY_ROUTE,
            get(kv::get_key_route)
                .put(kv::put_key_route)
                .delete(kv::delete_key_route)
                .fallback(reply_method_not_allowed),
        )
        .route("/clear", delete(kv::clear).fallback(reply_method_not_allowed))
        .route("/session", post(kv::register_session).fallback(reply_method_not_allowed))
        .route("/txn", post(txn::txn).fallback(reply_method_not_allowed))
        .route("/watch", get(watch::watch).fallback(reply_method_not_allowed))
        .route("/cluster/info", get(cluster::info).fallback(reply_method_not_allowed))
        .route("/cluster/shards", get(shards::shards).fallback(reply_method_not_allowed))
        .route("/cluster/shard-map", get(shards::shard_map).fallback(reply_method_not_allowed))
        .route(
            "/cluster/members",
            get(cluster::members).post(admin::change_membership).fallback(reply_method_not_allowed),
        )
        .route(
            "/cluster/leader",
            post(admin::transfer_leadership).fallback(reply_method_not_allowed),
        )
        .route("/admin/backup", get(backup::backup).fallback(reply_method_not_allowed))
        .route("/health", get(cluster::health).fallback(reply_method_not_allowed))
        .route("/version", get(cluster::version).fallback(reply_method_not_allowed))
        .route("/livez", get(cluster::livez).fallback(reply_method_not_allowed))
        .route("/readyz", get(cluster::readyz).fallback(reply_method_not_allowed))
        .route("/metrics", get(cluster::metrics).fallback(reply_method_not_allowed))
        .route("/", not_allowed())
        .fallback(reply_not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state)
}

async fn reply_method_not_allowed() -> axum::response::Response {
    reply::text(axum::http::StatusCode::METHOD_NOT_ALLOWED, reply::METHOD_NOT_ALLOWED)
}

async fn reply_not_found() -> axum::response::Response {
    reply::text(axum::http::StatusCode::NOT_FOUND, reply::NOT_FOUND)
}
