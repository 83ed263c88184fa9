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
    // over HTTP/1, more than 100 fields stop the parser itself (its bare 431, no body): the
    // limit it can check without allocating for every request
    let mut req = Request::get(gw.url("/healthz"));
    for i in 0..300 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let a = support::send(req.body(Full::default()).unwrap()).await;
    assert_eq!(a.status, 431, "{:?}", a.raw);
    // 100 fields pass the parser and the router
    let mut req = Request::get(gw.url("/healthz"));
    for i in 0..95 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let a = support::send(req.body(Full::default()).unwrap()).await;
    assert_eq!(a.status, 200, "{:?}", a.raw);
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

/// Pages through every coupon of `member`, `limit` at a time, calling `between` before each
/// page after the first; the ids in the order seen.
async fn page_through(
    gw: &embedded::Running,
    member: &serde_json::Value,
    limit: usize,
    mut between: impl FnMut(usize),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = serde_json::Value::Null;
    for page in 0.. {
        if page > 0 {
            between(page);
        }
        let a = support::send(
            Request::post(gw.url("/v1/coupons/query"))
                .header("content-type", "application/json")
                .header("cache-control", "no-cache")
                .body(Full::new(Bytes::from(
                    json!({"member": member, "limit": limit, "cursor": cursor}).to_string(),
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "page {page}: {}", a.body);
        for c in a.body["coupons"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_owned());
        }
        cursor = a.body["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
        assert!(page < 100, "paging does not end");
    }
    seen
}

#[tokio::test]
async fn paging_while_a_vendors_data_changes_shows_each_unchanged_coupon_once() {
    let sb = Sandbox::start().await.unwrap();
    // no stale answers: a failing vendor's coupons really leave the list
    let yaml = ROUTES_YAML.replace("stale_if_error_ms: 600000", "stale_if_error_ms: 0");
    let plan = embedded::sandbox_plan("routes.yaml", &yaml, &sb, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = embedded::start(plan, listener);
    let member = json!({"ids": {"op": data::OP_MEMBER, "hkl": data::HKL_MEMBER, "zvcms": data::ZVCMS_MEMBER}});
    let all = page_through(&gw, &member, 500, |_| {}).await;
    assert!(all.len() > 12, "{all:?}");
    // hkl's coupons vanish after page 1 and come back after page 3
    let seen = page_through(&gw, &member, 4, |page| match page {
        1 => sb
            .hkl
            .set_fault(coupon_gateway::sandbox::Fault::Status(500)),
        3 => sb.hkl.clear_fault(),
        _ => {}
    })
    .await;
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no coupon twice: {seen:?}");
    for id in all.iter().filter(|id| !id.starts_with("hkl:")) {
        assert!(seen.contains(id), "{id} was skipped: {seen:?}");
    }
    // the order is still the merged order
    let order: Vec<&String> = all.iter().filter(|id| seen.contains(id)).collect();
    assert_eq!(order, seen.iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn a_tampered_foreign_or_garbage_cursor_is_a_clear_400() {
    let (_sb, gw) = setup().await;
    let url = gw.url("/v1/coupons/query");
    let member = json!({"ids": {"op": data::OP_MEMBER}});
    let a = support::post_json(&url, &json!({"member": member, "limit": 1})).await;
    let cursor = a.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let a = support::post_json(
        &url,
        &json!({"member": member, "limit": 1, "cursor": cursor}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut tampered = cursor.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases = [
        (
            json!({"member": member, "cursor": tampered}),
            "not a cursor this gateway issued",
        ),
        (
            json!({"member": member, "cursor": "abc"}),
            "not a cursor this gateway issued",
        ),
        (
            json!({"member": member, "kinds": ["cash"], "cursor": cursor}),
            "belongs to another query",
        ),
    ];
    for (body, want) in cases {
        let a = support::post_json(&url, &body).await;
        assert_problem(&a, 400);
        let detail = a.body["detail"].as_str().unwrap();
        assert!(detail.contains(want), "{body}: {detail}");
    }
}
