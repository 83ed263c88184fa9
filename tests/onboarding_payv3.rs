//! Onboarding proof: a pay-v3-style platform written in YAML alone (tests/fixtures/payv3.yaml)
//! against a strict simulator (tests/support/payv3.rs), end to end through
//! `POST /v1/coupons/query`: a GET signed with RSA-SHA256 over the request target, in an
//! Authorization header; the answer's list AES-256-GCM encrypted in a `resource` member.
mod support;

use coupon_gateway::embedded;
use serde_json::{Value, json};
use support::payv3;

const YAML: &str = include_str!("fixtures/payv3.yaml");

async fn gateway(vendor: &payv3::PayV3, private_key: &str, api_v3_key: &str) -> embedded::Running {
    let text = YAML.replace("PAYV3_BASE_URL", &vendor.base_url());
    let creds = [
        ("mchid", payv3::MCHID),
        ("serial_no", payv3::SERIAL_NO),
        ("private_key", private_key),
        ("appid", payv3::APPID),
        ("api_v3_key", api_v3_key),
    ];
    support::start_fixture("payv3.yaml", &text, "payv3", &creds).await
}

fn query() -> Value {
    json!({"member": {"openid": payv3::OPENID}})
}

/// The canonical fields these tests pin.
const PINNED: &[&str] = &[
    "id",
    "template_id",
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

/// In the gateway's order: usable first, then the rest by end date.
fn expected() -> Vec<Value> {
    vec![
        json!({"id": "payv3:98674556", "template_id": "9856888", "name": "微信支付满100减10", "kind": "cash",
               "amount_off": 1000, "percent_off": null, "min_order": 10000, "status": "usable",
               "valid_from": "2026-03-01T00:00:00+08:00", "valid_until": "2030-12-31T23:59:59+08:00",
               "usable_weekdays": null, "usable_hours": null, "vendor_status": "SENDED"}),
        json!({"id": "payv3:98674558", "template_id": "9856888", "name": "过期券", "kind": "cash",
               "amount_off": 500, "percent_off": null, "min_order": 5000, "status": "expired",
               "valid_from": "2024-01-01T00:00:00+08:00", "valid_until": "2024-12-31T23:59:59+08:00",
               "usable_weekdays": null, "usable_hours": null, "vendor_status": "EXPIRED"}),
        json!({"id": "payv3:98674557", "template_id": "9856888", "name": "无门槛2元", "kind": "cash",
               "amount_off": 200, "percent_off": null, "min_order": 0, "status": "used",
               "valid_from": "2026-03-02T00:00:00+08:00", "valid_until": "2031-03-02T23:59:59+08:00",
               "usable_weekdays": null, "usable_hours": null, "vendor_status": "USED"}),
    ]
}

#[tokio::test]
async fn a_pay_v3_platform_is_signed_with_rsa_and_its_list_decrypted() {
    let vendor = payv3::start().await;
    let gw = gateway(&vendor, payv3::TEST_PRIVATE_KEY_PEM, payv3::API_V3_KEY).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(
        a.status,
        200,
        "{} / refused: {:?}",
        a.body,
        vendor.last_refusal()
    );
    assert_eq!(vendor.rejected(), 0, "{:?}", vendor.last_refusal());
    assert_eq!(vendor.requests(), 1);
    let src = &a.body["sources"][0];
    assert_eq!(src["vendor"], "payv3");
    assert_eq!(src["outcome"], "ok", "{src}");
    assert_eq!(src["count"], 3, "{src}");
    assert_eq!(src["dropped"].as_u64().unwrap_or(0), 0, "{src}");
    let coupons: Vec<Value> = a.body["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .map(pinned)
        .collect();
    assert_eq!(coupons, expected());
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_api_v3_key_cannot_open_the_answer_and_says_so_without_the_key() {
    let vendor = payv3::start().await;
    let wrong = "Zz9cde1ZJB1kG2e7VfTs3jQzo3iM4Bq0";
    let gw = gateway(&vendor, payv3::TEST_PRIVATE_KEY_PEM, wrong).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(vendor.rejected(), 0, "the request itself was right");
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "error");
    let error = src["error"].as_str().unwrap();
    assert!(error.starts_with("cannot decrypt `$.resource`"), "{error}");
    let raw = String::from_utf8_lossy(&a.raw);
    assert!(!raw.contains(wrong) && !raw.contains(payv3::API_V3_KEY));
    gw.stop().await;
}

#[tokio::test]
async fn the_private_key_is_read_with_literal_backslash_n_line_breaks_too() {
    let vendor = payv3::start().await;
    let one_line = payv3::TEST_PRIVATE_KEY_PEM.trim().replace('\n', "\\n");
    let gw = gateway(&vendor, &one_line, payv3::API_V3_KEY).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(
        a.status,
        200,
        "{} / refused: {:?}",
        a.body,
        vendor.last_refusal()
    );
    assert_eq!(a.body["sources"][0]["count"], 3);
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_the_platform_with_its_message() {
    let vendor = payv3::start().await;
    // another merchant's key: the signature does not verify under the registered public key
    let other = payv3::OTHER_TEST_PRIVATE_KEY_PEM;
    let gw = gateway(&vendor, other, payv3::API_V3_KEY).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(vendor.rejected(), 1);
    assert!(vendor.last_refusal().unwrap().starts_with("signed "));
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "error");
    assert_eq!(src["error"], "HTTP 401: 签名错误，请检查后再试");
    let raw = String::from_utf8_lossy(&a.raw);
    for secret in [
        payv3::MCHID,
        payv3::SERIAL_NO,
        payv3::API_V3_KEY,
        payv3::APPID,
    ] {
        assert!(!raw.contains(secret), "no credential in the answer");
    }
    assert!(!raw.contains("PRIVATE KEY") && !raw.contains(&other[40..80]));
    gw.stop().await;
}
