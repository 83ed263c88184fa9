//! The HTTP machinery shared by every simulator: listener (with stop / re-bind on the same
//! port), one tokio task per connection (hyper-util `auto::Builder`: HTTP/1.1 keep-alive and
//! h2c), request counting, fault injection and the `/__sandbox/fault` control route.
//!
//! Vendors only see a fully read [`SimRequest`] and answer a [`SimReply`]; everything they do
//! is synchronous and in memory, so no lock is ever held across an `.await`.
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

use super::{Fault, RECEIVED_KEPT, Received};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type SimBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest request body a simulator reads; a bigger one is treated as a malformed body.
pub(crate) const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// A request as the vendors see it: fully read, nothing borrowed.
#[derive(Debug, Clone)]
pub(crate) struct SimRequest {
    pub method: Method,
    pub path: String,
    /// Raw query string (without `?`), empty when absent.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `http://host:port` as the client addressed us (for pagination links).
    pub base_url: String,
}

impl SimRequest {
    /// Query parameters in their order of appearance, names and values percent-decoded
    /// (`+` is kept as is: none of the vendors uses form encoding in the query).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_query(&self.query)
    }
}

pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| crate::crypto::percent_decode(s).unwrap_or_else(|| s.to_owned());
            (dec(k), dec(v))
        })
        .collect()
}

/// A complete answer from a vendor.
#[derive(Debug, Clone)]
pub(crate) struct SimReply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl SimReply {
    pub fn json(status: u16, value: &serde_json::Value) -> SimReply {
        SimReply {
            status,
            content_type: "application/json;charset=UTF-8".to_owned(),
            body: Bytes::from(value.to_string()),
        }
    }

    pub fn text(status: u16, text: &str) -> SimReply {
        SimReply {
            status,
            content_type: "text/plain; charset=utf-8".to_owned(),
            body: Bytes::from(text.to_owned()),
        }
    }
}

/// One vendor's behaviour. Everything is synchronous and in memory.
pub(crate) trait Vendor: Send + Sync + 'static {
    /// The normal answer to a request (including the vendor's own business errors).
    fn handle(&self, req: &SimRequest) -> SimReply;
    /// `Fault::BusinessError`: the vendor's own "system error" envelope.
    fn business_error(&self) -> SimReply;
    /// `Fault::WrongTypes`: the vendor's success envelope with data of the wrong JSON types.
    fn wrong_types(&self, req: &SimRequest) -> SimReply;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another request panicked mid-update; the state is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct ListenerSlot {
    /// Bumped on every stop and every (re-)bind; an accept loop only serves its own generation.
    generation: u64,
    listener: Option<TcpListener>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    /// While refusing connections: the port, bound but not listening (connects are refused,
    /// and no other socket can take the port before we listen on it again).
    reserved: Option<TcpSocket>,
}

pub(crate) struct SimInner {
    pub vendor_id: &'static str,
    pub addr: SocketAddr,
    vendor: Arc<dyn Vendor>,
    fault: Mutex<Option<Fault>>,
    requests: AtomicU64,
    /// The last requests, oldest first.
    received: Mutex<VecDeque<Received>>,
    /// Requests `Fault::FailFirst` still fails.
    fail_left: AtomicU32,
    /// `Fault::Hold` waits for a permit of this gate; replacing the fault closes it (which lets
    /// every waiter go) and puts a fresh one in its place.
    gate: Mutex<Arc<Semaphore>>,
    /// Requests waiting at the gate.
    held: tokio::sync::watch::Sender<usize>,
    slot: Mutex<ListenerSlot>,
    runtime: tokio::runtime::Handle,
    /// Bumped to make every open connection drop (used when we stop listening).
    conn_epoch: tokio::sync::watch::Sender<u64>,
}

impl SimInner {
    /// Binds `addr` (port 0 = OS-assigned) and starts serving. Must run inside a tokio runtime.
    pub async fn start(
        vendor_id: &'static str,
        addr: SocketAddr,
        vendor: Arc<dyn Vendor>,
    ) -> std::io::Result<Arc<SimInner>> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(SimInner {
            vendor_id,
            addr,
            vendor,
            fault: Mutex::new(None),
            requests: AtomicU64::new(0),
            received: Mutex::new(VecDeque::new()),
            fail_left: AtomicU32::new(0),
            gate: Mutex::new(Arc::new(Semaphore::new(0))),
            held: tokio::sync::watch::Sender::new(0),
            slot: Mutex::new(ListenerSlot {
                generation: 0,
                listener: None,
                accept_task: None,
                reserved: None,
            }),
            runtime: tokio::runtime::Handle::current(),
            conn_epoch: tokio::sync::watch::Sender::new(0),
        });
        inner.install_listener(listener);
        Ok(inner)
    }

    fn install_listener(self: &Arc<Self>, listener: TcpListener) {
        let mut slot = lock(&self.slot);
        slot.generation += 1;
        slot.listener = Some(listener);
        slot.reserved = None;
        if let Some(old) = slot.accept_task.take() {
            old.abort();
        }
        let generation = slot.generation;
        let me = Arc::clone(self);
        slot.accept_task = Some(self.runtime.spawn(accept_loop(me, generation)));
    }

    /// Closes the listening socket right now (so connects are refused as soon as this returns)
    /// and drops every open connection.
    fn stop_listening(&self, keep_port: bool) {
        let mut slot = lock(&self.slot);
        slot.generation += 1;
        // Dropping the tokio listener closes the socket synchronously.
        slot.listener = None;
        if let Some(task) = slot.accept_task.take() {
            task.abort();
        }
        if keep_port {
            // best effort: without it the port is merely free for a while
            slot.reserved = reserve(self.addr)
                .inspect_err(|e| {
                    tracing::debug!(vendor = self.vendor_id, error = %e, "sandbox could not reserve its port");
                })
                .ok();
        }
        drop(slot);
        self.conn_epoch.send_modify(|e| *e += 1);
    }

    /// Stops for good, releasing the port (used when a sandbox fails to start completely).
    pub fn shutdown(&self) {
        self.stop_listening(false);
    }

    /// Re-binds the same port if we are not listening.
    fn ensure_listening(self: &Arc<Self>) {
        if lock(&self.slot).listener.is_some() {
            return;
        }
        let _guard = self.runtime.enter();
        let mut last_err = None;
        for _ in 0..20 {
            match bind(self.addr) {
                Ok(listener) => {
                    self.install_listener(listener);
                    return;
                }
                Err(e) => {
                    last_err = Some(e);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        tracing::error!(vendor = self.vendor_id, addr = %self.addr, error = ?last_err,
            "sandbox simulator could not re-bind its port");
    }

    pub fn set_fault(self: &Arc<Self>, fault: Fault) {
        let refuse = matches!(fault, Fault::RefuseConnections);
        if let Fault::FailFirst { times, .. } = &fault {
            self.fail_left.store(*times, Ordering::SeqCst);
        }
        self.open_gate();
        *lock(&self.fault) = Some(fault);
        if refuse {
            self.stop_listening(true);
        } else {
            self.ensure_listening();
        }
    }

    pub fn clear_fault(self: &Arc<Self>) {
        *lock(&self.fault) = None;
        self.open_gate();
        self.ensure_listening();
    }

    /// Lets every request held so far go, with a fresh gate for the next `Hold`.
    fn open_gate(&self) {
        let old = std::mem::replace(&mut *lock(&self.gate), Arc::new(Semaphore::new(0)));
        old.close();
    }

    pub fn release(&self, n: usize) {
        lock(&self.gate).add_permits(n);
    }

    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    pub async fn wait_held(&self, n: usize) {
        let mut rx = self.held.subscribe();
        // the sender lives as long as `self`, so this cannot fail
        let _ = rx.wait_for(|held| *held >= n).await;
    }

    /// Waits at the gate (`Fault::Hold`); counted in `held` while waiting, even if the
    /// client goes away meanwhile.
    async fn hold(&self) {
        struct Waiting<'a>(&'a tokio::sync::watch::Sender<usize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n -= 1);
            }
        }
        let gate = Arc::clone(&lock(&self.gate));
        self.held.send_modify(|n| *n += 1);
        let _waiting = Waiting(&self.held);
        // closed (fault replaced or cleared) lets the request go too
        if let Ok(permit) = gate.acquire().await {
            permit.forget();
        }
    }

    /// Under `Fault::FailFirst`: whether this request is one of the first that fail.
    fn take_failure(&self) -> bool {
        self.fail_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).iter().cloned().collect()
    }

    fn record(&self, req: &SimRequest) {
        let mut received = lock(&self.received);
        if received.len() == RECEIVED_KEPT {
            received.pop_front();
        }
        received.push_back(Received {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
        });
    }

    pub fn fault(&self) -> Option<Fault> {
        lock(&self.fault).clone()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        self.requests.store(0, Ordering::SeqCst);
        lock(&self.received).clear();
    }
}

/// Binds `addr` without listening: connects are refused, and the port stays ours. SO_REUSEADDR
/// on both lets `bind` listen on it again while this is held (Linux refuses a shared port
/// only when one of the sockets listens).
fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets clear_fault re-bind the same port while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(inner: Arc<SimInner>, generation: u64) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    loop {
        let accepted = std::future::poll_fn(|cx| {
            let slot = lock(&inner.slot);
            if slot.generation != generation {
                return Poll::Ready(None);
            }
            match &slot.listener {
                Some(listener) => listener.poll_accept(cx).map(Some),
                None => Poll::Ready(None),
            }
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                let _ = stream.set_nodelay(true);
                let inner = Arc::clone(&inner);
                let builder = builder.clone();
                tokio::spawn(async move {
                    let mut epoch = inner.conn_epoch.subscribe();
                    let svc_inner = Arc::clone(&inner);
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = Arc::clone(&svc_inner);
                        async move { serve_request(inner, req).await }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        res = conn => {
                            if let Err(e) = res {
                                tracing::debug!(vendor = inner.vendor_id, %peer, error = %e, "sandbox connection ended");
                            }
                        }
                        _ = epoch.changed() => {}
                    }
                });
            }
            Some(Err(e)) => {
                // e.g. EMFILE: back off a little instead of spinning
                tracing::warn!(vendor = inner.vendor_id, error = %e, "sandbox accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Why the connection is dropped without an answer (hyper closes it on a service error).
#[derive(Debug, thiserror::Error)]
#[error("sandbox: connection dropped on purpose ({0})")]
pub(crate) struct Dropped(&'static str);

async fn serve_request(
    inner: Arc<SimInner>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Dropped> {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    // A body that is too big or broken off is handed to the vendor as empty: "malformed".
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| display_addr(inner.addr));
    let sim_req = SimRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        body,
        base_url: format!("http://{host}"),
    };

    inner.record(&sim_req);
    if sim_req.path == "/__sandbox/fault" {
        return Ok(full_response(control(&inner, &sim_req)));
    }

    let fault = match inner.fault() {
        Some(Fault::FailFirst { fault, .. }) => inner.take_failure().then_some(*fault),
        other => other,
    };
    let Some(fault) = fault else {
        return Ok(full_response(inner.vendor.handle(&sim_req)));
    };
    let reply = match fault {
        Fault::RefuseConnections => return Err(Dropped("refusing connections")),
        // nested: the outer one already chose this request
        Fault::FailFirst { .. } => inner.vendor.handle(&sim_req),
        Fault::Hold => {
            inner.hold().await;
            inner.vendor.handle(&sim_req)
        }
        Fault::StalledBody(size) => return Ok(stalled_response(size)),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            inner.vendor.handle(&sim_req)
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let text = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            SimReply::text(status.as_u16(), &text)
        }
        Fault::Html => SimReply {
            status: 200,
            content_type: "text/html; charset=utf-8".to_owned(),
            body: Bytes::from_static(HTML_ERROR_PAGE.as_bytes()),
        },
        Fault::BusinessError => inner.vendor.business_error(),
        Fault::WrongTypes => inner.vendor.wrong_types(&sim_req),
        Fault::Raw {
            status,
            content_type,
            body,
        } => SimReply {
            status,
            content_type,
            body,
        },
        Fault::TruncatedJson => {
            let mut reply = inner.vendor.handle(&sim_req);
            let cut = truncation_point(&reply.body);
            reply.body = reply.body.slice(..cut);
            reply
        }
        Fault::DeepNesting(depth) => {
            let mut body = Vec::with_capacity(depth * 2);
            body.resize(depth, b'[');
            body.resize(depth * 2, b']');
            SimReply {
                status: 200,
                content_type: "application/json;charset=UTF-8".to_owned(),
                body: Bytes::from(body),
            }
        }
        Fault::HugeBody(size) => return Ok(huge_response(size)),
        Fault::TrickleBody(pause) => {
            let reply = inner.vendor.handle(&sim_req);
            return Ok(trickle_response(reply, pause));
        }
        Fault::ResetMidBody => {
            let reply = inner.vendor.handle(&sim_req);
            return Ok(reset_response(reply));
        }
    };
    Ok(full_response(reply))
}

/// Cuts roughly in the middle, never at 0 and never at the end.
fn truncation_point(body: &[u8]) -> usize {
    match body.len() {
        0 | 1 => 0,
        n => n / 2,
    }
}

pub(crate) fn display_addr(addr: SocketAddr) -> String {
    // An unspecified bind address (0.0.0.0 / ::) is reached through loopback.
    let ip = if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
    } else {
        addr.ip()
    };
    SocketAddr::new(ip, addr.port()).to_string()
}

const HTML_ERROR_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n\
<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx/1.14.0</center>\n</body>\n</html>\n";

fn base_builder(status: u16, content_type: &str) -> http::response::Builder {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = Response::builder().status(status);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        b = b.header(header::CONTENT_TYPE, v);
    }
    b.header(header::SERVER, "coupon-gateway-sandbox")
}

fn full_response(reply: SimReply) -> Response<SimBody> {
    let len = reply.body.len();
    base_builder(reply.status, &reply.content_type)
        .header(header::CONTENT_LENGTH, len)
        .body(
            Full::new(reply.body)
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        )
        .unwrap_or_else(|_| Response::new(Full::default().map_err(|n| match n {}).boxed_unsync()))
}

fn stream_response(
    status: u16,
    content_type: &str,
    content_length: Option<usize>,
    body: SimBody,
) -> Response<SimBody> {
    let mut b = base_builder(status, content_type);
    if let Some(len) = content_length {
        b = b.header(header::CONTENT_LENGTH, len);
    }
    b.body(body)
        .unwrap_or_else(|_| Response::new(Full::default().map_err(|n| match n {}).boxed_unsync()))
}

/// A 200 JSON body of about `size` bytes, streamed in 64 KiB chunks without a Content-Length
/// (chunked on HTTP/1.1): `{"code":200,"message":"huge","data":["xxxx…","xxxx…",…,"end"]}`.
fn huge_response(size: usize) -> Response<SimBody> {
    const CHUNK: usize = 64 * 1024;
    let head: &'static [u8] = br#"{"code":200,"message":"huge","data":["#;
    let tail: &'static [u8] = br#""end"]}"#;
    // each element: `"` + CHUNK-4 x's + `",` = CHUNK bytes
    let mut element = Vec::with_capacity(CHUNK);
    element.push(b'"');
    element.resize(CHUNK - 2, b'x');
    element.extend_from_slice(b"\",");
    let element = Bytes::from(element);
    let n = size.saturating_sub(head.len() + tail.len()).div_ceil(CHUNK);
    let chunks = std::iter::once(Bytes::from_static(head))
        .chain(std::iter::repeat_n(element, n))
        .chain(std::iter::once(Bytes::from_static(tail)));
    let stream = futures_util::stream::iter(chunks.map(|b| Ok::<_, BoxError>(Frame::data(b))));
    stream_response(
        200,
        "application/json;charset=UTF-8",
        None,
        StreamBody::new(stream).boxed_unsync(),
    )
}

/// About `size` bytes of the start of a JSON body (no Content-Length), then a body that never
/// goes on and never ends.
fn stalled_response(size: usize) -> Response<SimBody> {
    const CHUNK: usize = 64 * 1024;
    let head: &'static [u8] = br#"{"code":200,"message":"stalled","data":["#;
    let mut element = Vec::with_capacity(CHUNK);
    element.push(b'"');
    element.resize(CHUNK - 2, b'x');
    element.extend_from_slice(b"\",");
    let element = Bytes::from(element);
    let n = size.saturating_sub(head.len()).div_ceil(CHUNK);
    let chunks = std::iter::once(Bytes::from_static(head)).chain(std::iter::repeat_n(element, n));
    let stream = futures_util::stream::iter(chunks.map(|b| Ok::<_, BoxError>(Frame::data(b))))
        .chain(futures_util::stream::pending());
    stream_response(
        200,
        "application/json;charset=UTF-8",
        None,
        StreamBody::new(stream).boxed_unsync(),
    )
}

/// The normal answer, 7 bytes at a time with `pause` before every chunk after the first.
fn trickle_response(reply: SimReply, pause: Duration) -> Response<SimBody> {
    const STEP: usize = 7;
    let len = reply.body.len();
    let body = reply.body.clone();
    let stream = futures_util::stream::unfold(0usize, move |pos| {
        let body = body.clone();
        async move {
            if pos >= body.len() {
                return None;
            }
            if pos > 0 {
                tokio::time::sleep(pause).await;
            }
            let end = (pos + STEP).min(body.len());
            Some((Ok::<_, BoxError>(Frame::data(body.slice(pos..end))), end))
        }
    });
    stream_response(
        reply.status,
        &reply.content_type,
        Some(len),
        StreamBody::new(stream).boxed_unsync(),
    )
}

/// Headers (with the full Content-Length) and the first half of the body, then the
/// connection is aborted.
fn reset_response(reply: SimReply) -> Response<SimBody> {
    let len = reply.body.len();
    let first = reply.body.slice(..truncation_point(&reply.body));
    let stream = futures_util::stream::iter([
        Ok::<_, BoxError>(Frame::data(first)),
        Err(Box::new(Dropped("reset mid body")) as BoxError),
    ])
    .then(|item| async move {
        if item.is_err() {
            // let the first half reach the client before the abort
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        item
    });
    stream_response(
        reply.status,
        &reply.content_type,
        Some(len),
        StreamBody::new(stream).boxed_unsync(),
    )
}

/// `POST /__sandbox/fault` with `{"fault": "...", ...}`.
fn control(inner: &Arc<SimInner>, req: &SimRequest) -> SimReply {
    use serde_json::{Value, json};
    if req.method != Method::POST {
        return SimReply::json(405, &json!({"ok": false, "error": "use POST"}));
    }
    let bad = |msg: &str| SimReply::json(400, &json!({"ok": false, "error": msg}));
    let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
        return bad("body must be JSON like {\"fault\":\"delay\",\"ms\":2000}");
    };
    let Some(name) = v.get("fault").and_then(Value::as_str) else {
        return bad("missing \"fault\"");
    };
    let num = |key: &str| v.get(key).and_then(Value::as_u64);
    let fault = match name {
        "none" | "clear" => None,
        "refuse" => Some(Fault::RefuseConnections),
        "delay" => Some(Fault::Delay(Duration::from_millis(
            num("ms").unwrap_or(2000),
        ))),
        "status" => Some(Fault::Status(
            num("status")
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
        )),
        "html" => Some(Fault::Html),
        "business_error" => Some(Fault::BusinessError),
        "truncated" | "truncated_json" => Some(Fault::TruncatedJson),
        "huge" | "huge_body" => Some(Fault::HugeBody(
            usize::try_from(num("bytes").unwrap_or(10 * 1024 * 1024)).unwrap_or(usize::MAX),
        )),
        "deep" | "deep_nesting" => Some(Fault::DeepNesting(
            usize::try_from(num("depth").unwrap_or(10_000)).unwrap_or(10_000),
        )),
        "trickle" | "trickle_body" => Some(Fault::TrickleBody(Duration::from_millis(
            num("ms").unwrap_or(200),
        ))),
        "reset" | "reset_mid_body" => Some(Fault::ResetMidBody),
        "wrong_types" => Some(Fault::WrongTypes),
        "stalled" | "stalled_body" => Some(Fault::StalledBody(
            usize::try_from(num("bytes").unwrap_or(5 * 1024 * 1024)).unwrap_or(usize::MAX),
        )),
        "hold" => Some(Fault::Hold),
        "release" => {
            let count = usize::try_from(num("count").unwrap_or(1)).unwrap_or(usize::MAX);
            inner.release(count);
            return SimReply::json(
                200,
                &json!({"ok": true, "vendor": inner.vendor_id, "released": count}),
            );
        }
        "fail_first" => Some(Fault::FailFirst {
            times: num("times")
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(1),
            fault: Box::new(Fault::Status(
                num("status")
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(503),
            )),
        }),
        "raw" => Some(Fault::Raw {
            status: num("status")
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(200),
            content_type: v
                .get("content_type")
                .and_then(Value::as_str)
                .unwrap_or("application/json")
                .to_owned(),
            body: Bytes::from(
                v.get("body")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ),
        }),
        other => return bad(&format!("unknown fault {other:?}")),
    };
    match fault {
        None => inner.clear_fault(),
        Some(Fault::RefuseConnections) => {
            // Answer first: stopping now would also drop this very connection.
            let inner = Arc::clone(inner);
            inner.runtime.clone().spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                inner.set_fault(Fault::RefuseConnections);
            });
        }
        Some(f) => inner.set_fault(f),
    }
    SimReply::json(
        200,
        &json!({"ok": true, "vendor": inner.vendor_id, "fault": name}),
    )
}
