//! The accept loop: HTTP/1.1 and HTTP/2 (h2c) on one port, slow-client header timeouts, and
//! graceful shutdown that lets requests in flight finish.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::stack::app;
use crate::app::AppState;

/// Header bytes the HTTP parser buffers before it answers a bare 431 and closes.
const PARSER_MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Serves until `shutdown` completes, then drains for at most `shutdown_grace_ms`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let grace = Duration::from_millis(state.plan.server.shutdown_grace_ms);
    // convert the OpenAPI document now rather than on the first request for it
    std::sync::LazyLock::force(&super::openapi::OPENAPI_JSON);
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
        && state.callers().is_none()
    {
        tracing::warn!(
            %addr,
            "NO CALLER AUTHENTICATION on a listener beyond loopback: anyone who can reach this \
             port can read any member's coupons and create templates; configure `callers:` \
             in routes.yaml"
        );
        eprintln!(
            "WARNING: coupon-gateway listens on {addr} with no caller authentication \
             (configure `callers:` in routes.yaml)"
        );
    }
    let svc = app(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // the parser's own limits are far above the router's (`MAX_HEADER_BYTES`), so that
    // oversized headers get the router's problem+json 431 rather than the parser's bare one
    builder
        .http2()
        .max_header_list_size(PARSER_MAX_HEADER_BYTES as u32);
    builder
        .http1()
        .max_buf_size(PARSER_MAX_HEADER_BYTES)
        .max_headers(4 * super::router::MAX_HEADERS)
        .timer(TokioTimer::new())
        // slow clients: no headers after this long, and the connection is dropped
        .header_read_timeout(Duration::from_millis(
            state.plan.server.header_read_timeout_ms,
        ));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // out of file descriptors and the like: pause instead of spinning
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(svc.clone()),
                );
                let fut = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    state.set_ready(false);
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}
