//! The built gateway as an SRE runs it (`coupon-gateway serve --sandbox` as a child process):
//! the metric catalogue of docs/operating.md present at start-up and moving, `promtool check
//! metrics` on the live output, JSON logs without colour codes and without secrets or member
//! ids, one access line per request, and the drain sequence on SIGTERM under load.
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use coupon_gateway::sandbox::{self, Fault, Sandbox, data};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A running gateway process, its address, and everything it wrote.
struct Gateway {
    child: Child,
    addr: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut r: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

/// `coupon-gateway serve --sandbox` with `env`.
fn start(env: &[(&str, &str)]) -> Gateway {
    start_with(&["serve", "--sandbox"], env)
}

/// The shipped routes.yaml.
const ROUTES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/routes.yaml");

/// `coupon-gateway serve --config routes.yaml` against simulators this test runs (so that it
/// can set their faults and read the requests they received), with `env` after theirs.
fn start_on(sb: &Sandbox, env: &[(&str, &str)]) -> Gateway {
    let mut all: Vec<(String, String)> = Vec::new();
    for (id, sim) in sb.vendors() {
        let id = id.to_uppercase();
        all.push((format!("CGW_VENDORS__{id}__BASE_URL"), sim.base_url()));
    }
    for (vendor, name, value) in sandbox::sandbox_credentials() {
        let (v, n) = (vendor.to_uppercase(), name.to_uppercase());
        all.push((
            format!("CGW_VENDORS__{v}__CREDENTIALS__{n}"),
            value.to_owned(),
        ));
    }
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_with(&["serve", "--config", ROUTES], &all)
}

fn start_with(args: &[&str], env: &[(&str, &str)]) -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coupon-gateway"));
    cmd.args(args)
        .env("CGW_SERVER__LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the gateway starts");
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let sandbox = args.contains(&"--sandbox");
    let mut first = String::new();
    if sandbox {
        // the banner's first line names the address
        out.read_line(&mut first).expect("a banner");
        stdout.lock().unwrap().push_str(&first);
    }
    let readers = vec![
        collect(out, Arc::clone(&stdout)),
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
    ];
    let addr = if sandbox {
        first
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_owned()
    } else {
        // without the sandbox there is no banner: the log line that says it serves names it
        let deadline = std::time::Instant::now() + support::SANITY;
        loop {
            let line = stderr
                .lock()
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["message"] == "coupon-gateway serving");
            if let Some(addr) = line.as_ref().and_then(|l| l["addr"].as_str()) {
                break addr.to_owned();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the gateway exited ({status}):\n{}", stderr.lock().unwrap());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not say where it serves:\n{}",
                stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    Gateway {
        child,
        addr,
        stdout,
        stderr,
        readers,
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGTERM sent");
    }

    /// Waits for the exit (after a SIGTERM) and returns its code and all output.
    fn wait(mut self) -> (Option<i32>, String, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the gateway did not exit within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status.code(), out, err)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The sum of a family's samples (`_count` for a histogram), by name.
fn totals(text: &str, catalogue: &[(String, String)]) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for (name, kind) in catalogue {
        let sample = if kind == "histogram" {
            format!("{name}_count")
        } else {
            name.clone()
        };
        let mut sum = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = line.strip_prefix(&sample) else {
                continue;
            };
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                continue;
            }
            let v: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
            *sum.get_or_insert(0.0) += v;
        }
        if let Some(s) = sum {
            sums.insert(name.clone(), s);
        }
    }
    sums
}

/// Asserts that every family of the catalogue has its HELP, its TYPE and a sample in `text`;
/// returns the families' [`totals`].
fn every_family(text: &str, catalogue: &[(String, String)]) -> BTreeMap<String, f64> {
    for (name, kind) in catalogue {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "no TYPE {kind} for {name}"
        );
    }
    let sums = totals(text, catalogue);
    let missing: Vec<&String> = catalogue
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !sums.contains_key(*n))
        .collect();
    assert!(missing.is_empty(), "families without a series: {missing:?}");
    sums
}

/// The value of the one sample `series` (name and labels exactly as exported).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series}"))
        .parse()
        .unwrap()
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

async fn text(client: &TestClient, req: Request<Full<Bytes>>) -> (u16, String) {
    let res = client.request(req).await.expect("an answer");
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn promtool(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            println!(
                "SKIPPED promtool check: promtool is not installed ({e}); apt-get install prometheus"
            );
            return;
        }
        Err(e) => panic!("promtool is needed in CI (deploy/check installs it): {e}"),
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_logs_and_secrets_of_a_real_run() {
    // a small body limit, so that the oversized body below fits the socket buffers and the
    // early 413 is not lost to a reset
    let gw = start(&[("CGW_SERVER__BODY_LIMIT_BYTES", "4096")]);
    let client: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let catalogue = support::process::metric_catalogue();

    // at start-up: every family, with HELP and TYPE, and a sample
    let (status, before) = text(&client, get(&gw.url("/metrics"))).await;
    assert_eq!(status, 200);
    let at_start = every_family(&before, &catalogue);
    for vendor in ["op", "hkl", "zvcms", "wxcard"] {
        assert!(
            before.contains(&format!(
                "cgw_vendor_calls_total{{vendor=\"{vendor}\",operation=\"list_coupons\",outcome=\"ok\"}} 0"
            )) || !before.contains(&format!("vendor=\"{vendor}\",operation=\"list_coupons\"")),
            "{vendor}'s calls at 0 from start-up"
        );
    }
    promtool(&before);

    // traffic: a query, an unknown path, an oversized body (the edge's 413), a vendor list
    let query = sandbox::demo_query();
    let (s, body) = text(
        &client,
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .header("x-request-id", "ops-test-query")
            .body(Full::new(Bytes::from(query.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(text(&client, get(&gw.url("/nowhere"))).await.0, 404);
    let (s, _) = text(
        &client,
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(vec![b' '; 8192])))
            .unwrap(),
    )
    .await;
    assert_eq!(s, 413);
    let (_, mut after) = text(&client, get(&gw.url("/metrics"))).await;
    // the process's CPU is counted in clock ticks (10 ms), and a release build can serve the
    // traffic above in less: scrape (which is work too) until it moves, as it must
    let cpu = "process_cpu_seconds_total";
    for _ in 0..2_000 {
        if totals(&after, &catalogue)[cpu] > at_start[cpu] {
            break;
        }
        after = text(&client, get(&gw.url("/metrics"))).await.1;
    }
    promtool(&after);
    let moved = totals(&after, &catalogue);
    for name in [
        "cgw_http_requests_total",
        "cgw_http_request_duration_seconds",
        "cgw_vendor_calls_total",
        "cgw_vendor_call_duration_seconds",
        cpu,
    ] {
        assert!(
            moved[name] > at_start[name],
            "{name} did not move: {} → {}",
            at_start[name],
            moved[name]
        );
    }
    assert!(
        after.contains("cgw_http_requests_total{route=\"coupons_query\",status=\"413\"} 1"),
        "the edge's 413 is counted under its route"
    );
    assert!(after.contains("cgw_http_requests_total{route=\"unknown\",status=\"404\"} 1"));
    assert!(after.contains("cgw_ready 1"));
    assert!(after.contains("cgw_build_info{version=\""));

    gw.sigterm();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "exit 0 on SIGTERM\n{stderr}");

    // logs: JSON lines (stderr is a pipe), no colour codes, an access line per request
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes in a file:\n{stderr}"
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("WARNING"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["request_id"] == "ops-test-query" && l["target"] == "access")
        .unwrap_or_else(|| panic!("no access line for the query:\n{stderr}"));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["route"], "coupons_query");
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "POST");
    assert!(access["duration_ms"].is_number());
    let vendors = access["vendors"].as_str().unwrap();
    assert!(
        vendors.contains("op=ok") && vendors.contains("hkl="),
        "{access}"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("draining started"))),
        "a line says draining started"
    );

    // no secret or member id anywhere in the output (the demo banner on stdout, which prints
    // the sample query for a person to paste, is the one place member ids are meant to be)
    let banner_end = stdout.find("curl -s").map_or(0, |i| {
        i + stdout[i..].find('\n').unwrap_or(stdout.len() - i)
    });
    let output = format!("{}\n{stderr}", &stdout[banner_end..]);
    let mut needles: Vec<&str> = sandbox::sandbox_credentials()
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    needles.extend([
        data::OP_MEMBER,
        data::OP_MEMBER2,
        data::HKL_MEMBER,
        data::HKL_MEMBER2,
        data::HKL_OPENID,
        data::HKL_OPENID2,
        data::ZVCMS_MEMBER,
    ]);
    for n in needles {
        assert!(
            !output.contains(n),
            "{n:?} appears in the output:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_without_a_failed_request() {
    drains_under_load(0).await;
}

/// `server.connection_threads`: connections served on threads of their own (each with its own
/// runtime and vendor connection pool) answer every vendor and drain on SIGTERM as connections
/// on the shared runtime do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_threads_answer_and_drain_like_the_shared_runtime() {
    drains_under_load(2).await;
}

/// CPU ticks (user + system) of the gateway's connection threads.
fn connection_threads_ticks(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if !comm.starts_with("cgw-conn-") {
                return None;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// SIGTERM under load from several connections, served on `threads` connection threads.
async fn drains_under_load(threads: usize) {
    let threads_env = threads.to_string();
    let gw = start(&[
        ("CGW_SERVER__DRAIN_DELAY_MS", "1500"),
        ("CGW_SERVER__CONNECTION_THREADS", &threads_env),
    ]);
    // a new connection per request, as a load balancer's health-checked pool would make
    let client: TestClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new());
    let query = sandbox::demo_query();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_503 = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for i in 0..3 {
        let (client, url, readyz) = (
            client.clone(),
            gw.url("/v1/coupons/query"),
            gw.url("/readyz"),
        );
        let (failures, answered, seen_503, closed) = (
            Arc::clone(&failures),
            Arc::clone(&answered),
            Arc::clone(&seen_503),
            Arc::clone(&closed),
        );
        let query = query.clone();
        loops.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            // bounded: the drain is over well before this
            let mut stop_at: Option<std::time::Instant> = None;
            while started.elapsed() < Duration::from_secs(20) {
                // the load loops act as a load balancer does: they keep sending for a while
                // after /readyz said 503 (the listener still serves then), and stop well
                // before the drain delay (1.5 s) is over
                if i > 0 && seen_503.load(std::sync::atomic::Ordering::SeqCst) {
                    let at = *stop_at.get_or_insert_with(|| {
                        std::time::Instant::now() + Duration::from_millis(500)
                    });
                    if std::time::Instant::now() > at {
                        break;
                    }
                }
                let req = if i == 0 {
                    get(&readyz)
                } else {
                    Request::post(&url)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(query.clone())))
                        .unwrap()
                };
                match client.request(req).await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        let body = res.into_body().collect().await;
                        if i == 0 && status == 503 {
                            seen_503.store(true, std::sync::atomic::Ordering::SeqCst);
                        } else if status != 200 || body.is_err() {
                            failures.lock().unwrap().push(format!("status {status}"));
                        } else {
                            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    // the listener closed: the load balancer would have stopped sending
                    Err(e) if e.is_connect() => {
                        closed.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    // the probe racing the close itself
                    Err(_) if i == 0 && seen_503.load(std::sync::atomic::Ordering::SeqCst) => {
                        closed.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // steady load before SIGTERM: some answers seen, however slow the machine
    support::until("steady load before SIGTERM", || {
        let answered = answered.clone();
        async move { answered.load(std::sync::atomic::Ordering::SeqCst) >= 20 }
    })
    .await;
    let before = answered.load(std::sync::atomic::Ordering::SeqCst);
    // the threads exist, and a query through them hears from every vendor
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    for i in 0..threads.max(2) {
        assert_eq!(
            names.contains(&format!("cgw-conn-{i}")),
            i < threads,
            "thread cgw-conn-{i} among {names:?}"
        );
    }
    // and they, not the shared runtime, serve the connections: their CPU moves under the load
    // (counted in 10 ms ticks, so the load goes on until it does)
    if threads > 0 {
        let pid = gw.child.id();
        support::until("the connection threads use CPU", || async move {
            connection_threads_ticks(pid) > 0
        })
        .await;
    }
    let (status, body) = text(
        &client,
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from(query.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    for vendor in ["op", "hkl", "zvcms"] {
        assert_eq!(source(&page, vendor)["outcome"], "ok", "{vendor}");
    }
    assert!(!page["coupons"].as_array().unwrap().is_empty(), "{body}");
    gw.sigterm();
    for l in loops {
        l.await.unwrap();
    }
    let (code, _out, stderr) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "exit 0\n{stderr}");
    assert!(
        failures.lock().unwrap().is_empty(),
        "failed requests: {:?}",
        failures.lock().unwrap()
    );
    assert!(
        seen_503.load(std::sync::atomic::Ordering::SeqCst),
        "/readyz said 503 before the listener closed"
    );
    assert!(
        closed.load(std::sync::atomic::Ordering::SeqCst),
        "the listener closed"
    );
    assert!(
        answered.load(std::sync::atomic::Ordering::SeqCst) > before,
        "requests were still served during the drain delay"
    );
    assert!(stderr.contains("draining started"));
}

/// Issue 15: a flood of idle connections beyond `server.max_connections` is refused at once,
/// the idle ones within the cap are closed after `header_read_timeout_ms`, and the gateway
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_leaves_the_gateway_answering() {
    use tokio::io::AsyncReadExt;
    let gw = start(&[
        ("CGW_SERVER__MAX_CONNECTIONS", "20"),
        ("CGW_SERVER__HEADER_READ_TIMEOUT_MS", "500"),
    ]);
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(&gw.addr).await.unwrap());
    }
    // every idle connection is closed by the gateway: beyond the cap at once, the others
    // when no request head came in time
    let closed = support::within("the idle connections are closed", async {
        let mut closed = 0;
        for mut s in idle {
            let mut buf = [0u8; 64];
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => closed += 1,
                Ok(_) => closed += 1, // a 408-like answer before the close
            }
        }
        closed
    })
    .await;
    assert_eq!(closed, 200);
    let client: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (status, _) = text(&client, get(&gw.url("/healthz"))).await;
    assert_eq!(status, 200, "answering after the flood");
    let (_, metrics) = text(&client, get(&gw.url("/metrics"))).await;
    let fds: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_open_fds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(fds < 100.0, "the flood's descriptors were released: {fds}");
}

/// Issue 15: a flood of HTTP/2 streams on one connection (far beyond
/// `server.http2_max_concurrent_streams`) is served in turn, and another connection is
/// answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_http2_streams_leaves_the_gateway_answering() {
    let gw = start(&[("CGW_SERVER__HTTP2_MAX_CONCURRENT_STREAMS", "8")]);
    let h2: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let mut flood = Vec::new();
    for _ in 0..400 {
        let (h2, url) = (h2.clone(), gw.url("/v1/vendors"));
        flood.push(tokio::spawn(async move {
            match h2.request(get(&url)).await {
                Ok(res) => res.status().as_u16(),
                // streams opened before the client saw the server's SETTINGS, beyond its
                // max_concurrent_streams: refused (safe for the client to retry)
                Err(e) if format!("{e:?}").contains("REFUSED_STREAM") => 0,
                Err(e) => panic!("a stream failed otherwise: {e:?}"),
            }
        }));
    }
    let other: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (status, _) = support::within(
        "another connection is answered during the flood",
        text(&other, get(&gw.url("/healthz"))),
    )
    .await;
    assert_eq!(status, 200);
    let mut statuses = BTreeMap::new();
    for f in flood {
        *statuses
            .entry(support::within("a stream", f).await.unwrap())
            .or_insert(0) += 1;
    }
    // every stream answered: served, shed with 503 when over max_concurrency, or refused
    // (0) by the HTTP/2 stream limit
    assert_eq!(statuses.values().sum::<i32>(), 400, "{statuses:?}");
    assert!(
        statuses.keys().all(|s| [0, 200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
    let (status, _) = text(&other, get(&gw.url("/healthz"))).await;
    assert_eq!(status, 200);
}

/// A tiny OTLP/HTTP receiver: keeps every span posted to /v1/traces.
async fn otlp_receiver() -> (
    String,
    Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
) {
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let kept = Arc::clone(&kept);
                async move {
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    if path == "/v1/traces" {
                        let export = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body).unwrap();
                        for rs in export.resource_spans {
                            for ss in rs.scope_spans {
                                kept.lock().unwrap().extend(ss.spans);
                            }
                        }
                    }
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .into_owned(),
            );
        }
    });
    (format!("http://{addr}"), spans)
}

fn attr(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_one_trace_at_a_real_otlp_receiver() {
    let (endpoint, spans) = otlp_receiver().await;
    let gw = start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let client: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (s, body) = text(
        &client,
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
            .body(Full::new(Bytes::from(sandbox::demo_query())))
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // an error's problem+json names the trace
    let (s, problem) = text(
        &client,
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
            .body(Full::new(Bytes::from("{")))
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    let problem: serde_json::Value = serde_json::from_str(&problem).unwrap();
    assert_eq!(problem["trace_id"], caller_trace, "{problem}");
    gw.sigterm();
    let (code, _out, stderr) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    // spans are flushed on shutdown
    let spans = spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server = spans
        .iter()
        .find(|s| {
            s.name == "POST coupons_query"
                && attr(s, "http.response.status_code").as_deref() == Some("200")
        })
        .unwrap_or_else(|| {
            panic!(
                "no server span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        hex(&server.trace_id),
        caller_trace,
        "the caller's trace goes on"
    );
    assert_eq!(hex(&server.parent_span_id), caller_span);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attr(server, "http.route").as_deref(), Some("coupons_query"));
    // each vendor call is a descendant of the server span, with vendor, operation, outcome
    let by_id: BTreeMap<Vec<u8>, &opentelemetry_proto::tonic::trace::v1::Span> =
        spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let under_server = |s: &opentelemetry_proto::tonic::trace::v1::Span| {
        let mut parent = s.parent_span_id.clone();
        while let Some(p) = by_id.get(&parent) {
            if p.span_id == server.span_id {
                return true;
            }
            parent = p.parent_span_id.clone();
        }
        false
    };
    let calls: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "vendor_call" && under_server(s))
        .collect();
    let vendors: std::collections::BTreeSet<String> =
        calls.iter().filter_map(|s| attr(s, "vendor")).collect();
    assert!(vendors.len() >= 3, "three vendors asked: {vendors:?}");
    for c in &calls {
        assert!(attr(c, "operation").is_some() && attr(c, "outcome").is_some());
        assert_eq!(hex(&c.trace_id), caller_trace);
    }
    // no span carries a member id or a secret
    let dump = format!("{spans:?}");
    for n in [
        data::OP_MEMBER,
        data::HKL_MEMBER,
        data::HKL_OPENID,
        data::ZVCMS_MEMBER,
    ] {
        assert!(!dump.contains(n), "{n} in a span");
    }
    for (_, _, secret) in sandbox::sandbox_credentials() {
        assert!(!dump.contains(secret), "a secret in a span");
    }
}

/// POSTs `body` to `/v1/coupons/query`, with the caller's `headers`; the status and JSON body.
async fn query(
    gw: &Gateway,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let client: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req =
        Request::post(gw.url("/v1/coupons/query")).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let (status, text) = support::within("a query's answer", text(&client, req)).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn source<'a>(body: &'a serde_json::Value, vendor: &str) -> &'a serde_json::Value {
    body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vendor"] == vendor))
        .unwrap_or_else(|| panic!("no source {vendor} in {body}"))
}

/// Stops `gw` with SIGTERM (which flushes its spans) and asserts a clean exit.
async fn stop(gw: Gateway) {
    gw.sigterm();
    let (code, _out, stderr) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type Span = opentelemetry_proto::tonic::trace::v1::Span;
/// `Status.code` of a span that failed (STATUS_CODE_ERROR).
const STATUS_ERROR: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_failure_is_one_trace_with_the_failing_vendor_s_attempts() {
    let sb = Sandbox::start().await.unwrap();
    // hkl answers 500 to everything: a read is tried twice (max_attempts 2), then fails
    sb.hkl.set_fault(Fault::Status(500));
    let (endpoint, spans) = otlp_receiver().await;
    let gw = start_on(
        &sb,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // patient deadlines: on a loaded machine no attempt may time out and be retried
            ("CGW_VENDORS__OP__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__OP__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
            ("CGW_VENDORS__HKL__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__HKL__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
            ("CGW_VENDORS__ZVCMS__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__ZVCMS__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
        ],
    );
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");
    // hkl is required, so its failure makes the answer a problem naming the trace
    let mut body: serde_json::Value = serde_json::from_str(&sandbox::demo_query()).unwrap();
    body["require"] = serde_json::json!(["hkl"]);
    let (status, problem) = query(
        &gw,
        &body,
        &[("traceparent", &traceparent), ("x-request-id", "traced-1")],
    )
    .await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(problem["trace_id"], caller_trace, "{problem}");
    assert_eq!(source(&problem, "hkl")["outcome"], "error");
    assert_eq!(source(&problem, "op")["outcome"], "ok");
    assert_eq!(sb.hkl.requests(), 2, "hkl was tried twice");
    gw.sigterm();
    let (code, _out, stderr) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    // with traces exported, the log's warning names the request and its trace
    let warning = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "vendor call failed" && l["vendor"] == "hkl")
        .unwrap_or_else(|| panic!("no warning for hkl:\n{stderr}"));
    assert_eq!(warning["span"]["request_id"], "traced-1", "{warning}");
    assert_eq!(warning["span"]["trace_id"], caller_trace, "{warning}");

    let spans: Vec<Span> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| hex(&s.trace_id) == caller_trace)
        .cloned()
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), 1, "one server span: {names:?}");
    let server = servers[0];
    assert_eq!(server.name, "POST coupons_query");
    assert_eq!(hex(&server.parent_span_id), caller_span);
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("502")
    );
    // parent ids are consistent: every other span's parent is a span of this trace
    let by_id: BTreeMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    for s in spans.iter().filter(|s| s.span_id != server.span_id) {
        assert!(
            by_id.contains_key(&s.parent_span_id),
            "{} has a parent outside the trace",
            s.name
        );
    }
    let under_server = |s: &Span| {
        let mut parent = s.parent_span_id.clone();
        while let Some(p) = by_id.get(&parent) {
            if p.span_id == server.span_id {
                return true;
            }
            parent = p.parent_span_id.clone();
        }
        false
    };
    // one vendor_call per coupon vendor under the server span, each with its attempts
    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "vendor_call").collect();
    let mut vendors: Vec<String> = calls.iter().filter_map(|s| attr(s, "vendor")).collect();
    vendors.sort();
    assert_eq!(vendors, ["hkl", "op", "zvcms"], "{names:?}");
    let attempts_of = |call: &Span| -> Vec<&Span> {
        let mut a: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "vendor_attempt" && s.parent_span_id == call.span_id)
            .collect();
        a.sort_by_key(|s| attr(s, "attempt"));
        a
    };
    for call in &calls {
        let vendor = attr(call, "vendor").unwrap();
        assert!(
            under_server(call),
            "{vendor}'s call is under the server span"
        );
        assert_eq!(attr(call, "operation").as_deref(), Some("list_coupons"));
        assert_eq!(attr(call, "cache").as_deref(), Some("miss"), "{vendor}");
        let attempts = attempts_of(call);
        for a in &attempts {
            assert_eq!(a.kind, 3, "an attempt is a client span");
            assert_eq!(attr(a, "vendor"), Some(vendor.clone()));
            assert!(a.start_time_unix_nano >= call.start_time_unix_nano);
            assert!(a.end_time_unix_nano <= call.end_time_unix_nano);
        }
        let status = call.status.as_ref().map_or(0, |s| s.code);
        if vendor == "hkl" {
            assert_eq!(attr(call, "outcome").as_deref(), Some("error"));
            assert_eq!(status, STATUS_ERROR, "the failed call's span status");
            assert_eq!(attempts.len(), 2, "two attempts of hkl");
            for (i, a) in attempts.iter().enumerate() {
                assert_eq!(attr(a, "attempt"), Some((i + 1).to_string()));
                assert_eq!(attr(a, "outcome").as_deref(), Some("error"));
                assert_eq!(attr(a, "http.response.status_code").as_deref(), Some("500"));
                assert_eq!(a.status.as_ref().map_or(0, |s| s.code), STATUS_ERROR);
            }
            assert!(
                attempts[1].start_time_unix_nano >= attempts[0].end_time_unix_nano,
                "the retry follows the first attempt"
            );
        } else {
            assert_eq!(attr(call, "outcome").as_deref(), Some("ok"), "{vendor}");
            assert_ne!(status, STATUS_ERROR, "{vendor}");
            let pages: usize = attr(call, "pages").unwrap().parse().unwrap();
            assert!(
                pages >= 1 && attempts.len() == pages,
                "{vendor}: one attempt per page"
            );
            for a in &attempts {
                assert_eq!(attr(a, "outcome").as_deref(), Some("ok"));
                assert_eq!(attr(a, "http.response.status_code").as_deref(), Some("200"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_vendor_with_propagate_trace_gets_the_caller_s_trace() {
    let sb = Sandbox::start().await.unwrap();
    let (endpoint, spans) = otlp_receiver().await;
    let gw = start_on(
        &sb,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("CGW_VENDORS__OP__PROPAGATE_TRACE", "true"),
            // patient deadlines: on a loaded machine op's attempt must not be retried
            ("CGW_VENDORS__OP__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__OP__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
        ],
    );
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{caller_trace}-00f067aa0ba902b7-01");
    let body: serde_json::Value = serde_json::from_str(&sandbox::demo_query()).unwrap();
    let (status, answer) = query(&gw, &body, &[("traceparent", &traceparent)]).await;
    assert_eq!(status, 200, "{answer}");
    stop(gw).await;

    let received = sb.op.received();
    assert_eq!(received.len(), 1, "op was asked once");
    let sent = received[0]
        .headers
        .get("traceparent")
        .expect("op (propagate_trace: true) gets a traceparent")
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "W3C traceparent: {sent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], caller_trace, "the caller's trace goes on at op");
    assert_eq!(parts[3], "01", "sampled");
    // the parent op sees is the gateway's attempt that sent the request
    let spans = spans.lock().unwrap().clone();
    let parent = spans
        .iter()
        .find(|s| hex(&s.span_id) == parts[2])
        .unwrap_or_else(|| panic!("op's parent {} is no exported span", parts[2]));
    assert_eq!(parent.name, "vendor_attempt");
    assert_eq!(attr(parent, "vendor").as_deref(), Some("op"));
    for sim in [&sb.hkl, &sb.zvcms] {
        let received = sim.received();
        assert!(!received.is_empty(), "{} was asked", sim.vendor_id());
        for r in received {
            for h in ["traceparent", "tracestate"] {
                assert!(
                    !r.headers.contains_key(h),
                    "{} (no propagate_trace) got {h}",
                    sim.vendor_id()
                );
            }
        }
    }
}

/// Every family from start-up; then a circuit that opens, probes and closes, two identical
/// queries that miss together, and vendors skipped for want of an identity, each moving its
/// series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_coalescing_and_skipped_vendors_move_their_series() {
    let sb = Sandbox::start().await.unwrap();
    let gw = start_on(
        &sb,
        &[
            // op's circuit opens after 4 failed calls and probes after 300 ms
            ("CGW_VENDORS__OP__CIRCUIT__MIN_CALLS", "4"),
            ("CGW_VENDORS__OP__CIRCUIT__OPEN_MS", "300"),
            ("CGW_VENDORS__OP__RETRY__MAX_ATTEMPTS", "1"),
            // held requests stay in flight until the test lets them go
            ("CGW_VENDORS__OP__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__OP__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
            ("CGW_VENDORS__ZVCMS__TIMEOUT_MS", "60000"),
            ("CGW_VENDORS__ZVCMS__RETRY__ATTEMPT_TIMEOUT_MS", "30000"),
        ],
    );
    let client: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let metrics = || async { text(&client, get(&gw.url("/metrics"))).await.1 };
    let catalogue = support::process::metric_catalogue();
    let before = metrics().await;
    every_family(&before, &catalogue);
    promtool(&before);
    let transition = |from: &str, to: &str| {
        format!("cgw_circuit_transitions_total{{vendor=\"op\",from=\"{from}\",to=\"{to}\"}}")
    };
    let state = |s: &str| format!("cgw_circuit_state{{vendor=\"op\",state=\"{s}\"}}");
    let lookups = |r: &str| {
        format!(
            "cgw_cache_lookups_total{{vendor=\"op\",operation=\"list_coupons\",result=\"{r}\"}}"
        )
    };
    let skipped = |v: &str| {
        format!("cgw_vendor_calls_skipped_total{{vendor=\"{v}\",operation=\"list_coupons\"}}")
    };
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("half_open", "open"),
    ] {
        assert_eq!(sample(&before, &transition(from, to)), 0.0);
    }
    assert_eq!(sample(&before, &state("closed")), 1.0);
    assert_eq!(sample(&before, &lookups("coalesced")), 0.0);
    assert_eq!(sample(&before, &skipped("hkl")), 0.0);

    // the circuit: four failed calls open it, a probe after open_ms closes it
    let op_only = serde_json::json!({"member": {"ids": {"op": data::OP_MEMBER}}});
    sb.op.set_fault(Fault::Status(500));
    for _ in 0..4 {
        let (_, body) = query(&gw, &op_only, &[("cache-control", "no-cache")]).await;
        assert_eq!(source(&body, "op")["outcome"], "error", "{body}");
    }
    let opened = metrics().await;
    assert_eq!(sample(&opened, &transition("closed", "open")), 1.0);
    // a scrape shows the state as `GET /v1/vendors` would: open, or half-open once open_ms
    // is over (on a loaded machine the scrape may come that late)
    assert_eq!(
        sample(&opened, &state("open")) + sample(&opened, &state("half_open")),
        1.0
    );
    assert_eq!(sample(&opened, &state("closed")), 0.0);
    sb.op.clear_fault();
    let vendors = gw.url("/v1/vendors");
    support::until("op's circuit turns half-open", || async {
        let (_, v) = text(&client, get(&vendors)).await;
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        v["vendors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["id"] == "op" && v["circuit"] == "half_open")
    })
    .await;
    let (_, body) = query(&gw, &op_only, &[("cache-control", "no-cache")]).await;
    assert_eq!(source(&body, "op")["outcome"], "ok", "the probe: {body}");
    let closed = metrics().await;
    assert_eq!(sample(&closed, &transition("open", "half_open")), 1.0);
    assert_eq!(sample(&closed, &transition("half_open", "closed")), 1.0);
    assert_eq!(sample(&closed, &transition("half_open", "open")), 0.0);
    assert_eq!(sample(&closed, &state("closed")), 1.0);

    // coalescing: the first query's call to op is held; the second asks op and zvcms, and
    // zvcms receiving it shows that the second query has looked op up (it asks its vendors
    // in routes.yaml order, op first) while op's call was still in flight
    let member2 = serde_json::json!({"member": {"ids": {"op": data::OP_MEMBER2}}});
    let with_zvcms = serde_json::json!({"member": {"ids": {"op": data::OP_MEMBER2, "zvcms": data::ZVCMS_MEMBER}}});
    sb.op.reset_counters();
    sb.op.set_fault(Fault::Hold);
    sb.zvcms.set_fault(Fault::Hold);
    let first = tokio::spawn({
        let addr = gw.addr.clone();
        async move { post(&addr, &member2).await }
    });
    support::within("op holds the first call", sb.op.wait_held(1)).await;
    let second = tokio::spawn({
        let addr = gw.addr.clone();
        async move { post(&addr, &with_zvcms).await }
    });
    support::within("zvcms holds the second query's call", sb.zvcms.wait_held(1)).await;
    sb.op.clear_fault();
    sb.zvcms.clear_fault();
    let (s1, first) = support::within("the first answer", first).await.unwrap();
    let (s2, second) = support::within("the second answer", second).await.unwrap();
    assert_eq!((s1, s2), (200, 200), "{first} {second}");
    assert_eq!(source(&first, "op")["cache"], "miss");
    assert_eq!(source(&second, "op")["cache"], "hit", "{second}");
    assert_eq!(sb.op.requests(), 1, "one call to op for both");
    let after = metrics().await;
    promtool(&after);
    assert_eq!(sample(&after, &lookups("coalesced")), 1.0);
    assert_eq!(
        sample(&after, &lookups("miss")),
        1.0,
        "the first query's miss (the no-cache calls above are bypasses)"
    );
    assert_eq!(sample(&after, &lookups("bypass")), 5.0);
    // hkl has no identity in any of the queries; zvcms only in the last one
    assert_eq!(sample(&after, &skipped("hkl")), 7.0);
    assert_eq!(sample(&after, &skipped("zvcms")), 6.0);
    stop(gw).await;
}

/// POSTs `body` to the gateway at `addr` (for queries sent from a spawned task).
async fn post(addr: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let client: TestClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = Request::post(format!("http://{addr}/v1/coupons/query"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let (status, text) = text(&client, req).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A vendor's failure reaches the log: a warning naming the vendor and operation, inside the
/// request's span (its id), for every request it happens in. (Its parent used to be the
/// vendor's span, which the log does not show, and the warning was dropped with it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_failure_is_logged_with_the_vendor_and_the_request_s_id() {
    let sb = Sandbox::start().await.unwrap();
    sb.hkl.set_fault(Fault::Status(500));
    let gw = start_on(&sb, &[]);
    let body: serde_json::Value = serde_json::from_str(&sandbox::demo_query()).unwrap();
    let ids = ["failing-1", "failing-2", "failing-3"];
    for id in ids {
        let (status, answer) = query(
            &gw,
            &body,
            &[("x-request-id", id), ("cache-control", "no-cache")],
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(source(&answer, "hkl")["outcome"], "error", "{answer}");
    }
    gw.sigterm();
    let (code, _out, stderr) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let warnings: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "vendor call failed")
        .collect();
    for id in ids {
        let w = warnings
            .iter()
            .find(|w| w["span"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no warning in request {id}:\n{stderr}"));
        assert_eq!(w["level"], "WARN", "{w}");
        assert_eq!(w["vendor"], "hkl", "{w}");
        assert_eq!(w["operation"], "list_coupons", "{w}");
    }
}
