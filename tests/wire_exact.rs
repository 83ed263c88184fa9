//! The gateway speaks the vendor kit's wire protocols byte-exactly, to any server: a plain
//! capture server (no simulator logic) records what the shipped routes.yaml sends, and each
//! request is checked against the worked examples of the vendors' integration kit.
mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use coupon_gateway::config::load_str;
use coupon_gateway::crypto;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::engine::plan::{Credentials, Plan};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    body: Bytes,
}

type Connections = Arc<std::sync::atomic::AtomicUsize>;

/// Records every request and answers `answer`; counts the connections it accepts.
async fn capture_server(answer: &'static str) -> (String, Arc<Mutex<Vec<Captured>>>, Connections) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let connections = Connections::default();
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let log = log2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let query = parts
                            .uri
                            .query()
                            .unwrap_or("")
                            .split('&')
                            .filter(|p| !p.is_empty())
                            .map(|p| {
                                let (k, v) = p.split_once('=').unwrap();
                                (
                                    crypto::percent_decode(k).unwrap(),
                                    crypto::percent_decode(v).unwrap(),
                                )
                            })
                            .collect();
                        log.lock().unwrap().push(Captured {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            query,
                            content_type: parts
                                .headers
                                .get("content-type")
                                .map(|v| v.to_str().unwrap().to_owned()),
                            body,
                        });
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(answer.as_bytes()),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            });
        }
    });
    (format!("http://{addr}"), log, connections)
}

/// The shipped routes.yaml, `vendor` pointed at `url` with the kit's sandbox credentials,
/// after `edit` is applied to the text.
async fn gateway(
    vendor: &str,
    url: &str,
    creds: &[(&str, &str)],
    edit: impl Fn(String) -> String,
) -> embedded::Running {
    let mut loaded = load_str("routes.yaml", &edit(ROUTES_YAML.to_owned()), false).unwrap();
    let ids: Vec<String> = loaded.config.vendors.keys().cloned().collect();
    for id in ids {
        if id != vendor {
            loaded.config.vendors.remove(&id);
        }
    }
    let v = loaded.config.vendors.get_mut(vendor).unwrap();
    v.base_url = url.to_owned();
    for (k, val) in creds {
        v.credentials
            .insert((*k).to_owned(), Some((*val).to_owned()));
    }
    let (plan, _) = Plan::compile(&loaded, Credentials::Required).unwrap();
    embedded::start(
        plan,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

async fn ask(gw: &embedded::Running, member: Value) -> support::Answer {
    support::post_json(&gw.url("/v1/coupons/query"), &json!({ "member": member })).await
}

#[tokio::test]
async fn op_requests_match_the_kit_worked_example_byte_for_byte() {
    let (url, log, _) = capture_server(r#"{"code":200,"message":"成功","data":[]}"#).await;
    // the worked example's body carries UseStatus 2: add it to the shipped template
    let gw = gateway(
        "op",
        &url,
        &[
            ("client", "70374ddd0f3641368d419b2d93127b8f"),
            ("secret", "op-sandbox-secret"),
        ],
        |t| {
            t.replace(
                "            ChatId: \"{{member.id}}\"\n",
                "            ChatId: \"{{member.id}}\"\n            UseStatus: 2\n",
            )
        },
    )
    .await;
    let a = ask(&gw, json!({"ids": {"op": "u00011234567890"}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let req = log.lock().unwrap()[0].clone();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/op/v2/getTicketUsersByChatId");
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        &req.body[..],
        br#"{"OwnerType":1,"ChatId":"u00011234567890","UseStatus":2}"#
    );
    let q = |name: &str| {
        req.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(q("apiVersion"), Some("01"));
    assert_eq!(q("client"), Some("70374ddd0f3641368d419b2d93127b8f"));
    assert_eq!(q("version"), Some("2.0"));
    assert_eq!(q("sign"), Some("6ac64cca456e8f3da7a53a72147ad831"));
}

#[tokio::test]
async fn hkl_param_is_the_kit_ciphertext_and_openid_is_used_without_an_id() {
    let (url, log, _) = capture_server(r#"{"msg":"操作成功","code":0,"data":{"list":[]}}"#).await;
    let gw = gateway(
        "hkl",
        &url,
        &[("channel", "hkl-test"), ("des_key", "hklkey01")],
        |t| t,
    )
    .await;
    let a = ask(
        &gw,
        json!({"ids": {"hkl": "K1H93QDKI00B7"}, "openid": "oEv-It_aoh7mzEinzyPhnR0-uVc41"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = ask(&gw, json!({"openid": "oEv-It_aoh7mzEinzyPhnR0-uVc41"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let log = log.lock().unwrap();
    let body = |i: usize| serde_json::from_slice::<Value>(&log[i].body).unwrap();
    assert_eq!(log[0].path, "/htest/openapi/v1/listCpnItemByMember");
    assert_eq!(body(0)["channel"], "hkl-test");
    // the member id wins over the openid; its param is the first worked example
    assert_eq!(
        body(0)["param"],
        "6B177EDF396081B2FE204C2B2DB191452417852A0235A46BEF363AE847E2AB1E"
    );
    assert_eq!(
        body(1)["param"],
        "CEBBFCDA865572A56EBBD741BF78FFA3E6FBC4C24F0BB5816D774F9001B203D566238237BEF024ECA1FC0DDE5ADF81D4"
    );
    let ts: i64 = body(0)["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(
        (jiff::Timestamp::now().as_millisecond() - ts).abs() < 60_000,
        "epoch ms as a string"
    );
}

#[tokio::test]
async fn zvcms_tokens_verify_and_every_request_has_a_fresh_nonce() {
    let (url, log, connections) =
        capture_server(r#"{"status":true,"code":"20004","message":"查询的信息不存在"}"#).await;
    let gw = gateway(
        "zvcms",
        &url,
        &[
            ("open_id", "6dc05b4ac175cf316d226252b05cf685"),
            ("grant_code", "782c281f62"),
            ("secret", "zv-sandbox-secret"),
        ],
        |t| t,
    )
    .await;
    for _ in 0..3 {
        // no-cache: every query reaches the vendor (the empty answer would be cached)
        let a = support::send(
            Request::post(gw.url("/v1/coupons/query"))
                .header("content-type", "application/json")
                .header("cache-control", "no-cache")
                .body(Full::new(Bytes::from(
                    json!({"member": {"ids": {"zvcms": "383933091455959041"}}}).to_string(),
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            a.body["sources"][0]["outcome"], "ok",
            "20004 is an empty answer"
        );
        assert_eq!(a.body["sources"][0]["count"], 0);
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 3);
    // the three calls went over one pooled keep-alive connection
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut nonces = std::collections::HashSet::new();
    for req in log.iter() {
        let b: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(b["openId"], "6dc05b4ac175cf316d226252b05cf685");
        assert_eq!(b["params"], json!({"customerId": "383933091455959041"}));
        let (nonce, ts) = (
            b["nonce"].as_str().unwrap(),
            b["timestamp"].as_str().unwrap(),
        );
        assert!(nonce.parse::<u64>().unwrap() > 0);
        let msg = format!(
            "grantCode=782c281f62&nonce={nonce}&openId=6dc05b4ac175cf316d226252b05cf685&timestamp={ts}"
        );
        let token = crypto::percent_decode(b["token"].as_str().unwrap()).unwrap();
        let tag = crypto::base64_decode(&token).unwrap();
        assert!(
            crypto::hmac_sha1_verify(b"zv-sandbox-secret", msg.as_bytes(), &tag),
            "token verifies"
        );
        assert!(nonces.insert(nonce.to_owned()), "nonce reused");
    }
    assert_eq!(nonces.len(), 3);
}
