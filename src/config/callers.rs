//! The `callers:` section of routes.yaml: who may call the gateway, how they prove it, what
//! they may reach, and how fast. Absent, the gateway serves anyone (the sandbox default);
//! the server then warns loudly when it listens beyond loopback.
//!
//! ```yaml
//! callers:
//!   header: authorization          # `Authorization: Bearer <key>`; any other header carries the key as is
//!   clients:
//!     orders:
//!       keys: ["sha256:9f86d08…"]  # hashes only; several for rotation
//!       jwt_subjects: [orders-svc] # and/or JWTs (see `jwt:`) whose `sub` is this
//!       routes: [coupons_query]    # default: every route
//!       vendors: [alpha, beta]     # default: every vendor
//!       rate: {rps: 50, burst: 100}        # per route
//!       route_rates: {coupons_query: {rps: 10, burst: 20}}
//! ```
use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallersConfig {
    /// The header that carries an API key. `authorization` takes `Bearer <key>`; any other
    /// header (e.g. `x-api-key`) carries the key alone.
    #[serde(default = "default_header")]
    pub header: String,
    /// JWTs as an alternative to API keys: checked against a JWKS.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Callers by name (the name appears on metrics and access logs).
    #[serde(default)]
    pub clients: BTreeMap<String, CallerConfig>,
}

/// Bearer JWTs signed by an identity provider whose keys are published as a JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Where the key set is fetched (and fetched again to follow key rotation).
    pub jwks_url: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must include.
    pub audience: String,
    /// The claim naming the caller (matched against a caller's `jwt_subjects`).
    #[serde(default = "default_claim")]
    pub caller_claim: String,
    /// Signature algorithms accepted (default: the asymmetric ones).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Keys are fetched again after this long.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// A token with a key id not in the set triggers a fetch, at most this often.
    #[serde(default = "default_min_refetch_ms")]
    pub min_refetch_ms: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_claim() -> String {
    "sub".to_owned()
}

fn default_algorithms() -> Vec<String> {
    [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn default_refresh_ms() -> u64 {
    300_000
}

fn default_min_refetch_ms() -> u64 {
    10_000
}

fn default_leeway() -> u64 {
    30
}

fn default_header() -> String {
    "authorization".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Hashes of the caller's API keys, `sha256:<64 hex digits>` (the key itself is never
    /// configured). More than one lets a key be rotated without downtime.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Values of the JWT's caller claim (`sub` by default) that are this caller.
    #[serde(default)]
    pub jwt_subjects: Vec<String>,
    /// Canonical routes the caller may use (`coupons_query`, `package_get`,
    /// `templates_create`, `templates_list`, `templates_update`, `vendors`, `metrics`);
    /// absent: all of them.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// Vendors the caller may reach; absent: all of them.
    #[serde(default)]
    pub vendors: Option<Vec<String>>,
    /// Requests per second and burst, counted per route; absent: unlimited.
    #[serde(default)]
    pub rate: Option<RateConfig>,
    /// Per-route overrides of `rate`.
    #[serde(default)]
    pub route_rates: BTreeMap<String, RateConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub rps: u32,
    pub burst: u32,
}
