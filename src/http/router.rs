//! The innermost service: dispatches a request to its canonical handler and turns the
//! outcome into an HTTP answer. Every route is listed here, top to bottom.
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use serde_json::json;

use super::auth::{self, Caller, Callers, RateState};
use super::problem::Problem;
use crate::app::packages::{self, PackageAnswer};
use crate::app::templates::{self, TemplateAnswer};
use crate::app::{AppState, coupons};
use crate::canonical::merge::Outcome;
use crate::canonical::merge::Verdict;
use crate::canonical::strict;
use crate::idempotency::{self, Claim, IdempotencyError, StoredResponse};
use crate::telemetry;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request headers larger than this in total, or more of them than [`MAX_HEADERS`], are
/// answered 431. The server's own parser allows larger headers (see `server.rs`), so that
/// these answers are problem+json with the request id instead of the parser's bare 431. The
/// count is HTTP/1's parser limit too (hyper's default, kept because it parses on the
/// stack): over HTTP/1 a request with more fields gets the parser's bare 431, over HTTP/2 the
/// router's.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 100;

/// Query parameters of `GET /v1/templates`; every other route takes none.
const TEMPLATE_LIST_PARAMS: &[&str] = &["vendor", "kind", "active_on", "page", "per_page"];
/// Members of the `POST /v1/templates` body, and of `PUT` (the vendor is in its path).
const TEMPLATE_CREATE_MEMBERS: &[&str] = &["vendor", "kind", "begin_at", "end_at", "sync", "card"];
const TEMPLATE_UPDATE_MEMBERS: &[&str] = &["kind", "begin_at", "end_at", "sync", "card"];

/// Handles one request. Never fails: every error is an answer.
pub async fn route<B>(
    state: Arc<AppState>,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request_id = super::request_id(&req);
    let head = req.method() == Method::HEAD;
    let name = route_name(req.method(), req.uri().path());
    let callers = state.callers();
    let mut who = "anonymous";
    let mut res = if let Some(problem) = check_request(&req) {
        problem.into_response(&request_id)
    } else {
        match admit(callers.as_deref(), name, req.headers(), &request_id).await {
            Admission::Refused(label, res) => {
                who = label;
                *res
            }
            Admission::Admitted(caller, rate) => {
                if let Some(c) = caller {
                    who = c.name.as_str();
                }
                let mut res = dispatch(&state, name, req, &request_id, caller).await;
                if let Some(rate) = rate {
                    rate.apply(res.headers_mut());
                }
                res
            }
        }
    };
    let mut answered = telemetry::Answered::caller(who);
    if let Some(VendorOutcomes(v)) = res.extensions_mut().remove::<VendorOutcomes>() {
        answered.vendors = v;
    }
    res.extensions_mut().insert(answered);
    if callers.is_some() {
        auth::record(who, name, res.status().as_u16());
    }
    Ok(if head { without_body(res) } else { res })
}

/// Whether a request goes on to its route.
enum Admission<'c> {
    /// Yes: its caller (when callers are configured and the route is not open) and rate state.
    Admitted(Option<&'c Caller>, Option<RateState>),
    /// No: the 401, 403 or 429 answer, with the caller label for metrics.
    Refused(&'c str, Box<Response<Full<Bytes>>>),
}

async fn admit<'c>(
    callers: Option<&'c Callers>,
    route: &'static str,
    headers: &http::HeaderMap,
    request_id: &str,
) -> Admission<'c> {
    let Some(callers) = callers else {
        return Admission::Admitted(None, None);
    };
    if auth::OPEN_ROUTES.contains(&route) {
        return Admission::Admitted(None, None);
    }
    // boxed: checking a token may fetch the issuer's keys, a future of ~1.9 KB that would
    // otherwise sit in every request's future, callers or not, and be copied with it
    let caller = match Box::pin(callers.identify(headers)).await {
        Ok(c) => c,
        Err(problem) => {
            let unauthenticated = problem.status == StatusCode::UNAUTHORIZED;
            let mut res = problem.into_response(request_id);
            if unauthenticated {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return Admission::Refused("unauthenticated", Box::new(res));
        }
    };
    crate::telemetry::record_caller(&caller.name);
    if !caller.may_route(route) {
        let res = Problem::new(
            StatusCode::FORBIDDEN,
            format!("caller `{}` may not use {route}", caller.name),
        )
        .into_response(request_id);
        return Admission::Refused(caller.name.as_str(), Box::new(res));
    }
    match caller.admit(route) {
        Ok(rate) => Admission::Admitted(Some(caller), rate),
        Err((problem, rate, retry_after)) => {
            let mut res = problem.into_response(request_id);
            rate.apply(res.headers_mut());
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Admission::Refused(caller.name.as_str(), Box::new(res))
        }
    }
}

/// 403 when a limited caller names a vendor it may not reach.
fn vendor_refused(
    caller: Option<&Caller>,
    vendor: &str,
    request_id: &str,
) -> Option<Response<Full<Bytes>>> {
    let c = caller?;
    (!c.may_vendor(vendor)).then(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "caller `{}` may not reach vendor `{}`",
                c.name,
                strict::clip(vendor)
            ),
        )
        .into_response(request_id)
    })
}

/// The route's name (for metrics, logs and `callers:`), by method and path.
pub fn route_name(method: &Method, path: &str) -> &'static str {
    let get = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/healthz" if get => "healthz",
        "/readyz" if get => "readyz",
        "/metrics" if get => "metrics",
        "/v1/vendors" if get => "vendors",
        "/v1/config" if get => "config",
        "/openapi.json" if get => "openapi",
        "/v1/coupons/query" if *method == Method::POST => "coupons_query",
        "/v1/templates" if *method == Method::POST => "templates_create",
        "/v1/templates" if get => "templates_list",
        p if *method == Method::PUT && p.starts_with("/v1/templates/") => "templates_update",
        p if get && p.starts_with("/v1/packages/") => "package_get",
        _ => "unknown",
    }
}

/// `HEAD` is answered wherever `GET` is: the same status and headers, no body.
fn without_body(res: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = res.into_parts();
    let len = body.size_hint().exact().unwrap_or(0);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Response::from_parts(parts, Full::default())
}

/// What is refused before routing: oversized headers (431), and query parameters the route
/// does not take (400).
fn check_request<B>(req: &Request<B>) -> Option<Problem> {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES || headers.len() > MAX_HEADERS {
        return Some(Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are larger than the gateway accepts \
                 ({MAX_HEADER_BYTES} bytes, {MAX_HEADERS} fields)"
            ),
        ));
    }
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let known = if get && path == "/v1/templates" {
        TEMPLATE_LIST_PARAMS
    } else {
        &[]
    };
    // an unknown path or method is answered 404/405 first
    if !is_routed(req.method(), path) {
        return None;
    }
    strict::check_query(req.uri().query(), known)
        .err()
        .map(|e| Problem::new(StatusCode::BAD_REQUEST, e))
}

fn is_routed(method: &Method, path: &str) -> bool {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES.iter().any(|(p, allow)| {
        (*p == path || (p.ends_with('/') && path.starts_with(p)))
            && allow.split(", ").any(|m| m == method)
    })
}

async fn dispatch<B>(
    state: &Arc<AppState>,
    name: &'static str,
    req: Request<B>,
    request_id: &str,
    caller: Option<&Caller>,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match name {
        "healthz" => json_ok(&json!({"status": "ok"})),
        "readyz" => readyz(state, request_id),
        "metrics" => metrics(state),
        "vendors" => json_ok(&state.vendors()),
        "config" => json_ok(&state.config_json()),
        "openapi" => openapi(),
        // each handler's future is boxed: an async fn's future is as large as its largest
        // state, and the tower layers above move the route's future several times per
        // request, so an inline fan-out would be copied on every request, `/healthz` too
        "coupons_query" => Box::pin(coupons_query(state, req, request_id, caller)).await,
        "templates_create" => Box::pin(templates_create(state, req, request_id, caller)).await,
        "templates_list" => {
            // the vendor asked, as the list reads it: the `vendor` parameter, or the only one
            let generation = state.generation();
            let route = generation
                .plan
                .route(crate::engine::routes::RouteId::TemplatesList);
            let vendor = strict::query_param(req.uri().query(), "vendor")
                .or_else(|| (route.targets.len() == 1).then(|| route.targets[0].vendor.id.clone()));
            if let Some(res) = vendor.and_then(|v| vendor_refused(caller, &v, request_id)) {
                return res;
            }
            let query = req.uri().query().unwrap_or("").to_owned();
            let answer =
                Box::pin(templates::list(state, &generation, &query, no_cache(&req))).await;
            template_response(answer, request_id)
        }
        "templates_update" => {
            if let Some((vendor, _)) = vendor_and_id(req.uri().path(), "/v1/templates/")
                && let Some(res) = vendor_refused(caller, &vendor, request_id)
            {
                return res;
            }
            Box::pin(templates_update(state, req, request_id)).await
        }
        "package_get" => {
            if let Some((vendor, _)) = vendor_and_id(req.uri().path(), "/v1/packages/")
                && let Some(res) = vendor_refused(caller, &vendor, request_id)
            {
                return res;
            }
            Box::pin(package(state, &req, request_id)).await
        }
        _ => not_routed(req.uri().path(), request_id),
    }
}

/// Paths and the methods they take, for 405 vs 404 (`HEAD` goes wherever `GET` does).
const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "GET, HEAD"),
    ("/readyz", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
    ("/v1/vendors", "GET, HEAD"),
    ("/v1/config", "GET, HEAD"),
    ("/openapi.json", "GET, HEAD"),
    ("/v1/coupons/query", "POST"),
    ("/v1/packages/", "GET, HEAD"),
    ("/v1/templates", "GET, HEAD, POST"),
    ("/v1/templates/", "PUT"),
];

fn not_routed(path: &str, request_id: &str) -> Response<Full<Bytes>> {
    let known = ROUTES
        .iter()
        .find(|(p, _)| *p == path || (p.ends_with('/') && path.starts_with(p)));
    match known {
        Some((_, allow)) => {
            let mut res = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes {allow}"),
            )
            .into_response(request_id);
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            res
        }
        None => Problem::new(StatusCode::NOT_FOUND, "no such route").into_response(request_id),
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn json_ok(body: &serde_json::Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, body)
}

fn openapi() -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(super::openapi::OPENAPI_JSON.clone()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn readyz(state: &AppState, request_id: &str) -> Response<Full<Bytes>> {
    if state.is_ready() {
        json_ok(&json!({"status": "ready", "vendors": state.generation().plan.vendors.len()}))
    } else {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response(request_id)
    }
}

fn metrics(state: &AppState) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(state.render_metrics())));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// `{vendor}/{id}` after `prefix`, both non-empty, as owned strings.
fn vendor_and_id(path: &str, prefix: &str) -> Option<(String, String)> {
    let (vendor, id) = path.strip_prefix(prefix)?.split_once('/')?;
    (!vendor.is_empty() && !id.is_empty() && !id.contains('/'))
        .then(|| (vendor.to_owned(), id.to_owned()))
}

/// Whether the caller sent `Cache-Control: no-cache` (ask the vendors afresh).
fn no_cache<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
}

async fn package<B>(
    state: &Arc<AppState>,
    req: &Request<B>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let Some((vendor, id)) = vendor_and_id(req.uri().path(), "/v1/packages/") else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no such route: use /v1/packages/{vendor}/{package_id}",
        )
        .into_response(request_id);
    };
    match packages::get(state, &vendor, &id, no_cache(req)).await {
        PackageAnswer::Found(body) => json_ok(&body),
        PackageAnswer::NoSuchVendor => Problem::new(
            StatusCode::NOT_FOUND,
            "no configured vendor of that id offers gift packages",
        )
        .into_response(request_id),
        PackageAnswer::BadId => Problem::new(
            StatusCode::BAD_REQUEST,
            "a package id is letters, digits, `-` and `_` (at most 128)",
        )
        .into_response(request_id),
        PackageAnswer::NotFound(source) => {
            Problem::new(StatusCode::NOT_FOUND, "the vendor has no such package")
                .with(
                    "source",
                    serde_json::to_value(&source).expect("sources serialize"),
                )
                .into_response(request_id)
        }
        PackageAnswer::Failed(source) => {
            let status = if source.outcome == Outcome::Timeout {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            Problem::new(status, "the vendor did not answer")
                .with(
                    "source",
                    serde_json::to_value(&source).expect("sources serialize"),
                )
                .into_response(request_id)
        }
    }
}

fn template_response(answer: TemplateAnswer, request_id: &str) -> Response<Full<Bytes>> {
    match answer {
        TemplateAnswer::Ok(status, body) => {
            let mut res = json_ok(&body);
            *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            res
        }
        TemplateAnswer::Invalid(detail) => {
            Problem::new(StatusCode::BAD_REQUEST, detail).into_response(request_id)
        }
        TemplateAnswer::NotFound(detail) => {
            Problem::new(StatusCode::NOT_FOUND, detail).into_response(request_id)
        }
        TemplateAnswer::Rejected { message, errors } => {
            let detail = if message.is_empty() {
                "the vendor refused the input".to_owned()
            } else {
                message
            };
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
                .with("errors", errors)
                .into_response(request_id)
        }
        TemplateAnswer::Failed { timeout, error } => {
            let status = if timeout {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            Problem::new(status, error).into_response(request_id)
        }
    }
}

/// `POST /v1/templates`; with `Idempotency-Key`, a repeat returns the first answer.
async fn templates_create<B>(
    state: &Arc<AppState>,
    req: Request<B>,
    request_id: &str,
    caller: Option<&Caller>,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned));
    let body = match json_body(req, state.server.body_limit_bytes, request_id).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    match strict::parse_object(&body, TEMPLATE_CREATE_MEMBERS) {
        Err(e) => return Problem::new(StatusCode::BAD_REQUEST, e).into_response(request_id),
        Ok(m) => {
            if let Some(vendor) = m.get("vendor").and_then(|v| v.as_str())
                && let Some(res) = vendor_refused(caller, vendor, request_id)
            {
                return res;
            }
        }
    }
    let key = match key {
        None => None,
        Some(Ok(k))
            if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(k)
        }
        Some(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "`Idempotency-Key` is 1 to 255 visible ASCII characters",
            )
            .into_response(request_id);
        }
    };
    let Some(key) = key else {
        return template_response(templates::create(state, &body).await, request_id);
    };
    let scoped = format!("templates.create:{key}");
    let claim = state
        .idempotency
        .claim(
            &scoped,
            &idempotency::fingerprint(&body),
            in_flight_wait(state.server.request_timeout_ms),
        )
        .await;
    let pending = match claim {
        Ok(Claim::Proceed(p)) => {
            telemetry::record_idempotency("templates_create", "proceed");
            p
        }
        Ok(Claim::Replay(stored)) => {
            telemetry::record_idempotency("templates_create", "replay");
            let mut res = Response::new(Full::new(stored.body));
            *res.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            if let Ok(v) = HeaderValue::from_str(&stored.content_type) {
                res.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return res;
        }
        Ok(Claim::Conflict) => {
            telemetry::record_idempotency("templates_create", "conflict");
            return Problem::new(
                StatusCode::CONFLICT,
                "this Idempotency-Key was used with a different body",
            )
            .into_response(request_id);
        }
        Err(IdempotencyError::InProgress) => {
            telemetry::record_idempotency("templates_create", "in_progress");
            return Problem::new(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still in progress",
            )
            .into_response(request_id);
        }
        // a second creation is worse than a refusal: the caller retries shortly
        Err(IdempotencyError::Unavailable) => {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the idempotency records cannot be reached; retry shortly",
            )
            .into_response(request_id);
        }
    };
    let res = template_response(templates::create(state, &body).await, request_id);
    // a definite answer (created, or refused by validation) is remembered; a vendor failure
    // releases the key so the caller may try again
    if res.status().is_success() || res.status().is_client_error() {
        let (parts, body) = res.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        pending.complete(StoredResponse {
            status: parts.status.as_u16(),
            content_type,
            body: bytes.clone(),
        });
        return Response::from_parts(parts, Full::new(bytes));
    }
    pending.abandon();
    res
}

/// `PUT /v1/templates/{vendor}/{id}`.
async fn templates_update<B>(
    state: &Arc<AppState>,
    req: Request<B>,
    request_id: &str,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let Some((vendor, id)) = vendor_and_id(req.uri().path(), "/v1/templates/") else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no such route: use /v1/templates/{vendor}/{id}",
        )
        .into_response(request_id);
    };
    let body = match json_body(req, state.server.body_limit_bytes, request_id).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    if let Err(e) = strict::parse_object(&body, TEMPLATE_UPDATE_MEMBERS) {
        return Problem::new(StatusCode::BAD_REQUEST, e).into_response(request_id);
    }
    template_response(
        templates::update(state, &vendor, &id, &body).await,
        request_id,
    )
}

/// Reads a JSON body within the configured limit.
async fn json_body<B>(
    req: Request<B>,
    limit: u64,
    request_id: &str,
) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as application/json",
        )
        .into_response(request_id));
    }
    // the body-limit layer already refused a Content-Length over the limit; this catches
    // chunked bodies that grow past it
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        )
        .into_response(request_id)),
        Err(_) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )
        .into_response(request_id)),
    }
}

async fn coupons_query<B>(
    state: &Arc<AppState>,
    req: Request<B>,
    request_id: &str,
    caller: Option<&Caller>,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let bypass_cache = no_cache(&req);
    let body = match json_body(req, state.server.body_limit_bytes, request_id).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    match coupons::query(state, &body, bypass_cache, caller.and_then(Caller::vendors)).await {
        Err(coupons::Refused::Invalid(e)) => {
            Problem::new(StatusCode::BAD_REQUEST, e.0).into_response(request_id)
        }
        Err(coupons::Refused::Forbidden(e)) => {
            Problem::new(StatusCode::FORBIDDEN, e).into_response(request_id)
        }
        Ok((Verdict::Answered, answer)) => {
            let outcomes = vendor_outcomes(&answer.sources);
            let mut res = Response::new(Full::new(answer.body()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res.extensions_mut().insert(outcomes);
            res
        }
        Ok((verdict, answer)) => {
            let (status, detail) = match verdict {
                Verdict::AllTimedOut => {
                    (StatusCode::GATEWAY_TIMEOUT, "every vendor asked timed out")
                }
                Verdict::RequiredFailed => (
                    StatusCode::BAD_GATEWAY,
                    "a vendor the request requires did not answer",
                ),
                _ => (StatusCode::BAD_GATEWAY, "every vendor asked failed"),
            };
            let outcomes = vendor_outcomes(&answer.sources);
            let sources = serde_json::to_value(&answer.sources).expect("sources serialize");
            let mut res = Problem::new(status, detail)
                .with("sources", sources)
                .with("complete", json!(false))
                .into_response(request_id);
            res.extensions_mut().insert(outcomes);
            res
        }
    }
}

/// How long a repeat waits for the first answer of a key still in progress: three quarters of
/// the request deadline (at most 30 s), so that the caller hears 409 "still in progress", which
/// says what happened and that a retry later will be answered, before its own deadline turns
/// the wait into a bare 504.
fn in_flight_wait(request_timeout_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(request_timeout_ms / 4 * 3)
        .min(std::time::Duration::from_secs(30))
}

/// Each vendor's outcome for the access log: `op=ok hkl=timeout` (ids and closed outcomes only).
#[derive(Debug, Clone)]
struct VendorOutcomes(String);

fn vendor_outcomes(sources: &[crate::canonical::merge::Source]) -> VendorOutcomes {
    // sized once: grown push by push it was reallocated two or three times a request
    let len = sources
        .iter()
        .map(|s| s.vendor.len() + s.outcome.as_str().len() + 2)
        .sum();
    let mut out = String::with_capacity(len);
    for s in sources {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&s.vendor);
        out.push('=');
        out.push_str(s.outcome.as_str());
    }
    VendorOutcomes(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::merge::{Outcome, Source};

    /// A repeat of a key in progress waits three quarters of the request deadline, so that its
    /// 409 comes before the deadline's 504; never more than 30 s.
    #[test]
    fn a_repeat_waits_three_quarters_of_the_deadline_at_most_30_s() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(in_flight_wait(2_000), ms(1_500));
        assert_eq!(in_flight_wait(5_000), ms(3_750));
        assert_eq!(in_flight_wait(40_000), ms(30_000));
        assert_eq!(in_flight_wait(60_000), ms(30_000));
    }

    /// The access log's `vendors` field: `vendor=outcome` for each vendor in order, one space
    /// between, nothing else (operators split it on spaces).
    #[test]
    fn the_access_log_lists_each_vendor_outcome_separated_by_spaces() {
        let source = |vendor: &str, outcome| Source {
            outcome,
            ..Source::skipped(vendor, String::new())
        };
        let VendorOutcomes(v) = vendor_outcomes(&[
            source("op", Outcome::Ok),
            source("hkl", Outcome::Timeout),
            source("zvcms", Outcome::Skipped),
        ]);
        assert_eq!(v, "op=ok hkl=timeout zvcms=skipped");
        assert_eq!(vendor_outcomes(&[]).0, "");
    }
}
