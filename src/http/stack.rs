//! The tower stack in front of the router, written once, outermost first.
//!
//! | layer | why |
//! | --- | --- |
//! | Access | outermost: every request gets an `x-request-id` (the caller's is kept) before anything logs, and the id goes back on the answer; one span per request (carrying the id); counts each answer by route and status (413, 431, 503, 504 included) and in-flight requests, and writes the access-log line |
//! | ProblemBodies | any error answer an inner layer made bare (timeout, body limit, panic, shedding) becomes problem+json with `instance` = request id |
//! | CatchPanic | a bug answers 500 instead of dropping the connection |
//! | RequestBodyLimit | a declared `Content-Length` over the limit is refused (413) before reading |
//! | OverloadAnswers | shedding (`Overloaded`) becomes an answer: 503 with Retry-After; the request deadline (`Elapsed`) a bare 504 |
//! | LoadShed + ConcurrencyLimit | at most `max_concurrency` requests in progress; beyond it shed at once instead of queueing |
//! | Timeout | the whole request within `request_timeout_ms` (504) |
//! | router | 431 for oversized headers, strict query strings, callers (401/403/429, `auth.rs`), then the canonical handlers |
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use super::problem::{self, Problem};
use super::router::{BoxError, route};
use crate::app::AppState;

pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Builds the whole stack around the router.
pub fn app(
    state: Arc<AppState>,
) -> impl Service<
    Request<hyper::body::Incoming>,
    Response = Response<impl Body<Data = Bytes, Error = impl Into<BoxError>> + Send + 'static>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let server = &state.server;
    let body_limit = usize::try_from(server.body_limit_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_millis(server.request_timeout_ms);
    let concurrency = server.max_concurrency.max(1);
    ServiceBuilder::new()
        .layer(AccessLayer)
        .layer(ProblemBodiesLayer)
        .layer(CatchPanicLayer::new())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(LimitsLayer {
            concurrency,
            timeout,
        })
        .service_fn(move |req| route(state.clone(), req))
}

/// At most `concurrency` requests in progress, more shed at once (503 with Retry-After), and
/// each within `timeout` (504); both answered by `OverloadAnswers` rather than raised.
#[derive(Debug, Clone, Copy)]
pub struct LimitsLayer {
    concurrency: usize,
    timeout: Duration,
}

impl<S> Layer<S> for LimitsLayer {
    type Service = OverloadAnswers<
        tower::load_shed::LoadShed<tower::limit::ConcurrencyLimit<tower::timeout::Timeout<S>>>,
    >;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceBuilder::new()
            .layer(OverloadAnswersLayer)
            .load_shed()
            .concurrency_limit(self.concurrency)
            // tower's `Timeout`, not tower-http's: it polls the request before its deadline,
            // so an answer ready at once (a cached page) never registers the deadline with
            // tokio's timer. tower-http's polled the deadline first, and each registration
            // earlier than every timer pending (idle connections' header timers are 10 s out,
            // this one 5 s) made tokio wake its own driver: an eventfd write and one more poll
            // of the sockets, one of each for every cached answer (strace)
            .timeout(self.timeout)
            .service(inner)
    }
}

/// Turns bare error answers of inner layers into problem+json (see the table above).
#[derive(Debug, Clone, Copy)]
pub struct ProblemBodiesLayer;

impl<S> Layer<S> for ProblemBodiesLayer {
    type Service = ProblemBodies<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ProblemBodies { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ProblemBodies<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ProblemBodies<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible>,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let request_id = super::request_id(&req);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let is_problem = res
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(problem::CONTENT_TYPE.as_bytes()));
            if res.status().as_u16() < 400 || is_problem {
                return Ok(res.map(|b| b.map_err(Into::into).boxed_unsync()));
            }
            let status = res.status();
            if status.is_server_error()
                && status != StatusCode::SERVICE_UNAVAILABLE
                && status != StatusCode::GATEWAY_TIMEOUT
            {
                tracing::error!(%status, request_id = %request_id, "an inner layer failed the request");
            }
            let replacement = Problem {
                ..problem::for_bare_status(status)
            }
            .into_response(&request_id);
            Ok(replacement.map(|b| b.map_err(|never| match never {}).boxed_unsync()))
        })
    }
}

/// Answers LoadShed's `Overloaded` error with a bare 503 (which `ProblemBodies` dresses), so
/// that the stack's error type stays `Infallible`: hyper drops the connection on an error.
#[derive(Debug, Clone, Copy)]
pub struct OverloadAnswersLayer;

impl<S> Layer<S> for OverloadAnswersLayer {
    type Service = OverloadAnswers<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OverloadAnswers {
            inner,
            not_ready: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OverloadAnswers<S> {
    inner: S,
    /// `poll_ready` failed: the next call answers 503 without reaching the inner service.
    not_ready: bool,
}

/// A bare answer of `status` (503 shed, 504 past the request deadline), made problem+json by
/// `ProblemBodies` outside.
fn bare(status: StatusCode) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::default());
    *res.status_mut() = status;
    res
}

impl<S, ReqB> Service<Request<ReqB>> for OverloadAnswers<S>
where
    S: Service<Request<ReqB>, Response = Response<Full<Bytes>>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(_)) => {
                self.not_ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => {
                self.not_ready = false;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if self.not_ready {
            crate::telemetry::record_shed(super::router::route_name(
                req.method(),
                req.uri().path(),
            ));
            return Box::pin(async { Ok(bare(StatusCode::SERVICE_UNAVAILABLE)) });
        }
        // LoadShed's poll_ready never fails: it sheds by answering `call` with an
        // `Overloaded` error, so that is where a shed request is seen and counted
        let route = super::router::route_name(req.method(), req.uri().path());
        let fut = self.inner.call(req);
        // LoadShed's Overloaded and Timeout's Elapsed are the only errors below
        Box::pin(async move {
            Ok(fut.await.unwrap_or_else(|e| {
                if e.is::<tower::timeout::error::Elapsed>() {
                    return bare(StatusCode::GATEWAY_TIMEOUT);
                }
                if e.is::<tower::load_shed::error::Overloaded>() {
                    crate::telemetry::record_shed(route);
                }
                bare(StatusCode::SERVICE_UNAVAILABLE)
            }))
        })
    }
}

/// Gives every request its id (the caller's `x-request-id`, or a new UUID) and echoes it on
/// the answer, runs the request in its span, counts every answer by route and status, keeps
/// the in-flight gauge, and writes one access-log line per request at `info`. It sits outside
/// every edge layer, so the edge's own answers (413, 431, 500, 503, 504) carry the id and are
/// counted under the route that was asked.
#[derive(Debug, Clone, Copy)]
pub struct AccessLayer;

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Access { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Access<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible>,
    S::Future: Send + Unpin + 'static,
{
    type Response = Response<ResB>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let started = tokio::time::Instant::now();
        let in_flight = crate::telemetry::InFlight::start();
        let route = super::router::route_name(req.method(), req.uri().path());
        let method = req.method().clone();
        // the caller's id is kept as it is; a request without one gets a UUID. Done here
        // rather than by tower-http's SetRequestId and PropagateRequestId, which kept the id
        // a third time in the request's extensions (a map allocated per request) for the
        // answer to find it there.
        let id_header = match req.headers().get(&super::X_REQUEST_ID) {
            Some(given) => given.clone(),
            None => {
                let mut text = uuid::Uuid::encode_buffer();
                let made = HeaderValue::from_str(
                    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text),
                )
                .expect("a UUID is a valid header value");
                req.headers_mut().insert(super::X_REQUEST_ID, made.clone());
                made
            }
        };
        let request_id = id_header.to_str().unwrap_or("-").to_owned();
        let (span, trace_id) = request_span(&req, route, &request_id);
        // the inner layers' `call` only builds futures: what runs, runs when polled, inside
        // the span and with the request's tag (what JSON log lines say of the request)
        let fut = crate::telemetry::request_tag::scope(
            request_id.clone(),
            trace_id.clone(),
            InSpan {
                span: span.clone(),
                inner: Some(self.inner.call(req)),
            },
        );
        let answered = async move {
            let mut res = fut.await?;
            if !res.headers().contains_key(&super::X_REQUEST_ID) {
                res.headers_mut().insert(super::X_REQUEST_ID, id_header);
            }
            let elapsed = started.elapsed();
            drop(in_flight);
            let status = res.status().as_u16();
            span.record("http.response.status_code", status);
            if res.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            crate::telemetry::record_http(route, status, elapsed);
            if crate::telemetry::access_log::enabled() {
                let answered = res.extensions().get::<crate::telemetry::Answered>();
                crate::telemetry::access_log::write(&crate::telemetry::access_log::Line {
                    method: method.as_str(),
                    route,
                    status,
                    elapsed,
                    request_id: &request_id,
                    trace_id: trace_id.as_deref().unwrap_or("-"),
                    caller: answered.map_or("-", |a| &*a.caller),
                    vendors: answered.map_or("", |a| &*a.vendors),
                });
            }
            Ok(res)
        };
        Box::pin(answered)
    }
}

/// Polls `inner` with `span` entered, and drops it, once done, still inside. tracing's
/// `Instrumented`, around the whole answer, entered the span once more to drop the future and
/// kept it entered for the access line, which needs none of it: with the enter for the inner
/// layers' `call`, two of the four enter/exit pairs a cached answer paid. A future dropped
/// before it is done (the client went away) is dropped outside the span.
struct InSpan<F> {
    span: tracing::Span,
    inner: Option<F>,
}

impl<F: Future + Unpin> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let inner = this
            .inner
            .as_mut()
            .expect("InSpan polled after it completed");
        let out = std::task::ready!(Pin::new(inner).poll(cx));
        this.inner = None;
        Poll::Ready(out)
    }
}

/// The request's span, and its trace id when traces are exported. Made here rather than by
/// tower-http's `TraceLayer`, whose wrapping of every answer body (a clock reading per frame,
/// a failure classifier, its default request and response events) cost more than the span
/// itself on a cached answer. Only made when traces are exported or the log is text
/// ([`crate::telemetry::request_spans`]): the JSON log reads the request's tag.
fn request_span<B>(
    req: &Request<B>,
    route: &'static str,
    id: &str,
) -> (tracing::Span, Option<String>) {
    if !crate::telemetry::request_spans() {
        return (tracing::Span::none(), None);
    }
    if !crate::telemetry::exporting() {
        // no trace leaves the process: the span is only what log lines written inside the
        // request carry (its id, and the caller once known), which costs a fraction of the
        // full set of attributes
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            caller = tracing::field::Empty,
        );
        return (span, None);
    }
    // HTTP semantic conventions; the path is not recorded (it can carry a record id), the
    // route name is
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {}", req.method(), route),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id = %id,
        trace_id = tracing::field::Empty,
        caller = tracing::field::Empty,
    );
    crate::telemetry::set_parent_from_headers(&span, req.headers());
    let trace_id = span.in_scope(crate::telemetry::trace_id);
    if let Some(t) = &trace_id {
        span.record("trace_id", t.as_str());
    }
    (span, trace_id)
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use tower::ServiceExt;

    use super::*;

    /// Runs a request through `ProblemBodies` over an inner service answering `status`
    /// with `content_type`; the answer, and what was logged meanwhile.
    async fn dressed(status: u16, content_type: &str) -> (StatusCode, HeaderMap, Bytes, String) {
        let (log, _guard) = crate::telemetry::captured::capture();
        let content_type = content_type.to_owned();
        let inner = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let content_type = content_type.clone();
            async move {
                let mut res = Response::new(Full::new(Bytes::from_static(b"inner body")));
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                if !content_type.is_empty() {
                    res.headers_mut()
                        .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
                }
                Ok::<_, Infallible>(res)
            }
        });
        let req = Request::get("/v1/coupons/query")
            .header("x-request-id", "req-7")
            .body(Full::default())
            .unwrap();
        let res = ProblemBodiesLayer.layer(inner).oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let logged = log.text();
        (parts.status, parts.headers, body, logged)
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_deadline_holds_requests_that_wait_not_answers_ready_at_once() {
        let limits = |timeout| LimitsLayer {
            concurrency: 1,
            timeout,
        };
        let get = || Request::get("/healthz").body(()).unwrap();
        // an answer ready when first polled is the answer, though its deadline has passed: the
        // request is polled before the deadline, which a ready answer never registers
        let at_once = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let res = limits(Duration::ZERO)
            .layer(at_once)
            .oneshot(get())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // a request still waiting at its deadline is answered 504, bare (made problem+json
        // by ProblemBodies, outside)
        let waiting = tower::service_fn(|_req: Request<()>| async {
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
        });
        let res = limits(Duration::from_millis(300))
            .layer(waiting)
            .oneshot(get())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(
            res.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn answers_below_400_and_problems_pass_as_they_are() {
        for (status, content_type) in [
            (200, "application/json"),
            (399, ""),
            (404, "application/problem+json"),
            (500, "application/problem+json; charset=utf-8"),
        ] {
            let (got, headers, body, logged) = dressed(status, content_type).await;
            assert_eq!(got.as_u16(), status);
            assert_eq!(&body[..], b"inner body", "{status} {content_type}");
            if !content_type.is_empty() {
                assert_eq!(headers[header::CONTENT_TYPE], content_type);
            }
            assert_eq!(logged, "", "{status}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bare_errors_become_problems_and_only_failures_are_logged() {
        // 503 (shedding) and 504 (the request deadline) are the edge doing its job
        for (status, logs) in [
            (400, false),
            (404, false),
            (413, false),
            (500, true),
            (502, true),
            (503, false),
            (504, false),
        ] {
            let (got, headers, body, logged) = dressed(status, "text/plain").await;
            assert_eq!(got.as_u16(), status);
            assert_eq!(headers[header::CONTENT_TYPE], problem::CONTENT_TYPE);
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["status"], status, "{body}");
            assert_eq!(body["instance"], "req-7", "{body}");
            assert_eq!(
                logged.contains("an inner layer failed the request"),
                logs,
                "{status}: {logged}"
            );
            if logs {
                assert!(logged.contains("req-7"), "{logged}");
            }
        }
    }
}
