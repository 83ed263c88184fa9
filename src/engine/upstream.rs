//! The outbound HTTP client shared by every vendor: pooled keep-alive connections, HTTP/1.1
//! and HTTP/2, rustls (ring) for https vendors, and a bounded read of each answer.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::call_limit::{CallLimit, Slot};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why an exchange with a vendor failed below the level of its JSON.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answer larger than {0} bytes")]
    TooLarge(u64),
    #[error("answer cut off: {0}")]
    Body(String),
    #[error("no answer within {} ms", .0.as_millis())]
    AttemptTimeout(std::time::Duration),
}

thread_local! {
    /// The client of a connection thread (`server.connection_threads`): its pooled
    /// connections are driven by that thread's runtime, so a vendor's answer wakes the thread
    /// whose request waits for it, not another one.
    static THREAD_CLIENT: std::cell::OnceCell<HttpClient> = const { std::cell::OnceCell::new() };
}

/// Gives the current thread a vendor client of its own (a connection thread, at its start),
/// keeping up to `idle_per_host` idle connections to each vendor host.
pub fn own_client_for_this_thread(idle_per_host: usize) {
    THREAD_CLIENT.with(|c| {
        c.get_or_init(|| build_client(idle_per_host));
    });
}

/// The read buffer of each vendor connection.
const READ_BUF: usize = 16 * 1024;

/// Idle connections kept per vendor host by a client whose calls are not capped.
const IDLE_PER_HOST: usize = 64;

/// A client keeping up to `idle_per_host` idle connections to each host. Capped clients keep as
/// many as calls may be in progress (`server.max_vendor_calls`): vendors that share a host (a
/// platform serving several brands) share its pool, and a smaller idle limit closed connections
/// that the next burst of calls opened again: with 16 vendors on one host, 0.15 new
/// connections a call at an idle limit of 64, each a handshake's CPU and buffers.
fn build_client(idle_per_host: usize) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false); // the https connector wraps it
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .expect("ring supports the default TLS versions")
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(idle_per_host.max(1))
        // a connection keeps its read buffer while it lives, idle too: grown to fit the
        // largest answer it read (up to ~400 KB), it was most of what a live connection
        // held; answers are read in pieces of this size instead
        .http1_read_buf_exact_size(READ_BUF)
        .pool_timer(TokioTimer::new()) // without a timer the idle timeout is not enforced
        .timer(TokioTimer::new())
        .build(https)
}

#[derive(Clone)]
pub struct Upstream {
    client: HttpClient,
    max_body: u64,
    /// The limit on calls in progress (`server.max_vendor_calls` its ceiling), when the calls
    /// made through this client are capped.
    calls: Option<Arc<CallLimit>>,
}

impl Upstream {
    pub fn new(max_body: u64) -> Upstream {
        Upstream {
            client: build_client(IDLE_PER_HOST),
            max_body,
            calls: None,
        }
    }

    /// An upstream whose vendor calls in progress at once are capped at `slots`
    /// (`server.max_vendor_calls`), its client keeping as many idle connections per host.
    pub fn capped(max_body: u64, slots: usize) -> Upstream {
        Upstream {
            client: build_client(slots),
            max_body,
            calls: Some(CallLimit::new(slots)),
        }
    }

    /// Waits for a free slot among the calls in progress; the call holds it until it ends.
    /// `None` when calls are not capped.
    pub async fn call_slot(&self) -> Option<Slot> {
        match &self.calls {
            Some(l) => Some(l.acquire().await),
            None => None,
        }
    }

    /// Whether the call about to start is one whose wait for a thread the limit samples.
    pub fn call_sampled(&self) -> bool {
        self.calls.as_ref().is_some_and(|l| l.sampled())
    }

    /// A sampled call ended after `took`, having waited `waited` of it for a thread: what
    /// moves the limit.
    pub fn call_finished(&self, waited: Duration, took: Duration) {
        if let Some(l) = &self.calls {
            l.finished(waited, took);
        }
    }

    /// Sends `req` and reads the whole answer, refusing bodies over the limit.
    pub async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, TransportError> {
        // a connection thread's own client, else the shared one
        let own = THREAD_CLIENT.with(|c| c.get().cloned());
        let client = own.as_ref().unwrap_or(&self.client);
        let res = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                TransportError::Connect(root_cause(&e))
            } else {
                TransportError::Request(root_cause(&e))
            }
        })?;
        let (parts, body) = res.into_parts();
        if let Some(len) = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > self.max_body
        {
            return Err(TransportError::TooLarge(self.max_body));
        }
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    TransportError::TooLarge(self.max_body)
                } else {
                    TransportError::Body(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Response::from_parts(parts, bytes))
    }
}

/// The innermost error message (hyper wraps the io error that says what happened).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scripted::{Vendor, answer};

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::new(Bytes::new())).unwrap()
    }

    #[tokio::test]
    async fn an_answer_of_exactly_the_limit_is_read_and_one_byte_more_is_refused() {
        let server = Vendor::start(vec![answer(200, "0123456789")]).await;
        let url = format!("{}/", server.url);
        let res = Upstream::new(10).exchange(get(&url)).await.unwrap();
        assert_eq!(
            res.headers()[http::header::CONTENT_LENGTH],
            "10",
            "the announced length is what is checked first"
        );
        assert_eq!(res.body().as_ref(), b"0123456789");
        let err = Upstream::new(9).exchange(get(&url)).await.unwrap_err();
        assert!(matches!(err, TransportError::TooLarge(9)), "{err:?}");
        drop(server);
    }

    #[tokio::test]
    async fn a_refused_connection_says_why_in_the_words_of_the_system() {
        // a port nothing listens on: bound, then released
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Upstream::new(1024)
            .exchange(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        let TransportError::Connect(why) = &err else {
            panic!("{err:?}");
        };
        // the io error hyper wraps, not hyper's own "client error (Connect)"
        assert!(why.to_lowercase().contains("refused"), "{why}");
    }
}
