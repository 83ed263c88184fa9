//! Issue 10's "every metric family present and moving": the built gateway, run as an SRE runs
//! it (`serve --config` on the shipped routes.yaml pointed at simulators this test drives),
//! through one scenario that moves every family of docs/operating.md's catalogue. A family
//! that stops moving fails the test: the set of families that did not move must be exactly the
//! short list of families that cannot move by nature.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use coupon_gateway::sandbox::data::{self, day, ymd};
use coupon_gateway::sandbox::{Fault, Sandbox};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use support::process::{GatewayProcess, TempDir, replace_file, sandbox_routes};

/// Families that cannot move during a run, each for a reason of its nature.
const STILL: &[&str] = &[
    // always 1 with the same labels: the build does not change while the process runs
    "cgw_build_info",
    // `server.cache_max_bytes`, fixed at start-up (a reload keeps the one process-wide budget)
    "cgw_cache_budget_bytes",
    // the process's fd limit (RLIMIT_NOFILE), set before it started
    "process_max_fds",
    // the start time of the process: constant by definition
    "process_start_time_seconds",
];

/// Every sample of an exposition, by series (name and labels exactly as exported).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Whether `series` is a sample of the family `name` (for a histogram: its `_count`).
fn of_family(series: &str, name: &str, kind: &str) -> bool {
    let sample = if kind == "histogram" {
        format!("{name}_count")
    } else {
        name.to_owned()
    };
    series
        .strip_prefix(&sample)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
}

/// The sum of a family's samples (`_count` for a histogram).
fn total(samples: &BTreeMap<String, f64>, name: &str, kind: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| of_family(s, name, kind))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes `/metrics` and keeps what moving means for each kind of family: a counter's or a
/// histogram's total grew since start-up (they only grow, so the last scrape says it); a gauge
/// was seen, in some scrape of the run, with a series at another value than at start-up (an
/// absent series counts as 0), since gauges such as the in-flight ones go back down.
struct Watch {
    url: String,
    catalogue: Vec<(String, String)>,
    start: BTreeMap<String, f64>,
    last: BTreeMap<String, f64>,
    gauges_moved: BTreeSet<String>,
}

impl Watch {
    async fn start(gw: &GatewayProcess) -> Watch {
        let catalogue = support::process::metric_catalogue();
        let url = gw.url("/metrics");
        let text = scrape_text(&url).await;
        // every family is there from start-up, with HELP, TYPE and a sample
        for (name, kind) in &catalogue {
            assert!(text.contains(&format!("# HELP {name} ")), "no HELP {name}");
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "no TYPE {kind} for {name}"
            );
        }
        let start = samples(&text);
        for (name, kind) in &catalogue {
            assert!(
                start.keys().any(|s| of_family(s, name, kind)),
                "{name} has no series at start-up"
            );
        }
        Watch {
            url,
            catalogue,
            last: start.clone(),
            start,
            gauges_moved: BTreeSet::new(),
        }
    }

    async fn scrape(&mut self) -> BTreeMap<String, f64> {
        let now = samples(&scrape_text(&self.url).await);
        for (name, kind) in self.catalogue.iter().filter(|(_, k)| k == "gauge") {
            let moved = now.iter().any(|(s, v)| {
                of_family(s, name, kind) && self.start.get(s).copied().unwrap_or(0.0) != *v
            });
            if moved {
                self.gauges_moved.insert(name.clone());
            }
        }
        self.last = now.clone();
        now
    }

    /// The families that have not moved (by the last scrape).
    fn still(&self) -> BTreeSet<String> {
        self.catalogue
            .iter()
            .filter(|(name, kind)| {
                if kind == "gauge" {
                    !self.gauges_moved.contains(name)
                } else {
                    total(&self.last, name, kind) <= total(&self.start, name, kind)
                }
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// How much the series `series` grew since start-up (by the last scrape).
    fn grew(&self, series: &str) -> f64 {
        self.last.get(series).copied().unwrap_or(0.0)
            - self.start.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape_text(url: &str) -> String {
    let a = support::within("a scrape", support::get(url)).await;
    assert_eq!(a.status, 200, "GET /metrics");
    String::from_utf8(a.raw.to_vec()).unwrap()
}

/// POSTs a coupon query to the gateway at `addr` with the caller's `headers`.
async fn query(addr: &str, body: &Value, headers: &[(&str, &str)]) -> support::Answer {
    let mut req = Request::post(format!("http://{addr}/v1/coupons/query"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    support::within("a query's answer", support::send(req)).await
}

/// The `sources` entry of `vendor` in an answer.
fn source<'a>(a: &'a support::Answer, vendor: &str) -> &'a Value {
    a.body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vendor"] == vendor))
        .unwrap_or_else(|| panic!("no source {vendor} in {}", a.body))
}

fn member(ids: Value) -> Value {
    json!({ "member": { "ids": ids } })
}

fn template(title: &str, discount: u32) -> Value {
    json!({"vendor": "wxcard", "kind": "discount", "begin_at": ymd(day(1)), "end_at": ymd(day(31)),
           "sync": true, "card": {"base_info": {"title": title, "color": "Color010", "brand_name": "海底捞"},
           "discount": discount}})
}

async fn create(gw: &GatewayProcess, body: &Value, key: Option<&str>) -> support::Answer {
    let mut req = Request::post(gw.url("/v1/templates")).header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    support::within("a create's answer", support::send(req)).await
}

async fn list_templates(gw: &GatewayProcess) -> support::Answer {
    let req = Request::get(gw.url("/v1/templates?vendor=wxcard"))
        .header("cache-control", "no-cache")
        .body(Full::default())
        .unwrap();
    support::within("a list's answer", support::send(req)).await
}

/// `text` with `from` replaced once, in the part of the file that is vendor `vendor`'s.
fn in_vendor(text: &str, vendor: &str, from: &str, to: &str) -> String {
    let at = text
        .find(&format!("\n  {vendor}:\n"))
        .unwrap_or_else(|| panic!("no vendor {vendor}"));
    let (head, tail) = text.split_at(at);
    let changed = tail.replacen(from, to, 1);
    assert_ne!(changed, tail, "{vendor} has {from:?}");
    format!("{head}{changed}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_of_the_catalogue_moves() {
    let sb = Sandbox::start().await.unwrap();
    let mut routes = sandbox_routes(&sb);
    // hkl stops after one page: a member with coupons leaves more pages unasked (truncated)
    routes = in_vendor(
        &routes,
        "hkl",
        "        request:\n",
        "        paging: {style: page_number, max_pages: 1}\n        request:\n",
    );
    // zvcms's answers go stale at once, so that a failure serves the last good one
    routes = in_vendor(
        &routes,
        "zvcms",
        "          ttl_ms: 30000 ",
        "          ttl_ms: 100 ",
    );
    let dir = TempDir::new("catalogue");
    let file = dir.0.join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let gw = GatewayProcess::start(
        &file,
        &[
            // small edges: a 413 for a small body, shedding beyond three requests
            ("CGW_SERVER__BODY_LIMIT_BYTES", "4096"),
            ("CGW_SERVER__MAX_CONCURRENCY", "3"),
            // after SIGTERM the listener serves on while /readyz (and cgw_ready) says no
            ("CGW_SERVER__DRAIN_DELAY_MS", "60000"),
            // op: one call at a time, a short queue; held calls wait as long as the test says
            ("CGW_VENDORS__OP__LIMITS__MAX_CONCURRENCY", "1"),
            ("CGW_VENDORS__OP__LIMITS__QUEUE_MS", "50"),
            ("CGW_VENDORS__OP__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__OP__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
            // zvcms: many retries without pause spend its retry budget; its circuit opens
            // after a few failed calls
            ("CGW_VENDORS__ZVCMS__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__ZVCMS__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
            ("CGW_VENDORS__ZVCMS__RETRY__MAX_ATTEMPTS", "10"),
            ("CGW_VENDORS__ZVCMS__RETRY__BACKOFF_MS", "0"),
            ("CGW_VENDORS__ZVCMS__CIRCUIT__MIN_CALLS", "8"),
        ],
    )
    .await;
    let mut watch = Watch::start(&gw).await;
    let addr = gw.addr.clone();

    // the edges: a body over the limit (413) and a path that is no route (404)
    let big = Request::post(gw.url("/v1/coupons/query"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(vec![b' '; 8192])))
        .unwrap();
    assert_eq!(support::send(big).await.status, 413);
    assert_eq!(support::get(&gw.url("/nowhere")).await.status, 404);

    // in flight, coalesced, rate limited, shed: op and zvcms hold what they receive
    sb.op.set_fault(Fault::Hold);
    sb.zvcms.set_fault(Fault::Hold);
    let op_member = member(json!({"op": data::OP_MEMBER}));
    let first = tokio::spawn({
        let (addr, body) = (addr.clone(), op_member.clone());
        async move { query(&addr, &body, &[]).await }
    });
    support::within("op holds the first call", sb.op.wait_held(1)).await;
    // the same op member again, and zvcms: the query asks op first (routes.yaml order), so
    // zvcms holding its call shows that op's lookup found the first call in flight
    let second = tokio::spawn({
        let addr = addr.clone();
        let body = member(json!({"op": data::OP_MEMBER, "zvcms": data::ZVCMS_MEMBER}));
        async move { query(&addr, &body, &[]).await }
    });
    support::within("zvcms holds the second call", sb.zvcms.wait_held(1)).await;
    let held = watch.scrape().await;
    assert!(held["cgw_http_requests_in_flight"] >= 2.0, "{held:?}");
    assert_eq!(held["cgw_vendor_in_flight{vendor=\"op\"}"], 1.0);
    assert_eq!(held["cgw_vendor_in_flight{vendor=\"zvcms\"}"], 1.0);
    // op's one slot is taken: another op member waits queue_ms and is refused
    let limited = query(
        &addr,
        &member(json!({"op": data::OP_MEMBER2})),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(
        source(&limited, "op")["outcome"],
        "rate_limited",
        "{}",
        limited.body
    );
    // a third held request fills server.max_concurrency: the next one is shed
    let third = tokio::spawn({
        let addr = addr.clone();
        let body = member(json!({"zvcms": data::ZVCMS_SINGLE}));
        async move { query(&addr, &body, &[]).await }
    });
    support::within("zvcms holds the third call", sb.zvcms.wait_held(2)).await;
    let shed = support::within("a shed answer", support::get(&gw.url("/v1/vendors"))).await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    sb.op.clear_fault();
    sb.zvcms.clear_fault();
    let first = support::within("the first answer", first).await.unwrap();
    let second = support::within("the second answer", second).await.unwrap();
    let third = support::within("the third answer", third).await.unwrap();
    for a in [&first, &second, &third] {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(source(&first, "op")["cache"], "miss");
    assert_eq!(
        source(&second, "op")["cache"],
        "hit",
        "coalesced: {}",
        second.body
    );
    // a fresh entry: a hit
    let hit = query(&addr, &op_member, &[]).await;
    assert_eq!(source(&hit, "op")["cache"], "hit", "{}", hit.body);
    // a package op does not know: not_found
    let unknown = support::get(&gw.url("/v1/packages/op/ffffffffffffffffffffffffffffffff")).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // hkl: a member with coupons (truncated at max_pages), and a held call that runs out of time (timeout, asked with no-cache: bypass)
    let hkl = query(&addr, &member(json!({"hkl": data::HKL_MEMBER})), &[]).await;
    assert_eq!(source(&hkl, "hkl")["outcome"], "ok", "{}", hkl.body);
    assert_eq!(source(&hkl, "hkl")["truncated"], true, "{}", hkl.body);
    sb.hkl.set_fault(Fault::Hold);
    let slow = query(
        &addr,
        &member(json!({"hkl": data::HKL_MEMBER})),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(source(&slow, "hkl")["outcome"], "timeout", "{}", slow.body);
    sb.hkl.clear_fault();

    // zvcms: no coupons (empty); a 500 then an answer (a retry); then failing for good: the
    // last good answer served (stale), the retry budget spent, the circuit open
    let none = query(&addr, &member(json!({"zvcms": data::ZVCMS_NONE})), &[]).await;
    // (`sources` keeps the API's `ok`; the metric's outcome is `empty`, checked at the end)
    assert_eq!(source(&none, "zvcms")["count"], 0, "{}", none.body);
    // one record that maps and one whose date cannot be read: the second is dropped
    sb.zvcms.set_fault(Fault::Raw {
        status: 200,
        content_type: "application/json".to_owned(),
        body: Bytes::from(
            json!({"status": true, "code": "0", "message": "查询成功", "data": [
                {"cardId": "1", "templateId": "951", "title": "readable", "useStatus": "0"},
                {"cardId": "2", "templateId": "951", "title": "unreadable", "useStatus": "0",
                 "beginAt": "not a date"},
            ]})
            .to_string(),
        ),
    });
    let partly = query(&addr, &member(json!({"zvcms": "catalogue-raw"})), &[]).await;
    assert_eq!(source(&partly, "zvcms")["count"], 1, "{}", partly.body);
    // every record unreadable (a renamed field): the call fails, and both still count
    sb.zvcms.set_fault(Fault::Raw {
        status: 200,
        content_type: "application/json".to_owned(),
        body: Bytes::from(
            json!({"status": true, "code": "0", "message": "查询成功", "data": [
                {"cardId": "3", "templateId": "951", "title": "a", "useStatus": "0", "beginAt": "no"},
                {"cardId": "4", "templateId": "951", "title": "b", "useStatus": "0", "beginAt": "no"},
            ]})
            .to_string(),
        ),
    });
    let garbage = query(&addr, &member(json!({"zvcms": "catalogue-raw-2"})), &[]).await;
    assert_eq!(
        source(&garbage, "zvcms")["outcome"],
        "error",
        "{}",
        garbage.body
    );
    let zvcms = member(json!({"zvcms": data::ZVCMS_MEMBER}));
    sb.zvcms.set_fault(Fault::FailFirst {
        times: 1,
        fault: Box::new(Fault::Status(500)),
    });
    let retried = query(&addr, &zvcms, &[("cache-control", "no-cache")]).await;
    assert_eq!(
        source(&retried, "zvcms")["outcome"],
        "ok",
        "{}",
        retried.body
    );
    sb.zvcms.set_fault(Fault::Status(500));
    // ttl_ms is 100: hits until the entry is past it, then the failed call serves it stale
    support::until("zvcms's answer is served stale", || async {
        let a = query(&addr, &zvcms, &[]).await;
        source(&a, "zvcms")["cache"] == "stale"
    })
    .await;
    let budget =
        "cgw_vendor_retry_budget_exhausted_total{vendor=\"zvcms\",operation=\"list_coupons\"}";
    let circuit_open = "cgw_circuit_state{vendor=\"zvcms\",state=\"open\"}";
    support::within(
        "zvcms's retry budget is spent and its circuit opens",
        async {
            loop {
                let a = query(&addr, &zvcms, &[("cache-control", "no-cache")]).await;
                let opened = source(&a, "zvcms")["outcome"] == "circuit_open";
                let m = watch.scrape().await;
                if opened && m[budget] > 0.0 && m[circuit_open] == 1.0 {
                    break;
                }
            }
        },
    )
    .await;
    sb.zvcms.clear_fault();

    // wxcard: a list (token fetched, entry cached), a create with an Idempotency-Key (the
    // list's entry invalidated), its repeat (replay), the key with another body (conflict),
    // a create the vendor refuses (rejected); then a revoked token (401: invalidated and
    // fetched again) and a token endpoint that fails
    assert_eq!(list_templates(&gw).await.status, 200);
    let created = create(&gw, &template("catalogue", 20), Some("catalogue-1")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let again = create(&gw, &template("catalogue", 20), Some("catalogue-1")).await;
    assert_eq!(again.status, 201, "{}", again.body);
    let other = create(&gw, &template("other", 30), Some("catalogue-1")).await;
    assert_eq!(other.status, 409, "{}", other.body);
    let refused = create(&gw, &template("refused", 150), None).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    sb.wxcard.revoke_tokens();
    // tokens from now on expire within refresh_before_ms: the next call fetches one
    sb.wxcard.set_token_ttl(Duration::from_secs(1));
    assert_eq!(list_templates(&gw).await.status, 200);
    sb.wxcard.set_fault(Fault::Status(500));
    assert_ne!(list_templates(&gw).await.status, 200);
    sb.wxcard.clear_fault();

    // a reload of a changed file (SIGHUP): a config load, a new digest, a new timestamp; the
    // reload runs on the blocking pool, the process's first thread there (process_threads,
    // and its stack in process_virtual_memory_bytes)
    replace_file(&file, &format!("{routes}\n# reloaded by ops_catalogue\n"));
    gw.signal("HUP");
    let loads = "cgw_config_loads_total{result=\"ok\"}";
    support::within("the reload is counted", async {
        loop {
            watch.scrape().await;
            if watch.grew(loads) > 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // every family but cgw_ready has moved (evictions are counted in the cache's own time:
    // ask until they are)
    let mut still_expected: BTreeSet<String> = STILL.iter().map(|s| (*s).to_owned()).collect();
    still_expected.insert("cgw_ready".to_owned());
    let settled = tokio::time::timeout(support::SANITY, async {
        loop {
            watch.scrape().await;
            if watch.still() == still_expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if settled.is_err() {
        assert_eq!(watch.still(), still_expected, "families that did not move");
    }

    // SIGTERM: draining, /readyz and cgw_ready say no while the listener still serves
    gw.signal("TERM");
    support::within("cgw_ready turns 0", async {
        while watch.scrape().await["cgw_ready"] != 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let still: BTreeSet<String> = STILL.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(watch.still(), still, "families that did not move");

    // and within the families, each label value the scenario meant to move
    let calls = |vendor: &str, operation: &str, outcome: &str| {
        format!(
            "cgw_vendor_calls_total{{vendor=\"{vendor}\",operation=\"{operation}\",outcome=\"{outcome}\"}}"
        )
    };
    for series in [
        calls("op", "list_coupons", "ok"),
        calls("op", "list_coupons", "rate_limited"),
        calls("op", "get_package", "not_found"),
        calls("hkl", "list_coupons", "timeout"),
        calls("zvcms", "list_coupons", "empty"),
        calls("zvcms", "list_coupons", "error"),
        calls("zvcms", "list_coupons", "circuit_open"),
        calls("wxcard", "create_template", "rejected"),
        "cgw_vendor_items_dropped_total{vendor=\"zvcms\",operation=\"list_coupons\"}".to_owned(),
        "cgw_vendor_truncated_total{vendor=\"hkl\",operation=\"list_coupons\"}".to_owned(),
        "cgw_vendor_retries_total{vendor=\"zvcms\",operation=\"list_coupons\"}".to_owned(),
        "cgw_http_requests_total{route=\"coupons_query\",status=\"413\"}".to_owned(),
        "cgw_http_requests_total{route=\"unknown\",status=\"404\"}".to_owned(),
        "cgw_http_requests_shed_total{route=\"vendors\"}".to_owned(),
        "cgw_vendor_rate_limited_total{vendor=\"op\",stage=\"admit\"}".to_owned(),
        "cgw_circuit_transitions_total{vendor=\"zvcms\",from=\"closed\",to=\"open\"}".to_owned(),
        "cgw_token_fetches_total{vendor=\"wxcard\",result=\"ok\"}".to_owned(),
        "cgw_token_fetches_total{vendor=\"wxcard\",result=\"error\"}".to_owned(),
        "cgw_token_invalidations_total{vendor=\"wxcard\"}".to_owned(),
        "cgw_cache_evictions_total{vendor=\"wxcard\",operation=\"list_templates\",cause=\"explicit\"}"
            .to_owned(),
    ] {
        assert!(watch.grew(&series) > 0.0, "{series} did not move");
    }
    // one dropped from the answer that was served, two from the one that failed
    assert_eq!(
        watch.grew("cgw_vendor_items_dropped_total{vendor=\"zvcms\",operation=\"list_coupons\"}"),
        3.0
    );
    for result in ["hit", "coalesced", "miss", "stale", "bypass"] {
        let moved: f64 = ["op", "hkl", "zvcms"]
            .iter()
            .map(|v| {
                watch.grew(&format!(
                    "cgw_cache_lookups_total{{vendor=\"{v}\",operation=\"list_coupons\",result=\"{result}\"}}"
                ))
            })
            .sum();
        assert!(moved > 0.0, "no cache lookup {result}");
    }
    for result in ["proceed", "replay", "conflict"] {
        let series = format!(
            "cgw_idempotency_requests_total{{route=\"templates_create\",result=\"{result}\"}}"
        );
        assert!(watch.grew(&series) > 0.0, "{series} did not move");
    }
}
