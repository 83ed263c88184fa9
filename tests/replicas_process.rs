//! Three gateway processes sharing one real `redis-server` and the sandbox vendors (running in
//! this test, so the templates they hold can be counted), with idempotent creates spread over
//! them, and one replica SIGKILLed while creates are in flight: every Idempotency-Key makes
//! exactly one template at the vendor, and every key retried on a surviving replica replays
//! that template.
//!
//! The kill lands while the dying replica's creates wait at the vendor (the sandbox holds
//! them): their connections close with the process, so the vendor never applies them, and
//! their keys stay claimed until `idempotency_lease_ms` ends. A repeat meanwhile waits for the
//! claim's answer and is refused (409 in progress, or 504 at the caller's deadline) instead of
//! creating a second template; after the lease a surviving replica creates it once. (A replica killed after the vendor applied a create but before the
//! answer was recorded cannot be told from this one: see docs/replicas.md.)
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use coupon_gateway::sandbox::data::{day, ymd};
use coupon_gateway::sandbox::{Fault, Sandbox, SimHandle};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::process::{GatewayProcess, TempDir, sandbox_routes};
use support::redis::{RedisServer, redis_available};

/// Long enough for a held create to wait at the vendor; the lease is above the caller's
/// deadline, as docs/replicas.md asks.
const LEASE_MS: u64 = 4000;

fn routes(sb: &Sandbox, redis: &RedisServer) -> String {
    let text = sandbox_routes(sb);
    let shared = format!(
        "server:\n  shared:\n    redis_url: {}\n    key_prefix: 'kill:'\n    timeout_ms: 500\n    retry_ms: 100\n    idempotency_lease_ms: {LEASE_MS}\n",
        redis.url()
    );
    let out = text
        .replacen("server:\n", &shared, 1)
        .replacen(
            "  request_timeout_ms: 5000",
            "  request_timeout_ms: 3500",
            1,
        )
        // a create waits at the held vendor longer than the shipped attempt timeout
        .replacen("    timeout_ms: 2000\n", "    timeout_ms: 3000\n", 1)
        .replacen(
            "retry: {max_attempts: 2, attempt_timeout_ms: 900,",
            "retry: {max_attempts: 2, attempt_timeout_ms: 3000,",
            1,
        );
    assert!(out.contains("attempt_timeout_ms: 3000,") && out.contains("request_timeout_ms: 3500"));
    out
}

fn wxcard(sb: &Sandbox) -> &SimHandle {
    sb.vendors()
        .into_iter()
        .find(|(id, _)| *id == "wxcard")
        .unwrap()
        .1
}

fn body(key: &str) -> String {
    json!({"vendor": "wxcard", "kind": "discount", "begin_at": ymd(day(1)), "end_at": ymd(day(31)),
           "sync": true, "card": {"base_info": {"title": key}, "discount": 20}})
    .to_string()
}

/// One create: `Ok((status, replayed, body))`, or `Err` when the replica did not answer.
async fn create(
    client: &support::TestClient,
    gw: &str,
    key: &str,
) -> Result<(u16, bool, Value), String> {
    let req = Request::post(format!("http://{gw}/v1/templates"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body(key))))
        .unwrap();
    let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let replayed = res.headers().contains_key("idempotent-replayed");
    let raw = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((
        status,
        replayed,
        serde_json::from_slice(&raw).unwrap_or(Value::Null),
    ))
}

/// Every template the vendor holds, by title, read through a surviving replica.
async fn titles(gw: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for page in 1.. {
        let a = support::send(
            Request::get(format!(
                "http://{gw}/v1/templates?vendor=wxcard&per_page=100&page={page}"
            ))
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        for t in a.body["templates"].as_array().unwrap() {
            *out.entry(t["title"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
        if page >= a.body["page"]["total_pages"].as_u64().unwrap() {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_create_loses_no_key_and_doubles_none() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start(None).await;
    let sb = Sandbox::start().await.unwrap();
    let dir = TempDir::new("sigkill");
    let path = dir.0.join("routes.yaml");
    std::fs::write(&path, routes(&sb, &redis)).unwrap();
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(GatewayProcess::start(Path::new(&path), &[]).await);
    }
    let addrs: Vec<String> = gws.iter().map(|g| g.addr.clone()).collect();
    let client = support::client();
    // what each key's first 201 said
    let mut answers: BTreeMap<String, Value> = BTreeMap::new();

    // creates spread over the three replicas, concurrently
    let first: Vec<String> = (0..12).map(|i| format!("sigkill-a{i}")).collect();
    let tasks: Vec<_> = first
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (client, gw, key) = (client.clone(), addrs[i % 3].clone(), key.clone());
            tokio::spawn(async move { (key.clone(), create(&client, &gw, &key).await) })
        })
        .collect();
    for t in tasks {
        let (key, a) = t.await.unwrap();
        let (status, _, body) = a.expect("every replica answers");
        assert_eq!(status, 201, "{key}: {body}");
        answers.insert(key, body["template"].clone());
    }

    // the next creates wait at the vendor; replica 0 dies while its own are there
    let wx = wxcard(&sb);
    wx.set_fault(Fault::Hold);
    let held: Vec<String> = (0..12).map(|i| format!("sigkill-b{i}")).collect();
    // the dead replica's claims are taken after this: their leases end no earlier than
    // LEASE_MS from here
    let claimed_after = std::time::Instant::now();
    let tasks: Vec<_> = held
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (client, gw, key) = (client.clone(), addrs[i % 3].clone(), key.clone());
            tokio::spawn(async move { (key.clone(), i % 3, create(&client, &gw, &key).await) })
        })
        .collect();
    support::within("12 creates wait at the vendor", wx.wait_held(12)).await;
    gws[0].signal("KILL");
    gws[0].exited().await;
    // the dead replica's 4 requests went away with its connections
    support::until("the vendor sees the dead replica's requests go", || {
        let n = wx.held();
        async move { n == 8 }
    })
    .await;
    wx.clear_fault();
    let mut orphaned = Vec::new();
    for t in tasks {
        let (key, replica, a) = t.await.unwrap();
        match a {
            Ok((201, false, body)) => {
                assert_ne!(replica, 0, "{key}: answered by the killed replica");
                answers.insert(key, body["template"].clone());
            }
            Ok(other) => panic!("{key}: {other:?}"),
            Err(_) => {
                assert_eq!(replica, 0, "{key}: a surviving replica did not answer");
                orphaned.push(key);
            }
        }
    }
    assert_eq!(orphaned.len(), 4, "replica 0's creates were cut off");

    // the caller retries each cut-off key on a survivor: refused while the dead replica's
    // claim lives, then created once
    let mut refused_within_lease = false;
    for (i, key) in orphaned.iter().enumerate() {
        let gw = &addrs[1 + i % 2];
        let mut refused = 0;
        let within_lease = claimed_after.elapsed() < Duration::from_millis(LEASE_MS);
        let waited = tokio::time::timeout(Duration::from_millis(LEASE_MS * 4), async {
            loop {
                match create(&client, gw, key).await {
                    Ok((201, _, body)) => return body,
                    // a repeat waits for the claim's answer: "in progress" (409), or no answer
                    // within the caller's deadline (504); either way nothing was created
                    Ok((409 | 504, _, body)) => {
                        assert!(
                            body["detail"].as_str().is_some_and(
                                |d| d.contains("in progress") || d.contains("longer than")
                            ),
                            "{body}"
                        );
                        refused += 1;
                    }
                    other => panic!("{key}: {other:?}"),
                }
                // pacing of the caller's retries
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let body = waited.unwrap_or_else(|_| panic!("{key}: not created after the lease"));
        // a repeat sent while the lease surely lived was refused (on a machine so slow that
        // none was, the single template per key below still holds)
        if within_lease {
            assert!(refused > 0, "{key}: a repeat within the lease is refused");
            refused_within_lease = true;
        }
        answers.insert(key.clone(), body["template"].clone());
    }
    if !refused_within_lease {
        eprintln!(
            "note: every repeat came after the lease; the in-progress refusal went unchecked"
        );
    }

    // and creates go on on the survivors
    for i in 0..6 {
        let key = format!("sigkill-c{i}");
        let (status, _, body) = create(&client, &addrs[1 + i % 2], &key).await.unwrap();
        assert_eq!(status, 201, "{body}");
        answers.insert(key, body["template"].clone());
    }

    // every key: one template at the vendor, and the same one replayed by either survivor
    let at_vendor = titles(&addrs[1]).await;
    assert_eq!(answers.len(), 30, "every key was answered");
    for (key, template) in &answers {
        assert_eq!(
            at_vendor.get(key),
            Some(&1),
            "{key}: one template at the vendor"
        );
        for gw in &addrs[1..] {
            let (status, replayed, body) = create(&client, gw, key).await.unwrap();
            assert_eq!(status, 201, "{key}: {body}");
            assert!(replayed, "{key}: replayed");
            assert_eq!(&body["template"], template, "{key}: the same template");
        }
    }
}
