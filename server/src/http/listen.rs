//! The accept loop: hyper connections with a header-read timeout (also the idle keep-alive limit), a
//! cap on open connections, and a shutdown that stops accepting, lets in-flight requests finish and
//! cuts whatever is still open after the shutdown deadline (a client that stalls mid-request cannot
//! hold the process). `axum::serve` offers none of these knobs, hence this loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::limits::Limits;
use super::metrics::Metrics;

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module docs). Returns
/// how many connections were cut at the deadline.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.rejected("-", "connection_limit");
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        "shutting down: {open} connection(s) open, waiting at most {} s for them",
        limits.shutdown_timeout.as_secs_f64()
    );
    tokio::select! {
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            let cut = slots.available_permits();
            let cut = limits.max_connections.saturating_sub(cut);
            tracing::warn!("shutdown deadline reached: cutting {cut} connection(s)");
            cut
        }
    }
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, cap: usize) {
    let body = format!(
        "{{\"error\":\"the server has its limit of {cap} open connections (--max-connections)\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
