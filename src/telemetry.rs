//! Logs, traces and Prometheus metrics.
//!
//! The metric families are the catalogue of docs/operating.md, each with its HELP text
//! ([`FAMILIES`]). Every series exists at 0 from start-up: [`register`] creates the handles of
//! every configured vendor, operation and route when the `AppState` is built, and the hot path
//! uses those handles (no label allocation per call). Labels take only bounded values: vendor
//! and operation ids come from routes.yaml, outcomes and routes from closed sets. No label ever
//! carries a member id, a credential or a free-form error.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::plan::Plan;

pub mod access_log;
#[cfg(test)]
pub(crate) mod captured;
pub mod log_writer;
pub mod request_tag;

/// Whether spans are exported (OTLP configured and its exporter built): without it there is no
/// trace id to look up or propagate, and the request span carries only what logs need.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// See [`EXPORTING`].
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Makes the spans that exist for traces only, for tests that record them with a subscriber
/// of their own (for the rest of the test process: those spans cost, and change, nothing else).
#[cfg(test)]
pub(crate) fn make_trace_spans() {
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub const HTTP_REQUESTS: &str = "cgw_http_requests_total";
pub const HTTP_DURATION: &str = "cgw_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "cgw_http_requests_in_flight";
pub const HTTP_SHED: &str = "cgw_http_requests_shed_total";
pub const VENDOR_CALLS: &str = "cgw_vendor_calls_total";
pub const VENDOR_DURATION: &str = "cgw_vendor_call_duration_seconds";
pub const VENDOR_SKIPPED: &str = "cgw_vendor_calls_skipped_total";
pub const VENDOR_RETRIES: &str = "cgw_vendor_retries_total";
pub const VENDOR_BUDGET: &str = "cgw_vendor_retry_budget_exhausted_total";
pub const VENDOR_DROPPED: &str = "cgw_vendor_items_dropped_total";
pub const VENDOR_TRUNCATED: &str = "cgw_vendor_truncated_total";
pub const LIMIT_WAIT: &str = "cgw_vendor_limit_wait_seconds";
pub const RATE_LIMITED: &str = "cgw_vendor_rate_limited_total";
pub const VENDOR_IN_FLIGHT: &str = "cgw_vendor_in_flight";
pub const CIRCUIT_STATE: &str = "cgw_circuit_state";
pub const CIRCUIT_TRANSITIONS: &str = "cgw_circuit_transitions_total";
pub const CACHE_LOOKUPS: &str = "cgw_cache_lookups_total";
pub const CACHE_EVICTIONS: &str = "cgw_cache_evictions_total";
pub const CACHE_ENTRIES: &str = "cgw_cache_entries";
pub const CACHE_BYTES: &str = "cgw_cache_bytes";
pub const CACHE_BUDGET: &str = "cgw_cache_budget_bytes";
pub const TOKEN_FETCHES: &str = "cgw_token_fetches_total";
pub const TOKEN_INVALIDATIONS: &str = "cgw_token_invalidations_total";
pub const IDEMPOTENCY: &str = "cgw_idempotency_requests_total";
pub const BUILD_INFO: &str = "cgw_build_info";
pub const CONFIG_LOADS: &str = "cgw_config_loads_total";
pub const CONFIG_LAST_LOAD: &str = "cgw_config_last_load_success_timestamp_seconds";
pub const CONFIG_INFO: &str = "cgw_config_info";
pub const READY: &str = "cgw_ready";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family of docs/operating.md's catalogue: name, type, HELP.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "Requests answered, by route and status code, including the answers of the edge layers (413, 431, 500, 503, 504).",
    ),
    (
        HTTP_DURATION,
        Kind::Histogram,
        "Time from the first byte of a request to its answer's head, by route.",
    ),
    (HTTP_IN_FLIGHT, Kind::Gauge, "Requests being handled now."),
    (
        HTTP_SHED,
        Kind::Counter,
        "Requests refused with 503 because `server.max_concurrency` requests were in progress.",
    ),
    (
        VENDOR_CALLS,
        Kind::Counter,
        "Vendor calls by outcome (one per canonical request and vendor, whatever the number of pages and attempts).",
    ),
    (
        VENDOR_DURATION,
        Kind::Histogram,
        "Duration of a whole vendor call: the wait for room, every attempt and page, and the backoffs.",
    ),
    (
        VENDOR_SKIPPED,
        Kind::Counter,
        "Vendors not asked for a request because the member has no identity they accept.",
    ),
    (
        VENDOR_RETRIES,
        Kind::Counter,
        "Retried attempts of read operations (the first attempt is not counted).",
    ),
    (
        VENDOR_BUDGET,
        Kind::Counter,
        "Retries not made because the vendor's retry budget (`retry.budget_percent`) was spent.",
    ),
    (
        VENDOR_DROPPED,
        Kind::Counter,
        "Vendor records dropped because a required field could not be mapped.",
    ),
    (
        VENDOR_TRUNCATED,
        Kind::Counter,
        "Calls that stopped at `max_pages` while the vendor had more pages.",
    ),
    (
        LIMIT_WAIT,
        Kind::Histogram,
        "Time a vendor call waited for room under the vendor's concurrency and rate limits (0 when there was room at once).",
    ),
    (
        RATE_LIMITED,
        Kind::Counter,
        "Calls refused by the gateway's own outbound limits, at admission or for a further page or retry.",
    ),
    (
        VENDOR_IN_FLIGHT,
        Kind::Gauge,
        "Calls to the vendor in progress now.",
    ),
    (
        CIRCUIT_STATE,
        Kind::Gauge,
        "1 for the vendor circuit's current state, 0 for the others (as `GET /v1/vendors` shows it at scrape time).",
    ),
    (CIRCUIT_TRANSITIONS, Kind::Counter, "Circuit state changes."),
    (
        CACHE_LOOKUPS,
        Kind::Counter,
        "Cache lookups of read operations: `hit` a fresh entry, `coalesced` waited for an identical call in flight, `miss` asked the vendor, `stale` the vendor failed and the last good answer was served, `bypass` the caller sent `Cache-Control: no-cache`.",
    ),
    (
        CACHE_EVICTIONS,
        Kind::Counter,
        "Entries removed: past their ttl and stale-if-error window, to stay within `server.cache_max_bytes`, or invalidated after a write.",
    ),
    (
        CACHE_ENTRIES,
        Kind::Gauge,
        "Entries held (fresh, or kept for stale-if-error).",
    ),
    (
        CACHE_BYTES,
        Kind::Gauge,
        "Weighed size of the operation's entries: an estimate of the memory they hold.",
    ),
    (
        CACHE_BUDGET,
        Kind::Gauge,
        "`server.cache_max_bytes`: the bound of all operations' cache bytes together.",
    ),
    (
        TOKEN_FETCHES,
        Kind::Counter,
        "Access-token fetches from a vendor's token endpoint (token-auth vendors only).",
    ),
    (
        TOKEN_INVALIDATIONS,
        Kind::Counter,
        "Tokens dropped because a call using them was answered 401.",
    ),
    (
        IDEMPOTENCY,
        Kind::Counter,
        "Requests with an `Idempotency-Key`: first use, a repeat answered from the stored answer, the key reused with another body (409), or a repeat still waiting on the first (answered 409 after the wait).",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1; the build that is running.",
    ),
    (
        CONFIG_LOADS,
        Kind::Counter,
        "Attempts to load and compile routes.yaml (at start-up and on every reload).",
    ),
    (
        CONFIG_LAST_LOAD,
        Kind::Gauge,
        "Unix time of the last successful configuration load.",
    ),
    (
        CONFIG_INFO,
        Kind::Gauge,
        "1 for the configuration file running, 0 for one that ran before a reload.",
    ),
    (
        READY,
        Kind::Gauge,
        "1 while `/readyz` answers 200, 0 while draining.",
    ),
    (
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
    ),
    (
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
    ),
    (
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size in bytes.",
    ),
    (
        "process_open_fds",
        Kind::Gauge,
        "Number of open file descriptors.",
    ),
    (
        "process_max_fds",
        Kind::Gauge,
        "Maximum number of open file descriptors.",
    ),
    (
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    ),
    (
        "process_threads",
        Kind::Gauge,
        "Number of OS threads in the process.",
    ),
];

/// The route label's closed set (docs/operating.md), `unknown` last.
pub const ROUTES: &[&str] = &[
    "coupons_query",
    "package_get",
    "templates_create",
    "templates_list",
    "templates_update",
    "vendors",
    "config",
    "healthz",
    "readyz",
    "metrics",
    "openapi",
    "unknown",
];

/// `outcome` of a vendor call (docs/operating.md).
pub const OUTCOMES: [&str; 8] = [
    "ok",
    "empty",
    "not_found",
    "rejected",
    "error",
    "timeout",
    "rate_limited",
    "circuit_open",
];
pub const CACHE_RESULTS: [&str; 5] = ["hit", "coalesced", "miss", "stale", "bypass"];
pub const EVICTION_CAUSES: [&str; 3] = ["expired", "size", "explicit"];
pub const CIRCUIT_STATES: &[&str] = &["closed", "open", "half_open"];
pub const TRANSITIONS: &[(&str, &str)] = &[
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
];
pub const IDEMPOTENCY_RESULTS: [&str; 4] = ["proceed", "replay", "conflict", "in_progress"];

const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide Prometheus recorder on first use and returns its handle; later
/// calls (tests start many gateways in one process) share the same recorder.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe_all();
            register_process_wide();
            // the recorder needs periodic upkeep to drain histograms
            let h = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        h.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            handle
        })
        .clone()
}

fn describe_all() {
    for (name, kind, help) in FAMILIES {
        if name.starts_with("process_") {
            continue; // written at scrape time by `process::render`
        }
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound: a handle set per route, created once; status counters made on first use.

struct RouteHandles {
    duration: Histogram,
    shed: Counter,
    idempotency: [Counter; 4],
    /// `cgw_http_requests_total` by status (100..=599), made on first use of each code.
    status: Vec<OnceLock<Counter>>,
}

fn route_handles() -> &'static [RouteHandles] {
    static HANDLES: OnceLock<Vec<RouteHandles>> = OnceLock::new();
    HANDLES.get_or_init(|| {
        ROUTES
            .iter()
            .map(|&route| {
                let h = RouteHandles {
                    duration: metrics::histogram!(HTTP_DURATION, "route" => route),
                    shed: metrics::counter!(HTTP_SHED, "route" => route),
                    idempotency: IDEMPOTENCY_RESULTS
                        .map(|r| metrics::counter!(IDEMPOTENCY, "route" => route, "result" => r)),
                    status: (0..500).map(|_| OnceLock::new()).collect(),
                };
                h.shed.absolute(0);
                for c in &h.idempotency {
                    c.absolute(0);
                }
                // `status="200"` exists from start-up (the catalogue's one exception)
                status_counter(&h, route, 200).absolute(0);
                h
            })
            .collect()
    })
}

fn status_counter<'a>(h: &'a RouteHandles, route: &'static str, status: u16) -> &'a Counter {
    let i = usize::from(status.clamp(100, 599) - 100);
    h.status[i].get_or_init(|| {
        metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status.clamp(100, 599).to_string())
    })
}

fn route_index(route: &str) -> usize {
    ROUTES
        .iter()
        .position(|r| *r == route)
        .unwrap_or(ROUTES.len() - 1)
}

fn in_flight() -> &'static Gauge {
    static G: OnceLock<Gauge> = OnceLock::new();
    G.get_or_init(|| metrics::gauge!(HTTP_IN_FLIGHT))
}

/// A request answered (any layer's answer): its route, status and time to the answer's head.
pub fn record_http(route: &'static str, status: u16, latency: Duration) {
    let i = route_index(route);
    let h = &route_handles()[i];
    status_counter(h, ROUTES[i], status).increment(1);
    h.duration.record(latency.as_secs_f64());
}

/// A request shed with 503 (`server.max_concurrency` reached).
pub fn record_shed(route: &'static str) {
    route_handles()[route_index(route)].shed.increment(1);
}

/// A request with an `Idempotency-Key`: `result` is one of [`IDEMPOTENCY_RESULTS`].
pub fn record_idempotency(route: &'static str, result: &'static str) {
    let h = &route_handles()[route_index(route)];
    if let Some(i) = IDEMPOTENCY_RESULTS.iter().position(|r| *r == result) {
        h.idempotency[i].increment(1);
    }
}

/// What the router tells the access log about an answer (a response extension).
#[derive(Debug, Clone)]
pub struct Answered {
    pub caller: std::borrow::Cow<'static, str>,
    /// Each vendor's outcome, `vendor=outcome` separated by spaces (canonical queries).
    pub vendors: String,
}

impl Answered {
    pub fn caller(who: &str) -> Answered {
        Answered {
            caller: match who {
                "anonymous" => "anonymous".into(),
                "unauthenticated" => "unauthenticated".into(),
                other => other.to_owned().into(),
            },
            vendors: String::new(),
        }
    }
}

/// Records the request's caller, once known, for its log lines (the tag) and its span.
pub fn record_caller(name: &str) {
    request_tag::set_caller(name);
    tracing::Span::current().record("caller", name);
}

/// The W3C trace id of the current span, or `None` when tracing is off.
pub fn trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !exporting() {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let id = cx.span().span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// Counts a request in flight until dropped.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        in_flight().increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight().decrement(1.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Vendors and operations

/// The handles of one vendor operation.
pub struct OperationHandles {
    calls: [Counter; 8],
    duration: Histogram,
    skipped: Counter,
    retries: Counter,
    budget: Counter,
    dropped: Counter,
    truncated: Counter,
    /// By [`CACHE_RESULTS`]; operations without a `cache:` have none.
    cache: Option<[Counter; 5]>,
}

/// The handles of one vendor.
pub struct VendorHandles {
    limit_wait: Histogram,
    rate_limited: [Counter; 2],
    in_flight: Gauge,
    circuit: [Gauge; 3],
    transitions: [Counter; 4],
    /// ok, error; token-auth vendors only.
    tokens: Option<([Counter; 2], Counter)>,
}

type OpMap = HashMap<String, HashMap<String, Arc<OperationHandles>>>;

fn operations() -> &'static RwLock<OpMap> {
    static M: OnceLock<RwLock<OpMap>> = OnceLock::new();
    M.get_or_init(Default::default)
}

fn vendors() -> &'static RwLock<HashMap<String, Arc<VendorHandles>>> {
    static M: OnceLock<RwLock<HashMap<String, Arc<VendorHandles>>>> = OnceLock::new();
    M.get_or_init(Default::default)
}

fn operation_handles(vendor: &str, operation: &str, cached: bool) -> OperationHandles {
    let v = vendor.to_owned();
    let o = operation.to_owned();
    let labels = [("vendor", v.clone()), ("operation", o.clone())];
    let h = OperationHandles {
        calls: OUTCOMES.map(|outcome| {
            metrics::counter!(VENDOR_CALLS, "vendor" => v.clone(), "operation" => o.clone(), "outcome" => outcome)
        }),
        duration: metrics::histogram!(VENDOR_DURATION, &labels),
        skipped: metrics::counter!(VENDOR_SKIPPED, &labels),
        retries: metrics::counter!(VENDOR_RETRIES, &labels),
        budget: metrics::counter!(VENDOR_BUDGET, &labels),
        dropped: metrics::counter!(VENDOR_DROPPED, &labels),
        truncated: metrics::counter!(VENDOR_TRUNCATED, &labels),
        cache: cached.then(|| {
            CACHE_RESULTS.map(|r| {
                metrics::counter!(CACHE_LOOKUPS, "vendor" => v.clone(), "operation" => o.clone(), "result" => r)
            })
        }),
    };
    for c in h
        .calls
        .iter()
        .chain([&h.skipped, &h.retries, &h.budget, &h.dropped, &h.truncated])
    {
        c.absolute(0);
    }
    if cached {
        for c in h.cache.iter().flatten() {
            c.absolute(0);
        }
        for cause in EVICTION_CAUSES {
            metrics::counter!(CACHE_EVICTIONS, "vendor" => v.clone(), "operation" => o.clone(), "cause" => cause).absolute(0);
        }
        metrics::gauge!(CACHE_ENTRIES, "vendor" => v.clone(), "operation" => o.clone()).set(0.0);
        metrics::gauge!(CACHE_BYTES, "vendor" => v.clone(), "operation" => o.clone()).set(0.0);
    }
    h
}

/// `pub(crate)` so a unit test can give a breaker handles on its own recorder.
pub(crate) fn vendor_handles(vendor: &str, token_auth: bool) -> VendorHandles {
    let v = vendor.to_owned();
    let h = VendorHandles {
        limit_wait: metrics::histogram!(LIMIT_WAIT, "vendor" => v.clone()),
        rate_limited: ["admit", "pace"]
            .map(|s| metrics::counter!(RATE_LIMITED, "vendor" => v.clone(), "stage" => s)),
        in_flight: metrics::gauge!(VENDOR_IN_FLIGHT, "vendor" => v.clone()),
        circuit: [0, 1, 2].map(|i| {
            metrics::gauge!(CIRCUIT_STATE, "vendor" => v.clone(), "state" => CIRCUIT_STATES[i])
        }),
        transitions: [0, 1, 2, 3].map(|i| {
            metrics::counter!(CIRCUIT_TRANSITIONS, "vendor" => v.clone(), "from" => TRANSITIONS[i].0, "to" => TRANSITIONS[i].1)
        }),
        tokens: token_auth.then(|| {
            (
                ["ok", "error"]
                    .map(|r| metrics::counter!(TOKEN_FETCHES, "vendor" => v.clone(), "result" => r)),
                metrics::counter!(TOKEN_INVALIDATIONS, "vendor" => v.clone()),
            )
        }),
    };
    for c in h.rate_limited.iter().chain(&h.transitions) {
        c.absolute(0);
    }
    if let Some((fetches, inval)) = &h.tokens {
        for c in fetches.iter().chain([inval]) {
            c.absolute(0);
        }
    }
    h.in_flight.set(0.0);
    h.circuit[0].set(1.0);
    h.circuit[1].set(0.0);
    h.circuit[2].set(0.0);
    h
}

/// Creates every series of `plan` at 0 (called when the `AppState` is built). Idempotent:
/// a vendor or operation registered before keeps its handles.
pub fn register(plan: &Plan) {
    install_metrics();
    let _ = route_handles();
    {
        let mut ops = operations().write().unwrap_or_else(|e| e.into_inner());
        for op in plan.operations() {
            let per_vendor = ops.entry(op.vendor.id.clone()).or_default();
            if !per_vendor.contains_key(&op.name) {
                per_vendor.insert(
                    op.name.clone(),
                    Arc::new(operation_handles(
                        &op.vendor.id,
                        &op.name,
                        op.cache.is_some(),
                    )),
                );
            }
        }
    }
    let mut vs = vendors().write().unwrap_or_else(|e| e.into_inner());
    for v in &plan.vendors {
        if !vs.contains_key(&v.id) {
            let token_auth = plan.tokens.get(v.slot).is_some_and(Option::is_some);
            vs.insert(v.id.clone(), Arc::new(vendor_handles(&v.id, token_auth)));
        }
    }
}

/// The handles of a registered operation (`None` for one that was never registered).
pub fn operation(vendor: &str, operation: &str) -> Option<Arc<OperationHandles>> {
    operations()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(vendor)?
        .get(operation)
        .cloned()
}

/// The handles of a registered vendor.
pub fn vendor(vendor: &str) -> Option<Arc<VendorHandles>> {
    vendors()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(vendor)
        .cloned()
}

/// A whole vendor call: `outcome` is one of [`OUTCOMES`] (anything else counts as `error`).
pub fn record_vendor_call(vendor: &str, operation: &str, outcome: &str, latency: Duration) {
    if let Some(h) = self::operation(vendor, operation) {
        h.call(outcome, latency);
    }
}

impl OperationHandles {
    pub fn call(&self, outcome: &str, latency: Duration) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(4);
        self.calls[i].increment(1);
        self.duration.record(latency.as_secs_f64());
    }
    pub fn skipped(&self) {
        self.skipped.increment(1);
    }
    pub fn retry(&self) {
        self.retries.increment(1);
    }
    pub fn budget_exhausted(&self) {
        self.budget.increment(1);
    }
    pub fn dropped(&self, n: usize) {
        self.dropped.increment(n as u64);
    }
    pub fn truncated(&self) {
        self.truncated.increment(1);
    }
    /// A cache lookup: `result` is one of [`CACHE_RESULTS`].
    pub fn cache_lookup(&self, result: &str) {
        if let (Some(c), Some(i)) = (&self.cache, CACHE_RESULTS.iter().position(|r| *r == result)) {
            c[i].increment(1);
        }
    }
}

impl VendorHandles {
    pub fn limit_wait(&self, waited: Duration) {
        self.limit_wait.record(waited.as_secs_f64());
    }
    /// Refused by the outbound limits: at admission (`pace` false) or for a further page or
    /// retry (`pace` true).
    pub fn rate_limited(&self, pace: bool) {
        self.rate_limited[usize::from(pace)].increment(1);
    }
    pub fn call_started(&self) {
        self.in_flight.increment(1.0);
    }
    pub fn call_finished(&self) {
        self.in_flight.decrement(1.0);
    }
    /// The circuit's state now (`closed`, `open`, `half_open`).
    pub fn circuit_state(&self, state: &str) {
        for (i, s) in CIRCUIT_STATES.iter().enumerate() {
            self.circuit[i].set(if *s == state { 1.0 } else { 0.0 });
        }
    }
    pub fn circuit_transition(&self, from: &str, to: &str) {
        if let Some(i) = TRANSITIONS.iter().position(|t| *t == (from, to)) {
            self.transitions[i].increment(1);
        }
    }
    pub fn token_fetch(&self, ok: bool) {
        if let Some((f, _)) = &self.tokens {
            f[usize::from(!ok)].increment(1);
        }
    }
    pub fn token_invalidated(&self) {
        if let Some((_, i)) = &self.tokens {
            i.increment(1);
        }
    }
}

/// A retried attempt (kept for `engine/call.rs`).
pub fn record_retry(vendor: &str, operation: &str) {
    if let Some(h) = self::operation(vendor, operation) {
        h.retry();
    }
}

/// The catalogue's outcome of a finished vendor call: `empty` for a read answered with no
/// records, `not_found` and `rejected` split from `error`.
pub fn outcome_of(
    op: &crate::engine::plan::OperationPlan,
    result: &Result<crate::engine::call::CallOutput, crate::engine::fanout::Failure>,
) -> &'static str {
    use crate::engine::call::CallError;
    use crate::engine::fanout::Failure;
    match result {
        Ok(out) if out.rows.is_empty() && op.effect == crate::config::Effect::Read => "empty",
        Ok(_) => "ok",
        Err(Failure::Call(CallError::NotFound)) => "not_found",
        Err(Failure::Call(CallError::Rejected { .. })) => "rejected",
        Err(e) => e.outcome().as_str(),
    }
}

// ---------------------------------------------------------------------------------------------
// Process, configuration, build

fn ready_gauge() -> &'static Gauge {
    static G: OnceLock<Gauge> = OnceLock::new();
    G.get_or_init(|| metrics::gauge!(READY))
}

/// `cgw_ready`: 1 while `/readyz` answers 200.
pub fn set_ready(ready: bool) {
    ready_gauge().set(if ready { 1.0 } else { 0.0 });
}

fn register_process_wide() {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => option_env!("CGW_GIT_REVISION").unwrap_or("unknown")).set(1.0);
    for r in ["ok", "error"] {
        metrics::counter!(CONFIG_LOADS, "result" => r).absolute(0);
    }
    metrics::gauge!(CONFIG_LAST_LOAD).set(0.0);
    set_ready(true);
    in_flight().set(0.0);
}

/// A load of routes.yaml: `text` is the file as read (before `CGW_` overrides), `None` when
/// it could not be loaded or compiled.
pub fn record_config_load(text: Option<&str>) {
    install_metrics();
    match text {
        Some(text) => {
            metrics::counter!(CONFIG_LOADS, "result" => "ok").increment(1);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics::gauge!(CONFIG_LAST_LOAD).set(now);
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()))[..12].to_owned();
            // after a reload the file that ran before stays listed, at 0
            static RUNNING: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
            let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(before) = running.take().filter(|d| *d != digest) {
                metrics::gauge!(CONFIG_INFO, "digest" => before).set(0.0);
            }
            metrics::gauge!(CONFIG_INFO, "digest" => digest.clone()).set(1.0);
            *running = Some(digest);
        }
        None => metrics::counter!(CONFIG_LOADS, "result" => "error").increment(1),
    }
}

/// The Prometheus text of every family, with the scrape-time families appended.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    process::render(&mut text);
    text
}

/// `process_*` from Linux `/proc` (absent elsewhere), written at scrape time.
mod process {
    use std::fmt::Write;
    use std::sync::OnceLock;

    // sysconf(_SC_CLK_TCK) and the page size are these on every Linux the image runs on
    const CLOCK_TICKS: f64 = 100.0;
    const PAGE_SIZE: f64 = 4096.0;

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    /// Fields after the `(comm)` of /proc/self/stat, numbered from 3 (state) as in proc(5).
    fn stat_fields() -> Option<Vec<String>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        Some(rest.split_whitespace().map(str::to_owned).collect())
    }

    fn field(f: &[String], n: usize) -> f64 {
        f.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    fn start_time(f: &[String]) -> f64 {
        static START: OnceLock<f64> = OnceLock::new();
        *START.get_or_init(|| match boot_time() {
            Some(boot) => boot + field(f, 22) / CLOCK_TICKS,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        })
    }

    pub fn render(out: &mut String) {
        let Some(f) = stat_fields() else {
            return;
        };
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let values = [
            (
                "process_cpu_seconds_total",
                (field(&f, 14) + field(&f, 15)) / CLOCK_TICKS,
            ),
            ("process_resident_memory_bytes", field(&f, 24) * PAGE_SIZE),
            ("process_virtual_memory_bytes", field(&f, 23)),
            ("process_open_fds", open_fds as f64),
            ("process_max_fds", max_fds),
            ("process_start_time_seconds", start_time(&f)),
            ("process_threads", field(&f, 20)),
        ];
        for (name, value) in values {
            let Some((_, kind, help)) = super::FAMILIES.iter().find(|(n, ..)| *n == name) else {
                continue;
            };
            let kind = if *kind == super::Kind::Counter {
                "counter"
            } else {
                "gauge"
            };
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        }
    }
}

/// The layer that writes JSON log lines (`json-subscriber`, the shape of tracing-subscriber's
/// JSON). It is shown events only ([`EventsOnly`]): a line's `span` is the request's tag
/// ([`request_tag`]), so no span is ever formatted for it.
fn json_log_layer<S>(
    writer: log_writer::LogWriter,
) -> EventsOnly<json_subscriber::fmt::Layer<S, log_writer::LogWriter>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let mut layer = json_subscriber::fmt::layer()
        .with_writer(writer)
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false);
    layer
        .inner_layer_mut()
        .add_dynamic_field("span", |_, _| request_tag::as_json());
    EventsOnly(layer)
}

/// The layer that writes text log lines (on a terminal: colour there only).
fn text_log_layer<S>(
    terminal: bool,
    writer: log_writer::LogWriter,
) -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    log_writer::LogWriter,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(terminal)
        .with_writer(writer)
}

/// A layer shown a subscriber's events and nothing of its spans: a layer's own filter would do
/// the same, but keeps per-thread state with which a warning inside a request was now and then
/// dropped from the log or written without its request (docs/benchmarks.md, eleventh session).
struct EventsOnly<L>(L);

impl<S: tracing::Subscriber, L: tracing_subscriber::Layer<S>> tracing_subscriber::Layer<S>
    for EventsOnly<L>
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.enabled(metadata, ctx)
    }
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.event_enabled(event, ctx)
    }
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_event(event, ctx);
    }
}

/// Whether the HTTP stack makes a `request` span: for traces, and for the text log (on a
/// terminal), whose lines name their spans. The JSON log reads the request's tag instead.
static REQUEST_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// See [`REQUEST_SPANS`].
pub fn request_spans() -> bool {
    REQUEST_SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Logs to stderr: JSON lines when `json` is set or stderr is not a terminal, text otherwise
/// (colour only on a terminal); level from `RUST_LOG` (default `info`). Traces are exported
/// over OTLP/HTTP when the standard `OTEL_*` variables say where ([`otlp_configured`]); the
/// provider and the log writer are returned so that [`shutdown_tracing`] can flush them. Call
/// inside a Tokio runtime.
///
/// Lines are appended to a buffer that a thread of its own writes to stderr in batches
/// ([`log_writer`]): a request never waits on stderr, whatever it is (a pipe a slow collector
/// drains, a file on a busy disk), nor wakes a thread per line; past 8 MiB pending, lines are
/// dropped and counted rather than hold requests. A JSON line written inside a request carries
/// the request's id (and trace id, and caller) from its tag ([`request_tag`]); a text line,
/// from the `request` span. The vendor and cache spans are for traces and are not formatted
/// into text nobody reads.
pub fn init_logging(json: bool) -> Logging {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let terminal = std::io::stderr().is_terminal();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if otlp_configured() {
        match tracer_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                None
            }
        }
    } else {
        None
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("coupon-gateway"))
    });
    let (writer, guard) = log_writer::spawn(std::io::stderr());
    let as_json = json || !terminal;
    access_log::install(writer.clone(), as_json);
    let exporting = provider.is_some();
    EXPORTING.store(exporting, std::sync::atomic::Ordering::Relaxed);
    REQUEST_SPANS.store(exporting || !as_json, std::sync::atomic::Ordering::Relaxed);
    // without an exporter nothing wants spans but the text log's `request`: one filter for
    // the whole subscriber, so that the others are never made (events, and `enabled!`'s hints
    // the access log asks, pass)
    let no_spans = tracing_subscriber::filter::filter_fn(|m| !m.is_span());
    let request_only =
        tracing_subscriber::filter::filter_fn(|m| !m.is_span() || m.name() == "request");
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match (as_json, otel) {
        (true, None) => registry
            .with(no_spans)
            .with(json_log_layer(writer.clone()))
            .try_init(),
        (true, Some(otel)) => registry
            .with(otel)
            .with(json_log_layer(writer.clone()))
            .try_init(),
        (false, None) => registry
            .with(request_only)
            .with(text_log_layer(terminal, writer.clone()))
            .try_init(),
        (false, Some(otel)) => registry
            .with(otel)
            .with(text_log_layer(terminal, writer.clone()).with_filter(request_only))
            .try_init(),
    };
    Logging {
        provider,
        _writer: guard,
    }
}

/// What [`init_logging`] started: the trace exporter and the log writer's thread (its lines
/// are flushed when this is dropped).
pub struct Logging {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    _writer: log_writer::FlushGuard,
}

/// Whether the `OTEL_*` environment asks for trace export: an OTLP endpoint is set, and
/// neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.
pub fn otlp_configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let is = |k: &str, v: &str| std::env::var(k).is_ok_and(|x| x.trim().eq_ignore_ascii_case(v));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

fn tracer_provider()
-> Result<opentelemetry_sdk::trace::SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
    // endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*; the export runs on the runtime
    // in batches, so a slow or absent collector never holds a request
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("coupon-gateway");
    }
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_span_processor(processor)
        .build())
}

/// Flushes and stops trace export, within 3 s (an unreachable collector does not hold exit),
/// then the log lines still queued.
pub async fn shutdown_tracing(logging: Logging) {
    let Some(provider) = logging.provider else {
        return;
    };
    let flush = tokio::task::spawn_blocking(move || {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    });
    if tokio::time::timeout(Duration::from_secs(3), flush)
        .await
        .is_err()
    {
        tracing::warn!("spans not flushed within 3 s; exiting anyway");
    }
}

/// Continues the caller's W3C `traceparent`/`tracestate` on `span` (the server span).
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(cx);
}

/// Adds `traceparent`/`tracestate` of the current span to a vendor request's headers (only
/// for vendors whose config says `propagate_trace: true`).
pub fn inject_trace_context(headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers))
    });
}
