//! End to end over loopback: the gateway, configured by the shipped routes.yaml, against the
//! strict sandbox simulators. Expectations come from the data-set table in
//! src/sandbox/data.rs (dates are day offsets from today, UTC+08:00).
mod support;

use std::time::Duration;

use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::data::{self, day, ymd};
use coupon_gateway::sandbox::{Fault, Sandbox};
use serde_json::{Value, json};

async fn setup() -> (Sandbox, embedded::Running) {
    let sb = Sandbox::start().await.unwrap();
    let plan = embedded::sandbox_plan("routes.yaml", ROUTES_YAML, &sb, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (sb, embedded::start(plan, listener))
}

fn start_of(offset: i64) -> String {
    format!("{}T00:00:00+08:00", ymd(day(offset)))
}

fn end_of(offset: i64) -> String {
    format!("{}T23:59:59+08:00", ymd(day(offset)))
}

fn everyone() -> Value {
    json!({"ids": {"op": data::OP_MEMBER, "hkl": data::HKL_MEMBER, "zvcms": data::ZVCMS_MEMBER}})
}

async fn query(gw: &embedded::Running, body: Value) -> support::Answer {
    support::post_json(&gw.url("/v1/coupons/query"), &body).await
}

fn coupons(a: &support::Answer) -> &Vec<Value> {
    a.body["coupons"].as_array().expect("coupons")
}

fn find<'a>(a: &'a support::Answer, id: &str) -> &'a Value {
    coupons(a)
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {}", a.body))
}

fn source<'a>(a: &'a support::Answer, vendor: &str) -> &'a Value {
    a.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["vendor"] == vendor)
        .unwrap_or_else(|| panic!("no source {vendor} in {}", a.body))
}

fn op_id(nn: &str) -> String {
    format!("op:u0001c0ffee5a4d8b4e2f9a7c3e1b0d6f00{nn}")
}

/// API.md's order: usable, pending, the rest; then valid_until (null last), vendor, id.
fn assert_canonical_order(list: &[Value]) {
    let key = |c: &Value| {
        let rank = match c["status"].as_str().unwrap() {
            "usable" => 0,
            "pending" => 1,
            _ => 2,
        };
        let until = c["valid_until"]
            .as_str()
            .map(|u| u.parse::<jiff::Timestamp>().unwrap().as_second())
            .unwrap_or(i64::MAX);
        (
            rank,
            until,
            c["vendor"].as_str().unwrap().to_owned(),
            c["id"].as_str().unwrap().to_owned(),
        )
    };
    for pair in list.windows(2) {
        assert!(
            key(&pair[0]) <= key(&pair[1]),
            "out of order: {} then {}",
            pair[0]["id"],
            pair[1]["id"]
        );
    }
    let mut ids: Vec<&str> = list.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), list.len(), "an id appears twice");
}

#[tokio::test]
async fn coupons_from_three_vendors_are_merged_in_order() {
    let (_sb, gw) = setup().await;
    let a = query(&gw, json!({"member": everyone()})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["complete"], true);
    let vendors: Vec<&str> = a.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["vendor"].as_str().unwrap())
        .collect();
    assert_eq!(vendors, ["op", "hkl", "zvcms"], "routes.yaml order");
    for (vendor, count) in [("op", 11), ("hkl", 8), ("zvcms", 8)] {
        let s = source(&a, vendor);
        assert_eq!(s["outcome"], "ok", "{s}");
        assert_eq!(s["count"], count, "{s}");
        assert!(s["latency_ms"].is_u64());
        assert!(s.get("error").is_none());
    }
    assert_eq!(coupons(&a).len(), 27);
    assert_canonical_order(coupons(&a));
    assert_eq!(a.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn op_coupons_map_every_status_type_and_date_form() {
    let (_sb, gw) = setup().await;
    let a = query(&gw, json!({"member": {"ids": {"op": data::OP_MEMBER}}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let c01 = find(&a, &op_id("01"));
    assert_eq!(c01["vendor"], "op");
    assert_eq!(c01["kind"], "cash");
    assert_eq!(c01["amount_off"], 500);
    assert_eq!(c01["percent_off"], Value::Null);
    assert_eq!(c01["min_order"], 3000);
    assert_eq!(c01["max_discount"], 500);
    assert_eq!(c01["status"], "usable");
    assert_eq!(c01["valid_from"], start_of(-10));
    assert_eq!(c01["valid_until"], end_of(30));
    assert_eq!(c01["product_kinds"], json!(["咖啡"]));
    assert_eq!(
        c01["channels"],
        json!(["NewWear微信公共号", "找我 微信公众号"])
    );
    assert_eq!(c01["vendor_status"], "2");
    assert_eq!(c01["image_url"], Value::Null);
    assert_eq!(c01["usable_weekdays"], Value::Null);
    assert!(c01["code"].is_string() && c01["template_id"].is_string());

    let c02 = find(&a, &op_id("02"));
    assert_eq!(
        (c02["kind"].as_str(), c02["percent_off"].as_f64()),
        (Some("discount"), Some(15.0)),
        "8.5折"
    );
    assert_eq!(c02["amount_off"], Value::Null);
    assert_eq!(
        c02["status"], "pending",
        "usable per vendor, starts in 5 days"
    );
    assert_eq!(
        find(&a, &op_id("03"))["status"],
        "expired",
        "usable per vendor, ended 3 days ago"
    );
    let c04 = find(&a, &op_id("04"));
    assert_eq!(c04["percent_off"], 50.0, "5折");
    assert_eq!(
        (c04["valid_from"].as_str(), c04["valid_until"].as_str()),
        (Some(&*start_of(-7)), Some(&*end_of(14))),
        "yyyy-MM-dd strings"
    );
    assert_eq!(c04["product_kinds"], json!(["咖啡", "打车"]));
    // delayDay coupons run from createTime (day c 10:00) for delayDay × 24 h
    let c05 = find(&a, &op_id("05"));
    assert_eq!(
        c05["valid_from"],
        format!("{}T10:00:00+08:00", ymd(day(-5)))
    );
    assert_eq!(
        c05["valid_until"],
        format!("{}T10:00:00+08:00", ymd(day(25)))
    );
    assert_eq!(c05["status"], "usable");
    assert_eq!(find(&a, &op_id("06"))["status"], "expired");
    assert_eq!(
        find(&a, &op_id("07"))["status"],
        "pending",
        "not yet valid per vendor and dates"
    );
    for (nn, status, raw) in [
        ("08", "frozen", "3"),
        ("09", "used", "4"),
        ("10", "expired", "5"),
        ("11", "closed", "6"),
    ] {
        let c = find(&a, &op_id(nn));
        assert_eq!(
            (c["status"].as_str(), c["vendor_status"].as_str()),
            (Some(status), Some(raw)),
            "coupon {nn}"
        );
    }
}

#[tokio::test]
async fn hkl_coupons_by_member_or_openid_with_time_and_week_limits() {
    let (sb, gw) = setup().await;
    let by_id = query(&gw, json!({"member": {"ids": {"hkl": data::HKL_MEMBER}}})).await;
    let by_openid = query(&gw, json!({"member": {"openid": data::HKL_OPENID}})).await;
    assert_eq!(by_openid.status, 200, "{}", by_openid.body);
    assert_eq!(
        coupons(&by_id),
        coupons(&by_openid),
        "the openid reaches the same member"
    );
    let a = by_openid;
    assert_eq!(source(&a, "op")["outcome"], "skipped");
    assert_eq!(source(&a, "op")["error"], "no identity for op");
    let f0 = find(&a, "hkl:K1H93QDM600F0");
    assert_eq!(f0["code"], "7270000006699");
    assert_eq!(f0["template_id"], "H3UA24SI6830");
    assert_eq!(f0["kind"], "cash");
    assert_eq!(
        f0["amount_off"],
        Value::Null,
        "hkl does not send the amount"
    );
    assert_eq!(f0["status"], "usable");
    assert_eq!(
        (f0["valid_from"].as_str(), f0["valid_until"].as_str()),
        (Some(&*start_of(-10)), Some(&*end_of(30)))
    );
    let image = f0["image_url"].as_str().unwrap();
    assert!(
        image.starts_with(&format!("{}/", sb.hkl.base_url())),
        "relative path resolved: {image}"
    );
    assert_eq!(f0["usable_hours"], Value::Null);
    assert_eq!(f0["channels"], json!([]));
    assert_eq!(find(&a, "hkl:K1H93QDLQ00E1")["status"], "pending");
    assert_eq!(find(&a, "hkl:K1H93QDLD00D5")["status"], "expired");
    let j7 = find(&a, "hkl:K1H93QDO800J7");
    assert!(j7["image_url"].as_str().unwrap().starts_with("https://"));
    assert_eq!(j7["usable_weekdays"], json!([1, 2, 3, 4, 5, 6, 7]));
    let g0 = find(&a, "hkl:K1H93QDMO00G0");
    assert_eq!(
        g0["usable_hours"],
        json!([{"from": "11:00", "to": "14:00"}])
    );
    assert_eq!(g0["usable_weekdays"], json!([1, 2, 3, 4, 5]));
    assert_eq!(
        find(&a, "hkl:K1H93QDN400H6")["usable_weekdays"],
        json!([6, 7])
    );
    assert_eq!(find(&a, "hkl:K1H93QDNN00I9")["status"], "used");
    let k9 = find(&a, "hkl:K1H93QDOM00K9");
    assert_eq!(
        (k9["status"].as_str(), k9["vendor_status"].as_str()),
        (Some("expired"), Some("2"))
    );
}

#[tokio::test]
async fn zvcms_coupons_map_every_type_and_status_and_both_data_shapes() {
    let (_sb, gw) = setup().await;
    let a = query(
        &gw,
        json!({"member": {"ids": {"zvcms": data::ZVCMS_MEMBER}}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let expect = [
        ("65", "other", "usable"),
        ("66", "free_item", "pending"),
        ("67", "exchange", "expired"),
        ("68", "buy_x_get_y", "used"),
        ("69", "product", "frozen"),
        ("70", "free_shipping", "expired"),
        ("71", "queue_skip", "deleted"),
        ("72", "parking", "usable"),
    ];
    for (n, kind, status) in expect {
        let id = format!("zvcms:3909134454982000{n}");
        let c = find(&a, &id);
        assert_eq!(
            (c["kind"].as_str(), c["status"].as_str()),
            (Some(kind), Some(status)),
            "{id}"
        );
        assert_eq!(
            c["code"],
            c["id"].as_str().unwrap().trim_start_matches("zvcms:")
        );
    }
    let c65 = find(&a, "zvcms:390913445498200065");
    assert_eq!(c65["template_id"], "951");
    assert_eq!(c65["valid_from"], start_of(-10));
    assert_eq!(c65["valid_until"], end_of(30));
    assert_eq!(
        find(&a, "zvcms:390913445498200066")["template_id"],
        "895",
        "a number sent as a number"
    );

    // one coupon sent as an object, not an array
    let one = query(
        &gw,
        json!({"member": {"ids": {"zvcms": data::ZVCMS_SINGLE}}}),
    )
    .await;
    assert_eq!(coupons(&one).len(), 1);
    assert_eq!(coupons(&one)[0]["id"], "zvcms:401588390180519937");
    // "查询的信息不存在" is an empty answer, not an error
    let none = query(&gw, json!({"member": {"ids": {"zvcms": data::ZVCMS_NONE}}})).await;
    assert_eq!(none.status, 200);
    assert_eq!(source(&none, "zvcms")["outcome"], "ok");
    assert_eq!(source(&none, "zvcms")["count"], 0);
    assert_eq!(none.body["complete"], true);
}

#[tokio::test]
async fn filters_apply_to_effective_status_kinds_and_vendors() {
    let (_sb, gw) = setup().await;
    let a = query(&gw, json!({"member": everyone(), "status": ["usable"]})).await;
    assert!(coupons(&a).iter().all(|c| c["status"] == "usable"));
    // op 01 04 05, hkl F0 J7 G0 H6, zvcms 65 72
    assert_eq!(coupons(&a).len(), 9, "{}", a.body);
    assert_eq!(source(&a, "op")["count"], 11, "count is before filters");
    let a = query(
        &gw,
        json!({"member": everyone(), "kinds": ["discount"], "status": ["usable", "pending"]}),
    )
    .await;
    let ids: Vec<&str> = coupons(&a)
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [op_id("04"), op_id("02")],
        "usable first, then pending"
    );
    let a = query(&gw, json!({"member": everyone(), "vendors": ["hkl"]})).await;
    let vendors: Vec<&str> = a.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["vendor"].as_str().unwrap())
        .collect();
    assert_eq!(vendors, ["hkl"]);
    assert!(coupons(&a).iter().all(|c| c["vendor"] == "hkl"));
}

#[tokio::test]
async fn cursor_pages_cover_the_merged_list_exactly_once() {
    let (_sb, gw) = setup().await;
    let whole = query(&gw, json!({"member": everyone()})).await;
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for page in 0.. {
        assert!(page < 10, "too many pages");
        let a = query(
            &gw,
            json!({"member": everyone(), "limit": 5, "cursor": cursor}),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(coupons(&a).len() <= 5);
        seen.extend(coupons(&a).iter().cloned());
        cursor = a.body["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(&seen, coupons(&whole));
}

#[tokio::test]
async fn one_vendor_down_is_a_partial_answer() {
    let (sb, gw) = setup().await;
    sb.op.set_fault(Fault::RefuseConnections);
    let a = query(&gw, json!({"member": everyone()})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["complete"], false);
    let op = source(&a, "op");
    assert_eq!(op["outcome"], "error");
    assert_eq!(op["count"], 0);
    assert!(op["error"].as_str().unwrap().contains("connect"), "{op}");
    assert_eq!(source(&a, "hkl")["outcome"], "ok");
    assert_eq!(coupons(&a).len(), 16);
    sb.op.clear_fault();
    let a = query(&gw, json!({"member": everyone()})).await;
    assert_eq!(
        a.body["complete"], true,
        "back on the same port: {}",
        a.body
    );
}

#[tokio::test]
async fn every_vendor_failing_is_502_with_sources() {
    let (sb, gw) = setup().await;
    sb.op.set_fault(Fault::Status(500));
    sb.hkl.set_fault(Fault::Html);
    sb.zvcms.set_fault(Fault::BusinessError);
    let a = query(&gw, json!({"member": everyone()})).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert_eq!(source(&a, "op")["error"], "HTTP 500");
    assert_eq!(source(&a, "hkl")["error"], "answer is not JSON");
    assert_eq!(source(&a, "zvcms")["error"], "vendor error 50000: 系统错误");
    assert!(
        a.body["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "error")
    );
}

#[tokio::test]
async fn a_slow_vendor_times_out_within_its_deadline_without_delaying_others() {
    let (sb, gw) = setup().await;
    // held until the end of the test: only hkl's deadline can end its call
    sb.hkl.set_fault(Fault::Hold);
    let a = query(&gw, json!({"member": everyone()})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let hkl = source(&a, "hkl");
    assert_eq!(hkl["outcome"], "timeout");
    assert_eq!(hkl["error"], "no answer within 800 ms");
    let latency = hkl["latency_ms"].as_u64().unwrap();
    // at least the deadline; an upper bound is the scheduler's business, not this test's
    assert!(latency >= 800, "{latency}");
    // the others answered (each within its own 800 ms deadline)
    for vendor in ["op", "zvcms"] {
        assert_eq!(source(&a, vendor)["outcome"], "ok", "{vendor}");
    }
    sb.hkl.clear_fault();
}

#[tokio::test]
async fn every_vendor_timing_out_is_504() {
    let (sb, gw) = setup().await;
    for (_, sim) in sb.vendors() {
        sim.set_fault(Fault::Delay(Duration::from_secs(5)));
    }
    let a = query(&gw, json!({"member": everyone()})).await;
    assert_eq!(a.status, 504, "{}", a.body);
    assert!(
        a.body["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "timeout")
    );
}

#[tokio::test]
async fn members_without_identities_are_skipped_not_asked() {
    let (sb, gw) = setup().await;
    let a = query(&gw, json!({"member": {"ids": {"op": data::OP_MEMBER2}}})).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["complete"], true);
    assert_eq!(source(&a, "hkl")["outcome"], "skipped");
    assert_eq!(source(&a, "zvcms")["error"], "no identity for zvcms");
    assert_eq!(sb.hkl.requests(), 0);
    assert_eq!(sb.zvcms.requests(), 0);
    let a = query(&gw, json!({"member": {}})).await;
    assert_eq!(a.status, 200, "all skipped is still an answer");
    assert_eq!(coupons(&a).len(), 0);
}

#[tokio::test]
async fn vendor_calls_are_counted_in_metrics() {
    let (_sb, gw) = setup().await;
    query(&gw, json!({"member": everyone()})).await;
    let text = String::from_utf8(support::get(&gw.url("/metrics")).await.raw.to_vec()).unwrap();
    for vendor in ["op", "hkl", "zvcms"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("cgw_vendor_calls_total")
                    && l.contains(&format!("vendor=\"{vendor}\""))
                    && l.contains("outcome=\"ok\"")
                    && l.contains("operation=\"list_coupons\"")
            })
            .unwrap_or_else(|| panic!("no ok counter for {vendor}:\n{text}"));
        assert!(line.contains("operation=\"list_coupons\""), "{line}");
    }
    assert!(!text.contains(data::OP_MEMBER), "no member id in metrics");
    assert!(!text.contains("op-sandbox-secret"));
}
