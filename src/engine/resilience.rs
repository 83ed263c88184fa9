//! Per-vendor protection of the vendor and of the gateway: a circuit breaker, outbound
//! concurrency and rate limits, and the retry policy with its budget.
//!
//! The breaker is written here rather than taken from a crate: the one candidate (failsafe)
//! judges an exponential moving average that cannot open during the first whole-second window
//! after start or after closing, admits any number of calls while half-open, and does not
//! expose its state, which `GET /v1/vendors` must show. This one counts the failure rate of
//! the calls in a rolling window, lets a fixed number of probes through, and says its state.
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::config::{CircuitConfig, LimitsConfig, RetryConfig};
use crate::shared::Shared;
use crate::shared::limiter::SharedRate;
use crate::telemetry::VendorHandles;

/// Why a call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CircuitOpen,
    RateLimited,
}

/// Circuit state, as `GET /v1/vendors` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

const BUCKETS: u32 = 10;

#[derive(Debug)]
struct BreakerState {
    mode: Mode,
    /// (bucket start, successes, failures), oldest first.
    window: VecDeque<(Instant, u32, u32)>,
    probes_in_flight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

pub struct Breaker {
    cfg: CircuitConfig,
    state: Mutex<BreakerState>,
    /// The vendor's metric handles, so a transition is counted without building labels.
    telemetry: Option<Arc<VendorHandles>>,
}

/// A call the breaker let through; `probe` when it tests a half-open circuit.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    probe: bool,
}

impl Breaker {
    /// `telemetry`: the vendor's handles, which count each state change and move the state
    /// gauge (none in unit tests).
    pub fn new(cfg: CircuitConfig, telemetry: Option<Arc<VendorHandles>>) -> Breaker {
        Breaker {
            cfg,
            state: Mutex::new(BreakerState {
                mode: Mode::Closed,
                window: VecDeque::new(),
                probes_in_flight: 0,
            }),
            telemetry,
        }
    }

    /// A state change, counted and shown by the state gauge at once (a scrape also sets the
    /// gauge, from [`Breaker::state`]). Called under the state lock, so the gauge ends on the
    /// last change.
    fn changed(&self, from: CircuitState, to: CircuitState) {
        if let Some(h) = &self.telemetry {
            h.circuit_transition(from.as_str(), to.as_str());
            h.circuit_state(to.as_str());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> CircuitState {
        match self.lock().mode {
            Mode::Closed => CircuitState::Closed,
            // an expired open period is half-open for the next caller
            Mode::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            Mode::Open { .. } => CircuitState::Open,
            Mode::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Asks to make a call.
    pub fn admit(&self) -> Option<Ticket> {
        let mut s = self.lock();
        if let Mode::Open { until } = s.mode {
            if Instant::now() < until {
                return None;
            }
            s.mode = Mode::HalfOpen;
            s.probes_in_flight = 0;
            self.changed(CircuitState::Open, CircuitState::HalfOpen);
            tracing::info!("circuit half-open: probing");
        }
        match s.mode {
            Mode::Closed => Some(Ticket { probe: false }),
            Mode::HalfOpen if s.probes_in_flight < self.cfg.half_open_probes.max(1) => {
                s.probes_in_flight += 1;
                Some(Ticket { probe: true })
            }
            _ => None,
        }
    }

    /// Records how an admitted call went.
    pub fn record(&self, ticket: Ticket, ok: bool) {
        let now = Instant::now();
        let mut s = self.lock();
        if ticket.probe {
            s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
            if s.mode != Mode::HalfOpen {
                return;
            }
            if ok {
                s.mode = Mode::Closed;
                s.window.clear();
                self.changed(CircuitState::HalfOpen, CircuitState::Closed);
                tracing::info!("circuit closed: a probe succeeded");
            } else {
                self.open(&mut s, now);
            }
            return;
        }
        if s.mode != Mode::Closed {
            return; // a call admitted before the circuit opened
        }
        let window = Duration::from_millis(self.cfg.window_ms.max(1));
        let bucket = window / BUCKETS;
        while s
            .window
            .front()
            .is_some_and(|(start, _, _)| now.duration_since(*start) >= window)
        {
            s.window.pop_front();
        }
        match s.window.back_mut() {
            Some((start, okc, failc)) if now.duration_since(*start) < bucket => {
                if ok {
                    *okc += 1
                } else {
                    *failc += 1
                }
            }
            _ => s.window.push_back((now, u32::from(ok), u32::from(!ok))),
        }
        let (oks, fails) = s.window.iter().fold((0u64, 0u64), |(a, b), (_, o, f)| {
            (a + u64::from(*o), b + u64::from(*f))
        });
        let total = oks + fails;
        if !ok
            && total >= u64::from(self.cfg.min_calls.max(1))
            && fails * 100 >= u64::from(self.cfg.failure_rate_percent) * total
        {
            self.open(&mut s, now);
        }
    }

    /// An admitted call that ended without a verdict: frees its probe slot.
    fn release(&self, ticket: Ticket) {
        if ticket.probe {
            let mut s = self.lock();
            s.probes_in_flight = s.probes_in_flight.saturating_sub(1);
        }
    }

    fn open(&self, s: &mut BreakerState, now: Instant) {
        let from = match s.mode {
            Mode::HalfOpen => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        };
        self.changed(from, CircuitState::Open);
        s.mode = Mode::Open {
            until: now + Duration::from_millis(self.cfg.open_ms),
        };
        s.window.clear();
        tracing::warn!(open_ms = self.cfg.open_ms, "circuit opened");
    }
}

/// Token-endpoint auth of one vendor: how to fetch a token, and the cached one.
pub struct VendorAuth {
    pub plan: Arc<crate::engine::plan::TokenPlan>,
    pub cache: crate::engine::token::TokenCache,
}

/// The protections of one vendor, shared by all its operations.
pub struct VendorGuard {
    pub auth: Option<VendorAuth>,
    pub breaker: Option<Arc<Breaker>>,
    concurrency: Option<Arc<Semaphore>>,
    rate: Option<DefaultDirectRateLimiter>,
    /// With several replicas: the quota they share (`crate::shared::limiter`), asked first;
    /// `rate` is the fallback while Redis cannot be asked.
    shared_rate: Option<SharedRate>,
    queue: Duration,
    pub retry: RetryPolicy,
    /// Until when the vendor asked to be left alone (its `Retry-After`).
    held_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What an admitted call holds until it ends. Dropped without `finish` (the caller went
/// away), it records nothing, only frees its half-open probe slot: a client giving up says
/// nothing about the vendor's health.
pub struct Admitted {
    breaker: Option<(Arc<Breaker>, Ticket)>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    /// Records how the call went.
    pub fn finish(mut self, ok: bool) {
        if let Some((b, t)) = self.breaker.take() {
            b.record(t, ok);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((b, t)) = self.breaker.take() {
            b.release(t);
        }
    }
}

impl VendorGuard {
    /// `telemetry`: the vendor's metric handles, given to its breaker.
    pub fn new(
        retry: &RetryConfig,
        circuit: Option<&CircuitConfig>,
        limits: Option<&LimitsConfig>,
        telemetry: Option<Arc<VendorHandles>>,
    ) -> VendorGuard {
        let rate = limits.and_then(|l| {
            let rps = NonZeroU32::new(l.rps?)?;
            let burst = l.burst.and_then(NonZeroU32::new).unwrap_or(rps);
            Some(RateLimiter::direct(
                Quota::per_second(rps).allow_burst(burst),
            ))
        });
        VendorGuard {
            auth: None,
            breaker: circuit
                .cloned()
                .map(|c| Arc::new(Breaker::new(c, telemetry))),
            concurrency: limits
                .and_then(|l| l.max_concurrency)
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            rate,
            shared_rate: None,
            queue: Duration::from_millis(limits.map_or(0, |l| l.queue_ms)),
            retry: RetryPolicy::new(retry),
            held_until: std::sync::Mutex::new(None),
        }
    }

    /// The vendor throttled us: send it nothing for `wait` (calls that cannot wait that long
    /// within `queue_ms` are `rate_limited` at once).
    pub fn hold_off(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut held = self.held_until.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none_or(|h| h < until) {
            *held = Some(until);
        }
    }

    /// Holds `limits.rps` across replicas with `shared` (a no-op for a vendor without
    /// `rps`). Calls keep `pace`'s contract: wait at most `queue_ms`, else `RateLimited`.
    pub fn share_rate(&mut self, shared: Arc<Shared>, vendor: &str, limits: Option<&LimitsConfig>) {
        self.shared_rate = limits.and_then(|l| {
            let rps = l.rps.filter(|r| *r > 0)?;
            let burst = l.burst.filter(|b| *b > 0).unwrap_or(rps);
            Some(SharedRate::new(shared, vendor, rps, burst))
        });
    }

    pub fn circuit(&self) -> CircuitState {
        self.breaker
            .as_ref()
            .map_or(CircuitState::Closed, |b| b.state())
    }

    /// Admits a call: the breaker first (fail fast), then the outbound limits, waiting at
    /// most `queue_ms` for room.
    pub async fn admit(&self) -> Result<Admitted, Refusal> {
        let breaker = match &self.breaker {
            Some(b) => Some((b.clone(), b.admit().ok_or(Refusal::CircuitOpen)?)),
            None => None,
        };
        // from here a refusal drops `admitted`, which frees a probe slot as a failure would
        let mut admitted = Admitted {
            breaker,
            _permit: None,
        };
        if let Some(sem) = &self.concurrency {
            match tokio::time::timeout(self.queue, sem.clone().acquire_owned()).await {
                Ok(Ok(p)) => admitted._permit = Some(p),
                _ => return Err(Self::unused(admitted)),
            }
        }
        if self.pace().await.is_err() {
            return Err(Self::unused(admitted));
        }
        Ok(admitted)
    }

    /// Waits (at most `queue_ms`) for room under the vendor's QPS quota. Every request sent
    /// takes its share: pages and retries of one call included.
    pub async fn pace(&self) -> Result<(), Refusal> {
        let held = *self.held_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = held {
            let now = tokio::time::Instant::now();
            if until > now {
                if until - now > self.queue {
                    return Err(Refusal::RateLimited);
                }
                tokio::time::sleep_until(until).await;
            }
        }
        if let Some(shared) = &self.shared_rate {
            match shared.reserve(self.queue).await {
                Ok(Some(wait)) => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    return Ok(());
                }
                Ok(None) => return Err(Refusal::RateLimited),
                // Redis cannot be asked: this replica's own limiter holds the line
                Err(_) => {}
            }
        }
        match &self.rate {
            Some(rate) => tokio::time::timeout(self.queue, rate.until_ready())
                .await
                .map_err(|_| Refusal::RateLimited),
            None => Ok(()),
        }
    }

    /// A call refused by the limits never reached the vendor: it frees its probe slot
    /// without counting as a vendor failure (dropping `admitted` does exactly that).
    fn unused(admitted: Admitted) -> Refusal {
        drop(admitted);
        Refusal::RateLimited
    }
}

/// Retries of reads, bounded by attempts, the vendor deadline and a budget.
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub attempt_timeout: Option<Duration>,
    backoff: Duration,
    budget: Option<TpsBudget>,
}

impl RetryPolicy {
    fn new(cfg: &RetryConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: cfg.max_attempts.max(1),
            attempt_timeout: (cfg.attempt_timeout_ms > 0)
                .then(|| Duration::from_millis(cfg.attempt_timeout_ms)),
            backoff: Duration::from_millis(cfg.backoff_ms),
            // a few retries per second are always allowed, so a quiet vendor can still retry
            budget: (cfg.max_attempts > 1).then(|| {
                TpsBudget::new(
                    Duration::from_secs(10),
                    1,
                    cfg.budget_percent as f32 / 100.0,
                )
            }),
        }
    }

    /// Counts a first attempt towards the budget.
    pub fn deposit(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    /// Whether another attempt may follow attempt number `attempt` (1-based).
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts && self.budget.as_ref().is_some_and(Budget::withdraw)
    }

    /// Full-jitter exponential backoff before attempt `attempt + 1`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        use rand::RngExt;
        let cap = self.backoff.saturating_mul(1 << attempt.min(10));
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(min_calls: u32, open_ms: u64, probes: u32) -> Breaker {
        Breaker::new(
            CircuitConfig {
                failure_rate_percent: 50,
                min_calls,
                window_ms: 10_000,
                open_ms,
                half_open_probes: probes,
            },
            None,
        )
    }

    fn call(b: &Breaker, ok: bool) -> bool {
        match b.admit() {
            Some(t) => {
                b.record(t, ok);
                true
            }
            None => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_failure_rate_then_probes_and_closes() {
        let b = breaker(4, 1_000, 2);
        assert!(call(&b, true));
        assert!(call(&b, false));
        assert!(call(&b, false));
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "3 calls are fewer than min_calls"
        );
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Open, "3 of 4 failed");
        assert!(!call(&b, true), "open: fails fast");
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        // two probes at most while half-open
        let p1 = b.admit().unwrap();
        let p2 = b.admit().unwrap();
        assert!(b.admit().is_none());
        b.record(p1, true);
        assert_eq!(b.state(), CircuitState::Closed);
        b.record(p2, false); // a late probe result changes nothing once closed
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = breaker(1, 500, 1);
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_millis(501)).await;
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let b = breaker(4, 1_000, 1);
        for _ in 0..3 {
            call(&b, false);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&b, false);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "only one failure is in the window"
        );
    }

    #[tokio::test]
    async fn limits_refuse_after_the_queue_time() {
        let limits = LimitsConfig {
            max_concurrency: Some(1),
            rps: None,
            burst: None,
            queue_ms: 20,
        };
        let g = VendorGuard::new(&RetryConfig::default(), None, Some(&limits), None);
        let held = g.admit().await.unwrap();
        assert_eq!(g.admit().await.err(), Some(Refusal::RateLimited));
        held.finish(true);
        assert!(g.admit().await.is_ok());

        let rate = LimitsConfig {
            max_concurrency: None,
            rps: Some(1),
            burst: Some(2),
            queue_ms: 10,
        };
        let g = VendorGuard::new(&RetryConfig::default(), None, Some(&rate), None);
        assert!(g.admit().await.is_ok());
        assert!(g.admit().await.is_ok());
        assert_eq!(
            g.admit().await.err(),
            Some(Refusal::RateLimited),
            "burst of 2 spent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_its_caller_abandoned_says_nothing_about_the_vendor() {
        let cfg = CircuitConfig {
            failure_rate_percent: 50,
            min_calls: 1,
            window_ms: 1_000,
            open_ms: 1_000,
            half_open_probes: 1,
        };
        let g = VendorGuard::new(&RetryConfig::default(), Some(&cfg), None, None);
        drop(g.admit().await.unwrap());
        assert_eq!(g.circuit(), CircuitState::Closed);
        g.admit().await.unwrap().finish(false);
        assert_eq!(g.circuit(), CircuitState::Open);
        tokio::time::advance(Duration::from_millis(1_001)).await;
        // an abandoned probe frees its slot, so the next caller can probe
        drop(g.admit().await.unwrap());
        let probe = g.admit().await.unwrap();
        probe.finish(true);
        assert_eq!(g.circuit(), CircuitState::Closed);
    }

    #[test]
    fn the_retry_budget_caps_retries_as_a_share_of_calls() {
        let p = RetryPolicy::new(&RetryConfig {
            max_attempts: 3,
            attempt_timeout_ms: 0,
            backoff_ms: 10,
            budget_percent: 10,
        });
        for _ in 0..100 {
            p.deposit();
        }
        let granted = (0..100).filter(|_| p.may_retry(1)).count();
        // 10 % of 100 calls, plus the small per-second reserve
        assert!((10..=25).contains(&granted), "{granted}");
        assert!(!p.may_retry(3), "never past max_attempts");
        let none = RetryPolicy::new(&RetryConfig::default());
        assert!(!none.may_retry(1));
        for a in 0..5 {
            assert!(p.backoff(a) <= Duration::from_millis(10 << a));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_instant_the_open_period_ends_the_circuit_probes() {
        let b = breaker(1, 1_000, 1);
        assert!(call(&b, false));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.admit().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        // state() already says half-open here: admit() must agree and let a probe through
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.admit().is_some_and(|t| t.probe));
    }

    #[test]
    fn states_read_as_the_api_words() {
        let words = [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ]
        .map(CircuitState::as_str);
        assert_eq!(words, ["closed", "open", "half_open"]);
    }

    /// Calls at `at_ms` (from the start, in order), each `(at_ms, ok)`.
    async fn calls_at(b: &Breaker, calls: &[(u64, bool)]) {
        let start = Instant::now();
        for &(at, ok) in calls {
            tokio::time::advance((start + Duration::from_millis(at)) - Instant::now()).await;
            assert!(call(b, ok), "admitted at {at} ms");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_leave_the_window_a_bucket_at_a_time() {
        // window 10 s in buckets of 1 s: the failures at 0 and 0.5 s share the first bucket
        // and leave together at 10 s; the successes at 9.5 and 9.6 s share theirs and stay
        let b = breaker(4, 1_000, 1);
        calls_at(
            &b,
            &[
                (0, false),
                (500, false),
                (9_500, true),
                (9_600, true),
                (10_200, false),
            ],
        )
        .await;
        assert_eq!(b.state(), CircuitState::Closed, "3 calls in the window");
        calls_at(&b, &[(100, false)]).await;
        assert_eq!(b.state(), CircuitState::Open, "2 of 4 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_a_whole_bucket_later_starts_the_next_bucket() {
        let b = breaker(2, 1_000, 1);
        // the success at 1 s opens the second bucket, so it outlives the first failure
        calls_at(&b, &[(0, false), (1_000, true), (10_000, false)]).await;
        assert_eq!(b.state(), CircuitState::Open, "1 of 2 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_failure_rate_the_circuit_stays_closed() {
        let b = breaker(4, 1_000, 1);
        calls_at(&b, &[(0, true), (0, true), (0, true), (0, false)]).await;
        assert_eq!(b.state(), CircuitState::Closed, "1 of 4 failed, under 50 %");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_is_counted_as_half_open_to_open() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        // the vendor's handles go to this test's own recorder
        let handles = metrics::with_local_recorder(&recorder, || {
            crate::telemetry::vendor_handles("v", false)
        });
        let b = Breaker::new(
            CircuitConfig {
                failure_rate_percent: 50,
                min_calls: 1,
                window_ms: 10_000,
                open_ms: 500,
                half_open_probes: 1,
            },
            Some(Arc::new(handles)),
        );
        assert!(call(&b, false));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(call(&b, false), "the probe");
        assert_eq!(b.state(), CircuitState::Open);
        let text = metrics.render();
        let sample = |name: &str, labels: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}{{{labels}}} ")))
                .unwrap_or_else(|| panic!("{name}{{{labels}}} in {text}"))
                .to_owned()
        };
        let transition = |from: &str, to: &str| {
            sample(
                "cgw_circuit_transitions_total",
                &format!("vendor=\"v\",from=\"{from}\",to=\"{to}\""),
            )
        };
        // opened once from closed, once from the failed probe: each counted where it came from
        assert_eq!(transition("closed", "open"), "1");
        assert_eq!(transition("open", "half_open"), "1");
        assert_eq!(transition("half_open", "open"), "1");
        assert_eq!(transition("half_open", "closed"), "0");
        let state = |s: &str| sample("cgw_circuit_state", &format!("vendor=\"v\",state=\"{s}\""));
        assert_eq!(
            (state("closed"), state("open"), state("half_open")),
            ("0".into(), "1".into(), "0".into())
        );
    }

    fn held_guard(queue_ms: u64) -> VendorGuard {
        let limits = LimitsConfig {
            max_concurrency: None,
            rps: None,
            burst: None,
            queue_ms,
        };
        VendorGuard::new(&RetryConfig::default(), None, Some(&limits), None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_vendor_hold_within_the_queue_time_is_waited_out_and_a_longer_one_refused() {
        let g = held_guard(100);
        // exactly the queue time: waited out, and nothing goes out before it ends
        g.hold_off(Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(g.pace().await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // past the hold, calls go out at once
        assert_eq!(g.pace().await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // longer than the queue time: refused at once, without waiting
        g.hold_off(Duration::from_millis(101));
        assert_eq!(g.pace().await, Err(Refusal::RateLimited));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_of_two_holds_is_kept() {
        // a shorter Retry-After after a longer one does not shorten the hold
        let g = held_guard(100);
        g.hold_off(Duration::from_millis(500));
        g.hold_off(Duration::from_millis(50));
        assert_eq!(g.pace().await, Err(Refusal::RateLimited));
        // a longer one after a shorter one lengthens it
        let g = held_guard(100);
        g.hold_off(Duration::from_millis(50));
        g.hold_off(Duration::from_millis(500));
        assert_eq!(g.pace().await, Err(Refusal::RateLimited));
    }

    fn retries(max_attempts: u32, budget_percent: u32) -> RetryPolicy {
        RetryPolicy::new(&RetryConfig {
            max_attempts,
            attempt_timeout_ms: 0,
            backoff_ms: 10,
            budget_percent,
        })
    }

    #[test]
    fn first_attempts_earn_the_retries_of_the_budget() {
        // the reserve alone (about one retry a second over the budget's 10 s) runs dry quickly
        let quiet = retries(3, 50);
        let reserve = (0..1_000).filter(|_| quiet.may_retry(1)).count();
        // 400 first attempts at 50 % earn some 200 retries more
        let busy = retries(3, 50);
        for _ in 0..400 {
            busy.deposit();
        }
        let earned = (0..1_000).filter(|_| busy.may_retry(1)).count();
        assert!(earned >= reserve + 150, "{reserve} then {earned}");
    }

    #[test]
    fn the_last_attempt_is_never_retried_even_with_budget_left() {
        let p = retries(3, 100);
        for _ in 0..100 {
            p.deposit();
        }
        assert!(!p.may_retry(3));
        assert!(p.may_retry(2));
    }

    #[test]
    fn backoff_doubles_its_jittered_cap_per_attempt() {
        let p = retries(3, 10);
        // full jitter: any wait from 0 to the cap; the cap is 10 ms doubled per attempt, up to
        // 2^10 times. The largest of 200 draws is near the cap (all 200 in its lower eighth
        // has a chance of 8^-200)
        for attempt in [0, 3, 10, 20] {
            let cap = Duration::from_millis(10 << attempt.min(10));
            let most = (0..200).map(|_| p.backoff(attempt)).max().unwrap();
            assert!(most <= cap, "attempt {attempt}: {most:?}");
            assert!(most > cap / 8, "attempt {attempt}: {most:?}");
        }
    }
}
