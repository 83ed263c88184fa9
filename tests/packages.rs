//! `GET /v1/packages/{vendor}/{package_id}` end to end: the shipped routes.yaml against the
//! sandbox op simulator (packages of src/sandbox/data.rs).
mod support;

use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::data::{self, day, ymd};
use coupon_gateway::sandbox::{Fault, Sandbox};
use serde_json::{Value, json};

async fn setup() -> (Sandbox, embedded::Running) {
    let sb = Sandbox::start().await.unwrap();
    let plan = embedded::sandbox_plan("routes.yaml", ROUTES_YAML, &sb, false).unwrap();
    (
        sb,
        embedded::start(
            plan,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ),
    )
}

fn start_of(offset: i64) -> String {
    format!("{}T00:00:00+08:00", ymd(day(offset)))
}

fn end_of(offset: i64) -> String {
    format!("{}T23:59:59+08:00", ymd(day(offset)))
}

async fn package(gw: &embedded::Running, vendor: &str, id: &str) -> support::Answer {
    support::get(&gw.url(&format!("/v1/packages/{vendor}/{id}"))).await
}

#[tokio::test]
async fn a_package_is_normalized_with_its_coupon_templates() {
    let (_sb, gw) = setup().await;
    let a = package(&gw, "op", data::OP_PACKAGE).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let p = &a.body["package"];
    assert_eq!(p["id"], data::OP_PACKAGE);
    assert_eq!(p["vendor"], "op");
    assert_eq!(p["status"], "active");
    assert_eq!(p["review_status"], "published");
    assert_eq!(p["claim_from"], start_of(-10));
    assert_eq!(p["claim_until"], end_of(50));
    assert!(
        p["total_limit"].is_i64() && p["per_member_limit"].is_i64(),
        "{p}"
    );
    assert!(
        p["channels"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string)
    );
    let coupons = p["coupons"].as_array().unwrap();
    assert_eq!(coupons.len(), 3);
    let cash = &coupons[0];
    assert_eq!(
        (
            cash["kind"].as_str(),
            cash["amount_off"].as_i64(),
            cash["count"].as_i64()
        ),
        (Some("cash"), Some(500), Some(12))
    );
    assert_eq!(cash["valid_days_after_claim"], 10);
    assert_eq!(cash["valid_from"], start_of(-10));
    assert!(
        cash["product_kinds"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string),
        "plain strings in packages"
    );
    let discount = &coupons[1];
    assert_eq!(
        (discount["kind"].as_str(), discount["percent_off"].as_f64()),
        (Some("discount"), Some(15.0))
    );
    assert_eq!(discount["amount_off"], Value::Null);
    assert_eq!(coupons[2]["valid_from"], start_of(7));
    assert_eq!(coupons[2]["valid_until"], end_of(60));
    let src = &a.body["source"];
    assert_eq!(
        (
            src["vendor"].as_str(),
            src["outcome"].as_str(),
            src["cache"].as_str()
        ),
        (Some("op"), Some("ok"), Some("miss"))
    );
}

#[tokio::test]
async fn date_strings_delay_only_coupons_and_expired_packages() {
    let (_sb, gw) = setup().await;
    let dates = package(&gw, "op", data::OP_PACKAGE_DATES).await;
    let p = &dates.body["package"];
    assert_eq!(
        (p["claim_from"].as_str(), p["claim_until"].as_str()),
        (Some(&*start_of(-3)), Some(&*end_of(27)))
    );
    assert_eq!(p["review_status"], "ready");
    assert_eq!(p["coupons"][1]["percent_off"], 5.0, "9.5折");
    assert_eq!(p["coupons"][0]["valid_until"], end_of(30));

    let delay = package(&gw, "op", data::OP_PACKAGE_DELAY).await;
    let c = &delay.body["package"]["coupons"][0];
    assert_eq!(
        c["valid_until"],
        Value::Null,
        "valid only for some days after it is claimed"
    );
    assert_eq!(c["valid_days_after_claim"], 15);

    let expired = package(&gw, "op", data::OP_PACKAGE_EXPIRED).await;
    let p = &expired.body["package"];
    assert_eq!(
        (p["status"].as_str(), p["review_status"].as_str()),
        (Some("expired"), Some("closed"))
    );
}

#[tokio::test]
async fn unknown_packages_vendors_and_ids_are_problems() {
    let (sb, gw) = setup().await;
    let a = package(&gw, "op", "ffffffffffffffffffffffffffffffff").await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(a.body["source"]["vendor"], "op");
    let a = package(&gw, "hkl", data::OP_PACKAGE).await;
    assert_eq!(a.status, 404, "hkl has no packages");
    let a = package(&gw, "op", "bad%20id").await;
    assert_eq!(a.status, 400);
    let a = support::get(&gw.url("/v1/packages/op")).await;
    assert_eq!(a.status, 404);
    // the vendor down: 502 with the source; its deadline: 504
    sb.op.set_fault(Fault::Status(500));
    let a = support::send(
        http::Request::get(gw.url(&format!("/v1/packages/op/{}", data::OP_PACKAGE_DATES)))
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body["source"]["outcome"], "error");
}

#[tokio::test]
async fn packages_are_cached_and_served_stale_when_op_fails() {
    let (sb, gw) = setup().await;
    let first = package(&gw, "op", data::OP_PACKAGE).await;
    assert_eq!(first.body["source"]["cache"], "miss");
    let asked = sb.op.requests();
    let again = package(&gw, "op", data::OP_PACKAGE).await;
    assert_eq!(again.body["source"]["cache"], "hit");
    assert_eq!(sb.op.requests(), asked, "a hit does not ask the vendor");
    assert_eq!(first.body["package"], again.body["package"]);
    // no-cache goes to the vendor; when it fails, the last good answer is served as stale
    sb.op.set_fault(Fault::Html);
    let stale = support::send(
        http::Request::get(gw.url(&format!("/v1/packages/op/{}", data::OP_PACKAGE)))
            .header("cache-control", "no-cache")
            .body(http_body_util::Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    assert_eq!(
        stale.body["source"],
        json!({"vendor": "op", "outcome": "error", "count": 1,
        "latency_ms": stale.body["source"]["latency_ms"], "cache": "stale", "error": "answer is not JSON"})
    );
    assert_eq!(stale.body["package"], first.body["package"]);
}

#[tokio::test]
async fn a_vendor_http_404_with_a_json_body_is_a_missing_package() {
    let (sb, gw) = setup().await;
    sb.op.set_fault(Fault::Raw {
        status: 404,
        content_type: "application/json".into(),
        body: bytes::Bytes::from_static(br#"{"code":404,"message":"not here","data":null}"#),
    });
    let a = package(&gw, "op", data::OP_PACKAGE_DATES).await;
    assert_eq!(
        a.status, 404,
        "the same rule as the template routes: {}",
        a.body
    );
    assert_eq!(a.body["source"]["error"], "HTTP 404: not here");
}

#[tokio::test]
async fn a_package_call_that_times_out_answers_504() {
    let (sb, gw) = setup().await;
    // never answered until cleared: the vendor deadline (800 ms) ends the call
    sb.op.set_fault(Fault::Hold);
    let a = package(&gw, "op", data::OP_PACKAGE).await;
    assert_eq!(a.status, 504, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(a.body["source"]["outcome"], "timeout", "{}", a.body);
    assert_eq!(a.body["source"]["error"], "no answer within 800 ms");
    sb.op.clear_fault();
}
