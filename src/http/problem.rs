//! RFC 9457 problem details: the one shape of every non-2xx answer.
//!
//! Each kind has a stable `type`; `instance` is the request id (also the `x-request-id`
//! header). Details are written by the gateway, never copied from credentials or raw bodies.
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Map, Value, json};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    /// Extension members (e.g. `sources` on 502/504).
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Problem {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let (slug, title) = kind(self.status);
        let mut body = json!({
            "type": format!("urn:coupon-gateway:problem:{slug}"),
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "instance": request_id,
        });
        if let Value::Object(m) = &mut body {
            m.extend(self.extra);
            // the trace of this request, when traces are exported: a caller's report leads
            // straight to it
            if let Some(t) = crate::telemetry::trace_id() {
                m.insert("trace_id".to_owned(), Value::String(t));
            }
        }
        let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
        *res.status_mut() = self.status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// Stable type slug and title per status.
fn kind(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("invalid-request", "The request is not valid"),
        401 => ("unauthenticated", "The caller is not authenticated"),
        403 => ("forbidden", "The caller may not do this"),
        404 => ("not-found", "Nothing is here"),
        405 => ("method-not-allowed", "This path does not take that method"),
        409 => ("conflict", "The request conflicts with an earlier one"),
        413 => ("body-too-large", "The request body is too large"),
        415 => ("unsupported-media-type", "The request body must be JSON"),
        422 => ("vendor-validation", "The vendor refused the input"),
        429 => ("rate-limited", "The caller is over its rate"),
        431 => ("headers-too-large", "The request headers are too large"),
        502 => ("vendors-failed", "No vendor answered"),
        503 => ("overloaded", "The gateway is overloaded; retry shortly"),
        504 => ("timeout", "No answer in time"),
        s if s >= 500 => ("internal", "The gateway failed to answer"),
        _ => ("error", "The request failed"),
    }
}

/// The problem an outer layer means by a bare status (timeout, body limit, panic, shedding).
pub fn for_bare_status(status: StatusCode) -> Problem {
    let detail = match status.as_u16() {
        408 => "the request was not received in time",
        413 => "the request body is larger than the gateway accepts",
        431 => "the request headers are larger than the gateway accepts",
        503 => "too many requests in progress",
        504 => "the request took longer than the gateway allows",
        500 => "the gateway failed unexpectedly; the request id identifies it in the logs",
        _ => "the request failed",
    };
    Problem::new(status, detail)
}
