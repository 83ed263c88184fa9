//! Hot reload of routes.yaml in the built gateway (a child process on a temp file pointing at
//! sandbox vendors that run in this test), under steady concurrent load: SIGHUP applies a
//! changed timeout, a rewritten file adds a vendor without a signal, a broken file keeps the
//! running plan and says where it is broken, and the caches of unchanged vendors survive. One
//! in-process test holds a vendor call across a reload: a request finishes on its own plan.
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use coupon_gateway::app::reload::{Compile, Compiled, Trigger};
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::engine::plan::{Credentials, Plan};
use coupon_gateway::sandbox::{self, Fault, OP_CLIENT, OP_SECRET, Sandbox, data};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::process::{GatewayProcess, TempDir, replace_file, sandbox_routes};

/// The sandbox routes with the coupon caches fresh for 10 minutes, so that within a test only
/// a reload can make the gateway ask a vendor again.
fn routes(sb: &Sandbox) -> String {
    let text = sandbox_routes(sb).replace("ttl_ms: 30000 ", "ttl_ms: 600000");
    assert!(text.contains("ttl_ms: 600000"), "fixture text moved");
    text
}

/// Clients looping the demo query until stopped, each failure (anything but a complete 200)
/// written down.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gw: &GatewayProcess, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, answered, failures) = (
                    Arc::clone(&stop),
                    Arc::clone(&answered),
                    Arc::clone(&failures),
                );
                let (url, client) = (gw.url("/v1/coupons/query"), support::client());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let req = Request::post(&url)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(sandbox::demo_query())))
                            .unwrap();
                        match client.request(req).await {
                            Ok(res) => {
                                let status = res.status();
                                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                                let v: Value = body
                                    .as_ref()
                                    .ok()
                                    .and_then(|b| serde_json::from_slice(b).ok())
                                    .unwrap_or(Value::Null);
                                if status == 200 && v["complete"] == true {
                                    answered.fetch_add(1, Ordering::SeqCst);
                                } else {
                                    failures.lock().unwrap().push(format!("{status}: {v}"));
                                }
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                        }
                        // pacing only: the load is steady without filling both cores
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            failures,
            tasks,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `n` more queries than now were answered.
    async fn more(&self, n: usize) {
        let from = self.answered();
        support::until(&format!("{n} more answered queries"), || {
            let now = self.answered();
            async move { now >= from + n }
        })
        .await;
    }

    /// Stops the clients and asserts none of their requests failed.
    async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
    }
}

async fn config(gw: &GatewayProcess) -> Value {
    let a = support::get(&gw.url("/v1/config")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

/// Waits until `/v1/config` satisfies `check`, and returns it.
async fn config_until(gw: &GatewayProcess, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let seen = Arc::new(Mutex::new(Value::Null));
    support::until(what, || {
        let seen = Arc::clone(&seen);
        let url = gw.url("/v1/config");
        let check = &check;
        async move {
            let v = support::get(&url).await.body;
            let ok = check(&v);
            *seen.lock().unwrap() = v;
            ok
        }
    })
    .await;
    seen.lock().unwrap().clone()
}

/// The value of one series in `/metrics` (0 when absent).
async fn metric(gw: &GatewayProcess, series: &str) -> f64 {
    let a = support::send(
        Request::get(gw.url("/metrics"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let text = String::from_utf8_lossy(&a.raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn sim(sb: &Sandbox, id: &str) -> u64 {
    sb.vendors()
        .iter()
        .find(|(v, _)| *v == id)
        .map(|(_, s)| s.requests())
        .unwrap()
}

/// (a) + (d): SIGHUP applies a changed vendor timeout with no failed request; the changed
/// vendor's cache starts afresh while the unchanged vendors' cached answers are still served.
/// The file is reached through a symlink into another directory, so the file watch cannot
/// see the change and only the signal can apply it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_timeout_under_load_and_keeps_unchanged_caches() {
    let sb = Sandbox::start().await.unwrap();
    let (real, linked) = (TempDir::new("reload-real"), TempDir::new("reload-link"));
    let file = real.0.join("routes.yaml");
    let text = routes(&sb);
    std::fs::write(&file, &text).unwrap();
    let path = linked.0.join("routes.yaml");
    std::os::unix::fs::symlink(&file, &path).unwrap();
    let gw = GatewayProcess::start(&path, &[]).await;
    let before = config(&gw).await;
    assert_eq!(before["last_error"], Value::Null);
    assert_eq!(before["source"], path.to_str().unwrap());
    let load = Load::start(&gw, 3);
    // every vendor's answer is cached now
    load.more(10).await;
    let (op, hkl, zvcms) = (sim(&sb, "op"), sim(&sb, "hkl"), sim(&sb, "zvcms"));

    let changed = text.replacen("    timeout_ms: 800\n", "    timeout_ms: 900\n", 1);
    assert_ne!(changed, text, "fixture text moved");
    std::fs::write(&file, &changed).unwrap();
    gw.signal("HUP");
    let after = config_until(&gw, "/v1/config shows the new version", |c| {
        c["version"] != before["version"]
    })
    .await;
    assert_eq!(after["last_attempt_trigger"], "sighup", "{after}");
    assert_eq!(after["last_error"], Value::Null);
    let vendors = gw_vendors(&gw).await;
    assert_eq!(vendors["op"]["timeout_ms"], 900, "the new timeout runs");
    load.more(10).await;
    load.finish().await;

    // op changed: its cache went with its old configuration; the others' answers were kept
    assert!(sim(&sb, "op") > op, "op is asked again after its change");
    assert_eq!(sim(&sb, "hkl"), hkl, "hkl's cached answer is still served");
    assert_eq!(
        sim(&sb, "zvcms"),
        zvcms,
        "zvcms's cached answer is still served"
    );
    assert_eq!(
        metric(&gw, "cgw_config_loads_total{result=\"ok\"}").await,
        2.0
    );
    // only ids, hashes and times: no credential value anywhere in it
    let shown = after.to_string();
    for (_, value) in support::process::credential_env() {
        assert!(!shown.contains(&value), "{value} in /v1/config");
    }

    // a vendor's change says nothing of `server:`; a change of `server:` is loaded but
    // applies at the next start, and the log says so
    const SERVER_NOTE: &str = "the `server:` section changed";
    assert!(!gw.stderr().contains(SERVER_NOTE), "{}", gw.stderr());
    let server_changed =
        changed.replacen("request_timeout_ms: 5000", "request_timeout_ms: 6000", 1);
    assert_ne!(server_changed, changed, "fixture text moved");
    std::fs::write(&file, &server_changed).unwrap();
    gw.signal("HUP");
    config_until(&gw, "/v1/config shows the server change loaded", |c| {
        c["version"] != after["version"]
    })
    .await;
    support::until("the log says `server:` applies at the next start", || {
        let said = gw.stderr().matches(SERVER_NOTE).count() == 1;
        async move { said }
    })
    .await;
}

async fn gw_vendors(gw: &GatewayProcess) -> Value {
    let a = support::get(&gw.url("/v1/vendors")).await;
    let mut by_id = serde_json::Map::new();
    for v in a.body["vendors"].as_array().unwrap() {
        by_id.insert(v["id"].as_str().unwrap().to_owned(), v.clone());
    }
    Value::Object(by_id)
}

/// `text` with a copy of vendor `op` named `op2` (its credentials written in the file, as the
/// environment of the running process cannot name a vendor it did not have).
/// Where vendor `id`'s block of `text` starts and how long it is: up to the next line indented
/// by exactly two spaces (the next vendor, or the comment above it).
fn vendor_block(text: &str, id: &str) -> (usize, usize) {
    let start = text
        .find(&format!("\n  {id}:\n"))
        .unwrap_or_else(|| panic!("vendor {id}"))
        + 1;
    let mut len = 0;
    for (i, line) in text[start..].split_inclusive('\n').enumerate() {
        if i > 0 && line.starts_with("  ") && !line.starts_with("   ") {
            break;
        }
        len += line.len();
    }
    (start, len)
}

fn with_op2(text: &str) -> String {
    let (start, len) = vendor_block(text, "op");
    let block = text[start..start + len]
        .replacen("  op:\n", "  op2:\n", 1)
        .replacen("client: ~", &format!("client: \"{OP_CLIENT}\""), 1)
        .replacen("secret: ~", &format!("secret: \"{OP_SECRET}\""), 1);
    assert!(block.contains(OP_SECRET), "fixture text moved");
    let mut out = text.to_owned();
    out.insert_str(start + len, &block);
    out
}

/// A request in flight when a reload removes its vendor still finishes on the plan it started
/// with (the vendor asked and in its `sources`), while a request after the reload no longer
/// knows that vendor. In-process, so the test holds the vendor call and reloads in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_plan_it_started_with() {
    let sb = Arc::new(Sandbox::start().await.unwrap());
    let plan = embedded::sandbox_plan("routes.yaml", ROUTES_YAML, &sb, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = embedded::start(plan, listener);
    let zvcms = sb
        .vendors()
        .into_iter()
        .find(|(id, _)| *id == "zvcms")
        .unwrap()
        .1;
    zvcms.set_fault(Fault::Hold);
    let url = gw.url("/v1/coupons/query");
    let in_flight = tokio::spawn(async move {
        support::post_json(&url, &serde_json::from_str(&sandbox::demo_query()).unwrap()).await
    });
    support::within("the query reaches zvcms", zvcms.wait_held(1)).await;

    let (start, len) = vendor_block(ROUTES_YAML, "zvcms");
    let without = format!("{}{}", &ROUTES_YAML[..start], &ROUTES_YAML[start + len..]);
    let compile: Compile = {
        let sb = Arc::clone(&sb);
        Arc::new(move |name: &str, text: &str| {
            let mut loaded = coupon_gateway::config::load_str(name, text, false)?;
            embedded::point_at_sandbox(&mut loaded, &sb);
            let (plan, warnings) = Plan::compile(&loaded, Credentials::Required)?;
            Ok(Compiled {
                plan,
                warnings,
                config: loaded.config,
            })
        })
    };
    let state = Arc::clone(&gw.state);
    tokio::task::spawn_blocking(move || {
        state
            .reload("routes.yaml", &without, &compile, Trigger::Signal)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    })
    .await
    .unwrap()
    .expect("the file without zvcms loads");

    // a request from now on runs on the new plan
    let after = support::post_json(
        &gw.url("/v1/coupons/query"),
        &json!({"member": {"ids": {"op": data::OP_MEMBER, "hkl": data::HKL_MEMBER}}}),
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(
        !after.body["sources"].to_string().contains("zvcms"),
        "{}",
        after.body
    );
    // the held one finishes on the plan it started with
    zvcms.clear_fault();
    let before = support::within("the held query", in_flight).await.unwrap();
    assert_eq!(before.status, 200, "{}", before.body);
    let z = before.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["vendor"] == "zvcms")
        .unwrap_or_else(|| panic!("{}", before.body))
        .clone();
    assert_eq!(z["outcome"], "ok", "{z}");
}

/// (b): a vendor added by rewriting the file (no signal) is asked, with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_added_to_the_watched_file_is_asked_without_a_signal() {
    let sb = Sandbox::start().await.unwrap();
    let dir = TempDir::new("reload-add");
    let path = dir.0.join("routes.yaml");
    let text = routes(&sb);
    std::fs::write(&path, &text).unwrap();
    let gw = GatewayProcess::start(&path, &[]).await;
    let before = config(&gw).await;
    let load = Load::start(&gw, 3);
    load.more(5).await;

    replace_file(&path, &with_op2(&text));
    let after = config_until(&gw, "/v1/config lists op2", |c| {
        c["vendors"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v["id"] == "op2"))
    })
    .await;
    assert_ne!(after["version"], before["version"]);
    assert_eq!(after["last_attempt_trigger"], "file", "{after}");
    // the new vendor's series exist at 0 before it is ever asked
    assert_eq!(
        metric(
            &gw,
            "cgw_vendor_calls_total{vendor=\"op2\",operation=\"list_coupons\",outcome=\"ok\"}"
        )
        .await,
        0.0
    );
    let query = json!({"member": {"ids": {"op": data::OP_MEMBER, "op2": data::OP_MEMBER}}});
    let a = support::post_json(&gw.url("/v1/coupons/query"), &query).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let op2 = a.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["vendor"] == "op2")
        .unwrap_or_else(|| panic!("op2 in sources: {}", a.body))
        .clone();
    assert_eq!(op2["outcome"], "ok", "{op2}");
    assert!(op2["count"].as_u64().unwrap() > 0, "{op2}");
    load.more(5).await;
    load.finish().await;
}

/// (c): a broken file keeps the running plan; `/v1/config` shows each error with its line, the
/// failure is counted and logged once, and queries are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_running_plan_and_says_where_it_is_broken() {
    let sb = Sandbox::start().await.unwrap();
    let dir = TempDir::new("reload-broken");
    let path = dir.0.join("routes.yaml");
    let text = routes(&sb);
    std::fs::write(&path, &text).unwrap();
    let gw = GatewayProcess::start(&path, &[]).await;
    let before = config(&gw).await;
    let load = Load::start(&gw, 3);
    load.more(5).await;

    let broken = text.replacen("items: $.data.list", "items: $.data[?(@.x == )]", 1);
    assert_ne!(broken, text, "fixture text moved");
    let line = broken
        .lines()
        .position(|l| l.contains("$.data[?(@.x == )]"))
        .unwrap()
        + 1;
    replace_file(&path, &broken);
    let after = config_until(&gw, "/v1/config shows the error", |c| {
        !c["last_error"].is_null()
    })
    .await;
    assert_eq!(
        after["version"], before["version"],
        "the running plan stays"
    );
    assert_eq!(after["loaded_at"], before["loaded_at"]);
    let errors = after["last_error"]["errors"].as_array().unwrap();
    let e = errors
        .iter()
        .find(|e| e["message"].as_str().unwrap().contains("JSONPath"))
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!(e["line"], line, "{e}");
    assert_eq!(e["source"], path.to_str().unwrap(), "{e}");
    assert_eq!(
        metric(&gw, "cgw_config_loads_total{result=\"error\"}").await,
        1.0
    );
    load.more(10).await;
    load.finish().await;
    let log = gw.stderr();
    assert_eq!(
        log.matches("bad JSONPath").count(),
        1,
        "the error is logged once:\n{log}"
    );
    assert!(log.contains(&format!(":{line}:")), "with its line:\n{log}");

    // fixing the file clears the error
    replace_file(&path, &text.replace("timeout_ms: 2000", "timeout_ms: 2100"));
    config_until(&gw, "the fixed file loads", |c| {
        c["last_error"].is_null() && c["version"] != before["version"]
    })
    .await;
}

/// Without a file (`serve --sandbox` runs the embedded routes.yaml) there is nothing to
/// reload: SIGHUP is logged instead of ending the process, as its default action would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_file_is_logged_and_the_gateway_keeps_serving() {
    let gw = GatewayProcess::start_args(&["serve".as_ref(), "--sandbox".as_ref()], &[]).await;
    gw.signal("HUP");
    support::until("the log says there is nothing to reload", || {
        let said = gw.stderr().contains("nothing to reload");
        async move { said }
    })
    .await;
    let health = support::get(&gw.url("/healthz")).await;
    assert_eq!(health.status, 200, "still serving after SIGHUP");
}
