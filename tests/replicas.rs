//! Several replicas, one Redis: three gateways in this process, each with its own state
//! (`embedded::start`), sharing a real `redis-server` started per test on loopback and the
//! sandbox vendors. Checks what each shared piece buys (one template per Idempotency-Key, one
//! token fetch, one quota, one vendor call per ttl) and what happens while Redis is down.
//!
//! Needs Debian's `redis-server`. Without it the tests print why and pass, unless `CI` is set
//! (CI installs it in .ci/run), where they fail.
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coupon_gateway::config::shared::{Sensitive, SharedConfig};
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::idempotency::{Claim, IdempotencyError, IdempotencyStore};
use coupon_gateway::sandbox::Sandbox;
use coupon_gateway::sandbox::data::{day, ymd};
use coupon_gateway::shared::Shared;
use coupon_gateway::shared::idempotency::RedisStore;
use coupon_gateway::shared::limiter::SharedRate;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use support::redis::{RedisServer, redis_available};

// === three replicas ===

/// The shipped routes.yaml with `server.shared` pointing at `redis`, edited by `edit`.
fn routes(redis: &RedisServer, edit: impl Fn(String) -> String) -> String {
    let shared = format!(
        "server:\n  shared:\n    redis_url: {}\n    key_prefix: 'test:'\n    timeout_ms: 250\n    retry_ms: 100\n",
        redis.url()
    );
    edit(ROUTES_YAML.replacen("server:\n", &shared, 1))
}

async fn replicas(sb: &Sandbox, yaml: &str) -> Vec<embedded::Running> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let plan = embedded::sandbox_plan("routes.yaml", yaml, sb, false).expect("plan");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        out.push(embedded::start(plan, listener));
    }
    out
}

struct Answer {
    status: StatusCode,
    replayed: bool,
    content_type: String,
    body: Value,
}

async fn send(req: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let res = client.request(req).await.expect("the gateway answers");
    let (parts, body) = res.into_parts();
    let raw = body.collect().await.expect("a body").to_bytes();
    Answer {
        status: parts.status,
        replayed: parts.headers.contains_key("idempotent-replayed"),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
    }
}

fn template(title: &str) -> Value {
    json!({"vendor": "wxcard", "kind": "discount", "begin_at": ymd(day(1)), "end_at": ymd(day(31)),
           "sync": true, "card": {"base_info": {"title": title}, "discount": 20}})
}

async fn create(gw: &embedded::Running, body: &Value, key: &str) -> Answer {
    send(
        Request::post(gw.url("/v1/templates"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

/// The vendor's template count, asked afresh.
async fn template_total(gw: &embedded::Running) -> u64 {
    let a = send(
        Request::get(gw.url("/v1/templates?vendor=wxcard"))
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["page"]["total"].as_u64().expect("a total")
}

async fn query(gw: &embedded::Running, fresh: bool) -> Answer {
    let mut req =
        Request::post(gw.url("/v1/coupons/query")).header("content-type", "application/json");
    if fresh {
        req = req.header("cache-control", "no-cache");
    }
    send(
        req.body(Full::new(
            Bytes::from(coupon_gateway::sandbox::demo_query()),
        ))
        .unwrap(),
    )
    .await
}

/// Waits (bounded) for a condition only visible by asking.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: not within 10 s");
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_with_one_key_across_replicas_make_one_template() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    let gws = Arc::new(replicas(&sb, &routes(&redis, |t| t)).await);
    let before = template_total(&gws[0]).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (gws, barrier) = (Arc::clone(&gws), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                create(&gws[i % 3], &template("冬季8折券"), "winter-2026").await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let first: Vec<_> = answers.iter().filter(|a| !a.replayed).collect();
    assert_eq!(
        first.len(),
        1,
        "one request created, the others replayed it"
    );
    for a in &answers {
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(
            a.body, first[0].body,
            "every replica replays the same answer"
        );
    }
    assert_eq!(template_total(&gws[2]).await, before + 1, "one template");
    // the three replicas shared one access token
    assert_eq!(sb.token_requests(), 1, "one token fetch across replicas");

    // the same key with another body is a conflict on any replica
    let other = create(&gws[1], &template("另一张"), "winter-2026").await;
    assert_eq!(other.status, 409, "{}", other.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_fetch_across_replicas_and_a_401_renews_it_once_for_all() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    let gws = Arc::new(replicas(&sb, &routes(&redis, |t| t)).await);

    let lists = |gws: Arc<Vec<embedded::Running>>| async move {
        let tasks: Vec<_> = (0..9)
            .map(|i| {
                let gws = Arc::clone(&gws);
                tokio::spawn(async move { template_total(&gws[i % 3]).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    };
    lists(Arc::clone(&gws)).await;
    assert_eq!(sb.token_requests(), 1, "one fetch for three replicas");

    // the vendor revokes every token: each replica's next call is answered 401
    sb.revoke_tokens();
    lists(Arc::clone(&gws)).await;
    assert_eq!(
        sb.token_requests(),
        2,
        "the first 401 renewed the token, the other replicas read the new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_asked_through_three_replicas_within_the_ttl_is_one_vendor_call() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    let gws = replicas(&sb, &routes(&redis, |t| t)).await;
    for (_, sim) in sb.vendors() {
        sim.reset_counters();
    }

    let a = query(&gws[0], false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let asked: Vec<u64> = sb.vendors().iter().map(|(_, s)| s.requests()).collect();
    assert!(asked[..3].iter().all(|n| *n > 0), "{asked:?}");
    // replica 0 stored each vendor's answer for the others (on a task): wait for it
    until("three answers in the shared cache", || async {
        redis.keys("test:c:*:list_coupons:*").await.len() == 3
    })
    .await;

    for gw in &gws[1..] {
        let b = query(gw, false).await;
        assert_eq!(b.status, 200, "{}", b.body);
        assert_eq!(b.body["coupons"], a.body["coupons"], "the same coupons");
        for s in b.body["sources"].as_array().unwrap() {
            assert_eq!(s["cache"], "hit", "{s}");
        }
    }
    let after: Vec<u64> = sb.vendors().iter().map(|(_, s)| s.requests()).collect();
    assert_eq!(after, asked, "no vendor was asked again by another replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_across_replicas_are_one_vendor_call() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    let gws = Arc::new(replicas(&sb, &routes(&redis, |t| t)).await);
    // slow vendors, so that every replica misses while the first call is still out
    for (_, sim) in &sb.vendors()[..3] {
        sim.set_fault(coupon_gateway::sandbox::Fault::Delay(
            Duration::from_millis(300),
        ));
        sim.reset_counters();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(9));
    let tasks: Vec<_> = (0..9)
        .map(|i| {
            let (gws, barrier) = (Arc::clone(&gws), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                query(&gws[i % 3], false).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["coupons"], answers[0].body["coupons"]);
    }
    // one replica asked each vendor (the demo member's coupons are one page per vendor)
    let asked: Vec<u64> = sb.vendors()[..3]
        .iter()
        .map(|(_, s)| s.requests())
        .collect();
    assert_eq!(
        asked,
        [1, 1, 1],
        "one vendor call per vendor for nine queries on three replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_serves_another_replicas_stale_answer_when_the_vendor_fails() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    // list_coupons: fresh for 300 ms, then kept 10 min (the shipped stale_if_error_ms)
    let yaml = routes(&redis, |t| {
        t.replace("ttl_ms: 30000 ", "ttl_ms: 300 ")
            .replace("empty_ttl_ms: 5000 ", "empty_ttl_ms: 300 ")
    });
    assert!(
        yaml.contains("stale_if_error_ms"),
        "the shipped file keeps stale answers"
    );
    let gws = replicas(&sb, &yaml).await;
    let a = query(&gws[0], false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let keys = || async { redis.keys("test:c:*:list_coupons:*").await };
    until("the answers are in the shared cache", || async {
        keys().await.len() == 3
    })
    .await;
    // past the ttl (the shared copy has only its stale-if-error time left)
    let stale_ms = i64::try_from(600_000u64).unwrap();
    until("the shared answers are past their ttl", || async {
        let mut conn = redis.conn().await;
        let mut all_stale = true;
        for k in keys().await {
            let left: i64 = redis::cmd("PTTL")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .unwrap();
            all_stale &= left <= stale_ms;
        }
        all_stale
    })
    .await;

    let (op_id, op) = sb.vendors()[0];
    op.set_fault(coupon_gateway::sandbox::Fault::Status(500));
    // replica 1 never held this answer: it comes from the shared level
    let b = query(&gws[1], false).await;
    assert_eq!(b.status, 200, "{}", b.body);
    let source = b.body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["vendor"] == op_id)
        .unwrap()
        .clone();
    assert_eq!(source["cache"], "stale", "{source}");
    assert_ne!(source["outcome"], "ok", "{source}");
    let from = |body: &Value| {
        body["coupons"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["vendor"] == op_id)
            .count()
    };
    assert!(
        from(&b.body) > 0 && from(&b.body) == from(&a.body),
        "{}",
        b.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vendor_quota_is_held_across_replicas_within_ten_percent() {
    if !redis_available() {
        return;
    }
    const RPS: u64 = 10;
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    // the second vendor's quota: 10/s, no burst; callers queue up to 250 ms, so every slot
    // finds a caller waiting and the vendor sees the quota itself, not the demand's gaps
    let yaml = routes(&redis, |t| {
        let at = t.find("\n  hkl:\n").expect("hkl");
        let (head, tail) = t.split_at(at);
        let tail = tail
            .replacen("rps: 1000", &format!("rps: {RPS}"), 1)
            .replacen("burst: 200", "burst: 1", 1)
            .replacen("queue_ms: 50", "queue_ms: 250", 1);
        format!("{head}{tail}")
    });
    let gws = Arc::new(replicas(&sb, &yaml).await);
    let hkl = &sb.vendors()[1].1;
    assert_eq!(sb.vendors()[1].0, "hkl");
    hkl.reset_counters();

    let window = Duration::from_secs(3);
    let started = tokio::time::Instant::now();
    let workers: Vec<_> = (0..12)
        .map(|i| {
            let gws = Arc::clone(&gws);
            tokio::spawn(async move {
                let mut sent = 0u64;
                while started.elapsed() < window {
                    let a = query(&gws[i % 3], true).await;
                    assert_eq!(a.status, 200, "{}", a.body);
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut demand = 0;
    for w in workers {
        demand += w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = hkl.requests() as f64;
    let allowed = RPS as f64 * elapsed + 1.0;
    eprintln!(
        "quota {RPS}/s over {elapsed:.2} s: {demand} asked, {got} reached the vendor (allowed {allowed:.1})"
    );
    assert!(
        demand as f64 > 2.0 * allowed,
        "the demand exceeds the quota"
    );
    assert!(
        (got - allowed).abs() <= 0.1 * allowed,
        "{got} calls reached the vendor, {allowed:.1} allowed"
    );
}

/// The shared quota spaces the calls it lets wait: with `burst: 1` the vendor never gets two
/// calls at once, whichever replicas send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_waiting_for_the_shared_quota_go_out_at_their_slot() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    // hkl: 10/s without burst, callers queue up to 2 s: three calls at once take the
    // slots at 0, 100 and 200 ms
    let yaml = routes(&redis, |t| {
        let at = t.find("\n  hkl:\n").expect("hkl");
        let (head, tail) = t.split_at(at);
        let tail = tail
            .replacen("rps: 1000", "rps: 10", 1)
            .replacen("burst: 200", "burst: 1", 1)
            .replacen("queue_ms: 50", "queue_ms: 2000", 1);
        format!("{head}{tail}")
    });
    let gws = Arc::new(replicas(&sb, &yaml).await);
    let hkl = &sb.vendors()[1].1;
    assert_eq!(sb.vendors()[1].0, "hkl");
    hkl.reset_counters();
    // hkl holds what it receives, so the test sees when each call arrives
    hkl.set_fault(coupon_gateway::sandbox::Fault::Hold);
    // measured from before the first query: the third slot is 200 ms after the first one
    // taken, which is after this instant, so a loaded machine can only make it longer
    let start = tokio::time::Instant::now();
    let asked: Vec<_> = (0..3)
        .map(|i| {
            let gws = Arc::clone(&gws);
            tokio::spawn(async move { query(&gws[i], true).await })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), hkl.wait_held(3))
        .await
        .expect("the third call reaches hkl");
    // a lower bound, not an ordering: the third call waited for its slot two intervals after
    // the first (50 ms of margin for clocks; calls let out at once arrive in a few ms)
    let spread = start.elapsed();
    hkl.clear_fault();
    for a in asked {
        let a = a.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        let source = a.body["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["vendor"] == "hkl")
            .unwrap()
            .clone();
        assert_eq!(source["outcome"], "ok", "waited for its slot: {source}");
    }
    assert_eq!(hkl.requests(), 3);
    assert!(spread >= Duration::from_millis(150), "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_reads_are_answered_keyed_writes_refused_and_sharing_resumes() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    let gws = replicas(&sb, &routes(&redis, |t| t)).await;
    assert_eq!(query(&gws[0], false).await.status, 200);
    let before = template_total(&gws[0]).await;

    redis.stop();
    for gw in &gws {
        let started = tokio::time::Instant::now();
        let a = query(gw, true).await;
        assert_eq!(a.status, 200, "reads go on without Redis: {}", a.body);
        assert_eq!(a.body["complete"], true, "{}", a.body);
        // 250 ms timeout, then the tier is skipped: no request waits on Redis much longer
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    for gw in &gws {
        let w = create(gw, &template("停机券"), "while-down").await;
        assert!(
            w.status == 503 && w.body["type"].is_string(),
            "a keyed write is refused, not run: {} {}",
            w.status,
            w.body
        );
        assert_eq!(w.content_type, "application/problem+json");
        assert!(!gw.state.shared.as_ref().expect("shared tier").is_up());
    }
    assert_eq!(template_total(&gws[1]).await, before, "nothing was created");
    // a revoked token is renewed by each replica on its own: one fetch per replica
    let fetched = sb.token_requests();
    sb.revoke_tokens();
    for gw in &gws {
        template_total(gw).await;
        template_total(gw).await;
    }
    assert_eq!(
        sb.token_requests(),
        fetched + 3,
        "one token fetch per replica"
    );

    redis.restart().await;
    // the next keyed write after retry_ms probes Redis and finds it back
    until("shared mode resumes", || async {
        create(&gws[0], &template("恢复券"), "after-restart")
            .await
            .status
            == 201
    })
    .await;
    // every replica resumes after its own probe (any use of Redis; a read does it)
    for gw in &gws {
        until("the replica uses Redis again", || async {
            query(gw, true).await;
            gw.state.shared.as_ref().expect("shared tier").is_up()
        })
        .await;
    }
    let again = create(&gws[2], &template("恢复券"), "after-restart").await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert!(
        again.replayed,
        "another replica replays it: sharing resumed"
    );
    assert_eq!(template_total(&gws[1]).await, before + 1);
}

// === the pieces alone ===

fn shared_config(redis: &RedisServer) -> SharedConfig {
    SharedConfig {
        redis_url: Some(Sensitive::new(redis.url())),
        key_prefix: "unit:".to_owned(),
        timeout_ms: 250,
        retry_ms: 100,
        ..SharedConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_comes_from_the_password_setting_and_a_wrong_one_is_unavailable() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(Some("s3cret-pw")).await;
    let mut cfg = shared_config(&redis);
    cfg.password = Some(Sensitive::new("s3cret-pw"));
    let store = RedisStore::new(
        Arc::new(Shared::new(&cfg).unwrap()),
        Duration::from_secs(60),
    );
    assert!(matches!(
        store.claim("k", "fp", Duration::ZERO).await,
        Ok(Claim::Proceed(_))
    ));

    cfg.password = Some(Sensitive::new("wrong"));
    let shared = Shared::new(&cfg).unwrap();
    assert!(!format!("{shared:?}").contains("wrong"));
    let store = RedisStore::new(Arc::new(shared), Duration::from_secs(60));
    assert_eq!(
        store.claim("k2", "fp", Duration::ZERO).await.err(),
        Some(IdempotencyError::Unavailable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_trusts_the_configured_ca_and_nothing_else() {
    if !redis_available() {
        return;
    }
    let openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !openssl {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs openssl to make the test certificates"
        );
        eprintln!("SKIPPED: openssl is not installed; it makes the TLS test's certificates");
        return;
    }
    let redis = RedisServer::start_with(None, true).await;
    let tls_port = redis.tls_port.expect("a TLS port");
    let mut cfg = shared_config(&redis);
    cfg.redis_url = Some(Sensitive::new(format!("rediss://127.0.0.1:{tls_port}/0")));
    cfg.timeout_ms = 1_000; // a handshake on a busy machine
    cfg.tls_ca_file = Some(redis.dir.join("ca.crt").to_string_lossy().into_owned());
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let store = RedisStore::new(
        Arc::new(Shared::new(&cfg).unwrap()),
        Duration::from_secs(60),
    );
    assert!(
        matches!(
            store.claim("k", "fp", Duration::ZERO).await,
            Ok(Claim::Proceed(_))
        ),
        "TLS with the private CA"
    );
    // the system's roots do not know the test CA: the certificate is refused
    cfg.tls_ca_file = None;
    let store = RedisStore::new(
        Arc::new(Shared::new(&cfg).unwrap()),
        Duration::from_secs(60),
    );
    assert_eq!(
        store.claim("k2", "fp", Duration::ZERO).await.err(),
        Some(IdempotencyError::Unavailable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_while_redis_is_down_is_unavailable_within_the_timeout() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start(None).await;
    let shared = Arc::new(Shared::new(&shared_config(&redis)).unwrap());
    let store = RedisStore::new(Arc::clone(&shared), Duration::from_secs(60));
    redis.stop();
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        assert_eq!(
            store.claim("k", "fp", Duration::from_secs(5)).await.err(),
            Some(IdempotencyError::Unavailable)
        );
        // the connect attempt is bounded by 4 × timeout (TLS), the command by the timeout
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(!shared.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_replica_died_is_refused_until_its_lease_ends() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let mut cfg = shared_config(&redis);
    cfg.idempotency_lease_ms = 300;
    let replica = |cfg: &SharedConfig| {
        RedisStore::new(Arc::new(Shared::new(cfg).unwrap()), Duration::from_secs(60))
    };
    let (dying, other) = (replica(&cfg), replica(&cfg));
    match dying.claim("k", "fp", Duration::ZERO).await {
        // the replica dies mid-request: nothing settles its claim
        Ok(Claim::Proceed(pending)) => std::mem::forget(pending),
        other => panic!("expected Proceed, got {other:?}"),
    }
    assert_eq!(
        other.claim("k", "fp", Duration::ZERO).await.err(),
        Some(IdempotencyError::InProgress),
        "within the lease a repeat is not run again"
    );
    assert!(matches!(
        other.claim("k", "fp-other", Duration::ZERO).await,
        Ok(Claim::Conflict)
    ));
    until("the lease ends and a repeat may proceed", || async {
        match other.claim("k", "fp", Duration::ZERO).await {
            Ok(Claim::Proceed(p)) => {
                p.complete(coupon_gateway::idempotency::StoredResponse {
                    status: 201,
                    content_type: "application/json".to_owned(),
                    body: Bytes::from_static(b"{}"),
                });
                true
            }
            _ => false,
        }
    })
    .await;
    until("the answer is replayed to the other replica", || async {
        matches!(dying.claim("k", "fp", Duration::ZERO).await, Ok(Claim::Replay(r)) if r.status == 201)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_limiter_costs_one_round_trip_per_call() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let shared = Arc::new(Shared::new(&shared_config(&redis)).unwrap());
    let rate = SharedRate::new(Arc::clone(&shared), "bench", 1_000_000, 1_000_000);
    rate.reserve(Duration::ZERO).await.unwrap(); // loads the script, connects
    let n = 500;
    let started = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(rate.reserve(Duration::ZERO).await, Ok(Some(Duration::ZERO)));
    }
    let per_call = started.elapsed() / n;
    eprintln!("shared limiter: {per_call:?} per call (EVALSHA on loopback)");
    assert!(per_call < Duration::from_millis(5), "{per_call:?}");

    // and it limits: 10/s with a burst of 2, no queueing → the third call is refused
    let tight = SharedRate::new(shared, "tight", 10, 2);
    assert_eq!(
        tight.reserve(Duration::ZERO).await,
        Ok(Some(Duration::ZERO))
    );
    assert_eq!(
        tight.reserve(Duration::ZERO).await,
        Ok(Some(Duration::ZERO))
    );
    assert_eq!(tight.reserve(Duration::ZERO).await, Ok(None));
    // with room to queue it is reserved, about one interval (100 ms) ahead
    let wait = tight
        .reserve(Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
}
