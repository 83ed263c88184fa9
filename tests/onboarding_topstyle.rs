//! Onboarding proof: a TOP-style platform written in YAML alone (tests/fixtures/topstyle.yaml)
//! against a strict simulator (tests/support/topstyle.rs), end to end through
//! `POST /v1/coupons/query`.
mod support;

use coupon_gateway::embedded;
use serde_json::{Value, json};
use support::topstyle;

const YAML: &str = include_str!("fixtures/topstyle.yaml");

async fn gateway(vendor: &topstyle::TopStyle, secret: &str) -> embedded::Running {
    let text = YAML.replace("TOPSTYLE_BASE_URL", &vendor.base_url());
    let creds = [("app_key", topstyle::APP_KEY), ("secret", secret)];
    support::start_fixture("topstyle.yaml", &text, "topstyle", &creds).await
}

fn query() -> Value {
    json!({"member": {"ids": {"topstyle": topstyle::MEMBER}}})
}

/// The canonical fields these tests pin.
const PINNED: &[&str] = &[
    "id",
    "code",
    "name",
    "kind",
    "amount_off",
    "percent_off",
    "min_order",
    "status",
    "valid_from",
    "valid_until",
    "usable_weekdays",
    "usable_hours",
    "vendor_status",
];

fn pinned(c: &Value) -> Value {
    support::pinned(c, PINNED)
}

#[tokio::test]
async fn a_top_style_platform_is_signed_paged_and_mapped() {
    let vendor = topstyle::start().await;
    let gw = gateway(&vendor, topstyle::SECRET).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(
        a.status,
        200,
        "{} / refused: {:?}",
        a.body,
        vendor.last_refusal()
    );
    assert_eq!(vendor.rejected(), 0, "{:?}", vendor.last_refusal());
    assert_eq!(vendor.requests(), 2, "three coupons on pages of two");
    let src = &a.body["sources"][0];
    assert_eq!(src["vendor"], "topstyle");
    assert_eq!(src["outcome"], "ok", "{src}");
    assert_eq!(src["count"], 3);
    assert_eq!(src["dropped"].as_u64().unwrap_or(0), 0, "{src}");
    let coupons: Vec<Value> = a.body["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .map(pinned)
        .collect();
    assert_eq!(
        coupons,
        vec![
            json!({"id": "topstyle:9001", "code": "TC9001", "name": "满100减12.5", "kind": "cash",
                   "amount_off": 1250, "percent_off": null, "min_order": 10000, "status": "usable",
                   "valid_from": "2026-01-01T00:00:00+08:00", "valid_until": "2030-12-31T23:59:59+08:00",
                   "usable_weekdays": [1, 2, 3, 4, 5],
                   "usable_hours": [{"from": "11:00", "to": "14:00"}, {"from": "17:00", "to": "21:00"}],
                   "vendor_status": "1"}),
            json!({"id": "topstyle:9002", "code": "TC9002", "name": "8.5折", "kind": "discount",
                   "amount_off": null, "percent_off": 15.0, "min_order": 0, "status": "usable",
                   "valid_from": "2026-02-01T10:00:00+08:00", "valid_until": "2031-01-31T22:00:00+08:00",
                   "usable_weekdays": null, "usable_hours": null, "vendor_status": "1"}),
            json!({"id": "topstyle:9003", "code": "TC9003", "name": "5元券", "kind": "cash",
                   "amount_off": 500, "percent_off": null, "min_order": null, "status": "used",
                   "valid_from": "2025-06-01T00:00:00+08:00", "valid_until": "2030-06-30T23:59:59+08:00",
                   "usable_weekdays": null, "usable_hours": null, "vendor_status": "2"}),
        ]
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_platform_with_its_message() {
    let vendor = topstyle::start().await;
    let wrong = "not-the-top-secret";
    let gw = gateway(&vendor, wrong).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(vendor.rejected(), 1);
    assert!(vendor.last_refusal().unwrap().starts_with("signed "));
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "error");
    assert_eq!(src["error"], "vendor error 25: Invalid signature");
    let raw = String::from_utf8_lossy(&a.raw);
    for secret in [wrong, topstyle::SECRET, topstyle::APP_KEY] {
        assert!(!raw.contains(secret), "no credential in the answer");
    }
    gw.stop().await;
}
