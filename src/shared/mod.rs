//! The shared tier: state that several replicas of the gateway keep in one Redis
//! (`server.shared`), each piece behind the type the single-process gateway already uses.
//!
//! * [`idempotency::RedisStore`]: `Idempotency-Key` records (an `IdempotencyStore`);
//! * [`tokens::SharedTokens`]: one access-token fetch for all replicas (used by `TokenCache`);
//! * [`limiter::SharedRate`]: vendor quotas held across replicas, GCRA in a Lua script (used by
//!   `VendorGuard::pace`);
//! * [`cache::SharedAnswers`]: a second cache level under moka (used by `ResponseCache`).
//!
//! Every command goes through [`Shared::run`], which bounds it by `timeout_ms` and tracks
//! whether Redis is usable: after a failure the tier is *down* and no request waits on Redis
//! for `retry_ms`; then one request probes it and, if it answers, the tier is *up* again.
//! Each transition is one log line and moves the `cgw_shared_up` gauge; nothing logs per
//! request. Callers decide what "down" means for them: reads go on with the local tier, a
//! keyed write is refused.
pub mod cache;
pub mod idempotency;
pub mod limiter;
pub mod tokens;

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo};
use tokio::time::Instant;

use crate::config::shared::SharedConfig;

/// 1 while Redis answers, 0 while the gateway runs on its local tier.
pub const SHARED_UP: &str = "cgw_shared_up";
/// Commands of the shared tier that failed or timed out, by `piece`.
pub const SHARED_FAILURES: &str = "cgw_shared_failures_total";

/// Redis could not be used (down, too slow, refused the command): the caller falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared tier (Redis) is unavailable")]
pub struct Unavailable;

/// Which piece asked; the label of [`SHARED_FAILURES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Idempotency,
    Tokens,
    Limiter,
    Cache,
}

impl Piece {
    fn as_str(self) -> &'static str {
        match self {
            Piece::Idempotency => "idempotency",
            Piece::Tokens => "tokens",
            Piece::Limiter => "limiter",
            Piece::Cache => "cache",
        }
    }
}

#[derive(Debug)]
struct Health {
    up: bool,
    /// While down: Redis is not asked before this instant.
    retry_at: Option<Instant>,
}

/// A handle to the shared Redis, one per gateway process (cheap to share in an `Arc`).
pub struct Shared {
    /// `None` when the configured URL could not be used: the tier is then always down.
    conn: Option<ConnectionManager>,
    prefix: String,
    pub(crate) timeout: Duration,
    retry: Duration,
    pub(crate) idempotency_lease: Duration,
    pub(crate) token_lock: Duration,
    health: Mutex<Health>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The shared tier of `cfg`, or `None` when `redis_url` is not set. Connects lazily (the
    /// first command connects), so a Redis that is down at start-up only means "down".
    /// Must be called inside a tokio runtime.
    pub fn new(cfg: &SharedConfig) -> Option<Shared> {
        let url = cfg.redis_url.as_ref()?;
        let conn = Self::connect(cfg, url.expose());
        if conn.is_none() {
            tracing::error!(
                "server.shared.redis_url cannot be used; replicas share nothing and keyed writes are refused"
            );
        }
        metrics::gauge!(SHARED_UP).set(0.0);
        Some(Shared {
            conn,
            prefix: cfg.key_prefix.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            retry: Duration::from_millis(cfg.retry_ms),
            idempotency_lease: Duration::from_millis(cfg.idempotency_lease_ms.max(1)),
            token_lock: Duration::from_millis(cfg.token_lock_ms.max(1)),
            // unknown until the first command; "up" so that the first one is tried
            health: Mutex::new(Health {
                up: true,
                retry_at: None,
            }),
        })
    }

    fn connect(cfg: &SharedConfig, url: &str) -> Option<ConnectionManager> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return None;
        }
        // the connection manager spawns its tasks on the current runtime
        tokio::runtime::Handle::try_current().ok()?;
        let mut info = url.into_connection_info().ok()?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &cfg.password {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        let client = match &cfg.tls_ca_file {
            Some(path) => {
                let Ok(pem) = std::fs::read(path) else {
                    tracing::error!(path, "server.shared.tls_ca_file cannot be read");
                    return None;
                };
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, certs).ok()?
            }
            None => redis::Client::open(info).ok()?,
        };
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            // a TLS handshake takes a few round trips
            .set_connection_timeout(Some(timeout * 4))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(cfg.retry_ms.max(1)));
        ConnectionManager::new_lazy_with_config(client, config).ok()
    }

    /// `key_prefix` + `rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Whether the last command succeeded (or none failed since the last probe time).
    pub fn is_up(&self) -> bool {
        self.health().up
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `cmd` (a command or a pipeline) within `timeout_ms`, unless Redis is known to be
    /// down and its retry time has not come.
    pub async fn run<T, C>(&self, piece: Piece, cmd: &C) -> Result<T, Unavailable>
    where
        T: FromRedisValue,
        C: Runnable,
    {
        let Some(conn) = &self.conn else {
            return Err(Unavailable);
        };
        {
            let mut h = self.health();
            if let Some(at) = h.retry_at {
                if Instant::now() < at {
                    return Err(Unavailable);
                }
                // this request probes; the others keep skipping Redis until it is answered
                h.retry_at = Some(Instant::now() + self.timeout + self.retry);
            }
        }
        let mut conn = conn.clone();
        let outcome = tokio::time::timeout(self.timeout, cmd.run_on(&mut conn)).await;
        match outcome {
            Ok(Ok(value)) => {
                self.mark_up();
                redis::from_redis_value(value).map_err(|_| {
                    metrics::counter!(SHARED_FAILURES, "piece" => piece.as_str()).increment(1);
                    Unavailable
                })
            }
            Ok(Err(e)) if !e.is_io_error() && !e.is_timeout() && !e.is_connection_dropped() => {
                // Redis answered, with an error: it is up, the command is wrong
                metrics::counter!(SHARED_FAILURES, "piece" => piece.as_str()).increment(1);
                tracing::debug!(piece = piece.as_str(), kind = ?e.kind(), "shared tier command refused");
                Err(Unavailable)
            }
            Ok(Err(_)) | Err(_) => {
                metrics::counter!(SHARED_FAILURES, "piece" => piece.as_str()).increment(1);
                self.mark_down();
                Err(Unavailable)
            }
        }
    }

    fn mark_up(&self) {
        let mut h = self.health();
        h.retry_at = None;
        if !h.up {
            h.up = true;
            tracing::info!("shared tier (Redis) is back: replicas share state again");
        }
        metrics::gauge!(SHARED_UP).set(1.0);
    }

    fn mark_down(&self) {
        let mut h = self.health();
        h.retry_at = Some(Instant::now() + self.retry);
        if h.up {
            h.up = false;
            tracing::warn!(
                retry_ms = self.retry.as_millis() as u64,
                "shared tier (Redis) unavailable: reads use the local tier, keyed writes are refused"
            );
        }
        metrics::gauge!(SHARED_UP).set(0.0);
    }
}

/// What [`Runnable::run_on`] returns.
pub type Reply<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = redis::RedisResult<redis::Value>> + Send + 'a>,
>;

/// A command, a pipeline or a script invocation [`Shared::run`] can send.
pub trait Runnable: Sync {
    fn run_on<'a>(&'a self, conn: &'a mut ConnectionManager) -> Reply<'a>;
}

impl Runnable for redis::Cmd {
    fn run_on<'a>(&'a self, conn: &'a mut ConnectionManager) -> Reply<'a> {
        Box::pin(self.query_async(conn))
    }
}

impl Runnable for redis::Pipeline {
    fn run_on<'a>(&'a self, conn: &'a mut ConnectionManager) -> Reply<'a> {
        Box::pin(self.query_async(conn))
    }
}

/// A Lua script with its keys and arguments (EVALSHA, loading it on NOSCRIPT).
pub struct Call<'s> {
    pub script: &'s redis::Script,
    pub keys: Vec<String>,
    pub args: Vec<Vec<u8>>,
}

impl Runnable for Call<'_> {
    fn run_on<'a>(&'a self, conn: &'a mut ConnectionManager) -> Reply<'a> {
        Box::pin(async move {
            let mut inv = self.script.prepare_invoke();
            for k in &self.keys {
                inv.key(k);
            }
            for a in &self.args {
                inv.arg(a.as_slice());
            }
            inv.invoke_async(conn).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::shared::Sensitive;

    /// A Redis that accepts connections and never answers: every command takes the timeout.
    fn silent_redis() -> std::net::TcpListener {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_down_redis_is_one_log_line_and_requests_do_not_wait_on_it() {
        let (log, _guard) = crate::telemetry::captured::capture();

        let silent = silent_redis();
        let cfg = SharedConfig {
            redis_url: Some(Sensitive::new(format!(
                "redis://:pw-not-logged@127.0.0.1:{}/0",
                silent.local_addr().unwrap().port()
            ))),
            timeout_ms: 100,
            retry_ms: 60_000,
            ..SharedConfig::default()
        };
        let shared = Shared::new(&cfg).expect("configured");
        let started = Instant::now();
        for _ in 0..50 {
            let r: Result<Option<String>, _> =
                shared.run(Piece::Cache, redis::cmd("GET").arg("k")).await;
            assert_eq!(r, Err(Unavailable));
        }
        // the first command gives up at its timeout, the 49 others skip Redis at once
        // (waiting on it each time would take 50 × 100 ms)
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(1_000), "{took:?}");
        assert!(!shared.is_up());
        let text = log.text();
        assert_eq!(
            text.matches("shared tier (Redis) unavailable").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("pw-not-logged"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unusable_url_is_a_tier_that_is_always_down() {
        for url in ["http://127.0.0.1:6379", "redis://[bad", "rediss://"] {
            let cfg = SharedConfig {
                redis_url: Some(Sensitive::new(url)),
                ..SharedConfig::default()
            };
            let shared = Shared::new(&cfg).expect("configured");
            let r: Result<Option<String>, _> =
                shared.run(Piece::Tokens, redis::cmd("GET").arg("k")).await;
            assert_eq!(r, Err(Unavailable), "{url}");
        }
        assert!(
            Shared::new(&SharedConfig::default()).is_none(),
            "off by default"
        );
    }
}
