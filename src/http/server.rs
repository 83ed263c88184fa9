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

/// Header bytes the HTTP/1 parser buffers before it answers a bare 431 and closes.
const PARSER_MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Whether a listener on `addr` serves anyone who can reach it, with no caller to check: the
/// startup warning. Loopback is left alone (tests, a sidecar behind its own proxy).
fn unauthenticated_beyond_loopback(addr: std::net::SocketAddr, has_callers: bool) -> bool {
    !addr.ip().is_loopback() && !has_callers
}

/// Serves until `shutdown` completes, then drains for at most `shutdown_grace_ms`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let grace = Duration::from_millis(state.server.shutdown_grace_ms);
    // convert the OpenAPI document now rather than on the first request for it
    std::sync::LazyLock::force(&super::openapi::OPENAPI_JSON);
    if let Ok(addr) = listener.local_addr()
        && unauthenticated_beyond_loopback(addr, state.callers().is_some())
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
    let server = &state.server;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(server.http2_max_header_list_bytes)
        .max_concurrent_streams(server.http2_max_concurrent_streams)
        .keep_alive_interval(Duration::from_millis(server.http2_keep_alive_interval_ms))
        .keep_alive_timeout(Duration::from_millis(server.http2_keep_alive_timeout_ms));
    builder
        .http1()
        .max_buf_size(PARSER_MAX_HEADER_BYTES)
        // no `max_headers`: hyper parses up to its default of 100 header fields into stack
        // arrays; any explicit limit makes it allocate and fill two heap arrays of that many
        // entries for every request (measured: ~10 % of a cached answer's CPU at 800), so a
        // request with more fields gets the parser's bare 431 instead of the router's
        .timer(TokioTimer::new())
        .keep_alive(true)
        // slow clients and idle keep-alive connections: no (next) request head after this
        // long, and the connection is dropped
        .header_read_timeout(Duration::from_millis(state.server.header_read_timeout_ms));
    let graceful = GracefulShutdown::new();
    let mut threads = ConnectionThreads::start(server.connection_threads, server.max_vendor_calls);
    let connections = Arc::new(tokio::sync::Semaphore::new(server.max_connections.max(1)));
    let drain_delay = Duration::from_millis(server.drain_delay_ms);
    // set when the shutdown signal came: the listener serves until then
    let mut close_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let draining = close_at.is_some();
        let close = async {
            match close_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
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
                // beyond `max_connections` a connection is closed at once, before it holds
                // anything more than its descriptor
                let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                    tracing::debug!("connection refused: server.max_connections reached");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (builder, svc) = (builder.clone(), svc.clone());
                let first_byte = Duration::from_millis(server.header_read_timeout_ms);
                let watcher = graceful.watcher();
                let serve = move |stream: tokio::net::TcpStream| async move {
                    // the protocol is only known from the first bytes, and hyper's header
                    // timeout starts after them: a connection that sends nothing is dropped
                    // here, so idle connections cannot pile up
                    let mut probe = [0u8; 1];
                    if !matches!(
                        tokio::time::timeout(first_byte, stream.peek(&mut probe)).await,
                        Ok(Ok(n)) if n > 0
                    ) {
                        drop(permit);
                        return;
                    }
                    let conn = builder.serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(svc),
                    );
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                };
                threads.hand_over(stream, serve);
            }
            _ = &mut shutdown, if !draining => {
                state.set_ready(false);
                tracing::info!(
                    drain_delay_ms = server.drain_delay_ms,
                    "draining started: /readyz answers 503; the listener closes after the drain delay"
                );
                close_at = Some(tokio::time::Instant::now() + drain_delay);
            }
            _ = close => break,
        }
    }
    state.set_ready(false);
    // connections the kernel completed but nobody accepted yet would be reset by the close:
    // take them first, so that every connect that succeeded gets its answer
    loop {
        let stream = match futures_util::FutureExt::now_or_never(listener.accept()) {
            Some(Ok((stream, _))) => stream,
            _ => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(svc.clone()),
        );
        let fut = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = fut.await;
            drop(permit);
        });
    }
    drop(listener);
    // a connection accepted a moment ago has not sent its request yet, and a graceful
    // shutdown closes an HTTP/1 connection with no request in progress: let it arrive
    tokio::time::sleep(grace.min(Duration::from_millis(200))).await;
    tracing::info!(
        grace_ms = state.server.shutdown_grace_ms,
        "listener closed; letting requests in flight finish"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// A connection's work, started on the thread that serves it.
type Job = Box<dyn FnOnce(tokio::net::TcpStream) -> BoxedConn + Send>;
type BoxedConn = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// `server.connection_threads`: threads that each run a single-threaded runtime and serve the
/// connections handed to them, round robin, with a vendor client of their own. A request, its
/// vendor calls and their answers then stay on one thread: on the shared multi-threaded
/// runtime each of those steps could wake the other worker (a futex wake-up, a steal, cold
/// caches), which measured ~25 % of the CPU of a vendor call (docs/benchmarks.md, "eighth
/// session"). With none, connections are served on the shared runtime.
struct ConnectionThreads {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, Job)>>,
    next: usize,
}

impl ConnectionThreads {
    fn start(n: usize, vendor_calls: usize) -> ConnectionThreads {
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, Job)>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a connection thread; serving on the shared runtime");
                    break;
                }
            };
            let spawned = std::thread::Builder::new()
                .name(format!("cgw-conn-{i}"))
                .spawn(move || {
                    crate::engine::upstream::own_client_for_this_thread(vendor_calls);
                    runtime.block_on(async move {
                        while let Some((stream, job)) = rx.recv().await {
                            match tokio::net::TcpStream::from_std(stream) {
                                Ok(stream) => {
                                    tokio::spawn(job(stream));
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "connection lost in hand-over")
                                }
                            }
                        }
                    });
                    // the listener is closed and every connection drained (or the grace over)
                });
            match spawned {
                Ok(_) => senders.push(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a connection thread; serving on the shared runtime");
                    break;
                }
            }
        }
        ConnectionThreads { senders, next: 0 }
    }

    /// Serves `stream` by `serve` on the next connection thread, or here when there is none.
    fn hand_over<F, Fut>(&mut self, stream: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.senders.is_empty() {
            tokio::spawn(serve(stream));
            return;
        }
        // out of this runtime's reactor, into the thread's own
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let i = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        let job: Job = Box::new(move |s| Box::pin(serve(s)));
        if let Err(e) = self.senders[i].send((stream, job)) {
            tracing::warn!(error = %e.to_string(), "a connection thread is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_open_listener_beyond_loopback_warrants_the_warning() {
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert!(unauthenticated_beyond_loopback(at("0.0.0.0:8080"), false));
        assert!(unauthenticated_beyond_loopback(at("10.1.2.3:8080"), false));
        assert!(unauthenticated_beyond_loopback(at("[::]:8080"), false));
        assert!(!unauthenticated_beyond_loopback(at("0.0.0.0:8080"), true));
        assert!(!unauthenticated_beyond_loopback(
            at("127.0.0.1:8080"),
            false
        ));
        assert!(!unauthenticated_beyond_loopback(at("[::1]:8080"), false));
    }
}
