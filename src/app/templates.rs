//! `/v1/templates`: create (idempotent with `Idempotency-Key`), list and update coupon
//! templates of a template vendor (wxcard in routes.yaml).
use crate::engine::routes::RouteId;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::app::{AppState, Generation, ask_vendor};
use crate::canonical::schema::{TEMPLATE, TEMPLATE_KINDS, to_object};
use crate::engine::call::{CallError, CallInput};
use crate::engine::fanout::Failure;
use crate::engine::plan::{OperationPlan, RoutePlan};

/// How a template request ended, for the HTTP edge to answer.
#[derive(Debug)]
pub enum TemplateAnswer {
    /// 200 or 201 with this body.
    Ok(u16, Value),
    /// 400 with this detail.
    Invalid(String),
    /// 404: no such template, or no such vendor.
    NotFound(String),
    /// 422: the vendor refused the input; its message and field errors.
    Rejected { message: String, errors: Value },
    /// 502 / 504: the vendor failed.
    Failed { timeout: bool, error: String },
}

/// The canonical body of `POST` and `PUT`.
struct TemplateBody {
    vendor: Option<String>,
    kind: &'static str,
    begin_at: jiff::civil::Date,
    end_at: jiff::civil::Date,
    sync: bool,
    card: Value,
}

fn parse_body(body: &[u8], with_vendor: bool) -> Result<TemplateBody, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("the body is a JSON object".to_owned());
    };
    let text = |k: &str| m.get(k).and_then(Value::as_str);
    let vendor = if with_vendor {
        Some(text("vendor").ok_or("`vendor` is required")?.to_owned())
    } else {
        None
    };
    let kind = text("kind").ok_or("`kind` is required")?;
    let kind = TEMPLATE_KINDS
        .iter()
        .copied()
        .find(|k| *k == kind)
        .ok_or_else(|| format!("unknown `kind` (known: {})", TEMPLATE_KINDS.join(", ")))?;
    let date = |k: &str| -> Result<jiff::civil::Date, String> {
        let s = text(k).ok_or_else(|| format!("`{k}` is required (yyyy-MM-dd)"))?;
        jiff::civil::Date::strptime("%Y-%m-%d", s)
            .map_err(|_| format!("`{k}` is not a yyyy-MM-dd date"))
    };
    let (begin_at, end_at) = (date("begin_at")?, date("end_at")?);
    if end_at < begin_at {
        return Err("`end_at` is before `begin_at`".to_owned());
    }
    let sync = match m.get("sync") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`sync` is true or false".to_owned()),
    };
    let card = match m.get("card") {
        Some(c @ Value::Object(_)) => c.clone(),
        _ => return Err("`card` is the vendor's card payload (an object)".to_owned()),
    };
    Ok(TemplateBody {
        vendor,
        kind,
        begin_at,
        end_at,
        sync,
        card,
    })
}

fn ymd(d: jiff::civil::Date) -> Value {
    Value::String(d.strftime("%Y-%m-%d").to_string())
}

/// Runs a template operation and turns its result into an answer.
async fn run(
    state: &Arc<AppState>,
    generation: &Generation,
    op: &OperationPlan,
    inputs: Vec<Option<Value>>,
    bypass_cache: bool,
) -> Result<crate::app::Asked, TemplateAnswer> {
    let input = CallInput {
        inputs,
        ..CallInput::default()
    };
    let asked = ask_vendor(state, generation, op, &input, bypass_cache).await;
    if let Err(e) = &asked.result {
        return Err(failure(e));
    }
    Ok(asked)
}

fn failure(e: &Failure) -> TemplateAnswer {
    match e {
        Failure::Call(c) if c.is_not_found() => {
            TemplateAnswer::NotFound("the vendor has no such template".to_owned())
        }
        Failure::Call(CallError::Rejected {
            status: 422,
            message,
            fields,
        }) => TemplateAnswer::Rejected {
            message: message.clone(),
            errors: fields.clone().unwrap_or(Value::Object(Map::new())),
        },
        other => TemplateAnswer::Failed {
            timeout: matches!(other.outcome(), crate::canonical::merge::Outcome::Timeout),
            error: other.to_string(),
        },
    }
}

/// The canonical template of a mapped row; dates the vendor's answer lacks come from the
/// request (a template runs from the start of its begin date to the end of its end date,
/// UTC+08:00).
fn template(vendor: &str, row: &[Value], body: Option<&TemplateBody>) -> Value {
    let mut t = to_object(TEMPLATE, row.to_vec());
    if let Some(b) = body {
        for (key, date, time) in [
            ("begin_at", b.begin_at, (0, 0, 0)),
            ("end_at", b.end_at, (23, 59, 59)),
        ] {
            if t.get(key).is_none_or(Value::is_null) {
                t.insert(key.to_owned(), Value::String(day_edge(date, time)));
            }
        }
        if t.get("card").is_none_or(Value::is_null) {
            t.insert("card".to_owned(), b.card.clone());
        }
    }
    t.insert("vendor".to_owned(), Value::String(vendor.to_owned()));
    Value::Object(t)
}

/// `date` at the given time of day in the canonical zone, as a canonical time.
fn day_edge(date: jiff::civil::Date, (h, m, s): (i8, i8, i8)) -> String {
    let at = date.at(h, m, s, 0);
    match at.to_zoned(crate::engine::time::canonical_zone()) {
        Ok(z) => crate::engine::time::canonical(z.timestamp()),
        // a civil date of the canonical API is always in jiff's range
        Err(_) => String::new(),
    }
}

/// A write changes the vendor's lists: drop their cached pages.
fn invalidate_lists(generation: &Generation, vendor: &str) {
    if let Some(list) = generation.plan.route(RouteId::TemplatesList).of(vendor)
        && let Some(cache) = &generation.caches[list.slot]
    {
        cache.invalidate_all();
    }
}

fn vendor_op<'a>(
    route: &'a RoutePlan,
    vendor: &str,
) -> Result<&'a Arc<OperationPlan>, TemplateAnswer> {
    route.of(vendor).ok_or_else(|| {
        TemplateAnswer::NotFound(format!(
            "no configured vendor of that id offers templates: {}",
            vendor.chars().take(32).collect::<String>()
        ))
    })
}

fn write_inputs(b: &TemplateBody) -> Vec<Option<Value>> {
    vec![
        Some(Value::String(b.kind.to_owned())),
        Some(ymd(b.begin_at)),
        Some(ymd(b.end_at)),
        Some(Value::Bool(b.sync)),
        Some(b.card.clone()),
    ]
}

/// `POST /v1/templates`.
pub async fn create(state: &Arc<AppState>, body: &[u8]) -> TemplateAnswer {
    let b = match parse_body(body, true) {
        Ok(b) => b,
        Err(e) => return TemplateAnswer::Invalid(e),
    };
    let vendor = b.vendor.clone().unwrap_or_default();
    let generation = state.generation();
    let op = match vendor_op(generation.plan.route(RouteId::TemplatesCreate), &vendor) {
        Ok(op) => op,
        Err(a) => return a,
    };
    let asked = run(state, &generation, op, write_inputs(&b), true).await;
    // even a failed create may have created something: the lists are no longer known
    invalidate_lists(&generation, &vendor);
    let asked = match asked {
        Ok(a) => a,
        Err(a) => return a,
    };
    match asked.result.as_ref().ok().and_then(|out| out.rows.first()) {
        Some(row) => {
            TemplateAnswer::Ok(201, json!({ "template": template(&vendor, row, Some(&b)) }))
        }
        None => TemplateAnswer::Failed {
            timeout: false,
            error: "the vendor's answer holds no template".to_owned(),
        },
    }
}

/// `PUT /v1/templates/{vendor}/{id}`.
pub async fn update(state: &Arc<AppState>, vendor: &str, id: &str, body: &[u8]) -> TemplateAnswer {
    let generation = state.generation();
    let op = match vendor_op(generation.plan.route(RouteId::TemplatesUpdate), vendor) {
        Ok(op) => op,
        Err(a) => return a,
    };
    if !crate::app::is_record_id(id) {
        return TemplateAnswer::Invalid(
            "a template id is letters, digits, `-` and `_` (at most 128)".to_owned(),
        );
    }
    let b = match parse_body(body, false) {
        Ok(b) => b,
        Err(e) => return TemplateAnswer::Invalid(e),
    };
    let mut inputs = vec![Some(Value::String(id.to_owned()))];
    inputs.extend(write_inputs(&b));
    let asked = run(state, &generation, op, inputs, true).await;
    invalidate_lists(&generation, vendor);
    let asked = match asked {
        Ok(a) => a,
        Err(a) => return a,
    };
    match asked.result.as_ref().ok().and_then(|out| out.rows.first()) {
        Some(row) => {
            TemplateAnswer::Ok(200, json!({ "template": template(vendor, row, Some(&b)) }))
        }
        None => TemplateAnswer::NotFound("the vendor has no such template".to_owned()),
    }
}

/// `GET /v1/templates?vendor=&kind=&active_on=&page=&per_page=`.
/// `generation` is the request's, which the router already read the default vendor from.
pub async fn list(
    state: &Arc<AppState>,
    generation: &Generation,
    query: &str,
    bypass_cache: bool,
) -> TemplateAnswer {
    let mut params = std::collections::HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (
            crate::crypto::percent_decode(k),
            crate::crypto::percent_decode(&v.replace('+', " ")),
        ) else {
            return TemplateAnswer::Invalid("the query string is not valid UTF-8".to_owned());
        };
        if !["vendor", "kind", "active_on", "page", "per_page"].contains(&k.as_str()) {
            return TemplateAnswer::Invalid(format!(
                "unknown query parameter `{}` (known: vendor, kind, active_on, page, per_page)",
                k.chars().take(32).collect::<String>()
            ));
        }
        params.insert(k, v);
    }
    let route = generation.plan.route(RouteId::TemplatesList);
    let vendor = match params.get("vendor") {
        Some(v) => v.clone(),
        None if route.targets.len() == 1 => route.targets[0].vendor.id.clone(),
        None => return TemplateAnswer::Invalid("`vendor` is required".to_owned()),
    };
    let op = match vendor_op(route, &vendor) {
        Ok(op) => op,
        Err(a) => return a,
    };
    let kind = match params.get("kind") {
        None => None,
        Some(k) => match TEMPLATE_KINDS.iter().find(|x| *x == k) {
            Some(k) => Some(Value::String((*k).to_owned())),
            None => {
                return TemplateAnswer::Invalid(format!(
                    "unknown `kind` (known: {})",
                    TEMPLATE_KINDS.join(", ")
                ));
            }
        },
    };
    let active_on = match params.get("active_on") {
        None => None,
        Some(d) => match jiff::civil::Date::strptime("%Y-%m-%d", d) {
            Ok(d) => Some(ymd(d)),
            Err(_) => {
                return TemplateAnswer::Invalid("`active_on` is a yyyy-MM-dd date".to_owned());
            }
        },
    };
    let number = |k: &str, default: u64, max: u64| -> Result<u64, TemplateAnswer> {
        match params.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    TemplateAnswer::Invalid(format!("`{k}` is a number from 1 to {max}"))
                }),
        }
    };
    let page = match number("page", 1, 1_000_000) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let per_page = match number("per_page", 15, 100) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let inputs = vec![
        kind,
        active_on,
        Some(Value::from(page)),
        Some(Value::from(per_page)),
    ];
    let asked = match run(state, generation, op, inputs, bypass_cache).await {
        Ok(a) => a,
        Err(a) => return a,
    };
    let Ok(out) = &asked.result else {
        return TemplateAnswer::Failed {
            timeout: false,
            error: "no answer".to_owned(),
        };
    };
    let templates: Vec<Value> = out
        .rows
        .iter()
        .map(|row| template(&vendor, row, None))
        .collect();
    let [p, pp, total, total_pages] =
        out.page_info
            .unwrap_or([page as i64, per_page as i64, templates.len() as i64, 1]);
    TemplateAnswer::Ok(
        200,
        json!({
            "templates": templates,
            "page": {"page": p, "per_page": pp, "total": total, "total_pages": total_pages},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(begin_at: &str, end_at: &str) -> Vec<u8> {
        let card = json!({"title": "t"});
        let b = json!({"kind": TEMPLATE_KINDS[0], "begin_at": begin_at, "end_at": end_at, "card": card});
        serde_json::to_vec(&b).unwrap()
    }

    #[test]
    fn a_template_may_last_one_day_but_not_end_before_it_begins() {
        assert!(parse_body(&body("2026-03-01", "2026-03-01"), false).is_ok());
        assert!(parse_body(&body("2026-03-01", "2026-03-02"), false).is_ok());
        assert_eq!(
            parse_body(&body("2026-03-02", "2026-03-01"), false).err(),
            Some("`end_at` is before `begin_at`".to_owned())
        );
    }
}
