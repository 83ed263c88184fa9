//! Logs, traces and Prometheus metrics.
//!
//! Metric names are constants here, and labels take only bounded values: vendor and operation
//! ids come from routes.yaml, outcomes and routes from closed sets. No label ever carries a
//! member id, a credential or a free-form error.
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "cgw_http_requests_total";
pub const HTTP_DURATION: &str = "cgw_http_request_duration_seconds";
pub const VENDOR_CALLS: &str = "cgw_vendor_calls_total";
pub const VENDOR_DURATION: &str = "cgw_vendor_call_duration_seconds";

/// Installs the process-wide Prometheus recorder on first use and returns its handle; later
/// calls (tests start many gateways in one process) share the same recorder.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
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

pub fn record_vendor_call(vendor: &str, operation: &str, outcome: &'static str, latency: Duration) {
    let labels = [
        ("vendor", vendor.to_owned()),
        ("operation", operation.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!(VENDOR_CALLS, &labels).increment(1);
    metrics::histogram!(VENDOR_DURATION, &labels[..2]).record(latency.as_secs_f64());
}

pub const VENDOR_RETRIES: &str = "cgw_vendor_retries_total";

pub fn record_retry(vendor: &str, operation: &str) {
    metrics::counter!(VENDOR_RETRIES, "vendor" => vendor.to_owned(), "operation" => operation.to_owned()).increment(1);
}

pub fn record_http(route: &'static str, status: u16, latency: Duration) {
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route).record(latency.as_secs_f64());
}

/// Logs to stderr: JSON lines when `json` is set, text otherwise; level from `RUST_LOG`
/// (default `info`).
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
