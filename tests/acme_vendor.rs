//! A vendor of another family, onboarded with YAML alone (tests/fixtures/acme.yaml): GET,
//! HMAC-SHA256 header signature over method/path/sorted query, yuan strings, paging.
mod support;

use coupon_gateway::config::load_str;
use coupon_gateway::embedded;
use coupon_gateway::engine::plan::{Credentials, Plan};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

const ACME_YAML: &str = include_str!("fixtures/acme.yaml");

async fn gateway(acme: &support::acme::Acme, secret: &str, max_pages: u32) -> embedded::Running {
    let text = ACME_YAML
        .replace("ACME_BASE_URL", &acme.base_url())
        .replace("MAX_PAGES", &max_pages.to_string());
    let mut loaded = load_str("acme.yaml", &text, false).unwrap();
    let creds = &mut loaded.config.vendors.get_mut("acme").unwrap().credentials;
    creds.insert("app_key".into(), Some(support::acme::APP_KEY.into()));
    creds.insert("secret".into(), Some(secret.into()));
    let (plan, _) = Plan::compile(&loaded, Credentials::Required).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    embedded::start(plan, listener)
}

fn query() -> Value {
    json!({"member": {"ids": {"acme": support::acme::MEMBER}}})
}

#[tokio::test]
async fn a_yaml_only_vendor_is_signed_paged_and_mapped() {
    let acme = support::acme::start().await;
    let gw = gateway(&acme, support::acme::SECRET, 10).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // five coupons on three pages of two, every request signed correctly
    assert_eq!(acme.requests.load(Ordering::SeqCst), 3);
    assert_eq!(acme.rejected.load(Ordering::SeqCst), 0);
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "ok");
    assert_eq!(src["count"], 5);
    assert!(src.get("truncated").is_none());

    let by_id = |id: &str| -> Value {
        a.body["coupons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {}", a.body))
    };
    let a1 = by_id("acme:A1");
    assert_eq!(a1["amount_off"], 1250, "yuan 12.50 is exactly 1250 fen");
    assert_eq!(a1["min_order"], 10000);
    assert_eq!(a1["kind"], "cash");
    assert_eq!(a1["status"], "usable");
    assert_eq!(a1["product_kinds"], json!(["food", "drinks"]));
    assert!(a1["valid_until"].as_str().unwrap().ends_with("+08:00"));
    let a2 = by_id("acme:A2");
    assert_eq!(a2["kind"], "discount");
    assert_eq!(a2["percent_off"], 15.0);
    assert_eq!(a2["amount_off"], Value::Null);
    assert_eq!(by_id("acme:A3")["status"], "used");
    assert_eq!(by_id("acme:A4")["status"], "expired");
    assert_eq!(by_id("acme:A4")["amount_off"], 1);
    let a5 = by_id("acme:A5");
    assert_eq!(a5["status"], "pending", "starts in five days");
    assert_eq!(a5["amount_off"], 1999);
    // usable first (by end date), then pending, then the rest
    let order: Vec<&str> = a.body["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["acme:A1", "acme:A2", "acme:A5", "acme:A4", "acme:A3"]
    );
    gw.stop().await;
}

#[tokio::test]
async fn paging_stops_at_max_pages_and_says_so() {
    let acme = support::acme::start().await;
    let gw = gateway(&acme, support::acme::SECRET, 2).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 200);
    assert_eq!(acme.requests.load(Ordering::SeqCst), 2);
    assert_eq!(a.body["sources"][0]["count"], 4);
    assert_eq!(a.body["sources"][0]["truncated"], true);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_vendor_and_reported() {
    let acme = support::acme::start().await;
    let gw = gateway(&acme, "not-the-secret", 10).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(acme.rejected.load(Ordering::SeqCst), 1);
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "error");
    assert_eq!(
        src["error"], "HTTP 401: signature mismatch",
        "the vendor's own message comes along"
    );
    // the gateway's configured credentials (a wrong secret here, and the app key)
    for secret in ["not-the-secret", support::acme::APP_KEY] {
        assert!(
            !String::from_utf8_lossy(&a.raw).contains(secret),
            "no credential in the body"
        );
    }
    assert_eq!(a.headers["content-type"], "application/problem+json");
}
