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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn answer(p: Problem) -> (StatusCode, http::HeaderMap, Value) {
        let (parts, body) = p.into_response("req-1").into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    /// Callers branch on `type`, so each status keeps its slug; the body is RFC 9457 with the
    /// request id as `instance`, and only overload and rate limits say when to come back.
    #[tokio::test]
    async fn every_status_has_its_stable_type() {
        let cases = [
            (400, "invalid-request"),
            (401, "unauthenticated"),
            (403, "forbidden"),
            (404, "not-found"),
            (405, "method-not-allowed"),
            (409, "conflict"),
            (413, "body-too-large"),
            (415, "unsupported-media-type"),
            (422, "vendor-validation"),
            (429, "rate-limited"),
            (431, "headers-too-large"),
            (502, "vendors-failed"),
            (503, "overloaded"),
            (504, "timeout"),
            (500, "internal"),
            (501, "internal"),
            (408, "error"),
            (418, "error"),
        ];
        for (code, slug) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            let (got, headers, body) = answer(Problem::new(status, "why")).await;
            assert_eq!(got, status);
            assert_eq!(headers[header::CONTENT_TYPE], CONTENT_TYPE);
            assert_eq!(body["type"], format!("urn:coupon-gateway:problem:{slug}"));
            assert!(!body["title"].as_str().unwrap().is_empty());
            assert_eq!(body["status"], code);
            assert_eq!(body["detail"], "why");
            assert_eq!(body["instance"], "req-1");
            let retry = headers
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap());
            let waits = code == 429 || code == 503;
            assert_eq!(retry, waits.then_some("1"), "{code}");
        }
        let (_, _, body) = answer(Problem::new(StatusCode::BAD_REQUEST, "x")).await;
        assert_eq!(body["title"], "The request is not valid");
    }

    #[tokio::test]
    async fn extensions_sit_beside_the_standard_members() {
        let p = Problem::new(StatusCode::BAD_GATEWAY, "all failed")
            .with("sources", serde_json::json!([{"vendor": "a"}]));
        let (_, _, body) = answer(p).await;
        assert_eq!(body["sources"], serde_json::json!([{"vendor": "a"}]));
        assert_eq!(body["type"], "urn:coupon-gateway:problem:vendors-failed");
    }

    #[test]
    fn bare_statuses_get_a_detail_of_their_own() {
        let detail = |code: u16| for_bare_status(StatusCode::from_u16(code).unwrap()).detail;
        assert_eq!(detail(408), "the request was not received in time");
        assert_eq!(
            detail(413),
            "the request body is larger than the gateway accepts"
        );
        assert_eq!(
            detail(431),
            "the request headers are larger than the gateway accepts"
        );
        assert_eq!(detail(503), "too many requests in progress");
        assert_eq!(
            detail(504),
            "the request took longer than the gateway allows"
        );
        assert!(detail(500).contains("the request id identifies it"));
        assert_eq!(detail(418), "the request failed");
        assert_eq!(
            for_bare_status(StatusCode::IM_A_TEAPOT).status,
            StatusCode::IM_A_TEAPOT
        );
    }
}
