//! 1,000 malformed requests in a row over loopback leave the process's resident memory and
//! its tokio task count flat. Alone in its binary, so that no other test moves the numbers.
mod support;

use bytes::Bytes;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::Sandbox;
use http::Request;
use http_body_util::Full;

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_requests_leave_memory_and_tasks_flat() {
    let sb = Sandbox::start().await.unwrap();
    let plan = embedded::sandbox_plan("routes.yaml", ROUTES_YAML, &sb, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = embedded::start(plan, listener);
    let client = support::client();
    let bodies: Vec<Bytes> = vec![
        Bytes::from_static(b"{"),
        Bytes::from_static(br#"{"member":{},"kind":["cash"]}"#),
        Bytes::from_static(br#"{"member":{},"limit":1,"limit":2}"#),
        Bytes::from_static(br#"{"member":{"ids":{"nope":"x"}}}"#),
        Bytes::from_static(br#"{"member":{},"cursor":"abc.def"}"#),
        Bytes::from(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
    ];
    let round = |n: usize| {
        let client = client.clone();
        let bodies = bodies.clone();
        let url = gw.url("/v1/coupons/query");
        async move {
            for i in 0..n {
                let req = Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(bodies[i % bodies.len()].clone()))
                    .unwrap();
                let res = client.request(req).await.expect("an answer");
                assert_eq!(res.status(), 400, "request {i}");
                use http_body_util::BodyExt;
                res.into_body().collect().await.unwrap();
            }
        }
    };
    let metrics = tokio::runtime::Handle::current().metrics();
    // warm up: connections, buffers and lazy statics settle
    round(200).await;
    let (tasks_before, rss_before) = (metrics.num_alive_tasks(), rss_kib());
    round(1000).await;
    // tasks that end after their answer (a connection's, a log flush) may take a moment:
    // waited for, not slept past
    let what = format!("alive tasks back to at most {tasks_before} + 2");
    support::until(&what, || {
        let alive = metrics.num_alive_tasks();
        async move { alive <= tasks_before + 2 }
    })
    .await;
    let rss_after = rss_kib();
    // a leak of even 1 KiB per request would show as ~1 MiB
    assert!(
        rss_after <= rss_before + 4096,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
