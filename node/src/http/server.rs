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
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
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
            refuse(stream, limits.max_connections, &refusals);
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

/// Refusals being written at once, at most; beyond them a connection is just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 256;
/// How long a refusal may take to write and to see the client's request drained.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);

/// Tells a connection beyond the limit why it is closed. The answer is written, the sending
/// side shut, and what the client already sent is read and dropped before the socket closes:
/// closing with its request unread would make the kernel reset the connection, and the client
/// would see a reset instead of the answer. Bounded in time and in number, so refusing costs
/// the node little while it is overloaded.
fn refuse(stream: tokio::net::TcpStream, max_connections: usize, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = stream;
        let body = format!(
            "too many connections: this node serves at most {max_connections} at once; retry \
             shortly\n"
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let refusal = async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, refusal).await;
        drop(permit);
    });
}
