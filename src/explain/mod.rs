//! `coupon-gateway explain`: one vendor operation, run once for real (against the configured
//! vendor, the sandbox, or a recorded answer), with every stage shown: the steps' inputs and
//! outputs, the rendered and the wire request, the raw answer, the envelope's verdict, each
//! page, and each item field by field. The tool an operator runs first when a new vendor
//! answers "bad sign".
//!
//! It runs the engine's own request path (`engine::call::call_observed`, or
//! `engine::call::replay` for a recorded answer) with a [`Recorder`] as its observer: what is
//! shown is what the gateway does, not a second implementation of it.
pub mod record;
pub mod render;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::config;
use crate::embedded::{self, ROUTES_YAML};
use crate::engine::call::{self, CallError, CallInput, CallOutput};
use crate::engine::observe::{Event, Next, Observer, Verdict};
use crate::engine::plan::{Credentials, OperationPlan, Plan, RoutePlan};
use crate::engine::resilience::{VendorAuth, VendorGuard};
use crate::engine::token::TokenCache;
use crate::engine::upstream::Upstream;
use crate::sandbox::Sandbox;
use record::*;

/// What to explain, as the command line says it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Options {
    /// routes.yaml to load (default ./routes.yaml; with --sandbox, the embedded one).
    #[arg(long)]
    pub config: Option<String>,
    /// Start the built-in sandbox vendors on loopback and call them.
    #[arg(long)]
    pub sandbox: bool,
    /// The vendor's id in routes.yaml.
    pub vendor: String,
    /// The vendor operation (list_coupons, get_package, …).
    pub operation: String,
    /// An input as key=value: member.id, member.openid or one of the route's inputs
    /// (package_id, kind, …). Repeatable.
    #[arg(long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// The inputs as one JSON object, for values that are not text.
    #[arg(long, value_name = "JSON")]
    pub input_json: Option<String>,
    /// Read this recorded answer body instead of calling the vendor (nothing is sent).
    #[arg(long, value_name = "FILE")]
    pub answer: Option<String>,
    /// The HTTP status of the recorded answer.
    #[arg(long, default_value_t = 200, requires = "answer")]
    pub answer_status: u16,
}

/// Runs the explanation. `Err` is a mistake in what was asked (an unknown vendor, operation
/// or input, a configuration that does not load): nothing was called.
pub async fn explain(opts: &Options) -> Result<Explanation, String> {
    // the sandbox lives until the call is done
    let (plan, _sandbox) = load_plan(opts).await?;
    let (route, op) = find_operation(&plan, &opts.vendor, &opts.operation)?;
    let (input, shown) = read_inputs(route, opts)?;

    let mut recorder = Recorder::new(op);
    let result = match &opts.answer {
        Some(path) => {
            let body = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            let status = http::StatusCode::from_u16(opts.answer_status)
                .map_err(|_| format!("{} is not an HTTP status", opts.answer_status))?;
            let mut obs: Option<&mut dyn Observer> = Some(&mut recorder);
            call::replay(op, &input, status, Bytes::from(body), &mut obs).map_err(Failed::Call)
        }
        None => {
            let upstream = Upstream::new(plan.server.max_vendor_response_bytes);
            // the vendor's retries and token endpoint as served; no breaker or quota: one call
            let mut guard = VendorGuard::new(&op.vendor.retry, None, None, None);
            guard.auth = plan.tokens[op.vendor.slot].clone().map(|token| VendorAuth {
                cache: TokenCache::new(token.refresh_before),
                plan: token,
            });
            let mut obs: Option<&mut dyn Observer> = Some(&mut recorder);
            let called = call::call_observed(op, &upstream, &input, &guard, &mut obs);
            match tokio::time::timeout(op.vendor.timeout, called).await {
                Ok(r) => r.map_err(Failed::Call),
                Err(_) => Err(Failed::Timeout(op.vendor.timeout)),
            }
        }
    };
    let mode = match (&opts.answer, opts.sandbox) {
        (Some(_), _) => "answer",
        (None, true) => "sandbox",
        (None, false) => "live",
    };
    Ok(recorder.finish(opts, mode, shown, result))
}

/// Why the call produced nothing.
enum Failed {
    Call(CallError),
    Timeout(std::time::Duration),
}

async fn load_plan(opts: &Options) -> Result<(Plan, Option<Sandbox>), String> {
    let errors = |errors: Vec<config::ConfigError>| {
        errors
            .iter()
            .map(|e| format!("error: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if opts.sandbox {
        let sb = Sandbox::start()
            .await
            .map_err(|e| format!("cannot start the sandbox vendors: {e}"))?;
        let (name, text) = match &opts.config {
            Some(p) => (
                p.clone(),
                std::fs::read_to_string(p)
                    .map_err(|e| format!("{p}: cannot read the configuration file: {e}"))?,
            ),
            None => ("routes.yaml (embedded)".to_owned(), ROUTES_YAML.to_owned()),
        };
        let plan = embedded::sandbox_plan(&name, &text, &sb, true).map_err(errors)?;
        Ok((plan, Some(sb)))
    } else {
        let path = opts.config.as_deref().unwrap_or("routes.yaml");
        let loaded = config::load_file(path).map_err(errors)?;
        let (plan, _) = Plan::compile(&loaded, Credentials::Required).map_err(errors)?;
        Ok((plan, None))
    }
}

fn find_operation<'p>(
    plan: &'p Plan,
    vendor: &str,
    operation: &str,
) -> Result<(&'p RoutePlan, &'p Arc<OperationPlan>), String> {
    let Some(v) = plan.vendors.iter().find(|v| v.id == vendor) else {
        let known: Vec<&str> = plan.vendors.iter().map(|v| v.id.as_str()).collect();
        return Err(format!(
            "no vendor `{vendor}` (known: {})",
            known.join(", ")
        ));
    };
    plan.routes
        .iter()
        .find_map(|r| Some((r, r.of(vendor).filter(|op| op.name == operation)?)))
        .ok_or_else(|| {
            format!(
                "vendor `{vendor}` has no operation `{operation}` that a route uses (its operations: {})",
                v.operations.join(", ")
            )
        })
}

/// The call's inputs from `--input key=value` and `--input-json`, and as shown.
fn read_inputs(
    route: &RoutePlan,
    opts: &Options,
) -> Result<(CallInput, BTreeMap<String, Value>), String> {
    let names = route.id.kind().inputs;
    let mut given: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(text) = &opts.input_json {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
            return Err("--input-json takes one JSON object".to_owned());
        };
        given.extend(m);
    }
    for kv in &opts.inputs {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("--input {kv}: write it as key=value"));
        };
        given.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let mut input = CallInput {
        inputs: vec![None; names.len()],
        ..CallInput::default()
    };
    let mut shown = BTreeMap::new();
    for (key, value) in given {
        let text = || match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = key.strip_prefix("input.").unwrap_or(&key);
        match name {
            "member.id" => input.member_id = Some(text()),
            "member.openid" => input.openid = Some(text()),
            _ => match names.iter().position(|n| *n == name) {
                Some(i) => input.inputs[i] = Some(value.clone()),
                None => {
                    let mut known = vec!["member.id", "member.openid"];
                    known.extend(names);
                    return Err(format!(
                        "unknown input `{key}` (known: {})",
                        known.join(", ")
                    ));
                }
            },
        }
        shown.insert(name.to_owned(), value);
    }
    Ok((input, shown))
}

/// The observer of an explained call: gathers the engine's events into an [`Explanation`].
pub struct Recorder<'a> {
    op: &'a OperationPlan,
    pages: Vec<PageRecord>,
    page: PageRecord,
    attempt: AttemptRecord,
    /// A token fetch under way: the attempts until its answer are the token endpoint's.
    token: Option<TokenRecord>,
}

impl<'a> Recorder<'a> {
    pub fn new(op: &'a OperationPlan) -> Recorder<'a> {
        Recorder {
            op,
            pages: Vec::new(),
            page: PageRecord::default(),
            attempt: AttemptRecord::default(),
            token: None,
        }
    }

    fn finish(
        mut self,
        opts: &Options,
        mode: &'static str,
        inputs: BTreeMap<String, Value>,
        result: Result<CallOutput, Failed>,
    ) -> Explanation {
        // what a failed call left unfinished: a request that could not be built, a page
        // whose answer was refused
        if !self.attempt.steps.is_empty() || self.attempt.rendered.is_some() {
            let attempt = std::mem::take(&mut self.attempt);
            match &mut self.token {
                Some(t) => t.attempts.push(attempt),
                None => self.page.attempts.push(attempt),
            }
        }
        if let Some(t) = self.token.take() {
            self.page.token_fetches.push(t);
        }
        // the page a failed call was on: the first, or the one the last page pointed to
        if self.page.number.is_none() {
            match self.pages.last().and_then(|p| p.next.as_ref()) {
                Some(next) => {
                    self.page.number = next.number;
                    self.page.cursor = next.cursor.clone();
                }
                None if self.pages.is_empty() => {
                    self.page.number = Some(self.op.paging.as_ref().map_or(1, |p| p.first_page));
                }
                None => {}
            }
        }
        if !self.page.attempts.is_empty()
            || !self.page.token_fetches.is_empty()
            || self.page.answer.is_some()
        {
            self.pages.push(std::mem::take(&mut self.page));
        }
        let outcome = match result {
            Ok(out) => Outcome {
                ok: true,
                stage: None,
                error: None,
                rows: out.rows.len(),
                dropped: out.dropped,
                pages: out.pages,
                truncated: out.truncated,
            },
            Err(failed) => {
                let (stage, error) = match &failed {
                    Failed::Timeout(t) => (
                        Some("exchange"),
                        format!("no answer within the vendor's {} ms", t.as_millis()),
                    ),
                    // the vendor answered: nothing was wrong with the call
                    Failed::Call(e) if e.is_not_found() => (None, e.to_string()),
                    Failed::Call(e) => (Some(self.stage_of(e)), e.to_string()),
                };
                let items = self.pages.iter().flat_map(|p| &p.items);
                Outcome {
                    ok: stage.is_none(),
                    stage,
                    error: Some(error),
                    rows: 0,
                    dropped: items.filter(|i| !i.kept).count(),
                    pages: self.pages.iter().filter(|p| p.envelope.is_some()).count() as u32,
                    truncated: false,
                }
            }
        };
        Explanation {
            vendor: opts.vendor.clone(),
            operation: opts.operation.clone(),
            mode,
            inputs,
            pages: self.pages,
            outcome,
        }
    }

    /// The stage a call error comes from.
    fn stage_of(&self, e: &CallError) -> &'static str {
        let last = self.pages.last();
        match e {
            CallError::Build(_) => "request",
            CallError::Auth(_) => "token",
            CallError::Transport(_) => "exchange",
            CallError::RateLimited => "limits",
            CallError::Status(_) | CallError::Rejected { .. } => "answer",
            CallError::Unreadable(_) => "read",
            CallError::Throttled(_) if last.is_some_and(|p| p.envelope.is_none()) => "answer",
            CallError::Throttled(_) | CallError::Business { .. } | CallError::NotFound => {
                "envelope"
            }
            // every item dropped, or an envelope that is not what routes.yaml describes
            CallError::Shape(_) => match last {
                Some(p) if !p.items.is_empty() && p.items.iter().all(|i| !i.kept) => "items",
                _ => "envelope",
            },
        }
    }

    fn conditions(&self, doc: &Value) -> Vec<ConditionRecord> {
        let r = &self.op.response;
        let rules = [
            ("not_found", &r.not_found),
            ("empty", &r.empty),
            ("success", &r.success),
            ("rate_limited", &r.rate_limited),
        ];
        rules
            .into_iter()
            .flat_map(|(rule, conditions)| {
                conditions.iter().map(move |c| ConditionRecord {
                    rule,
                    path: c.path.source().to_owned(),
                    expects: c.expects(),
                    found: c.path.first(doc).cloned(),
                    holds: c.holds(doc),
                })
            })
            .collect()
    }
}

fn pairs(headers: &[(String, String)]) -> Vec<[String; 2]> {
    headers
        .iter()
        .map(|(k, v)| [k.clone(), v.clone()])
        .collect()
}

impl Observer for Recorder<'_> {
    fn observe(&mut self, event: Event<'_>) {
        match event {
            Event::Step {
                name,
                input,
                output,
                into,
            } => self.attempt.steps.push(StepRecord {
                name: name.to_owned(),
                signs_request: self.attempt.rendered.is_some(),
                into,
                input: input.to_owned(),
                output: output.ok().map(str::to_owned),
                error: output.err().map(str::to_owned),
            }),
            Event::Rendered {
                method,
                target,
                body,
            } => {
                self.attempt.rendered = Some(RenderedRecord {
                    method: method.to_owned(),
                    target: target.to_owned(),
                    body: body.to_owned(),
                })
            }
            Event::Wire {
                method,
                url,
                headers,
                body,
            } => {
                self.attempt.wire = Some(WireRecord {
                    method: method.to_owned(),
                    url: url.to_owned(),
                    headers: pairs(headers),
                    body: body.to_owned(),
                });
                let attempt = std::mem::take(&mut self.attempt);
                match &mut self.token {
                    Some(t) => t.attempts.push(attempt),
                    None => self.page.attempts.push(attempt),
                }
            }
            Event::TokenRequested => self.token = Some(TokenRecord::default()),
            Event::TokenAnswer {
                status,
                headers,
                body,
            } => {
                if let Some(mut t) = self.token.take() {
                    t.answer = Some(AnswerRecord {
                        status,
                        headers: pairs(headers),
                        body: body.to_owned(),
                    });
                    self.page.token_fetches.push(t);
                }
            }
            Event::Answer {
                status,
                headers,
                body,
            } => {
                self.page.answer = Some(AnswerRecord {
                    status,
                    headers: pairs(headers),
                    body: body.to_owned(),
                })
            }
            Event::Envelope { doc, verdict } => {
                let (verdict, items, error) = match verdict {
                    Verdict::Items(n) => ("ok", Some(n), None),
                    Verdict::Empty => ("empty", None, None),
                    Verdict::Failed(e) => (
                        match e {
                            CallError::NotFound => "not_found",
                            CallError::Business { .. } => "error",
                            CallError::Throttled(_) => "rate_limited",
                            _ => "unexpected",
                        },
                        None,
                        Some(e.to_string()),
                    ),
                };
                self.page.envelope = Some(EnvelopeRecord {
                    verdict,
                    items,
                    error,
                    conditions: self.conditions(doc),
                    document: doc.clone(),
                });
            }
            Event::Item { item, mapped } => {
                let fields = self
                    .op
                    .mapper
                    .explain(item)
                    .into_iter()
                    .map(|f| {
                        let (value, error) = match f.value {
                            Ok(v) => (v, None),
                            Err(e) => (None, Some(e)),
                        };
                        FieldRecord {
                            field: f.field.to_owned(),
                            required: f.required,
                            path: f.path,
                            matched: f.matched,
                            value,
                            error,
                        }
                    })
                    .collect();
                self.page.items.push(ItemRecord {
                    index: self.page.items.len() + 1,
                    kept: mapped.is_ok(),
                    dropped: mapped.err().map(|d| DropRecord {
                        field: d.field.to_owned(),
                        reason: d.reason.clone(),
                    }),
                    fields,
                    raw: item.clone(),
                });
            }
            Event::Page {
                number,
                cursor,
                items,
                next,
            } => {
                self.page.number = Some(number);
                self.page.item_count = Some(items);
                self.page.cursor = cursor.map(str::to_owned);
                self.page.next = Some(match next {
                    Next::Last => NextRecord {
                        kind: "last",
                        number: None,
                        cursor: None,
                    },
                    Next::Page { number, cursor } => NextRecord {
                        kind: "page",
                        number: Some(number),
                        cursor: cursor.map(str::to_owned),
                    },
                    Next::Truncated => NextRecord {
                        kind: "truncated",
                        number: None,
                        cursor: None,
                    },
                });
                self.pages.push(std::mem::take(&mut self.page));
            }
        }
    }
}
