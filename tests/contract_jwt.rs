//! JWT callers over loopback: tokens checked against a JWKS served on loopback (issuer,
//! audience, expiry), keys cached, a rotated key followed by fetching the set again, and a
//! 503 when no keys can be had at all.
mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use coupon_gateway::config::load_str;
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::http::auth::Callers;
use coupon_gateway::sandbox::{Sandbox, data};
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example.test/";
const AUDIENCE: &str = "coupon-gateway";

/// A JWKS endpoint whose key set can be changed, counting fetches.
struct Jwks {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks(body: String) -> Jwks {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let body = Arc::new(Mutex::new(body));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (b, f) = (body.clone(), fetches.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (b, f) = (b.clone(), f.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    f.fetch_add(1, Ordering::SeqCst);
                    let text = b.lock().unwrap().clone();
                    async move {
                        let mut res = Response::new(Full::new(Bytes::from(text.clone())));
                        if text.is_empty() {
                            *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Jwks { url, body, fetches }
}

fn key_set(kids: &[&str]) -> String {
    use base64::Engine as _;
    let keys: Vec<Value> = kids
        .iter()
        .map(|kid| {
            json!({"kty": "oct", "kid": kid, "alg": "HS256",
                   "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret(kid))})
        })
        .collect();
    json!({"keys": keys}).to_string()
}

fn secret(kid: &str) -> Vec<u8> {
    format!("test-secret-of-{kid}-0123456789abcdef").into_bytes()
}

fn token(kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret(kid))).unwrap()
}

fn claims(sub: &str, exp_in: i64) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + exp_in})
}

async fn setup(jwks_url: &str) -> (Sandbox, embedded::Running) {
    let sb = Sandbox::start().await.unwrap();
    let yaml = format!(
        "{ROUTES_YAML}\ncallers:\n  jwt:\n    jwks_url: {jwks_url}\n    issuer: \"{ISSUER}\"\n    audience: {AUDIENCE}\n    algorithms: [HS256]\n    min_refetch_ms: 0\n    leeway_s: 0\n  clients:\n    billing:\n      jwt_subjects: [billing-svc]\n      routes: [coupons_query]\n"
    );
    let plan = embedded::sandbox_plan("routes.yaml", &yaml, &sb, false).unwrap();
    let loaded = load_str("routes.yaml", &yaml, false).unwrap();
    let callers = Callers::from_config(&loaded.config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = embedded::start(plan, listener);
    gw.state.set_callers(callers);
    (sb, gw)
}

async fn ask(gw: &embedded::Running, token: &str) -> support::Answer {
    support::send(
        Request::post(gw.url("/v1/coupons/query"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(
                json!({"member": {"ids": {"op": data::OP_MEMBER}}}).to_string(),
            )))
            .unwrap(),
    )
    .await
}

fn assert_problem(a: &support::Answer, status: u16, want: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    let detail = a.body["detail"].as_str().unwrap();
    assert!(detail.contains(want), "{detail}");
}

#[tokio::test]
async fn tokens_are_checked_for_signature_issuer_audience_and_expiry() {
    let idp = jwks(key_set(&["k1"])).await;
    let (_sb, gw) = setup(&idp.url).await;
    let a = ask(&gw, &token("k1", claims("billing-svc", 300))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let cases = [
        (token("k1", claims("billing-svc", -120)), 401, "expired"),
        (
            token(
                "k1",
                json!({"sub": "billing-svc", "iss": "https://evil.test/", "aud": AUDIENCE, "exp": jiff::Timestamp::now().as_second() + 300}),
            ),
            401,
            "wrong issuer",
        ),
        (
            token(
                "k1",
                json!({"sub": "billing-svc", "iss": ISSUER, "aud": "someone-else", "exp": jiff::Timestamp::now().as_second() + 300}),
            ),
            401,
            "wrong audience",
        ),
        (
            token("k1", claims("intruder", 300)),
            403,
            "`intruder` is not a configured caller",
        ),
    ];
    for (t, status, want) in cases {
        assert_problem(&ask(&gw, &t).await, status, want);
    }
    // a token signed with another secret under a known kid
    let mut forged = Header::new(Algorithm::HS256);
    forged.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(
        &forged,
        &claims("billing-svc", 300),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    assert_problem(&ask(&gw, &forged).await, 401, "bad signature");
    // every check above used the one cached key set
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_rotated_key_is_followed_and_an_unreachable_issuer_is_a_503() {
    let idp = jwks(key_set(&["k1"])).await;
    let (_sb, gw) = setup(&idp.url).await;
    assert_eq!(
        ask(&gw, &token("k1", claims("billing-svc", 300)))
            .await
            .status,
        200
    );
    *idp.body.lock().unwrap() = key_set(&["k2"]);
    let a = ask(&gw, &token("k2", claims("billing-svc", 300))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        2,
        "an unknown kid fetched the set again"
    );
    assert_problem(
        &ask(&gw, &token("k3", claims("billing-svc", 300))).await,
        401,
        "does not publish",
    );

    let down = jwks(String::new()).await;
    let (_sb2, gw2) = setup(&down.url).await;
    assert_problem(
        &ask(&gw2, &token("k1", claims("billing-svc", 300))).await,
        503,
        "keys are unavailable",
    );
}
