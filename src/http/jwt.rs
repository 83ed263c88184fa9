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
