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
    /// Where an item-relative path is found in a projected item's slots (set when the
    /// operation's projection is compiled, `projection::Projection::of`).
    slot: Option<SlotRef>,
}

/// A path's place in an item read into slots: the slot of the value where the path (or the
/// shortest part of it that some path reads whole) ends, and the names left to walk inside it.
#[derive(Debug, Clone)]
pub struct SlotRef {
    pub slot: u16,
    pub rest: Box<[String]>,
}

#[derive(Debug, Clone)]
enum PathPlan {
    Plain(Vec<Seg>),
    General(Box<JpQuery>),
}

/// One step of a plain path.
#[derive(Debug, Clone)]
pub enum Seg {
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
            slot: None,
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

    /// The value a plain path names, for replacing it in place (None for other paths, or
    /// when it is not there).
    pub fn plain_mut<'a>(&self, v: &'a mut Value) -> Option<&'a mut Value> {
        let PathPlan::Plain(segs) = &self.plan else {
            return None;
        };
        let mut cur = v;
        for s in segs {
            cur = match s {
                Seg::Key(k) => cur.get_mut(k.as_str())?,
                Seg::Index(i) => cur.get_mut(*i)?,
            };
        }
        Some(cur)
    }

    /// Whether the path is made of names and indexes only.
    pub fn is_plain(&self) -> bool {
        matches!(self.plan, PathPlan::Plain(_))
    }

    /// The names and indexes of a plain path; None for other paths.
    pub fn segments(&self) -> Option<&[Seg]> {
        match &self.plan {
            PathPlan::Plain(segs) => Some(segs),
            PathPlan::General(_) => None,
        }
    }

    pub fn set_slot(&mut self, slot: Option<SlotRef>) {
        self.slot = slot;
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

/// A vendor item as the field mappings read it: a whole JSON value, or the slots a projection
/// read it into (`projection`: the values its paths end at, no map of members built).
pub trait Item {
    /// What `path` selects in the item, as [`JsonPath::first`] (null is nothing).
    fn at(&self, path: &JsonPath) -> Option<&Value>;
}

impl Item for Value {
    fn at(&self, path: &JsonPath) -> Option<&Value> {
        path.first(self)
    }
}

/// An item read into slots, in the order the operation's projection numbered them.
pub struct Slotted<'a>(pub &'a [Value]);

impl Item for Slotted<'_> {
    fn at(&self, path: &JsonPath) -> Option<&Value> {
        // every item path of a slotted operation has its place (`Projection::of`)
        let r = path.slot.as_ref()?;
        let mut cur = self.0.get(usize::from(r.slot))?;
        for k in &r.rest {
            cur = cur.get(k.as_str())?;
        }
        (!cur.is_null()).then_some(cur)
    }
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
    OneOf(Vec<Expected>),
    Present(bool),
}

/// An accepted value with its readings prepared once: vendors write `200`, `"200"` or
/// `200.0` for the same code, so each item is compared without formatting anything.
#[derive(Debug, Clone)]
pub struct Expected {
    value: Value,
    number: Option<Decimal>,
    text: Option<String>,
}

impl Expected {
    fn new(value: Value) -> Expected {
        Expected {
            number: Decimal::from_json(&value),
            text: convert::text(&value),
            value,
        }
    }

    /// Loose equality (`loosely_equal`) with the expected side prepared.
    fn matches(&self, found: &Value) -> bool {
        if *found == self.value {
            return true;
        }
        match (self.number, Decimal::from_json(found)) {
            (Some(x), Some(y)) => x == y,
            _ => match (&self.text, found) {
                (Some(t), Value::String(s)) => t == s,
                (Some(t), Value::Bool(b)) => t == if *b { "true" } else { "false" },
                (Some(t), Value::Number(n)) => *t == n.to_string(),
                _ => false,
            },
        }
    }
}

impl Condition {
    /// The test in routes.yaml's words (`in [200]`, `present`), for `explain`.
    pub fn expects(&self) -> String {
        match &self.test {
            Test::Present(true) => "present".to_owned(),
            Test::Present(false) => "absent".to_owned(),
            Test::OneOf(values) => {
                let values: Vec<String> = values.iter().map(|e| e.value.to_string()).collect();
                format!("in [{}]", values.join(", "))
            }
        }
    }

    pub fn holds(&self, v: &Value) -> bool {
        self.holds_in(v)
    }

    /// Whether the condition holds for an item, however it was read.
    pub fn holds_in(&self, item: &(impl Item + ?Sized)) -> bool {
        let found = item.at(&self.path);
        match &self.test {
            Test::Present(want) => found.is_some() == *want,
            Test::OneOf(values) => found.is_some_and(|f| values.iter().any(|w| w.matches(f))),
        }
    }

    pub fn compile(
        path: &str,
        one_of: &[Value],
        present: Option<bool>,
    ) -> Result<Condition, String> {
        let path = JsonPath::compile(path)?;
        let test = match (one_of.is_empty(), present) {
            (false, None) => Test::OneOf(one_of.iter().cloned().map(Expected::new).collect()),
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
    map: Option<ValueMap>,
    /// How a list-valued field's vendor value is shaped (`member`, `split`).
    list: ListShape,
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
    "member", "split",
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
                    list: ListShape::default(),
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
            && let Some(k) = [
                "map", "default", "convert", "time", "add_days", "member", "split",
            ]
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
                Some(ValueMap::new(table, default))
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
        let list = ListShape::compile(m, def).map_err(|(k, e)| at(k, e))?;
        let spec = FieldSpec {
            when,
            source,
            map,
            list,
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

    /// The canonical value of this field for `item`: `Ok(None)` when the vendor gave none
    /// (absent, null, blank, or `when` does not hold), `Err(reason)` when it gave one that
    /// cannot be read, so the item is dropped with that reason rather than shown with a
    /// silent null.
    pub fn eval(
        &self,
        item: &(impl Item + ?Sized),
        cx: &FieldContext<'_>,
    ) -> Result<Option<Value>, String> {
        if let Some(w) = &self.when
            && !w.holds_in(item)
        {
            return Ok(None);
        }
        let raw: &Value = match &self.source {
            Source::Paths(paths) => match paths.iter().find_map(|p| item.at(p)) {
                Some(v) => v,
                None => return Ok(None),
            },
            Source::Const(v) => v,
            Source::FirstOf(specs) => {
                let mut unreadable = None;
                for spec in specs {
                    match spec.eval(item, cx) {
                        Ok(Some(v)) => return Ok(Some(v)),
                        Ok(None) => {}
                        Err(e) => {
                            unreadable.get_or_insert(e);
                        }
                    }
                }
                return unreadable.map_or(Ok(None), Err);
            }
        };
        let value = match &self.map {
            None => raw,
            Some(map) => map.get(raw)?,
        };
        if value.is_null()
            || (!matches!(cx.def.ty, FieldType::Text | FieldType::Json) && blank(value))
        {
            return Ok(None);
        }
        let shaped;
        let value = match self.list.reshape(value) {
            Some(v) => {
                shaped = v;
                &shaped
            }
            None => value,
        };
        self.typed(value, item, cx)
            .map(Some)
            .ok_or_else(|| unreadable(value, cx))
    }

    /// [`FieldSpec::eval`] of a field whose value is moved out of the first of the slots
    /// `from` that holds one (`ItemMapper::plan_moves` chose it: nothing else reads them).
    fn eval_moving(
        &self,
        slots: &mut [Value],
        from: &[u16],
        cx: &FieldContext<'_>,
    ) -> Result<Option<Value>, String> {
        if let Some(w) = &self.when
            && !w.holds_in(&Slotted(slots))
        {
            return Ok(None);
        }
        let Some(value) = from.iter().find_map(|&s| {
            let v = slots.get_mut(usize::from(s))?;
            (!v.is_null()).then(|| std::mem::take(v))
        }) else {
            return Ok(None);
        };
        if !matches!(cx.def.ty, FieldType::Text | FieldType::Json) && blank(&value) {
            return Ok(None);
        }
        let typed = match &self.convert {
            Convert::Named(_, c) => c.apply_owned(value),
            Convert::Natural => natural_owned(value, cx),
            // not planned to move (`plan_moves`); read in place all the same
            _ => self.typed(&value, &Slotted(&[]), cx).ok_or(value),
        };
        typed.map(Some).map_err(|v| unreadable(&v, cx))
    }

    /// Every path this field reads from an item (its source, `when` and `add_days`, and those
    /// of its `first_of` alternatives); nested `fields` read inside the value a path selects.
    pub fn paths<'a>(&'a self, f: &mut dyn FnMut(&'a JsonPath)) {
        self.paths_reading(&mut |p, _| f(p));
    }

    /// [`FieldSpec::paths`], each with the conversion its value goes straight to (no `map`,
    /// `member` or `split` looks at it first), which may read less than all of it
    /// ([`Conversion::reads_within`], [`Conversion::lift`]).
    pub fn paths_reading<'a>(
        &'a self,
        f: &mut dyn FnMut(&'a JsonPath, Option<&'a dyn Conversion>),
    ) {
        if let Some(w) = &self.when {
            f(&w.path, None);
        }
        if let Some(d) = &self.add_days {
            f(d, None);
        }
        match &self.source {
            Source::Paths(paths) => {
                let to = match (&self.convert, &self.map, &self.list) {
                    (
                        Convert::Named(_, c),
                        None,
                        ListShape {
                            member: None,
                            split: None,
                        },
                    ) => Some(&**c),
                    _ => None,
                };
                paths.iter().for_each(|p| f(p, to));
            }
            Source::Const(_) => {}
            Source::FirstOf(specs) => specs.iter().for_each(|s| s.paths_reading(f)),
        }
    }

    /// [`FieldSpec::paths`], to give each its place in a projected item.
    pub fn paths_mut(&mut self, f: &mut dyn FnMut(&mut JsonPath)) {
        if let Some(w) = &mut self.when {
            f(&mut w.path);
        }
        if let Some(d) = &mut self.add_days {
            f(d);
        }
        match &mut self.source {
            Source::Paths(paths) => paths.iter_mut().for_each(&mut *f),
            Source::Const(_) => {}
            Source::FirstOf(specs) => specs.iter_mut().for_each(|s| s.paths_mut(f)),
        }
    }

    /// Which source of the field `item` answers: the JSONPath (or `value`) and what it
    /// selected; the sources tried when none did.
    fn matched(&self, item: &Value) -> (String, Option<Value>) {
        if let Some(w) = &self.when
            && !w.holds(item)
        {
            return (format!("(when {} does not hold)", w.path.source()), None);
        }
        match &self.source {
            Source::Paths(paths) => paths
                .iter()
                .find_map(|p| {
                    p.first(item)
                        .map(|v| (p.source().to_owned(), Some(v.clone())))
                })
                .unwrap_or_else(|| {
                    let tried: Vec<&str> = paths.iter().map(JsonPath::source).collect();
                    (tried.join(" | "), None)
                }),
            Source::Const(v) => ("value".to_owned(), Some(v.clone())),
            Source::FirstOf(specs) => {
                let mut tried = Vec::new();
                for spec in specs {
                    let (path, found) = spec.matched(item);
                    if found.is_some() {
                        return (path, found);
                    }
                    tried.push(path);
                }
                (tried.join(" | "), None)
            }
        }
    }

    fn typed(
        &self,
        v: &Value,
        item: &(impl Item + ?Sized),
        cx: &FieldContext<'_>,
    ) -> Option<Value> {
        match &self.convert {
            Convert::Named(_, c) => c.apply(v),
            Convert::Time(spec) => {
                let mut t = spec.read(v)?;
                if let Some(days) = &self.add_days {
                    let n = convert::fen(item.at(days)?)?;
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
                            match spec.as_ref().map(|s| s.eval(item, &cx)) {
                                Some(Ok(Some(v))) => row.push(v),
                                // a nested record that cannot be read is left out
                                Some(Err(_)) => return None,
                                _ if def.required => return None,
                                _ => row.push(Value::Null),
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

/// [`natural`] of a value the caller gives up: text moves instead of being copied; the
/// value back when it does not convert.
fn natural_owned(v: Value, cx: &FieldContext<'_>) -> Result<Value, Value> {
    match (cx.def.ty, v) {
        (FieldType::Text | FieldType::Json, v @ Value::String(_)) => Ok(v),
        (FieldType::Json, v) => Ok(v),
        (FieldType::Enum(allowed), Value::String(s)) if allowed.contains(&s.as_str()) => {
            Ok(Value::String(s))
        }
        (FieldType::TextList, v) => convert::names_owned(v, "name"),
        (_, v) => natural(&v, cx).ok_or(v),
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
    /// For items read into slots, per field: the slots its value is moved out of rather than
    /// copied ([`ItemMapper::plan_moves`]); empty otherwise.
    pub moves: Vec<Option<Box<[u16]>>>,
}

/// Why an item was dropped: the field, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub field: &'static str,
    pub reason: String,
}

/// One canonical field of one item, as `coupon-gateway explain` shows it.
#[derive(Debug, Clone)]
pub struct FieldTrace {
    pub field: &'static str,
    pub required: bool,
    /// The JSONPath that matched (`value` for a constant); the ones tried, joined by ` | `,
    /// when none did; `None` for a field the operation does not map.
    pub path: Option<String>,
    /// What the path selected, before `map` and conversion.
    pub matched: Option<Value>,
    /// The canonical value (`None`: no value), or why the vendor's value cannot be read.
    pub value: Result<Option<Value>, String>,
}

impl ItemMapper {
    /// Every field of `item`, evaluated as `map` does, with the vendor value each started
    /// from: what `explain` shows to tell a renamed path from a value that does not convert.
    pub fn explain(&self, item: &Value) -> Vec<FieldTrace> {
        self.schema
            .iter()
            .zip(&self.fields)
            .map(|(def, spec)| {
                let cx = FieldContext {
                    def,
                    origin: &self.origin,
                };
                let (path, matched) = match spec {
                    Some(s) => {
                        let (p, m) = s.matched(item);
                        (Some(p), m)
                    }
                    None => (None, None),
                };
                FieldTrace {
                    field: def.name,
                    required: def.required,
                    path,
                    matched,
                    value: spec.as_ref().map_or(Ok(None), |s| s.eval(item, &cx)),
                }
            })
            .collect()
    }

    pub fn map(&self, item: &(impl Item + ?Sized)) -> Result<Vec<Value>, Dropped> {
        self.map_with(|spec, cx, _| spec.eval(item, cx))
    }

    /// [`ItemMapper::map`] of an item read into `slots`, which it uses up: a value only one
    /// field reads moves from its slot into the row (`plan_moves`) instead of being copied, so
    /// a vendor's text is allocated once on its way from the answer to the cache.
    pub fn map_slots(&self, slots: &mut [Value]) -> Result<Vec<Value>, Dropped> {
        self.map_with(
            |spec, cx, i| match self.moves.get(i).and_then(Option::as_deref) {
                Some(from) => spec.eval_moving(slots, from, cx),
                None => spec.eval(&Slotted(slots), cx),
            },
        )
    }

    /// Each field's value by `eval` (the spec, its context, its index), in schema order; the
    /// item dropped at the first that cannot be read or a required one that has none.
    fn map_with(
        &self,
        mut eval: impl FnMut(&FieldSpec, &FieldContext<'_>, usize) -> Result<Option<Value>, String>,
    ) -> Result<Vec<Value>, Dropped> {
        let mut out = Vec::with_capacity(self.schema.len());
        for (i, (def, spec)) in self.schema.iter().zip(&self.fields).enumerate() {
            let cx = FieldContext {
                def,
                origin: &self.origin,
            };
            let drop = |reason: String| Dropped {
                field: def.name,
                reason,
            };
            match spec.as_ref().map(|s| eval(s, &cx, i)) {
                Some(Ok(Some(v))) => out.push(v),
                Some(Err(reason)) => return Err(drop(reason)),
                _ if def.required => return Err(drop("no value".to_owned())),
                _ => out.push(Value::Null),
            }
        }
        Ok(out)
    }

    /// Once the projection has given every item path its slot: which fields may take their
    /// value out of its slot. A field may when each of its source paths ends exactly at a
    /// slot no other path of any field reads (not its own `when` either, nor `add_days`), and
    /// its value goes to the conversion unchanged (no `map`, `member`, `split`, time or
    /// nested `fields`, which read it in place or make a new value anyway).
    pub fn plan_moves(&mut self) {
        let mut readers: HashMap<u16, u32> = HashMap::new();
        for spec in self.fields.iter().flatten() {
            spec.paths(&mut |p| {
                if let Some(r) = &p.slot {
                    *readers.entry(r.slot).or_default() += 1;
                }
            });
        }
        self.moves = self
            .fields
            .iter()
            .map(|spec| {
                let spec = spec.as_ref()?;
                let Source::Paths(paths) = &spec.source else {
                    return None;
                };
                let plain = spec.map.is_none()
                    && spec.add_days.is_none()
                    && spec.list.member.is_none()
                    && spec.list.split.is_none()
                    && matches!(spec.convert, Convert::Natural | Convert::Named(..));
                plain.then_some(())?;
                paths
                    .iter()
                    .map(|p| {
                        let r = p.slot.as_ref()?;
                        (r.rest.is_empty() && readers.get(&r.slot) == Some(&1)).then_some(r.slot)
                    })
                    .collect()
            })
            .collect();
    }
}

/// A value map with its keys prepared once: exact text, and numeric keys as decimals so that
/// `3.0` and `"03"` find `"3"` without formatting anything per item.
#[derive(Debug, Clone)]
struct ValueMap {
    exact: HashMap<String, Value>,
    numeric: Vec<(Decimal, Value)>,
    default: Option<Value>,
}

impl ValueMap {
    fn new(exact: HashMap<String, Value>, default: Option<Value>) -> ValueMap {
        let numeric = exact
            .iter()
            .filter_map(|(k, v)| Decimal::parse(k.trim()).map(|d| (d, v.clone())))
            .collect();
        ValueMap {
            exact,
            numeric,
            default,
        }
    }

    fn get<'a>(&'a self, raw: &Value) -> Result<&'a Value, String> {
        let found = match raw {
            Value::String(s) => self.exact.get(s.as_str()),
            Value::Bool(b) => self.exact.get(if *b { "true" } else { "false" }),
            _ => None,
        }
        .or_else(|| {
            let d = Decimal::from_json(raw)?;
            self.numeric.iter().find(|(k, _)| *k == d).map(|(_, v)| v)
        });
        found
            .or(self.default.as_ref())
            .ok_or_else(|| format!("{} is not in the field's `map`", describe(raw)))
    }
}

/// How a list-valued vendor value is shaped: `member` picks a member out of a list of objects,
/// `split` cuts a delimited string.
#[derive(Debug, Clone, Default)]
struct ListShape {
    member: Option<String>,
    split: Option<String>,
}

impl ListShape {
    fn compile(
        m: &serde_json::Map<String, Value>,
        def: &FieldDef,
    ) -> Result<ListShape, (&'static str, String)> {
        let list = matches!(
            def.ty,
            FieldType::TextList | FieldType::Weekdays | FieldType::HourRanges
        );
        let mut shape = ListShape::default();
        for (key, slot) in [("member", &mut shape.member), ("split", &mut shape.split)] {
            match m.get(key) {
                None => {}
                Some(_) if !list => {
                    return Err((
                        key,
                        format!("`{key}` is for list fields (text lists, weekdays, hour ranges)"),
                    ));
                }
                Some(Value::String(v)) if !v.is_empty() => *slot = Some(v.clone()),
                Some(_) => return Err((key, format!("`{key}` is a non-empty string"))),
            }
        }
        Ok(shape)
    }

    /// The value as a list of scalars, when a shape applies to it.
    fn reshape(&self, v: &Value) -> Option<Value> {
        match (v, &self.member, &self.split) {
            (Value::Array(items), Some(member), _) => Some(Value::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Value::Object(o) => o.get(member.as_str()).cloned().unwrap_or(Value::Null),
                        other => other.clone(),
                    })
                    .collect(),
            )),
            (Value::String(s), _, Some(sep)) => Some(Value::Array(
                s.split(sep.as_str())
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// A blank vendor value: `""` or whitespace, or an empty list.
fn blank(v: &Value) -> bool {
    match v {
        // text that begins with a visible ASCII character is not blank: no need to trim
        // (Unicode whitespace is either ASCII at or below the space, or not ASCII)
        Value::String(s) => match s.as_bytes().first() {
            Some(&b) if b > b' ' && b.is_ascii() => false,
            _ => s.trim().is_empty(),
        },
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A vendor value for a reason: short, never a long text.
/// Why `v` cannot fill the field: the reason an item is dropped with.
fn unreadable(v: &Value, cx: &FieldContext<'_>) -> String {
    format!("{} is not a {}", describe(v), type_name(cx.def.ty))
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 32 => format!("`{s}`"),
        Value::String(_) => "a long text".to_owned(),
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        Value::Null => "null".to_owned(),
    }
}

fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "text",
        FieldType::Money => "whole number of fen",
        FieldType::Percent => "percentage",
        FieldType::Integer => "whole number",
        FieldType::Time => "readable time",
        FieldType::TextList => "list of names",
        FieldType::Weekdays => "list of weekdays 1-7",
        FieldType::HourRanges => "list of hour ranges HH:MM-HH:MM",
        FieldType::Url => "URL",
        FieldType::Enum(_) => "known value",
        FieldType::Json => "JSON value",
        FieldType::Records(_) => "list of records",
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

    fn read(spec: Value, field: &str, item: Value) -> Result<Option<Value>, String> {
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

    /// The value, or None for "none given" and "unreadable" alike.
    fn eval(spec: Value, field: &str, item: Value) -> Option<Value> {
        read(spec, field, item).ok().flatten()
    }

    #[test]
    fn blank_is_text_of_whitespace_only_or_an_empty_list() {
        // every whitespace `str::trim` removes, ASCII or not, alone or around text
        for ws in [
            " ", "\t", "\n", "\r", "\u{b}", "\u{c}", "\u{85}", "\u{a0}", "\u{3000}",
        ] {
            assert!(blank(&json!(ws)), "{ws:?}");
            assert!(blank(&json!(format!("{ws}{ws}"))), "{ws:?} twice");
            assert!(!blank(&json!(format!("{ws}a"))), "{ws:?} before text");
            assert!(!blank(&json!(format!("a{ws}"))), "{ws:?} after text");
        }
        assert!(blank(&json!("")) && blank(&json!([])));
        for text in ["a", "!", "~", "\u{7f}", "满50减5元券", "0"] {
            assert!(!blank(&json!(text)), "{text:?}");
        }
        assert!(!blank(&json!(0)) && !blank(&json!(null)) && !blank(&json!([""])));
    }

    #[test]
    fn list_fields_read_every_common_shape() {
        let hours = |v: Value, extra: Value| {
            let mut spec = json!({"path": "$.h"});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            read(spec, "usable_hours", json!({"h": v}))
        };
        let want = json!([{"from": "11:00", "to": "14:00"}, {"from": "17:00", "to": "21:00"}]);
        assert_eq!(
            hours(json!(["11:00-14:00", "17:00-21:00"]), json!({})),
            Ok(Some(want.clone()))
        );
        assert_eq!(
            hours(json!("11:00-14:00,17:00-21:00"), json!({})),
            Ok(Some(want.clone()))
        );
        assert_eq!(
            hours(json!("11:00-14:00|17:00-21:00"), json!({"split": "|"})),
            Ok(Some(want.clone()))
        );
        assert_eq!(
            hours(
                json!([{"from": "11:00", "to": "14:00"}, {"start": "17:00", "end": "21:00"}]),
                json!({})
            ),
            Ok(Some(want.clone()))
        );
        assert_eq!(
            hours(
                json!([{"r": "11:00-14:00"}, {"r": "17:00-21:00"}]),
                json!({"member": "r"})
            ),
            Ok(Some(want))
        );
        assert!(
            hours(json!(["lunch"]), json!({}))
                .unwrap_err()
                .contains("hour ranges")
        );
        assert_eq!(hours(json!([]), json!({})), Ok(None), "empty = all day");

        let days = |v: Value, extra: Value| {
            let mut spec = json!({"path": "$.d"});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            read(spec, "usable_weekdays", json!({"d": v}))
        };
        let want = json!([1, 2, 5]);
        for (v, extra) in [
            (json!([5, 1, 2]), json!({})),
            (json!(["1", "2", "5"]), json!({})),
            (json!("1,2,5"), json!({})),
            (json!("1|2|5"), json!({"split": "|"})),
            (
                json!([{"day": 1}, {"day": 2}, {"day": "5"}]),
                json!({"member": "day"}),
            ),
            (json!(["MON", "Tue", "friday"]), json!({})),
            (json!(["周一", "星期二", "周五"]), json!({})),
        ] {
            assert_eq!(days(v.clone(), extra), Ok(Some(want.clone())), "{v}");
        }
        assert!(
            days(json!([8]), json!({}))
                .unwrap_err()
                .contains("weekdays")
        );

        let names = read(
            json!({"path": "$.c", "member": "title"}),
            "channels",
            json!({"c": [{"title": "小程序"}, {"title": "门店"}]}),
        );
        assert_eq!(names, Ok(Some(json!(["小程序", "门店"]))));
        // `member` is for list fields only
        assert!(FieldSpec::compile(&json!({"path": "$.x", "member": "a"}), def("name")).is_err());
    }

    #[test]
    fn a_present_value_that_cannot_be_read_is_a_reason_not_a_null() {
        let amount = json!({"path": "$.a", "convert": "yuan_to_fen"});
        assert_eq!(
            read(amount.clone(), "amount_off", json!({"a": "12.50"})),
            Ok(Some(json!(1250)))
        );
        assert!(
            read(amount.clone(), "amount_off", json!({"a": "12.5.0"}))
                .unwrap_err()
                .contains("`12.5.0`")
        );
        // absent, null and blank are "none given"
        for item in [json!({}), json!({"a": null}), json!({"a": ""})] {
            assert_eq!(read(amount.clone(), "amount_off", item), Ok(None));
        }
        let status = json!({"path": "$.s", "map": {"1": "usable"}});
        assert!(
            read(status, "status", json!({"s": 7}))
                .unwrap_err()
                .contains("not in the field's `map`")
        );
        let url = read(json!("$.u"), "image_url", json!({"u": 5}));
        assert!(url.unwrap_err().contains("URL"));
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
    fn conditions_match_loosely_with_their_values_prepared() {
        let c = Condition::compile("$.code", &[json!(200), json!("SUCCESS"), json!(true)], None)
            .unwrap();
        for yes in [
            json!(200),
            json!("200"),
            json!(200.0),
            json!("200.00"),
            json!("SUCCESS"),
            json!(true),
            json!("true"),
        ] {
            assert!(c.holds(&json!({"code": yes})), "{yes}");
        }
        for no in [
            json!(201),
            json!("20"),
            json!("success"),
            json!(false),
            json!(null),
            json!([200]),
        ] {
            assert!(!c.holds(&json!({"code": no})), "{no}");
        }
        assert!(!c.holds(&json!({})));
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
            moves: Vec::new(),
        };
        let row = m.map(&json!({"id": 7, "s": "0"})).unwrap();
        assert_eq!(row[0], json!("7"));
        assert_eq!(
            m.map(&json!({"id": {"x": 1}, "s": "0"})).unwrap_err().field,
            "id"
        );
        let e = m.map(&json!({"id": "a", "s": "9"})).unwrap_err();
        assert_eq!(
            (e.field, e.reason.as_str()),
            ("status", "`9` is not in the field's `map`")
        );
        assert_eq!(m.map(&json!({"s": "0"})).unwrap_err().reason, "no value");
    }

    #[test]
    fn names_the_walker_cannot_take_as_keys_go_the_general_way() {
        // RFC 9535 allows blanks between segments: `$.data .list` is `$.data.list`, and
        // the name before the blank is not `data `
        let doc = json!({"data": {"list": [1]}});
        let spaced = JsonPath::compile("$.data .list").unwrap();
        assert!(!spaced.is_plain());
        assert_eq!(spaced.first(&doc), Some(&json!([1])));
        // a name the parser takes but that is not letters, digits or `_` (U+00B7)
        let dotted = JsonPath::compile("$.a·b").unwrap();
        assert!(!dotted.is_plain());
        assert_eq!(dotted.first(&json!({"a·b": 2})), Some(&json!(2)));
        // an empty name never reaches the walker: the parser refuses it first
        for p in ["$.", "$.a.", "$.[0]", "$.a.[0]"] {
            assert!(JsonPath::compile(p).is_err(), "{p}");
        }
    }

    #[test]
    fn prepared_conditions_agree_with_loose_equality() {
        let values = [
            json!(true),
            json!(false),
            json!("true"),
            json!("false"),
            json!(200),
            json!("200"),
            json!(200.5),
            json!("200.50"),
            json!(1e40),
            json!(json!(1e40).to_string()),
            json!(-1e-7),
            json!(json!(-1e-7).to_string()),
            json!("OK"),
            json!(null),
        ];
        for expected in &values {
            let c = Condition::compile("$.c", std::slice::from_ref(expected), None).unwrap();
            for found in &values {
                assert_eq!(
                    c.holds(&json!({ "c": found })),
                    !found.is_null() && loosely_equal(expected, found),
                    "in [{expected}] for {found}"
                );
            }
        }
        // what the agreement covers: booleans and numbers found where text is expected
        let holds = |expected: Value, found: Value| {
            Condition::compile("$.c", &[expected], None)
                .unwrap()
                .holds(&json!({ "c": found }))
        };
        assert!(holds(json!("true"), json!(true)));
        assert!(holds(json!("false"), json!(false)));
        assert!(!holds(json!("true"), json!(false)));
        // too large for a decimal: compared as the text serde_json writes
        assert!(holds(json!(json!(1e40).to_string()), json!(1e40)));
    }

    #[test]
    fn unknown_keys_name_the_known_ones_with_the_conversions_own() {
        let (at, e) =
            FieldSpec::compile(&json!({"path": "$.a", "colour": 1}), def("name")).unwrap_err();
        assert_eq!(at, "colour");
        assert!(
            e.contains("(known: path, value, when, map, default, convert, time, first_of"),
            "{e}"
        );
        assert!(e.contains("names_key"), "{e}");
    }

    #[test]
    fn a_conversion_s_own_key_goes_with_that_conversion_only() {
        let names = json!({"path": "$.c", "convert": "names", "names_key": "title"});
        assert_eq!(
            eval(names, "channels", json!({"c": [{"title": "门店"}]})),
            Some(json!(["门店"]))
        );
        let (at, e) = FieldSpec::compile(
            &json!({"path": "$.c", "names_key": "title"}),
            def("channels"),
        )
        .unwrap_err();
        assert_eq!(at, "names_key");
        assert!(e.contains("goes with the conversion"), "{e}");
    }

    #[test]
    fn split_and_member_are_non_empty() {
        for key in ["split", "member"] {
            let (at, e) =
                FieldSpec::compile(&json!({"path": "$.d", key: ""}), def("usable_weekdays"))
                    .unwrap_err();
            assert_eq!(
                (at.as_str(), e.as_str()),
                (key, &*format!("`{key}` is a non-empty string"))
            );
        }
    }

    #[test]
    fn boolean_vendor_values_find_their_map_entries() {
        let status = json!({"path": "$.s", "map": {"true": "usable", "false": "used"}});
        assert_eq!(
            eval(status.clone(), "status", json!({"s": true})),
            Some(json!("usable"))
        );
        assert_eq!(
            eval(status, "status", json!({"s": false})),
            Some(json!("used"))
        );
    }

    #[test]
    fn a_long_vendor_text_is_not_repeated_in_a_reason() {
        let long = "x".repeat(33);
        let e = read(json!("$.a"), "amount_off", json!({ "a": long })).unwrap_err();
        assert_eq!(e, "a long text is not a whole number of fen");
        let short = "x".repeat(32);
        let e = read(json!("$.a"), "amount_off", json!({ "a": short })).unwrap_err();
        assert_eq!(e, format!("`{short}` is not a whole number of fen"));
    }

    #[test]
    fn explain_says_when_a_condition_keeps_a_field_out() {
        let d = def("amount_off");
        let spec = FieldSpec::compile(
            &json!({"path": "$.a", "when": {"path": "$.t", "in": [1]}}),
            d,
        )
        .unwrap();
        assert_eq!(
            spec.matched(&json!({"a": 5, "t": 1})),
            ("$.a".to_owned(), Some(json!(5)))
        );
        assert_eq!(
            spec.matched(&json!({"a": 5, "t": 2})),
            ("(when $.t does not hold)".to_owned(), None)
        );
    }

    /// A nested schema with a required field (the shipped ones have none).
    const INNER: &[FieldDef] = &[
        FieldDef {
            name: "id",
            ty: FieldType::Text,
            required: true,
        },
        FieldDef {
            name: "n",
            ty: FieldType::Integer,
            required: false,
        },
    ];

    #[test]
    fn nested_records_leave_out_the_ones_that_cannot_be_read() {
        let outer = FieldDef {
            name: "records",
            ty: FieldType::Records(INNER),
            required: false,
        };
        let spec = FieldSpec::compile(
            &json!({"path": "$.list", "fields": {"id": "$.id", "n": "$.n"}}),
            &outer,
        )
        .unwrap();
        let item = json!({"list": [
            {"id": "a", "n": 1},
            {"n": 2},
            {"id": "c", "n": "many"},
            {"id": "d"},
        ]});
        let cx = FieldContext {
            def: &outer,
            origin: "",
        };
        assert_eq!(
            spec.eval(&item, &cx),
            Ok(Some(json!([{"id": "a", "n": 1}, {"id": "d", "n": null}]))),
            "without its required id, or with an unreadable n, a record is left out"
        );
        // a list of records needs its fields, also when given as a bare path
        let (at, e) = FieldSpec::compile(&json!("$.list"), &outer).unwrap_err();
        assert_eq!(at, "");
        assert!(e.contains("needs `fields"), "{e}");
    }
}
