//! Shared helpers of the loopback tests: an HTTP client and JSON calls.
#![allow(dead_code)] // each test binary uses a different part

pub mod acme;
pub mod payv2;
pub mod payv3;
pub mod process;
pub mod redis;
pub mod topstyle;
pub mod utcplatform;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

/// The longest a test waits for something that should happen at once. Only a sanity limit
/// (it turns a hang into a failure on a loaded 2-core machine); tests never rely on speed.
pub const SANITY: Duration = Duration::from_secs(10);

/// `fut`, or a panic naming `what` after [`SANITY`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(SANITY, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not happen within {SANITY:?}"),
    }
}

/// Polls `check` until it says true (for state only visible by asking, such as a circuit
/// turning half-open); panics naming `what` after [`SANITY`].
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    let res = client().request(req).await.expect("the gateway answers");
    let (parts, body) = res.into_parts();
    let raw = body.collect().await.expect("a whole body").to_bytes();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        raw,
    }
}

pub async fn post_json(url: &str, body: &Value) -> Answer {
    send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

pub async fn get(url: &str) -> Answer {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

/// A whole vendor request as a strict test server sees it: head and exact body bytes.
pub type Handler = std::sync::Arc<
    dyn Fn(http::request::Parts, Bytes) -> http::Response<Full<Bytes>> + Send + Sync,
>;

/// Serves `handler` on 127.0.0.1:0 (HTTP/1 and 2) until the test ends; returns the address.
/// Each connection is served on its own task; the accept loop ends when the listener fails.
pub async fn serve(handler: Handler) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(handler(parts, body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Starts a gateway on a YAML-only fixture vendor: `text` is its routes file (base URL
/// already in), `creds` the values `serve` would take from `CGW_…__CREDENTIALS__…`.
pub async fn start_fixture(
    name: &str,
    text: &str,
    vendor: &str,
    creds: &[(&str, &str)],
) -> coupon_gateway::embedded::Running {
    use coupon_gateway::engine::plan::{Credentials, Plan};
    let mut loaded = coupon_gateway::config::load_str(name, text, false).unwrap();
    let slots = &mut loaded.config.vendors.get_mut(vendor).unwrap().credentials;
    for (k, v) in creds {
        slots.insert((*k).to_owned(), Some((*v).to_owned()));
    }
    let (plan, _) = Plan::compile(&loaded, Credentials::Required).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    coupon_gateway::embedded::start(plan, listener)
}

/// The canonical fields `keys` of one coupon, for exact comparisons.
pub fn pinned(c: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .map(|k| ((*k).to_owned(), c[*k].clone()))
            .collect(),
    )
}

/// What every strict test vendor keeps: the requests it saw, its refusals and the reason of
/// the last (for failing tests), and the one-time values (nonces, signatures) already used.
#[derive(Default)]
pub struct Ledger {
    requests: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
    last_refusal: std::sync::Mutex<Option<String>>,
    used: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Ledger {
    pub fn arrived(&self) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn refused(&self, why: String) {
        self.rejected
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.last_refusal.lock().unwrap() = Some(why);
    }
    /// False when `value` was used before: a replay.
    pub fn first_use(&self, value: &str) -> bool {
        self.used.lock().unwrap().insert(value.to_owned())
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn rejected(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal.lock().unwrap().clone()
    }
}
