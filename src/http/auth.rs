//! Callers: who is calling (an API key, checked against configured hashes), whether it may
//! use this route and these vendors (403 otherwise), and whether it is within its rate on
//! the route (429 with `Retry-After` and `RateLimit-*` headers). Built once from the
//! `callers:` section of routes.yaml; absent, every request is anonymous and allowed.
//!
//! A key is never logged or echoed: only its SHA-256 is compared, and answers name the
//! caller, never the credential.
use std::collections::HashMap;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::jwt::JwtVerifier;
use super::problem::Problem;
use crate::canonical::strict;
use crate::config::callers::{CallersConfig, RateConfig};
use crate::crypto;

/// Routes a caller may be given, as `routes:` and `route_rates:` name them.
pub const ROUTES: &[&str] = &[
    "coupons_query",
    "package_get",
    "templates_create",
    "templates_list",
    "templates_update",
    "vendors",
    "metrics",
    "config",
];

/// Routes answered without a caller: probes, the contract itself, and unknown paths.
pub const OPEN_ROUTES: &[&str] = &["healthz", "readyz", "openapi", "unknown"];

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The compiled `callers:` section.
pub struct Callers {
    header: HeaderName,
    bearer: bool,
    by_key: HashMap<[u8; 32], usize>,
    jwt: Option<JwtVerifier>,
    by_subject: HashMap<String, usize>,
    callers: Vec<Caller>,
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callers")
            .field("header", &self.header)
            .field(
                "callers",
                &self.callers.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// One configured caller.
pub struct Caller {
    pub name: String,
    routes: Option<Vec<&'static str>>,
    vendors: Option<Vec<String>>,
    /// By index into [`ROUTES`].
    limits: Vec<Option<Limit>>,
}

struct Limit {
    limiter: Limiter,
    rps: u32,
    burst: u32,
}

/// The `RateLimit-*` headers of an admitted request.
#[derive(Debug, Clone, Copy)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the burst is whole again.
    pub reset: u64,
}

impl RateState {
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset));
    }
}

impl Callers {
    /// Compiles the section; `vendors` are the configured vendor ids. Every mistake is
    /// reported, each naming its place.
    pub fn build(cfg: &CallersConfig, vendors: &[&str]) -> Result<Callers, Vec<String>> {
        let mut errors = Vec::new();
        let header = match HeaderName::from_bytes(cfg.header.to_ascii_lowercase().as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                errors.push(format!(
                    "callers.header: `{}` is not a header name",
                    strict::clip(&cfg.header)
                ));
                HeaderName::from_static("authorization")
            }
        };
        let bearer = header == http::header::AUTHORIZATION;
        let jwt = cfg
            .jwt
            .as_ref()
            .and_then(|j| JwtVerifier::build(j, &mut errors));
        if jwt.is_some() && !bearer {
            errors.push("callers.jwt: tokens come as `Authorization: Bearer`; leave `header` at its default".to_owned());
        }
        let mut by_subject = HashMap::new();
        let mut by_key = HashMap::new();
        let mut callers = Vec::new();
        for (name, c) in &cfg.clients {
            let at = format!("callers.clients.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                errors.push(format!(
                    "{at}: a caller name is 1 to 64 letters, digits, `-`, `_` or `.`"
                ));
            }
            if c.keys.is_empty() && c.jwt_subjects.is_empty() {
                errors.push(format!(
                    "{at}: a caller needs `keys` (hashes) or `jwt_subjects`"
                ));
            }
            if !c.jwt_subjects.is_empty() && cfg.jwt.is_none() {
                errors.push(format!("{at}.jwt_subjects: needs a `callers.jwt` section"));
            }
            for s in &c.jwt_subjects {
                if by_subject.insert(s.clone(), callers.len()).is_some() {
                    errors.push(format!(
                        "{at}.jwt_subjects: `{}` is already another caller's",
                        strict::clip(s)
                    ));
                }
            }
            for (i, k) in c.keys.iter().enumerate() {
                match parse_hash(k) {
                    Some(h) => {
                        if by_key.insert(h, callers.len()).is_some() {
                            errors.push(format!("{at}.keys[{i}]: this hash is already another key's"));
                        }
                    }
                    None => errors.push(format!(
                        "{at}.keys[{i}]: write the key's hash as `sha256:<64 hex digits>` (never the key itself)"
                    )),
                }
            }
            let routes = c.routes.as_ref().map(|rs| {
                rs.iter()
                    .filter_map(|r| match ROUTES.iter().find(|k| *k == r) {
                        Some(k) => Some(*k),
                        None => {
                            errors.push(format!(
                                "{at}.routes: unknown route `{}`{}",
                                strict::clip(r),
                                strict::hint(r, ROUTES)
                            ));
                            None
                        }
                    })
                    .collect::<Vec<_>>()
            });
            if let Some(vs) = &c.vendors {
                for v in vs.iter().filter(|v| !vendors.contains(&v.as_str())) {
                    errors.push(format!(
                        "{at}.vendors: unknown vendor `{}`{}",
                        strict::clip(v),
                        strict::hint(v, vendors)
                    ));
                }
            }
            for r in c
                .route_rates
                .keys()
                .filter(|r| !ROUTES.contains(&r.as_str()))
            {
                errors.push(format!(
                    "{at}.route_rates: unknown route `{}`{}",
                    strict::clip(r),
                    strict::hint(r, ROUTES)
                ));
            }
            let limits = ROUTES
                .iter()
                .map(|r| {
                    let rate = c.route_rates.get(*r).or(c.rate.as_ref())?;
                    match limit(rate) {
                        Some(l) => Some(l),
                        None => {
                            errors.push(format!("{at}: rps and burst are at least 1 (route {r})"));
                            None
                        }
                    }
                })
                .collect();
            callers.push(Caller {
                name: name.clone(),
                routes,
                vendors: c.vendors.clone(),
                limits,
            });
        }
        if errors.is_empty() {
            Ok(Callers {
                header,
                bearer,
                by_key,
                jwt,
                by_subject,
                callers,
            })
        } else {
            Err(errors)
        }
    }

    /// The callers of a loaded routes.yaml: `None` when it has no `callers:` section.
    pub fn from_config(cfg: &crate::config::RoutesConfig) -> Result<Option<Callers>, Vec<String>> {
        let Some(section) = &cfg.callers else {
            return Ok(None);
        };
        let vendors: Vec<&str> = cfg.vendors.keys().map(String::as_str).collect();
        Callers::build(section, &vendors).map(Some)
    }

    /// The caller presenting a valid key or token, or a 401 saying what is missing (403 for
    /// a valid token of a subject that is no configured caller).
    pub async fn identify(&self, headers: &HeaderMap) -> Result<&Caller, Problem> {
        let unauthenticated = |detail: String| Problem::new(StatusCode::UNAUTHORIZED, detail);
        let Some(value) = headers.get(&self.header) else {
            return Err(unauthenticated(if self.bearer {
                "send an API key as `Authorization: Bearer <key>`".to_owned()
            } else {
                format!("send an API key in the `{}` header", self.header)
            }));
        };
        let value = value.to_str().unwrap_or("").trim();
        let key = if self.bearer {
            match value.split_once(' ') {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
                _ => {
                    return Err(unauthenticated(
                        "the Authorization header must be `Bearer <key>`".to_owned(),
                    ));
                }
            }
        } else {
            value
        };
        if let Some(jwt) = &self.jwt
            && key.bytes().filter(|b| *b == b'.').count() == 2
        {
            let subject = jwt.verify(key).await?;
            return self
                .by_subject
                .get(&subject)
                .map(|&i| &self.callers[i])
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "the token's subject `{}` is not a configured caller",
                            strict::clip(&subject)
                        ),
                    )
                });
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&crypto::sha256(key.as_bytes()));
        self.by_key
            .get(&hash)
            .map(|&i| &self.callers[i])
            .ok_or_else(|| unauthenticated("the API key is not one this gateway knows".to_owned()))
    }
}

impl Caller {
    /// Whether the caller may use `route` (a name of [`ROUTES`]).
    pub fn may_route(&self, route: &str) -> bool {
        self.routes.as_ref().is_none_or(|rs| rs.contains(&route))
    }

    pub fn may_vendor(&self, vendor: &str) -> bool {
        self.vendors
            .as_ref()
            .is_none_or(|vs| vs.iter().any(|v| v == vendor))
    }

    /// The vendors the caller may reach, when limited.
    pub fn vendors(&self) -> Option<&[String]> {
        self.vendors.as_deref()
    }

    /// Takes one request of the caller's rate on `route`: its `RateLimit-*` state when
    /// admitted (None when unlimited), or a 429.
    pub fn admit(&self, route: &str) -> Result<Option<RateState>, (Problem, RateState, u64)> {
        let Some(Some(l)) = ROUTES
            .iter()
            .position(|r| *r == route)
            .map(|i| &self.limits[i])
        else {
            return Ok(None);
        };
        let refill =
            |missing: u32| -> u64 { (f64::from(missing) / f64::from(l.rps)).ceil() as u64 };
        match l.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Some(RateState {
                    limit: l.burst,
                    remaining,
                    reset: refill(l.burst.saturating_sub(remaining)),
                }))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let state = RateState {
                    limit: l.burst,
                    remaining: 0,
                    reset: refill(l.burst),
                };
                let problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "caller `{}` is over its rate on this route ({} per second, burst {}); retry in {} s",
                        self.name,
                        l.rps,
                        l.burst,
                        retry_after.max(1)
                    ),
                );
                Err((problem, state, retry_after.max(1)))
            }
        }
    }
}

fn limit(rate: &RateConfig) -> Option<Limit> {
    let rps = NonZeroU32::new(rate.rps)?;
    let burst = NonZeroU32::new(rate.burst)?;
    Some(Limit {
        limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst))
            .with_middleware::<StateInformationMiddleware>(),
        rps: rate.rps,
        burst: rate.burst,
    })
}

/// `sha256:<64 hex>` → the hash.
fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex).ok()?;
    bytes.try_into().ok()
}

/// A key's configured form: `sha256:<hex>` (for docs, tests and operators' scripts).
pub fn key_hash(key: &str) -> String {
    format!(
        "sha256:{}",
        crypto::hex_lower(&crypto::sha256(key.as_bytes()))
    )
}

/// Counts a request by caller, route and status (`cgw_caller_requests_total`). Callers are
/// the configured names, `anonymous` (no `callers:` section, or an open route) and
/// `unauthenticated`: a bounded set.
pub fn record(caller: &str, route: &'static str, status: u16) {
    metrics::counter!(
        "cgw_caller_requests_total",
        "caller" => caller.to_owned(),
        "route" => route,
        "status" => status.to_string()
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::callers::CallerConfig;

    fn config(header: &str) -> CallersConfig {
        let mut clients = std::collections::BTreeMap::new();
        clients.insert(
            "orders".to_owned(),
            CallerConfig {
                keys: vec![key_hash("k-orders")],
                jwt_subjects: vec![],
                routes: Some(vec!["coupons_query".into()]),
                vendors: Some(vec!["a".into()]),
                rate: Some(RateConfig { rps: 1, burst: 2 }),
                route_rates: Default::default(),
            },
        );
        CallersConfig {
            header: header.into(),
            jwt: None,
            clients,
        }
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn caller_names_and_vendors_are_checked_when_the_config_is_built() {
        let with = |name: &str, vendors: Vec<String>| {
            let mut cfg = config("authorization");
            let mut client = cfg.clients.remove("orders").unwrap();
            client.vendors = Some(vendors);
            cfg.clients.insert(name.to_owned(), client);
            Callers::build(&cfg, &["a", "b"])
        };
        let refused = |name: &str| {
            let errors = with(name, vec!["a".into()]).unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("a caller name is 1 to 64")),
                "{name:?}: {errors:?}"
            );
        };
        refused("");
        refused(&"n".repeat(65));
        refused("two words");
        assert!(
            with(&"n".repeat(64), vec!["a".into()]).is_ok(),
            "64 is the most"
        );
        assert!(with("svc-1_a.b", vec!["a".into(), "b".into()]).is_ok());
        let errors = with("orders", vec!["a".into(), "zz".into()]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("callers.clients.orders.vendors: unknown vendor `zz`"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_reset_is_the_seconds_until_the_burst_is_whole_again() {
        let mut cfg = config("authorization");
        // the route's own rate, not the caller's (1 per second, burst 2) nor another route's
        let orders = cfg.clients.get_mut("orders").unwrap();
        orders.routes = None;
        orders
            .route_rates
            .insert("coupons_query".into(), RateConfig { rps: 2, burst: 4 });
        let c = Callers::build(&cfg, &["a"]).unwrap();
        let caller = &c.callers[0];
        // whatever refilled meanwhile on a slow machine, the reset is the missing tokens at 2
        // per second, rounded up (missing 3: 1.5 s -> 2)
        let mut refused = None;
        let mut seen_missing = Vec::new();
        for _ in 0..20 {
            match caller.admit("coupons_query") {
                Ok(s) => {
                    let s = s.unwrap();
                    assert_eq!(s.limit, 4);
                    let missing = 4 - s.remaining;
                    assert_eq!(s.reset, u64::from(missing.div_ceil(2)), "missing {missing}");
                    seen_missing.push(missing);
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(seen_missing.contains(&3), "{seen_missing:?}");
        let (problem, state, retry_after) = refused.expect("over the burst at last");
        assert_eq!(problem.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!((state.remaining, state.reset), (0, 2));
        assert_eq!(
            retry_after, 1,
            "half a second, rounded up to the whole second"
        );
    }

    #[tokio::test]
    async fn a_key_under_another_scheme_than_bearer_is_401() {
        let c = Callers::build(&config("authorization"), &["a"]).unwrap();
        for value in ["Basic k-orders", "Token k-orders", "k-orders"] {
            match c.identify(&headers("authorization", value)).await {
                Err(e) => assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{value}"),
                Ok(caller) => panic!("{value}: identified as {}", caller.name),
            }
        }
        assert!(
            c.identify(&headers("authorization", "bEaReR k-orders"))
                .await
                .is_ok(),
            "the scheme is case-insensitive"
        );
    }

    #[test]
    fn debug_names_the_callers_but_never_their_keys() {
        let c = Callers::build(&config("authorization"), &["a"]).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.starts_with("Callers"), "{shown}");
        assert!(shown.contains("\"orders\""), "{shown}");
        assert!(!shown.contains(&key_hash("k-orders")), "{shown}");
        assert!(!shown.contains("k-orders"), "{shown}");
    }

    #[tokio::test]
    async fn a_key_names_its_caller_and_anything_else_is_401() {
        let c = Callers::build(&config("authorization"), &["a", "b"]).unwrap();
        assert_eq!(
            c.identify(&headers("authorization", "Bearer k-orders"))
                .await
                .unwrap()
                .name,
            "orders"
        );
        assert_eq!(
            c.identify(&headers("authorization", "bearer  k-orders"))
                .await
                .unwrap()
                .name,
            "orders"
        );
        for (name, value, want) in [
            ("x-other", "k", "Authorization: Bearer"),
            ("authorization", "k-orders", "must be `Bearer <key>`"),
            ("authorization", "Bearer nope", "not one this gateway knows"),
        ] {
            let p = c.identify(&headers(name, value)).await.err().unwrap();
            assert_eq!(p.status, StatusCode::UNAUTHORIZED);
            assert!(p.detail.contains(want), "{value}: {}", p.detail);
            assert!(!p.detail.contains("nope"), "keys are never echoed");
        }
        let x = Callers::build(&config("X-Api-Key"), &["a"]).unwrap();
        assert_eq!(
            x.identify(&headers("x-api-key", "k-orders"))
                .await
                .unwrap()
                .name,
            "orders"
        );
    }

    #[tokio::test]
    async fn routes_vendors_and_rates_are_the_callers() {
        let c = Callers::build(&config("authorization"), &["a", "b"]).unwrap();
        let o = c
            .identify(&headers("authorization", "Bearer k-orders"))
            .await
            .unwrap();
        assert!(o.may_route("coupons_query") && !o.may_route("templates_create"));
        assert!(o.may_vendor("a") && !o.may_vendor("b"));
        let first = o.admit("coupons_query").unwrap().unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        o.admit("coupons_query").unwrap();
        let (p, state, retry) = o.admit("coupons_query").err().unwrap();
        assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!((state.remaining, retry), (0, 1));
        // each route has its own burst
        assert_eq!(o.admit("package_get").unwrap().unwrap().remaining, 1);
    }

    #[test]
    fn configuration_mistakes_are_each_reported() {
        let mut cfg = config("bad header");
        let orders = cfg.clients.get_mut("orders").unwrap();
        orders.keys = vec!["9f86d081884c7d65".into()];
        orders.routes = Some(vec!["coupon_query".into()]);
        orders.vendors = Some(vec!["z".into()]);
        orders.rate = Some(RateConfig { rps: 0, burst: 1 });
        let errors = Callers::build(&cfg, &["a"]).err().unwrap().join("\n");
        for want in [
            "callers.header",
            "sha256:<64 hex digits>",
            "unknown route `coupon_query` (did you mean `coupons_query`?)",
            "unknown vendor `z`",
            "at least 1",
        ] {
            assert!(errors.contains(want), "{want}: {errors}");
        }
    }
}
