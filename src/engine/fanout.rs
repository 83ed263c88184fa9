//! Asking vendors concurrently, each under its own deadline, so that one slow or broken vendor
//! never delays or fails the others. Every call is measured (metrics and a tracing span).
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::call::{CallError, CallInput, CallOutput, call};
use super::call_limit;
use super::plan::OperationPlan;
use super::resilience::{Refusal, VendorGuard};
use super::upstream::{TransportError, Upstream};
use crate::canonical::merge::Outcome;
use crate::telemetry;

/// Why a vendor call produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("circuit open: the vendor failed too often recently")]
    CircuitOpen,
    #[error("over the vendor's outbound limit")]
    RateLimited,
    #[error(transparent)]
    Call(#[from] CallError),
}

impl Failure {
    /// Whether the failure says the vendor is unwell (what the breaker counts). A missing
    /// record, a refused input or a bad configuration is not the vendor's fault.
    pub fn is_vendor_fault(&self) -> bool {
        match self {
            Failure::Timeout(_) => true,
            Failure::CircuitOpen | Failure::RateLimited => false,
            Failure::Call(e) => match e {
                CallError::NotFound
                | CallError::Rejected { .. }
                | CallError::Build(_)
                | CallError::RateLimited
                | CallError::Throttled(_) => false,
                CallError::Status(s) => *s >= 500 || *s == 429,
                _ => true,
            },
        }
    }

    /// The `outcome` of API.md's `sources` entries.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Timeout(_)
            | Failure::Call(CallError::Transport(TransportError::AttemptTimeout(_))) => {
                Outcome::Timeout
            }
            Failure::CircuitOpen => Outcome::CircuitOpen,
            Failure::RateLimited
            | Failure::Call(CallError::RateLimited | CallError::Throttled(_)) => {
                Outcome::RateLimited
            }
            Failure::Call(_) => Outcome::Error,
        }
    }
}

/// The result of one vendor call and how long it took.
#[derive(Debug)]
pub struct Attempt {
    pub result: Result<CallOutput, Failure>,
    pub latency: Duration,
}

/// Runs `op` for `input` within the vendor's deadline, behind the vendor's guard (breaker,
/// limits, retries). `bypass_cache`: the caller sent `Cache-Control: no-cache` (the span says
/// which cache result made this call).
pub async fn call_with_deadline(
    op: &OperationPlan,
    upstream: &Upstream,
    input: &CallInput,
    guard: &VendorGuard,
    bypass_cache: bool,
) -> Attempt {
    // boxed when it starts: a caller that holds it inline, as a cache lookup's fallback does,
    // would copy it with every move even when the cache answers and it never runs (the call
    // itself is boxed again once it holds a slot; see `attempt` below)
    Box::pin(guarded_call(op, upstream, input, guard, bypass_cache)).await
}

async fn guarded_call(
    op: &OperationPlan,
    upstream: &Upstream,
    input: &CallInput,
    guard: &VendorGuard,
    bypass_cache: bool,
) -> Attempt {
    // a call is only made when the cache could not answer: a miss, or a caller's no-cache
    let cache = op
        .cache
        .as_ref()
        .map(|_| if bypass_cache { "bypass" } else { "miss" });
    // for traces only, as the cache's span: the log's lines carry the request span, and
    // without an exporter the vendor spans were made, entered on every poll and dropped for
    // nothing (~3 % of a miss's instructions)
    let span = if telemetry::exporting() {
        tracing::info_span!(
            "vendor_call",
            vendor = %op.vendor.id,
            operation = %op.name,
            outcome = tracing::field::Empty,
            cache,
            pages = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    let started = Instant::now();
    let deadline = op.vendor.timeout;
    let vh = telemetry::vendor(&op.vendor.id);
    let guarded = async {
        let admitted = guard.admit().await.map_err(|r| match r {
            Refusal::CircuitOpen => Failure::CircuitOpen,
            Refusal::RateLimited => {
                if let Some(h) = &vh {
                    h.rate_limited(false);
                }
                Failure::RateLimited
            }
        })?;
        // then a slot among the process's calls in progress (at most `server.max_vendor_calls`,
        // engine::call_limit): what calls hold in memory is bounded by their number. After
        // the vendor's own admission, so that calls waiting for one vendor's quota never keep
        // the others' calls waiting.
        let _slot = upstream.call_slot().await;
        if let Some(h) = &vh {
            h.limit_wait(started.elapsed());
            h.call_started();
        }
        let remaining = deadline.saturating_sub(started.elapsed());
        // boxed here, once the call holds a slot: the call's future (retries, the HTTP
        // exchange, a token fetch) was ~5.5 KB of this one's 6.3 KB, and every vendor of every
        // request in progress waits for admission and a slot in this one (now ~0.8 KB)
        let attempt = || {
            Box::pin(tokio::time::timeout(
                remaining,
                call(op, upstream, input, guard),
            ))
        };
        // the share of its time its answer waited for a thread once it came moves that limit;
        // one call in [`call_limit::SAMPLE_EVERY`] is stamped (the limit wants an average,
        // not a clock reading on every wake of every call)
        let result = if upstream.call_sampled() {
            let began = Instant::now();
            let (result, waited) = call_limit::stamped(attempt()).await;
            upstream.call_finished(waited, began.elapsed());
            result
        } else {
            attempt().await
        };
        let result = match result {
            Ok(r) => r.map_err(Failure::Call),
            Err(_) => Err(Failure::Timeout(deadline)),
        };
        admitted.finish(!result.as_ref().is_err_and(Failure::is_vendor_fault));
        if let Some(h) = &vh {
            h.call_finished();
        }
        result
    };
    let result = match tokio::time::timeout(deadline, guarded.instrument(span.clone())).await {
        Ok(r) => r,
        // only the waits for a slot and for admission can still run into the deadline here
        Err(_) => Err(Failure::Timeout(deadline)),
    };
    let latency = started.elapsed();
    let outcome = telemetry::outcome_of(op, &result);
    span.record("outcome", outcome);
    match &result {
        Ok(out) => {
            span.record("pages", out.pages);
        }
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            // in the current (request) span, naming the vendor itself: the log's layer shows
            // only request spans, and an event whose parent was the vendor span it filters out
            // was dropped from the log with it (and without an exporter there is no vendor span)
            tracing::warn!(
                vendor = %op.vendor.id,
                operation = %op.name,
                error = %e,
                "vendor call failed"
            );
        }
    }
    telemetry::record_vendor_call(&op.vendor.id, &op.name, outcome, latency);
    Attempt { result, latency }
}

/// Polls every future concurrently and returns their outputs in the given order. The futures
/// share the caller's task: when the caller goes away, every vendor call is cancelled with it.
pub async fn all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futures).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vendor of every request in progress waits for its vendor's admission and a slot
    /// among the calls in progress in this future: the call itself is boxed only once it holds
    /// a slot (inline, it was ~6.3 KB a waiting call in release, where this is ~0.8 KB).
    #[test]
    fn a_call_waiting_for_admission_or_a_slot_is_small() {
        let plan = crate::engine::plan::one_operation(
            "        identity: [member_id]\n        request: {method: GET, path: /c}\n        \
             response: {items: $.list}\n        fields: {id: $.id, status: {value: usable}}\n",
        )
        .unwrap();
        let op = &plan.routes[0].targets[0];
        let v = &op.vendor;
        let guard = VendorGuard::new(&v.retry, v.circuit.as_ref(), v.limits.as_ref(), None);
        let upstream = Upstream::capped(1 << 20, 64);
        let input = CallInput::default();
        let waiting = guarded_call(op, &upstream, &input, &guard, false);
        let size = std::mem::size_of_val(&waiting);
        assert!(size <= 2 * 1024, "a waiting call's future is {size} bytes");
    }

    #[test]
    fn the_breaker_counts_5xx_and_429_statuses_but_no_other_4xx() {
        let fault = |status| Failure::Call(CallError::Status(status)).is_vendor_fault();
        for status in [500, 502, 503, 429] {
            assert!(fault(status), "{status}");
        }
        for status in [400, 401, 403, 409, 422] {
            assert!(!fault(status), "{status}");
        }
    }
}
