//! Bearer JWTs: the signature checked against the identity provider's JWKS, then `iss`,
//! `aud`, `exp` (and `nbf`) with a small leeway. Keys are cached and fetched again every
//! `refresh_ms`; a token signed with a key id the cache does not know triggers a fetch (at
//! most every `min_refetch_ms`), which is how a provider's key rotation is followed. When a
//! fetch fails the keys already held are kept. One fetch runs at a time.
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use super::problem::Problem;
use crate::canonical::strict;
use crate::config::callers::JwtConfig;
use crate::engine::upstream::Upstream;

/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: u64 = 256 * 1024;
/// A fetch that takes longer than this fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

pub struct JwtVerifier {
    url: http::Uri,
    issuer: String,
    audience: String,
    claim: String,
    algorithms: Vec<Algorithm>,
    refresh: Duration,
    min_refetch: Duration,
    leeway: u64,
    upstream: Upstream,
    keys: RwLock<KeySet>,
    fetching: Mutex<()>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<(Option<String>, DecodingKey)>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
}

impl JwtVerifier {
    pub fn build(cfg: &JwtConfig, errors: &mut Vec<String>) -> Option<JwtVerifier> {
        let url = match cfg.jwks_url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                Some(u)
            }
            _ => {
                errors.push("callers.jwt.jwks_url: an absolute http(s) URL".to_owned());
                None
            }
        };
        let algorithms: Vec<Algorithm> = cfg
            .algorithms
            .iter()
            .filter_map(|a| match Algorithm::from_str(a) {
                Ok(alg) => Some(alg),
                Err(_) => {
                    errors.push(format!(
                        "callers.jwt.algorithms: unknown algorithm `{}`",
                        strict::clip(a)
                    ));
                    None
                }
            })
            .collect();
        if algorithms.is_empty() {
            errors.push("callers.jwt.algorithms: at least one".to_owned());
        }
        if cfg.issuer.is_empty() || cfg.audience.is_empty() {
            errors.push("callers.jwt: `issuer` and `audience` are required".to_owned());
        }
        Some(JwtVerifier {
            url: url?,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            claim: cfg.caller_claim.clone(),
            algorithms,
            refresh: Duration::from_millis(cfg.refresh_ms.max(1000)),
            min_refetch: Duration::from_millis(cfg.min_refetch_ms),
            leeway: cfg.leeway_s,
            upstream: Upstream::new(MAX_JWKS_BYTES),
            keys: RwLock::new(KeySet::default()),
            fetching: Mutex::new(()),
        })
    }

    /// The caller claim of a valid token, or the 401 (or 503 when no keys can be had).
    pub async fn verify(&self, token: &str) -> Result<String, Problem> {
        let invalid = |why: &str| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                format!("the token is not valid: {why}"),
            )
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid("its algorithm is not accepted"));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let Some(key) = key else {
            return Err(invalid(
                "it is signed with a key the issuer does not publish",
            ));
        };
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind::*;
                    invalid(match e.kind() {
                        ExpiredSignature => "it has expired",
                        ImmatureSignature => "it is not valid yet",
                        InvalidIssuer => "wrong issuer",
                        InvalidAudience => "wrong audience",
                        MissingRequiredClaim(_) => "a required claim (exp, iss, aud) is missing",
                        InvalidSignature => "bad signature",
                        _ => "it could not be verified",
                    })
                })?;
        match data.claims.get(&self.claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(invalid(&format!("no `{}` claim", self.claim))),
        }
    }

    /// The key for `kid`, fetching the set when it is old or does not have it.
    async fn key(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, Problem> {
        let now = Instant::now();
        {
            let set = self.keys.read().await;
            let fresh = set
                .fetched
                .is_some_and(|t| now.duration_since(t) < self.refresh);
            let found = find(&set, kid);
            let may_refetch = set
                .tried
                .is_none_or(|t| now.duration_since(t) >= self.min_refetch);
            if found.is_some() && (fresh || !may_refetch) {
                return Ok(found);
            }
            if !may_refetch {
                return self.found_or_unavailable(&set, kid);
            }
        }
        let _one = self.fetching.lock().await;
        {
            // another request may have fetched while this one waited
            let set = self.keys.read().await;
            if set.tried.is_some_and(|t| t >= now) {
                return self.found_or_unavailable(&set, kid);
            }
        }
        let fetched = self.fetch().await;
        let mut set = self.keys.write().await;
        set.tried = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                set.keys = keys;
                set.fetched = set.tried;
            }
            Err(e) => tracing::warn!(error = %e, "cannot fetch the JWKS; keeping the keys held"),
        }
        self.found_or_unavailable(&set, kid)
    }

    fn found_or_unavailable(
        &self,
        set: &KeySet,
        kid: Option<&str>,
    ) -> Result<Option<DecodingKey>, Problem> {
        if set.fetched.is_none() {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "tokens cannot be checked right now: the issuer's keys are unavailable",
            ));
        }
        Ok(find(set, kid))
    }

    async fn fetch(&self) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
        let req = Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Full::<Bytes>::default())
            .map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(FETCH_TIMEOUT, self.upstream.exchange(req))
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status().as_u16()));
        }
        let set: JwkSet =
            serde_json::from_slice(res.body()).map_err(|e| format!("not a JWKS: {e}"))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk).ok()?)))
            .collect())
    }
}

fn find(set: &KeySet, kid: Option<&str>) -> Option<DecodingKey> {
    match kid {
        Some(kid) => set.keys.iter().find(|(k, _)| k.as_deref() == Some(kid)),
        // without a kid only a one-key set is unambiguous
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
    .map(|(_, key)| key.clone())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    const ISSUER: &str = "https://idp.example.test/";
    const AUDIENCE: &str = "coupon-gateway";

    fn config(jwks_url: &str) -> JwtConfig {
        JwtConfig {
            jwks_url: jwks_url.to_owned(),
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            caller_claim: "sub".to_owned(),
            algorithms: vec!["HS256".to_owned()],
            refresh_ms: 60_000,
            min_refetch_ms: 0,
            leeway_s: 0,
        }
    }

    fn verifier(cfg: &JwtConfig) -> JwtVerifier {
        let mut errors = Vec::new();
        let v = JwtVerifier::build(cfg, &mut errors).expect("a verifier");
        assert!(errors.is_empty(), "{errors:?}");
        v
    }

    fn secret(name: &str) -> Vec<u8> {
        format!("unit-secret-of-{name}-0123456789abcdef").into_bytes()
    }

    /// An HS256 key whose secret is named `name`, under `kid` if any.
    fn jwk(kid: Option<&str>, name: &str) -> Value {
        let mut key =
            json!({"kty": "oct", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret(name))});
        if let Some(kid) = kid {
            key["kid"] = kid.into();
        }
        key
    }

    fn key_set(keys: Vec<Value>) -> String {
        json!({ "keys": keys }).to_string()
    }

    fn token(kid: Option<&str>, name: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&secret(name))).unwrap()
    }

    fn claims(sub: &str) -> Value {
        let now = jiff::Timestamp::now().as_second();
        json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300})
    }

    /// A JWKS endpoint on loopback answering `body`, counting fetches; it is served as long
    /// as the test's runtime lives.
    async fn jwks(body: String) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        let body = Bytes::from(body);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (body, counted) = (body.clone(), counted.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (url, fetches)
    }

    async fn refused(v: &JwtVerifier, token: &str) -> Problem {
        v.verify(token).await.expect_err("refused")
    }

    #[test]
    fn the_jwks_url_must_be_an_absolute_http_url() {
        for bad in [
            "ftp://idp.example.test/jwks.json",
            "/jwks.json",
            "idp.example.test",
        ] {
            let mut errors = Vec::new();
            assert!(
                JwtVerifier::build(&config(bad), &mut errors).is_none(),
                "{bad}"
            );
            assert_eq!(
                errors,
                ["callers.jwt.jwks_url: an absolute http(s) URL"],
                "{bad}"
            );
        }
        for good in [
            "http://127.0.0.1:9/jwks.json",
            "https://idp.example.test/jwks.json",
        ] {
            verifier(&config(good));
        }
    }

    #[test]
    fn issuer_and_audience_are_each_required() {
        let mut no_issuer = config("https://idp.example.test/jwks.json");
        no_issuer.issuer.clear();
        let mut no_audience = config("https://idp.example.test/jwks.json");
        no_audience.audience.clear();
        for cfg in [no_issuer, no_audience] {
            let mut errors = Vec::new();
            JwtVerifier::build(&cfg, &mut errors);
            assert_eq!(
                errors,
                ["callers.jwt: `issuer` and `audience` are required"],
                "{cfg:?}"
            );
        }
    }

    #[tokio::test]
    async fn tokens_not_yet_valid_without_a_required_claim_or_caller_are_named_so() {
        let (url, _) = jwks(key_set(vec![jwk(Some("k1"), "k1")])).await;
        let v = verifier(&config(&url));
        let now = jiff::Timestamp::now().as_second();
        let mut early = claims("billing-svc");
        early["nbf"] = json!(now + 300);
        let mut no_exp = claims("billing-svc");
        no_exp.as_object_mut().unwrap().remove("exp");
        let mut no_sub = claims("billing-svc");
        no_sub.as_object_mut().unwrap().remove("sub");
        let cases = [
            (early, "the token is not valid: it is not valid yet"),
            (
                no_exp,
                "the token is not valid: a required claim (exp, iss, aud) is missing",
            ),
            (claims(""), "the token is not valid: no `sub` claim"),
            (no_sub, "the token is not valid: no `sub` claim"),
        ];
        for (claims, want) in cases {
            let p = refused(&v, &token(Some("k1"), "k1", &claims)).await;
            assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{claims}");
            assert_eq!(p.detail, want, "{claims}");
        }
        let ok = v
            .verify(&token(Some("k1"), "k1", &claims("billing-svc")))
            .await;
        assert_eq!(ok.unwrap(), "billing-svc");
    }

    #[tokio::test]
    async fn a_token_without_kid_is_checked_with_the_lone_key_of_a_set_only() {
        let (one, _) = jwks(key_set(vec![jwk(Some("k1"), "k1")])).await;
        let t = token(None, "k1", &claims("billing-svc"));
        assert_eq!(
            verifier(&config(&one)).verify(&t).await.unwrap(),
            "billing-svc"
        );
        // with two keys, which one was meant is a guess: refused, even if the first fits
        let (two, _) = jwks(key_set(vec![jwk(Some("k1"), "k1"), jwk(Some("k2"), "k2")])).await;
        let p = refused(&verifier(&config(&two)), &t).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        assert!(p.detail.contains("does not publish"), "{}", p.detail);
    }

    #[tokio::test]
    async fn a_key_set_up_to_256_kib_is_read_and_a_larger_one_refused() {
        // ~100 bytes a key: 2,000 keys are ~200 KiB, 3,000 are over 256 KiB
        let many = |n: usize| {
            let mut keys = vec![jwk(Some("k1"), "k1")];
            keys.extend((0..n).map(|i| jwk(Some(&format!("other-{i}")), &format!("o{i}"))));
            key_set(keys)
        };
        let (fits, size) = (many(2_000), many(3_000));
        assert!(
            fits.len() < 256 * 1024 && size.len() > 256 * 1024,
            "{} {}",
            fits.len(),
            size.len()
        );
        let t = token(Some("k1"), "k1", &claims("billing-svc"));
        let (url, _) = jwks(fits).await;
        assert_eq!(
            verifier(&config(&url)).verify(&t).await.unwrap(),
            "billing-svc"
        );
        let (url, fetches) = jwks(size).await;
        let p = refused(&verifier(&config(&url)), &t).await;
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE, "{}", p.detail);
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "it was asked for");
    }

    /// The key set is fetched again once it is `refresh` old (not a moment before), even
    /// when it holds the token's key. Time is paused so the age is exact; whether a fetch
    /// was tried shows in the set's `tried` instant.
    #[tokio::test(start_paused = true)]
    async fn keys_held_are_fetched_again_once_refresh_has_passed() {
        let (url, _) = jwks(key_set(vec![jwk(Some("k1"), "k1")])).await;
        let mut cfg = config(&url);
        cfg.refresh_ms = 60_000;
        let refresh = Duration::from_millis(cfg.refresh_ms);
        let t = token(Some("k1"), "k1", &claims("billing-svc"));
        for (age, refetched) in [(refresh - Duration::from_millis(1), false), (refresh, true)] {
            let v = verifier(&cfg);
            let at = Instant::now()
                .checked_sub(age)
                .expect("a clock older than a minute");
            *v.keys.write().await = KeySet {
                keys: vec![(
                    Some("k1".to_owned()),
                    DecodingKey::from_secret(&secret("k1")),
                )],
                fetched: Some(at),
                tried: Some(at),
            };
            assert_eq!(v.verify(&t).await.unwrap(), "billing-svc", "{age:?}");
            let tried = v.keys.read().await.tried;
            assert_eq!(tried != Some(at), refetched, "keys {age:?} old");
        }
    }
}
