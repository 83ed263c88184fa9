//! A strict simulator of the test vendor "acme" (tests/fixtures/acme.yaml): it checks the
//! app key, the timestamp and the HMAC-SHA256 signature of every request before answering a
//! page of coupons with amounts as yuan strings.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use coupon_gateway::crypto;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

pub const APP_KEY: &str = "acme-key";
pub const SECRET: &str = "acme-secret";
pub const MEMBER: &str = "m/1 é"; // needs percent-encoding in the path

pub struct Acme {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub rejected: Arc<AtomicU64>,
}

impl Acme {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The coupons of `MEMBER`, valid around `now` (RFC 3339 in UTC+08:00).
pub fn coupons() -> Vec<Value> {
    let day = |offset: i64| {
        let t = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * offset);
        coupon_gateway::engine::time::canonical(t)
    };
    vec![
        json!({"coupon_no": "A1", "title": "满100减12.5", "type": "CASH", "face_value": "12.50", "threshold": "100.00",
               "state": "ACTIVE", "starts": day(-10), "ends": day(10), "tags": ["food", "drinks"]}),
        json!({"coupon_no": "A2", "title": "85折", "type": "PERCENT", "pay_rate": "0.85",
               "state": "ACTIVE", "starts": day(-10), "ends": day(20), "tags": []}),
        json!({"coupon_no": "A3", "title": "used", "type": "CASH", "face_value": "5",
               "state": "USED", "starts": day(-30), "ends": day(30)}),
        json!({"coupon_no": "A4", "title": "old", "type": "CASH", "face_value": "0.01",
               "state": "EXPIRED", "starts": day(-60), "ends": day(-30)}),
        json!({"coupon_no": "A5", "title": "soon", "type": "CASH", "face_value": "19.99", "threshold": "0",
               "state": "ACTIVE", "starts": day(5), "ends": day(40)}),
    ]
}

pub async fn start() -> Acme {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let (req_count, rej_count) = (requests.clone(), rejected.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (req_count, rej_count) = (req_count.clone(), rej_count.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    req_count.fetch_add(1, Ordering::SeqCst);
                    let res = answer(&req);
                    if res.status() != StatusCode::OK {
                        rej_count.fetch_add(1, Ordering::SeqCst);
                    }
                    async move { Ok::<_, Infallible>(res) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    Acme {
        addr,
        requests,
        rejected,
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    res
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"ok": false, "error": {"code": code, "message": message}}),
    )
}

fn answer<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let raw_path = req.uri().path();
    let want_path = format!("/api/v2/members/{}/coupons", crypto::percent_encode(MEMBER));
    if req.method() != http::Method::GET || raw_path != want_path {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource");
    }
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((crypto::percent_decode(k)?, crypto::percent_decode(v)?))
        })
        .collect();
    if query.get("app_key").map(String::as_str) != Some(APP_KEY) {
        return error(StatusCode::UNAUTHORIZED, "APP_KEY", "unknown app key");
    }
    let now = jiff::Timestamp::now().as_second();
    let fresh = query
        .get("ts")
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| (now - t).abs() <= 300);
    if !fresh {
        return error(StatusCode::UNAUTHORIZED, "TIMESTAMP", "stale timestamp");
    }
    let canonical_query = query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crypto::percent_encode(k),
                crypto::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let signed = format!("GET\n{raw_path}\n{canonical_query}");
    let sig = req
        .headers()
        .get("x-acme-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default();
    if !crypto::hmac_sha256_verify(SECRET.as_bytes(), signed.as_bytes(), &sig) {
        return error(StatusCode::UNAUTHORIZED, "SIGNATURE", "signature mismatch");
    }
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let size: usize = query
        .get("page_size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if page == 0 || size == 0 || size > 50 {
        return error(
            StatusCode::BAD_REQUEST,
            "PAGING",
            "page and page_size are required",
        );
    }
    let all = coupons();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    let has_more = page * size < all.len();
    reply(
        StatusCode::OK,
        json!({"ok": true, "result": {"items": items, "has_more": has_more, "total": all.len()}}),
    )
}
