//! The HTTP server loop on hyper: at most `max_connections` open connections (one beyond them
//! is answered 503 with `Retry-After` and closed at once, so a client is told instead of left
//! waiting in the accept queue), a connection idle for `idle_timeout_ms` without sending a
//! complete request head is closed (so idle or slow-loris connections cannot hold every slot;
//! bodies have their own deadline, see `kv::read_body`), and a graceful shutdown that stops
//! accepting, lets in-flight requests finish within `shutdown_timeout_ms`, then drops what is
//! left.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch as signal};

use super::service::ApiService;
use crate::config::HttpLimits;
use crate::metrics::Metrics;

/// Largest request head (request line and headers): a maximal key percent-encoded is about
/// 12 KiB; anything much larger is not a request of this API.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// After an accept error (typically out of file descriptors), wait before the next accept
/// instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

pub async fn serve(
    listener: TcpListener,
    service: ApiService,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut shutdown: signal::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.idle_timeout_ms))
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(&stream, limits.max_connections);
            metrics.refused_connections.inc();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        let metrics = metrics.clone();
        metrics.open_connections.inc();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            metrics.open_connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    let deadline = Duration::from_millis(limits.shutdown_timeout_ms);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("HTTP connections closed"),
        () = tokio::time::sleep(deadline) => {
            tracing::warn!(deadline_ms = limits.shutdown_timeout_ms, "in-flight requests did not finish before the shutdown deadline");
        }
    }
}

/// Tells a connection beyond the limit why it is closed, without waiting for it: the answer is
/// far smaller than a socket's send buffer, and a client that does not read it must not hold up
/// the accept loop.
fn refuse(stream: &tokio::net::TcpStream, max_connections: usize) {
    let body = format!(
        "too many connections: this node serves at most {max_connections} at once; retry shortly\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}
