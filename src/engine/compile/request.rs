//! The request pass: method, path, query, headers, body and signing steps of one request —
//! an operation's or a token endpoint's, compiled the same way.
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderName, Method};
use secrecy::SecretString;
use serde_json::Value;

use super::Cx;
use super::scope::OpScope;
use crate::config::{Placement, RequestConfig, StepConfig};
use crate::engine::formats;
use crate::engine::plan::{RequestPlan, VendorPlan};
use crate::engine::steps::{Step, Target};
use crate::engine::template::{JsonTemplate, Member, Ref, Template};

/// The methods a vendor request may use.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// What routes.yaml says of one request.
pub struct Source<'a> {
    pub request: &'a RequestConfig,
    pub steps: &'a [StepConfig],
    pub maps: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// `response.format` (the answer's format decides the default `Accept`).
    pub answer_format: Option<&'a str>,
}

/// Compiles a request and its steps. `scope` starts with `in_step` set and no variables.
pub fn compile(
    cx: &mut Cx<'_>,
    vendor: &Arc<VendorPlan>,
    credentials: Vec<SecretString>,
    source: Source<'_>,
    mut scope: OpScope<'_>,
) -> Option<RequestPlan> {
    let Source {
        request: req,
        steps,
        maps,
        answer_format,
    } = source;
    let before = cx.errors.len();
    let (steps, render_at, body_fields) = compile_steps(cx, steps, req, &mut scope);
    let var_count = scope.vars.len();
    // request templates see only the variables defined before the request is rendered
    let pre_vars = steps[..render_at]
        .iter()
        .filter(|s| matches!(s.target, Target::Var(_)))
        .count();
    scope.vars.truncate(pre_vars);
    scope.in_step = false;

    let method = match Method::from_str(&req.method.to_ascii_uppercase()) {
        Ok(m) if METHODS.contains(&m) => m,
        _ => {
            cx.err(
                "request.method",
                format!(
                    "`{}` is not one of GET, POST, PUT, PATCH, DELETE",
                    req.method
                ),
            );
            Method::GET
        }
    };
    let path = cx.template(&req.path, &scope, "request.path");
    if !req.path.starts_with('/') {
        cx.err("request.path", "must start with `/`");
    }
    let query: Vec<(String, Template)> = req
        .query
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.clone(),
                cx.template(v, &scope, &format!("request.query.{k}"))?,
            ))
        })
        .collect();
    let mut headers = Vec::new();
    for (k, v) in &req.headers {
        let at = format!("request.headers.{k}");
        match HeaderName::from_str(k) {
            Ok(h) => {
                if let Some(t) = cx.template(v, &scope, &at) {
                    headers.push((h, t));
                }
            }
            Err(_) => cx.err(&at, format!("`{k}` is not a valid header name")),
        }
    }
    let mut body = req.body.as_ref().map(|b| {
        let mut errs = Vec::new();
        let base = format!("{}.request.body", cx.path);
        let index = &cx.loaded.index;
        let order = |p: &str, keys: Vec<String>| index.order(p, keys.iter());
        let t = JsonTemplate::compile(b, &scope, &base, &order, &mut errs);
        for (p, e) in errs {
            cx.errors.push(cx.loaded.error(&p, e));
        }
        t
    });
    // `into: {body: field}` adds a member holding the step's variable
    for (field, var, at) in body_fields {
        let t = JsonTemplate::Text(Template::of(Ref::Var(var)));
        let pushed = body
            .as_mut()
            .map(|b| b.push_field(field.clone(), t.clone()));
        match pushed {
            Some(true) => {}
            Some(false) => cx.err(
                &format!("{at}.into"),
                format!("the body already has `{field}`, or is not an object: reference `{{{{var.…}}}}` there instead"),
            ),
            None => body = Some(JsonTemplate::Object(vec![Member::new(field, t)])),
        }
    }
    // (a misspelt method already has its own error)
    if body.is_some() && method == Method::GET && req.method.eq_ignore_ascii_case("GET") {
        cx.err("request.body", "a GET request has no body");
    }
    let body_format = match formats::writer(
        req.format.as_ref(),
        body.as_ref().unwrap_or(&JsonTemplate::Object(Vec::new())),
    ) {
        Ok(w) => Some(w),
        Err(e) => {
            cx.err("request.format", e);
            None
        }
    };
    let answer_format = formats::reader(answer_format)
        .map_err(|e| cx.err("response.format", e))
        .ok();
    if cx.errors.len() > before {
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
    Some(RequestPlan {
        vendor: vendor.clone(),
        credentials,
        method,
        path: path?,
        query,
        headers,
        body,
        body_format: body_format?,
        answer_format: answer_format?,
        steps,
        render_at,
        var_count,
        maps: maps
            .values()
            .map(|m| m.clone().into_iter().collect())
            .collect(),
        uses_auth,
        clock: scope.clock.into_inner(),
    })
}

/// Steps in order; the request is rendered before the first step that reads it. Returns the
/// steps, that index, and the `into: {body: …}` placements (field, variable, location).
fn compile_steps(
    cx: &mut Cx<'_>,
    configs: &[StepConfig],
    req: &RequestConfig,
    scope: &mut OpScope<'_>,
) -> (Vec<Step>, usize, Vec<(String, usize, String)>) {
    let mut steps = Vec::new();
    let mut render_at = None;
    let mut body_fields = Vec::new();
    for (i, s) in configs.iter().enumerate() {
        let at = format!("steps.{i}");
        let input = match expand_sorted(&s.input, req) {
            Ok(input) => input,
            Err((p, e)) => {
                cx.err(&format!("{at}.{p}"), format!("step `{}`: {e}", s.name));
                continue;
            }
        };
        let (input, transforms) = match Step::compile_parts(&input, &s.apply, &*scope) {
            Ok(parts) => parts,
            Err(errs) => {
                for (p, e) in errs {
                    cx.err(&format!("{at}.{p}"), format!("step `{}`: {e}", s.name));
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
                    cx.err(
                        &format!("{at}.into"),
                        format!("step `{}` reads the rendered request, so its result can only go into a query parameter or header", s.name),
                    );
                }
                if render_at.is_some() && !reads {
                    cx.err(
                        &format!("{at}.into"),
                        format!("step `{}` comes after a signing step, so the request is already rendered: move it before", s.name),
                    );
                }
                if scope.vars.contains(v) {
                    cx.err(
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
                    cx.err(
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
    (steps, render_at, body_fields)
}

/// `sorted: body` and `sorted: query` stand for the request's own body members or query
/// parameters (scalars only, `exclude` left out), so a canonical string of "every parameter
/// but the signature" is not written twice. Other inputs pass as they are.
fn expand_sorted(input: &Value, req: &RequestConfig) -> Result<Value, (String, String)> {
    let Value::Object(map) = input else {
        return Ok(input.clone());
    };
    let Some(Value::String(source)) = map.get("sorted") else {
        if map.contains_key("exclude") {
            return Err((
                "input.exclude".to_owned(),
                "`exclude` goes with `sorted: body` or `sorted: query`".to_owned(),
            ));
        }
        return Ok(input.clone());
    };
    let members: Vec<(String, Value)> = match source.as_str() {
        "body" => match &req.body {
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => {
                return Err((
                    "input.sorted".to_owned(),
                    "`sorted: body` needs a request body mapping".to_owned(),
                ));
            }
        },
        "query" => req
            .query
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
        other => {
            return Err((
                "input.sorted".to_owned(),
                format!("`sorted: {other}`: a mapping of name to template, `body` or `query`"),
            ));
        }
    };
    let exclude: Vec<&str> = match map.get("exclude") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(("input.exclude".to_owned(), "a list of names".to_owned())),
    };
    let pairs: serde_json::Map<String, Value> = members
        .into_iter()
        .filter(|(k, v)| {
            !exclude.contains(&k.as_str()) && !v.is_object() && !v.is_array() && !v.is_null()
        })
        .collect();
    let mut out = map.clone();
    out.remove("exclude");
    out.insert("sorted".to_owned(), Value::Object(pairs));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(body: Value) -> RequestConfig {
        serde_json::from_value(json!({"method": "POST", "path": "/x", "query": {"v": "2.0", "sign_method": "md5"}, "body": body})).unwrap()
    }

    #[test]
    fn sorted_body_and_query_stand_for_the_request_s_own_parameters() {
        let r = req(
            json!({"appid": "{{cred.app}}", "n": 1, "detail": {"a": 1}, "none": null, "sign_type": "MD5"}),
        );
        let input = json!({"sorted": "body", "style": "pairs", "skip_empty": true, "exclude": ["sign_type"]});
        assert_eq!(
            expand_sorted(&input, &r).unwrap(),
            json!({"sorted": {"appid": "{{cred.app}}", "n": 1}, "style": "pairs", "skip_empty": true})
        );
        let q = expand_sorted(&json!({"sorted": "query", "style": "namevalue"}), &r).unwrap();
        assert_eq!(q["sorted"], json!({"sign_method": "md5", "v": "2.0"}));
        assert!(
            expand_sorted(&json!({"sorted": "headers"}), &r)
                .unwrap_err()
                .1
                .contains("`body` or `query`")
        );
        assert!(
            expand_sorted(&json!({"sorted": {"a": "1"}, "exclude": ["a"]}), &r)
                .unwrap_err()
                .1
                .contains("goes with")
        );
        let no_body: RequestConfig =
            serde_json::from_value(json!({"method": "GET", "path": "/x"})).unwrap();
        assert!(expand_sorted(&json!({"sorted": "body"}), &no_body).is_err());
    }

    use super::super::edited::{compile as compile_edited, error_at};
    use crate::engine::routes::RouteId;

    /// wxcard's `list_templates`, a GET without a body.
    const LIST_TEMPLATES: &str = "          method: GET\n          path: /tickets\n";

    #[test]
    fn a_get_request_with_a_body_is_refused_where_the_body_is() {
        for method in ["GET", "get"] {
            let (text, compiled) = compile_edited(&[(
                LIST_TEMPLATES,
                &format!(
                    "          method: {method}\n          path: /tickets\n          body: {{page: \"{{{{input.page}}}}\"}}\n"
                ),
            )]);
            let errors = compiled.unwrap_err();
            let e = error_at(
                &errors,
                "vendors.wxcard.operations.list_templates.request.body",
                &text,
                "body: {page:",
            );
            assert_eq!(e.message, "a GET request has no body");
            assert_eq!(errors.len(), 1, "{errors:#?}");
        }
        // the same body on a POST is sent
        let (_, compiled) = compile_edited(&[(
            LIST_TEMPLATES,
            "          method: POST\n          path: /tickets\n          body: {page: \"{{input.page}}\"}\n",
        )]);
        let (plan, _) = compiled.unwrap();
        let op = plan.route(RouteId::TemplatesList).of("wxcard").unwrap();
        assert_eq!(op.request.method, Method::POST);
        assert!(op.request.body.is_some());
    }

    const LIST_AUTH: &str = "          headers: {Authorization: \"Bearer {{auth.token}}\"}\n          # canonical filters";
    const CREATE_PATH: &str = "          path: \"/{{input.kind | map:path}}/ticket\"\n";
    const CREATE_AUTH: &str = "          path: \"/{{input.kind | map:path}}/ticket\"\n          headers: {Authorization: \"Bearer {{auth.token}}\"}\n";
    const LIST_QUERY_END: &str = "            per_page: \"{{input.per_page}}\"\n";
    const CREATE_BODY_END: &str = "            end_at: \"{{input.end_at}}\"\n        response:";

    #[test]
    fn only_operations_that_send_the_token_fetch_one() {
        // (edits, route, whether wxcard's operation there sends its token, so fetches one)
        type Case = (&'static [(&'static str, &'static str)], RouteId, bool);
        let cases: [Case; 6] = [
            (&[], RouteId::TemplatesList, true),
            // other placeholders in the path, the query or the headers are not the token
            (
                &[(
                    LIST_AUTH,
                    "          headers: {X-Page: \"{{input.page}}\"}\n          # canonical filters",
                )],
                RouteId::TemplatesList,
                false,
            ),
            (
                &[(CREATE_AUTH, CREATE_PATH)],
                RouteId::TemplatesCreate,
                false,
            ),
            // the token in the query, in the body, or only in a signing step
            (
                &[
                    (LIST_AUTH, "          # canonical filters"),
                    (
                        LIST_QUERY_END,
                        "            per_page: \"{{input.per_page}}\"\n            access_token: \"{{auth.token}}\"\n",
                    ),
                ],
                RouteId::TemplatesList,
                true,
            ),
            (
                &[
                    (CREATE_AUTH, CREATE_PATH),
                    (
                        CREATE_BODY_END,
                        "            end_at: \"{{input.end_at}}\"\n            access_token: \"{{auth.token}}\"\n        response:",
                    ),
                ],
                RouteId::TemplatesCreate,
                true,
            ),
            (
                &[
                    (CREATE_AUTH, CREATE_PATH),
                    (
                        CREATE_BODY_END,
                        "            end_at: \"{{input.end_at}}\"\n        steps:\n          - name: sign\n            input: \"{{auth.token}}{{request.body}}\"\n            apply: [md5, hex_lower]\n            into: {header: X-Sign}\n        response:",
                    ),
                ],
                RouteId::TemplatesCreate,
                true,
            ),
        ];
        for (edits, route, sends) in cases {
            let (_, compiled) = compile_edited(edits);
            let (plan, _) = compiled.unwrap_or_else(|e| panic!("{edits:?}: {e:#?}"));
            let op = plan.route(route).of("wxcard").unwrap();
            assert_eq!(op.request.uses_auth, sends, "{edits:?}");
        }
    }

    /// op's `list_coupons` signs its query and body into `sign`.
    const OP_SIGN: &str = "            apply: [md5, hex_lower]\n            into: {query: sign}\n";
    const LATER_STEP: &str = "          - name: later\n            input: \"{{nonce}}\"\n            apply: [md5, hex_lower]\n            into: {var: later}\n";

    #[test]
    fn steps_that_make_variables_come_before_the_signing_steps() {
        // after a signing step the request is rendered already: the variable would reach nothing
        let (text, compiled) = compile_edited(&[(OP_SIGN, &format!("{OP_SIGN}{LATER_STEP}"))]);
        let errors = compiled.unwrap_err();
        let e = error_at(
            &errors,
            "vendors.op.operations.list_coupons.steps.1.into",
            &text,
            "into: {var: later}",
        );
        assert!(
            e.message
                .starts_with("step `later` comes after a signing step"),
            "{e}"
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        // before it, the same step is fine, and the request is rendered after it
        let (_, compiled) = compile_edited(&[(
            "        steps:\n          # sign = md5",
            &format!("        steps:\n{LATER_STEP}          # sign = md5"),
        )]);
        let (plan, _) = compiled.unwrap();
        let op = plan.route(RouteId::CouponsQuery).of("op").unwrap();
        assert_eq!(op.request.render_at, 1);
        // and a signing step's result goes into the query or a header, not a variable
        let (text, compiled) = compile_edited(&[(
            OP_SIGN,
            "            apply: [md5, hex_lower]\n            into: {var: sign}\n",
        )]);
        let errors = compiled.unwrap_err();
        let e = error_at(
            &errors,
            "vendors.op.operations.list_coupons.steps.0.into",
            &text,
            "into: {var: sign}",
        );
        assert!(e.message.contains("reads the rendered request"), "{e}");
    }
}
