//! `conclave serve`: one node's life. Bind its ports, lock and check its data directory, recover
//! storage and start the engine thread, listen once the node can serve (see
//! `wait_until_serving`), serve HTTP until SIGTERM or SIGINT, then stop accepting, let
//! in-flight requests finish (within the shutdown deadline), stop the engine (which finishes
//! its storage work, so everything acknowledged is synced) and return. If the engine stops on its own (a storage
//! failure), the node stops too, with the reason, and exits non-zero.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::bound_socket::BoundSocket;
use crate::config::{Naming, NodeConfig};
use crate::data_dir::DataDir;
use crate::engine_thread;
use crate::http::{self, AppState};
use crate::local_groups::LocalGroups;
use crate::member_identity::{self, MemberIdentity};
use crate::member_publish;
use crate::metrics::Metrics;
use crate::removal_watch;
use crate::shard_layout;
use crate::shard_map_keeper;
use crate::stop_signals::StopSignals;
use crate::systemd_notify;
use conclave_client::api::ClusterInfoJson;

/// Connections kept open to the leader per follower, for forwarding.
const FORWARD_POOL_IDLE_PER_HOST: usize = 64;

/// How long a joining node keeps asking its peers for the cluster's id.
const JOIN_DISCOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// A joining node's cluster id: asked of the other members over HTTP (the id guards the peer
/// transport against nodes of other clusters, so it must be the cluster's, not derived from
/// this node's view of the member list).
async fn discover_cluster_id(config: &NodeConfig) -> anyhow::Result<u64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("cannot build the HTTP client")?;
    let peers = config.other_http_addresses();
    if peers.is_empty() {
        return Err(anyhow!("--join needs the existing members in --peers"));
    }
    let deadline = tokio::time::Instant::now() + JOIN_DISCOVERY_DEADLINE;
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        for peer in &peers {
            let answer = client.get(format!("http://{peer}/cluster/info")).send().await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    let body = response.bytes().await.unwrap_or_default();
                    match serde_json::from_slice::<ClusterInfoJson>(&body) {
                        Ok(info) if info.cluster_id != 0 => return Ok(info.cluster_id),
                        Ok(_) => last_error = format!("{peer} did not say its cluster id"),
                        Err(error) => last_error = format!("{peer}: {error}"),
                    }
                }
                Ok(response) => last_error = format!("{peer} answered {}", response.status()),
                Err(error) => last_error = format!("{peer}: {error}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow!(
        "no member in --peers told its cluster id within {} s: {last_error}",
        JOIN_DISCOVERY_DEADLINE.as_secs()
    ))
}

pub async fn run(mut config: NodeConfig) -> anyhow::Result<()> {
    // Before anything else: a SIGTERM from then on gets the orderly shutdown below (once
    // storage is recovered), not the default immediate exit.
    let mut stop_signals = StopSignals::install()?;
    raise_open_files_limit();
    // Every port is bound before anything is created or accepted (see `bound_socket.rs`).
    let http_address = config.http_bind_address();
    let http_socket = BoundSocket::bind(&http_address)
        .with_context(|| format!("cannot listen for HTTP on {http_address}"))?;
    let peer_socket = match config.peer_bind_address() {
        Some(address) if config.listens_for_peers_at_start() => Some(
            BoundSocket::bind(&address)
                .with_context(|| format!("cannot listen for peers on {address}"))?,
        ),
        Some(_) => None,
        None if config.listens_for_peers_at_start() => {
            return Err(anyhow!("node {} has peers but no peer port", config.node_id.0));
        }
        None => None,
    };
    let data_dir = DataDir::open(&config.working_dir, &config.data_dir_member())?;
    let recorded = member_identity::read(data_dir.path())?;
    // A named member's cluster id comes from its token; a port-named one that joins asks.
    if config.join && matches!(config.naming, Naming::Ports { .. }) {
        // A member that joined once knows its cluster: a restart needs no other member up.
        config.cluster_id = match recorded.and_then(|identity| identity.cluster_id) {
            Some(cluster_id) => cluster_id,
            None => discover_cluster_id(&config).await?,
        };
        tracing::info!(cluster_id = config.cluster_id, "joining an existing cluster");
    }
    let asked = MemberIdentity {
        node_id: config.node_id.0,
        cluster_id: Some(config.cluster_id),
        name: config.name.clone(),
    };
    member_identity::check_or_record(data_dir.path(), asked)?;
    shard_layout::check_or_record(data_dir.path(), config.sharding.as_ref())?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let peer_listener = match peer_socket {
        Some(socket) => Some(socket.listen().context("cannot listen for peers")?),
        None => None,
    };
    let engine = engine_thread::start(
        (*config).clone(),
        data_dir.path().to_path_buf(),
        peer_listener,
        metrics.fsync_seconds.clone(),
        config.watch_history_events,
    )
    .await?;
    let recovery = &engine.recovery;
    tracing::info!(
        node = config.node_id.0,
        data_dir = %data_dir.path().display(),
        created = recovery.created,
        log_entries = recovery.log_entries,
        snapshot_index = recovery.snapshot_index,
        term = recovery.term,
        members = ?config.members.keys().map(|id| id.0).collect::<Vec<_>>(),
        "storage recovered, engine started"
    );
    if let Some(map) = &engine.bootstrap_map {
        tracing::info!(
            shards = map.shards().count(),
            hosted = ?engine.groups.keys().map(|shard| shard.0).collect::<Vec<_>>(),
            "sharded: hosting these shards' replicas"
        );
    }
    for group in engine.groups.values() {
        wait_until_serving(group, &config).await;
    }
    let listener = http_socket
        .listen()
        .and_then(TcpListener::from_std)
        .with_context(|| format!("cannot listen for HTTP on {http_address}"))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let forwarder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(FORWARD_POOL_IDLE_PER_HOST)
        .build()
        .context("cannot build the HTTP client for forwarding")?;
    let groups = Arc::new(LocalGroups::new(
        engine.handle.clone(),
        engine.groups.clone(),
        engine.bootstrap_map.clone(),
    ));
    let map_keeper = engine.bootstrap_map.clone().map(|bootstrap| {
        tokio::spawn(shard_map_keeper::run(
            groups.clone(),
            bootstrap,
            config.clone(),
            forwarder.clone(),
            shutdown_rx.clone(),
        ))
    });
    let state = Arc::new(AppState {
        config: config.clone(),
        engine: engine.handle.clone(),
        groups: groups.clone(),
        clock: engine.clock.clone(),
        hubs: engine.hubs.clone(),
        metrics: metrics.clone(),
        forwarder,
        shutdown: shutdown_rx.clone(),
        watchers: Arc::new(Semaphore::new(config.http.max_watchers)),
    });
    let balancer = (config.sharding.is_some() && config.balance_leaders)
        .then(|| tokio::spawn(http::balance_leaders(state.clone())));
    let service = http::service(state);
    let publisher = tokio::spawn(member_publish::run(
        engine.handle.clone(),
        config.clone(),
        shutdown_rx.clone(),
    ));
    let server = tokio::spawn(http::server::serve(
        listener,
        service,
        config.http.clone(),
        metrics,
        shutdown_rx,
    ));
    // The port listens and the node can answer: tell systemd (`Type=notify`), if it asked.
    systemd_notify::ready();
    tracing::info!(
        node = config.node_id.0,
        name = config.name.as_deref().unwrap_or(""),
        advertised_client = %config.advertised_client,
        http = %config.http_bind_address(),
        peers = config.peer_bind_address().as_deref().unwrap_or("none"),
        "serving"
    );
    let mut finished = engine.finished;
    let removal = removal_watch::removed(engine.handle.clone(), config.clone());
    let mut removed = None;
    let engine_stopped = tokio::select! {
        signal = stop_signals.next() => {
            tracing::info!(signal, "shutting down: no new connections, finishing in-flight requests");
            None
        }
        reason = removal => {
            tracing::error!(%reason, "stopping: this node is no longer a member");
            removed = Some(reason);
            None
        }
        result = &mut finished => Some(result),
    };
    systemd_notify::stopping();
    if engine_stopped.is_none() && removed.is_none() {
        let hand_overs = engine.groups.values().map(|group| hand_over_leadership(group, &config));
        futures::future::join_all(hand_overs).await;
    }
    let _ = shutdown_tx.send(true);
    publisher.abort();
    if let Some(balancer) = balancer {
        balancer.abort();
    }
    if let Some(keeper) = map_keeper {
        keeper.abort();
    }
    if let Some(result) = engine_stopped {
        let _ = server.await;
        let reason = match result {
            Ok(Ok(())) => "the engine stopped".to_string(),
            Ok(Err(reason)) => reason,
            Err(_) => "the engine thread ended".to_string(),
        };
        return Err(anyhow!("the node stopped: {reason}"));
    }
    let _ = server.await;
    engine.handle.shutdown().await;
    let result = finished.await;
    // The lock goes only once the engine has finished writing.
    let _data_dir = data_dir;
    let thread = engine.thread;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    match (result, removed) {
        (Ok(Err(reason)), _) => Err(anyhow!("the engine failed while stopping: {reason}")),
        (_, Some(reason)) => Err(anyhow!("{reason}")),
        (Ok(Ok(())) | Err(_), None) => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

/// Every connection costs a file descriptor, and `--max-connections` (4,096 by default) is
/// above the usual soft limit of 1,024: raise the soft limit to the hard one, as servers do.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%error, soft, hard, "could not raise the open-files limit");
    }
}

/// How long a node that is its own cluster waits to lead before it opens its HTTP port anyway
/// (answering 503 until it leads). Leading takes two syncs; this bound is for a disk that is
/// full or failing.
const SOLE_VOTER_READY_DEADLINE: Duration = Duration::from_secs(10);

/// Returns once the node can serve what its HTTP port will receive. A member of a larger
/// cluster serves as soon as its storage is recovered (without a leader it answers 503 with
/// `Retry-After`, which is the truth). A node that is the only voter leads without an election
/// timeout (it campaigns at once); it waits until it leads and has applied its first entry,
/// so that the very first request succeeds.
async fn wait_until_serving(engine: &conclave_core::engine::EngineHandle, config: &NodeConfig) {
    let mut status = engine.status_receiver();
    let ready = async {
        loop {
            {
                let now = status.borrow_and_update();
                // A joining node has no configuration until the leader sends one; nothing to
                // wait for. Otherwise, before the engine's first status, the voters are unknown.
                if config.join {
                    return true;
                }
                let published = !now.voters.is_empty();
                if published && now.voters != [config.node_id] {
                    return true;
                }
                let leads = now.role == conclave_core::raft::Role::Leader;
                if leads && now.applied_index >= now.last_index && now.last_index > 0 {
                    return true;
                }
            }
            if status.changed().await.is_err() {
                return false;
            }
        }
    };
    match tokio::time::timeout(SOLE_VOTER_READY_DEADLINE, ready).await {
        Ok(true) => {}
        _ => tracing::warn!(
            deadline_s = SOLE_VOTER_READY_DEADLINE.as_secs(),
            "not leading yet; serving anyway (requests get 503 until it leads)"
        ),
    }
}

/// A leader that is asked to stop hands leadership to the most caught-up voter first, so a
/// rolling restart costs no election timeout. Bounded by two election timeouts; if the hand-over
/// does not happen, the node stops anyway and the others elect a leader as usual.
async fn hand_over_leadership(engine: &conclave_core::engine::EngineHandle, config: &NodeConfig) {
    let status = engine.status();
    if status.role != conclave_core::raft::Role::Leader {
        return;
    }
    let target = status
        .peers
        .iter()
        .filter(|peer| peer.id != status.id && status.voters.contains(&peer.id))
        .max_by_key(|peer| peer.matched)
        .map(|peer| peer.id);
    let Some(target) = target else { return };
    if let Err(error) = engine.transfer_leadership(target).await {
        tracing::warn!(%error, target = target.0, "could not hand over leadership before stopping");
        return;
    }
    let mut status = engine.status_receiver();
    let deadline = Duration::from_millis(2 * config.election_timeout_ms);
    let moved = tokio::time::timeout(deadline, async {
        loop {
            let leader = status.borrow_and_update().leader;
            if leader.is_some_and(|leader| leader != config.node_id) {
                return leader;
            }
            if status.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    match moved {
        Ok(Some(leader)) => {
            tracing::info!(leader = leader.0, "handed leadership over before stopping")
        }
        _ => tracing::warn!(
            target = target.0,
            "leadership was not handed over in time; stopping anyway"
        ),
    }
}
