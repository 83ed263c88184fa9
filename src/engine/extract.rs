//! Reading vendor answers: compiled JSONPaths, envelope conditions, and field mappings that
//! turn one vendor item into one canonical record.
//!
//! JSONPaths are parsed once with jsonpath-rust (RFC 9535). Plain paths of names and indexes
//! (`$.data.list`, `$.ticketRule.useEndTime`, `$['a'][0]`) — nearly all of them — are then
//! walked directly, which is two orders of magnitude cheaper than the general evaluator;
//! anything else (filters, wildcards, descendants) runs through jsonpath-rust.
use std::collections::HashMap;
use std::sync::Arc;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use super::conversions::{self, Conversion, ConversionKind};
use super::convert::{self, Decimal};
use super::time::{self, TimeSpec};
use crate::canonical::schema::{FieldDef, FieldType};

/// A compiled JSONPath.
#[derive(Debug, Clone)]
pub struct JsonPath {
    source: String,
    plan: PathPlan,
}

#[derive(Debug, Clone)]
enum PathPlan {
    Plain(Vec<Seg>),
    General(Box<JpQuery>),
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

impl JsonPath {
    pub fn compile(source: &str) -> Result<JsonPath, String> {
        let query = parse_json_path(source).map_err(|e| format!("bad JSONPath `{source}`: {e}"))?;
        let plan = match plain_segments(source) {
            Some(segs) => PathPlan::Plain(segs),
            None => PathPlan::General(Box::new(query)),
        };
        Ok(JsonPath {
            source: source.to_owned(),
            plan,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every value the path selects (a plain path selects at most one).
    pub fn all<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        match &self.plan {
            PathPlan::Plain(_) => self.first(v).into_iter().collect(),
            PathPlan::General(q) => js_path_process(q, v)
                .map(|r| {
                    r.into_iter()
                        .map(|r| r.val)
                        .filter(|v| !v.is_null())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The first value the path selects that is not null.
    pub fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        match &self.plan {
            PathPlan::Plain(segs) => {
                let mut cur = v;
                for s in segs {
                    cur = match s {
                        Seg::Key(k) => cur.get(k.as_str())?,
                        Seg::Index(i) => cur.get(*i)?,
                    };
                }
                (!cur.is_null()).then_some(cur)
            }
            PathPlan::General(q) => js_path_process(q, v)
                .ok()?
                .into_iter()
                .map(|r| r.val)
                .find(|v| !v.is_null()),
        }
    }
}

/// `$`, `.name`, `['name']`, `[0]` only; None for anything richer.
fn plain_segments(source: &str) -> Option<Vec<Seg>> {
    let mut rest = source.strip_prefix('$')?;
    let mut segs = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            if r.starts_with('.') {
                return None; // descendant
            }
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty()
                || name == "*"
                || !name.chars().all(|c| c.is_alphanumeric() || c == '_')
            {
                return None;
            }
            segs.push(Seg::Key(name.to_owned()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                if q.contains(['\\', '\'', '"']) {
                    return None;
                }
                segs.push(Seg::Key(q.to_owned()));
            } else {
                segs.push(Seg::Index(inner.parse().ok()?));
            }
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(segs)
}

/// Loose equality of vendor values: `200` = `"200"` = `200.0`; `true` = `"true"`.
pub fn loosely_equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (Decimal::from_json(a), Decimal::from_json(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (convert::text(a), convert::text(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// A test on a vendor value.
#[derive(Debug, Clone)]
pub struct Condition {
    pub path: JsonPath,
    pub test: Test,
}

#[derive(Debug, Clone)]
pub enum Test {
    OneOf(Vec<Value>),
    Present(bool),
}

impl Condition {
    pub fn holds(&self, v: &Value) -> bool {
        let found = self.path.first(v);
        match &self.test {
            Test::Present(want) => found.is_some() == *want,
            Test::OneOf(values) => {
                found.is_some_and(|f| values.iter().any(|w| loosely_equal(f, w)))
            }
        }
    }

    pub fn compile(
        path: &str,
        one_of: &[Value],
        present: Option<bool>,
    ) -> Result<Condition, String> {
        let path = JsonPath::compile(path)?;
        let test = match (one_of.is_empty(), present) {
            (false, None) => Test::OneOf(one_of.to_vec()),
            (true, Some(p)) => Test::Present(p),
            (true, None) => {
                return Err("a condition needs `in: [...]` or `present: true|false`".to_owned());
            }
            (false, Some(_)) => {
                return Err("a condition has either `in` or `present`, not both".to_owned());
            }
        };
        Ok(Condition { path, test })
    }

    /// From a YAML mapping `{path, in | present}` kept as JSON.
    pub fn from_json(v: &Value) -> Result<Condition, String> {
        let Value::Object(m) = v else {
            return Err("a condition is a mapping `{path: $.x, in: [..]}`".to_owned());
        };
        for k in m.keys() {
            if !["path", "in", "present"].contains(&k.as_str()) {
                return Err(format!(
                    "unknown key `{k}` in a condition (known: path, in, present)"
                ));
            }
        }
        let path = m
            .get("path")
            .and_then(Value::as_str)
            .ok_or("a condition needs a `path`")?;
        let one_of = match m.get("in") {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => vec![other.clone()],
        };
        let present = match m.get("present") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err("`present` is true or false".to_owned()),
        };
        Condition::compile(path, &one_of, present)
    }
}

/// How to produce one canonical field from one vendor item.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    when: Option<Condition>,
    source: Source,
    /// Vendor value → canonical value (exact text first, then loosely: `1.0` finds `"1"`).
    map: Option<(HashMap<String, Value>, Option<Value>)>,
    convert: Convert,
    add_days: Option<JsonPath>,
}

#[derive(Debug, Clone)]
enum Source {
    Paths(Vec<JsonPath>),
    Const(Value),
    FirstOf(Vec<FieldSpec>),
}

#[derive(Debug, Clone)]
enum Convert {
    /// The field type's own reading.
    Natural,
    /// A conversion of the registry (`convert: NAME`).
    Named(&'static dyn ConversionKind, Arc<dyn Conversion>),
    Time(TimeSpec),
    /// Nested records: each element of the list mapped with its own fields.
    Records {
        schema: &'static [FieldDef],
        fields: Vec<Option<FieldSpec>>,
    },
}

/// The keys of a field mapping; conversions add their own (`conversions::extra_keys`).
const FIELD_KEYS: &[&str] = &[
    "path", "value", "when", "map", "default", "convert", "time", "first_of", "add_days", "fields",
];

fn known_keys() -> String {
    let keys: Vec<&str> = FIELD_KEYS
        .iter()
        .copied()
        .chain(conversions::extra_keys())
        .collect();
    keys.join(", ")
}

/// Compile context of a field: its definition and the vendor origin for URLs.
pub struct FieldContext<'a> {
    pub def: &'a FieldDef,
    pub origin: &'a str,
}

impl FieldSpec {
    /// Compiles a field mapping; errors are (sub-path, message).
    pub fn compile(v: &Value, def: &FieldDef) -> Result<FieldSpec, (String, String)> {
        let at = |p: &str, e: String| (p.to_owned(), e);
        let m = match v {
            Value::String(p) => {
                let spec = FieldSpec {
                    when: None,
                    source: Source::Paths(vec![JsonPath::compile(p).map_err(|e| at("", e))?]),
                    map: None,
                    convert: Convert::Natural,
                    add_days: None,
                };
                spec.check(def)?;
                return Ok(spec);
            }
            Value::Object(m) => m,
            _ => {
                return Err(at(
                    "",
                    "a field is a JSONPath string or a mapping".to_owned(),
                ));
            }
        };
        for k in m.keys() {
            if !FIELD_KEYS.contains(&k.as_str()) && !conversions::extra_keys().any(|e| e == k) {
                return Err(at(
                    k,
                    format!("unknown key `{k}` (known: {})", known_keys()),
                ));
            }
        }
        let sources = ["path", "value", "first_of"]
            .iter()
            .filter(|k| m.contains_key(**k))
            .count();
        if sources != 1 {
            return Err(at(
                "",
                "a field has exactly one of `path`, `value` or `first_of`".to_owned(),
            ));
        }
        if m.contains_key("first_of")
            && let Some(k) = ["map", "default", "convert", "time", "add_days"]
                .into_iter()
                .chain(conversions::extra_keys())
                .find(|k| m.contains_key(*k))
        {
            return Err(at(
                k,
                format!("`{k}` beside `first_of` would do nothing: put it in each alternative"),
            ));
        }
        let source = if let Some(p) = m.get("path") {
            let paths = match p {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .ok_or_else(|| at("path", "paths are strings".to_owned()))
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(at("path", "a JSONPath string or a list of them".to_owned())),
            };
            Source::Paths(
                paths
                    .into_iter()
                    .map(|p| JsonPath::compile(p).map_err(|e| at("path", e)))
                    .collect::<Result<_, _>>()?,
            )
        } else if let Some(v) = m.get("value") {
            if let FieldType::Enum(allowed) = def.ty
                && !m.contains_key("map")
                && !v.as_str().is_some_and(|s| allowed.contains(&s))
            {
                return Err(at(
                    "value",
                    format!(
                        "not a canonical {} (one of: {})",
                        def.name,
                        allowed.join(", ")
                    ),
                ));
            }
            Source::Const(v.clone())
        } else {
            let Some(Value::Array(items)) = m.get("first_of") else {
                return Err(at("first_of", "a list of field mappings".to_owned()));
            };
            Source::FirstOf(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        FieldSpec::compile(item, def)
                            .map_err(|(p, e)| (format!("first_of.{i}{}", dotted(&p)), e))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        let when = m
            .get("when")
            .map(Condition::from_json)
            .transpose()
            .map_err(|e| at("when", e))?;
        let default = m.get("default").cloned();
        let map = match m.get("map") {
            None => {
                if default.is_some() {
                    return Err(at("default", "`default` goes with `map`".to_owned()));
                }
                None
            }
            Some(Value::Object(pairs)) => {
                let table: HashMap<String, Value> =
                    pairs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                if let FieldType::Enum(allowed) = def.ty {
                    let entries = table
                        .iter()
                        .map(|(k, v)| (format!("map.{k}"), v))
                        .chain(default.iter().map(|d| ("default".to_owned(), d)));
                    for (place, v) in entries {
                        let ok = v.as_str().is_some_and(|s| allowed.contains(&s)) || v.is_null();
                        if !ok {
                            return Err(at(
                                &place,
                                format!(
                                    "`{}` is not a canonical {} (one of: {})",
                                    convert::text(v).unwrap_or_else(|| v.to_string()),
                                    def.name,
                                    allowed.join(", ")
                                ),
                            ));
                        }
                    }
                }
                Some((table, default))
            }
            Some(_) => {
                return Err(at(
                    "map",
                    "a mapping of vendor value to canonical value".to_owned(),
                ));
            }
        };
        let mut convert = match m.get("convert") {
            None => Convert::Natural,
            Some(Value::String(c)) => {
                let kind = conversions::find(c).ok_or_else(|| {
                    at(
                        "convert",
                        format!(
                            "unknown conversion `{c}` (known: {}; times use `time:`)",
                            conversions::known()
                        ),
                    )
                })?;
                Convert::Named(kind, kind.compile(m)?)
            }
            Some(_) => return Err(at("convert", "the name of a conversion".to_owned())),
        };
        // a conversion's own keys go with that conversion only
        for k in conversions::extra_keys() {
            let mine =
                matches!(&convert, Convert::Named(kind, _) if kind.extra_keys().contains(&k));
            if m.contains_key(k) && !mine {
                return Err(at(
                    k,
                    format!("`{k}` goes with the conversion that reads it (`convert: …`)"),
                ));
            }
        }
        match (def.ty, m.get("fields")) {
            (FieldType::Records(schema), Some(Value::Object(fields))) => {
                let mut compiled: Vec<Option<FieldSpec>> = vec![None; schema.len()];
                for (name, spec) in fields {
                    let Some(slot) = crate::canonical::schema::slot(schema, name) else {
                        let known: Vec<&str> = schema.iter().map(|d| d.name).collect();
                        return Err(at(
                            &format!("fields.{name}"),
                            format!(
                                "`{name}` is not a field of `{}` (known: {})",
                                def.name,
                                known.join(", ")
                            ),
                        ));
                    };
                    compiled[slot] = Some(
                        FieldSpec::compile(spec, &schema[slot])
                            .map_err(|(p, e)| (format!("fields.{name}{}", dotted(&p)), e))?,
                    );
                }
                convert = Convert::Records {
                    schema,
                    fields: compiled,
                };
            }
            (FieldType::Records(_), _) => {
                return Err(at(
                    "fields",
                    format!(
                        "`{}` is a list of records: give `path` and `fields: {{…}}`",
                        def.name
                    ),
                ));
            }
            (_, Some(_)) => {
                return Err(at(
                    "fields",
                    "`fields` is only for lists of records".to_owned(),
                ));
            }
            (_, None) => {}
        }
        if let Some(t) = m.get("time") {
            if !matches!(convert, Convert::Natural) {
                return Err(at(
                    "time",
                    "a field has `convert` or `time`, not both".to_owned(),
                ));
            }
            convert = Convert::Time(TimeSpec::compile(t).map_err(|e| at("time", e))?);
        }
        let add_days = match m.get("add_days") {
            None => None,
            Some(Value::String(p)) => {
                if !matches!(convert, Convert::Time(_)) {
                    return Err(at(
                        "add_days",
                        "`add_days` needs `time:` to read the base time".to_owned(),
                    ));
                }
                Some(JsonPath::compile(p).map_err(|e| at("add_days", e))?)
            }
            Some(_) => return Err(at("add_days", "a JSONPath to a number of days".to_owned())),
        };
        let spec = FieldSpec {
            when,
            source,
            map,
            convert,
            add_days,
        };
        spec.check(def)?;
        Ok(spec)
    }

    /// Checks that the conversion fits the field's type.
    fn check(&self, def: &FieldDef) -> Result<(), (String, String)> {
        if matches!(self.source, Source::FirstOf(_)) {
            return Ok(()); // each alternative was checked on its own
        }
        let fits = match (&self.convert, def.ty) {
            (Convert::Natural, FieldType::Records(_)) => {
                return Err((
                    String::new(),
                    format!("`{}` needs `fields: {{…}}`", def.name),
                ));
            }
            (Convert::Natural, FieldType::Time) => {
                return Err((
                    String::new(),
                    format!(
                        "`{}` is a time: say how to read it with `time: {{formats: [...]}}`",
                        def.name
                    ),
                ));
            }
            (Convert::Natural, _) => true,
            (Convert::Named(kind, _), ty) => kind.fits(ty),
            (Convert::Time(_), FieldType::Time) => true,
            (Convert::Records { .. }, FieldType::Records(_)) => true,
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err((
                "convert".to_owned(),
                format!("this conversion does not fit the field `{}`", def.name),
            ))
        }
    }

    /// The canonical value of this field for `item`, or None (null).
    pub fn eval(&self, item: &Value, cx: &FieldContext<'_>) -> Option<Value> {
        if let Some(w) = &self.when
            && !w.holds(item)
        {
            return None;
        }
        let raw: Value = match &self.source {
            Source::Paths(paths) => paths.iter().find_map(|p| p.first(item))?.clone(),
            Source::Const(v) => v.clone(),
            Source::FirstOf(specs) => return specs.iter().find_map(|s| s.eval(item, cx)),
        };
        let value = match &self.map {
            None => raw,
            Some((table, default)) => {
                let key = convert::text(&raw)?;
                let found = table.get(&key).or_else(|| {
                    table
                        .iter()
                        .find(|(k, _)| loosely_equal(&Value::String((*k).clone()), &raw))
                        .map(|(_, v)| v)
                });
                match found {
                    Some(v) => v.clone(),
                    None => default.clone()?,
                }
            }
        };
        if value.is_null() {
            return None;
        }
        self.typed(&value, item, cx)
    }

    fn typed(&self, v: &Value, item: &Value, cx: &FieldContext<'_>) -> Option<Value> {
        match &self.convert {
            Convert::Named(_, c) => c.apply(v),
            Convert::Time(spec) => {
                let mut t = spec.read(v)?;
                if let Some(days) = &self.add_days {
                    let n = convert::fen(days.first(item)?)?;
                    t = t
                        .checked_add(jiff::SignedDuration::from_secs(n.checked_mul(86_400)?))
                        .ok()?;
                }
                Some(Value::String(time::canonical(t)))
            }
            Convert::Records { schema, fields } => {
                let items = v.as_array()?;
                let records = items
                    .iter()
                    .filter_map(|item| {
                        let mut row = Vec::with_capacity(schema.len());
                        for (def, spec) in schema.iter().zip(fields) {
                            let cx = FieldContext {
                                def,
                                origin: cx.origin,
                            };
                            match spec.as_ref().and_then(|s| s.eval(item, &cx)) {
                                Some(v) => row.push(v),
                                None if def.required => return None,
                                None => row.push(Value::Null),
                            }
                        }
                        Some(Value::Object(crate::canonical::schema::to_object(
                            schema, row,
                        )))
                    })
                    .collect();
                Some(Value::Array(records))
            }
            Convert::Natural => natural(v, cx),
        }
    }
}

fn natural(v: &Value, cx: &FieldContext<'_>) -> Option<Value> {
    match cx.def.ty {
        FieldType::Text => convert::text(v).map(Value::String),
        FieldType::Money | FieldType::Integer => convert::fen(v).map(Value::from),
        FieldType::Percent => convert::number(v)
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        FieldType::TextList => convert::names(v, "name").map(Value::from),
        FieldType::Weekdays => convert::weekdays(v).map(Value::from),
        FieldType::HourRanges => convert::hour_ranges(v).map(|r| {
            Value::Array(
                r.into_iter()
                    .map(|(from, to)| serde_json::json!({"from": from, "to": to}))
                    .collect(),
            )
        }),
        FieldType::Url => convert::url(v, cx.origin).map(Value::String),
        FieldType::Enum(allowed) => convert::text(v)
            .filter(|s| allowed.contains(&s.as_str()))
            .map(Value::String),
        FieldType::Json => Some(v.clone()),
        FieldType::Time | FieldType::Records(_) => None, // rejected by `check`
    }
}

fn dotted(p: &str) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!(".{p}")
    }
}

/// Maps vendor items to canonical records (slot order of the schema).
#[derive(Debug, Clone)]
pub struct ItemMapper {
    pub schema: &'static [FieldDef],
    pub fields: Vec<Option<FieldSpec>>,
    pub origin: String,
}

/// Why an item was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingField(pub &'static str);

impl ItemMapper {
    pub fn map(&self, item: &Value) -> Result<Vec<Value>, MissingField> {
        let mut out = Vec::with_capacity(self.schema.len());
        for (def, spec) in self.schema.iter().zip(&self.fields) {
            let cx = FieldContext {
                def,
                origin: &self.origin,
            };
            let v = spec.as_ref().and_then(|s| s.eval(item, &cx));
            match v {
                Some(v) => out.push(v),
                None if def.required => return Err(MissingField(def.name)),
                None => out.push(Value::Null),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::schema::{COUPON, slot};
    use serde_json::json;

    fn def(name: &str) -> &'static FieldDef {
        &COUPON[slot(COUPON, name).unwrap()]
    }

    fn eval(spec: Value, field: &str, item: Value) -> Option<Value> {
        let d = def(field);
        let s = FieldSpec::compile(&spec, d).unwrap();
        s.eval(
            &item,
            &FieldContext {
                def: d,
                origin: "http://v.example",
            },
        )
    }

    #[test]
    fn plain_paths_take_the_fast_route_and_agree_with_jsonpath() {
        let doc = json!({"data": {"list": [{"a": 1}, {"a": 2}], "x-y": "z"}});
        assert!(
            JsonPath::compile("$.data.x-y").is_err(),
            "RFC 9535 names have no dash"
        );
        for (p, want) in [
            ("$.data.list[1].a", Some(json!(2))),
            ("$['data']['list'][0]['a']", Some(json!(1))),
            ("$.data['x-y']", Some(json!("z"))),
            ("$.data.missing", None),
            ("$.data.list[?@.a == 2].a", Some(json!(2))),
            ("$..a", Some(json!(1))),
        ] {
            let jp = JsonPath::compile(p).unwrap();
            assert_eq!(jp.first(&doc).cloned(), want, "{p}");
        }
        assert!(matches!(
            JsonPath::compile("$.a").unwrap().plan,
            PathPlan::Plain(_)
        ));
        assert!(matches!(
            JsonPath::compile("$..a").unwrap().plan,
            PathPlan::General(_)
        ));
        assert!(JsonPath::compile("$.data[?(@.a == )]").is_err());
        let every = JsonPath::compile("$.data.list[*]").unwrap();
        assert_eq!(every.all(&doc).len(), 2);
    }

    #[test]
    fn loose_equality_spans_vendor_habits() {
        assert!(loosely_equal(&json!(200), &json!("200")));
        assert!(loosely_equal(&json!(true), &json!("true")));
        assert!(loosely_equal(&json!("0"), &json!(0.0)));
        assert!(!loosely_equal(&json!("0"), &json!("00x")));
        assert!(!loosely_equal(&json!(false), &json!("true")));
    }

    #[test]
    fn conditional_amounts_and_value_maps() {
        let item = json!({"ticketType": 2, "ticketAmount": 8.5, "useStatus": "3"});
        let amount = json!({"path": "$.ticketAmount", "when": {"path": "$.ticketType", "in": [1]}, "convert": "fen"});
        assert_eq!(eval(amount, "amount_off", item.clone()), None);
        let pct = json!({"path": "$.ticketAmount", "when": {"path": "$.ticketType", "in": [2]}, "convert": "zhe_to_percent_off"});
        assert_eq!(eval(pct, "percent_off", item.clone()), Some(json!(15.0)));
        let status = json!({"path": "$.useStatus", "map": {"2": "usable", "3": "frozen"}});
        assert_eq!(
            eval(status.clone(), "status", item.clone()),
            Some(json!("frozen"))
        );
        // map keys match loosely: 3.0 and "03" find "3"
        assert_eq!(
            eval(status.clone(), "status", json!({"useStatus": 3.0})),
            Some(json!("frozen"))
        );
        assert_eq!(
            eval(status, "status", json!({"useStatus": "03"})),
            Some(json!("frozen"))
        );
        let kind = json!({"path": "$.ticketType", "map": {"1": "cash"}, "default": "other"});
        assert_eq!(eval(kind, "kind", item), Some(json!("other")));
    }

    #[test]
    fn absurd_vendor_numbers_give_null_not_a_panic() {
        let until = json!({"path": "$.t", "time": {"formats": ["epoch_ms"]}, "add_days": "$.d"});
        for d in [json!(200_000_000_000_000i64), json!(i64::MAX), json!(-9e18)] {
            assert_eq!(
                eval(
                    until.clone(),
                    "valid_until",
                    json!({"t": 1448531062897i64, "d": d})
                ),
                None
            );
        }
        let pct = json!({"path": "$.z", "convert": "zhe_to_percent_off"});
        assert_eq!(
            eval(pct, "percent_off", json!({"z": "-9223372036854775.808"})),
            None
        );
    }

    #[test]
    fn first_of_and_add_days_cover_delay_day_coupons() {
        let item = json!({"createTime": 1448531062897i64, "ticketRule": {"delayDay": 10}});
        let until = json!({"first_of": [
            {"path": "$.ticketRule.useEndTime", "time": {"formats": ["epoch_ms", "date"], "bound": "end"}},
            {"path": "$.createTime", "time": {"formats": ["epoch_ms"]}, "add_days": "$.ticketRule.delayDay",
             "when": {"path": "$.ticketRule.delayDay", "present": true}}
        ]});
        // 2015-11-26T17:44:22.897+08:00 plus ten days
        assert_eq!(
            eval(until, "valid_until", item),
            Some(json!("2015-12-06T17:44:22+08:00"))
        );
    }

    #[test]
    fn compile_errors_point_into_the_mapping() {
        let c = |v: Value, f: &str| FieldSpec::compile(&v, def(f)).unwrap_err();
        assert_eq!(
            c(json!({"path": "$.k", "map": {"1": "coupon"}}), "kind").0,
            "map.1"
        );
        assert!(c(json!("$.t"), "valid_from").1.contains("is a time"));
        assert_eq!(
            c(
                json!({"path": "$.a", "convert": "zhe_to_percent_off"}),
                "amount_off"
            )
            .0,
            "convert"
        );
        assert_eq!(c(json!({"path": "$.a", "colour": 1}), "name").0, "colour");
        assert_eq!(
            c(json!({"first_of": [{"path": "$[?"}]}), "name").0,
            "first_of.0.path"
        );
        assert_eq!(
            c(
                json!({"path": "$.a", "time": {"formats": ["julian"]}}),
                "valid_from"
            )
            .0,
            "time"
        );
    }

    #[test]
    fn mapper_drops_items_without_required_fields() {
        let fields: Vec<Option<FieldSpec>> = COUPON
            .iter()
            .map(|d| match d.name {
                "id" => Some(FieldSpec::compile(&json!("$.id"), d).unwrap()),
                "status" => Some(
                    FieldSpec::compile(&json!({"path": "$.s", "map": {"0": "usable"}}), d).unwrap(),
                ),
                "channels" => Some(FieldSpec::compile(&json!("$.ch"), d).unwrap()),
                _ => None,
            })
            .collect();
        let m = ItemMapper {
            schema: COUPON,
            fields,
            origin: String::new(),
        };
        let row = m.map(&json!({"id": 7, "s": "0"})).unwrap();
        assert_eq!(row[0], json!("7"));
        assert_eq!(
            m.map(&json!({"id": {"x": 1}, "s": "0"})),
            Err(MissingField("id"))
        );
        assert_eq!(
            m.map(&json!({"id": "a", "s": "9"})),
            Err(MissingField("status"))
        );
    }
}
