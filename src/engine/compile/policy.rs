//! The policy pass: every numeric setting within the bounds of one table (which docs/routes.md
//! shows, generated from it), a vendor's base URL and credentials, and an operation's effect,
//! identity and cache consistent with the route it serves.
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use secrecy::SecretString;

use super::Cx;
use crate::config::load::env_var_for;
use crate::config::{
    ConfigError, Effect, LoadedConfig, OperationConfig, RoutesConfig, VendorConfig,
};
use crate::engine::plan::{Credentials, VendorPlan};
use crate::engine::routes::RouteKind;

const DAY_MS: u64 = 86_400_000;
const GIB: u64 = 1 << 30;

/// The range of one numeric setting. `get` is `None` when the setting's section is absent.
pub struct Bound<C: 'static> {
    /// Path below the part it belongs to, e.g. `retry.max_attempts`.
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    /// Appended to the message, e.g. ` (1 = no retry)`.
    pub note: &'static str,
    pub get: fn(&C) -> Option<u64>,
}

/// `server.…` and `routes.…`.
pub const SERVER_BOUNDS: &[Bound<RoutesConfig>] = &[
    Bound {
        key: "server.cache_max_bytes",
        min: 1024 * 1024,
        max: 64 * GIB,
        note: "",
        get: |c| Some(c.server.cache_max_bytes),
    },
    Bound {
        key: "server.drain_delay_ms",
        min: 0,
        max: 600_000,
        note: "",
        get: |c| Some(c.server.drain_delay_ms),
    },
    Bound {
        key: "server.connection_threads",
        min: 0,
        max: 256,
        note: "",
        get: |c| Some(c.server.connection_threads as u64),
    },
    Bound {
        key: "server.max_connections",
        min: 1,
        max: 1_000_000,
        note: "",
        get: |c| Some(c.server.max_connections as u64),
    },
    Bound {
        key: "server.http2_max_concurrent_streams",
        min: 1,
        max: 10_000,
        note: "",
        get: |c| Some(u64::from(c.server.http2_max_concurrent_streams)),
    },
    Bound {
        key: "server.http2_max_header_list_bytes",
        min: 1024,
        max: 16 * 1024 * 1024,
        note: "",
        get: |c| Some(u64::from(c.server.http2_max_header_list_bytes)),
    },
    Bound {
        key: "server.http2_keep_alive_interval_ms",
        min: 1_000,
        max: 3_600_000,
        note: "",
        get: |c| Some(c.server.http2_keep_alive_interval_ms),
    },
    Bound {
        key: "server.http2_keep_alive_timeout_ms",
        min: 1_000,
        max: 600_000,
        note: "",
        get: |c| Some(c.server.http2_keep_alive_timeout_ms),
    },
    Bound {
        key: "server.body_limit_bytes",
        min: 1,
        max: GIB,
        note: "",
        get: |c| Some(c.server.body_limit_bytes),
    },
    Bound {
        key: "server.request_timeout_ms",
        min: 1,
        max: 600_000,
        note: "",
        get: |c| Some(c.server.request_timeout_ms),
    },
    Bound {
        key: "server.max_concurrency",
        min: 1,
        max: 1_000_000,
        note: "",
        get: |c| Some(c.server.max_concurrency as u64),
    },
    Bound {
        key: "server.max_vendor_calls",
        min: 1,
        max: 1_000_000,
        note: "",
        get: |c| Some(c.server.max_vendor_calls as u64),
    },
    Bound {
        key: "server.max_vendor_response_bytes",
        min: 1,
        max: GIB,
        note: "",
        get: |c| Some(c.server.max_vendor_response_bytes),
    },
    Bound {
        key: "server.shutdown_grace_ms",
        min: 0,
        max: 600_000,
        note: "",
        get: |c| Some(c.server.shutdown_grace_ms),
    },
    Bound {
        key: "server.header_read_timeout_ms",
        min: 1,
        max: 600_000,
        note: "",
        get: |c| Some(c.server.header_read_timeout_ms),
    },
    Bound {
        key: "routes.coupons_query.max_limit",
        min: 1,
        max: 10_000,
        note: "",
        get: |c| Some(c.routes.coupons_query.max_limit as u64),
    },
];

/// `vendors.<id>.…`.
pub const VENDOR_BOUNDS: &[Bound<VendorConfig>] = &[
    Bound {
        key: "timeout_ms",
        min: 1,
        max: 600_000,
        note: "",
        get: |v| Some(v.timeout_ms),
    },
    Bound {
        key: "retry.max_attempts",
        min: 1,
        max: 10,
        note: " (1 = no retry)",
        get: |v| Some(u64::from(v.retry.max_attempts)),
    },
    Bound {
        key: "retry.attempt_timeout_ms",
        min: 0,
        max: 600_000,
        note: " (0 = the whole timeout_ms)",
        get: |v| Some(v.retry.attempt_timeout_ms),
    },
    Bound {
        key: "retry.backoff_ms",
        min: 0,
        max: 60_000,
        note: "",
        get: |v| Some(v.retry.backoff_ms),
    },
    Bound {
        key: "retry.budget_percent",
        min: 0,
        max: 100,
        note: "",
        get: |v| Some(u64::from(v.retry.budget_percent)),
    },
    Bound {
        key: "circuit.failure_rate_percent",
        min: 1,
        max: 100,
        note: "",
        get: |v| {
            v.circuit
                .as_ref()
                .map(|c| u64::from(c.failure_rate_percent))
        },
    },
    Bound {
        key: "circuit.min_calls",
        min: 1,
        max: 1_000_000,
        note: "",
        get: |v| v.circuit.as_ref().map(|c| u64::from(c.min_calls)),
    },
    Bound {
        key: "circuit.window_ms",
        min: 1,
        max: DAY_MS,
        note: "",
        get: |v| v.circuit.as_ref().map(|c| c.window_ms),
    },
    Bound {
        key: "circuit.open_ms",
        min: 1,
        max: DAY_MS,
        note: "",
        get: |v| v.circuit.as_ref().map(|c| c.open_ms),
    },
    Bound {
        key: "circuit.half_open_probes",
        min: 1,
        max: 1_000,
        note: "",
        get: |v| v.circuit.as_ref().map(|c| u64::from(c.half_open_probes)),
    },
    Bound {
        key: "limits.max_concurrency",
        min: 1,
        max: 100_000,
        note: " (leave it out for no cap)",
        get: |v| {
            v.limits
                .as_ref()
                .and_then(|l| l.max_concurrency)
                .map(u64::from)
        },
    },
    Bound {
        key: "limits.rps",
        min: 1,
        max: 1_000_000,
        note: " (leave it out for no quota)",
        get: |v| v.limits.as_ref().and_then(|l| l.rps).map(u64::from),
    },
    Bound {
        key: "limits.burst",
        min: 1,
        max: 1_000_000,
        note: "",
        get: |v| v.limits.as_ref().and_then(|l| l.burst).map(u64::from),
    },
    Bound {
        key: "limits.queue_ms",
        min: 0,
        max: 60_000,
        note: "",
        get: |v| v.limits.as_ref().map(|l| l.queue_ms),
    },
    Bound {
        key: "auth.token.refresh_before_ms",
        min: 0,
        max: DAY_MS,
        note: "",
        get: |v| v.auth.as_ref().map(|a| a.token.refresh_before_ms),
    },
];

/// `vendors.<id>.operations.<name>.…`.
pub const OPERATION_BOUNDS: &[Bound<OperationConfig>] = &[
    Bound {
        key: "cache.ttl_ms",
        min: 1,
        max: 30 * DAY_MS,
        note: " (leave `cache` out for no cache)",
        get: |o| o.cache.as_ref().map(|c| c.ttl_ms),
    },
    Bound {
        key: "cache.empty_ttl_ms",
        min: 0,
        max: 30 * DAY_MS,
        note: "",
        get: |o| o.cache.as_ref().and_then(|c| c.empty_ttl_ms),
    },
    Bound {
        key: "cache.stale_if_error_ms",
        min: 0,
        max: 30 * DAY_MS,
        note: "",
        get: |o| o.cache.as_ref().map(|c| c.stale_if_error_ms),
    },
    Bound {
        key: "paging.page_size",
        min: 1,
        max: 10_000,
        note: "",
        get: |o| o.paging.as_ref().map(|p| p.page_size),
    },
    Bound {
        key: "paging.max_pages",
        min: 1,
        max: 1_000,
        note: "",
        get: |o| o.paging.as_ref().map(|p| u64::from(p.max_pages)),
    },
];

/// Checks `config` against `bounds`; errors go to `cx` below its path.
pub fn check_bounds<C>(cx: &mut Cx<'_>, config: &C, bounds: &[Bound<C>]) {
    for b in bounds {
        if let Some(v) = (b.get)(config)
            && !(b.min..=b.max).contains(&v)
        {
            cx.err(
                b.key,
                format!("must be between {} and {}{}", b.min, b.max, b.note),
            );
        }
    }
}

/// The reference table of docs/routes.md, made from the bounds tables.
pub fn reference_table() -> String {
    let mut out = String::from("| setting | from | to | note |\n| --- | --- | --- | --- |\n");
    let mut row = |key: String, b_min: u64, b_max: u64, note: &str| {
        let note = note.trim().trim_start_matches('(').trim_end_matches(')');
        out.push_str(&format!("| `{key}` | {b_min} | {b_max} | {note} |\n"));
    };
    for b in SERVER_BOUNDS {
        row(b.key.to_owned(), b.min, b.max, b.note);
    }
    for b in VENDOR_BOUNDS {
        row(format!("vendors.<id>.{}", b.key), b.min, b.max, b.note);
    }
    for b in OPERATION_BOUNDS {
        row(
            format!("vendors.<id>.operations.<name>.{}", b.key),
            b.min,
            b.max,
            b.note,
        );
    }
    out
}

/// Server-wide settings.
pub fn check_server(loaded: &LoadedConfig, errors: &mut Vec<ConfigError>) {
    let mut cx = Cx::new(loaded, String::new());
    let cfg = &loaded.config;
    check_bounds(&mut cx, cfg, SERVER_BOUNDS);
    for (key, message) in cfg.server.shared.problems() {
        cx.err(&format!("server.shared.{key}"), message);
    }
    let route = &cfg.routes.coupons_query;
    if route.default_limit == 0 || route.default_limit > route.max_limit {
        cx.err(
            "routes.coupons_query.default_limit",
            "must be between 1 and max_limit",
        );
    }
    errors.append(&mut cx.errors);
}

/// A vendor's own settings: id, base URL and bounds. `slot` is its index in the plan.
pub fn vendor(
    loaded: &LoadedConfig,
    slot: usize,
    id: &str,
    v: &VendorConfig,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<Arc<VendorPlan>> {
    let mut cx = Cx::new(loaded, format!("vendors.{id}"));
    if !valid_name(id) {
        cx.err("", "a vendor id is lowercase letters, digits and `_`");
        errors.append(&mut cx.errors);
        return None;
    }
    let base = v.base_url.trim_end_matches('/');
    let uri = match Uri::from_str(base) {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            cx.err("base_url", "must be an absolute http:// or https:// URL");
            errors.append(&mut cx.errors);
            return None;
        }
    };
    if uri.query().is_some() {
        cx.err("base_url", "must not carry a query string");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // it would be shown by GET /v1/vendors and in resolved image URLs
        cx.err(
            "base_url",
            "must not carry a user or password: use `credentials`",
        );
    }
    check_bounds(&mut cx, v, VENDOR_BOUNDS);
    if v.retry.max_attempts > 1 && v.retry.attempt_timeout_ms >= v.timeout_ms {
        // an SRE lowering timeout_ms during an incident must not keep the gateway from
        // starting: the call deadline caps the attempt anyway
        warnings.push(loaded.error(
            &format!("vendors.{id}.retry.attempt_timeout_ms"),
            format!(
                "{} is not below timeout_ms ({}): a timed-out attempt leaves no time to retry; the call deadline caps it",
                v.retry.attempt_timeout_ms, v.timeout_ms
            ),
        ));
    }
    for (name, op) in &v.operations {
        if op.cache.as_ref().is_some_and(|c| c.max_bytes.is_some()) {
            warnings.push(loaded.error(
                &format!("vendors.{id}.operations.{name}.cache.max_bytes"),
                "ignored: every operation's answers share one budget, server.cache_max_bytes",
            ));
        }
    }
    let failed = !cx.errors.is_empty();
    errors.append(&mut cx.errors);
    if failed {
        return None;
    }
    let origin = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    Some(Arc::new(VendorPlan {
        id: id.to_owned(),
        display_name: v.display_name.clone(),
        base_url: base.to_owned(),
        origin,
        base_path: uri.path().trim_end_matches('/').to_owned(),
        timeout: Duration::from_millis(v.timeout_ms),
        operations: v.operations.keys().cloned().collect(),
        slot,
        retry: v.retry.clone(),
        circuit: v.circuit.clone(),
        limits: v.limits.clone(),
        propagate_trace: v.propagate_trace,
    }))
}

/// Lowercase letters, digits and `_`: what a `CGW_` variable can name.
pub fn valid_name(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Credential values in declaration order (sorted by name), checked for presence.
pub fn credentials(
    loaded: &LoadedConfig,
    id: &str,
    v: &VendorConfig,
    mode: Credentials,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<SecretString> {
    for (name, value) in &v.credentials {
        let path = format!("vendors.{id}.credentials.{name}");
        if !valid_name(name) {
            errors.push(loaded.error(
                &path,
                "a credential name is lowercase letters, digits and `_` (environment variables cannot reach others)",
            ));
        }
        // a value from the environment or the sandbox is fine; one written in the file is not
        if value.is_some() && loaded.index.has_scalar_value(&path) {
            warnings.push(loaded.error(
                &path,
                format!(
                    "credential `{name}` has a value in the file: keep secrets in {} instead",
                    env_var_for(&path)
                ),
            ));
        }
    }
    v.credentials
        .iter()
        .map(|(name, value)| match value.as_deref() {
            Some(s) if !s.is_empty() => SecretString::from(s.to_owned()),
            _ => {
                let path = format!("vendors.{id}.credentials.{name}");
                let e = loaded.error(
                    &path,
                    format!(
                        "credential `{name}` of vendor `{id}` has no value: set {}",
                        env_var_for(&path)
                    ),
                );
                match mode {
                    Credentials::Required => errors.push(e),
                    Credentials::Optional => warnings.push(e),
                }
                SecretString::from(String::new())
            }
        })
        .collect()
}

/// An operation's identity, effect and cache against its route.
pub fn operation(cx: &mut Cx<'_>, op: &OperationConfig, route: &RouteKind) {
    if route.member && op.identity.is_empty() {
        cx.err(
            "identity",
            "list the identities this operation accepts: member_id, openid",
        );
    }
    if !route.member && !op.identity.is_empty() {
        cx.err(
            "identity",
            "this route is not about a member: leave `identity` out",
        );
    }
    if route.write && op.effect != Effect::Write {
        cx.err(
            "effect",
            "this operation serves a create or update: set `effect: write` (a write is never retried)",
        );
    }
    if op.cache.is_some() && op.effect == Effect::Write {
        cx.err("cache", "a write operation is never cached");
    }
    check_bounds(cx, op, OPERATION_BOUNDS);
    if let Some(c) = &op.cache
        && c.ttl_ms
            .saturating_add(c.stale_if_error_ms)
            .saturating_add(c.empty_ttl_ms.unwrap_or(0))
            > 30 * DAY_MS
    {
        cx.err(
            "cache",
            "ttl_ms, empty_ttl_ms and stale_if_error_ms together are at most 30 days",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::edited::{ROUTES, compile, error_at};
    use crate::config::load_str;
    use crate::engine::plan::{Credentials, Plan};

    #[test]
    fn the_default_limit_is_between_one_and_the_max_limit() {
        // the shipped max_limit is 500
        for (default, accepted) in [("0", false), ("1", true), ("500", true), ("501", false)] {
            let (text, compiled) = compile(&[(
                "    default_limit: 100",
                &format!("    default_limit: {default}"),
            )]);
            match compiled {
                Ok(_) => assert!(accepted, "default_limit {default} was accepted"),
                Err(errors) => {
                    assert!(!accepted, "default_limit {default}: {errors:#?}");
                    let e = error_at(
                        &errors,
                        "routes.coupons_query.default_limit",
                        &text,
                        "default_limit:",
                    );
                    assert_eq!(e.message, "must be between 1 and max_limit");
                    assert_eq!(errors.len(), 1, "{errors:#?}");
                }
            }
        }
    }

    #[test]
    fn an_attempt_timeout_leaving_no_time_for_a_retry_is_warned_of_only_when_retrying() {
        // op's timeout_ms is 800
        const RETRY: &str = "      max_attempts: 2\n      attempt_timeout_ms: 450";
        for (attempts, attempt_ms, warned) in [(2, 800, true), (2, 799, false), (1, 800, false)] {
            let (_, compiled) = compile(&[(
                RETRY,
                &format!("      max_attempts: {attempts}\n      attempt_timeout_ms: {attempt_ms}"),
            )]);
            let (_, warnings) = compiled.unwrap();
            let w = warnings
                .iter()
                .find(|w| w.path == "vendors.op.retry.attempt_timeout_ms");
            assert_eq!(
                w.is_some(),
                warned,
                "{attempts} attempts of {attempt_ms} ms: {warnings:#?}"
            );
            if let Some(w) = w {
                assert!(w.message.contains("leaves no time to retry"), "{w}");
            }
        }
    }

    #[test]
    fn names_are_lowercase_letters_digits_and_underscores() {
        const CREDS: &str = "      client: ~";
        let (_, compiled) = compile(&[(CREDS, "      client: ~\n      key_2: ~")]);
        let (_, warnings) = compiled.unwrap();
        // declared without a value, like the others: a warning naming its variable
        assert!(
            warnings
                .iter()
                .any(|w| w.message.contains("CGW_VENDORS__OP__CREDENTIALS__KEY_2")),
            "{warnings:#?}"
        );
        for bad in ["Key_2", "key-2", "kéy"] {
            let (text, compiled) = compile(&[(CREDS, &format!("      client: ~\n      {bad}: ~"))]);
            let errors = compiled.unwrap_err();
            let e = error_at(
                &errors,
                &format!("vendors.op.credentials.{bad}"),
                &text,
                &format!("{bad}: ~"),
            );
            assert!(
                e.message
                    .starts_with("a credential name is lowercase letters, digits and `_`"),
                "{e}"
            );
        }
        // a vendor id likewise
        let (_, compiled) = compile(&[("\n  op:\n", "\n  op_2:\n")]);
        compiled.unwrap();
        let (text, compiled) = compile(&[("\n  op:\n", "\n  Op:\n")]);
        let errors = compiled.unwrap_err();
        let e = error_at(&errors, "vendors.Op", &text, "  Op:");
        assert_eq!(
            e.message,
            "a vendor id is lowercase letters, digits and `_`"
        );
    }

    #[test]
    fn credentials_from_the_environment_raise_nothing_and_an_empty_one_is_missing() {
        let mut loaded = load_str("routes.yaml", ROUTES, false).unwrap();
        // as the environment (or the sandbox) fills them in; eight bytes, as hkl's DES key must be
        for v in loaded.config.vendors.values_mut() {
            for value in v.credentials.values_mut() {
                *value = Some("k3y-8byt".to_owned());
            }
        }
        let (_, warnings) = Plan::compile(&loaded, Credentials::Required).unwrap();
        assert!(warnings.is_empty(), "{warnings:#?}");
        // an empty variable sets no credential
        let op = loaded.config.vendors.get_mut("op").unwrap();
        op.credentials
            .insert("secret".to_owned(), Some(String::new()));
        let errors = Plan::compile(&loaded, Credentials::Required).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].path, "vendors.op.credentials.secret");
        assert_eq!(
            errors[0].message,
            "credential `secret` of vendor `op` has no value: set CGW_VENDORS__OP__CREDENTIALS__SECRET"
        );
    }

    #[test]
    fn an_answer_is_kept_thirty_days_at_most_in_all() {
        // op's list_coupons keeps an answer 30 s fresh, an empty one 5 s, and a stale one
        // stale_if_error_ms more
        const STALE: &str = "          stale_if_error_ms: 600000";
        let thirty_days: u64 = 30 * 86_400_000;
        let most = thirty_days - 30_000 - 5_000;
        let (_, compiled) = compile(&[(STALE, &format!("          stale_if_error_ms: {most}"))]);
        compiled.unwrap();
        let (text, compiled) =
            compile(&[(STALE, &format!("          stale_if_error_ms: {}", most + 1))]);
        let errors = compiled.unwrap_err();
        let e = error_at(
            &errors,
            "vendors.op.operations.list_coupons.cache",
            &text,
            "        cache:",
        );
        assert_eq!(
            e.message,
            "ttl_ms, empty_ttl_ms and stale_if_error_ms together are at most 30 days"
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
    }
}
