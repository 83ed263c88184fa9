//! Onboarding proof: a platform that speaks UTC, written in YAML alone
//! (tests/fixtures/utcplatform.yaml), against a strict simulator
//! (tests/support/utcplatform.rs), end to end through `POST /v1/coupons/query`: ISO 8601 UTC
//! timestamps, HMAC-SHA256 over timestamp and body, three pages by `next_token`, epoch-ms
//! dates, yuan strings, list-valued weekdays and hours.
mod support;

use coupon_gateway::crypto;
use coupon_gateway::embedded;
use serde_json::{Value, json};
use support::utcplatform;

const YAML: &str = include_str!("fixtures/utcplatform.yaml");

async fn gateway(vendor: &utcplatform::UtcPlatform, secret: &str) -> embedded::Running {
    let text = YAML.replace("UTCPLATFORM_BASE_URL", &vendor.base_url());
    let creds = [("api_key", utcplatform::API_KEY), ("secret", secret)];
    support::start_fixture("utcplatform.yaml", &text, "utcplatform", &creds).await
}

fn query() -> Value {
    json!({"member": {"ids": {"utcplatform": utcplatform::MEMBER}}})
}

fn pinned(c: &Value, keys: &[&str]) -> Value {
    support::pinned(c, keys)
}

/// The coupons of one query, by id.
async fn coupons(keys: &[&str]) -> (Vec<Value>, utcplatform::UtcPlatform, Value) {
    let vendor = utcplatform::start().await;
    let gw = gateway(&vendor, utcplatform::SECRET).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(
        a.status,
        200,
        "{} / refused: {:?}",
        a.body,
        vendor.last_refusal()
    );
    let mut list: Vec<Value> = a.body["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| pinned(c, keys))
        .collect();
    list.sort_by_key(|c| c["id"].as_str().unwrap_or("").to_owned());
    gw.stop().await;
    (list, vendor, a.body)
}

#[tokio::test]
async fn a_utc_platform_is_signed_paged_by_token_and_mapped() {
    let keys = [
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
        "vendor_status",
    ];
    let (list, vendor, body) = coupons(&keys).await;
    assert_eq!(vendor.rejected(), 0, "{:?}", vendor.last_refusal());
    assert_eq!(vendor.requests(), 3, "seven coupons on pages of three");
    let tokens = vendor.state.tokens_seen.lock().unwrap().clone();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[0], None, "no token on the first page");
    assert!(tokens[1].is_some() && tokens[2].is_some() && tokens[1] != tokens[2]);
    let src = &body["sources"][0];
    assert_eq!(src["outcome"], "ok", "{src}");
    assert_eq!(src["count"], 7);
    assert_eq!(src["dropped"].as_u64().unwrap_or(0), 0, "{src}");
    assert!(src.get("truncated").is_none(), "{src}");
    assert_eq!(
        list,
        vec![
            json!({"id": "utcplatform:U1", "name": "Lunch 12.50 off", "kind": "cash", "amount_off": 1250,
                   "percent_off": null, "min_order": 10000, "status": "usable",
                   "valid_from": "2026-01-01T00:00:00+08:00", "valid_until": "2030-12-31T23:59:59+08:00",
                   "usable_weekdays": [1, 2, 3, 4, 5], "vendor_status": "AVAILABLE"}),
            json!({"id": "utcplatform:U2", "name": "15% off", "kind": "discount", "amount_off": null,
                   "percent_off": 15.5, "min_order": null, "status": "usable",
                   "valid_from": "2026-02-01T09:00:00+08:00", "valid_until": "2031-01-31T23:59:59+08:00",
                   "usable_weekdays": [6, 7], "vendor_status": "AVAILABLE"}),
            json!({"id": "utcplatform:U3", "name": "5 off", "kind": "cash", "amount_off": 500,
                   "percent_off": null, "min_order": 0, "status": "used",
                   "valid_from": "2025-03-01T00:00:00+08:00", "valid_until": "2030-03-01T00:00:00+08:00",
                   "usable_weekdays": null, "vendor_status": "REDEEMED"}),
            json!({"id": "utcplatform:U4", "name": "old", "kind": "cash", "amount_off": 99,
                   "percent_off": null, "min_order": null, "status": "expired",
                   "valid_from": "2024-01-01T00:00:00+08:00", "valid_until": "2024-06-30T23:59:59+08:00",
                   "usable_weekdays": null, "vendor_status": "EXPIRED"}),
            json!({"id": "utcplatform:U5", "name": "on hold", "kind": "cash", "amount_off": 3000,
                   "percent_off": null, "min_order": null, "status": "frozen",
                   "valid_from": "2026-05-01T12:00:00+08:00", "valid_until": "2030-05-01T12:00:00+08:00",
                   "usable_weekdays": null, "vendor_status": "LOCKED"}),
            json!({"id": "utcplatform:U6", "name": "weekend 8.80", "kind": "cash", "amount_off": 880,
                   "percent_off": null, "min_order": 5050, "status": "usable",
                   "valid_from": "2026-01-01T00:00:00+08:00", "valid_until": "2030-03-01T00:00:00+08:00",
                   "usable_weekdays": [6, 7], "vendor_status": "AVAILABLE"}),
            json!({"id": "utcplatform:U7", "name": "next year", "kind": "cash", "amount_off": 10000,
                   "percent_off": null, "min_order": null, "status": "pending",
                   "valid_from": "2027-01-01T00:00:00+08:00", "valid_until": "2031-12-31T23:59:59+08:00",
                   "usable_weekdays": null, "vendor_status": "AVAILABLE"}),
        ]
    );
}

/// List-valued hour ranges (`"hours": ["11:00-14:00","17:00-21:00"]`), `[]` as none given.
#[tokio::test]
async fn list_valued_hours_are_read() {
    let (list, _, _) = coupons(&["id", "usable_hours"]).await;
    let hours = |from: &str, to: &str| json!({"from": from, "to": to});
    assert_eq!(
        list,
        vec![
            json!({"id": "utcplatform:U1", "usable_hours": [hours("11:00", "14:00"), hours("17:00", "21:00")]}),
            json!({"id": "utcplatform:U2", "usable_hours": [hours("09:30", "11:30")]}),
            json!({"id": "utcplatform:U3", "usable_hours": null}),
            json!({"id": "utcplatform:U4", "usable_hours": null}),
            json!({"id": "utcplatform:U5", "usable_hours": null}),
            json!({"id": "utcplatform:U6", "usable_hours": [hours("10:00", "22:00")]}),
            json!({"id": "utcplatform:U7", "usable_hours": null}),
        ]
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_platform_with_its_message() {
    let vendor = utcplatform::start().await;
    let wrong = "not-the-utc-secret";
    let gw = gateway(&vendor, wrong).await;
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query()).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(vendor.rejected(), 1);
    assert!(vendor.last_refusal().unwrap().starts_with("signed "));
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "error");
    assert_eq!(src["error"], "HTTP 401: signature does not match");
    let raw = String::from_utf8_lossy(&a.raw);
    for secret in [wrong, utcplatform::SECRET, utcplatform::API_KEY] {
        assert!(!raw.contains(secret), "no credential in the answer");
    }
    gw.stop().await;
}

/// The simulator itself: a token is good for one request, and a made-up one is refused.
#[tokio::test]
async fn the_simulator_refuses_a_reused_or_forged_token() {
    let vendor = utcplatform::start().await;
    let url = format!("{}/v2/members/coupons/search", vendor.base_url());
    let call = |body: Value| {
        let body = body.to_string();
        let ts = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let sig = crypto::hex_lower(&crypto::hmac_sha256(
            utcplatform::SECRET.as_bytes(),
            format!("{ts}\n{body}").as_bytes(),
        ));
        let req = http::Request::post(&url)
            .header("content-type", "application/json")
            .header("x-api-key", utcplatform::API_KEY)
            .header("x-timestamp", ts)
            .header("x-signature", sig)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        support::send(req)
    };
    let first = call(json!({"member_id": utcplatform::MEMBER, "page_size": 3})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let token = first.body["next_token"].as_str().unwrap().to_owned();
    // (another page size each time, so the request is not refused earlier as a replay)
    let page = |t: &str, size: u32| json!({"member_id": utcplatform::MEMBER, "page_size": size, "next_token": t});
    let second = call(page(&token, 3)).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let again = call(page(&token, 2)).await;
    assert_eq!(again.status, 400, "a used token is refused: {}", again.body);
    let forged = call(page("bm90LWEtdG9rZW4", 1)).await;
    assert_eq!(
        forged.status, 400,
        "a made-up token is refused: {}",
        forged.body
    );
    assert_eq!(
        forged.body["error"]["message"],
        "next_token is unknown or was used already"
    );
}
