//! A strict simulator of a platform that speaks UTC (tests/fixtures/utcplatform.yaml): a JSON
//! POST with `X-Timestamp: 2026-11-25T12:00:00Z` (ISO 8601 in UTC, seconds, `Z`) and
//! `X-Signature` = lower-case hex HMAC-SHA256 of `timestamp + "\n" + body`; cursor paging by
//! `next_token` (each token good for one request, unknown tokens refused); dates in the answer
//! as epoch milliseconds, amounts as yuan decimal strings, weekdays and hours as JSON lists.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use coupon_gateway::crypto;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

pub const API_KEY: &str = "utc-api-key-7d1e";
pub const SECRET: &str = "utc-test-secret-00c4a9";
pub const MEMBER: &str = "u-42";
pub const PAGE_SIZE: usize = 3;

#[derive(Default)]
pub struct State {
    /// Requests, refusals and one-time values seen.
    pub ledger: super::Ledger,
    /// The `next_token` each request carried (None on the first page).
    pub tokens_seen: Mutex<Vec<Option<String>>>,
    /// Tokens handed out and not used yet → the offset they continue from.
    open_tokens: Mutex<HashMap<String, usize>>,
    issued: AtomicU64,
}

pub struct UtcPlatform {
    pub addr: std::net::SocketAddr,
    pub state: Arc<State>,
}

impl UtcPlatform {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn requests(&self) -> u64 {
        self.state.ledger.requests()
    }
    pub fn rejected(&self) -> u64 {
        self.state.ledger.rejected()
    }
    pub fn last_refusal(&self) -> Option<String> {
        self.state.ledger.last_refusal()
    }
}

/// The member's seven coupons (pages of three: 3, 3, 1).
pub fn coupons() -> Vec<Value> {
    vec![
        json!({"coupon_id": "U1", "title": "Lunch 12.50 off", "type": "AMOUNT", "amount": "12.50", "min_spend": "100.00",
               "state": "AVAILABLE", "start_at": 1767196800000u64, "end_at": 1924963199000u64,
               "weekdays": [1, 2, 3, 4, 5], "hours": ["11:00-14:00", "17:00-21:00"]}),
        json!({"coupon_id": "U2", "title": "15% off", "type": "PERCENTAGE", "percent_off": "15.5",
               "state": "AVAILABLE", "start_at": 1769907600000u64, "end_at": 1927641599000u64,
               "weekdays": [6, 7], "hours": ["09:30-11:30"]}),
        json!({"coupon_id": "U3", "title": "5 off", "type": "AMOUNT", "amount": "5", "min_spend": "0",
               "state": "REDEEMED", "start_at": 1740758400000u64, "end_at": 1898524800000u64,
               "weekdays": [], "hours": []}),
        json!({"coupon_id": "U4", "title": "old", "type": "AMOUNT", "amount": "0.99",
               "state": "EXPIRED", "start_at": 1704038400000u64, "end_at": 1719763199000u64}),
        json!({"coupon_id": "U5", "title": "on hold", "type": "AMOUNT", "amount": "30.00",
               "state": "LOCKED", "start_at": 1777608000000u64, "end_at": 1903838400000u64}),
        json!({"coupon_id": "U6", "title": "weekend 8.80", "type": "AMOUNT", "amount": "8.80", "min_spend": "50.5",
               "state": "AVAILABLE", "start_at": 1767196800000u64, "end_at": 1898524800000u64,
               "weekdays": [7, 6], "hours": ["10:00-22:00"]}),
        json!({"coupon_id": "U7", "title": "next year", "type": "AMOUNT", "amount": "100.00",
               "state": "AVAILABLE", "start_at": 1798732800000u64, "end_at": 1956499199000u64}),
    ]
}

pub async fn start() -> UtcPlatform {
    let state = Arc::new(State::default());
    let s = state.clone();
    let addr = super::serve(Arc::new(move |parts, body| {
        s.ledger.arrived();
        let (status, body) = match answer(&s, &parts, &body) {
            Ok(v) => (StatusCode::OK, v),
            Err((status, code, message, why)) => {
                s.ledger.refused(why);
                (status, json!({"error": {"code": code, "message": message}}))
            }
        };
        let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
        *res.status_mut() = status;
        res.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        res
    }))
    .await;
    UtcPlatform { addr, state }
}

type Refusal = (StatusCode, &'static str, &'static str, String);

fn unauthorized(code: &'static str, message: &'static str, why: String) -> Refusal {
    (StatusCode::UNAUTHORIZED, code, message, why)
}

fn bad(message: &'static str, why: String) -> Refusal {
    (StatusCode::BAD_REQUEST, "INVALID_REQUEST", message, why)
}

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> &'a str {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn answer(state: &State, parts: &http::request::Parts, body: &[u8]) -> Result<Value, Refusal> {
    if parts.method != http::Method::POST
        || parts.uri.path() != "/v2/members/coupons/search"
        || parts.uri.query().is_some()
    {
        return Err((
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such resource",
            format!("{} {}", parts.method, parts.uri),
        ));
    }
    if header(parts, "content-type") != "application/json" {
        return Err(bad(
            "content type must be application/json",
            "content type".into(),
        ));
    }
    if header(parts, "x-api-key") != API_KEY {
        return Err(unauthorized("API_KEY", "unknown api key", "api key".into()));
    }
    // ISO 8601 in UTC to the second, with `Z`: 2026-11-25T12:00:00Z
    let ts = header(parts, "x-timestamp");
    let shape_ok = ts.len() == 20
        && ts.ends_with('Z')
        && ts.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let when: Option<jiff::Timestamp> = ts.parse().ok();
    let Some(when) = when.filter(|_| shape_ok) else {
        return Err(unauthorized(
            "TIMESTAMP",
            "X-Timestamp must be ISO 8601 UTC",
            format!("timestamp {ts}"),
        ));
    };
    let skew = (jiff::Timestamp::now().as_second() - when.as_second()).abs();
    if skew > 300 {
        return Err(unauthorized(
            "TIMESTAMP",
            "stale timestamp",
            format!("skew {skew}"),
        ));
    }
    let mut signed = Vec::from(format!("{ts}\n").as_bytes());
    signed.extend_from_slice(body);
    let sig_text = header(parts, "x-signature");
    let sig = hex::decode(sig_text).unwrap_or_default();
    if sig_text.bytes().any(|b| b.is_ascii_uppercase())
        || !crypto::hmac_sha256_verify(SECRET.as_bytes(), &signed, &sig)
    {
        return Err(unauthorized(
            "SIGNATURE_MISMATCH",
            "signature does not match",
            format!("signed {}", String::from_utf8_lossy(&signed)),
        ));
    }
    if !state.ledger.first_use(sig_text) {
        return Err(unauthorized("REPLAY", "request replayed", "replay".into()));
    }
    let req: Value =
        serde_json::from_slice(body).map_err(|_| bad("body is not JSON", "body".into()))?;
    let Some(obj) = req.as_object() else {
        return Err(bad("body is not an object", "body".into()));
    };
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let token = obj
        .get("next_token")
        .map(|t| t.as_str().unwrap_or("").to_owned());
    let want: &[&str] = if token.is_some() {
        &["member_id", "next_token", "page_size"]
    } else {
        &["member_id", "page_size"]
    };
    if keys != want {
        return Err(bad(
            "unknown or missing members",
            format!("members {keys:?}"),
        ));
    }
    let Some(size) = obj["page_size"].as_u64().filter(|s| (1..=50).contains(s)) else {
        return Err(bad(
            "page_size is a number from 1 to 50",
            "page_size".into(),
        ));
    };
    let Some(member) = obj["member_id"].as_str() else {
        return Err(bad("member_id is a string", "member_id".into()));
    };
    state.tokens_seen.lock().unwrap().push(token.clone());
    let offset = match &token {
        None => 0,
        Some(t) => match state.open_tokens.lock().unwrap().remove(t) {
            Some(offset) => offset,
            None => {
                return Err(bad(
                    "next_token is unknown or was used already",
                    format!("token {t}"),
                ));
            }
        },
    };
    let all = if member == MEMBER {
        coupons()
    } else {
        Vec::new()
    };
    let size = size as usize;
    let items: Vec<Value> = all.iter().skip(offset).take(size).cloned().collect();
    let next = offset + size;
    let next_token = if next < all.len() {
        let n = state.issued.fetch_add(1, Ordering::SeqCst);
        let t = crypto::base64url(&crypto::sha256(format!("{SECRET}/{n}/{next}").as_bytes()));
        state.open_tokens.lock().unwrap().insert(t.clone(), next);
        Value::String(t)
    } else {
        Value::Null
    };
    Ok(json!({"items": items, "next_token": next_token}))
}
