//! Onboarding proof: a pay-v2-style platform written in YAML alone (tests/fixtures/payv2.yaml)
//! against a strict simulator (tests/support/payv2.rs), end to end through
//! `POST /v1/coupons/query`: XML both ways, MD5 and HMAC-SHA256 signatures.
mod support;

use coupon_gateway::embedded;
use serde_json::{Value, json};
use support::payv2;

const YAML: &str = include_str!("fixtures/payv2.yaml");

/// The MD5 line of the fixture, and its HMAC-SHA256 variant (which also sends `sign_type`,
/// and so signs it).
const MD5_SIGN: &str = r#"apply: [{wrap: {suffix: "&key={{cred.key}}"}}, md5, hex_upper]"#;
const HMAC_SIGN: &str =
    r#"apply: [{wrap: {suffix: "&key={{cred.key}}"}}, {hmac_sha256: "{{cred.key}}"}, hex_upper]"#;
const BODY_END: &str = r#"            openid: "{{member.openid}}"
"#;

async fn gateway(vendor: &payv2::PayV2, key: &str, hmac: bool) -> embedded::Running {
    let mut text = YAML.replace("PAYV2_BASE_URL", &vendor.base_url());
    if hmac {
        assert!(text.contains(MD5_SIGN) && text.contains(BODY_END));
        text = text.replace(MD5_SIGN, HMAC_SIGN).replace(
            BODY_END,
            &format!("{BODY_END}            sign_type: HMAC-SHA256\n"),
        );
    }
    let creds = [
        ("appid", payv2::APPID),
        ("mch_id", payv2::MCH_ID),
        ("key", key),
    ];
    support::start_fixture("payv2.yaml", &text, "payv2", &creds).await
}

fn query() -> Value {
    json!({"member": {"openid": payv2::OPENID}})
}

/// The canonical fields these tests pin.
const PINNED: &[&str] = &[
    "id",
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
        json!({"id": "payv2:C2001", "name": "满50减5", "kind": "cash", "amount_off": 500,
               "percent_off": null, "min_order": 5000, "status": "usable",
               "valid_from": "2026-01-01T00:00:00+08:00", "valid_until": "2030-12-31T23:59:59+08:00",
               "usable_weekdays": null, "usable_hours": null, "vendor_status": "SENDED"}),
        json!({"id": "payv2:C2003", "name": "过期券 & 旧", "kind": "cash", "amount_off": 1000,
               "percent_off": null, "min_order": 20000, "status": "expired",
               "valid_from": "2024-01-01T00:00:00+08:00", "valid_until": "2024-12-31T23:59:59+08:00",
               "usable_weekdays": null, "usable_hours": null, "vendor_status": "EXPIRED"}),
        json!({"id": "payv2:C2002", "name": "无门槛1元", "kind": "cash", "amount_off": 100,
               "percent_off": null, "min_order": 0, "status": "used",
               "valid_from": "2026-03-01T08:00:00+08:00", "valid_until": "2031-03-01T08:00:00+08:00",
               "usable_weekdays": null, "usable_hours": null, "vendor_status": "USED"}),
    ]
}

async fn signed_and_mapped(hmac: bool) {
    let vendor = payv2::start().await;
    let gw = gateway(&vendor, payv2::KEY, hmac).await;
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
    let sign_type = vendor.state.last_sign_type.lock().unwrap().clone();
    assert_eq!(sign_type.as_deref(), hmac.then_some("HMAC-SHA256"));
    let src = &a.body["sources"][0];
    assert_eq!(src["vendor"], "payv2");
    assert_eq!(src["outcome"], "ok", "{src}");
    assert_eq!(src["count"], 3);
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
async fn a_pay_v2_platform_is_signed_with_md5_and_read_from_xml() {
    signed_and_mapped(false).await;
}

#[tokio::test]
async fn the_hmac_sha256_variant_is_the_same_yaml_with_another_transform() {
    signed_and_mapped(true).await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_the_platform_with_its_message() {
    let vendor = payv2::start().await;
    let wrong = "00000000000000000000000000000000";
    let gw = gateway(&vendor, wrong, false).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(vendor.rejected(), 1);
    assert!(vendor.last_refusal().unwrap().starts_with("sign "));
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "error");
    assert_eq!(src["error"], "vendor error FAIL: 签名错误");
    let raw = String::from_utf8_lossy(&a.raw);
    for secret in [wrong, payv2::KEY, payv2::MCH_ID, payv2::APPID] {
        assert!(!raw.contains(secret), "no credential in the answer");
    }
    gw.stop().await;
}
