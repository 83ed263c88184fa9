//! The serde shape of routes.yaml. These types are only the input of the compiler
//! (`engine::plan`): nothing on the request path reads them.
//!
//! The fixed skeleton (server, routes, vendors, operations) is typed here with
//! `deny_unknown_fields`; the small languages inside an operation (templates, step inputs,
//! transforms, field mappings) are kept as JSON values and compiled by hand, so that every
//! mistake in them gets its own message and YAML location instead of serde's "did not match any
//! variant". See docs/routes.md for the language itself.
pub mod callers;
pub mod load;
pub mod locate;
pub mod shared;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

pub use load::{ConfigError, LoadedConfig, load_file, load_str};
pub use locate::{Location, YamlIndex};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub routes: RoutesSection,
    #[serde(default)]
    pub vendors: BTreeMap<String, VendorConfig>,
    /// Caller authentication, permissions and rates; absent: anyone may call.
    #[serde(default)]
    pub callers: Option<callers::CallersConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gateway listens on.
    pub listen: String,
    /// Largest request body accepted; larger bodies are answered 413.
    pub body_limit_bytes: u64,
    /// Deadline for a whole caller request (the edge answers 504 after it).
    pub request_timeout_ms: u64,
    /// Requests handled at once; beyond it the gateway sheds load with 503.
    pub max_concurrency: usize,
    /// Largest vendor response body read; a larger answer is a vendor error.
    pub max_vendor_response_bytes: u64,
    /// Vendor calls in progress at once, all vendors together; a call beyond it waits for a
    /// free slot, its deadline running. Each call in progress holds a connection's buffers,
    /// its answer and what is read from it (~55 KB measured), so this bounds that memory.
    pub max_vendor_calls: usize,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// A client that has not sent its request headers after this long is disconnected.
    pub header_read_timeout_ms: u64,
    /// State shared by replicas (Redis); off by default. See `shared::SharedConfig`.
    pub shared: shared::SharedConfig,
    /// Signs paging cursors. Set the same secret (`CGW_SERVER__CURSOR_SECRET`) on every
    /// replica so a cursor from one is good on the others; absent: a random key per process.
    pub cursor_secret: Option<shared::Sensitive>,
    /// After SIGTERM, `/readyz` answers 503 this long while the listener still serves
    /// (environment: `CGW_SERVER__DRAIN_DELAY_MS`); 0 closes the listener at once.
    pub drain_delay_ms: u64,
    /// Client connections open at once; a connection beyond it is closed as soon as accepted.
    pub max_connections: usize,
    /// HTTP/2: streams a client may have open at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: largest header list accepted (the router answers 431 above 64 KiB anyway).
    pub http2_max_header_list_bytes: u32,
    /// HTTP/2: a PING after this long without frames, and the connection is closed when it
    /// is not answered within `http2_keep_alive_timeout_ms`.
    pub http2_keep_alive_interval_ms: u64,
    pub http2_keep_alive_timeout_ms: u64,
    /// One memory budget for every cached vendor answer together, weighed by an estimate of
    /// what the entries hold in memory; the least valuable entries make room beyond it.
    pub cache_max_bytes: u64,
    /// Threads that serve client connections, each with a runtime and a vendor connection
    /// pool of its own, so that a request and its vendor calls never change threads
    /// (environment: `CGW_SERVER__CONNECTION_THREADS`); 0 serves them on the shared runtime.
    pub connection_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_owned(),
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
            max_concurrency: 1024,
            max_vendor_response_bytes: 4 * 1024 * 1024,
            max_vendor_calls: 512,
            shutdown_grace_ms: 5_000,
            header_read_timeout_ms: 10_000,
            cursor_secret: None,
            shared: shared::SharedConfig::default(),
            drain_delay_ms: 0,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            http2_max_header_list_bytes: 1024 * 1024,
            http2_keep_alive_interval_ms: 30_000,
            http2_keep_alive_timeout_ms: 20_000,
            cache_max_bytes: 64 * 1024 * 1024,
            connection_threads: 0,
        }
    }
}

/// Which vendor operation serves each canonical route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesSection {
    pub coupons_query: CouponsQueryRoute,
    pub package_get: SingleRoute,
    pub templates_create: SingleRoute,
    pub templates_list: SingleRoute,
    pub templates_update: SingleRoute,
}

/// A route answered by one vendor's operation, named in the path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingleRoute {
    /// Name of the vendor operation that serves the route.
    pub operation: String,
}

impl SingleRoute {
    fn named(operation: &str) -> SingleRoute {
        SingleRoute {
            operation: operation.to_owned(),
        }
    }
}

impl Default for RoutesSection {
    fn default() -> Self {
        RoutesSection {
            coupons_query: CouponsQueryRoute::default(),
            package_get: SingleRoute::named("get_package"),
            templates_create: SingleRoute::named("create_template"),
            templates_list: SingleRoute::named("list_templates"),
            templates_update: SingleRoute::named("update_template"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CouponsQueryRoute {
    /// Name of the vendor operation that lists a member's coupons.
    pub operation: String,
    pub default_limit: usize,
    pub max_limit: usize,
}

impl Default for CouponsQueryRoute {
    fn default() -> Self {
        CouponsQueryRoute {
            operation: "list_coupons".to_owned(),
            default_limit: 100,
            max_limit: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    #[serde(default)]
    pub display_name: Option<String>,
    pub base_url: String,
    /// Deadline for one whole vendor call (every page, every attempt).
    #[serde(default = "default_vendor_timeout")]
    pub timeout_ms: u64,
    /// Credential names with no value in the file: values come from
    /// `CGW_VENDORS__<ID>__CREDENTIALS__<NAME>` (or the sandbox).
    #[serde(default)]
    pub credentials: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub operations: BTreeMap<String, OperationConfig>,
    /// Retries of read operations (none by default).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breaker; absent = calls are never refused.
    #[serde(default)]
    pub circuit: Option<CircuitConfig>,
    /// Outbound limits (vendors publish QPS quotas); absent = unlimited.
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
    /// Token-endpoint auth; operations send the token with `{{auth.token}}`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Send the W3C `traceparent`/`tracestate` of the request to this vendor (off: most
    /// vendors are third parties).
    #[serde(default)]
    pub propagate_trace: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub token: TokenEndpointConfig,
}

/// An access token fetched with the vendor's credentials, cached until shortly before it
/// expires, shared by concurrent calls, and fetched anew (once) when a call is answered 401.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEndpointConfig {
    pub request: RequestConfig,
    /// JSONPath of the token in the answer.
    pub token: String,
    /// JSONPath of its lifetime in seconds.
    pub expires_in: String,
    /// The token is renewed this long before it expires.
    #[serde(default = "default_refresh_before")]
    pub refresh_before_ms: u64,
}

fn default_refresh_before() -> u64 {
    60_000
}

/// Retries of reads: only after connect errors, 5xx answers and attempt timeouts, each
/// re-signed, with jittered exponential backoff, within the vendor deadline and the budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Deadline of one attempt; 0 = the vendor's whole `timeout_ms`.
    pub attempt_timeout_ms: u64,
    /// First backoff; each retry doubles it, with full jitter.
    pub backoff_ms: u64,
    /// Retries may be at most this share of calls (over ten seconds), so a sick vendor is not
    /// hammered.
    pub budget_percent: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 1,
            attempt_timeout_ms: 0,
            backoff_ms: 25,
            budget_percent: 20,
        }
    }
}

/// A circuit breaker per vendor: opens when the failure rate over a window passes a
/// threshold, fails fast while open, lets a few probes through after `open_ms`, and closes on
/// their success.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    pub failure_rate_percent: u32,
    /// Calls the window needs before the rate counts.
    pub min_calls: u32,
    pub window_ms: u64,
    pub open_ms: u64,
    pub half_open_probes: u32,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_rate_percent: 50,
            min_calls: 20,
            window_ms: 10_000,
            open_ms: 5_000,
            half_open_probes: 2,
        }
    }
}

/// Outbound limits of one vendor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls in flight at once.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Calls per second (token bucket), with `burst` calls at once.
    #[serde(default)]
    pub rps: Option<u32>,
    #[serde(default)]
    pub burst: Option<u32>,
    /// How long a call may wait for room before it is reported `rate_limited`.
    #[serde(default = "default_queue_ms")]
    pub queue_ms: u64,
}

fn default_queue_ms() -> u64 {
    50
}

fn default_vendor_timeout() -> u64 {
    3_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    /// Canonical identities this operation accepts, in order of preference.
    #[serde(default)]
    pub identity: Vec<IdentityKind>,
    pub request: RequestConfig,
    /// Signing / encryption steps, run in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    pub response: ResponseConfig,
    #[serde(default)]
    pub paging: Option<PagingConfig>,
    /// Canonical field name → how to read it from one vendor item.
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
    /// Response cache of this (read) operation; absent = no cache.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// `read` operations may be retried and cached; `write` ones never are.
    #[serde(default)]
    pub effect: Effect,
    /// Named value maps for templates: `{{input.kind | map:ticket_type}}`.
    #[serde(default)]
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    #[default]
    Read,
    Write,
}

/// Caching of a read operation's answers, keyed on the canonical inputs that reach the
/// vendor (never on signatures, nonces, timestamps or credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long an answer is served without asking the vendor again.
    pub ttl_ms: u64,
    /// How long an answer "nothing found" is served (default: the lesser of ttl and 5 s).
    #[serde(default)]
    pub empty_ttl_ms: Option<u64>,
    /// After its ttl, how long an answer may still be served when the vendor fails.
    #[serde(default)]
    pub stale_if_error_ms: u64,
    /// No longer used: every operation's answers share one budget, `server.cache_max_bytes`.
    /// Accepted (with a warning) so that older files still load.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// `member.ids.<vendor>` of the canonical request.
    MemberId,
    /// `member.openid` of the canonical request.
    Openid,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template (a mapping); string leaves may hold `{{…}}` placeholders.
    #[serde(default)]
    pub body: Option<Value>,
    /// How the body is written: `json` (default), `form`, `xml` or `{xml: {root: …}}`.
    #[serde(default)]
    pub format: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub name: String,
    /// A template string, or `{sorted: {name: template…}, style: namevalue|pairs|pairs_encoded}`.
    pub input: Value,
    /// Transforms applied in order: `md5`, `{hmac_sha1: "{{cred.secret}}"}`, `hex_lower`, …
    #[serde(default)]
    pub apply: Vec<Value>,
    pub into: Placement,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Placement {
    Var(String),
    Query(String),
    Header(String),
    Body(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Conditions that must all hold for a vendor answer to be a success.
    #[serde(default)]
    pub success: Vec<ConditionConfig>,
    /// Conditions that, all holding, mean "nothing found": an empty result, not an error.
    #[serde(default)]
    pub empty: Vec<ConditionConfig>,
    /// Conditions that, all holding, mean the record asked for does not exist (404).
    #[serde(default)]
    pub not_found: Vec<ConditionConfig>,
    /// Conditions that, all holding on a failed answer, mean "too many requests": reported
    /// `rate_limited`, not a vendor fault.
    #[serde(default)]
    pub rate_limited: Vec<ConditionConfig>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// JSONPath of per-field messages in a 4xx answer (a vendor's validation errors).
    #[serde(default)]
    pub error_fields: Option<String>,
    /// Where the answer says which page it is (routes that page through the vendor's list).
    #[serde(default)]
    pub page_info: Option<PageInfoConfig>,
    /// JSONPath of the item list (an array, or one object standing for a list of one).
    pub items: String,
    /// How the answer is read: `json` (default) or `xml`.
    #[serde(default)]
    pub format: Option<String>,
    /// Members of the answer that arrive encrypted, decrypted in place before anything reads
    /// them (`engine::decrypt`).
    #[serde(default)]
    pub decrypt: Vec<Value>,
}

/// JSONPaths of the vendor's page description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageInfoConfig {
    pub page: String,
    pub per_page: String,
    pub total: String,
    pub total_pages: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    pub path: String,
    /// Accepted values, compared loosely: `200`, `"200"` and `200.0` are equal, and so are
    /// `true` and `"true"`.
    #[serde(rename = "in", default)]
    pub one_of: Vec<Value>,
    /// Instead of `in`: the value is present and not null.
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    pub style: PagingStyle,
    #[serde(default = "default_first_page")]
    pub first_page: u64,
    #[serde(default = "default_page_size")]
    pub page_size: u64,
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    #[serde(default)]
    pub has_more: Option<String>,
    #[serde(default)]
    pub total_items: Option<String>,
    #[serde(default)]
    pub total_pages: Option<String>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

fn default_first_page() -> u64 {
    1
}
fn default_page_size() -> u64 {
    50
}
fn default_max_pages() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PagingStyle {
    PageNumber,
    Cursor,
}
