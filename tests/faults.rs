//! The fault suite: the gateway against sandbox vendors that misbehave, over real sockets.
//! For every fault the answer comes within the vendor deadline plus a small margin, with the
//! right outcome and no panic; tasks and memory stay bounded; and the cache, the breaker and
//! the retry budget keep their promises.
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::data::{self};
use coupon_gateway::sandbox::{Fault, Sandbox};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

/// Far longer than op's deadline (800 ms in the shipped routes.yaml): an answer that takes this
/// long means the deadline did not hold. A sanity limit, not a speed test.
const DEADLINE_BROKEN: Duration = Duration::from_secs(8);

async fn gateway(sb: &Sandbox, edit: impl Fn(String) -> String) -> embedded::Running {
    let plan =
        embedded::sandbox_plan("routes.yaml", &edit(ROUTES_YAML.to_owned()), sb, false).unwrap();
    embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

/// Asks for an op member's coupons, bypassing the cache unless `cached`.
async fn ask_op(gw: &embedded::Running, cached: bool) -> support::Answer {
    let mut req =
        Request::post(gw.url("/v1/coupons/query")).header("content-type", "application/json");
    if !cached {
        req = req.header("cache-control", "no-cache");
    }
    let body = json!({"member": {"ids": {"op": data::OP_MEMBER}}});
    support::send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

fn op_source(a: &support::Answer) -> &Value {
    &a.body["sources"][0]
}

/// Resident memory of this process in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_answered_in_time_with_the_right_outcome() {
    let sb = Sandbox::start().await.unwrap();
    // without stale-if-error and the breaker, so each fault shows as itself (both have their
    // own tests; eleven faults in a row would rightly open the circuit)
    let gw = gateway(&sb, |t| {
        t.replace("stale_if_error_ms: 600000", "stale_if_error_ms: 0")
            .replacen("min_calls: 20", "min_calls: 100000", 1)
    })
    .await;
    let cases: Vec<(&str, Fault, &str, &str)> = vec![
        (
            "refused connection",
            Fault::RefuseConnections,
            "error",
            "cannot connect",
        ),
        (
            "reset mid-body",
            Fault::ResetMidBody,
            "error",
            "answer cut off",
        ),
        ("HTTP 500", Fault::Status(500), "error", "HTTP 500"),
        (
            "HTML instead of JSON",
            Fault::Html,
            "error",
            "answer is not JSON",
        ),
        (
            "truncated JSON",
            Fault::TruncatedJson,
            "error",
            "answer is not JSON",
        ),
        (
            "10 MB body",
            Fault::HugeBody(10 * 1024 * 1024),
            "error",
            "answer larger than 4194304 bytes",
        ),
        (
            // valid JSON, too deep to parse whole: the members the operation reads are
            // looked for without recursion, and there are none
            "deeply nested JSON",
            Fault::DeepNesting(100_000),
            "error",
            "unexpected answer: the answer has no `$.code`",
        ),
        (
            "slow first byte",
            Fault::Delay(Duration::from_secs(30)),
            "timeout",
            "no answer within 800 ms",
        ),
        (
            "slow trickling body",
            Fault::TrickleBody(Duration::from_millis(100)),
            "timeout",
            "no answer within 800 ms",
        ),
        (
            "wrong types in fields",
            Fault::WrongTypes,
            "error",
            "items could be read",
        ),
        (
            "business error",
            Fault::BusinessError,
            "error",
            "vendor error 500: 系统异常",
        ),
    ];
    for (name, fault, outcome, error) in cases {
        sb.op.set_fault(fault);
        let started = Instant::now();
        let a = ask_op(&gw, false).await;
        let took = started.elapsed();
        sb.op.clear_fault();
        let src = op_source(&a);
        assert_eq!(
            a.status,
            if outcome == "timeout" { 504 } else { 502 },
            "{name}: {}",
            a.body
        );
        assert_eq!(
            a.headers["content-type"], "application/problem+json",
            "{name}"
        );
        assert_eq!(src["outcome"], outcome, "{name}: {src}");
        assert!(
            src["error"].as_str().unwrap().contains(error),
            "{name}: {src}"
        );
        assert!(took < DEADLINE_BROKEN, "{name} took {took:?}");
        // the gateway is still healthy after it
        let ok = ask_op(&gw, false).await;
        assert_eq!(ok.status, 200, "{name}: the next call failed: {}", ok.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_leak_no_tasks_and_memory_stays_bounded() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let round = |n: usize| {
        let gw = &gw;
        let sb = &sb;
        async move {
            for i in 0..n {
                let fault = match i % 4 {
                    0 => Fault::HugeBody(10 * 1024 * 1024),
                    1 => Fault::ResetMidBody,
                    // held past the deadline; the next set_fault lets it go
                    2 => Fault::Hold,
                    _ => Fault::TruncatedJson,
                };
                sb.op.set_fault(fault);
                let a = ask_op(gw, false).await;
                assert!(a.status.is_server_error(), "{}", a.body);
            }
            sb.op.clear_fault();
            support::until("the simulator holds nothing", || async {
                sb.op.held() == 0
            })
            .await;
        }
    };
    round(8).await;
    let (tasks_before, rss_before) = (metrics.num_alive_tasks(), rss());
    round(24).await;
    // a leak would grow with the number of faulty calls (24 more here) and never settle;
    // connections that are merely closing settle soon
    support::until("the tasks of 24 faulty calls end", || async {
        metrics.num_alive_tasks() <= tasks_before + 6
    })
    .await;
    let rss_after = rss();
    // six 10 MB answers were refused at the 4 MiB limit without being kept
    let grown = rss_after.saturating_sub(rss_before);
    assert!(
        grown < 48 * 1024 * 1024,
        "memory grew by {} MiB",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_queries_make_one_vendor_call() {
    let sb = Sandbox::start().await.unwrap();
    // a slow vendor keeps all hundred queries in flight together
    sb.op.set_fault(Fault::Delay(Duration::from_millis(300)));
    // deadlines far above the delay: on a loaded machine the first attempt must not time out
    // and be retried (a second vendor call that says nothing about coalescing)
    let gw = gateway(&sb, |t| {
        t.replacen("timeout_ms: 800", "timeout_ms: 60000", 1)
            .replacen("attempt_timeout_ms: 450", "attempt_timeout_ms: 30000", 1)
    })
    .await;
    let mut set = tokio::task::JoinSet::new();
    let url = gw.url("/v1/coupons/query");
    for _ in 0..100 {
        let url = url.clone();
        set.spawn(async move {
            support::post_json(&url, &json!({"member": {"ids": {"op": data::OP_MEMBER}}})).await
        });
    }
    let mut misses = 0;
    while let Some(a) = set.join_next().await {
        let a = a.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(op_source(&a)["count"], 11);
        misses += usize::from(op_source(&a)["cache"] == "miss");
    }
    assert_eq!(sb.op.requests(), 1, "coalesced into one vendor call");
    assert_eq!(misses, 1);
    // and the next one is a plain hit
    let a = ask_op(&gw, true).await;
    assert_eq!(op_source(&a)["cache"], "hit");
    assert_eq!(sb.op.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_vendor_is_served_stale_within_the_window() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t.replace("ttl_ms: 30000", "ttl_ms: 200")).await;
    let fresh = ask_op(&gw, true).await;
    assert_eq!(op_source(&fresh)["cache"], "miss");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sb.op.set_fault(Fault::Status(503));
    let a = ask_op(&gw, true).await;
    assert_eq!(a.status, 200, "stale coupons are an answer: {}", a.body);
    let src = op_source(&a);
    assert_eq!(
        src["outcome"], "error",
        "the outcome still names the failure"
    );
    assert_eq!(src["cache"], "stale");
    assert_eq!(src["count"], 11);
    assert_eq!(a.body["complete"], false);
    assert_eq!(a.body["coupons"].as_array().unwrap().len(), 11);
    // no-cache also falls back to the last good answer when the vendor fails
    let a = ask_op(&gw, false).await;
    assert_eq!(op_source(&a)["cache"], "stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_probes_and_closes() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        t.replacen("min_calls: 20", "min_calls: 4", 1)
            .replacen("open_ms: 5000", "open_ms: 400", 1)
            .replacen("max_attempts: 2", "max_attempts: 1", 1)
    })
    .await;
    sb.op.set_fault(Fault::Status(500));
    for _ in 0..4 {
        assert_eq!(op_source(&ask_op(&gw, false).await)["outcome"], "error");
    }
    let vendors = support::get(&gw.url("/v1/vendors")).await;
    assert_eq!(
        vendors.body["vendors"][0]["circuit"], "open",
        "{}",
        vendors.body
    );
    let asked = sb.op.requests();
    let a = ask_op(&gw, false).await;
    assert_eq!(op_source(&a)["outcome"], "circuit_open", "{}", a.body);
    assert_eq!(
        sb.op.requests(),
        asked,
        "an open circuit does not call the vendor"
    );
    // after open_ms a probe goes through; the vendor is healthy again, so it closes
    sb.op.clear_fault();
    support::until("the circuit turns half-open", || {
        circuit_is(&gw, "half_open")
    })
    .await;
    let a = ask_op(&gw, false).await;
    assert_eq!(op_source(&a)["outcome"], "ok", "{}", a.body);
    let vendors = support::get(&gw.url("/v1/vendors")).await;
    assert_eq!(vendors.body["vendors"][0]["circuit"], "closed");
}

async fn circuit_is(gw: &embedded::Running, state: &str) -> bool {
    support::get(&gw.url("/v1/vendors")).await.body["vendors"][0]["circuit"] == state
}

/// op's timeouts raised far above any scheduling delay, so that a request held by the
/// simulator stays in flight until the test lets it go.
fn patient_op(t: String) -> String {
    t.replacen("timeout_ms: 800", "timeout_ms: 60000", 1)
        .replacen("attempt_timeout_ms: 450", "attempt_timeout_ms: 30000", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_circuit_lets_exactly_the_configured_probes_through() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        patient_op(t)
            .replacen("min_calls: 20", "min_calls: 4", 1)
            .replacen("open_ms: 5000", "open_ms: 200", 1)
            .replacen("max_attempts: 2", "max_attempts: 1", 1)
    })
    .await;
    assert!(ROUTES_YAML.contains("half_open_probes: 2"));
    sb.op.set_fault(Fault::Status(500));
    for _ in 0..4 {
        assert_eq!(op_source(&ask_op(&gw, false).await)["outcome"], "error");
    }
    assert!(circuit_is(&gw, "open").await);
    // the probes reach the vendor and stay there until released
    sb.op.set_fault(Fault::Hold);
    support::until("the circuit turns half-open", || {
        circuit_is(&gw, "half_open")
    })
    .await;
    let gw = std::sync::Arc::new(gw);
    let probes: Vec<_> = (0..2)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { ask_op(&gw, false).await })
        })
        .collect();
    support::within("two probes reach the vendor", sb.op.wait_held(2)).await;
    let asked = sb.op.requests();
    let third = ask_op(&gw, false).await;
    assert_eq!(
        op_source(&third)["outcome"],
        "circuit_open",
        "a third caller while two probes are out: {}",
        third.body
    );
    assert_eq!(
        sb.op.requests(),
        asked,
        "the third call never reached the vendor"
    );
    sb.op.clear_fault();
    for probe in probes {
        let a = probe.await.unwrap();
        assert_eq!(op_source(&a)["outcome"], "ok", "{}", a.body);
    }
    assert!(circuit_is(&gw, "closed").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_succeeds_after_one_failure_with_a_fresh_signature_and_nonce() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t).await;
    sb.zvcms.set_fault(Fault::FailFirst {
        times: 1,
        fault: Box::new(Fault::Status(503)),
    });
    let a = support::send(
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from(
                json!({"member": {"ids": {"zvcms": data::ZVCMS_MEMBER}}, "vendors": ["zvcms"]})
                    .to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "ok", "{src}");
    assert!(src["count"].as_u64().unwrap() > 0, "{src}");
    let attempts = sb.zvcms.received();
    assert_eq!(attempts.len(), 2, "one failure, one retry");
    let auth = |i: usize| -> (Value, Value) {
        let body: Value = serde_json::from_slice(&attempts[i].body).unwrap();
        (body["nonce"].clone(), body["token"].clone())
    };
    let (first, second) = (auth(0), auth(1));
    assert!(first.0.is_string() && first.1.is_string(), "{first:?}");
    assert_ne!(first.0, second.0, "the retry has a fresh nonce");
    assert_ne!(first.1, second.1, "the retry is signed afresh");
    let text = String::from_utf8(support::get(&gw.url("/metrics")).await.raw.to_vec()).unwrap();
    assert!(
        text.contains("cgw_vendor_retries_total{vendor=\"zvcms\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendors_are_asked_concurrently_not_one_after_another() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        t.replace("timeout_ms: 800", "timeout_ms: 60000")
            .replace("attempt_timeout_ms: 450", "attempt_timeout_ms: 30000")
    })
    .await;
    for sim in [&sb.op, &sb.hkl, &sb.zvcms] {
        sim.set_fault(Fault::Hold);
    }
    let url = gw.url("/v1/coupons/query");
    let query = tokio::spawn(async move {
        support::send(
            Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(
                    Bytes::from(coupon_gateway::sandbox::demo_query()),
                ))
                .unwrap(),
        )
        .await
    });
    // asked one after another, the second vendor would never hear of it while the first is held
    support::within("all three vendors asked at once", async {
        sb.op.wait_held(1).await;
        sb.hkl.wait_held(1).await;
        sb.zvcms.wait_held(1).await;
    })
    .await;
    sb.clear_faults();
    let a = query.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    for src in a.body["sources"].as_array().unwrap() {
        assert_eq!(src["outcome"], "ok", "{src}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_body_over_the_limit_is_refused_before_it_ends() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t).await;
    // 5 MiB (over the 4 MiB limit), then the body neither goes on nor ends: only a gateway
    // that counts while it reads can say "too large"; one that reads to the end first waits
    // for the deadline
    sb.op.set_fault(Fault::StalledBody(5 * 1024 * 1024));
    let a = ask_op(&gw, false).await;
    assert_eq!(a.status, 502, "{}", a.body);
    let src = op_source(&a);
    assert_eq!(src["outcome"], "error", "{src}");
    assert_eq!(src["error"], "answer larger than 4194304 bytes", "{src}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_that_cannot_be_read_are_dropped_and_counted() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t).await;
    let good = json!({"_id": "good-1", "userTicketCode": "C1", "ticketCode": "T1",
        "ticketName": "5元券", "ticketType": 1, "ticketAmount": 500, "useStatus": 2,
        "ticketRule": {"useStartTime": "2026-01-01", "useEndTime": "2099-12-31"}});
    let bad = |n: u32| json!({"_id": {"oid": n}, "useStatus": [n]});
    let body = json!({"code": 200, "message": "ok", "data": [bad(1), good, bad(2)]});
    sb.op.set_fault(Fault::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: Bytes::from(body.to_string()),
    });
    let a = ask_op(&gw, false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let src = op_source(&a);
    assert_eq!(src["outcome"], "ok", "{src}");
    assert_eq!(
        (src["count"].as_u64(), src["dropped"].as_u64()),
        (Some(1), Some(2)),
        "{src}"
    );
    assert_eq!(a.body["coupons"][0]["id"], "op:good-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_stale_window_a_failing_vendor_is_not_served_stale() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        t.replacen("ttl_ms: 30000", "ttl_ms: 100", 1)
            .replacen("stale_if_error_ms: 600000", "stale_if_error_ms: 200", 1)
            .replacen("max_attempts: 2", "max_attempts: 1", 1)
    })
    .await;
    assert_eq!(op_source(&ask_op(&gw, true).await)["cache"], "miss");
    // real time, as the cache (moka) measures it; only a lower bound matters here
    tokio::time::sleep(Duration::from_millis(600)).await;
    sb.op.set_fault(Fault::Status(503));
    let a = ask_op(&gw, true).await;
    assert_eq!(
        a.status, 502,
        "a 300 ms old answer is past ttl + stale: {}",
        a.body
    );
    assert_eq!(op_source(&a)["cache"], "miss", "{}", a.body);
    assert_eq!(op_source(&a)["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_rps_cap_keeps_calls_within_the_quota() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        t.replacen("rps: 1000", "rps: 1", 1)
            .replacen("burst: 200", "burst: 1", 1)
            .replacen("queue_ms: 50", "queue_ms: 0", 1)
    })
    .await;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(op_source(&ask_op(&gw, false).await)["outcome"].clone());
    }
    let secs = started.elapsed().as_secs();
    let ok = outcomes.iter().filter(|o| *o == "ok").count() as u64;
    let limited = outcomes.iter().filter(|o| *o == "rate_limited").count() as u64;
    assert_eq!(ok + limited, 5, "{outcomes:?}");
    assert!(
        ok >= 1,
        "the burst lets the first call through: {outcomes:?}"
    );
    // one call per second, plus the burst of one
    assert!(ok <= 1 + secs, "{ok} calls in {secs} s: {outcomes:?}");
    assert_eq!(sb.op.requests(), ok, "refused calls never reach the vendor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_failing_vendor_stay_within_the_budget() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        t.replacen("max_attempts: 2", "max_attempts: 3", 1)
            .replacen("min_calls: 20", "min_calls: 100000", 1) // keep the breaker out of it
    })
    .await;
    // every call fails: without a budget, 40 calls would make 120 attempts
    sb.op.set_fault(Fault::Status(500));
    for _ in 0..40 {
        assert_eq!(op_source(&ask_op(&gw, false).await)["outcome"], "error");
    }
    let attempts = sb.op.requests();
    // 40 first attempts, plus 20 % of them, plus the budget's small per-second reserve
    assert!(
        (41..=40 + 8 + 12).contains(&attempts),
        "{attempts} attempts"
    );
    let text = String::from_utf8(support::get(&gw.url("/metrics")).await.raw.to_vec()).unwrap();
    assert!(
        text.contains("cgw_vendor_retries_total{vendor=\"op\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_timeout_is_retried_within_the_deadline() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t).await;
    // every attempt is slower than attempt_timeout_ms (450): the first is cut off and retried
    sb.zvcms.set_fault(Fault::Delay(Duration::from_millis(600)));
    let a = support::send(
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from(
                json!({"member": {"ids": {"zvcms": data::ZVCMS_MEMBER}}, "vendors": ["zvcms"]})
                    .to_string(),
            )))
            .unwrap(),
    )
    .await;
    // the retry is slow too, so the vendor deadline (800 ms) ends the call as a timeout
    let src = &a.body["sources"][0];
    assert_eq!(src["outcome"], "timeout", "{src}");
    assert!(
        sb.zvcms.requests() >= 2,
        "retried after the attempt timeout"
    );
    sb.zvcms.clear_fault();
    let a = support::post_json(
        &gw.url("/v1/coupons/query"),
        &json!({"member": {"ids": {"zvcms": data::ZVCMS_MEMBER}}, "vendors": ["zvcms"]}),
    )
    .await;
    assert_eq!(a.body["sources"][0]["outcome"], "ok", "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_echoing_a_credential_does_not_leak_it() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t).await;
    let client = coupon_gateway::sandbox::OP_CLIENT;
    let echo = format!(r#"{{"code":403,"message":"unknown client {client}","data":null}}"#);
    sb.op.set_fault(Fault::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: Bytes::from(echo),
    });
    let a = ask_op(&gw, false).await;
    assert_eq!(
        op_source(&a)["error"],
        "vendor error 403: unknown client …",
        "{}",
        a.body
    );
    assert!(!String::from_utf8_lossy(&a.raw).contains(client));
    let text = String::from_utf8(support::get(&gw.url("/metrics")).await.raw.to_vec()).unwrap();
    assert!(!text.contains(client));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_asking_for_missing_packages_do_not_open_the_circuit() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| t.replace("min_calls: 20", "min_calls: 4")).await;
    for n in 0..8 {
        let a = support::get(&gw.url(&format!("/v1/packages/op/missing{n}"))).await;
        assert_eq!(a.status, 404, "{}", a.body);
    }
    let vendors = support::get(&gw.url("/v1/vendors")).await;
    assert_eq!(
        vendors.body["vendors"][0]["circuit"], "closed",
        "a 404 is not the vendor failing"
    );
    assert_eq!(op_source(&ask_op(&gw, false).await)["outcome"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_outbound_cap_a_call_is_reported_rate_limited() {
    let sb = Sandbox::start().await.unwrap();
    let gw = gateway(&sb, |t| {
        patient_op(t)
            .replacen("max_concurrency: 256", "max_concurrency: 1", 1)
            .replacen("queue_ms: 50", "queue_ms: 10", 1)
    })
    .await;
    sb.op.set_fault(Fault::Hold);
    let gw = std::sync::Arc::new(gw);
    let first = {
        let gw = gw.clone();
        tokio::spawn(async move { ask_op(&gw, false).await })
    };
    // the first call holds the only slot while the vendor holds it
    support::within("the first call reaches the vendor", sb.op.wait_held(1)).await;
    let second = ask_op(&gw, false).await;
    assert_eq!(
        op_source(&second)["outcome"],
        "rate_limited",
        "{}",
        second.body
    );
    assert_eq!(second.status, 502);
    sb.op.clear_fault();
    let first = first.await.unwrap();
    assert_eq!(op_source(&first)["outcome"], "ok", "{}", first.body);
    assert_eq!(
        sb.op.requests(),
        1,
        "the refused call never reached the vendor"
    );
}
