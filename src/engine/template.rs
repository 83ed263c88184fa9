//! Request templates: strings with `{{ name | filter }}` placeholders, and JSON bodies whose
//! string leaves are such templates.
//!
//! Names are resolved once, when the plan is compiled, into [`Ref`]s (indexes, not strings),
//! so rendering a request is concatenation and nothing else. The names a template may use:
//!
//! | name | value |
//! | --- | --- |
//! | `member.id`, `member.openid` | the identity chosen for this vendor (one of them is absent) |
//! | `cred.<name>` | a credential declared under the vendor's `credentials` |
//! | `input.<name>` | a canonical input of the route (e.g. `input.package_id`) |
//! | `now.s`, `now.ms`, `now.rfc3339`, `now.date`, `now \| time:LAYOUT \| zone:ZONE` | the attempt's clock, in any layout and zone (`now.rfc3339` and `now.date` are UTC+08:00) |
//! | `nonce`, `nonce.hex`, `nonce.alnum` | a random positive integer, 32 hex digits, 32 letters and digits; each new for every attempt |
//! | `var.<name>` | the result of an earlier step with `into: {var: name}` |
//! | `page.number`, `page.offset`, `page.size`, `page.cursor` | vendor-side paging state (`page.offset` = items before this page; `page.cursor` absent on the first page) |
//! | `request.method`, `request.path`, `request.body`, `request.query.sorted_namevalue`, `request.query.sorted_pairs`, `request.query.sorted_pairs_encoded` | the rendered request (signing steps only) |
//!
//! A string that is exactly one placeholder keeps the value's absence: the body field, query
//! parameter or header it fills is left out when the value is absent. Filters: `number` (emit
//! a JSON number), `json` (embed a JSON value as is).
use std::borrow::Cow;

use serde_json::Value;

/// A resolved placeholder name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    MemberId,
    MemberOpenid,
    Cred(usize),
    Input(usize),
    /// The attempt's clock, written as entry N of the request's clock table.
    Now(usize),
    Nonce,
    /// 32 lowercase hex digits (128 random bits), new for every attempt.
    NonceHex,
    /// 32 random letters and digits, new for every attempt (pay-v2's `nonce_str`).
    NonceAlnum,
    Var(usize),
    PageNumber,
    /// `(page.number − paging.first_page) × page.size`: offset/limit paging.
    PageOffset,
    PageSize,
    PageCursor,
    RequestMethod,
    RequestPath,
    /// The path and query string as sent (`/v3/x?a=1`).
    RequestTarget,
    RequestBody,
    QuerySortedNameValue,
    QuerySortedPairs,
    QuerySortedPairsEncoded,
    /// The vendor's access token (token-endpoint auth).
    AuthToken,
}

impl Ref {
    /// Whether the value exists only once the request is rendered.
    pub fn reads_request(self) -> bool {
        matches!(
            self,
            Ref::RequestMethod
                | Ref::RequestPath
                | Ref::RequestTarget
                | Ref::RequestBody
                | Ref::QuerySortedNameValue
                | Ref::QuerySortedPairs
                | Ref::QuerySortedPairsEncoded
        )
    }
}

#[derive(Debug, Clone)]
pub enum Filter {
    Text,
    Number,
    Json,
    /// `| map:NAME`: the value translated by the operation's map NAME (absent when unmapped).
    Map(usize),
    /// `| then:TEXT`: TEXT when the value is present, absent otherwise.
    Then(String),
    /// `| time:LAYOUT | zone:ZONE` on a canonical time input: re-written in that layout.
    Time(crate::engine::time::Rendering),
}

#[derive(Debug, Clone)]
pub struct Placeholder {
    pub name: Ref,
    pub filter: Filter,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Hole(Placeholder),
}

/// A compiled template string.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

/// What names mean while one operation is compiled.
pub trait Scope {
    /// Resolves a dotted name, or says why it cannot be used here.
    fn resolve(&self, name: &str) -> Result<Ref, String>;
    /// The value of `r` when it is known at start-up (credentials, when serving), so keys
    /// made only of such values can be prepared once.
    fn fixed(&self, _r: Ref) -> Option<Cow<'_, str>> {
        None
    }
    /// The clock written as `rendering` (`{{now | time:… | zone:…}}`): a `Ref::Now` into the
    /// request's clock table.
    fn clock(&self, _rendering: crate::engine::time::Rendering) -> Result<Ref, String> {
        Err("the clock is not available here".to_owned())
    }
    /// The index of the value map `name` (for `| map:NAME`).
    fn map_index(&self, _name: &str) -> Option<usize> {
        None
    }
}

/// The values of one attempt.
pub trait Values {
    /// The text of `r`, or `None` when it is absent.
    fn text(&self, r: Ref) -> Option<Cow<'_, str>>;
    /// The JSON value of `r` (for `| json`); defaults to its text.
    fn json(&self, r: Ref) -> Option<Value> {
        self.text(r).map(|t| Value::String(t.into_owned()))
    }
    /// `key` translated by value map `map`.
    fn mapped(&self, _map: usize, _key: &str) -> Option<String> {
        None
    }
}

/// The text a placeholder contributes, after its filter.
fn hole_text<'v>(p: &Placeholder, values: &'v dyn Values) -> Option<Cow<'v, str>> {
    let v = values.text(p.name)?;
    match &p.filter {
        Filter::Map(m) => values.mapped(*m, &v).map(Cow::Owned),
        Filter::Then(text) => Some(Cow::Owned(text.clone())),
        Filter::Time(r) => crate::engine::time::read_canonical(&v).map(|t| Cow::Owned(r.write(t))),
        Filter::Text | Filter::Number | Filter::Json => Some(v),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The value is not quoted: it may be a credential.
    #[error("a `| number` placeholder did not render a number")]
    NotANumber,
}

impl Template {
    /// Parses `source`, resolving every name through `scope`.
    pub fn compile(source: &str, scope: &dyn Scope) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                if rest[..start].contains("}}") {
                    return Err(format!("stray `}}}}` in template `{source}`"));
                }
                parts.push(Part::Lit(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in template `{source}`"))?;
            parts.push(Part::Hole(placeholder(&after[..end], scope)?));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("stray `}}}}` in template `{source}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    pub fn of(name: Ref) -> Template {
        Template {
            parts: vec![Part::Hole(Placeholder {
                name,
                filter: Filter::Text,
            })],
        }
    }

    /// The placeholder when the template is exactly one placeholder.
    pub fn whole(&self) -> Option<&Placeholder> {
        match self.parts.as_slice() {
            [Part::Hole(p)] => Some(p),
            _ => None,
        }
    }

    pub fn refs(&self) -> impl Iterator<Item = Ref> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Hole(h) => Some(h.name),
            Part::Lit(_) => None,
        })
    }

    /// Renders to text. A whole-placeholder template gives `None` when its value is absent;
    /// inside a longer template an absent value is empty text.
    pub fn render(&self, values: &dyn Values) -> Option<String> {
        self.render_with(values, |s, out| out.push_str(s))
    }

    /// Like `render`, with each placeholder value percent-encoded (for URL paths: a member id
    /// never changes the shape of the path).
    pub fn render_encoded(&self, values: &dyn Values) -> Option<String> {
        self.render_with(values, |s, out| crate::crypto::percent_encode_into(out, s))
    }

    fn render_with(&self, values: &dyn Values, put: impl Fn(&str, &mut String)) -> Option<String> {
        // sized once for the usual value (an id, a timestamp): growing it reallocated
        let guess = self.parts.iter().map(|p| match p {
            Part::Lit(s) => s.len(),
            Part::Hole(_) => 24,
        });
        let mut out = String::with_capacity(guess.sum());
        let (mut holes, mut present) = (0, 0);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Hole(p) => {
                    holes += 1;
                    if let Some(v) = hole_text(p, values) {
                        present += 1;
                        put(&v, &mut out);
                    }
                }
            }
        }
        // a template whose every value is absent is absent (the field or parameter is left
        // out); one with some values present renders the absent ones as empty text
        (holes == 0 || present > 0).then_some(out)
    }
}

fn placeholder(inner: &str, scope: &dyn Scope) -> Result<Placeholder, String> {
    let (name, filters) = match inner.split_once('|') {
        None => (inner.trim(), None),
        Some((n, f)) => (n.trim(), Some(f)),
    };
    if name.is_empty() {
        return Err("empty placeholder `{{}}`".to_owned());
    }
    let mut filter = Filter::Text;
    let (mut layout, mut zone) = (None, None);
    let mut rest = filters;
    while let Some(f) = rest {
        // `then:TEXT` takes the rest of the placeholder, `|` included
        let (this, next) = match f.trim_start().starts_with("then:") {
            true => (f, None),
            false => match f.split_once('|') {
                Some((a, b)) => (a, Some(b)),
                None => (f, None),
            },
        };
        rest = next;
        let this = this.trim();
        let one = |f: Filter| -> Result<Filter, String> {
            match filter {
                Filter::Text => Ok(f),
                _ => Err(format!(
                    "`{{{{{inner}}}}}`: one of number, json, map:, then: at a time"
                )),
            }
        };
        match this {
            "number" => filter = one(Filter::Number)?,
            "json" => filter = one(Filter::Json)?,
            f if f.starts_with("then:") => {
                filter = one(Filter::Then(f["then:".len()..].to_owned()))?
            }
            f if f.starts_with("map:") => {
                let map = f["map:".len()..].trim();
                let i = scope.map_index(map).ok_or_else(|| {
                    format!(
                        "`{{{{{inner}}}}}`: the operation has no value map `{map}` under `maps:`"
                    )
                })?;
                filter = one(Filter::Map(i))?;
            }
            f if f.starts_with("time:") => {
                layout = Some(
                    crate::engine::time::layout(f["time:".len()..].trim())
                        .map_err(|e| format!("`{{{{{inner}}}}}`: {e}"))?,
                );
            }
            f if f.starts_with("zone:") => {
                zone = Some(
                    crate::engine::time::zone(f["zone:".len()..].trim())
                        .map_err(|e| format!("`{{{{{inner}}}}}`: {e}"))?,
                );
            }
            other => {
                return Err(format!(
                    "unknown filter `{other}` in `{{{{{inner}}}}}` (known: number, json, map:NAME, then:TEXT, time:LAYOUT, zone:ZONE)"
                ));
            }
        }
    }
    if layout.is_none() && zone.is_some() {
        return Err(format!(
            "`{{{{{inner}}}}}`: `zone:` goes with `time:LAYOUT`"
        ));
    }
    let rendering = layout.map(|layout| crate::engine::time::Rendering {
        layout,
        zone: zone.unwrap_or_else(crate::engine::time::canonical_zone),
    });
    let name = match (name, rendering) {
        ("now", Some(r)) => scope.clock(r)?,
        ("now", None) => {
            return Err(format!(
                "`{{{{{inner}}}}}`: say how to write the clock: `now | time:LAYOUT` (and `| zone:ZONE`), or now.s, now.ms, now.rfc3339, now.date"
            ));
        }
        (name, Some(r)) => {
            filter = match filter {
                Filter::Text => Filter::Time(r),
                _ => {
                    return Err(format!(
                        "`{{{{{inner}}}}}`: `time:` does not combine with number, json, map: or then:"
                    ));
                }
            };
            scope.resolve(name)?
        }
        (name, None) => scope.resolve(name)?,
    };
    Ok(Placeholder { name, filter })
}

/// A JSON body template.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    /// A value without placeholders, written as it is.
    Literal(Value),
    Text(Template),
    Object(Vec<Member>),
    Array(Vec<JsonTemplate>),
}

/// An object member: its key, JSON-escaped once when compiled, and its value.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: String,
    key_json: Vec<u8>,
    pub value: JsonTemplate,
}

impl Member {
    pub fn new(key: String, value: JsonTemplate) -> Member {
        let key_json = serde_json::to_vec(&key).expect("a string serializes");
        Member {
            key,
            key_json,
            value,
        }
    }
}

impl JsonTemplate {
    /// Compiles `value`; `key_order(path)` gives the file order of an object's keys (serde maps
    /// are sorted), and `path` names the value in errors.
    pub fn compile(
        value: &Value,
        scope: &dyn Scope,
        path: &str,
        key_order: &dyn Fn(&str, Vec<String>) -> Vec<String>,
        errors: &mut Vec<(String, String)>,
    ) -> JsonTemplate {
        match value {
            Value::String(s) if s.contains("{{") || s.contains("}}") => {
                match Template::compile(s, scope) {
                    Ok(t) => JsonTemplate::Text(t),
                    Err(e) => {
                        errors.push((path.to_owned(), e));
                        JsonTemplate::Literal(Value::Null)
                    }
                }
            }
            Value::Object(map) => {
                let keys = key_order(path, map.keys().cloned().collect());
                JsonTemplate::Object(
                    keys.into_iter()
                        .map(|k| {
                            let child = format!("{path}.{k}");
                            let t =
                                JsonTemplate::compile(&map[&k], scope, &child, key_order, errors);
                            Member::new(k, t)
                        })
                        .collect(),
                )
            }
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        JsonTemplate::compile(v, scope, &format!("{path}.{i}"), key_order, errors)
                    })
                    .collect(),
            ),
            other => JsonTemplate::Literal(other.clone()),
        }
    }

    pub fn refs(&self) -> Vec<Ref> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }

    fn collect_refs(&self, out: &mut Vec<Ref>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Text(t) => out.extend(t.refs()),
            JsonTemplate::Object(fields) => fields.iter().for_each(|f| f.value.collect_refs(out)),
            JsonTemplate::Array(items) => items.iter().for_each(|t| t.collect_refs(out)),
        }
    }

    /// The members of an object template.
    pub fn members(&self) -> Option<&[Member]> {
        match self {
            JsonTemplate::Object(m) => Some(m),
            _ => None,
        }
    }

    /// Whether it renders to one text value (no nested object or list).
    pub fn is_scalar(&self) -> bool {
        match self {
            JsonTemplate::Text(_) => true,
            JsonTemplate::Literal(v) => !v.is_array() && !v.is_object(),
            _ => false,
        }
    }

    /// The text of a scalar template (strings as they are, numbers and booleans as written),
    /// or None when its value is absent (or it is not a scalar).
    pub fn text(&self, values: &dyn Values) -> Result<Option<String>, RenderError> {
        Ok(match self {
            JsonTemplate::Text(t) => match t.whole() {
                Some(p) => render_hole(p, values)?.and_then(|v| match v {
                    Value::String(s) => Some(s),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }),
                None => t.render(values),
            },
            JsonTemplate::Literal(Value::String(s)) => Some(s.clone()),
            JsonTemplate::Literal(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            _ => None,
        })
    }

    /// Appends a top-level field (objects only).
    pub fn push_field(&mut self, key: String, value: JsonTemplate) -> bool {
        match self {
            JsonTemplate::Object(fields) if !fields.iter().any(|f| f.key == key) => {
                fields.push(Member::new(key, value));
                true
            }
            _ => false,
        }
    }

    /// Writes compact JSON. Fields whose whole-placeholder value is absent are left out.
    pub fn render(&self, values: &dyn Values, out: &mut Vec<u8>) -> Result<(), RenderError> {
        match self {
            JsonTemplate::Literal(v) => write_json(out, v),
            JsonTemplate::Text(t) => match t.whole() {
                Some(p) => match render_hole(p, values)? {
                    Some(v) => write_json(out, &v),
                    None => out.extend_from_slice(b"null"),
                },
                None => write_json(out, &Value::String(t.render(values).unwrap_or_default())),
            },
            JsonTemplate::Object(fields) => {
                out.push(b'{');
                let mut first = true;
                for f in fields {
                    let mark = out.len();
                    if !first {
                        out.push(b',');
                    }
                    out.extend_from_slice(&f.key_json);
                    out.push(b':');
                    if f.value.render_member(values, out)? {
                        first = false;
                    } else {
                        // an absent whole-placeholder value leaves its member out
                        out.truncate(mark);
                    }
                }
                out.push(b'}');
            }
            JsonTemplate::Array(items) => {
                out.push(b'[');
                for (i, t) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    t.render(values, out)?;
                }
                out.push(b']');
            }
        }
        Ok(())
    }

    /// Renders an object member's value once; false (and nothing useful written) when the
    /// value is absent, so the caller drops the member.
    fn render_member(&self, values: &dyn Values, out: &mut Vec<u8>) -> Result<bool, RenderError> {
        match self {
            JsonTemplate::Text(t) => {
                let value = match t.whole() {
                    Some(p) => render_hole(p, values)?,
                    None => t.render(values).map(Value::String),
                };
                match value {
                    Some(v) => {
                        write_json(out, &v);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            other => other.render(values, out).map(|()| true),
        }
    }
}

fn render_hole(p: &Placeholder, values: &dyn Values) -> Result<Option<Value>, RenderError> {
    Ok(match &p.filter {
        Filter::Json => values.json(p.name),
        Filter::Number => match values.text(p.name) {
            None => None,
            Some(t) => Some(
                serde_json::from_str::<serde_json::Number>(t.trim())
                    .map(Value::Number)
                    .map_err(|_| RenderError::NotANumber)?,
            ),
        },
        Filter::Text | Filter::Map(_) | Filter::Then(_) | Filter::Time(_) => {
            hole_text(p, values).map(|t| Value::String(t.into_owned()))
        }
    })
}

fn write_json(out: &mut Vec<u8>, v: &Value) {
    // serializing a serde_json::Value into a Vec cannot fail
    serde_json::to_writer(out, v).expect("JSON values serialize");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct S;
    impl Scope for S {
        fn resolve(&self, name: &str) -> Result<Ref, String> {
            match name {
                "member.id" => Ok(Ref::MemberId),
                "member.openid" => Ok(Ref::MemberOpenid),
                "cred.secret" => Ok(Ref::Cred(0)),
                "now.ms" => Ok(Ref::Now(0)),
                "input.obj" => Ok(Ref::Input(0)),
                other => Err(format!("unknown name `{other}`")),
            }
        }
    }

    struct V;
    impl Values for V {
        fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
            match r {
                Ref::MemberId => Some("K1".into()),
                Ref::Cred(0) => Some("s3".into()),
                Ref::Now(0) => Some("1700000000000".into()),
                Ref::Input(0) => Some("{}".into()),
                _ => None,
            }
        }
        fn json(&self, r: Ref) -> Option<Value> {
            (r == Ref::Input(0)).then(|| json!({"a": [1, 2]}))
        }
    }

    #[test]
    fn renders_text_with_absent_values_as_empty_inside_and_none_whole() {
        let t =
            Template::compile("a{{member.id}}-{{ cred.secret }}{{member.openid}}b", &S).unwrap();
        assert_eq!(t.render(&V).unwrap(), "aK1-s3b");
        let whole = Template::compile("{{member.openid}}", &S).unwrap();
        assert_eq!(whole.render(&V), None);
        // every value absent: the template is absent; some present: the rest render empty
        let cond = Template::compile(
            "{{member.id | then:id,=;}}{{member.openid | then:openid,=;}}",
            &S,
        )
        .unwrap();
        assert_eq!(cond.render(&V).unwrap(), "id,=;");
        let none = Template::compile("x{{member.openid}}y", &S).unwrap();
        assert_eq!(none.render(&V), None);
        let path = Template::compile("/m/{{cred.secret}}/{{now.ms}}", &S).unwrap();
        assert_eq!(path.render_encoded(&V).unwrap(), "/m/s3/1700000000000");
    }

    #[test]
    fn compile_errors_say_what_is_wrong() {
        assert!(
            Template::compile("{{nope}}", &S)
                .unwrap_err()
                .contains("unknown name `nope`")
        );
        assert!(
            Template::compile("{{member.id", &S)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::compile("x}}", &S).unwrap_err().contains("stray"));
        assert!(
            Template::compile("{{member.id}} }} {{member.id}}", &S)
                .unwrap_err()
                .contains("stray")
        );
        assert!(
            Template::compile("{{member.id | upper}}", &S)
                .unwrap_err()
                .contains("unknown filter")
        );
        assert!(
            Template::compile("{{ }}", &S)
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn body_keeps_key_order_types_and_drops_absent_fields() {
        let body = json!({"b": 1, "a": "{{member.id}}", "gone": "{{member.openid}}",
                          "ts": "{{now.ms | number}}", "obj": "{{input.obj | json}}", "mix": "x{{member.id}}"});
        let order = |_: &str, mut keys: Vec<String>| {
            // file order: b, a, gone, ts, obj, mix
            let want = ["b", "a", "gone", "ts", "obj", "mix"];
            keys.sort_by_key(|k| want.iter().position(|w| w == k));
            keys
        };
        let mut errors = Vec::new();
        let t = JsonTemplate::compile(&body, &S, "body", &order, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let mut out = Vec::new();
        t.render(&V, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":1,"a":"K1","ts":1700000000000,"obj":{"a":[1,2]},"mix":"xK1"}"#
        );
    }

    #[test]
    fn number_filter_rejects_text() {
        let t = JsonTemplate::Text(Template::compile("{{member.id | number}}", &S).unwrap());
        assert_eq!(t.render(&V, &mut Vec::new()), Err(RenderError::NotANumber));
    }

    #[test]
    fn body_errors_carry_their_path() {
        let mut errors = Vec::new();
        let body = json!({"x": {"y": "{{bad}}"}});
        JsonTemplate::compile(&body, &S, "body", &|_, k| k, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "body.x.y");
    }

    #[test]
    fn each_body_member_is_rendered_once() {
        use std::cell::Cell;
        struct Counting(Cell<usize>);
        impl Values for Counting {
            fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
                self.0.set(self.0.get() + 1);
                (r == Ref::MemberId).then(|| "K1".into())
            }
        }
        let body =
            json!({"id": "{{member.id}}", "open": "{{member.openid}}", "k": "x{{member.id}}"});
        let mut errors = Vec::new();
        let t = JsonTemplate::compile(&body, &S, "body", &|_, k| k, &mut errors);
        let values = Counting(Cell::new(0));
        let mut out = Vec::new();
        t.render(&values, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":"K1","k":"xK1"}"#);
        assert_eq!(values.0.get(), 3, "one value read per placeholder");
    }

    /// A scope with the value map `kinds`, else like `S`.
    struct Maps;
    impl Scope for Maps {
        fn resolve(&self, name: &str) -> Result<Ref, String> {
            S.resolve(name)
        }
        fn map_index(&self, name: &str) -> Option<usize> {
            (name == "kinds").then_some(0)
        }
    }

    /// Values with only texts, as the decrypt and transform scopes give them: no maps, no
    /// JSON of their own.
    struct Plain;
    impl Values for Plain {
        fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
            (r == Ref::MemberId).then(|| "K1".into())
        }
    }

    #[test]
    fn without_maps_a_map_filter_is_refused_and_renders_absent() {
        // a scope without value maps (a decrypt or transform key) refuses `| map:`
        assert!(
            Template::compile("{{member.id | map:kinds}}", &S)
                .unwrap_err()
                .contains("no value map `kinds`")
        );
        // values that translate nothing leave a mapped value absent, never some other text
        let mapped = Template::compile("{{member.id | map:kinds}}", &Maps).unwrap();
        assert_eq!(mapped.render(&Plain), None);
        let inside = Template::compile("a{{member.id | map:kinds}}b{{member.id}}", &Maps).unwrap();
        assert_eq!(inside.render(&Plain).as_deref(), Some("abK1"));
    }

    #[test]
    fn json_of_a_text_value_is_a_json_string() {
        let body = json!({"id": "{{member.id | json}}", "gone": "{{member.openid | json}}"});
        let t = JsonTemplate::compile(&body, &S, "body", &|_, k| k, &mut Vec::new());
        let mut out = Vec::new();
        t.render(&Plain, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":"K1"}"#);
    }

    #[test]
    fn a_stray_or_unclosed_brace_pair_in_a_body_string_is_refused() {
        for s in ["x}}", "{{member.id", "a }} b"] {
            let mut errors = Vec::new();
            JsonTemplate::compile(&json!({"k": s}), &S, "body", &|_, k| k, &mut errors);
            assert_eq!(errors.len(), 1, "{s}: {errors:?}");
            assert_eq!(errors[0].0, "body.k");
        }
    }

    #[test]
    fn a_body_names_the_values_of_its_nested_members_and_lists() {
        let body = json!({"a": {"b": ["{{member.id}}", 1, {"c": "x{{cred.secret}}"}]},
                          "d": "{{now.ms | number}}", "e": "plain"});
        let t = JsonTemplate::compile(&body, &S, "body", &|_, k| k, &mut Vec::new());
        assert_eq!(t.refs(), vec![Ref::MemberId, Ref::Cred(0), Ref::Now(0)]);
    }

    #[test]
    fn a_pushed_field_is_added_once_and_only_to_an_object() {
        let sig = || JsonTemplate::Text(Template::compile("{{cred.secret}}", &S).unwrap());
        let mut body = JsonTemplate::compile(
            &json!({"a": 1, "b": 2}),
            &S,
            "body",
            &|_, k| k,
            &mut Vec::new(),
        );
        assert!(body.push_field("sign".into(), sig()));
        // the key is taken now, as one in the file would be
        assert!(!body.push_field("sign".into(), sig()));
        assert!(!body.push_field("a".into(), sig()));
        let mut out = Vec::new();
        body.render(&V, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1,"b":2,"sign":"s3"}"#
        );
        let mut list = JsonTemplate::Literal(json!([1]));
        assert!(!list.push_field("sign".into(), sig()));
    }

    #[test]
    fn list_items_are_comma_separated() {
        let body = json!({"l": [1, "{{member.id}}", [], {"x": "{{cred.secret}}"}]});
        let t = JsonTemplate::compile(&body, &S, "body", &|_, k| k, &mut Vec::new());
        let mut out = Vec::new();
        t.render(&V, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"l":[1,"K1",[],{"x":"s3"}]}"#
        );
    }
}
