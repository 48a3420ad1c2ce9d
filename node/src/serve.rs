//! `conclave serve`: one node's life. Bind the HTTP port, recover storage and start the engine
//! thread, serve HTTP until SIGTERM or SIGINT, then stop accepting, let in-flight requests
//! finish (within the shutdown deadline), stop the engine (which finishes its storage work, so
//! everything acknowledged is synced) and return. If the engine stops on its own (a storage
//! failure), the node stops too, with the reason, and exits non-zero.

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::NodeConfig;
use crate::engine_thread;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::watch_hub::WatchHub;

/// Connections kept open to the leader per follower, for forwarding.
const FORWARD_POOL_IDLE_PER_HOST: usize = 64;

pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // Bind first: a port in use is reported before any disk work.
    let listener = TcpListener::bind(config.http_bind_address())
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_bind_address()))?;
    let metrics = Arc::new(Metrics::new());
    let engine = engine_thread::start((*config).clone(), metrics.fsync_seconds.clone()).await?;
    let recovery = &engine.recovery;
    tracing::info!(
        node = config.node_id.0,
        data_dir = %config.working_dir.display(),
        created = recovery.created,
        log_entries = recovery.log_entries,
        snapshot_index = recovery.snapshot_index,
        term = recovery.term,
        members = ?config.members.keys().map(|id| id.0).collect::<Vec<_>>(),
        "storage recovered, engine started"
    );
    let hub = WatchHub::new(config.watch_history_events);
    tokio::spawn(hub.clone().run(engine.events));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let forwarder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(FORWARD_POOL_IDLE_PER_HOST)
        .build()
        .context("cannot build the HTTP client for forwarding")?;
    let state = Arc::new(AppState {
        config: config.clone(),
        engine: engine.handle.clone(),
        hub,
        metrics: metrics.clone(),
        forwarder,
        shutdown: shutdown_rx.clone(),
        watchers: Arc::new(Semaphore::new(config.http.max_watchers)),
    });
    let app = http::router(state);
    let server =
        tokio::spawn(http::server::serve(listener, app, config.http.clone(), metrics, shutdown_rx));
    tracing::info!(
        node = config.node_id.0,
        http = %config.http_bind_address(),
        peers = %config.peer_bind_address(),
        "serving"
    );
    let mut finished = engine.finished;
    let engine_stopped = tokio::select! {
        signal = termination_signal() => {
            tracing::info!(signal, "shutting down: no new connections, finishing in-flight requests");
            None
        }
        result = &mut finished => Some(result),
    };
    let _ = shutdown_tx.send(true);
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
    let thread = engine.thread;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    match result {
        Ok(Ok(())) | Err(_) => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Ok(Err(reason)) => Err(anyhow!("the engine failed while stopping: {reason}")),
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn termination_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
