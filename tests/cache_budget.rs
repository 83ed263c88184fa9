//! One memory budget for every cache (`server.cache_max_bytes`), shown at the metrics: with far
//! more distinct members than fit, the weighed bytes stay within the budget, entries are evicted
//! for size, and the budget itself is a gauge. One test in its binary: the metrics recorder is
//! global to the process.
mod support;

use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::sandbox::Sandbox;
use serde_json::json;

fn series_sum(text: &str, family: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(family) && l[family.len()..].starts_with('{') && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_members_beyond_the_budget_stay_within_it() {
    const BUDGET: f64 = 1_048_576.0;
    let sb = Sandbox::start().await.unwrap();
    let routes = ROUTES_YAML.replace("cache_max_bytes: 67108864", "cache_max_bytes: 1048576");
    assert_ne!(
        routes, ROUTES_YAML,
        "routes.yaml sets server.cache_max_bytes"
    );
    let plan = embedded::sandbox_plan("routes.yaml", &routes, &sb, false).unwrap();
    let gw = embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let url = gw.url("/v1/coupons/query");
    // ~1,000 bytes of key and record per entry, three vendors per member: several times the budget
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let url = url.clone();
        tasks.spawn(async move {
            for i in 0..150 {
                let n = worker * 1_000 + i;
                let member = json!({"member": {"ids": {
                    "op": format!("u0001{n:010}"),
                    "hkl": format!("K1H93Q{n:07}"),
                    "zvcms": format!("3839330{n:011}"),
                }}});
                let a = support::post_json(&url, &member).await;
                assert_eq!(a.status, 200, "{}", a.body);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // moka applies evictions in batches (and the store's housekeeping each second): ask until
    // the last ones are counted
    let text = support::within("the cache settles within its budget", async {
        loop {
            let raw = support::get(&gw.url("/metrics")).await.raw;
            let text = String::from_utf8(raw.to_vec()).unwrap();
            if series_sum(&text, "cgw_cache_bytes", "") <= BUDGET {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let bytes = series_sum(&text, "cgw_cache_bytes", "");
    let entries = series_sum(&text, "cgw_cache_entries", "");
    let evicted = series_sum(&text, "cgw_cache_evictions_total", "cause=\"size\"");
    assert!(bytes > BUDGET / 4.0, "the cache is used: {bytes} bytes");
    assert!(entries > 100.0, "{entries} entries held");
    assert!(
        evicted > 0.0,
        "beyond the budget entries are evicted for size"
    );
    assert!(
        text.lines().any(|l| l == "cgw_cache_budget_bytes 1048576"),
        "the budget is a gauge"
    );
}
