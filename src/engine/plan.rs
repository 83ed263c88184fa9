//! routes.yaml compiled into an immutable plan. Every JSONPath, template, step chain, enum map
//! and URL is checked and built once, by the passes of `engine::compile`; the request path
//! only follows indexes.
//!
//! [`Plan::compile`] is the dispatcher: per vendor, the policy pass, then per operation the
//! route it serves (from the table in `engine::routes`), the request, the response and the
//! mapping. Every error is gathered (each with its YAML location) instead of stopping at the
//! first, so `coupon-gateway validate` shows the whole list at once.
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use secrecy::SecretString;

use super::compile::scope::OpScope;
use super::compile::{Cx, policy, request, response};
use super::extract::{Condition, ItemMapper, JsonPath};
use super::formats::{AnswerReader, BodyWriter};
use super::routes::{ROUTES, RouteId, RouteKind};
use super::steps::Step;
use super::template::{JsonTemplate, Template};
use crate::config::{
    AuthConfig, ConfigError, IdentityKind, LoadedConfig, OperationConfig, PagingStyle,
    ServerConfig, VendorConfig,
};

/// The compiled configuration. Shared read-only by every request (`Arc<Plan>`).
#[derive(Debug)]
pub struct Plan {
    pub server: ServerConfig,
    /// Vendors in routes.yaml order.
    pub vendors: Vec<Arc<VendorPlan>>,
    /// The vendor operations of each canonical route, indexed by `RouteId`.
    pub routes: Vec<RoutePlan>,
    /// Number of compiled operations (the runtime slots).
    pub operation_count: usize,
    /// Token endpoints by vendor slot.
    pub tokens: Vec<Option<Arc<TokenPlan>>>,
    /// What each vendor and operation was compiled from, by slot: a reload keeps the runtime
    /// state (guard, token cache, response cache) of those whose fingerprint did not change.
    pub fingerprints: Fingerprints,
}

/// SHA-256 of the configuration each vendor (without its operations) and each operation (with
/// its vendor's) was compiled from, credentials included: equal prints mean the compiled
/// behaviour is the same. Only compared within one process, never shown.
#[derive(Debug, Default, Clone)]
pub struct Fingerprints {
    /// By vendor slot.
    pub vendors: Vec<[u8; 32]>,
    /// By operation slot.
    pub operations: Vec<[u8; 32]>,
}

impl Fingerprints {
    /// The vendor's settings apart from its operations: what its guard and token cache are
    /// built from. `Debug` renders every value of the (plain data) config types, so it is a
    /// faithful, if unpretty, serialisation for a same-process comparison.
    fn vendor(id: &str, v: &VendorConfig) -> [u8; 32] {
        use sha2::Digest;
        let mut without_ops = v.clone();
        without_ops.operations.clear();
        sha2::Sha256::digest(format!("{id}\u{1f}{without_ops:?}").as_bytes()).into()
    }

    /// An operation's answers depend on its own settings, the route it serves and its vendor.
    fn operation(vendor: &[u8; 32], name: &str, route: RouteId, op: &OperationConfig) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(vendor);
        h.update(format!("{name}\u{1f}{route:?}\u{1f}{op:?}").as_bytes());
        h.finalize().into()
    }
}

/// A canonical route and the vendor operations that serve it, in routes.yaml order.
#[derive(Debug)]
pub struct RoutePlan {
    pub id: RouteId,
    pub operation: String,
    pub default_limit: usize,
    pub max_limit: usize,
    pub targets: Vec<Arc<OperationPlan>>,
}

#[derive(Debug)]
pub struct VendorPlan {
    pub id: String,
    pub display_name: Option<String>,
    /// `scheme://authority` plus any base path, without a trailing slash.
    pub base_url: String,
    /// `scheme://authority`, for resolving relative links in answers.
    pub origin: String,
    /// The path part of `base_url` (`""` or `/prefix`), part of what a vendor signs.
    pub base_path: String,
    pub timeout: Duration,
    pub operations: Vec<String>,
    /// Index of this vendor's guard (breaker, limits, retry budget) in `AppState`.
    pub slot: usize,
    pub retry: crate::config::RetryConfig,
    pub circuit: Option<crate::config::CircuitConfig>,
    pub limits: Option<crate::config::LimitsConfig>,
    /// Send the caller's W3C trace context to this vendor (`propagate_trace`).
    pub propagate_trace: bool,
}

/// How to build (and sign) one request: an operation's, or a token endpoint's.
#[derive(Debug)]
pub struct RequestPlan {
    pub vendor: Arc<VendorPlan>,
    pub credentials: Vec<SecretString>,
    pub method: Method,
    pub path: Template,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(HeaderName, Template)>,
    pub body: Option<JsonTemplate>,
    /// How the body is written (`request.format`).
    pub body_format: Arc<dyn BodyWriter>,
    /// How answers are read (`response.format`; JSON for token endpoints).
    pub answer_format: Arc<dyn AnswerReader>,
    pub steps: Vec<Step>,
    /// Steps before this index run before the request is rendered; the rest sign it.
    pub render_at: usize,
    pub var_count: usize,
    /// Value maps of `| map:NAME`, by index.
    pub maps: Vec<std::collections::HashMap<String, String>>,
    /// Whether a template sends `{{auth.token}}`.
    pub uses_auth: bool,
    /// How the attempt's clock is written, for each `Ref::Now(i)`.
    pub clock: Vec<crate::engine::time::Rendering>,
}

/// A vendor's token endpoint.
#[derive(Debug)]
pub struct TokenPlan {
    pub request: RequestPlan,
    pub token: JsonPath,
    pub expires_in: JsonPath,
    pub refresh_before: Duration,
}

/// One vendor operation, ready to run.
#[derive(Debug)]
pub struct OperationPlan {
    pub vendor: Arc<VendorPlan>,
    pub name: String,
    pub identity: Vec<IdentityKind>,
    pub request: RequestPlan,
    pub response: ResponsePlan,
    pub paging: Option<PagingPlan>,
    pub mapper: ItemMapper,
    /// The members of an answer this operation reads (None: it reads whole answers).
    pub projection: Option<super::projection::Projection>,
    pub cache: Option<crate::config::CacheConfig>,
    pub effect: crate::config::Effect,
    /// Index of this operation's runtime state (its cache) in `AppState`.
    pub slot: usize,
}

#[derive(Debug)]
pub struct ResponsePlan {
    /// Encrypted members decrypted before anything reads the answer.
    pub decrypt: Vec<super::decrypt::Decrypt>,
    pub error_fields: Option<JsonPath>,
    pub page_info: Option<[JsonPath; 4]>,
    pub success: Vec<Condition>,
    pub empty: Vec<Condition>,
    pub not_found: Vec<Condition>,
    pub rate_limited: Vec<Condition>,
    pub error_code: Option<JsonPath>,
    pub error_message: Option<JsonPath>,
    pub items: JsonPath,
}

#[derive(Debug)]
pub struct PagingPlan {
    pub style: PagingStyle,
    pub first_page: u64,
    pub page_size: u64,
    pub max_pages: u32,
    pub has_more: Option<JsonPath>,
    pub total_items: Option<JsonPath>,
    pub total_pages: Option<JsonPath>,
    pub next_cursor: Option<JsonPath>,
}

/// Whether a credential without a value stops compilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// Serving: every declared credential must have a value.
    Required,
    /// `validate`: the file is checked, values may come later from the environment.
    Optional,
}

impl RoutePlan {
    /// The operation of `vendor` on this route.
    pub fn of(&self, vendor: &str) -> Option<&Arc<OperationPlan>> {
        self.targets.iter().find(|op| op.vendor.id == vendor)
    }
}

impl Plan {
    pub fn route(&self, id: RouteId) -> &RoutePlan {
        &self.routes[id as usize]
    }

    /// Every compiled operation, for building runtime state by slot.
    pub fn operations(&self) -> impl Iterator<Item = &Arc<OperationPlan>> {
        self.routes.iter().flat_map(|r| &r.targets)
    }

    /// Compiles a loaded configuration. On failure, every error found.
    /// Warnings (missing credentials under `Credentials::Optional`, doubtful settings) come
    /// back with the plan.
    pub fn compile(
        loaded: &LoadedConfig,
        credentials: Credentials,
    ) -> Result<(Plan, Vec<ConfigError>), Vec<ConfigError>> {
        let cfg = &loaded.config;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        policy::check_server(loaded, &mut errors);
        let mut targets: Vec<Vec<Arc<OperationPlan>>> = ROUTES.iter().map(|_| Vec::new()).collect();
        let mut vendors = Vec::new();
        let mut tokens = Vec::new();
        let mut slots = 0;
        let mut fingerprints = Fingerprints::default();
        for id in loaded.index.order("vendors", cfg.vendors.keys()) {
            let v = &cfg.vendors[&id];
            let slot = vendors.len();
            let vendor_print = Fingerprints::vendor(&id, v);
            let Some(vendor) = policy::vendor(loaded, slot, &id, v, &mut errors, &mut warnings)
            else {
                continue;
            };
            let secrets =
                policy::credentials(loaded, &id, v, credentials, &mut errors, &mut warnings);
            tokens.push(v.auth.as_ref().and_then(|auth| {
                let mut cx = Cx::new(loaded, format!("vendors.{id}.auth.token"));
                let plan = token(&mut cx, &vendor, v, auth, secrets.clone());
                errors.append(&mut cx.errors);
                plan.map(Arc::new)
            }));
            for (name, op) in &v.operations {
                let mut cx = Cx::new(loaded, format!("vendors.{id}.operations.{name}"));
                let Some(route) = ROUTES.iter().find(|r| r.id.operation(&cfg.routes) == name)
                else {
                    let used: Vec<&str> =
                        ROUTES.iter().map(|r| r.id.operation(&cfg.routes)).collect();
                    cx.err(
                        "",
                        format!(
                            "no canonical route uses operation `{name}` (routes use: {})",
                            used.join(", ")
                        ),
                    );
                    errors.append(&mut cx.errors);
                    continue;
                };
                if let Some(mut plan) =
                    operation(&mut cx, &vendor, v, name, op, route, secrets.clone())
                {
                    plan.slot = slots;
                    slots += 1;
                    fingerprints.operations.push(Fingerprints::operation(
                        &vendor_print,
                        name,
                        route.id,
                        op,
                    ));
                    targets[route.id as usize].push(Arc::new(plan));
                }
                errors.append(&mut cx.errors);
            }
            vendors.push(vendor);
            fingerprints.vendors.push(vendor_print);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let q = &cfg.routes.coupons_query;
        let routes = ROUTES
            .iter()
            .zip(targets)
            .map(|(r, targets)| {
                let (default_limit, max_limit) = match r.id {
                    RouteId::CouponsQuery => (q.default_limit, q.max_limit),
                    _ => (1, 1),
                };
                RoutePlan {
                    id: r.id,
                    operation: r.id.operation(&cfg.routes).to_owned(),
                    default_limit,
                    max_limit,
                    targets,
                }
            })
            .collect();
        let plan = Plan {
            server: cfg.server.clone(),
            vendors,
            routes,
            operation_count: slots,
            tokens,
            fingerprints,
        };
        Ok((plan, warnings))
    }
}

/// One vendor operation: policy, request, response, mapping.
fn operation(
    cx: &mut Cx<'_>,
    vendor: &Arc<VendorPlan>,
    v: &VendorConfig,
    name: &str,
    op: &OperationConfig,
    route: &RouteKind,
    credentials: Vec<SecretString>,
) -> Option<OperationPlan> {
    policy::operation(cx, op, route);
    let scope = OpScope {
        creds: v.credentials.keys().map(String::as_str).collect(),
        cred_values: &credentials,
        identity: &op.identity,
        inputs: route.inputs,
        vars: Vec::new(),
        paging: op.paging.as_ref().map(|p| p.style),
        in_step: true,
        maps: op.maps.keys().map(String::as_str).collect(),
        auth: v.auth.is_some(),
        clock: Default::default(),
    };
    let source = request::Source {
        request: &op.request,
        steps: &op.steps,
        maps: &op.maps,
        answer_format: op.response.format.as_deref(),
    };
    let request = request::compile(cx, vendor, credentials.clone(), source, scope);
    let creds = super::decrypt::CredScope {
        names: v.credentials.keys().map(String::as_str).collect(),
        values: &credentials,
    };
    let response = response::envelope(cx, op, &creds);
    let paging = op.paging.as_ref().and_then(|p| response::paging(cx, p));
    let mapper = response::mapper(cx, op, route.schema, &vendor.origin);
    if !cx.errors.is_empty() {
        return None;
    }
    let (response, mut mapper) = (response?, mapper?);
    let projection = super::projection::Projection::of(&response, paging.as_ref(), &mut mapper);
    Some(OperationPlan {
        vendor: vendor.clone(),
        name: name.to_owned(),
        identity: op.identity.clone(),
        request: request?,
        response,
        paging,
        projection,
        mapper,
        cache: op.cache.clone(),
        effect: op.effect,
        slot: 0,
    })
}

/// A vendor's token endpoint: a request like any other (no steps, no member, no inputs), and
/// where its answer holds the token and its lifetime.
fn token(
    cx: &mut Cx<'_>,
    vendor: &Arc<VendorPlan>,
    v: &VendorConfig,
    auth: &AuthConfig,
    credentials: Vec<SecretString>,
) -> Option<TokenPlan> {
    let t = &auth.token;
    let scope = OpScope {
        creds: v.credentials.keys().map(String::as_str).collect(),
        cred_values: &credentials,
        identity: &[],
        inputs: &[],
        vars: Vec::new(),
        paging: None,
        in_step: true,
        maps: Vec::new(),
        auth: false,
        clock: Default::default(),
    };
    let token = cx.path(&t.token, "token");
    let expires_in = cx.path(&t.expires_in, "expires_in");
    let no_maps = Default::default();
    let source = request::Source {
        request: &t.request,
        steps: &[],
        maps: &no_maps,
        answer_format: None,
    };
    let request = request::compile(cx, vendor, credentials.clone(), source, scope);
    Some(TokenPlan {
        request: request?,
        token: token?,
        expires_in: expires_in?,
        refresh_before: Duration::from_millis(t.refresh_before_ms),
    })
}

/// Test support: the plan of one vendor `v` (at `http://127.0.0.1:9`) with one `list_coupons`
/// operation, whose settings (indented by eight spaces) are `operation`; the compile errors,
/// as text, when it does not compile.
#[cfg(test)]
pub(crate) fn one_operation(operation: &str) -> Result<Plan, Vec<String>> {
    let yaml = format!(
        "server: {{listen: \"127.0.0.1:0\"}}\nroutes: {{coupons_query: {{operation: list_coupons}}}}\n\
         vendors:\n  v:\n    base_url: http://127.0.0.1:9\n    operations:\n      list_coupons:\n\
         {operation}"
    );
    let text = |errors: Vec<ConfigError>| errors.iter().map(ToString::to_string).collect();
    let loaded = crate::config::load_str("test.yaml", &yaml, false).map_err(text)?;
    Plan::compile(&loaded, Credentials::Required)
        .map(|(plan, _)| plan)
        .map_err(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const ROUTES: &str = include_str!("../../routes.yaml");

    fn compile(text: &str) -> Result<(Plan, Vec<ConfigError>), Vec<ConfigError>> {
        let loaded = load_str("routes.yaml", text, false)?;
        Plan::compile(&loaded, Credentials::Optional)
    }

    #[test]
    fn the_shipped_routes_compile_in_file_order() {
        let (plan, warnings) = compile(ROUTES).unwrap();
        let ids: Vec<&str> = plan.vendors.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["op", "hkl", "zvcms", "wxcard"]);
        let targets: Vec<&str> = plan
            .route(RouteId::CouponsQuery)
            .targets
            .iter()
            .map(|t| t.vendor.id.as_str())
            .collect();
        assert_eq!(targets, ["op", "hkl", "zvcms"]);
        // every credential is declared without a value: one warning each, naming its variable
        assert_eq!(warnings.len(), 9, "{warnings:?}");
        assert!(warnings.iter().any(|w| {
            w.message
                .contains("CGW_VENDORS__ZVCMS__CREDENTIALS__GRANT_CODE")
        }));
        // serving refuses to start without them
        let loaded = load_str("routes.yaml", ROUTES, false).unwrap();
        let errors = Plan::compile(&loaded, Credentials::Required).unwrap_err();
        assert_eq!(errors.len(), 9);
        assert!(
            errors[0].to_string().starts_with("routes.yaml:"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn mistakes_are_all_reported_with_their_lines() {
        let broken = ROUTES
            .replace("items: $.data.list", "items: $.data[?(@.x == )]")
            .replace("\"{{cred.secret}}{{request", "\"{{cred.secrt}}{{request")
            .replace("\"2\": discount}", "\"2\": coupon}")
            .replace("apply: [md5, hex_lower]", "apply: [md5]");
        let errors = compile(&broken).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let find = |needle: &str| {
            text.iter()
                .find(|t| t.contains(needle))
                .unwrap_or_else(|| panic!("no error about {needle}: {text:#?}"))
                .clone()
        };
        let line_of = |needle: &str| ROUTES.lines().position(|l| l.contains(needle)).unwrap() + 1;
        assert!(
            find("bad JSONPath")
                .starts_with(&format!("routes.yaml:{}:", line_of("items: $.data.list")))
        );
        assert!(find("no credential `secrt`").contains("declared: client, secret"));
        assert!(find("not a canonical kind").contains("fields.kind.map.2"));
        assert!(find("ends in raw bytes").contains("steps.0.apply"));
    }

    #[test]
    fn quiet_mistakes_are_caught_too() {
        let cases = [
            (
                "method: POST\n          path: /op",
                "method: PSOT\n          path: /op",
                "not one of GET",
            ),
            (
                "kind: {path: $.cpnType, map: {\"0\": cash}, default: other}",
                "kind: {value: coupon}",
                "not a canonical kind",
            ),
            (
                "kind: {path: $.cpnType, map: {\"0\": cash}, default: other}",
                "kind: {first_of: [$.cpnType], map: {\"0\": cash}}",
                "beside `first_of`",
            ),
            (
                "            into: {query: sign}",
                "            into: {var: sign}\n          - name: again\n            input: x\n            apply: [md5, hex_lower]\n            into: {var: sign}",
                "already puts its result",
            ),
            ("      client: ~", "      Client: ~", "lowercase"),
            (
                "  max_concurrency: 1024",
                "  max_concurrency: 0",
                "must be between 1 and 1000000",
            ),
            (
                "        effect: write              # never retried: a blind retry creates a second template\n",
                "",
                "set `effect: write`",
            ),
        ];
        let bounds = [
            (
                "      max_attempts: 2",
                "      max_attempts: 11",
                "must be between 1 and 10 (1 = no retry)",
            ),
            (
                "      min_calls: 20",
                "      min_calls: 0",
                "must be between 1 and 1000000",
            ),
            (
                "      half_open_probes: 2",
                "      half_open_probes: 0",
                "must be between 1 and 1000",
            ),
            (
                "          ttl_ms: 30000",
                "          ttl_ms: 0",
                "leave `cache` out for no cache",
            ),
        ];
        for (from, to, want) in cases.into_iter().chain(bounds) {
            assert!(ROUTES.contains(from), "fixture text moved: {from}");
            let errors = compile(&ROUTES.replacen(from, to, 1)).unwrap_err();
            assert!(
                errors.iter().any(|e| e.message.contains(want)),
                "{want}: {errors:#?}"
            );
        }
    }

    #[test]
    fn a_des_key_of_known_credentials_is_checked_when_compiling() {
        let text = ROUTES.replacen("des_key: ~", "des_key: short", 1);
        let errors = compile(&text).unwrap_err();
        let e = errors
            .iter()
            .find(|e| e.message.contains("8 bytes"))
            .unwrap_or_else(|| panic!("{errors:#?}"));
        assert!(e.path.contains("hkl") && e.path.contains("apply"), "{e:?}");
        assert!(
            !e.to_string().contains("short"),
            "the credential is not in the message"
        );
        // an 8-byte key compiles
        compile(&ROUTES.replacen("des_key: ~", "des_key: hklkey01", 1)).unwrap();
    }

    #[test]
    fn an_attempt_timeout_over_the_call_timeout_is_a_warning_not_an_error() {
        // an SRE lowering timeout_ms during an incident must not keep the gateway from starting
        let text = ROUTES.replacen("    timeout_ms: 800\n", "    timeout_ms: 300\n", 1);
        assert_ne!(text, ROUTES, "fixture text moved");
        let (_, warnings) = compile(&text).unwrap();
        let w = warnings
            .iter()
            .find(|w| w.path.ends_with("retry.attempt_timeout_ms"))
            .unwrap_or_else(|| panic!("{warnings:#?}"));
        assert!(w.message.contains("the call deadline caps it"), "{w:?}");
    }

    #[test]
    fn a_bad_shared_tier_is_refused_with_its_location() {
        let text = ROUTES.replacen(
            "  header_read_timeout_ms: 10000",
            "  header_read_timeout_ms: 10000\n  shared:\n    redis_url: http://127.0.0.1:6379",
            1,
        );
        assert_ne!(text, ROUTES, "fixture text moved");
        let errors = compile(&text).unwrap_err();
        assert!(
            errors.iter().any(|e| e.path == "server.shared.redis_url"),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_credential_written_in_the_file_is_a_warning() {
        let (_, warnings) = compile(&ROUTES.replace(
            "      secret: ~                    # CGW_VENDORS__OP",
            "      secret: hunter2 # CGW_VENDORS__OP",
        ))
        .unwrap();
        let w = warnings
            .iter()
            .find(|w| w.path == "vendors.op.credentials.secret")
            .unwrap();
        assert!(w.message.contains("has a value in the file"), "{w}");
        assert!(!w.to_string().contains("hunter2"));
    }

    #[test]
    fn unused_operations_and_bad_urls_are_errors() {
        let extra = ROUTES.replace(
            "    operations:\n      list_coupons:\n        identity: [member_id]      #",
            "    operations:\n      list_coupon:\n        identity: [member_id]      #",
        );
        let errors = compile(&extra).unwrap_err();
        assert!(
            errors[0]
                .message
                .contains("no canonical route uses operation `list_coupon`"),
            "{errors:?}"
        );
        let bad_url = ROUTES.replace(
            "base_url: http://crm.houcaller.com",
            "base_url: crm.houcaller.com",
        );
        let errors = compile(&bad_url).unwrap_err();
        assert!(errors[0].message.contains("absolute http"), "{errors:?}");
    }
}
