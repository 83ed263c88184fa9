//! `/v1/templates` end to end against the strict wxcard simulator: token-endpoint auth
//! (reuse, expiry, revocation, single flight), create for every kind, list with filters and
//! paging, update, vendor 404/422, and idempotent creates.
mod support;

use std::time::Duration;

use bytes::Bytes;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::data::{day, ymd};
use coupon_gateway::sandbox::{Fault, Sandbox};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

async fn setup_with(edit: impl Fn(String) -> String) -> (Sandbox, embedded::Running) {
    let sb = Sandbox::start().await.unwrap();
    let plan =
        embedded::sandbox_plan("routes.yaml", &edit(ROUTES_YAML.to_owned()), &sb, false).unwrap();
    (
        sb,
        embedded::start(
            plan,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ),
    )
}

async fn setup() -> (Sandbox, embedded::Running) {
    setup_with(|t| t).await
}

fn card(kind: &str, title: &str) -> Value {
    let mut c = json!({"base_info": {"title": title, "color": "Color010", "brand_name": "海底捞"}});
    match kind {
        "discount" => c["discount"] = json!(20),
        "cash" => {
            c["reduce_money"] = json!(2000);
            c["least_cost"] = json!(10000);
        }
        "groupon" => c["deal_detail"] = json!("双人套餐"),
        _ => c["gift"] = json!("生日蛋糕一个"),
    }
    c
}

fn create_body(kind: &str, title: &str) -> Value {
    json!({"vendor": "wxcard", "kind": kind, "begin_at": ymd(day(1)), "end_at": ymd(day(31)), "sync": true, "card": card(kind, title)})
}

async fn post(gw: &embedded::Running, body: &Value, key: Option<&str>) -> support::Answer {
    let mut req = Request::post(gw.url("/v1/templates")).header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    support::send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

async fn list(gw: &embedded::Running, query: &str, fresh: bool) -> support::Answer {
    let mut req = Request::get(gw.url(&format!("/v1/templates?{query}")));
    if fresh {
        req = req.header("cache-control", "no-cache");
    }
    support::send(req.body(Full::default()).unwrap()).await
}

fn ids(a: &support::Answer) -> Vec<String> {
    a.body["templates"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", a.body))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_list_is_normalized_filtered_and_paged() {
    let (_sb, gw) = setup().await;
    let a = list(&gw, "vendor=wxcard", false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(ids(&a), ["1", "2", "3", "4"]);
    assert_eq!(
        a.body["page"],
        json!({"page": 1, "per_page": 15, "total": 4, "total_pages": 1})
    );
    let t1 = &a.body["templates"][0];
    assert_eq!(
        (t1["vendor"].as_str(), t1["kind"].as_str()),
        (Some("wxcard"), Some("discount"))
    );
    // UTC date objects become the template's UTC+08:00 days
    assert_eq!(t1["begin_at"], format!("{}T00:00:00+08:00", ymd(day(-30))));
    assert_eq!(t1["end_at"], format!("{}T23:59:59+08:00", ymd(day(60))));
    assert_eq!(
        t1["created_at"],
        format!("{}T18:10:10+08:00", ymd(day(-31)))
    );
    assert_eq!(t1["updated_at"], Value::Null);
    assert_eq!(a.body["templates"][1]["kind"], "cash");

    assert_eq!(
        ids(&list(&gw, "vendor=wxcard&kind=cash", false).await),
        ["2"]
    );
    let on = |d: i64| format!("vendor=wxcard&active_on={}", ymd(day(d)));
    assert_eq!(ids(&list(&gw, &on(40), false).await), ["1"]);
    assert_eq!(
        ids(&list(&gw, &format!("{}&kind=groupon", on(10)), false).await),
        ["3"]
    );
    let p1 = list(&gw, "vendor=wxcard&per_page=3", false).await;
    assert_eq!(ids(&p1), ["1", "2", "3"]);
    assert_eq!(
        p1.body["page"],
        json!({"page": 1, "per_page": 3, "total": 4, "total_pages": 2})
    );
    let p2 = list(&gw, "vendor=wxcard&per_page=3&page=2", false).await;
    assert_eq!(ids(&p2), ["4"]);
    assert_eq!(p2.body["page"]["page"], 2);
    // the vendor filter may be left out when one vendor offers templates
    assert_eq!(ids(&list(&gw, "kind=gift", false).await), ["4"]);
}

#[tokio::test]
async fn bad_list_queries_are_400_and_unknown_vendors_404() {
    let (_sb, gw) = setup().await;
    for (q, status) in [
        ("kind=coupon", 400),
        ("active_on=tomorrow", 400),
        ("per_page=0", 400),
        ("per_page=101", 400),
        ("colour=red", 400),
        ("vendor=op", 404),
    ] {
        let a = list(&gw, q, false).await;
        assert_eq!(a.status, status, "{q}: {}", a.body);
        assert_eq!(a.headers["content-type"], "application/problem+json");
    }
}

/// With no vendor offering the list, leaving `vendor` out is refused like with several: there
/// is no "only vendor" to default to.
#[tokio::test]
async fn without_a_vendor_offering_templates_a_list_must_name_one() {
    // wxcard's list_templates operation left out: its block runs to the next line indented
    // no deeper than the operation's name
    let (_sb, gw) = setup_with(|t| {
        let start = t
            .find("      list_templates:\n")
            .expect("wxcard offers list_templates");
        let block: usize = t[start..]
            .split_inclusive('\n')
            .enumerate()
            .take_while(|(i, l)| *i == 0 || l.trim().is_empty() || l.starts_with("       "))
            .map(|(_, l)| l.len())
            .sum();
        format!("{}{}", &t[..start], &t[start + block..])
    })
    .await;
    let a = list(&gw, "kind=gift", false).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert!(
        a.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`vendor` is required")),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn tokens_are_reused_and_renewed_after_revocation() {
    let (sb, gw) = setup().await;
    for _ in 0..5 {
        assert_eq!(list(&gw, "vendor=wxcard", true).await.status, 200);
    }
    assert_eq!(sb.token_requests(), 1, "one token for five calls");
    sb.revoke_tokens();
    let a = list(&gw, "vendor=wxcard", true).await;
    assert_eq!(
        a.status, 200,
        "a 401 renews the token and retries once: {}",
        a.body
    );
    assert_eq!(sb.token_requests(), 2);
    assert_eq!(list(&gw, "vendor=wxcard", true).await.status, 200);
    assert_eq!(sb.token_requests(), 2);
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    // renewed 1.5 s after the fetch, expiring after 5 s: wide windows on either side
    let (sb, gw) =
        setup_with(|t| t.replace("refresh_before_ms: 60000", "refresh_before_ms: 3500")).await;
    sb.set_token_ttl(Duration::from_secs(5));
    assert_eq!(list(&gw, "vendor=wxcard", true).await.status, 200);
    assert_eq!(list(&gw, "vendor=wxcard", true).await.status, 200);
    assert_eq!(sb.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(1_600)).await; // past the renewal point
    assert_eq!(list(&gw, "vendor=wxcard", true).await.status, 200);
    assert_eq!(sb.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_requests_fetch_one_token() {
    let (sb, gw) = setup().await;
    let mut set = tokio::task::JoinSet::new();
    for n in 1..=50 {
        let url = gw.url(&format!("/v1/templates?vendor=wxcard&per_page={n}"));
        set.spawn(async move { support::get(&url).await.status });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    assert_eq!(sb.token_requests(), 1);
    assert!(
        sb.wxcard.requests() >= 51,
        "fifty distinct lists reached the vendor"
    );
}

#[tokio::test]
async fn every_kind_is_created_and_lists_see_it_at_once() {
    let (_sb, gw) = setup().await;
    assert_eq!(ids(&list(&gw, "vendor=wxcard", false).await).len(), 4); // now cached
    for (i, kind) in ["discount", "cash", "groupon", "gift"]
        .into_iter()
        .enumerate()
    {
        let a = post(&gw, &create_body(kind, &format!("新{kind}券")), None).await;
        assert_eq!(a.status, 201, "{kind}: {}", a.body);
        let t = &a.body["template"];
        assert_eq!(t["id"], (5 + i).to_string());
        assert_eq!(
            (t["vendor"].as_str(), t["kind"].as_str()),
            (Some("wxcard"), Some(kind))
        );
        assert_eq!(t["title"], format!("新{kind}券"));
        assert_eq!(t["begin_at"], format!("{}T00:00:00+08:00", ymd(day(1))));
        assert_eq!(t["end_at"], format!("{}T23:59:59+08:00", ymd(day(31))));
        assert_eq!(t["card"]["base_info"]["title"], format!("新{kind}券"));
    }
    // the create dropped the cached list
    assert_eq!(
        ids(&list(&gw, "vendor=wxcard", false).await),
        ["1", "2", "3", "4", "5", "6", "7", "8"]
    );
}

#[tokio::test]
async fn vendor_validation_errors_are_422_with_field_messages() {
    let (_sb, gw) = setup().await;
    let mut body = create_body("discount", "x");
    body["card"]["discount"] = json!(150);
    let a = post(&gw, &body, None).await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert!(
        a.body["errors"]["ticket_info.discount"].is_array(),
        "{}",
        a.body
    );
    assert_eq!(a.body["detail"], "The given data was invalid.");
    for (field, value, want) in [
        ("kind", json!("coupon"), "unknown `kind`"),
        ("begin_at", json!("1 Dec"), "yyyy-MM-dd"),
        ("card", json!("x"), "card"),
    ] {
        let mut bad = create_body("cash", "x");
        bad[field] = value;
        let a = post(&gw, &bad, None).await;
        assert_eq!(a.status, 400, "{field}");
        assert!(
            a.body["detail"].as_str().unwrap().contains(want),
            "{}",
            a.body
        );
    }
    let mut other = create_body("cash", "x");
    other["vendor"] = json!("acme");
    assert_eq!(post(&gw, &other, None).await.status, 404);
}

#[tokio::test]
async fn updates_answer_200_and_unknown_ids_404() {
    let (_sb, gw) = setup().await;
    let mut body = create_body("cash", "满200减30");
    body.as_object_mut().unwrap().remove("vendor");
    body["card"]["reduce_money"] = json!(3000);
    let put = |id: &str, body: &Value| {
        support::send(
            Request::put(gw.url(&format!("/v1/templates/wxcard/{id}")))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
    };
    let a = put("2", &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["template"]["id"], "2");
    assert_eq!(a.body["template"]["title"], "满200减30");
    assert_eq!(a.body["template"]["card"]["reduce_money"], 3000);
    let a = put("999", &body).await;
    assert_eq!(a.status, 404, "{}", a.body);
    let listed = list(&gw, "vendor=wxcard&kind=cash", false).await;
    assert_eq!(listed.body["templates"][0]["title"], "满200减30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_create_repeated_concurrently_creates_one_template() {
    let (sb, gw) = setup().await;
    let body = create_body("gift", "生日券");
    let gw = std::sync::Arc::new(gw);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (gw, body) = (gw.clone(), body.clone());
        set.spawn(async move { post(&gw, &body, Some("order-42")).await });
    }
    let mut template_ids = std::collections::HashSet::new();
    while let Some(a) = set.join_next().await {
        let a = a.unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
        template_ids.insert(a.body["template"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(template_ids.len(), 1, "every repeat got the first answer");
    let all = list(&gw, "vendor=wxcard", true).await;
    assert_eq!(
        all.body["page"]["total"], 5,
        "exactly one template was created"
    );
    // a later repeat replays; the same key with another body is a conflict
    let again = post(&gw, &body, Some("order-42")).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        again.body["template"]["id"],
        *template_ids.iter().next().unwrap()
    );
    let other = post(&gw, &create_body("gift", "另一张"), Some("order-42")).await;
    assert_eq!(other.status, 409, "{}", other.body);
    drop(sb);
}

#[tokio::test]
async fn the_template_list_is_cached_as_configured_and_a_create_drops_it() {
    let (sb, gw) = setup().await;
    assert_eq!(ids(&list(&gw, "vendor=wxcard", false).await).len(), 4);
    let after_first = sb.wxcard.requests();
    // the shipped `cache:` of list_templates answers a repeat without the vendor
    assert_eq!(ids(&list(&gw, "vendor=wxcard", false).await).len(), 4);
    assert_eq!(
        sb.wxcard.requests(),
        after_first,
        "a repeat reached the vendor"
    );
    // another filter is another entry
    list(&gw, "vendor=wxcard&kind=cash", false).await;
    assert_eq!(sb.wxcard.requests(), after_first + 1);
    // no-cache bypasses (and refreshes) the entry
    list(&gw, "vendor=wxcard", true).await;
    assert_eq!(sb.wxcard.requests(), after_first + 2);
    let a = post(&gw, &create_body("cash", "缓存后新建"), None).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let before_list = sb.wxcard.requests();
    assert_eq!(
        ids(&list(&gw, "vendor=wxcard", false).await),
        ["1", "2", "3", "4", "5"],
        "the create dropped the cached list"
    );
    assert_eq!(sb.wxcard.requests(), before_list + 1);
}

/// wxcard's timeouts raised far above any scheduling delay, so that a request held by the
/// simulator stays in flight until the test lets it go.
fn patient_wxcard(t: String) -> String {
    t.replacen("timeout_ms: 2000", "timeout_ms: 60000", 1)
        .replacen("attempt_timeout_ms: 900", "attempt_timeout_ms: 30000", 1)
}

/// Fetches wxcard's token, then forgets every request so far: faults set afterwards meet the
/// template calls only.
async fn with_token(sb: &Sandbox, gw: &embedded::Running) {
    assert_eq!(list(gw, "vendor=wxcard", true).await.status, 200);
    assert_eq!(sb.token_requests(), 1);
    sb.wxcard.reset_counters();
}

fn creates(sb: &Sandbox) -> usize {
    sb.wxcard
        .received()
        .iter()
        .filter(|r| r.method == http::Method::POST && r.path != "/auth/token")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_never_retried_after_a_vendor_failure() {
    let (sb, gw) = setup().await;
    with_token(&sb, &gw).await;
    // a retry would succeed: only a gateway that never retries writes answers 502
    sb.wxcard.set_fault(Fault::FailFirst {
        times: 1,
        fault: Box::new(Fault::Status(503)),
    });
    let a = post(&gw, &create_body("cash", "只试一次"), None).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(creates(&sb), 1, "the create was sent once");
    let all = list(&gw, "vendor=wxcard", true).await;
    assert_eq!(all.body["page"]["total"], 4, "no template was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_vendor_failure_the_idempotency_key_is_free_again() {
    let (sb, gw) = setup().await;
    with_token(&sb, &gw).await;
    sb.wxcard.set_fault(Fault::FailFirst {
        times: 1,
        fault: Box::new(Fault::Status(500)),
    });
    let body = create_body("discount", "重试券");
    let failed = post(&gw, &body, Some("retry-me")).await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    // the failure is not remembered: the repeat asks the vendor and creates the template
    let again = post(&gw, &body, Some("retry-me")).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert!(again.headers.get("idempotent-replayed").is_none());
    assert_eq!(creates(&sb), 2);
    // and that answer is the one remembered
    let third = post(&gw, &body, Some("retry-me")).await;
    assert_eq!(third.status, 201);
    assert_eq!(third.headers["idempotent-replayed"], "true");
    assert_eq!(third.body["template"]["id"], again.body["template"]["id"]);
    assert_eq!(creates(&sb), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_key_is_in_flight_another_body_is_409_and_the_same_body_waits_for_its_answer() {
    let (sb, gw) = setup_with(patient_wxcard).await;
    with_token(&sb, &gw).await;
    sb.wxcard.set_fault(Fault::Hold);
    let gw = std::sync::Arc::new(gw);
    let body = create_body("gift", "在途券");
    let spawn_post = |body: Value| {
        let gw = gw.clone();
        tokio::spawn(async move { post(&gw, &body, Some("in-flight")).await })
    };
    let first = spawn_post(body.clone());
    support::within("the create reaches the vendor", sb.wxcard.wait_held(1)).await;
    let other = post(&gw, &create_body("gift", "另一张"), Some("in-flight")).await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    let same = spawn_post(body);
    sb.wxcard.release(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, 201, "{}", first.body);
    let same = same.await.unwrap();
    assert_eq!(same.status, 201, "{}", same.body);
    assert_eq!(same.body["template"]["id"], first.body["template"]["id"]);
    assert_eq!(creates(&sb), 1, "one template for the three requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_calls_that_time_out_answer_504() {
    let (sb, gw) = setup().await;
    with_token(&sb, &gw).await;
    sb.wxcard.set_fault(Fault::Hold);
    let a = post(&gw, &create_body("cash", "超时券"), None).await;
    assert_eq!(a.status, 504, "create: {}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    let a = list(&gw, "vendor=wxcard", true).await;
    assert_eq!(a.status, 504, "list: {}", a.body);
    let mut update = create_body("cash", "超时券");
    update.as_object_mut().unwrap().remove("vendor");
    let a = support::send(
        Request::put(gw.url("/v1/templates/wxcard/2"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(update.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 504, "update: {}", a.body);
    sb.wxcard.clear_fault();
}

#[tokio::test]
async fn template_bodies_must_be_json_and_within_the_limit() {
    let (sb, gw) = setup().await;
    let a = support::send(
        Request::post(gw.url("/v1/templates"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(create_body("cash", "x").to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 415, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    // over the 1 MiB body limit of the shipped routes.yaml
    let mut big = create_body("cash", "x");
    big["card"]["base_info"]["description"] = json!("x".repeat(1024 * 1024));
    let a = post(&gw, &big, None).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    let a = support::send(
        Request::put(gw.url("/v1/templates/wxcard/2"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 415, "{}", a.body);
    assert_eq!(sb.wxcard.requests(), 0, "nothing reached the vendor");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400_and_creates_nothing() {
    let (sb, gw) = setup().await;
    let long = "k".repeat(256);
    for key in ["", "two words", "tab\tkey", long.as_str()] {
        let a = post(&gw, &create_body("cash", "x"), Some(key)).await;
        assert_eq!(a.status, 400, "{key:?}: {}", a.body);
        assert!(
            a.body["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{key:?}: {}",
            a.body
        );
    }
    // not ASCII
    let a = support::send(
        Request::post(gw.url("/v1/templates"))
            .header("content-type", "application/json")
            .header(
                "idempotency-key",
                http::HeaderValue::from_bytes("键".as_bytes()).unwrap(),
            )
            .body(Full::new(Bytes::from(create_body("cash", "x").to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(sb.wxcard.requests(), 0, "nothing reached the vendor");
    // the longest valid key is fine
    let a = post(&gw, &create_body("cash", "x"), Some(&"k".repeat(255))).await;
    assert_eq!(a.status, 201, "{}", a.body);
}
