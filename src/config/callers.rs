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
//!       routes: [coupons_query]    # default: every route
//!       vendors: [op, hkl]         # default: every vendor
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
    /// Callers by name (the name appears on metrics and access logs).
    #[serde(default)]
    pub clients: BTreeMap<String, CallerConfig>,
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
