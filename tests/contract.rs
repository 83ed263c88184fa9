//! The strict contract over loopback, against the sandbox: typos, repeats and unknown vendor
//! keys are refused with the nearest known name; oversized headers are problem+json; `HEAD`
//! is answered wherever `GET` is.
mod support;

use bytes::Bytes;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::{Sandbox, data};
use http::Request;
use http_body_util::Full;
use serde_json::json;

async fn setup() -> (Sandbox, embedded::Running) {
    let sb = Sandbox::start().await.unwrap();
    let plan = embedded::sandbox_plan("routes.yaml", ROUTES_YAML, &sb, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (sb, embedded::start(plan, listener))
}

fn assert_problem(a: &support::Answer, status: u16) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(a.body["status"], status);
    for key in ["type", "title", "detail", "instance"] {
        assert!(a.body[key].is_string(), "problem without {key}: {}", a.body);
    }
    assert_eq!(
        a.body["instance"].as_str().unwrap(),
        a.headers["x-request-id"].to_str().unwrap(),
        "instance is the request id"
    );
}

async fn post_raw(url: &str, body: &str) -> support::Answer {
    support::send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn typos_in_a_query_are_refused_naming_the_nearest_member() {
    let (_sb, gw) = setup().await;
    let url = gw.url("/v1/coupons/query");
    let member = json!({"ids": {"op": data::OP_MEMBER}});
    let cases = [
        (
            json!({"member": member, "kind": ["cash"]}),
            "did you mean `kinds`?",
        ),
        (
            json!({"member": member, "statuses": ["used"]}),
            "did you mean `status`?",
        ),
        (
            json!({"member": member, "vendor": ["hkl"]}),
            "did you mean `vendors`?",
        ),
        (
            json!({"member": member, "Limit": 1}),
            "did you mean `limit`?",
        ),
        (
            json!({"member": {"ids": {"op": data::OP_MEMBER, "hlk": "x"}}}),
            "unknown vendor `hlk` in `member.ids` (did you mean `hkl`?)",
        ),
        (
            // a configured vendor without a coupon list is not a key of member.ids
            json!({"member": {"ids": {"wxcard": "x"}}}),
            "unknown vendor `wxcard` in `member.ids`",
        ),
    ];
    for (body, want) in cases {
        let a = support::post_json(&url, &body).await;
        assert_problem(&a, 400);
        let detail = a.body["detail"].as_str().unwrap();
        assert!(detail.contains(want), "{body}: {detail}");
    }
    let a = post_raw(
        &url,
        r#"{"member":{"ids":{"op":"a"}},"limit":1,"limit":500}"#,
    )
    .await;
    assert_problem(&a, 400);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("duplicate member `limit`"),
        "{}",
        a.body
    );
    // the well-formed query still answers
    let a = support::post_json(&url, &json!({"member": member, "kinds": ["cash"]})).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn query_strings_and_template_bodies_are_strict_too() {
    let (_sb, gw) = setup().await;
    let a = support::get(&gw.url("/v1/templates?vendor=wxcard&knid=cash")).await;
    assert_problem(&a, 400);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("did you mean `kind`?"),
        "{}",
        a.body
    );
    let a = support::get(&gw.url("/v1/templates?page=1&page=2")).await;
    assert_problem(&a, 400);
    let a = support::get(&gw.url("/healthz?verbose=1")).await;
    assert_problem(&a, 400);
    let a = post_raw(
        &gw.url("/v1/templates"),
        r#"{"vendor":"wxcard","kind":"cash","begin_at":"2026-12-01","end_at":"2026-12-31","card":{},"sycn":true}"#,
    )
    .await;
    assert_problem(&a, 400);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("did you mean `sync`?"),
        "{}",
        a.body
    );
    let a = post_raw(
        &gw.url("/v1/templates"),
        r#"{"vendor":"wxcard","kind":"cash","kind":"gift","begin_at":"2026-12-01","end_at":"2026-12-31","card":{}}"#,
    )
    .await;
    assert_problem(&a, 400);
}

#[tokio::test]
async fn oversized_headers_answer_431_problem_json() {
    let (_sb, gw) = setup().await;
    for (name, size) in [("x-big", 100 * 1024), ("x-huge", 600 * 1024)] {
        let a = support::send(
            Request::get(gw.url("/healthz"))
                .header(name, "a".repeat(size))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_problem(&a, 431);
    }
    let mut req = Request::get(gw.url("/healthz"));
    for i in 0..300 {
        req = req.header(format!("x-h{i}"), "1");
    }
    assert_problem(
        &support::send(req.body(Full::default()).unwrap()).await,
        431,
    );
}

#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let (_sb, gw) = setup().await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/vendors",
        "/v1/templates?vendor=wxcard",
    ] {
        let get = support::get(&gw.url(path)).await;
        let head = support::send(Request::head(gw.url(path)).body(Full::default()).unwrap()).await;
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.raw.is_empty(), "{path}: HEAD has no body");
        assert_eq!(
            head.headers["content-type"], get.headers["content-type"],
            "{path}"
        );
    }
    let a = support::send(
        Request::head(gw.url("/v1/coupons/query"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "POST");
}

#[tokio::test]
async fn a_required_vendor_that_fails_makes_the_query_a_502_with_sources() {
    let (sb, gw) = setup().await;
    sb.hkl
        .set_fault(coupon_gateway::sandbox::Fault::Status(500));
    let url = gw.url("/v1/coupons/query");
    let member = json!({"ids": {"op": data::OP_MEMBER, "hkl": data::HKL_MEMBER}});
    // default: a partial answer is a 200
    let a = support::post_json(&url, &json!({"member": member})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["complete"], false);
    let a = support::post_json(&url, &json!({"member": member, "require": ["op"]})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    for require in [json!(["hkl"]), json!("all"), json!(["op", "hkl"])] {
        let a = support::post_json(&url, &json!({"member": member, "require": require})).await;
        assert_problem(&a, 502);
        let sources = a.body["sources"].as_array().expect("sources");
        let hkl = sources.iter().find(|s| s["vendor"] == "hkl").unwrap();
        assert_eq!(hkl["outcome"], "error", "{}", a.body);
        assert!(a.body.get("coupons").is_none());
    }
    // a vendor named in `require` but skipped for want of an identity did not answer either
    let a = support::post_json(
        &url,
        &json!({"member": {"ids": {"op": data::OP_MEMBER}}, "require": ["zvcms"]}),
    )
    .await;
    assert_problem(&a, 502);
}
