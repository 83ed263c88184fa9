//! routes.yaml compiled into an immutable plan. Every JSONPath, template, step chain, enum map
//! and URL is checked and built here, once; the request path only follows indexes.
//!
//! Compilation gathers every error (each with its YAML location) instead of stopping at the
//! first, so `coupon-gateway validate` shows the whole list at once.
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use secrecy::SecretString;

use super::extract::{Condition, FieldSpec, ItemMapper, JsonPath};
use super::steps::{Step, Target};
use super::template::{JsonTemplate, Member, Ref, Scope, Template};
use crate::canonical::schema::{self, FieldDef};
use crate::config::load::env_var_for;
use crate::config::{
    ConditionConfig, ConfigError, IdentityKind, LoadedConfig, OperationConfig, PagingStyle,
    Placement, ServerConfig, VendorConfig,
};

/// The compiled configuration. Shared read-only by every request (`Arc<Plan>`).
#[derive(Debug)]
pub struct Plan {
    pub server: ServerConfig,
    /// Vendors in routes.yaml order.
    pub vendors: Vec<Arc<VendorPlan>>,
    pub coupons_query: RoutePlan,
    /// `GET /v1/packages/{vendor}/{package_id}`.
    pub package_get: RoutePlan,
    /// `POST /v1/templates`, `GET /v1/templates`, `PUT /v1/templates/{vendor}/{id}`.
    pub templates_create: RoutePlan,
    pub templates_list: RoutePlan,
    pub templates_update: RoutePlan,
    /// Number of compiled operations (the runtime slots).
    pub operation_count: usize,
    /// Token endpoints by vendor slot.
    pub tokens: Vec<Option<Arc<TokenPlan>>>,
}

/// A canonical route and the vendor operations that serve it, in routes.yaml order.
#[derive(Debug)]
pub struct RoutePlan {
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
    pub steps: Vec<Step>,
    /// Steps before this index run before the request is rendered; the rest sign it.
    pub render_at: usize,
    pub var_count: usize,
    /// Value maps of `| map:NAME`, by index.
    pub maps: Vec<std::collections::HashMap<String, String>>,
    /// Whether a template sends `{{auth.token}}`.
    pub uses_auth: bool,
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
    pub cache: Option<crate::config::CacheConfig>,
    pub effect: crate::config::Effect,
    /// Index of this operation's runtime state (its cache) in `AppState`.
    pub slot: usize,
}

#[derive(Debug)]
pub struct ResponsePlan {
    pub error_fields: Option<JsonPath>,
    pub page_info: Option<[JsonPath; 4]>,
    pub success: Vec<Condition>,
    pub empty: Vec<Condition>,
    pub not_found: Vec<Condition>,
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

/// The canonical routes this gateway serves: their vendor operation comes from `routes:`,
/// and each fixes the schema its vendors map to and the inputs their templates may use.
struct RouteKind {
    schema: &'static [FieldDef],
    inputs: &'static [&'static str],
    /// The route asks about a member, so its operations say which identities they accept.
    member: bool,
    /// Its templates may send the vendor's `{{auth.token}}` (all but the token request).
    auth_token: bool,
    /// The route changes data at the vendor: its operations must say `effect: write`, so
    /// that nothing ever retries or caches them.
    write: bool,
}

const COUPONS_QUERY: RouteKind = RouteKind {
    schema: schema::COUPON,
    inputs: &[],
    member: true,
    auth_token: true,
    write: false,
};

const TEMPLATES_CREATE: RouteKind = RouteKind {
    schema: schema::TEMPLATE,
    inputs: &["kind", "begin_at", "end_at", "sync", "card"],
    member: false,
    auth_token: true,
    write: true,
};

const TEMPLATES_LIST: RouteKind = RouteKind {
    schema: schema::TEMPLATE,
    inputs: &["kind", "active_on", "page", "per_page"],
    member: false,
    auth_token: true,
    write: false,
};

const TEMPLATES_UPDATE: RouteKind = RouteKind {
    schema: schema::TEMPLATE,
    inputs: &["id", "kind", "begin_at", "end_at", "sync", "card"],
    member: false,
    auth_token: true,
    write: true,
};

/// The token endpoint, compiled like an operation without fields.
const TOKEN: RouteKind = RouteKind {
    schema: &[],
    inputs: &[],
    member: false,
    auth_token: false,
    write: false,
};

const PACKAGE_GET: RouteKind = RouteKind {
    schema: schema::PACKAGE,
    inputs: &["package_id"],
    member: false,
    auth_token: true,
    write: false,
};

impl RoutePlan {
    fn single(operation: &str, targets: Vec<Arc<OperationPlan>>) -> RoutePlan {
        RoutePlan {
            operation: operation.to_owned(),
            default_limit: 1,
            max_limit: 1,
            targets,
        }
    }

    /// The operation of `vendor` on this route.
    pub fn of(&self, vendor: &str) -> Option<&Arc<OperationPlan>> {
        self.targets.iter().find(|op| op.vendor.id == vendor)
    }
}

impl Plan {
    /// Every compiled operation, for building runtime state by slot.
    pub fn operations(&self) -> impl Iterator<Item = &Arc<OperationPlan>> {
        self.coupons_query
            .targets
            .iter()
            .chain(&self.package_get.targets)
            .chain(&self.templates_create.targets)
            .chain(&self.templates_list.targets)
            .chain(&self.templates_update.targets)
    }

    /// Compiles a loaded configuration. On failure, every error found.
    /// Warnings (missing credentials under `Credentials::Optional`) come back with the plan.
    pub fn compile(
        loaded: &LoadedConfig,
        credentials: Credentials,
    ) -> Result<(Plan, Vec<ConfigError>), Vec<ConfigError>> {
        let cfg = &loaded.config;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let server = &cfg.server;
        for (key, ok) in [
            ("server.body_limit_bytes", server.body_limit_bytes > 0),
            ("server.request_timeout_ms", server.request_timeout_ms > 0),
            ("server.max_concurrency", server.max_concurrency > 0),
            (
                "server.max_vendor_response_bytes",
                server.max_vendor_response_bytes > 0,
            ),
        ] {
            if !ok {
                errors.push(loaded.error(key, "must be more than 0"));
            }
        }
        let route = &cfg.routes.coupons_query;
        if route.default_limit == 0 || route.default_limit > route.max_limit {
            errors.push(loaded.error(
                "routes.coupons_query.default_limit",
                "must be between 1 and max_limit",
            ));
        }
        let order = loaded.index.order("vendors", cfg.vendors.keys());
        let mut vendors = Vec::new();
        let mut targets = Vec::new();
        let mut package_targets = Vec::new();
        let (mut create_targets, mut list_targets, mut update_targets) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut tokens = Vec::new();
        let mut slots = 0;
        for id in order {
            let v = &cfg.vendors[&id];
            let path = format!("vendors.{id}");
            if !valid_vendor_id(&id) {
                errors
                    .push(loaded.error(&path, "a vendor id is lowercase letters, digits and `_`"));
                continue;
            }
            let Some(vendor) = compile_vendor(loaded, vendors.len(), &id, v, &mut errors) else {
                continue;
            };
            let secrets = credentials_of(loaded, &id, v, credentials, &mut errors, &mut warnings);
            tokens.push(v.auth.as_ref().and_then(|auth| {
                let mut cx = OpCompiler {
                    loaded,
                    vendor: &vendor,
                    cfg: v,
                    path: format!("{path}.auth.token"),
                    errors: Vec::new(),
                };
                let plan = cx.token(auth, secrets.clone());
                errors.append(&mut cx.errors);
                plan.map(Arc::new)
            }));
            for (name, op) in &v.operations {
                let op_path = format!("{path}.operations.{name}");
                let routes = &cfg.routes;
                let (kind, list) = if *name == route.operation {
                    (&COUPONS_QUERY, &mut targets)
                } else if *name == routes.package_get.operation {
                    (&PACKAGE_GET, &mut package_targets)
                } else if *name == routes.templates_create.operation {
                    (&TEMPLATES_CREATE, &mut create_targets)
                } else if *name == routes.templates_list.operation {
                    (&TEMPLATES_LIST, &mut list_targets)
                } else if *name == routes.templates_update.operation {
                    (&TEMPLATES_UPDATE, &mut update_targets)
                } else {
                    errors.push(loaded.error(
                        &op_path,
                        format!(
                            "no canonical route uses operation `{name}` (routes use: {}, {}, {}, {}, {})",
                            route.operation,
                            routes.package_get.operation,
                            routes.templates_create.operation,
                            routes.templates_list.operation,
                            routes.templates_update.operation
                        ),
                    ));
                    continue;
                };
                let mut cx = OpCompiler {
                    loaded,
                    vendor: &vendor,
                    cfg: v,
                    path: op_path,
                    errors: Vec::new(),
                };
                if let Some(mut plan) = cx.compile(name, op, kind, secrets.clone()) {
                    plan.slot = slots;
                    slots += 1;
                    list.push(Arc::new(plan));
                }
                errors.append(&mut cx.errors);
            }
            vendors.push(vendor);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let plan = Plan {
            server: cfg.server.clone(),
            vendors,
            coupons_query: RoutePlan {
                operation: route.operation.clone(),
                default_limit: route.default_limit,
                max_limit: route.max_limit,
                targets,
            },
            package_get: RoutePlan::single(&cfg.routes.package_get.operation, package_targets),
            templates_create: RoutePlan::single(
                &cfg.routes.templates_create.operation,
                create_targets,
            ),
            templates_list: RoutePlan::single(&cfg.routes.templates_list.operation, list_targets),
            templates_update: RoutePlan::single(
                &cfg.routes.templates_update.operation,
                update_targets,
            ),
            operation_count: slots,
            tokens,
        };
        Ok((plan, warnings))
    }
}

fn valid_vendor_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn compile_vendor(
    loaded: &LoadedConfig,
    slot: usize,
    id: &str,
    v: &VendorConfig,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<VendorPlan>> {
    let path = format!("vendors.{id}.base_url");
    let base = v.base_url.trim_end_matches('/');
    let uri = match Uri::from_str(base) {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            errors.push(loaded.error(&path, "must be an absolute http:// or https:// URL"));
            return None;
        }
    };
    if uri.query().is_some() {
        errors.push(loaded.error(&path, "must not carry a query string"));
        return None;
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // it would be shown by GET /v1/vendors and in resolved image URLs
        errors.push(loaded.error(
            &path,
            "must not carry a user or password: use `credentials`",
        ));
        return None;
    }
    const DAY_MS: u64 = 86_400_000;
    for (key, value, max) in [
        ("timeout_ms", v.timeout_ms, 10 * 60_000),
        (
            "retry.attempt_timeout_ms",
            v.retry.attempt_timeout_ms,
            10 * 60_000,
        ),
        ("retry.backoff_ms", v.retry.backoff_ms, 60_000),
        (
            "retry.budget_percent",
            u64::from(v.retry.budget_percent),
            100,
        ),
        (
            "circuit.open_ms",
            v.circuit.as_ref().map_or(0, |c| c.open_ms),
            DAY_MS,
        ),
        (
            "circuit.window_ms",
            v.circuit.as_ref().map_or(0, |c| c.window_ms),
            DAY_MS,
        ),
        (
            "limits.queue_ms",
            v.limits.as_ref().map_or(0, |l| l.queue_ms),
            60_000,
        ),
        (
            "auth.token.refresh_before_ms",
            v.auth.as_ref().map_or(0, |a| a.token.refresh_before_ms),
            DAY_MS,
        ),
    ] {
        if value > max {
            errors.push(loaded.error(
                &format!("vendors.{id}.{key}"),
                format!("must be at most {max}"),
            ));
        }
    }
    if v.timeout_ms == 0 {
        errors.push(loaded.error(&format!("vendors.{id}.timeout_ms"), "must be more than 0"));
    }
    if v.retry.max_attempts == 0 {
        errors.push(loaded.error(
            &format!("vendors.{id}.retry.max_attempts"),
            "is at least 1 (1 = no retry)",
        ));
    }
    if v.retry.max_attempts > 1 && v.retry.attempt_timeout_ms >= v.timeout_ms {
        errors.push(loaded.error(
            &format!("vendors.{id}.retry.attempt_timeout_ms"),
            "set it below timeout_ms, or a timed-out attempt leaves no time to retry",
        ));
    }
    if let Some(c) = &v.circuit
        && (c.failure_rate_percent == 0
            || c.failure_rate_percent > 100
            || c.open_ms == 0
            || c.window_ms == 0)
    {
        errors.push(loaded.error(
            &format!("vendors.{id}.circuit"),
            "failure_rate_percent is 1–100; open_ms and window_ms are more than 0",
        ));
    }
    let origin = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Some(Arc::new(VendorPlan {
        id: id.to_owned(),
        display_name: v.display_name.clone(),
        base_url: base.to_owned(),
        origin,
        base_path,
        timeout: Duration::from_millis(v.timeout_ms),
        operations: v.operations.keys().cloned().collect(),
        slot,
        retry: v.retry.clone(),
        circuit: v.circuit.clone(),
        limits: v.limits.clone(),
    }))
}

/// Credential values in declaration order (sorted by name), checked for presence.
fn credentials_of(
    loaded: &LoadedConfig,
    id: &str,
    v: &VendorConfig,
    mode: Credentials,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<SecretString> {
    for (name, value) in &v.credentials {
        let path = format!("vendors.{id}.credentials.{name}");
        if !valid_vendor_id(name) {
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

/// Compiles one operation of one vendor.
struct OpCompiler<'a> {
    loaded: &'a LoadedConfig,
    vendor: &'a Arc<VendorPlan>,
    cfg: &'a VendorConfig,
    path: String,
    errors: Vec<ConfigError>,
}

/// Name resolution for one operation.
struct OpScope<'a> {
    creds: Vec<&'a str>,
    /// Credential values, so keys made of them are prepared once (empty ones are not known).
    cred_values: &'a [SecretString],
    identity: &'a [IdentityKind],
    inputs: &'static [&'static str],
    /// Variables visible here (defined by earlier steps).
    vars: Vec<String>,
    paging: Option<PagingStyle>,
    in_step: bool,
    /// Names of the operation's value maps.
    maps: Vec<&'a str>,
    /// The vendor has token-endpoint auth (and this is not the token request itself).
    auth: bool,
}

impl Scope for OpScope<'_> {
    fn fixed(&self, r: Ref) -> Option<std::borrow::Cow<'_, str>> {
        use secrecy::ExposeSecret;
        match r {
            Ref::Cred(i) => self
                .cred_values
                .get(i)
                .map(|c| c.expose_secret())
                .filter(|c| !c.is_empty())
                .map(std::borrow::Cow::Borrowed),
            _ => None,
        }
    }

    fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| *m == name)
    }

    fn resolve(&self, name: &str) -> Result<Ref, String> {
        let (ns, rest) = name.split_once('.').unwrap_or((name, ""));
        match (ns, rest) {
            ("member", "id") | ("member", "openid") => {
                let (kind, r) = if rest == "id" {
                    (IdentityKind::MemberId, Ref::MemberId)
                } else {
                    (IdentityKind::Openid, Ref::MemberOpenid)
                };
                if self.identity.contains(&kind) {
                    Ok(r)
                } else {
                    Err(format!(
                        "`{name}` is used but the operation's `identity` does not list `{}`",
                        if rest == "id" { "member_id" } else { "openid" }
                    ))
                }
            }
            ("cred", c) => self
                .creds
                .iter()
                .position(|n| *n == c)
                .map(Ref::Cred)
                .ok_or_else(|| {
                    format!(
                        "`{name}`: the vendor declares no credential `{c}` (declared: {})",
                        list(&self.creds)
                    )
                }),
            ("input", i) => self
                .inputs
                .iter()
                .position(|n| *n == i)
                .map(Ref::Input)
                .ok_or_else(|| format!("`{name}`: this route has no input `{i}` (inputs: {})", list(self.inputs))),
            ("now", "s") => Ok(Ref::NowS),
            ("now", "ms") => Ok(Ref::NowMs),
            ("now", "rfc3339") => Ok(Ref::NowRfc3339),
            ("now", "date") => Ok(Ref::NowDate),
            ("nonce", "") => Ok(Ref::Nonce),
            ("var", v) => self
                .vars
                .iter()
                .position(|n| n == v)
                .map(Ref::Var)
                .ok_or_else(|| {
                    format!("`{name}`: no earlier step puts a result `into: {{var: {v}}}` before this point")
                }),
            ("page", p) => match (self.paging, p) {
                (None, _) => Err(format!("`{name}` needs a `paging:` section")),
                (Some(_), "size") => Ok(Ref::PageSize),
                (Some(PagingStyle::PageNumber), "number") => Ok(Ref::PageNumber),
                (Some(PagingStyle::Cursor), "cursor") => Ok(Ref::PageCursor),
                (Some(style), _) => Err(format!(
                    "`{name}` is not available with paging style {}",
                    match style {
                        PagingStyle::PageNumber => "page_number (use page.number, page.size)",
                        PagingStyle::Cursor => "cursor (use page.cursor, page.size)",
                    }
                )),
            },
            ("request", r) if self.in_step => match r {
                "method" => Ok(Ref::RequestMethod),
                "path" => Ok(Ref::RequestPath),
                "body" => Ok(Ref::RequestBody),
                "query.sorted_namevalue" => Ok(Ref::QuerySortedNameValue),
                "query.sorted_pairs" => Ok(Ref::QuerySortedPairs),
                "query.sorted_pairs_encoded" => Ok(Ref::QuerySortedPairsEncoded),
                _ => Err(format!(
                    "unknown `{name}` (known: request.method, request.path, request.body, request.query.sorted_namevalue, request.query.sorted_pairs, request.query.sorted_pairs_encoded)"
                )),
            },
            ("request", _) => Err(format!("`{name}` is only available in signing steps")),
            ("auth", "token") if self.auth => Ok(Ref::AuthToken),
            ("auth", _) => Err(format!(
                "`{name}` needs the vendor's `auth: {{token: …}}` (and is not available in the token request itself)"
            )),
            _ => Err(format!(
                "unknown name `{name}` (namespaces: member, cred, input, now, nonce, var, page, request, auth)"
            )),
        }
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

impl OpCompiler<'_> {
    fn err(&mut self, sub: &str, message: impl Into<String>) {
        let path = if sub.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{sub}", self.path)
        };
        self.errors.push(self.loaded.error(&path, message));
    }

    fn compile(
        &mut self,
        name: &str,
        op: &OperationConfig,
        route: &RouteKind,
        credentials: Vec<SecretString>,
    ) -> Option<OperationPlan> {
        let creds: Vec<&str> = self.cfg.credentials.keys().map(String::as_str).collect();
        if route.member && op.identity.is_empty() {
            self.err(
                "identity",
                "list the identities this operation accepts: member_id, openid",
            );
        }
        if !route.member && !op.identity.is_empty() {
            self.err(
                "identity",
                "this route is not about a member: leave `identity` out",
            );
        }
        let mut scope = OpScope {
            creds,
            cred_values: &credentials,
            identity: &op.identity,
            inputs: route.inputs,
            vars: Vec::new(),
            paging: op.paging.as_ref().map(|p| p.style),
            in_step: true,
            maps: op.maps.keys().map(String::as_str).collect(),
            auth: self.cfg.auth.is_some() && route.auth_token,
        };

        // steps, in order; the request is rendered before the first step that reads it
        let mut steps = Vec::new();
        let mut render_at = None;
        let mut body_fields = Vec::new();
        for (i, s) in op.steps.iter().enumerate() {
            let at = format!("steps.{i}");
            let (input, transforms) = match Step::compile_parts(&s.input, &s.apply, &scope) {
                Ok(parts) => parts,
                Err(errs) => {
                    for (p, e) in errs {
                        self.err(&format!("{at}.{p}"), format!("step `{}`: {e}", s.name));
                    }
                    continue;
                }
            };
            let mut step = Step {
                name: s.name.clone(),
                input,
                transforms,
                target: Target::Var(0),
            };
            let reads = step.reads_request();
            if reads && render_at.is_none() {
                render_at = Some(steps.len());
            }
            step.target = match &s.into {
                Placement::Var(v) | Placement::Body(v) => {
                    if reads {
                        self.err(
                            &format!("{at}.into"),
                            format!("step `{}` reads the rendered request, so its result can only go into a query parameter or header", s.name),
                        );
                    }
                    if render_at.is_some() && !reads {
                        self.err(
                            &format!("{at}.into"),
                            format!("step `{}` comes after a signing step, so the request is already rendered: move it before", s.name),
                        );
                    }
                    if scope.vars.contains(v) {
                        self.err(
                            &format!("{at}.into"),
                            format!("another step already puts its result in `{v}`"),
                        );
                    }
                    if let Placement::Body(field) = &s.into {
                        body_fields.push((field.clone(), scope.vars.len(), at.clone()));
                    }
                    scope.vars.push(v.clone());
                    Target::Var(scope.vars.len() - 1)
                }
                Placement::Query(q) => Target::Query(q.clone()),
                Placement::Header(h) => match HeaderName::from_str(h) {
                    Ok(h) => Target::Header(h),
                    Err(_) => {
                        self.err(
                            &format!("{at}.into.header"),
                            format!("`{h}` is not a valid header name"),
                        );
                        continue;
                    }
                },
            };
            steps.push(step);
        }
        let render_at = render_at.unwrap_or(steps.len());
        let var_count = scope.vars.len();
        // request templates see only the variables defined before the request is rendered
        let pre_vars = steps[..render_at]
            .iter()
            .filter(|s| matches!(s.target, Target::Var(_)))
            .count();
        scope.vars.truncate(pre_vars);
        scope.in_step = false;

        let req = &op.request;
        let method = match Method::from_str(&req.method.to_ascii_uppercase()) {
            Ok(m)
                if [
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ]
                .contains(&m) =>
            {
                m
            }
            _ => {
                self.err(
                    "request.method",
                    format!(
                        "`{}` is not one of GET, POST, PUT, PATCH, DELETE",
                        req.method
                    ),
                );
                Method::GET
            }
        };
        let path = self.template(&req.path, &scope, "request.path");
        if !req.path.starts_with('/') {
            self.err("request.path", "must start with `/`");
        }
        let query: Vec<(String, Template)> = req
            .query
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.clone(),
                    self.template(v, &scope, &format!("request.query.{k}"))?,
                ))
            })
            .collect();
        let mut headers = Vec::new();
        for (k, v) in &req.headers {
            let at = format!("request.headers.{k}");
            match HeaderName::from_str(k) {
                Ok(h) => {
                    if let Some(t) = self.template(v, &scope, &at) {
                        headers.push((h, t));
                    }
                }
                Err(_) => self.err(&at, format!("`{k}` is not a valid header name")),
            }
        }
        let mut body = req.body.as_ref().map(|b| {
            let mut errs = Vec::new();
            let base = format!("{}.request.body", self.path);
            let index = &self.loaded.index;
            let order = |p: &str, keys: Vec<String>| index.order(p, keys.iter());
            let t = JsonTemplate::compile(b, &scope, &base, &order, &mut errs);
            for (p, e) in errs {
                self.errors.push(self.loaded.error(&p, e));
            }
            t
        });
        for (field, var, at) in body_fields {
            let t = JsonTemplate::Text(Template::of(Ref::Var(var)));
            let pushed = body
                .as_mut()
                .map(|b| b.push_field(field.clone(), t.clone()));
            match pushed {
                Some(true) => {}
                Some(false) => self.err(
                    &format!("{at}.into"),
                    format!("the body already has `{field}`, or is not an object: reference `{{{{var.…}}}}` there instead"),
                ),
                None => body = Some(JsonTemplate::Object(vec![Member::new(field, t)])),
            }
        }
        if body.is_some() && method == Method::GET && req.method.eq_ignore_ascii_case("GET") {
            self.err("request.body", "a GET request has no body");
        }

        if route.write && op.effect != crate::config::Effect::Write {
            self.err(
                "effect",
                "this operation serves a create or update: set `effect: write` (a write is never retried)",
            );
        }
        if op.cache.is_some() && op.effect == crate::config::Effect::Write {
            self.err("cache", "a write operation is never cached");
        }
        if let Some(c) = &op.cache
            && c.ttl_ms
                .saturating_add(c.stale_if_error_ms)
                .saturating_add(c.empty_ttl_ms.unwrap_or(0))
                > 30 * 86_400_000
        {
            self.err(
                "cache",
                "ttl_ms, empty_ttl_ms and stale_if_error_ms together are at most 30 days",
            );
        }
        if let Some(c) = &op.cache
            && (c.ttl_ms == 0 || c.max_bytes == 0)
        {
            self.err(
                "cache",
                "`ttl_ms` and `max_bytes` are more than 0 (leave `cache` out for no cache)",
            );
        }
        let response = self.response(op);
        let paging = op.paging.as_ref().and_then(|p| self.paging(p));
        let mapper = self.mapper(op, route);
        if !self.errors.is_empty() {
            return None;
        }
        let uses_auth = path
            .iter()
            .flat_map(|p| p.refs())
            .any(|r| r == Ref::AuthToken)
            || query
                .iter()
                .flat_map(|(_, t)| t.refs())
                .any(|r| r == Ref::AuthToken)
            || headers
                .iter()
                .flat_map(|(_, t)| t.refs())
                .any(|r| r == Ref::AuthToken)
            || body
                .as_ref()
                .is_some_and(|b| b.refs().contains(&Ref::AuthToken))
            || steps.iter().any(|s| s.refs().contains(&Ref::AuthToken));
        Some(OperationPlan {
            vendor: self.vendor.clone(),
            name: name.to_owned(),
            identity: op.identity.clone(),
            request: RequestPlan {
                vendor: self.vendor.clone(),
                credentials,
                method,
                path: path?,
                query,
                headers,
                body,
                steps,
                render_at,
                var_count,
                maps: op
                    .maps
                    .values()
                    .map(|m| m.clone().into_iter().collect())
                    .collect(),
                uses_auth,
            },
            response: response?,
            paging,
            mapper: mapper?,
            cache: op.cache.clone(),
            effect: op.effect,
            slot: 0,
        })
    }

    /// Compiles the vendor's token endpoint.
    fn token(
        &mut self,
        auth: &crate::config::AuthConfig,
        credentials: Vec<SecretString>,
    ) -> Option<TokenPlan> {
        let t = &auth.token;
        let op = OperationConfig {
            identity: Vec::new(),
            request: t.request.clone(),
            steps: Vec::new(),
            response: crate::config::ResponseConfig {
                success: Vec::new(),
                empty: Vec::new(),
                not_found: Vec::new(),
                error_code: None,
                error_message: None,
                error_fields: None,
                page_info: None,
                items: "$".to_owned(),
            },
            paging: None,
            fields: Default::default(),
            cache: None,
            effect: crate::config::Effect::Write,
            maps: Default::default(),
        };
        let token = self.path(&t.token, "token");
        let expires_in = self.path(&t.expires_in, "expires_in");
        let plan = self.compile("token", &op, &TOKEN, credentials)?;
        Some(TokenPlan {
            request: plan.request,
            token: token?,
            expires_in: expires_in?,
            refresh_before: Duration::from_millis(t.refresh_before_ms),
        })
    }

    fn template(&mut self, source: &str, scope: &OpScope<'_>, at: &str) -> Option<Template> {
        match Template::compile(source, scope) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(at, e);
                None
            }
        }
    }

    fn path(&mut self, source: &str, at: &str) -> Option<JsonPath> {
        match JsonPath::compile(source) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(at, e);
                None
            }
        }
    }

    fn conditions(&mut self, list: &[ConditionConfig], at: &str) -> Vec<Condition> {
        list.iter()
            .enumerate()
            .filter_map(
                |(i, c)| match Condition::compile(&c.path, &c.one_of, c.present) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.err(&format!("{at}.{i}"), e);
                        None
                    }
                },
            )
            .collect()
    }

    fn response(&mut self, op: &OperationConfig) -> Option<ResponsePlan> {
        let r = &op.response;
        let success = self.conditions(&r.success, "response.success");
        let empty = self.conditions(&r.empty, "response.empty");
        let not_found = self.conditions(&r.not_found, "response.not_found");
        let error_code = r
            .error_code
            .as_deref()
            .and_then(|p| self.path(p, "response.error_code"));
        let error_message = r
            .error_message
            .as_deref()
            .and_then(|p| self.path(p, "response.error_message"));
        let error_fields = r
            .error_fields
            .as_deref()
            .and_then(|p| self.path(p, "response.error_fields"));
        let page_info = match &r.page_info {
            None => None,
            Some(pi) => {
                let parts = [
                    self.path(&pi.page, "response.page_info.page"),
                    self.path(&pi.per_page, "response.page_info.per_page"),
                    self.path(&pi.total, "response.page_info.total"),
                    self.path(&pi.total_pages, "response.page_info.total_pages"),
                ];
                match parts {
                    [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
                    _ => None,
                }
            }
        };
        let items = self.path(&r.items, "response.items")?;
        Some(ResponsePlan {
            error_fields,
            page_info,
            success,
            empty,
            not_found,
            error_code,
            error_message,
            items,
        })
    }

    fn paging(&mut self, p: &crate::config::PagingConfig) -> Option<PagingPlan> {
        let mut opt = |v: &Option<String>, at: &str| v.as_deref().and_then(|s| self.path(s, at));
        let plan = PagingPlan {
            style: p.style,
            first_page: p.first_page,
            page_size: p.page_size,
            max_pages: p.max_pages,
            has_more: opt(&p.has_more, "paging.has_more"),
            total_items: opt(&p.total_items, "paging.total_items"),
            total_pages: opt(&p.total_pages, "paging.total_pages"),
            next_cursor: opt(&p.next_cursor, "paging.next_cursor"),
        };
        if p.max_pages == 0 || p.page_size == 0 {
            self.err("paging", "`max_pages` and `page_size` are at least 1");
        }
        if p.style == PagingStyle::Cursor && plan.next_cursor.is_none() {
            self.err(
                "paging",
                "cursor paging needs `next_cursor`: where the answer gives the next cursor",
            );
        }
        Some(plan)
    }

    fn mapper(&mut self, op: &OperationConfig, route: &RouteKind) -> Option<ItemMapper> {
        let mut fields: Vec<Option<FieldSpec>> = vec![None; route.schema.len()];
        let mut ok = true;
        for (name, spec) in &op.fields {
            let at = format!("fields.{name}");
            let Some(slot) = schema::slot(route.schema, name) else {
                let known: Vec<&str> = route.schema.iter().map(|d| d.name).collect();
                self.err(
                    &at,
                    format!(
                        "`{name}` is not a canonical field (known: {})",
                        known.join(", ")
                    ),
                );
                ok = false;
                continue;
            };
            match FieldSpec::compile(spec, &route.schema[slot]) {
                Ok(s) => fields[slot] = Some(s),
                Err((p, e)) => {
                    let sub = if p.is_empty() {
                        at
                    } else {
                        format!("{at}.{p}")
                    };
                    self.err(&sub, e);
                    ok = false;
                }
            }
        }
        for (def, f) in route.schema.iter().zip(&fields) {
            if def.required
                && f.is_none()
                && !op.fields.is_empty()
                && !op.fields.contains_key(def.name)
            {
                self.err(
                    "fields",
                    format!("the canonical field `{}` is required", def.name),
                );
                ok = false;
            }
        }
        if op.fields.is_empty() && !route.schema.is_empty() {
            self.err("fields", "map at least the required canonical fields");
            ok = false;
        }
        ok.then(|| ItemMapper {
            schema: route.schema,
            fields,
            origin: self.vendor.origin.clone(),
        })
    }
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
            .coupons_query
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
                "must be more than 0",
            ),
            (
                "        effect: write              # never retried: a blind retry creates a second template\n",
                "",
                "set `effect: write`",
            ),
        ];
        for (from, to, want) in cases {
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
