//! Callers over loopback: API keys from routes.yaml (hashes only), 401 without or with a
//! wrong key, 403 outside a caller's routes or vendors, 429 with Retry-After and RateLimit
//! headers over its rate; without `callers:` everyone is served.
mod support;

use bytes::Bytes;
use coupon_gateway::config::load_str;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::http::auth::{Callers, key_hash};
use coupon_gateway::sandbox::{Sandbox, data};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const ORDERS_KEY: &str = "orders-key-5f1c2e0a9b7d";
const ADMIN_KEY: &str = "admin-key-0c4a81e6d2f3";
const READER_KEY: &str = "reader-key-77b1d09e5c2a";

fn callers_yaml() -> String {
    format!(
        "\ncallers:\n  clients:\n    orders:\n      keys: [\"{}\"]\n      routes: [coupons_query, package_get]\n      vendors: [op, zvcms]\n      rate: {{rps: 1, burst: 3}}\n    admin:\n      keys: [\"{}\"]\n    reader:\n      keys: [\"{}\"]\n      routes: [templates_list]\n      vendors: [op]\n",
        key_hash(ORDERS_KEY),
        key_hash(ADMIN_KEY),
        key_hash(READER_KEY)
    )
}

async fn setup(with_callers: bool) -> (Sandbox, embedded::Running) {
    let sb = Sandbox::start().await.unwrap();
    let yaml = if with_callers {
        format!("{ROUTES_YAML}{}", callers_yaml())
    } else {
        ROUTES_YAML.to_owned()
    };
    let plan = embedded::sandbox_plan("routes.yaml", &yaml, &sb, false).unwrap();
    let loaded = load_str("routes.yaml", &yaml, false).unwrap();
    let callers = Callers::from_config(&loaded.config).unwrap();
    assert_eq!(callers.is_some(), with_callers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = embedded::start(plan, listener);
    gw.state.set_callers(callers);
    (sb, gw)
}

async fn call(
    gw: &embedded::Running,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> support::Answer {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    support::send(req.body(Full::new(body)).unwrap()).await
}

fn assert_problem(a: &support::Answer, status: u16, want: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(
        a.body["instance"].as_str().unwrap(),
        a.headers["x-request-id"].to_str().unwrap()
    );
    let detail = a.body["detail"].as_str().unwrap();
    assert!(detail.contains(want), "{detail}");
    assert!(
        !a.raw
            .windows(9)
            .any(|w| w == b"orders-ke" || w == b"admin-key"),
        "no key echoed"
    );
}

fn query(ids: Value) -> Value {
    json!({"member": {"ids": ids}})
}

#[tokio::test]
async fn unauthenticated_and_unknown_callers_get_401() {
    let (_sb, gw) = setup(true).await;
    let body = query(json!({"op": data::OP_MEMBER}));
    let a = call(&gw, None, "POST", "/v1/coupons/query", Some(body.clone())).await;
    assert_problem(&a, 401, "Authorization: Bearer");
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    let a = call(
        &gw,
        Some("orders-key-guess"),
        "POST",
        "/v1/coupons/query",
        Some(body.clone()),
    )
    .await;
    assert_problem(&a, 401, "not one this gateway knows");
    // probes and the contract stay open
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(
            call(&gw, None, "GET", path, None).await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(
        call(&gw, None, "GET", "/v1/vendors", None).await.status,
        401
    );
    let a = call(
        &gw,
        Some(ORDERS_KEY),
        "POST",
        "/v1/coupons/query",
        Some(body),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn callers_are_held_to_their_routes_and_vendors() {
    let (_sb, gw) = setup(true).await;
    let a = call(
        &gw,
        Some(ORDERS_KEY),
        "GET",
        "/v1/templates?vendor=wxcard",
        None,
    )
    .await;
    assert_problem(&a, 403, "caller `orders` may not use templates_list");
    let a = call(
        &gw,
        Some(ORDERS_KEY),
        "POST",
        "/v1/coupons/query",
        Some(query(json!({"hkl": data::HKL_MEMBER}))),
    )
    .await;
    assert_problem(&a, 403, "may not ask vendor `hkl`");
    // without a vendors filter, only the caller's vendors are considered
    let a = call(
        &gw,
        Some(ORDERS_KEY),
        "POST",
        "/v1/coupons/query",
        Some(json!({"member": {"ids": {"op": data::OP_MEMBER}, "openid": data::HKL_OPENID}})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let vendors: Vec<&str> = a.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["vendor"].as_str().unwrap())
        .collect();
    assert_eq!(vendors, ["op", "zvcms"]);
    // a vendor named however the route reads it, or implied by its absence, is checked
    for path in [
        "/v1/templates?vendor=wxcard",
        "/v1/templates?%76endor=wxcard",
        "/v1/templates",
    ] {
        let a = call(&gw, Some(READER_KEY), "GET", path, None).await;
        assert_problem(&a, 403, "may not reach vendor `wxcard`");
    }
    // the admin caller has every route and vendor
    let a = call(
        &gw,
        Some(ADMIN_KEY),
        "GET",
        "/v1/templates?vendor=wxcard",
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // /v1/config is a route like the others: a caller, and one that has it
    let a = call(&gw, None, "GET", "/v1/config", None).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = call(&gw, Some(ORDERS_KEY), "GET", "/v1/config", None).await;
    assert_problem(&a, 403, "caller `orders` may not use config");
    let a = call(&gw, Some(ADMIN_KEY), "GET", "/v1/config", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["vendors"].is_array(), "{}", a.body);
}

#[tokio::test]
async fn over_its_rate_a_caller_gets_429_with_retry_after_and_ratelimit_headers() {
    let (_sb, gw) = setup(true).await;
    let path = format!("/v1/packages/op/{}", data::OP_PACKAGE);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let a = call(&gw, Some(ORDERS_KEY), "GET", &path, None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.headers["ratelimit-limit"], "3");
        remaining.push(
            a.headers["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let a = call(&gw, Some(ORDERS_KEY), "GET", &path, None).await;
    assert_problem(&a, 429, "caller `orders` is over its rate");
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(a.headers["ratelimit-remaining"], "0");
    assert!(a.headers.contains_key("ratelimit-reset"));
    // the rate is per route: the query route still has its own burst
    let a = call(
        &gw,
        Some(ORDERS_KEY),
        "POST",
        "/v1/coupons/query",
        Some(query(json!({"op": data::OP_MEMBER}))),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // and per caller: admin is unlimited
    assert_eq!(
        call(&gw, Some(ADMIN_KEY), "GET", &path, None).await.status,
        200
    );
    let metrics = call(&gw, Some(ADMIN_KEY), "GET", "/metrics", None).await;
    let text = String::from_utf8_lossy(&metrics.raw);
    assert!(
        text.contains(
            "cgw_caller_requests_total{caller=\"orders\",route=\"package_get\",status=\"429\"}"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_callers_section_everyone_is_served() {
    let (_sb, gw) = setup(false).await;
    let a = call(
        &gw,
        None,
        "POST",
        "/v1/coupons/query",
        Some(query(json!({"op": data::OP_MEMBER}))),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.headers.contains_key("ratelimit-limit"));
}
