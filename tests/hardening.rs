//! Issue 15's hardening, over real sockets: an answer that lost its items path is an error, a
//! vendor's own throttling is `rate_limited` and holds further calls back, and the token
//! endpoint is retried like any vendor endpoint.
mod support;

use bytes::Bytes;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::data;
use coupon_gateway::sandbox::{Fault, Sandbox};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

async fn gateway(sb: &Sandbox, edit: impl Fn(String) -> String) -> embedded::Running {
    let plan =
        embedded::sandbox_plan("routes.yaml", &edit(ROUTES_YAML.to_owned()), sb, false).unwrap();
    embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

/// No stale answers, so each answer shows as itself.
fn fresh_only(t: String) -> String {
    t.replace("stale_if_error_ms: 600000", "stale_if_error_ms: 0")
}

async fn ask_op(gw: &embedded::Running) -> Value {
    let body = json!({"member": {"ids": {"op": data::OP_MEMBER}}});
    let req = Request::post(gw.url("/v1/coupons/query"))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    support::send(req).await.body["sources"][0].clone()
}

fn raw(body: &str) -> Fault {
    Fault::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: Bytes::from(body.to_owned()),
    }
}

#[tokio::test]
async fn a_success_without_the_items_path_is_an_error_but_an_empty_list_is_ok() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, fresh_only).await;
    // the vendor renamed `data`: not "no coupons"
    sb.op
        .set_fault(raw(r#"{"code":200,"message":"ok","items":[{"_id":"x"}]}"#));
    let s = ask_op(&gw).await;
    assert_eq!(s["outcome"], "error", "{s}");
    assert!(s["error"].as_str().unwrap().contains("`$.data`"), "{s}");
    // a present, empty list is a member without coupons
    sb.op
        .set_fault(raw(r#"{"code":200,"message":"ok","data":[]}"#));
    let s = ask_op(&gw).await;
    assert_eq!(
        (s["outcome"].as_str(), s["count"].as_u64()),
        (Some("ok"), Some(0)),
        "{s}"
    );
}

#[tokio::test]
async fn a_vendor_429_is_rate_limited_and_holds_further_calls_back() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, fresh_only).await;
    sb.op.set_fault(Fault::Status(429));
    let s = ask_op(&gw).await;
    assert_eq!(s["outcome"], "rate_limited", "{s}");
    let reached = sb.op.requests();
    // within the hold (1 s without Retry-After, beyond op's 50 ms queue) nothing is sent
    let s = ask_op(&gw).await;
    assert_eq!(s["outcome"], "rate_limited", "{s}");
    assert_eq!(
        sb.op.requests(),
        reached,
        "the held call reached the vendor"
    );
    // and the breaker did not count it: the vendor is still closed
    let vendors = support::get(&gw.url("/v1/vendors")).await;
    assert_eq!(vendors.body["vendors"][0]["circuit"], "closed");
    // once the hold has passed (a lower bound on time, not an ordering), calls go out again
    sb.op.clear_fault();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let s = ask_op(&gw).await;
    assert_eq!(s["outcome"], "ok", "{s}");
}

#[tokio::test]
async fn a_configured_throttling_code_is_rate_limited_too() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        fresh_only(t).replacen(
            "          success: [{path: $.code, in: [200]}]\n          error_code: $.code",
            "          success: [{path: $.code, in: [200]}]\n          rate_limited: [{path: $.code, in: [429001]}]\n          error_code: $.code",
            1,
        )
    })
    .await;
    sb.op
        .set_fault(raw(r#"{"code":429001,"message":"访问过于频繁"}"#));
    let s = ask_op(&gw).await;
    assert_eq!(s["outcome"], "rate_limited", "{s}");
    assert!(s["error"].as_str().unwrap().contains("429001"), "{s}");
    // another business error stays an error
    sb.op.set_fault(raw(r#"{"code":500,"message":"系统繁忙"}"#));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(ask_op(&gw).await["outcome"], "error");
}

#[tokio::test]
async fn the_token_endpoint_is_retried_after_a_5xx() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t).await;
    // the first request the template vendor sees is the token fetch: it fails once
    sb.wxcard.set_fault(Fault::FailFirst {
        times: 1,
        fault: Box::new(Fault::Status(503)),
    });
    let a = support::get(&gw.url("/v1/templates?vendor=wxcard")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        sb.token_requests(),
        1,
        "the 503 never reached the token logic of the sim"
    );
}
