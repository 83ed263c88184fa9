//! Running one vendor operation: for each page, build and sign a fresh request, exchange it,
//! judge the envelope, and map the items to canonical rows.
//!
//! Every attempt gets its own clock reading and nonce, so nothing signed is ever sent twice
//! (zvcms rejects a reused nonce). The caller bounds the whole call with the vendor's deadline.
use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;
use std::cell::OnceCell;

use jiff::Timestamp;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::convert;
use super::extract::loosely_equal;
use super::observe::{Event, Next, Observer, Verdict};
use super::plan::RequestPlan;
use super::plan::{OperationPlan, PagingPlan};
use super::projection::Projected;
use super::resilience::{VendorAuth, VendorGuard};
use super::steps::{self, PairStyle, Step, Target};
use super::template::{Ref, Values};
use super::token::{FetchedToken, Token};
use super::upstream::{TransportError, Upstream};
use crate::config::{Effect, PagingStyle};
use crate::crypto;

/// The canonical inputs of one vendor call.
#[derive(Debug, Clone, Default)]
pub struct CallInput {
    pub member_id: Option<String>,
    pub openid: Option<String>,
    /// Values of the route's inputs, in the order of `OperationPlan::inputs`.
    pub inputs: Vec<Option<Value>>,
}

/// What a successful call produced.
#[derive(Debug, Default)]
pub struct CallOutput {
    /// Canonical rows in schema slot order.
    pub rows: Vec<Vec<Value>>,
    /// Items dropped for lacking a required field (or a value that maps to nothing).
    pub dropped: usize,
    pub pages: u32,
    /// Paging stopped at `max_pages` while the vendor said there was more.
    pub truncated: bool,
    /// Bytes of the vendor's answers (the weight of a cached answer).
    pub bytes: usize,
    /// The vendor's page description (`response.page_info`): page, per_page, total, total_pages.
    pub page_info: Option<[i64; 4]>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("HTTP {0}")]
    Status(u16),
    /// The answer could not be read in the operation's format (`answer is not JSON`, …).
    #[error("{0}")]
    Unreadable(String),
    #[error("vendor error {code}: {message}")]
    Business { code: String, message: String },
    #[error("unexpected answer: {0}")]
    Shape(String),
    #[error("cannot build the request: {0}")]
    Build(String),
    #[error("the vendor has no such record")]
    NotFound,
    #[error("cannot authenticate: {0}")]
    Auth(String),
    /// A further page or retry found no room under the vendor's QPS quota.
    #[error("over the vendor's outbound rate")]
    RateLimited,
    /// The vendor said "too many requests" (HTTP 429, or its `rate_limited` business code):
    /// not a fault of the vendor, and its `Retry-After` holds further calls back.
    #[error("the vendor is throttling: {0}")]
    Throttled(String),
    /// The vendor refused the request (a 4xx with a JSON answer): its message and field errors.
    #[error("HTTP {status}: {message}")]
    Rejected {
        status: u16,
        message: String,
        fields: Option<Value>,
    },
}

impl CallError {
    /// The vendor says the record asked for does not exist: a `not_found` rule matched, or it
    /// answered HTTP 404 (with or without a JSON body).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CallError::NotFound | CallError::Status(404) | CallError::Rejected { status: 404, .. }
        )
    }
}

/// Runs `op` to completion (all pages up to the cap).
pub async fn call(
    op: &OperationPlan,
    upstream: &Upstream,
    input: &CallInput,
    guard: &VendorGuard,
) -> Result<CallOutput, CallError> {
    call_observed(op, upstream, input, guard, &mut None).await
}

/// [`call`], showing each stage to `obs` (`coupon-gateway explain`).
pub async fn call_observed(
    op: &OperationPlan,
    upstream: &Upstream,
    input: &CallInput,
    guard: &VendorGuard,
    obs: &mut Option<&mut dyn Observer>,
) -> Result<CallOutput, CallError> {
    let mut out = CallOutput::default();
    let mut page = PageState::first(op);
    let mut seen_items: u64 = 0;
    guard.retry.deposit();
    loop {
        if out.pages > 0 {
            // a further page is a further request against the vendor's quota
            guard.pace().await.map_err(|_| paced_out(op))?;
        }
        let (res, token) = exchange_with_retries(op, upstream, input, &page, guard, obs).await?;
        let secrets = Secrets {
            credentials: &op.request.credentials,
            token: token.as_ref().map(Token::expose),
        };
        match read_page(
            op,
            &secrets,
            &res,
            &mut out,
            &mut page,
            &mut seen_items,
            obs,
        ) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e @ CallError::Throttled(_)) => {
                guard.hold_off(if res.status() == http::StatusCode::TOO_MANY_REQUESTS {
                    retry_after(res.headers())
                } else {
                    DEFAULT_HOLD_OFF
                });
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The answer stages of `op` over a recorded answer, as `call` runs them over the vendor's
/// (`coupon-gateway explain --answer`): one page, whose paging decision is shown, not
/// followed. The request is built and signed for `obs` but not sent (without a token, so not
/// for operations that send one).
pub fn replay(
    op: &OperationPlan,
    input: &CallInput,
    status: http::StatusCode,
    body: Bytes,
    obs: &mut Option<&mut dyn Observer>,
) -> Result<CallOutput, CallError> {
    let mut page = PageState::first(op);
    if !op.request.uses_auth {
        build_request(&op.request, input, &page, None, obs)?;
    }
    let secrets = Secrets {
        credentials: &op.request.credentials,
        token: None,
    };
    let mut res = http::Response::new(body);
    *res.status_mut() = status;
    let mut out = CallOutput::default();
    read_page(op, &secrets, &res, &mut out, &mut page, &mut 0, obs)?;
    Ok(out)
}

/// Reads one page's answer into `out`: the status, the envelope, the items. Says whether
/// another page follows (and moves `page` to it).
fn read_page(
    op: &OperationPlan,
    secrets: &Secrets<'_>,
    res: &http::Response<Bytes>,
    out: &mut CallOutput,
    page: &mut PageState,
    seen_items: &mut u64,
    obs: &mut Option<&mut dyn Observer>,
) -> Result<bool, CallError> {
    if let Some(o) = obs {
        observe_answer(&mut **o, secrets, res);
    }
    if res.status() == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(CallError::Throttled("HTTP 429".to_owned()));
    }
    if !res.status().is_success() {
        return Err(refusal(op, secrets, res.status().as_u16(), res.body()));
    }
    // only what the operation reads, unless someone is shown the answer
    let format = &op.request.answer_format;
    let mut read = match (&op.projection, &obs) {
        (Some(p), None) => format.read_projected(res.body(), p),
        _ => format
            .read(res.body())
            .map(|doc| Projected { doc, items: None }),
    }
    .map_err(CallError::Unreadable)?;
    let mut doc = std::mem::take(&mut read.doc);
    for d in &op.response.decrypt {
        d.apply(&mut doc, &op.request.credentials)
            .map_err(CallError::Unreadable)?;
    }
    out.pages += 1;
    out.bytes += res.body().len();
    let judged = judge(op, secrets, &doc);
    // the page as it was asked for, before paging moves on (only copied for an observer)
    let asked = obs.is_some().then(|| (page.number, page.cursor.clone()));
    if let Some(o) = obs {
        let verdict = match &judged {
            Ok(Judged::Empty) => Verdict::Empty,
            Ok(Judged::Items(items)) => Verdict::Items(items.len()),
            Err(e) => Verdict::Failed(e),
        };
        let doc = secrets.mask_json(&doc);
        o.observe(Event::Envelope { doc: &doc, verdict });
    }
    let items = match judged? {
        Judged::Empty => {
            page_done(obs, &asked, 0, Next::Last);
            return Ok(false);
        }
        Judged::Items(items) => items,
    };
    if let Some(pi) = &op.response.page_info {
        // a configured page description the answer lacks is a changed envelope
        let mut read = [0i64; 4];
        for (slot, p) in read.iter_mut().zip(pi) {
            *slot = p.first(&doc).and_then(convert::fen).ok_or_else(|| {
                CallError::Shape(format!("the answer has no number at `{}`", p.source()))
            })?;
        }
        out.page_info = Some(read);
    }
    let count = items.len();
    *seen_items += count as u64;
    let mut first_drop = None;
    let dropped_before = out.dropped;
    for item in items {
        // an item read into slots stands in the document as an object naming its row
        let mapped = match read.take_row(item) {
            Some(slots) => op.mapper.map_slots(slots),
            None => op.mapper.map(item),
        };
        if let Some(o) = obs {
            let item = secrets.mask_json(item);
            o.observe(Event::Item {
                item: &item,
                mapped: mapped.as_deref(),
            });
        }
        match mapped {
            Ok(row) => out.rows.push(row),
            Err(why) => {
                out.dropped += 1;
                first_drop.get_or_insert(why);
            }
        }
    }
    // one line per page, not per item: a renamed vendor field must not flood the log
    if let Some(why) = first_drop {
        // counted here, whatever becomes of the call: when every item is dropped the call
        // fails, and that worst case (a vendor renamed a field) must show on the counter too
        if let Some(h) = crate::telemetry::operation(&op.vendor.id, &op.name) {
            h.dropped(out.dropped - dropped_before);
        }
        tracing::warn!(
            vendor = %op.vendor.id,
            operation = %op.name,
            dropped = out.dropped - dropped_before,
            field = why.field,
            reason = %why.reason,
            "vendor items dropped: a field could not be read"
        );
    }
    if count > 0 && out.rows.is_empty() {
        // every item of the answer failed to map: the vendor is answering garbage
        return Err(CallError::Shape(format!(
            "none of the {count} items could be read (see the gateway log)"
        )));
    }
    let Some(paging) = &op.paging else {
        page_done(obs, &asked, count, Next::Last);
        return Ok(false);
    };
    if count == 0 || !more_pages(paging, &doc, page, *seen_items) {
        page_done(obs, &asked, count, Next::Last);
        return Ok(false);
    }
    if out.pages >= paging.max_pages {
        out.truncated = true;
        tracing::warn!(vendor = %op.vendor.id, operation = %op.name, pages = out.pages, "stopped at max_pages");
        page_done(obs, &asked, count, Next::Truncated);
        return Ok(false);
    }
    let next = Next::Page {
        number: page.number,
        cursor: page.cursor.as_deref(),
    };
    page_done(obs, &asked, count, next);
    Ok(true)
}

/// Tells `obs` a page is done: the page asked for, its item count and what follows.
fn page_done(
    obs: &mut Option<&mut dyn Observer>,
    asked: &Option<(u64, Option<String>)>,
    items: usize,
    next: Next<'_>,
) {
    if let (Some(o), Some((number, cursor))) = (obs, asked) {
        o.observe(Event::Page {
            number: *number,
            cursor: cursor.as_deref(),
            items,
            next,
        });
    }
}

/// The answer as received, masked, for an observer.
fn observe_answer(o: &mut dyn Observer, secrets: &Secrets<'_>, res: &http::Response<Bytes>) {
    let headers = masked_headers(secrets, res.headers());
    let body = secrets.mask(&String::from_utf8_lossy(res.body()));
    o.observe(Event::Answer {
        status: res.status().as_u16(),
        headers: &headers,
        body: &body,
    });
}

fn masked_headers(secrets: &Secrets<'_>, headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                secrets.mask(&String::from_utf8_lossy(v.as_bytes())),
            )
        })
        .collect()
}

/// One page's exchange, retried for reads after connect errors, attempt timeouts and 5xx
/// answers while attempts and budget last. Every attempt is built and signed afresh.
async fn exchange_with_retries(
    op: &OperationPlan,
    upstream: &Upstream,
    input: &CallInput,
    page: &PageState,
    guard: &VendorGuard,
    obs: &mut Option<&mut dyn Observer>,
) -> Result<(http::Response<Bytes>, Option<Token>), CallError> {
    let retry = &guard.retry;
    let auth = guard.auth.as_ref().filter(|_| op.request.uses_auth);
    let mut token = match auth {
        Some(a) => Some(fetch_token(a, upstream, guard, obs).await?),
        None => None,
    };
    let mut refreshed = false;
    let mut attempt = 1;
    let mut first = true;
    loop {
        // the call's admission paid for its first request; each further one (a retry, a 401
        // renewal) takes its own share of the vendor's quota
        if !first {
            guard.pace().await.map_err(|_| paced_out(op))?;
        }
        first = false;
        // one client span per attempt, current while the request is built (a vendor with
        // propagate_trace gets it as the parent) and exchanged; backoffs show as the gaps
        // (for traces only, as the vendor call's span)
        let span = if crate::telemetry::exporting() {
            tracing::info_span!(
                "vendor_attempt",
                otel.kind = "client",
                vendor = %op.vendor.id,
                operation = %op.name,
                attempt,
                page = page.number,
                outcome = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let exchange = async {
            let req = build_request(&op.request, input, page, token.as_ref(), obs)?;
            Ok::<_, CallError>(match retry.attempt_timeout {
                Some(t) => tokio::time::timeout(t, upstream.exchange(req))
                    .await
                    .unwrap_or(Err(TransportError::AttemptTimeout(t))),
                None => upstream.exchange(req).await,
            })
        };
        let exchanged = tracing::Instrument::instrument(exchange, span.clone()).await;
        // as HTTP client spans are judged: a status of 400 or more is an error
        let (outcome, status) = match &exchanged {
            Ok(Ok(res)) if res.status().as_u16() < 400 => ("ok", Some(res.status().as_u16())),
            Ok(Ok(res)) => ("error", Some(res.status().as_u16())),
            Ok(Err(TransportError::AttemptTimeout(_))) => ("timeout", None),
            _ => ("error", None),
        };
        span.record("outcome", outcome);
        if let Some(code) = status {
            span.record("http.response.status_code", code);
        }
        if outcome != "ok" {
            span.record("otel.status_code", "ERROR");
        }
        drop(span);
        let result = exchanged?;
        // a 401 means the token was revoked: fetch a new one and try the call once more
        if let (Some(a), Some(used), Ok(res)) = (auth, &token, &result)
            && res.status() == http::StatusCode::UNAUTHORIZED
            && !refreshed
        {
            a.cache.invalidate(used);
            if let Some(h) = crate::telemetry::vendor(&op.vendor.id) {
                h.token_invalidated();
            }
            token = Some(fetch_token(a, upstream, guard, obs).await?);
            refreshed = true;
            continue;
        }
        let retriable = op.effect == Effect::Read
            && match &result {
                Ok(res) => res.status().is_server_error(),
                Err(TransportError::Connect(_) | TransportError::AttemptTimeout(_)) => true,
                Err(_) => false,
            };
        if retriable && attempt < retry.max_attempts {
            if retry.may_retry(attempt) {
                tracing::debug!(vendor = %op.vendor.id, attempt, "retrying");
                crate::telemetry::record_retry(&op.vendor.id, &op.name);
                tokio::time::sleep(retry.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            // attempts were left, the retry budget was not
            if let Some(h) = crate::telemetry::operation(&op.vendor.id, &op.name) {
                h.budget_exhausted();
            }
        }
        return Ok((result?, token));
    }
}

/// The vendor's access token: cached, or fetched once for all concurrent callers.
///
/// The token endpoint is a vendor endpoint like any other: each request takes its share of the
/// vendor's quota, and connect errors, attempt timeouts and 5xx answers are tried again (at
/// least once) within the call's deadline.
async fn fetch_token(
    auth: &VendorAuth,
    upstream: &Upstream,
    guard: &VendorGuard,
    obs: &mut Option<&mut dyn Observer>,
) -> Result<Token, CallError> {
    let fetch = move || async move {
        if let Some(o) = obs.as_deref_mut() {
            o.observe(Event::TokenRequested);
        }
        let page = PageState {
            number: 1,
            first: 1,
            size: 0,
            cursor: None,
        };
        let retry = &guard.retry;
        let mut attempt = 1;
        let res = loop {
            guard.pace().await.map_err(|_| CallError::RateLimited)?;
            let req = build_request(&auth.plan.request, &CallInput::default(), &page, None, obs)?;
            let result = match retry.attempt_timeout {
                Some(t) => tokio::time::timeout(t, upstream.exchange(req))
                    .await
                    .unwrap_or(Err(TransportError::AttemptTimeout(t))),
                None => upstream.exchange(req).await,
            };
            let retriable = match &result {
                Ok(res) => res.status().is_server_error(),
                Err(TransportError::Connect(_) | TransportError::AttemptTimeout(_)) => true,
                Err(_) => false,
            };
            if retriable && attempt < retry.max_attempts.max(2) {
                tracing::debug!(attempt, "retrying the token endpoint");
                tokio::time::sleep(retry.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            break result?;
        };
        if let Some(o) = obs.as_deref_mut() {
            observe_token_answer(o, auth, &res);
        }
        if !res.status().is_success() {
            return Err(CallError::Auth(format!(
                "the token endpoint answered HTTP {}",
                res.status().as_u16()
            )));
        }
        let doc: Value = serde_json::from_slice(res.body())
            .map_err(|_| CallError::Auth("the token endpoint answer is not JSON".to_owned()))?;
        let token = auth
            .plan
            .token
            .first(&doc)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CallError::Auth("the token endpoint answer holds no token".to_owned())
            })?;
        let secs = auth
            .plan
            .expires_in
            .first(&doc)
            .and_then(convert::fen)
            .unwrap_or(0);
        Ok(FetchedToken {
            token: secrecy::SecretString::from(token.to_owned()),
            expires_in: std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
        })
    };
    let fetch = move || async move {
        let _span = tracing::info_span!("token_fetch", vendor = %auth.plan.request.vendor.id);
        let result = fetch().await;
        if let Some(h) = crate::telemetry::vendor(&auth.plan.request.vendor.id) {
            h.token_fetch(result.is_ok());
        }
        result
    };
    auth.cache.get(fetch).await.map_err(|e| match &*e {
        CallError::Auth(m) => CallError::Auth(m.clone()),
        other => CallError::Auth(format!("token endpoint: {other}")),
    })
}

/// The token endpoint's answer for an observer, the token it holds masked as well.
fn observe_token_answer(o: &mut dyn Observer, auth: &VendorAuth, res: &http::Response<Bytes>) {
    let doc = serde_json::from_slice::<Value>(res.body()).ok();
    let token = doc
        .as_ref()
        .and_then(|d| auth.plan.token.first(d))
        .and_then(Value::as_str);
    let secrets = Secrets {
        credentials: &auth.plan.request.credentials,
        token,
    };
    let headers = masked_headers(&secrets, res.headers());
    let body = secrets.mask(&String::from_utf8_lossy(res.body()));
    o.observe(Event::TokenAnswer {
        status: res.status().as_u16(),
        headers: &headers,
        body: &body,
    });
}

/// A further page or retry found no room under the vendor's quota (counted as such).
fn paced_out(op: &OperationPlan) -> CallError {
    if let Some(h) = crate::telemetry::vendor(&op.vendor.id) {
        h.rate_limited(true);
    }
    CallError::RateLimited
}

/// What must never leave the gateway in vendor text: the vendor's credentials and the access
/// token of the call.
struct Secrets<'a> {
    credentials: &'a [secrecy::SecretString],
    token: Option<&'a str>,
}

impl Secrets<'_> {
    /// Vendor text goes into answers and logs: a vendor that echoes a credential or the token
    /// back ("unknown client …") must not leak it. Each is replaced by `…`.
    fn scrub(&self, text: String) -> String {
        self.replace(text, "…")
    }

    fn scrub_json(&self, v: &Value) -> Value {
        self.replace_json(v, "…")
    }

    /// What an observer is shown: each secret as `***`, so a signing input can be compared
    /// with the vendor's documentation without revealing what was signed with.
    fn mask(&self, text: &str) -> String {
        self.replace(text.to_owned(), "***")
    }

    fn mask_json(&self, v: &Value) -> Value {
        self.replace_json(v, "***")
    }

    /// Secrets shorter than 4 characters are left: replacing every `1` would garble the text
    /// without hiding anything worth hiding.
    fn replace(&self, text: String, with: &str) -> String {
        let secrets = self
            .credentials
            .iter()
            .map(|c| c.expose_secret())
            .chain(self.token);
        secrets.fold(text, |t, c| {
            if c.len() >= 4 && t.contains(c) {
                t.replace(c, with)
            } else {
                t
            }
        })
    }

    fn replace_json(&self, v: &Value, with: &str) -> Value {
        match v {
            Value::String(s) => Value::String(self.replace(s.clone(), with)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.replace_json(x, with)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (self.replace(k.clone(), with), self.replace_json(x, with)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// How long a vendor that throttles without a usable `Retry-After` is left alone.
const DEFAULT_HOLD_OFF: std::time::Duration = std::time::Duration::from_secs(1);

/// The vendor's `Retry-After` (seconds or an HTTP date), capped at a minute.
fn retry_after(headers: &http::HeaderMap) -> std::time::Duration {
    let Some(v) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    else {
        return DEFAULT_HOLD_OFF;
    };
    let secs = v.trim().parse::<u64>().ok().or_else(|| {
        let at = jiff::fmt::rfc2822::parse(v.trim()).ok()?.timestamp();
        let left = at.as_second() - Timestamp::now().as_second();
        u64::try_from(left).ok()
    });
    secs.map_or(DEFAULT_HOLD_OFF, |s| {
        std::time::Duration::from_secs(s.min(60))
    })
}

/// A non-2xx answer: a 4xx with a JSON body keeps the vendor's message and field errors.
fn refusal(op: &OperationPlan, secrets: &Secrets<'_>, status: u16, body: &[u8]) -> CallError {
    if !(400..500).contains(&status) {
        return CallError::Status(status);
    }
    let Ok(doc) = op.request.answer_format.read(body) else {
        return CallError::Status(status);
    };
    let message = op
        .response
        .error_message
        .as_ref()
        .and_then(|p| p.first(&doc))
        .and_then(convert::text)
        .unwrap_or_default();
    let mut message = secrets.scrub(message);
    message.truncate(message.floor_char_boundary(200));
    let fields = op
        .response
        .error_fields
        .as_ref()
        .and_then(|p| p.first(&doc))
        .map(|f| secrets.scrub_json(f));
    CallError::Rejected {
        status,
        message,
        fields,
    }
}

enum Judged<'a> {
    Empty,
    Items(Vec<&'a Value>),
}

/// Applies the envelope rules: "nothing found", success, or a business error.
fn judge<'a>(
    op: &OperationPlan,
    secrets: &Secrets<'_>,
    doc: &'a Value,
) -> Result<Judged<'a>, CallError> {
    let r = &op.response;
    if !r.not_found.is_empty() && r.not_found.iter().all(|c| c.holds(doc)) {
        return Err(CallError::NotFound);
    }
    if !r.empty.is_empty() && r.empty.iter().all(|c| c.holds(doc)) {
        return Ok(Judged::Empty);
    }
    if !r.success.iter().all(|c| c.holds(doc)) {
        let read = |p: &Option<super::extract::JsonPath>| {
            p.as_ref()
                .and_then(|p| p.first(doc))
                .and_then(convert::text)
                .unwrap_or_default()
        };
        let mut message = secrets.scrub(read(&r.error_message));
        message.truncate(message.floor_char_boundary(200));
        let code = secrets.scrub(read(&r.error_code));
        if !r.rate_limited.is_empty() && r.rate_limited.iter().all(|c| c.holds(doc)) {
            return Err(CallError::Throttled(format!(
                "vendor error {code}: {message}"
            )));
        }
        // no code, no message and not even the member success is judged by: a changed
        // envelope (or no envelope at all), not a business error of the vendor's
        if code.is_empty()
            && message.is_empty()
            && let Some(c) = r.success.iter().find(|c| c.path.first(doc).is_none())
        {
            return Err(CallError::Shape(format!(
                "the answer has no `{}`",
                c.path.source()
            )));
        }
        return Err(CallError::Business { code, message });
    }
    let found = r.items.all(doc);
    if found.len() > 1 {
        // a path such as `$.data[*]` selects the items themselves
        return Ok(Judged::Items(found));
    }
    match found.first().copied() {
        // a success whose items path is gone is a changed envelope, not "no coupons": a
        // renamed vendor field must not silently empty every wallet
        None => Err(CallError::Shape(format!(
            "the answer has no `{}`",
            r.items.source()
        ))),
        Some(Value::Array(items)) => Ok(Judged::Items(items.iter().collect())),
        Some(obj @ Value::Object(_)) => Ok(Judged::Items(vec![obj])),
        Some(other) => Err(CallError::Shape(format!(
            "`{}` holds {} instead of a list or an object",
            r.items.source(),
            kind_of(other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Decides whether another page follows, and moves `page` to it.
fn more_pages(p: &PagingPlan, doc: &Value, page: &mut PageState, seen: u64) -> bool {
    if let Some(has_more) = &p.has_more {
        let more = has_more.first(doc).is_some_and(|v| {
            loosely_equal(v, &Value::Bool(true)) || loosely_equal(v, &Value::from(1))
        });
        if !more {
            return false;
        }
    }
    if let Some(total) = p
        .total_items
        .as_ref()
        .and_then(|t| t.first(doc))
        .and_then(convert::fen)
        && seen >= u64::try_from(total).unwrap_or(0)
    {
        return false;
    }
    if let Some(pages) = p
        .total_pages
        .as_ref()
        .and_then(|t| t.first(doc))
        .and_then(convert::fen)
    {
        let done = page.number.saturating_sub(p.first_page) + 1;
        if done >= u64::try_from(pages).unwrap_or(0) {
            return false;
        }
    }
    match p.style {
        PagingStyle::PageNumber => {
            page.number += 1;
            true
        }
        PagingStyle::Cursor => {
            let next = p
                .next_cursor
                .as_ref()
                .and_then(|c| c.first(doc))
                .and_then(convert::text)
                .filter(|c| !c.is_empty());
            match next {
                Some(c) if Some(&c) != page.cursor.as_ref() => {
                    page.cursor = Some(c);
                    true
                }
                _ => false,
            }
        }
    }
}

#[derive(Debug, Clone)]
struct PageState {
    number: u64,
    /// The operation's `paging.first_page` (0 or 1), where `page.offset` is 0.
    first: u64,
    size: u64,
    cursor: Option<String>,
}

impl PageState {
    /// The first page of `op`.
    fn first(op: &OperationPlan) -> PageState {
        let first = op.paging.as_ref().map_or(1, |p| p.first_page);
        PageState {
            number: first,
            first,
            size: op.paging.as_ref().map_or(0, |p| p.page_size),
            cursor: None,
        }
    }

    /// Items before this page, for offset/limit paging.
    fn offset(&self) -> u64 {
        self.number
            .saturating_sub(self.first)
            .saturating_mul(self.size)
    }
}

/// The rendered request, as signing steps see it.
struct Rendered<'a> {
    method: &'a str,
    path: String,
    /// Path and query as sent, for signatures over the request target.
    target: String,
    body: String,
    /// The query parameters there were when it was rendered ([`AttemptValues::query`]'s
    /// first ones: steps after it only add), by index, sorted by name (stable for repeated
    /// names). Indexes, not a sorted copy: a copy was two strings a parameter an attempt.
    sorted_query: Vec<usize>,
}

/// Every value a template can name, for one attempt.
struct AttemptValues<'a> {
    req: &'a RequestPlan,
    token: Option<&'a Token>,
    input: &'a CallInput,
    page: &'a PageState,
    /// One clock reading per attempt, written lazily into each layout the request uses.
    now: Timestamp,
    clock: Vec<OnceCell<String>>,
    /// Drawn only if a template or step reads it: the integer, hex and alphanumeric forms,
    /// each once per attempt.
    nonce: OnceCell<String>,
    nonce_hex: OnceCell<String>,
    nonce_alnum: OnceCell<String>,
    vars: Vec<Option<String>>,
    /// The request's query parameters so far, in the order they are sent.
    query: Vec<(String, String)>,
    request: Option<Rendered<'a>>,
}

impl<'a> AttemptValues<'a> {
    fn new(
        req: &'a RequestPlan,
        input: &'a CallInput,
        page: &'a PageState,
        token: Option<&'a Token>,
    ) -> Self {
        AttemptValues {
            req,
            token,
            input,
            page,
            now: Timestamp::now(),
            clock: vec![OnceCell::new(); req.clock.len()],
            nonce: OnceCell::new(),
            nonce_hex: OnceCell::new(),
            nonce_alnum: OnceCell::new(),
            vars: vec![None; req.var_count],
            query: Vec::with_capacity(req.query.len() + 2),
            request: None,
        }
    }

    fn sorted_query(&self, style: PairStyle) -> Option<Cow<'_, str>> {
        let r = self.request.as_ref()?;
        let query = &self.query;
        Some(Cow::Owned(style.join(r.sorted_query.iter().map(|&i| {
            let (k, v) = &query[i];
            (k.as_str(), v.as_str())
        }))))
    }
}

impl Values for AttemptValues<'_> {
    fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
        match r {
            Ref::MemberId => self.input.member_id.as_deref().map(Cow::Borrowed),
            Ref::MemberOpenid => self.input.openid.as_deref().map(Cow::Borrowed),
            Ref::Cred(i) => self
                .req
                .credentials
                .get(i)
                .map(|c| Cow::Borrowed(c.expose_secret())),
            Ref::Input(i) => match self.input.inputs.get(i)?.as_ref()? {
                Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                Value::Null => None,
                other => Some(Cow::Owned(other.to_string())),
            },
            Ref::Now(i) => {
                let rendering = self.req.clock.get(i)?;
                let text = self.clock[i].get_or_init(|| rendering.write(self.now));
                Some(Cow::Borrowed(text))
            }
            Ref::Nonce => Some(Cow::Borrowed(self.nonce.get_or_init(|| {
                use rand::RngExt;
                rand::rng()
                    .random_range(100_000u64..=2_147_483_647)
                    .to_string()
            }))),
            Ref::NonceHex => Some(Cow::Borrowed(self.nonce_hex.get_or_init(|| {
                use rand::RngExt;
                hex::encode(rand::rng().random::<[u8; 16]>())
            }))),
            Ref::NonceAlnum => Some(Cow::Borrowed(self.nonce_alnum.get_or_init(|| {
                use rand::RngExt;
                rand::rng()
                    .sample_iter(rand::distr::Alphanumeric)
                    .take(32)
                    .map(char::from)
                    .collect()
            }))),
            Ref::Var(i) => self.vars.get(i)?.as_deref().map(Cow::Borrowed),
            Ref::PageNumber => Some(Cow::Owned(self.page.number.to_string())),
            Ref::PageOffset => Some(Cow::Owned(self.page.offset().to_string())),
            Ref::PageSize => Some(Cow::Owned(self.page.size.to_string())),
            Ref::PageCursor => self.page.cursor.as_deref().map(Cow::Borrowed),
            Ref::RequestMethod => self.request.as_ref().map(|r| Cow::Borrowed(r.method)),
            Ref::RequestPath => self
                .request
                .as_ref()
                .map(|r| Cow::Borrowed(r.path.as_str())),
            Ref::RequestTarget => self
                .request
                .as_ref()
                .map(|r| Cow::Borrowed(r.target.as_str())),
            Ref::RequestBody => self
                .request
                .as_ref()
                .map(|r| Cow::Borrowed(r.body.as_str())),
            Ref::QuerySortedNameValue => self.sorted_query(PairStyle::NameValue),
            Ref::QuerySortedPairs => self.sorted_query(PairStyle::Pairs),
            Ref::QuerySortedPairsEncoded => self.sorted_query(PairStyle::PairsEncoded),
            Ref::AuthToken => self.token.map(|t| Cow::Borrowed(t.expose())),
        }
    }

    fn mapped(&self, map: usize, key: &str) -> Option<String> {
        self.req.maps.get(map)?.get(key).cloned()
    }

    fn json(&self, r: Ref) -> Option<Value> {
        match r {
            // null is absent, as in `text`
            Ref::Input(i) => self.input.inputs.get(i)?.clone().filter(|v| !v.is_null()),
            _ => self.text(r).map(|t| Value::String(t.into_owned())),
        }
    }
}

/// Builds and signs the request of one attempt.
fn build_request(
    op: &RequestPlan,
    input: &CallInput,
    page: &PageState,
    token: Option<&Token>,
    obs: &mut Option<&mut dyn Observer>,
) -> Result<Request<Full<Bytes>>, CallError> {
    let mut values = AttemptValues::new(op, input, page, token);
    let secrets = Secrets {
        credentials: &op.credentials,
        token: token.map(Token::expose),
    };
    let mut headers: Vec<(http::HeaderName, String)> = Vec::new();

    let run = |values: &mut AttemptValues<'_>,
               headers: &mut Vec<(http::HeaderName, String)>,
               obs: &mut Option<&mut dyn Observer>,
               from: usize,
               to: usize|
     -> Result<(), CallError> {
        for step in &op.steps[from..to] {
            let result = match obs {
                None => step.run(&*values),
                Some(o) => observed_step(step, &*values, &secrets, &mut **o),
            }
            .map_err(|e| CallError::Build(e.to_string()))?;
            match &step.target {
                Target::Var(i) => values.vars[*i] = Some(result),
                Target::Query(q) => values.query.push((q.clone(), result)),
                Target::Header(h) => headers.push((h.clone(), result)),
            }
        }
        Ok(())
    };
    run(&mut values, &mut headers, obs, 0, op.render_at)?;

    // render
    let path = op.path.render_encoded(&values).unwrap_or_default();
    for (k, t) in &op.query {
        if let Some(v) = t.render(&values) {
            values.query.push((k.clone(), v));
        }
    }
    for (h, t) in &op.headers {
        if let Some(v) = t.render(&values) {
            headers.push((h.clone(), v));
        }
    }
    let body = match &op.body {
        Some(t) => {
            let mut buf = Vec::with_capacity(256);
            op.body_format
                .write(t, &values, &mut buf)
                .map_err(|e| CallError::Build(e.to_string()))?;
            // every format writes text, so the bytes are UTF-8
            String::from_utf8(buf).map_err(|e| CallError::Build(e.to_string()))?
        }
        None => String::new(),
    };
    // the rendered request, as signing steps see it: only built when a step signs it
    let mut body = body;
    if op.render_at < op.steps.len() {
        let query = &values.query;
        let mut sorted_query: Vec<usize> = (0..query.len()).collect();
        sorted_query.sort_by(|&a, &b| query[a].0.cmp(&query[b].0));
        // the path the vendor receives: base_url's own path, then the operation's
        let mut full_path = String::with_capacity(op.vendor.base_path.len() + path.len());
        full_path.push_str(&op.vendor.base_path);
        full_path.push_str(&path);
        let mut target = String::with_capacity(full_path.len() + query_len(query));
        target.push_str(&full_path);
        push_query(&mut target, query);
        if let Some(o) = obs {
            o.observe(Event::Rendered {
                method: op.method.as_str(),
                target: &secrets.mask(&target),
                body: &secrets.mask(&body),
            });
        }
        values.request = Some(Rendered {
            method: op.method.as_str(),
            path: full_path,
            target,
            body,
            sorted_query,
        });
        run(&mut values, &mut headers, obs, op.render_at, op.steps.len())?;
        body = values.request.take().expect("rendered above").body;
    }
    let query = std::mem::take(&mut values.query);

    let mut uri = String::with_capacity(op.vendor.base_url.len() + path.len() + query_len(&query));
    uri.push_str(&op.vendor.base_url);
    uri.push_str(&path);
    push_query(&mut uri, &query);
    let mut req = Request::builder().method(op.method.clone()).uri(&uri);
    if op.body.is_some() && !headers.iter().any(|(h, _)| h == http::header::CONTENT_TYPE) {
        req = req.header(http::header::CONTENT_TYPE, op.body_format.content_type());
    }
    if !headers.iter().any(|(h, _)| h == http::header::ACCEPT) {
        req = req.header(http::header::ACCEPT, op.answer_format.accept());
    }
    // W3C trace context only to vendors whose config asks for it (most are third parties)
    if op.vendor.propagate_trace
        && let Some(h) = req.headers_mut()
    {
        crate::telemetry::inject_trace_context(h);
    }
    for (h, v) in headers {
        let v = HeaderValue::from_str(&v).map_err(|_| {
            CallError::Build(format!(
                "header `{h}` would hold characters a header cannot"
            ))
        })?;
        req = req.header(h, v);
    }
    if let (Some(o), Some(headers)) = (obs, req.headers_ref()) {
        o.observe(Event::Wire {
            method: op.method.as_str(),
            url: &secrets.mask(&uri),
            headers: &masked_headers(&secrets, headers),
            body: &secrets.mask(&body),
        });
    }
    req.body(Full::new(Bytes::from(body))).map_err(|_| {
        CallError::Build(format!(
            "`{}{}` is not a valid URL",
            op.vendor.base_url, path
        ))
    })
}

/// Runs one step for an observer: its masked input and output (or failure) are shown.
fn observed_step(
    step: &Step,
    values: &dyn super::template::Values,
    secrets: &Secrets<'_>,
    o: &mut dyn Observer,
) -> Result<String, super::steps::StepError> {
    let (input, result) = match step.input(values) {
        Ok(input) => (secrets.mask(&input), step.apply(input, values)),
        Err(e) => (String::new(), Err(e)),
    };
    let output = match &result {
        Ok(out) => Ok(secrets.mask(out)),
        Err(e) => Err(secrets.mask(&e.to_string())),
    };
    o.observe(Event::Step {
        name: &step.name,
        input: &input,
        output: output.as_deref().map_err(String::as_str),
        into: match &step.target {
            Target::Var(_) => "var".to_owned(),
            Target::Query(q) => format!("query {q}"),
            Target::Header(h) => format!("header {h}"),
        },
    });
    result
}

/// About the length of `query` written out (more if much of it is percent-encoded).
fn query_len(query: &[(String, String)]) -> usize {
    steps::pairs_len(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Appends `?k=v&…`, names and values RFC 3986-encoded, in order.
fn push_query(out: &mut String, query: &[(String, String)]) {
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        crypto::percent_encode_into(out, k);
        out.push('=');
        crypto::percent_encode_into(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::{Credentials, Plan};

    /// One vendor whose GET names the paging offset and both non-numeric nonces.
    fn plan(first_page: u64) -> Plan {
        let op = format!(
            r#"
        identity: [member_id]
        request:
          method: GET
          path: /coupons
          query:
            offset: "{{{{page.offset}}}}"
            limit: "{{{{page.size}}}}"
            nonce_hex: "{{{{nonce.hex}}}}"
            nonce_str: "{{{{nonce.alnum}}}}"
            again: "{{{{nonce.hex}}}}"
        paging: {{style: page_number, first_page: {first_page}, page_size: 10, max_pages: 5}}
        response:
          success: [{{path: $.ok, in: [true]}}]
          items: $.items
        fields:
          id: $.id
          status: {{value: usable}}
"#
        );
        crate::engine::plan::one_operation(&op).unwrap()
    }

    /// An operation that reads an answer every way routes.yaml can: envelope rules, page
    /// info, paging, alternatives, conditions, `map`, `add_days`, nested names.
    const READS_EVERY_WAY: &str = r#"
        identity: [member_id]
        request: {method: GET, path: /c}
        paging: {style: page_number, page_size: 2, max_pages: 3, has_more: $.data.more}
        response:
          success: [{path: $.code, in: [0]}]
          empty: [{path: $.code, in: [404]}]
          error_code: $.code
          error_message: $.msg
          page_info: {page: $.data.page.no, per_page: $.data.page.per, total: $.data.page.total, total_pages: $.data.page.pages}
          items: $.data.list
        fields:
          id: {path: [$._id, $.id]}
          name: $.ticketName
          kind: {path: $.ticketType, map: {"1": cash, "2": discount}, default: other}
          amount_off: {path: $.ticketAmount, when: {path: $.ticketType, in: [1]}, convert: fen}
          min_order: $.ticketRule.orderAmount
          status: {path: $.useStatus, map: {"1": pending, "2": usable, "4": used}}
          valid_from:
            first_of:
              - {path: $.ticketRule.useStartTime, time: {formats: [epoch_ms], bound: start}}
              - {path: $.createTime, when: {path: $.ticketRule.delayDay, present: true}, time: {formats: [epoch_ms]}}
          valid_until:
            first_of:
              - {path: $.ticketRule.useEndTime, time: {formats: [epoch_ms], bound: end}}
              - {path: $.createTime, when: {path: $.ticketRule.delayDay, present: true}, time: {formats: [epoch_ms]}, add_days: $.ticketRule.delayDay}
          channels: {path: $.useChannels, convert: names}
          vendor_status: $['useStatus']
"#;

    /// Answers for [`READS_EVERY_WAY`]: members no path names at every depth, items as a list
    /// and as one object, alternatives taken both ways, a dropped item, failures.
    fn answers_read_every_way() -> Vec<String> {
        let item = |id: &str, kind: u8, extra: &str| {
            format!(
                r#"{{"{id}":"c-{kind}","ticketName":"券{kind}","ticketType":{kind},"ticketAmount":500,
                "useStatus":2,"themeId":null,"junk":{{"deep":[1,{{"x":"y"}}],"s":"\u00e9"}},
                "ticketRule":{{"useStartTime":1767196800000,"useEndTime":1769875199000,
                "orderAmount":5000,"maxAmount":3000,"productKinds":[{{"id":"p","name":"咖啡"}}]{extra}}},
                "createTime":1767196800000,"useChannels":[{{"id":"c1","name":"微信"}},{{"id":"c2"}}]}}"#
            )
        };
        let list = format!(
            "[{},{},{}]",
            item("_id", 1, ""),
            item(
                "id",
                2,
                r#","delayDay":3,"useStartTime":null,"useEndTime":null"#
            ),
            // an unknown status: dropped, and counted
            item("id", 1, "").replace(r#""useStatus":2"#, r#""useStatus":9"#),
        );
        let page = r#"{"no":1,"per":2,"total":3,"pages":2,"junk":[1,2,3]}"#;
        vec![
            format!(
                r#"{{"code":0,"msg":"成功","trace":{{"a":[[1],[2]]}},"data":{{"more":true,"page":{page},"list":{list},"other":{list}}}}}"#
            ),
            format!(
                r#"{{"code":0,"data":{{"more":false,"page":{page},"list":{}}},"extra":1}}"#,
                item("_id", 2, "")
            ),
            r#"{"code":7,"msg":"会员不存在","data":{"list":[1]}}"#.to_owned(),
            r#"{"code":404,"data":null}"#.to_owned(),
            format!(r#"{{"code":0,"data":{{"page":{page},"more":true}}}}"#),
            format!(r#"{{"code":0,"data":{{"page":{page},"list":"none"}}}}"#),
            format!(r#"{{"code":0,"data":{{"page":{{"no":1}},"list":{list}}}}}"#),
            r#"{"code":0,"data":{"list":[]},"page":"#.to_owned(),
            r#"{"code":0,"data":{"list":[]}} trailing"#.to_owned(),
            // valid JSON too deep for serde_json to read whole; projected, nothing is read
            format!("{}{}", "[".repeat(500), "]".repeat(500)),
            r#"{"msg":"签名错误"}"#.to_owned(),
            // `names` reads only the names of a list's objects: every other shape of
            // `useChannels` still reads as it does whole (text, an object, mixed elements)
            format!(
                r#"{{"code":0,"data":{{"more":false,"page":{page},"list":[{},{},{},{}]}}}}"#,
                item("_id", 1, "").replace(
                    r#"[{"id":"c1","name":"微信"},{"id":"c2"}]"#,
                    r#"["直营",7,[["x"]],{"name":{"a":1}},{"id":"c1","name":"微信","x":[1]},{"name":3},null,true,{"name":null},{"name":true},{"name":"a","name":"b"},{"name":[1]},{"name":2.5e0}]"#
                ),
                item("_id", 1, "").replace(r#"[{"id":"c1","name":"微信"},{"id":"c2"}]"#, r#""a, b""#),
                item("_id", 1, "").replace(r#"[{"id":"c1","name":"微信"},{"id":"c2"}]"#, r#"{"name":"x"}"#),
                item("_id", 1, "").replace(r#"[{"id":"c1","name":"微信"},{"id":"c2"}]"#, "[]"),
            ),
        ]
    }

    struct Nothing;
    impl Observer for Nothing {
        fn observe(&mut self, _: Event<'_>) {}
    }

    /// What `read_page` made of `body`: with an observer the answer is read whole, without
    /// one only what the operation reads.
    fn read_with(op: &OperationPlan, body: &str, observed: bool) -> String {
        let res = http::Response::new(Bytes::from(body.to_owned()));
        let secrets = Secrets {
            credentials: &op.request.credentials,
            token: None,
        };
        let (mut out, mut page, mut seen) = (CallOutput::default(), PageState::first(op), 0);
        let mut nothing = Nothing;
        let mut obs: Option<&mut dyn Observer> = if observed { Some(&mut nothing) } else { None };
        let more = read_page(op, &secrets, &res, &mut out, &mut page, &mut seen, &mut obs)
            .map_err(|e| e.to_string());
        format!(
            "{more:?} rows={:?} dropped={} page_info={:?} pages={} seen={seen} next={}",
            out.rows, out.dropped, out.page_info, out.pages, page.number
        )
    }

    #[test]
    fn a_projected_answer_reads_exactly_as_the_whole_answer() {
        let plan = crate::engine::plan::one_operation(READS_EVERY_WAY).unwrap();
        let op = &plan.routes[0].targets[0];
        let projection = op.projection.as_ref().expect("plain paths only: projected");
        assert!(projection.slots_items(), "names only: items in slots");
        let mut outcomes = Vec::new();
        for body in answers_read_every_way() {
            let whole = read_with(op, &body, true);
            if body.starts_with("[[[") {
                // the one difference: what nobody reads is not parsed, however deep
                assert!(whole.contains("answer is not JSON"), "{whole}");
                outcomes.push(read_with(op, &body, false));
                continue;
            }
            assert_eq!(read_with(op, &body, false), whole, "{body}");
            outcomes.push(whole);
        }
        // the answers do reach every outcome the comparison is meant to cover
        for (i, expect) in [
            (0, "Ok(true) rows="),
            (0, "dropped=1"),
            (1, "Ok(false) rows="),
            (2, "vendor error 7: 会员不存在"),
            (3, "Ok(false) rows=[]"),
            (4, "has no `$.data.list`"),
            (5, "holds a string"),
            (6, "no number at `$.data.page.per`"),
            (7, "answer is not JSON"),
            (8, "answer is not JSON"),
            (9, "unexpected answer: the answer has no `$.code`"),
            (10, "vendor error : 签名错误"),
            (
                11,
                r#"Array [String("直营"), String("7"), String("微信"), String("3"), String("true"), String("b"), String("2.5")]"#,
            ),
            (11, r#"Array [String("a"), String("b")]"#),
            (11, "dropped=1"),
        ] {
            assert!(outcomes[i].contains(expect), "{i}: {}", outcomes[i]);
        }
        assert!(
            outcomes[0].contains("2026-01-04"),
            "add_days: {}",
            outcomes[0]
        );
    }

    #[test]
    fn items_read_into_slots_are_the_items_the_document_names() {
        // the document keeps the last of a repeated name, and an index selects one element
        // of a list whose objects were all read into slots: the rows must follow the document
        for (items, bodies) in [
            (
                "$.data.list",
                &[
                    r#"{"code":0,"data":{"list":[{"_id":"a","useStatus":2}],"list":[{"_id":"b","useStatus":2}]}}"#,
                    r#"{"code":0,"data":{"list":[{"_id":"a","useStatus":2}]},"data":{"list":{"_id":"b","useStatus":2}}}"#,
                    r#"{"code":0,"data":{"list":{"_id":"a","useStatus":2},"list":[{"_id":"b","useStatus":2},{"_id":"c","useStatus":2}]}}"#,
                ][..],
            ),
            (
                "$.data[1]",
                &[
                    r#"{"code":0,"data":[{"_id":"a","useStatus":2},{"_id":"b","useStatus":2}]}"#,
                    r#"{"code":0,"data":[{"_id":"a","useStatus":2},{"_id":"b","useStatus":2}],"data":[7,{"_id":"c","useStatus":2}]}"#,
                ][..],
            ),
        ] {
            let op = format!(
                r#"
        identity: [member_id]
        request: {{method: GET, path: /c}}
        response:
          success: [{{path: $.code, in: [0]}}]
          items: "{items}"
        fields:
          id: $._id
          status: {{path: $.useStatus, map: {{"2": usable}}}}
"#
            );
            let plan = crate::engine::plan::one_operation(&op).unwrap();
            let op = &plan.routes[0].targets[0];
            assert!(op.projection.as_ref().unwrap().slots_items(), "{items}");
            for body in bodies {
                let whole = read_with(op, body, true);
                assert_eq!(read_with(op, body, false), whole, "{body}");
                let last = if body.contains("\"c\"") { "c" } else { "b" };
                assert!(whole.contains(&format!("\"{last}\"")), "{whole}");
                assert!(!whole.contains("\"a\""), "{whole}");
            }
        }
    }

    #[test]
    fn every_operation_of_the_shipped_routes_reads_a_projection() {
        let loaded =
            crate::config::load_str("routes.yaml", crate::embedded::ROUTES_YAML, false).unwrap();
        let plan = Plan::compile(&loaded, Credentials::Optional).unwrap().0;
        for op in plan.operations() {
            let projection = op.projection.as_ref();
            assert!(
                projection.is_some_and(|p| p.slots_items()),
                "{}.{} reads whole answers or items as maps",
                op.vendor.id,
                op.name
            );
        }
    }

    fn query_of(plan: &Plan, number: u64) -> Vec<(String, String)> {
        let op = &plan.routes[0].targets[0];
        let mut page = PageState::first(op);
        page.number = number;
        let req =
            build_request(&op.request, &CallInput::default(), &page, None, &mut None).unwrap();
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn get<'a>(q: &'a [(String, String)], name: &str) -> &'a str {
        &q.iter().find(|(k, _)| k == name).unwrap().1
    }

    #[test]
    fn page_offset_counts_the_items_before_the_page_from_the_first_page() {
        let one_based = plan(1);
        assert_eq!(get(&query_of(&one_based, 1), "offset"), "0");
        assert_eq!(get(&query_of(&one_based, 3), "offset"), "20");
        assert_eq!(get(&query_of(&one_based, 3), "limit"), "10");
        let zero_based = plan(0);
        assert_eq!(get(&query_of(&zero_based, 0), "offset"), "0");
        assert_eq!(get(&query_of(&zero_based, 2), "offset"), "20");
    }

    #[test]
    fn page_offset_needs_page_number_paging() {
        let yaml = "server: {listen: \"127.0.0.1:0\"}\nroutes: {coupons_query: {operation: list_coupons}}\nvendors:\n  v:\n    base_url: http://127.0.0.1:9\n    operations:\n      list_coupons:\n        identity: [member_id]\n        request: {method: GET, path: /c, query: {o: \"{{page.offset}}\"}}\n        paging: {style: cursor, page_size: 10, next_cursor: $.next, max_pages: 5}\n        response: {success: [{path: $.ok, in: [true]}], items: $.items}\n        fields: {id: $.id, status: {value: usable}}\n";
        let loaded = crate::config::load_str("cursor.yaml", yaml, false).unwrap();
        let errors = Plan::compile(&loaded, Credentials::Required).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("`page.offset` is not available with paging style cursor")),
            "{text:?}"
        );
    }

    #[test]
    fn non_numeric_nonces_are_hex_or_alphanumeric_once_per_attempt() {
        let plan = plan(1);
        let first = query_of(&plan, 1);
        let hex = get(&first, "nonce_hex");
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{hex}"
        );
        // one value per attempt, wherever the request names it
        assert_eq!(get(&first, "again"), hex);
        let alnum = get(&first, "nonce_str");
        assert_eq!(alnum.len(), 32);
        assert!(alnum.bytes().all(|b| b.is_ascii_alphanumeric()), "{alnum}");
        // a new attempt draws new ones
        let second = query_of(&plan, 1);
        assert_ne!(get(&second, "nonce_hex"), hex);
        assert_ne!(get(&second, "nonce_str"), alnum);
    }

    #[test]
    fn an_unknown_nonce_form_names_the_known_ones() {
        let yaml = "server: {listen: \"127.0.0.1:0\"}\nroutes: {coupons_query: {operation: list_coupons}}\nvendors:\n  v:\n    base_url: http://127.0.0.1:9\n    operations:\n      list_coupons:\n        identity: [member_id]\n        request: {method: GET, path: /c, query: {n: \"{{nonce.uuid}}\"}}\n        response: {success: [{path: $.ok, in: [true]}], items: $.items}\n        fields: {id: $.id, status: {value: usable}}\n";
        let loaded = crate::config::load_str("nonce.yaml", yaml, false).unwrap();
        let errors = Plan::compile(&loaded, Credentials::Required).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("unknown `nonce.uuid` (known: nonce, nonce.hex, nonce.alnum)")),
            "{text:?}"
        );
    }

    // ---- calls against a scripted vendor on loopback

    use std::sync::{Arc, Mutex};

    use crate::config::{LimitsConfig, RetryConfig};

    use crate::engine::scripted::{Scripted, Vendor, answer};

    /// A plan whose one vendor (`vendor`: its settings beside `base_url`, indented four
    /// spaces) lives at `url` and runs `operation` (indented eight spaces).
    fn plan_at(url: &str, vendor: &str, operation: &str) -> Plan {
        plan_named("v", url, vendor, operation)
    }

    /// [`plan_at`] with the vendor named `id`.
    fn plan_named(id: &str, url: &str, vendor: &str, operation: &str) -> Plan {
        let yaml = format!(
            "server: {{listen: \"127.0.0.1:0\"}}\nroutes: {{coupons_query: {{operation: list_coupons}}}}\n\
             vendors:\n  {id}:\n    base_url: {url}\n{vendor}    operations:\n      list_coupons:\n{operation}"
        );
        let loaded = crate::config::load_str("test.yaml", &yaml, false).unwrap();
        Plan::compile(&loaded, Credentials::Required).unwrap().0
    }

    /// A paged list: more while `$.more` says so, up to five pages of two.
    const PAGED: &str = "        identity: [member_id]
        request: {method: GET, path: /c, query: {page: \"{{page.number}}\"}}
        paging: {style: page_number, page_size: 2, max_pages: 5, has_more: $.more}
        response:
          success: [{path: $.code, in: [0]}]
          error_code: $.code
          error_message: $.msg
          rate_limited: [{path: $.code, in: [429]}]
          items: $.list
        fields: {id: $.id, status: {value: usable}}
";

    fn page(ids: &[&str], more: bool) -> String {
        let list: Vec<Value> = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
        serde_json::json!({"code": 0, "more": more, "list": list}).to_string()
    }

    fn guard_of(retry: RetryConfig, limits: Option<LimitsConfig>) -> VendorGuard {
        VendorGuard::new(&retry, None, limits.as_ref(), None)
    }

    fn limits(rps: u32, queue_ms: u64) -> LimitsConfig {
        LimitsConfig {
            max_concurrency: None,
            rps: Some(rps),
            burst: Some(1),
            queue_ms,
        }
    }

    fn input() -> CallInput {
        CallInput {
            member_id: Some("m1".to_owned()),
            ..CallInput::default()
        }
    }

    /// `op` called for member `m1` through a fresh connection pool.
    async fn call_with(op: &OperationPlan, guard: &VendorGuard) -> Result<CallOutput, CallError> {
        call(op, &Upstream::new(1 << 20), &input(), guard).await
    }

    #[tokio::test]
    async fn every_further_page_takes_its_share_of_the_quota() {
        let vendor = Vendor::start(vec![answer(200, &page(&["a", "b"], true))]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        // room for one request a second: the call's admission paid for the first page (not
        // taken here), the second takes the room, the third finds none
        let guard = guard_of(RetryConfig::default(), Some(limits(1, 0)));
        let result = call_with(op, &guard).await;
        assert!(matches!(result, Err(CallError::RateLimited)), "{result:?}");
        assert_eq!(vendor.asked().len(), 2, "{:?}", vendor.asked());
    }

    #[tokio::test]
    async fn a_429_holds_the_vendor_off_for_its_retry_after_a_business_throttle_for_a_second() {
        let throttled = (429, vec![("retry-after", "30".to_owned())], String::new());
        let vendor = Vendor::start(vec![throttled]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let guard = guard_of(RetryConfig::default(), Some(limits(1000, 2000)));
        let result = call_with(op, &guard).await;
        assert!(
            matches!(&result, Err(CallError::Throttled(m)) if m == "HTTP 429"),
            "{result:?}"
        );
        // 30 s is more than a call may wait: the next request is refused at once
        assert!(guard.pace().await.is_err());

        // a throttling business code has no Retry-After of its own (the header is the
        // HTTP 429's): the vendor is left alone for a second
        let body = serde_json::json!({"code": 429, "msg": "slow down"}).to_string();
        let vendor = Vendor::start(vec![(200, vec![("retry-after", "30".to_owned())], body)]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let guard = guard_of(RetryConfig::default(), Some(limits(1000, 2000)));
        let result = call_with(op, &guard).await;
        assert!(
            matches!(&result, Err(CallError::Throttled(m)) if m.contains("slow down")),
            "{result:?}"
        );
        assert!(guard.pace().await.is_ok());
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date_and_capped_at_a_minute() {
        let after = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            retry_after(&h).as_secs()
        };
        assert_eq!(after("7"), 7);
        assert_eq!(after(" 12 "), 12);
        assert_eq!(after("3600"), 60);
        // an HTTP date ten seconds ahead (a second may pass while the test runs)
        let at = Timestamp::now() + jiff::SignedDuration::from_secs(10);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&at)
            .unwrap();
        assert!((9..=10).contains(&after(&date)), "{date}: {}", after(&date));
        // a date past, or something else: the default second
        let past = Timestamp::now() - jiff::SignedDuration::from_secs(10);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&past)
            .unwrap();
        assert_eq!(after(&date), 1);
        assert_eq!(after("soon"), 1);
        assert_eq!(retry_after(&http::HeaderMap::new()), DEFAULT_HOLD_OFF);
    }

    #[tokio::test]
    async fn paging_stops_at_max_pages_and_says_the_answer_was_cut() {
        let body = page(&["a", "b"], true);
        let vendor = Vendor::start(vec![answer(200, &body)]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let out = call_with(op, &guard_of(RetryConfig::default(), None))
            .await
            .unwrap();
        assert_eq!((out.pages, out.rows.len(), out.truncated), (5, 10, true));
        // the weight of the cached answer: every page's bytes
        assert_eq!(out.bytes, 5 * body.len());
        let pages: Vec<String> = (1..=5).map(|n| format!("GET /c?page={n}")).collect();
        assert_eq!(vendor.asked(), pages);
    }

    /// What an observer was shown, one `Debug` line per event.
    #[derive(Default)]
    struct Shown(Vec<String>);

    impl Observer for Shown {
        fn observe(&mut self, event: Event<'_>) {
            self.0.push(format!("{event:?}"));
        }
    }

    impl Shown {
        fn kinds(&self) -> Vec<&str> {
            self.0
                .iter()
                .map(|e| e.split([' ', '(']).next().unwrap_or_default())
                .collect()
        }
    }

    #[test]
    fn a_replayed_answer_shows_the_request_it_answers_and_its_rows() {
        let plan = plan(1);
        let op = &plan.routes[0].targets[0];
        let mut shown = Shown::default();
        let mut obs: Option<&mut dyn Observer> = Some(&mut shown);
        let body = Bytes::from(r#"{"ok":true,"items":[{"id":"a"},{"id":"b"}]}"#);
        let out = replay(op, &input(), http::StatusCode::OK, body, &mut obs).unwrap();
        assert_eq!((out.rows.len(), out.pages), (2, 1));
        assert_eq!(
            shown.kinds(),
            ["Wire", "Answer", "Envelope", "Item", "Item", "Page"],
            "{:?}",
            shown.0
        );
    }

    #[tokio::test]
    async fn paging_stops_once_the_vendor_s_total_of_items_is_read() {
        let op_yaml = PAGED.replace("has_more: $.more", "total_items: $.total");
        let with_total = |ids: &[&str]| {
            let list: Vec<Value> = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
            serde_json::json!({"code": 0, "total": 3, "list": list}).to_string()
        };
        let vendor = Vendor::start(vec![
            answer(200, &with_total(&["a", "b"])),
            answer(200, &with_total(&["c"])),
        ])
        .await;
        let plan = plan_at(&vendor.url, "", &op_yaml);
        let op = &plan.routes[0].targets[0];
        let out = call_with(op, &guard_of(RetryConfig::default(), None))
            .await
            .unwrap();
        assert_eq!((out.pages, out.rows.len(), out.truncated), (2, 3, false));
        assert_eq!(vendor.asked(), ["GET /c?page=1", "GET /c?page=2"]);
    }

    #[tokio::test]
    async fn an_answer_whose_every_item_is_dropped_fails_and_an_empty_list_does_not() {
        let bad = serde_json::json!({"code": 0, "list": [{"x": 1}, {"x": 2}]}).to_string();
        let vendor = Vendor::start(vec![answer(200, &bad), answer(200, &page(&[], false))]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let (upstream, guard) = (
            Upstream::new(1 << 20),
            guard_of(RetryConfig::default(), None),
        );
        let garbage = call(op, &upstream, &input(), &guard).await;
        assert!(
            matches!(&garbage, Err(CallError::Shape(m)) if m.starts_with("none of the 2 items")),
            "{garbage:?}"
        );
        // a vendor with nothing to list is not answering garbage
        let none = call(op, &upstream, &input(), &guard).await.unwrap();
        assert_eq!((none.rows.len(), none.pages, none.dropped), (0, 1, 0));
    }

    #[tokio::test]
    async fn dropped_items_are_counted_once_per_page() {
        let plan = plan_named("dropcount", "http://127.0.0.1:9", "", PAGED);
        crate::telemetry::register(&plan);
        let two = |id: &str, more: bool| {
            serde_json::json!({"code": 0, "more": more, "list": [{"id": id}, {"x": 1}]}).to_string()
        };
        let vendor = Vendor::start(vec![
            answer(200, &two("a", true)),
            answer(200, &two("b", false)),
        ])
        .await;
        let plan = plan_named("dropcount", &vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let out = call_with(op, &guard_of(RetryConfig::default(), None))
            .await
            .unwrap();
        assert_eq!((out.rows.len(), out.dropped), (2, 2));
        let metrics = crate::telemetry::render(&crate::telemetry::install_metrics());
        let counted: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with(crate::telemetry::VENDOR_DROPPED) && l.contains("\"dropcount\"")
            })
            .collect();
        assert!(
            counted.len() == 1 && counted[0].ends_with(" 2"),
            "{counted:?}"
        );
    }

    /// A vendor with a credential worth hiding, and one too short to hide.
    const ECHOED: &str = "    credentials: {client: client-4711, short: abc}\n";

    #[tokio::test]
    async fn a_vendor_echoing_a_credential_has_it_scrubbed_from_errors() {
        let op_yaml = PAGED.replace(
            "          items: $.list\n",
            "          items: $.list\n          error_fields: $.errors\n",
        );
        let business = r#"{"code":403,"msg":"unknown client client-4711 (abc)"}"#;
        let refused =
            r#"{"msg":"bad client-4711","errors":{"client-4711":["client-4711 unknown",7]}}"#;
        let vendor = Vendor::start(vec![
            answer(200, business),
            answer(422, refused),
            answer(500, refused),
        ])
        .await;
        let plan = plan_at(&vendor.url, ECHOED, &op_yaml);
        let op = &plan.routes[0].targets[0];
        let (upstream, guard) = (
            Upstream::new(1 << 20),
            guard_of(RetryConfig::default(), None),
        );
        let e = call(op, &upstream, &input(), &guard).await.unwrap_err();
        // a secret under four characters is left: hiding every `abc` would garble the text
        assert_eq!(e.to_string(), "vendor error 403: unknown client … (abc)");
        let e = call(op, &upstream, &input(), &guard).await.unwrap_err();
        let CallError::Rejected {
            status,
            message,
            fields,
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!((*status, message.as_str()), (422, "bad …"));
        assert_eq!(fields, &Some(serde_json::json!({"…": ["… unknown", 7]})));
        // only a 4xx is the vendor refusing the request; a 5xx is the vendor failing
        let e = call(op, &upstream, &input(), &guard).await.unwrap_err();
        assert!(matches!(e, CallError::Status(500)), "{e:?}");
    }

    #[tokio::test]
    async fn an_observer_sees_every_secret_masked() {
        let op_yaml = PAGED.replace(
            "query: {page: \"{{page.number}}\"}",
            "query: {page: \"{{page.number}}\", c: \"{{cred.client}}\"}",
        );
        let body = r#"{"code":0,"more":false,"list":[{"id":"a","note":"for client-4711"}]}"#;
        let echo = (
            200,
            vec![("x-echo", "client-4711".to_owned())],
            body.to_owned(),
        );
        let vendor = Vendor::start(vec![echo]).await;
        let plan = plan_at(&vendor.url, ECHOED, &op_yaml);
        let op = &plan.routes[0].targets[0];
        let mut shown = Shown::default();
        let mut obs: Option<&mut dyn Observer> = Some(&mut shown);
        let guard = guard_of(RetryConfig::default(), None);
        let out = call_observed(op, &Upstream::new(1 << 20), &input(), &guard, &mut obs)
            .await
            .unwrap();
        assert_eq!(out.rows.len(), 1);
        // the vendor did get it
        assert!(
            vendor.asked()[0].contains("c=client-4711"),
            "{:?}",
            vendor.asked()
        );
        assert_eq!(
            shown.kinds(),
            ["Wire", "Answer", "Envelope", "Item", "Page"],
            "{:?}",
            shown.0
        );
        let all = shown.0.join("\n");
        assert!(!all.contains("client-4711"), "{all}");
        let [wire, answer, envelope, item, _] = &shown.0[..] else {
            unreachable!()
        };
        assert!(wire.contains("c=***"), "{wire}");
        assert!(answer.contains(r#"("x-echo", "***")"#), "{answer}");
        assert!(answer.contains(r#"for ***"#), "{answer}");
        assert!(envelope.contains(r#"String("for ***")"#), "{envelope}");
        assert!(item.contains(r#"String("for ***")"#), "{item}");
    }

    /// A vendor whose calls carry an access token from its token endpoint.
    const WITH_TOKEN: &str = "    credentials: {client: client-4711}
    auth:
      token:
        request: {method: POST, path: /token, body: {id: \"{{cred.client}}\"}}
        token: $.access_token
        expires_in: $.expires_in
        refresh_before_ms: 0
";

    fn token(t: &str) -> Scripted {
        answer(
            200,
            &serde_json::json!({"access_token": t, "expires_in": 600}).to_string(),
        )
    }

    /// [`PAGED`] sending the access token.
    fn paged_with_token() -> String {
        PAGED.replace(
            "request: {method: GET, path: /c,",
            "request: {method: GET, path: /c, headers: {Authorization: \"Bearer {{auth.token}}\"},",
        )
    }

    /// The guard of `plan`'s vendor with its token endpoint, as the gateway builds it.
    fn guard_with_token(plan: &Plan, retry: RetryConfig) -> VendorGuard {
        let mut guard = guard_of(retry, None);
        let op = &plan.routes[0].targets[0];
        guard.auth = plan.tokens[op.vendor.slot].clone().map(|plan| VendorAuth {
            cache: crate::engine::token::TokenCache::new(plan.refresh_before),
            plan,
        });
        assert!(guard.auth.is_some());
        guard
    }

    #[tokio::test]
    async fn a_revoked_token_is_renewed_once_and_the_call_tried_again() {
        let (unauthorized, ok) = (answer(401, ""), answer(200, &page(&["a"], false)));
        let vendor = Vendor::start(vec![
            token("tok-1111"),
            unauthorized.clone(),
            token("tok-2222"),
            ok,
            // a token refused again right after its renewal: the call fails
            unauthorized.clone(),
            token("tok-3333"),
            unauthorized,
        ])
        .await;
        let plan = plan_at(&vendor.url, WITH_TOKEN, &paged_with_token());
        let op = &plan.routes[0].targets[0];
        let guard = guard_with_token(&plan, RetryConfig::default());
        let upstream = Upstream::new(1 << 20);
        let out = call(op, &upstream, &input(), &guard).await.unwrap();
        assert_eq!(out.rows.len(), 1);
        let e = call(op, &upstream, &input(), &guard).await.unwrap_err();
        assert!(matches!(e, CallError::Status(401)), "{e:?}");
        assert_eq!(
            vendor.asked(),
            [
                "POST /token",
                "GET /c?page=1 Bearer tok-1111",
                "POST /token",
                "GET /c?page=1 Bearer tok-2222",
                "GET /c?page=1 Bearer tok-2222",
                "POST /token",
                "GET /c?page=1 Bearer tok-3333",
            ]
        );
    }

    #[tokio::test]
    async fn the_token_endpoint_is_tried_twice_even_for_a_vendor_without_retries() {
        let vendor = Vendor::start(vec![
            answer(503, ""),
            token("tok-1111"),
            answer(200, &page(&["a"], false)),
        ])
        .await;
        let plan = plan_at(&vendor.url, WITH_TOKEN, &paged_with_token());
        let op = &plan.routes[0].targets[0];
        let guard = guard_with_token(&plan, RetryConfig::default());
        let out = call_with(op, &guard).await.unwrap();
        assert_eq!(out.rows.len(), 1);
        assert_eq!(
            vendor.asked(),
            [
                "POST /token",
                "POST /token",
                "GET /c?page=1 Bearer tok-1111"
            ]
        );

        // and only twice: a failing endpoint fails the call
        let vendor = Vendor::start(vec![answer(500, "")]).await;
        let plan = plan_at(&vendor.url, WITH_TOKEN, &paged_with_token());
        let op = &plan.routes[0].targets[0];
        let guard = guard_with_token(&plan, RetryConfig::default());
        let e = call_with(op, &guard).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot authenticate: the token endpoint answered HTTP 500"
        );
        assert_eq!(vendor.asked(), ["POST /token", "POST /token"]);
    }

    #[tokio::test]
    async fn a_token_endpoint_answer_without_a_token_fails_the_call() {
        for (body, why) in [
            (r#"{"access_token":"","expires_in":600}"#, "holds no token"),
            (r#"{"expires_in":600}"#, "holds no token"),
            ("<html>", "is not JSON"),
        ] {
            let vendor = Vendor::start(vec![answer(200, body)]).await;
            let plan = plan_at(&vendor.url, WITH_TOKEN, &paged_with_token());
            let op = &plan.routes[0].targets[0];
            let guard = guard_with_token(&plan, RetryConfig::default());
            let e = call_with(op, &guard).await.unwrap_err();
            assert!(
                matches!(&e, CallError::Auth(m) if m.ends_with(why)),
                "{body}: {e:?}"
            );
            // one request: a token endpoint that answers is not asked again
            assert_eq!(vendor.asked(), ["POST /token"], "{body}");
        }
    }

    #[tokio::test]
    async fn a_vendor_echoing_the_access_token_has_it_scrubbed() {
        let echo = r#"{"code":401,"msg":"token tok-secret-1 expired"}"#;
        let vendor = Vendor::start(vec![token("tok-secret-1"), answer(200, echo)]).await;
        let plan = plan_at(&vendor.url, WITH_TOKEN, &paged_with_token());
        let op = &plan.routes[0].targets[0];
        let guard = guard_with_token(&plan, RetryConfig::default());
        let e = call_with(op, &guard).await.unwrap_err();
        assert_eq!(e.to_string(), "vendor error 401: token … expired");
    }

    #[tokio::test]
    async fn an_observer_sees_the_token_exchange_with_the_token_masked() {
        let vendor = Vendor::start(vec![
            token("tok-secret-1"),
            answer(200, &page(&["a"], false)),
        ])
        .await;
        let plan = plan_at(&vendor.url, WITH_TOKEN, &paged_with_token());
        let op = &plan.routes[0].targets[0];
        let guard = guard_with_token(&plan, RetryConfig::default());
        let mut shown = Shown::default();
        let mut obs: Option<&mut dyn Observer> = Some(&mut shown);
        call_observed(op, &Upstream::new(1 << 20), &input(), &guard, &mut obs)
            .await
            .unwrap();
        assert_eq!(
            shown.kinds(),
            [
                "TokenRequested",
                "Wire",
                "TokenAnswer",
                "Wire",
                "Answer",
                "Envelope",
                "Item",
                "Page"
            ],
            "{:?}",
            shown.0
        );
        let all = shown.0.join("\n");
        assert!(
            !all.contains("tok-secret-1") && !all.contains("client-4711"),
            "{all}"
        );
        assert!(shown.0[1].contains(r#"{\"id\":\"***\"}"#), "{}", shown.0[1]);
        assert!(
            shown.0[2].contains(r#"\"access_token\":\"***\""#),
            "{}",
            shown.0[2]
        );
        assert!(
            shown.0[3].contains(r#"("authorization", "Bearer ***")"#),
            "{}",
            shown.0[3]
        );
    }

    fn retries(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            backoff_ms: 1,
            ..RetryConfig::default()
        }
    }

    #[tokio::test]
    async fn a_read_is_tried_again_after_a_5xx_up_to_its_attempts() {
        let vendor = Vendor::start(vec![answer(500, ""), answer(200, &page(&["a"], false))]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let out = call_with(op, &guard_of(retries(3), None)).await.unwrap();
        assert_eq!(out.rows.len(), 1);
        assert_eq!(vendor.asked().len(), 2);

        // three attempts in all, then the vendor's failure is the call's
        let vendor = Vendor::start(vec![answer(502, "")]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let e = call_with(op, &guard_of(retries(3), None))
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Status(502)), "{e:?}");
        assert_eq!(vendor.asked().len(), 3);
    }

    #[tokio::test]
    async fn an_answer_that_is_not_a_failure_is_not_tried_again() {
        // a success, a refusal (4xx) and a business error are the vendor's answer
        for (status, body) in [
            (200, page(&["a"], false)),
            (404, String::new()),
            (200, r#"{"code":7,"msg":"no"}"#.to_owned()),
        ] {
            let vendor = Vendor::start(vec![answer(status, &body)]).await;
            let plan = plan_at(&vendor.url, "", PAGED);
            let op = &plan.routes[0].targets[0];
            let _ = call_with(op, &guard_of(retries(3), None)).await;
            assert_eq!(vendor.asked().len(), 1, "{status} {body}");
        }
    }

    #[tokio::test]
    async fn a_write_is_never_tried_again() {
        let write = PAGED.replace(
            "        identity:",
            "        effect: write\n        identity:",
        );
        let vendor = Vendor::start(vec![answer(500, ""), answer(200, &page(&["a"], false))]).await;
        let plan = plan_at(&vendor.url, "", &write);
        let op = &plan.routes[0].targets[0];
        let e = call_with(op, &guard_of(retries(3), None))
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Status(500)), "{e:?}");
        assert_eq!(vendor.asked().len(), 1);
    }

    #[tokio::test]
    async fn every_retry_takes_its_share_of_the_quota() {
        let vendor = Vendor::start(vec![answer(500, "")]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        // the first attempt was paid for by the call's admission (not taken here), the
        // second takes the one request of room, the third finds none
        let guard = guard_of(retries(3), Some(limits(1, 0)));
        let e = call_with(op, &guard).await.unwrap_err();
        assert!(matches!(e, CallError::RateLimited), "{e:?}");
        assert_eq!(vendor.asked().len(), 2);
    }

    /// The pages a paged call asked for, with the vendor answering `script`.
    async fn pages_asked(op_yaml: &str, script: Vec<Value>) -> (CallOutput, Vec<String>) {
        let script = script
            .into_iter()
            .map(|v| answer(200, &v.to_string()))
            .collect();
        let vendor = Vendor::start(script).await;
        let plan = plan_at(&vendor.url, "", op_yaml);
        let op = &plan.routes[0].targets[0];
        let out = call_with(op, &guard_of(RetryConfig::default(), None))
            .await
            .unwrap();
        (out, vendor.asked())
    }

    #[tokio::test]
    async fn has_more_may_say_true_or_1() {
        use serde_json::json;
        let item = json!([{"id": "a"}]);
        let (out, asked) = pages_asked(
            PAGED,
            vec![
                json!({"code": 0, "more": 1, "list": item}),
                json!({"code": 0, "more": "true", "list": item}),
                json!({"code": 0, "more": 0, "list": item}),
            ],
        )
        .await;
        assert_eq!((out.pages, out.truncated), (3, false), "{asked:?}");
        let (out, _) = pages_asked(PAGED, vec![json!({"code": 0, "list": item})]).await;
        assert_eq!(out.pages, 1, "no `more`: no more");
    }

    #[tokio::test]
    async fn paging_stops_at_the_vendor_s_total_of_pages_counted_from_the_first_page() {
        use serde_json::json;
        let op_yaml = PAGED
            .replace("has_more: $.more", "total_pages: $.pages")
            .replace("style: page_number,", "style: page_number, first_page: 0,");
        let answer = json!({"code": 0, "pages": 2, "list": [{"id": "a"}]});
        let (out, asked) = pages_asked(&op_yaml, vec![answer]).await;
        assert_eq!(asked, ["GET /c?page=0", "GET /c?page=1"]);
        assert_eq!((out.pages, out.truncated), (2, false));
    }

    #[tokio::test]
    async fn cursor_paging_follows_the_cursor_until_it_ends_or_repeats() {
        use serde_json::json;
        let op_yaml = PAGED.replace(
            "query: {page: \"{{page.number}}\"}}\n        paging: {style: page_number, page_size: 2, max_pages: 5, has_more: $.more}",
            "query: {after: \"{{page.cursor}}\"}}\n        paging: {style: cursor, page_size: 2, max_pages: 5, next_cursor: $.next}",
        );
        let item = json!([{"id": "a"}]);
        let (out, asked) = pages_asked(
            &op_yaml,
            vec![
                json!({"code": 0, "next": "c2", "list": item}),
                json!({"code": 0, "next": "c3", "list": item}),
                // the same cursor again: the vendor is not moving on
                json!({"code": 0, "next": "c3", "list": item}),
            ],
        )
        .await;
        assert_eq!(asked, ["GET /c", "GET /c?after=c2", "GET /c?after=c3"]);
        assert_eq!(out.pages, 3);
        // an empty cursor is the last page
        let (out, asked) =
            pages_asked(&op_yaml, vec![json!({"code": 0, "next": "", "list": item})]).await;
        assert_eq!((out.pages, asked.len()), (1, 1));
    }

    #[tokio::test]
    async fn a_404_or_a_not_found_rule_means_no_such_record_and_nothing_else_does() {
        let op_yaml = PAGED.replace(
            "          items: $.list\n",
            "          items: $.list\n          not_found: [{path: $.code, in: [40004]}]\n",
        );
        let vendor = Vendor::start(vec![
            answer(404, ""),
            answer(404, r#"{"msg":"no such coupon"}"#),
            answer(200, r#"{"code":40004}"#),
            answer(500, ""),
            answer(422, r#"{"msg":"bad id"}"#),
            answer(200, r#"{"code":7,"msg":"no"}"#),
        ])
        .await;
        let plan = plan_at(&vendor.url, "", &op_yaml);
        let op = &plan.routes[0].targets[0];
        let (upstream, guard) = (
            Upstream::new(1 << 20),
            guard_of(RetryConfig::default(), None),
        );
        let mut found = Vec::new();
        for _ in 0..6 {
            let e = call(op, &upstream, &input(), &guard).await.unwrap_err();
            found.push((e.is_not_found(), e.to_string()));
        }
        let expect = [
            (true, "HTTP 404"),
            (true, "HTTP 404: no such coupon"),
            (true, "the vendor has no such record"),
            (false, "HTTP 500"),
            (false, "HTTP 422: bad id"),
            (false, "vendor error 7: no"),
        ];
        let expect: Vec<(bool, String)> = expect.iter().map(|(b, s)| (*b, s.to_string())).collect();
        assert_eq!(found, expect);
    }

    /// What the spans of a call recorded after they began (`name=value`, in order): how each
    /// attempt went.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorded {
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Fields<'a>(&'a mut Vec<String>);
            impl tracing::field::Visit for Fields<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push(format!("{}={v:?}", f.name()));
                }
            }
            values.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
    }

    #[tokio::test]
    async fn each_attempt_s_span_says_how_it_went() {
        use tracing_subscriber::layer::SubscriberExt;
        // attempt spans are made for traces only
        crate::telemetry::make_trace_spans();
        let recorded = Recorded::default();
        let _default =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(recorded.clone()));
        let vendor = Vendor::start(vec![answer(400, ""), answer(200, &page(&["a"], false))]).await;
        let plan = plan_at(&vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let (upstream, guard) = (
            Upstream::new(1 << 20),
            guard_of(RetryConfig::default(), None),
        );
        // a 400 is an error of the client span, as HTTP client spans are judged
        let _ = call(op, &upstream, &input(), &guard).await.unwrap_err();
        call(op, &upstream, &input(), &guard).await.unwrap();
        // a vendor that takes the request and never answers: the attempt times out
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plan = plan_at(
            &format!("http://{}", silent.local_addr().unwrap()),
            "",
            PAGED,
        );
        let op = &plan.routes[0].targets[0];
        let patient = RetryConfig {
            attempt_timeout_ms: 50,
            ..RetryConfig::default()
        };
        let e = call(op, &upstream, &input(), &guard_of(patient, None))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CallError::Transport(TransportError::AttemptTimeout(_))),
            "{e:?}"
        );
        assert_eq!(
            *recorded.0.lock().unwrap(),
            [
                "outcome=\"error\"",
                "http.response.status_code=400",
                "otel.status_code=\"ERROR\"",
                "outcome=\"ok\"",
                "http.response.status_code=200",
                "outcome=\"timeout\"",
                "otel.status_code=\"ERROR\"",
            ]
        );
        drop(silent);
    }

    #[tokio::test]
    async fn attempts_running_out_are_not_the_retry_budget_running_out() {
        let plan = plan_named("retrycount", "http://127.0.0.1:9", "", PAGED);
        crate::telemetry::register(&plan);
        let vendor = Vendor::start(vec![answer(503, "")]).await;
        let plan = plan_named("retrycount", &vendor.url, "", PAGED);
        let op = &plan.routes[0].targets[0];
        let e = call_with(op, &guard_of(retries(3), None))
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Status(503)), "{e:?}");
        let metrics = crate::telemetry::render(&crate::telemetry::install_metrics());
        let series = |name: &str| -> Vec<String> {
            metrics
                .lines()
                .filter(|l| l.starts_with(name) && l.contains("\"retrycount\""))
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
                .collect()
        };
        // two retries, and a budget that had room for them: alerts on the budget stay quiet
        assert_eq!(series(crate::telemetry::VENDOR_RETRIES), ["2"], "{metrics}");
        assert_eq!(series(crate::telemetry::VENDOR_BUDGET), ["0"], "{metrics}");
    }

    // ---- what a request is built from: value maps, embedded JSON, default headers

    /// A write in the shape of a template creation: the canonical kind translated by a value
    /// map (in the path and a query parameter), the caller's inputs embedded as JSON.
    const TRANSLATES_INPUTS: &str = "        effect: write
        maps:
          path: {discount: discount, cash: coupon}
          kind: {cash: CASH}
        request:
          method: POST
          path: \"/{{input.kind | map:path}}/ticket\"
          query: {type: \"{{input.kind | map:kind}}\"}
          body:
            ticket_info: \"{{input.card | json}}\"
            sync: \"{{input.sync | json}}\"
            begin_at: \"{{input.begin_at | json}}\"
        response: {items: $.data}
        fields: {id: $.id}
";

    /// The plan of `templates_create` served by one vendor running `operation`.
    fn create_plan(operation: &str) -> Plan {
        let yaml = format!(
            "server: {{listen: \"127.0.0.1:0\"}}\nroutes: {{coupons_query: {{operation: list_coupons}}}}\n\
             vendors:\n  v:\n    base_url: http://127.0.0.1:9\n    operations:\n      create_template:\n{operation}"
        );
        let loaded = crate::config::load_str("test.yaml", &yaml, false).unwrap();
        Plan::compile(&loaded, Credentials::Required).unwrap().0
    }

    /// The request `templates_create` sends for `kind`, `begin_at`, `sync` and `card`.
    async fn create_request(
        plan: &Plan,
        kind: &str,
        begin_at: Value,
        sync: Value,
        card: Value,
    ) -> (http::request::Parts, Value) {
        use http_body_util::BodyExt;
        let op = &plan
            .route(crate::engine::routes::RouteId::TemplatesCreate)
            .targets[0];
        // in the route's input order: kind, begin_at, end_at, sync, card
        let input = CallInput {
            inputs: vec![
                Some(kind.into()),
                Some(begin_at),
                None,
                Some(sync),
                Some(card),
            ],
            ..CallInput::default()
        };
        let req =
            build_request(&op.request, &input, &PageState::first(op), None, &mut None).unwrap();
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_value_map_translates_an_input_and_leaves_out_what_it_does_not_name() {
        let plan = create_plan(TRANSLATES_INPUTS);
        let card = serde_json::json!({"title": "5 off"});
        let (cash, _) =
            create_request(&plan, "cash", Value::Null, false.into(), card.clone()).await;
        assert_eq!(cash.uri.path(), "/coupon/ticket");
        assert_eq!(cash.uri.query(), Some("type=CASH"));
        // `kind` maps `discount` to nothing: the parameter is not sent at all
        let (discount, _) =
            create_request(&plan, "discount", Value::Null, false.into(), card).await;
        assert_eq!(discount.uri.path(), "/discount/ticket");
        assert_eq!(discount.uri.query(), None);
    }

    #[tokio::test]
    async fn json_embeds_an_input_as_the_caller_gave_it_and_leaves_out_a_null() {
        let plan = create_plan(TRANSLATES_INPUTS);
        let card = serde_json::json!({"title": "5 off", "reduce_cost": 500, "tags": ["a"]});
        let (_, body) = create_request(&plan, "cash", Value::Null, true.into(), card.clone()).await;
        // the object and the boolean themselves, not their text; `begin_at` (null) left out
        assert_eq!(body, serde_json::json!({"ticket_info": card, "sync": true}));
        let (_, body) = create_request(
            &plan,
            "cash",
            "2026-01-01".into(),
            false.into(),
            card.clone(),
        )
        .await;
        assert_eq!(
            body,
            serde_json::json!({"ticket_info": card, "sync": false, "begin_at": "2026-01-01"})
        );
    }

    /// The headers `op_yaml`'s request is sent with.
    fn headers_of(op_yaml: &str) -> http::HeaderMap {
        let plan = crate::engine::plan::one_operation(op_yaml).unwrap();
        let op = &plan.routes[0].targets[0];
        let req = build_request(
            &op.request,
            &input(),
            &PageState::first(op),
            None,
            &mut None,
        )
        .unwrap();
        req.headers().clone()
    }

    /// Every value `headers` holds for `name`.
    fn values_of<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn a_body_says_its_format_every_request_says_what_it_reads_unless_routes_yaml_says_otherwise() {
        let op = |request: &str| {
            format!(
                "        identity: [member_id]\n        request: {request}\n        response: {{success: [{{path: $.ok, in: [true]}}], items: $.items}}\n        fields: {{id: $.id, status: {{value: usable}}}}\n"
            )
        };
        // defaults, beside a header of routes.yaml's own
        let post = headers_of(&op(
            "{method: POST, path: /c, headers: {X-Client: gw}, body: {member: \"{{member.id}}\"}}",
        ));
        assert_eq!(values_of(&post, "content-type"), ["application/json"]);
        assert_eq!(values_of(&post, "accept"), ["application/json"]);
        assert_eq!(values_of(&post, "x-client"), ["gw"]);
        // without a body nothing says a format
        let get = headers_of(&op("{method: GET, path: /c, headers: {X-Client: gw}}"));
        assert_eq!(values_of(&get, "content-type"), Vec::<&str>::new());
        assert_eq!(values_of(&get, "accept"), ["application/json"]);
        // routes.yaml's own replace them, once each
        let own = headers_of(&op(
            "{method: POST, path: /c, headers: {Content-Type: application/json; charset=utf-8, Accept: application/vnd.v2+json}, body: {member: \"{{member.id}}\"}}",
        ));
        assert_eq!(
            values_of(&own, "content-type"),
            ["application/json; charset=utf-8"]
        );
        assert_eq!(values_of(&own, "accept"), ["application/vnd.v2+json"]);
    }

    #[test]
    fn an_observed_request_is_signed_and_sent_as_a_served_one() {
        let op_yaml = "        identity: [member_id]
        request: {method: GET, path: /c, query: {member: \"{{member.id}}\"}}
        steps:
          - name: sign
            input: \"{{request.query.sorted_namevalue}}\"
            apply: [md5, hex_lower]
            into: {query: sign}
        response: {success: [{path: $.ok, in: [true]}], items: $.items}
        fields: {id: $.id, status: {value: usable}}
";
        let plan = crate::engine::plan::one_operation(op_yaml).unwrap();
        let op = &plan.routes[0].targets[0];
        let page = PageState::first(op);
        let served = build_request(&op.request, &input(), &page, None, &mut None).unwrap();
        let mut shown = Shown::default();
        let mut obs: Option<&mut dyn Observer> = Some(&mut shown);
        let observed = build_request(&op.request, &input(), &page, None, &mut obs).unwrap();
        // md5("memberm1"): what `explain` shows is what the gateway sends
        let sign = "sign=c22121e8906f62e7cddf6b0db46395a3";
        assert_eq!(served.uri(), observed.uri());
        assert!(
            served.uri().query().unwrap().ends_with(sign),
            "{}",
            served.uri()
        );
        assert_eq!(shown.kinds(), ["Rendered", "Step", "Wire"], "{:?}", shown.0);
    }
}
