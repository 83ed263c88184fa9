//! The gateway's use cases, one module per canonical route, over a shared [`AppState`].
//! HTTP concerns (parsing, status codes, problem bodies) stay in `crate::http`.
pub mod coupons;
pub mod generation;
pub mod packages;
pub mod reload;
pub mod templates;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::canonical::cursor::CursorSigner;
use crate::canonical::merge::{Outcome, Source};
use crate::config::ServerConfig;
use crate::engine::cache::{AnswerStore, Cached, Lookup, ResponseCache};
use crate::engine::call::{CallInput, CallOutput};
use crate::engine::fanout::{Failure, call_with_deadline};
use crate::engine::plan::OperationPlan;
use crate::engine::plan::Plan;
use crate::engine::upstream::Upstream;
use crate::http::auth::Callers;
use crate::idempotency::{IdempotencyStore, MemoryStore};
use crate::shared::Shared;
use crate::shared::idempotency::RedisStore;
pub use generation::{Generation, Origin};

/// Everything a request needs. The per-configuration part is the current [`Generation`],
/// swapped whole by a reload; the rest lives as long as the process.
pub struct AppState {
    generation: ArcSwap<Generation>,
    /// `server:` as at start-up: listening, limits and the shared tier are the process's and
    /// apply at the next start (a reload that changes them says so in the log).
    pub server: ServerConfig,
    pub upstream: Upstream,
    /// Every cached answer, within one memory budget (`server.cache_max_bytes`); the
    /// generations' caches are views of it, so it outlives reloads.
    pub answers: Arc<AnswerStore>,
    /// Idempotency records of creates (`Idempotency-Key`).
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub metrics: PrometheusHandle,
    /// Signs and checks paging cursors.
    pub cursors: CursorSigner,
    /// Who may call (none: anyone); set at start-up and by reloads.
    callers: RwLock<Option<Arc<Callers>>>,
    /// The tier replicas share (`server.shared`), when configured.
    pub shared: Option<Arc<Shared>>,
    ready: AtomicBool,
    /// The last reload attempt and its errors, for `GET /v1/config`.
    pub(crate) config_status: Mutex<reload::Status>,
}

impl AppState {
    pub fn new(plan: Plan) -> Arc<AppState> {
        Self::with_origin(plan, Origin::default())
    }

    /// The state of a plan loaded from `origin` (its file and hash, for `GET /v1/config`).
    pub fn with_origin(plan: Plan, origin: Origin) -> Arc<AppState> {
        let upstream = Upstream::capped(
            plan.server.max_vendor_response_bytes,
            plan.server.max_vendor_calls,
        );
        // installed first, so the shared tier's gauges are recorded from the start
        let metrics = crate::telemetry::install_metrics();
        // every series of every configured vendor, operation and route exists at 0 from here
        crate::telemetry::register(&plan);
        // with `server.shared.redis_url`, each piece of state below gets its shared level
        let shared = Shared::new(&plan.server.shared).map(Arc::new);
        let answers = AnswerStore::new(plan.server.cache_max_bytes);
        answers.keep_house();
        let idempotency: Arc<dyn IdempotencyStore> = match &shared {
            Some(s) => Arc::new(RedisStore::new(Arc::clone(s), MemoryStore::DEFAULT_TTL)),
            None => Arc::new(MemoryStore::new(100_000, MemoryStore::DEFAULT_TTL)),
        };
        let server = plan.server.clone();
        let (generation, _) = Generation::build(plan, origin, &answers, shared.as_ref(), None);
        Arc::new(AppState {
            generation: ArcSwap::from_pointee(generation),
            upstream,
            answers,
            idempotency,
            metrics,
            cursors: match &server.cursor_secret {
                Some(secret) => CursorSigner::from_secret(secret.expose().as_bytes()),
                None => CursorSigner::random(),
            },
            server,
            callers: RwLock::new(None),
            shared,
            ready: AtomicBool::new(true),
            config_status: Mutex::new(reload::Status::default()),
        })
    }

    /// The current generation. A request calls this once, at its start, and uses what it got
    /// throughout: a reload meanwhile does not change its plan, caches or guards.
    pub fn generation(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Puts `next` in place for the requests that start from now on.
    pub(crate) fn swap_generation(&self, next: Generation) {
        self.generation.store(Arc::new(next));
    }

    /// The callers of the `callers:` section; `None` serves anyone.
    pub fn callers(&self) -> Option<Arc<Callers>> {
        self.callers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_callers(&self, callers: Option<Callers>) {
        *self.callers.write().unwrap_or_else(|e| e.into_inner()) = callers.map(Arc::new);
    }

    /// Whether `/readyz` says ready: false while shutting down, so balancers drain first.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        crate::telemetry::set_ready(ready);
    }

    /// `GET /metrics`: the Prometheus text, with the circuit states as they are now.
    pub fn render_metrics(&self) -> String {
        let generation = self.generation();
        for v in &generation.plan.vendors {
            if let Some(h) = crate::telemetry::vendor(&v.id) {
                h.circuit_state(generation.guards[v.slot].circuit().as_str());
            }
        }
        crate::telemetry::render(&self.metrics)
    }

    /// `GET /v1/vendors`: configured vendors, their operations and circuit state.
    pub fn vendors(&self) -> Value {
        let generation = self.generation();
        let vendors: Vec<Value> = generation
            .plan
            .vendors
            .iter()
            .map(|v| {
                json!({
                    "id": v.id,
                    "name": v.display_name,
                    "base_url": v.base_url,
                    "timeout_ms": v.timeout.as_millis() as u64,
                    "operations": v.operations,
                    "circuit": generation.guards[v.slot].circuit().as_str(),
                })
            })
            .collect();
        json!({ "vendors": vendors })
    }
}

/// A vendor record id in a path (`/v1/packages/{vendor}/{id}`, `/v1/templates/{vendor}/{id}`):
/// opaque, but only letters, digits, `-` and `_`, at most 128, so it can never change the shape
/// of a vendor request.
pub fn is_record_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What asking one vendor produced: its answer (or why not), where it came from, the last
/// good answer when it failed, and how long it took.
pub struct Asked {
    pub result: Result<Arc<CallOutput>, Arc<Failure>>,
    pub lookup: Option<Lookup>,
    pub stale: Option<Arc<CallOutput>>,
    pub latency: std::time::Duration,
}

impl Asked {
    /// The `sources` entry of this call, and the answer served: the vendor's, or, when it
    /// failed, its last good answer within the stale-if-error window.
    pub fn report(&self, vendor: &str) -> (Source, Option<&CallOutput>) {
        let served = match &self.result {
            Ok(out) => Some(&**out),
            Err(_) => self.stale.as_deref(),
        };
        let source = Source {
            vendor: vendor.to_owned(),
            outcome: self
                .result
                .as_ref()
                .err()
                .map_or(Outcome::Ok, |e| e.outcome()),
            count: served.map_or(0, |s| s.rows.len()),
            latency_ms: Some(self.latency.as_millis() as u64),
            cache: self.lookup.map(Lookup::as_str),
            error: self.result.as_ref().err().map(|e| e.to_string()),
            dropped: served.map_or(0, |s| s.dropped),
            truncated: served.is_some_and(|s| s.truncated),
        };
        (source, served)
    }
}

/// Asks `op`'s vendor through the operation's cache (when it has one) and the vendor's guard,
/// both from `generation` (the one `op` belongs to).
pub async fn ask_vendor(
    state: &AppState,
    generation: &Generation,
    op: &OperationPlan,
    input: &CallInput,
    bypass_cache: bool,
) -> Asked {
    let started = tokio::time::Instant::now();
    let fetch = async {
        call_with_deadline(
            op,
            &state.upstream,
            input,
            &generation.guards[op.vendor.slot],
            bypass_cache,
        )
        .await
        .result
    };
    let (result, lookup, stale) = match &generation.caches[op.slot] {
        None => (fetch.await.map(Arc::new).map_err(Arc::new), None, None),
        Some(cache) => {
            let (r, lookup, stale) = through_cache(op, cache, input, bypass_cache, fetch).await;
            (
                r.map(|c| c.answer.clone()),
                Some(lookup),
                stale.map(|c| c.answer.clone()),
            )
        }
    };
    count_own_call(op, lookup, result.as_deref().ok());
    Asked {
        result,
        lookup,
        stale,
        latency: started.elapsed(),
    }
}

/// What a cached read served: the answer or why there is none, where it came from, and the
/// last good answer when the vendor failed.
pub type Served = (
    Result<Arc<Cached>, Arc<Failure>>,
    Lookup,
    Option<Arc<Cached>>,
);

/// Looks `input` up in `op`'s `cache`, running `fetch` (the vendor call) only when the cache
/// cannot answer; under a `cache` span, counted in `cgw_cache_lookups_total`.
pub async fn through_cache<F>(
    op: &OperationPlan,
    cache: &ResponseCache,
    input: &CallInput,
    bypass_cache: bool,
    fetch: F,
) -> Served
where
    F: Future<Output = Result<CallOutput, Failure>>,
{
    let key = ResponseCache::key(&op.vendor.id, &op.name, input);
    // a span per lookup is for traces only (the log shows the request span): without an
    // exporter it would be made and dropped for nothing on every vendor of every request
    let span = if crate::telemetry::exporting() {
        tracing::info_span!(
            "cache",
            vendor = %op.vendor.id,
            operation = %op.name,
            result = tracing::field::Empty
        )
    } else {
        tracing::Span::none()
    };
    let (r, lookup, stale) = cache
        .get_cached(key, bypass_cache, fetch)
        .instrument(span.clone())
        .await;
    let result = match lookup {
        Lookup::Miss if bypass_cache => "bypass",
        l => l.label(),
    };
    span.record("result", result);
    if let Some(h) = crate::telemetry::operation(&op.vendor.id, &op.name) {
        h.cache_lookup(result);
    }
    (r, lookup, stale)
}

/// Counts whether this request's own vendor call was cut short at `max_pages` (an answer
/// served from the cache was counted when it was fetched; dropped items are counted by the
/// engine as each page is read).
pub fn count_own_call(op: &OperationPlan, lookup: Option<Lookup>, answer: Option<&CallOutput>) {
    let Some(out) = answer.filter(|_| lookup.is_none_or(|l| l == Lookup::Miss)) else {
        return;
    };
    if out.truncated
        && let Some(h) = crate::telemetry::operation(&op.vendor.id, &op.name)
    {
        h.truncated();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replicas_with_one_cursor_secret_accept_each_other_s_cursors() {
        use crate::config::shared::Sensitive;
        let routes = crate::embedded::ROUTES_YAML;
        let state = |secret: Option<&str>| {
            let loaded = crate::config::load_str("routes.yaml", routes, false).unwrap();
            let (mut plan, _) = crate::engine::plan::Plan::compile(
                &loaded,
                crate::engine::plan::Credentials::Optional,
            )
            .unwrap();
            plan.server.cursor_secret = secret.map(Sensitive::new);
            super::AppState::new(plan)
        };
        let (a, b, c) = (state(Some("s3")), state(Some("s3")), state(None));
        let last = crate::canonical::cursor::SortKey {
            r: 0,
            u: Some(1),
            v: "v".into(),
            i: "v:1".into(),
        };
        let now = jiff::Timestamp::now();
        let cursor = a.cursors.issue("q", &last, now);
        assert!(
            b.cursors.check(&cursor, "q", now).is_ok(),
            "another replica"
        );
        assert!(c.cursors.check(&cursor, "q", now).is_err(), "a random key");
    }

    #[test]
    fn one_record_id_rule_for_packages_and_templates() {
        assert!(super::is_record_id("1bfb390c-_A"));
        assert!(super::is_record_id(&"a".repeat(128)));
        assert!(!super::is_record_id(&"a".repeat(129)));
        for bad in ["", "a/b", "a b", "a%2F", "../x", "é"] {
            assert!(!super::is_record_id(bad), "{bad:?}");
        }
    }
}
