//! A strict simulator of a TOP-style open platform (tests/fixtures/topstyle.yaml): one gateway
//! URL, a form POST naming the API in `method`, `timestamp` as `yyyy-MM-dd HH:mm:ss` in
//! UTC+08:00, and `sign` = upper-case hex MD5 of `secret + k1v1k2v2… + secret` over every
//! parameter but `sign`, sorted by name. Answers are JSON wrapped in a per-method member
//! (`coupon_list_get_response`), errors in `error_response`, amounts as yuan strings.
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use coupon_gateway::crypto;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

pub const APP_KEY: &str = "12345678";
pub const SECRET: &str = "top-test-secret-5f2c";
pub const MEMBER: &str = "tb buyer/1"; // a space and a slash: form encoding is checked
pub const METHOD: &str = "coupon.list.get";
pub const PAGE_SIZE: usize = 2;

/// Exactly the parameters a request must carry, no more, no fewer.
const PARAMS: [&str; 10] = [
    "app_key",
    "buyer_id",
    "format",
    "method",
    "page_no",
    "page_size",
    "sign",
    "sign_method",
    "timestamp",
    "v",
];

#[derive(Default)]
pub struct State {
    /// Requests, refusals and one-time values seen.
    pub ledger: super::Ledger,
}

pub struct TopStyle {
    pub addr: std::net::SocketAddr,
    pub state: Arc<State>,
}

impl TopStyle {
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

/// The member's coupons, as the platform lists them (three: two pages of two).
pub fn coupons() -> Vec<Value> {
    vec![
        json!({"coupon_id": 9001, "coupon_code": "TC9001", "title": "满100减12.5", "type": "cash",
               "denomination": "12.50", "start_fee": "100.00", "status": "1",
               "start_time": "2026-01-01 00:00:00", "end_time": "2030-12-31 23:59:59",
               "use_week": "1,2,3,4,5", "use_time": "11:00-14:00,17:00-21:00"}),
        json!({"coupon_id": 9002, "coupon_code": "TC9002", "title": "8.5折", "type": "discount",
               "discount": "8.5", "start_fee": "0.00", "status": "1",
               "start_time": "2026-02-01 10:00:00", "end_time": "2031-01-31 22:00:00"}),
        json!({"coupon_id": 9003, "coupon_code": "TC9003", "title": "5元券", "type": "cash",
               "denomination": "5.00", "status": "2",
               "start_time": "2025-06-01 00:00:00", "end_time": "2030-06-30 23:59:59"}),
    ]
}

pub async fn start() -> TopStyle {
    let state = Arc::new(State::default());
    let s = state.clone();
    let addr = super::serve(Arc::new(move |parts, body| {
        s.ledger.arrived();
        match answer(&s, &parts, &body) {
            Ok(v) => reply(v),
            Err((code, msg, why)) => {
                s.ledger.refused(why);
                // TOP answers its errors with HTTP 200 and an `error_response`
                reply(json!({"error_response": {"code": code, "msg": msg, "request_id": "tst1"}}))
            }
        }
    }))
    .await;
    TopStyle { addr, state }
}

fn reply(body: Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        "content-type",
        "application/json;charset=UTF-8".parse().unwrap(),
    );
    res
}

type Refusal = (u32, &'static str, String);

fn refuse(code: u32, msg: &'static str, why: impl Into<String>) -> Refusal {
    (code, msg, why.into())
}

fn answer(state: &State, parts: &http::request::Parts, body: &[u8]) -> Result<Value, Refusal> {
    if parts.method != http::Method::POST || parts.uri.path() != "/router/rest" {
        return Err(refuse(22, "Invalid Method", "not POST /router/rest"));
    }
    if parts.uri.query().is_some() {
        return Err(refuse(41, "Invalid Arguments", "a query string"));
    }
    let ct = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/x-www-form-urlencoded" {
        return Err(refuse(
            41,
            "Invalid Arguments",
            format!("content type {ct}"),
        ));
    }
    let raw =
        std::str::from_utf8(body).map_err(|_| refuse(41, "Invalid Arguments", "not UTF-8"))?;
    // encoding: the body must be exactly what a form serializer writes for its own pairs
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let reencoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    if reencoded != raw {
        return Err(refuse(
            41,
            "Invalid Arguments",
            format!("body not form-encoded: {raw}"),
        ));
    }
    let params: BTreeMap<String, String> = pairs.iter().cloned().collect();
    if params.len() != pairs.len() {
        return Err(refuse(41, "Invalid Arguments", "a parameter twice"));
    }
    let names: Vec<&str> = params.keys().map(String::as_str).collect();
    if names != PARAMS {
        return Err(refuse(
            41,
            "Invalid Arguments",
            format!("parameters {names:?}"),
        ));
    }
    let p = |k: &str| params[k].as_str();
    if p("method") != METHOD {
        return Err(refuse(22, "Invalid Method", p("method").to_owned()));
    }
    if p("v") != "2.0" || p("format") != "json" || p("sign_method") != "md5" {
        return Err(refuse(41, "Invalid Arguments", "v, format or sign_method"));
    }
    if p("app_key") != APP_KEY {
        return Err(refuse(29, "Invalid App Key", "app key"));
    }
    // yyyy-MM-dd HH:mm:ss in UTC+08:00, at most 5 minutes off
    let ts = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", p("timestamp"))
        .ok()
        .and_then(|d| {
            d.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
                .ok()
        })
        .ok_or_else(|| {
            refuse(
                31,
                "Invalid Timestamp",
                format!("timestamp {}", p("timestamp")),
            )
        })?;
    let skew = (jiff::Timestamp::now().as_second() - ts.timestamp().as_second()).abs();
    if skew > 300 {
        return Err(refuse(31, "Invalid Timestamp", format!("skew {skew} s")));
    }
    let mut signed = String::from(SECRET);
    for (k, v) in params.iter().filter(|(k, _)| *k != "sign") {
        signed.push_str(k);
        signed.push_str(v);
    }
    signed.push_str(SECRET);
    let want = crypto::hex_upper(&crypto::md5(signed.as_bytes()));
    if !crypto::constant_time_eq(want.as_bytes(), p("sign").as_bytes()) {
        return Err(refuse(25, "Invalid signature", format!("signed {signed}")));
    }
    if !state.ledger.first_use(p("sign")) {
        return Err(refuse(25, "Invalid signature", "replayed request"));
    }
    if p("buyer_id") != MEMBER {
        return Ok(
            json!({"coupon_list_get_response": {"coupons": {"coupon": []}, "total_results": 0}}),
        );
    }
    let page: usize = p("page_no").parse().unwrap_or(0);
    let size: usize = p("page_size").parse().unwrap_or(0);
    if page == 0 || size == 0 || size > 100 {
        return Err(refuse(41, "Invalid Arguments", "page_no / page_size"));
    }
    let all = coupons();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    Ok(
        json!({"coupon_list_get_response": {"coupons": {"coupon": items}, "total_results": all.len()}}),
    )
}
