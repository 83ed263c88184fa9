//! `server.shared`: the tier several replicas share (Redis). Off unless `redis_url` is set, so a
//! single gateway (and the sandbox) needs nothing. See docs/replicas.md.
use std::fmt;

use serde::Deserialize;

/// Settings of the shared tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS); absent = every piece of state is per
    /// process. A password may be in the URL, but is better given as `password`.
    pub redis_url: Option<Sensitive>,
    /// ACL user (Redis 6+), e.g. from `CGW_SERVER__SHARED__USERNAME`.
    pub username: Option<String>,
    /// AUTH password, e.g. from `CGW_SERVER__SHARED__PASSWORD`; never logged.
    pub password: Option<Sensitive>,
    /// With `rediss://`: a PEM file of the CA certificates to trust instead of the system's
    /// (a Redis whose certificate a private CA signed).
    pub tls_ca_file: Option<String>,
    /// Longest wait for one Redis command; past it the command counts as failed and the
    /// request goes on with the local tier (or a keyed write is refused with 503).
    pub timeout_ms: u64,
    /// After a failure, Redis is not asked again for this long (requests use the local tier
    /// at once instead of each waiting `timeout_ms`); then one request probes it.
    pub retry_ms: u64,
    /// Prefix of every key, so several gateways (or environments) can share one Redis.
    pub key_prefix: String,
    /// How long a claimed `Idempotency-Key` stays "in progress" when its replica dies before
    /// answering; repeats within it are refused, after it one may proceed again.
    pub idempotency_lease_ms: u64,
    /// How long replicas wait for the one replica fetching an access token before fetching
    /// their own.
    pub token_lock_ms: u64,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            redis_url: None,
            username: None,
            password: None,
            tls_ca_file: None,
            timeout_ms: 80,
            retry_ms: 1_000,
            key_prefix: "cgw:".to_owned(),
            idempotency_lease_ms: 60_000,
            token_lock_ms: 5_000,
        }
    }
}

impl SharedConfig {
    /// Problems of these settings as (key path under `server.shared`, message); empty when
    /// fine. Messages never quote the URL or the password.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(url) = &self.redis_url {
            let scheme_ok =
                url.expose().starts_with("redis://") || url.expose().starts_with("rediss://");
            if !scheme_ok || redis::Client::open(url.expose()).is_err() {
                out.push((
                    "redis_url",
                    "not a valid redis:// or rediss:// URL".to_owned(),
                ));
            }
        }
        if self.tls_ca_file.is_some()
            && !self
                .redis_url
                .as_ref()
                .is_some_and(|u| u.expose().starts_with("rediss://"))
        {
            out.push(("tls_ca_file", "needs a rediss:// redis_url".to_owned()));
        }
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("idempotency_lease_ms", self.idempotency_lease_ms),
            ("token_lock_ms", self.token_lock_ms),
        ] {
            if value == 0 {
                out.push((key, "must be more than 0".to_owned()));
            }
        }
        out
    }
}

/// A string that is never shown by `Debug` (a URL that may hold a password, a password).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Sensitive {
        Sensitive(value.into())
    }

    /// The value itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sensitive(…)")
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's large Error
mod tests {
    use super::*;

    #[test]
    fn the_environment_sets_the_url_user_and_password_and_keeps_them_strings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "CGW_SERVER__SHARED__REDIS_URL",
                "rediss://redis.internal:6380/0",
            );
            jail.set_env("CGW_SERVER__SHARED__USERNAME", "gateway");
            jail.set_env("CGW_SERVER__SHARED__PASSWORD", "0012345");
            jail.set_env("CGW_SERVER__SHARED__TIMEOUT_MS", "50");
            let loaded = crate::config::load_str("routes.yaml", "server: {}\n", true).unwrap();
            let shared = &loaded.config.server.shared;
            assert_eq!(
                shared.redis_url.as_ref().map(Sensitive::expose),
                Some("rediss://redis.internal:6380/0")
            );
            assert_eq!(shared.username.as_deref(), Some("gateway"));
            assert_eq!(
                shared.password.as_ref().map(Sensitive::expose),
                Some("0012345")
            );
            assert_eq!(shared.timeout_ms, 50);
            assert_eq!(shared.key_prefix, "cgw:", "the rest keeps its defaults");
            Ok(())
        });
    }

    #[test]
    fn off_by_default() {
        let loaded = crate::config::load_str("routes.yaml", "server: {}\n", false).unwrap();
        assert!(loaded.config.server.shared.redis_url.is_none());
    }

    #[test]
    fn debug_hides_the_url_and_password() {
        let cfg = SharedConfig {
            redis_url: Some(Sensitive::new("rediss://:hunter2@redis.internal:6380/0")),
            password: Some(Sensitive::new("hunter3")),
            ..SharedConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(cfg.problems().is_empty());
    }

    #[test]
    fn bad_settings_are_named_without_their_value() {
        let cfg = SharedConfig {
            redis_url: Some(Sensitive::new("http://:hunter2@x")),
            timeout_ms: 0,
            ..SharedConfig::default()
        };
        let problems = cfg.problems();
        let keys: Vec<_> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["redis_url", "timeout_ms"]);
        assert!(problems.iter().all(|(_, m)| !m.contains("hunter2")));
        assert!(SharedConfig::default().problems().is_empty());
    }
}
