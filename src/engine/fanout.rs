//! Asking vendors concurrently, each under its own deadline, so that one slow or broken vendor
//! never delays or fails the others. Every call is measured (metrics and a tracing span).
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::call::{CallError, CallInput, CallOutput, call};
use super::plan::OperationPlan;
use super::upstream::Upstream;
use crate::telemetry;

/// Why a vendor call produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error(transparent)]
    Call(#[from] CallError),
}

/// The result of one vendor call and how long it took.
#[derive(Debug)]
pub struct Attempt {
    pub result: Result<CallOutput, Failure>,
    pub latency: Duration,
}

/// Runs `op` for `input` within the vendor's deadline.
pub async fn call_with_deadline(
    op: &OperationPlan,
    upstream: &Upstream,
    input: &CallInput,
) -> Attempt {
    let span = tracing::info_span!("vendor_call", vendor = %op.vendor.id, operation = %op.name, outcome = tracing::field::Empty);
    let started = Instant::now();
    let deadline = op.vendor.timeout;
    let result = async {
        match tokio::time::timeout(deadline, call(op, upstream, input)).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(Failure::Call(e)),
            Err(_) => Err(Failure::Timeout(deadline)),
        }
    }
    .instrument(span.clone())
    .await;
    let latency = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Failure::Timeout(_)) => "timeout",
        Err(Failure::Call(_)) => "error",
    };
    span.record("outcome", outcome);
    if let Err(e) = &result {
        tracing::warn!(parent: &span, error = %e, "vendor call failed");
    }
    telemetry::record_vendor_call(&op.vendor.id, &op.name, outcome, latency);
    Attempt { result, latency }
}

/// Polls every future concurrently and returns their outputs in the given order. The futures
/// share the caller's task: when the caller goes away, every vendor call is cancelled with it.
pub async fn all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futures).await
}
