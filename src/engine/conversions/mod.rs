//! The `convert:` language of a field mapping: named readings of a vendor value into a
//! canonical type (fen, yuan, 折, lists of names, …).
//!
//! Each family lives in a file of its own and implements [`ConversionKind`]: its name, the
//! canonical types it can fill, the extra keys it reads beside `convert`, how it compiles, and
//! its examples (which are its tests and the docs' table). [`REGISTRY`] lists every kind once.
mod money;
mod names;
mod percent;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::canonical::schema::FieldType;
use crate::engine::extract::Seg;

/// A named conversion.
pub trait ConversionKind: Sync {
    fn name(&self) -> &'static str;
    /// What it reads and gives, for the reference table.
    fn summary(&self) -> &'static str;
    /// The canonical field types it can fill, as the docs name them.
    fn field_types(&self) -> &'static str;
    fn fits(&self, ty: FieldType) -> bool;
    /// Keys of the field mapping it reads besides `convert` (e.g. `names_key`).
    fn extra_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// Builds it from the field mapping; errors are (key, message).
    fn compile(&self, field: &Map<String, Value>) -> Result<Arc<dyn Conversion>, (String, String)>;
    /// Known answers: `(field mapping extras as JSON or "", vendor value as JSON, canonical
    /// value as JSON)`.
    fn examples(&self) -> &'static [(&'static str, &'static str, &'static str)];
}

impl std::fmt::Debug for dyn ConversionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A compiled conversion: the canonical value, or None when the vendor value cannot be read.
pub trait Conversion: std::fmt::Debug + Send + Sync {
    fn apply(&self, v: &Value) -> Option<Value>;

    /// [`Conversion::apply`] to a value the caller owns and no longer needs (an item's slot
    /// only this field reads), so that text can move into the result instead of being copied;
    /// the value back when it does not convert. The same result as `apply`, always.
    fn apply_owned(&self, v: Value) -> Result<Value, Value> {
        self.apply(&v).ok_or(v)
    }

    /// What it reads inside the vendor value, when that is less than all of it: paths relative
    /// to the value (an index stands for every element). A projected answer then keeps only
    /// those members there (`engine::projection`), so `apply` must give the same for the value
    /// cut down to them as for the whole one. `None` (the default): the whole value.
    fn reads_within(&self) -> Option<&[Vec<Seg>]> {
        None
    }

    /// When it reads one member of each object in a list (and nothing else reads the list):
    /// what it may be given in each object's place instead, so that a projected answer builds
    /// no object there (`engine::projection`). `apply` must give the same for the list with
    /// its objects lifted so as for the list itself. `None` (the default): objects are kept.
    fn lift(&self) -> Option<&Lift> {
        None
    }
}

/// How a conversion that reads one member of each object of a list takes that member in the
/// object's place ([`Conversion::lift`]).
#[derive(Debug, Clone)]
pub struct Lift {
    /// The member it reads.
    pub member: String,
    /// What stands in an object's place, made of that member (None: the object has none).
    pub of: fn(Option<Value>) -> Value,
}

/// Every conversion, in documentation order.
pub static REGISTRY: &[&dyn ConversionKind] = &[
    &money::Fen,
    &money::YuanToFen,
    &percent::ZheToPercentOff,
    &percent::PayRateToPercentOff,
    &names::Names,
];

pub fn find(name: &str) -> Option<&'static dyn ConversionKind> {
    REGISTRY.iter().copied().find(|k| k.name() == name)
}

/// `fen, yuan_to_fen, …` for "known: …" messages.
pub fn known() -> String {
    let names: Vec<&str> = REGISTRY.iter().map(|k| k.name()).collect();
    names.join(", ")
}

/// Every extra key any conversion reads, for the field mapping's own key check.
pub fn extra_keys() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().flat_map(|k| k.extra_keys().iter().copied())
}

/// The reference table of docs/routes.md, made from the registry and its examples.
pub fn reference_table() -> String {
    let mut out = String::from(
        "| `convert` | reads → gives | field types | examples |\n| --- | --- | --- | --- |\n",
    );
    for k in REGISTRY {
        let examples: Vec<String> = k
            .examples()
            .iter()
            .map(|(extra, input, output)| {
                let with = if extra.is_empty() {
                    String::new()
                } else {
                    format!(" (with `{extra}`)")
                };
                format!("`{input}` → `{output}`{with}")
            })
            .collect();
        let mut name = format!("`{}`", k.name());
        for e in k.extra_keys() {
            name.push_str(&format!(" (+ `{e}`)"));
        }
        out.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            k.summary(),
            k.field_types(),
            examples.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_conversion_meets_its_examples() {
        for kind in REGISTRY {
            assert!(
                !kind.examples().is_empty(),
                "`{}` has no examples",
                kind.name()
            );
            for (extra, input, output) in kind.examples() {
                let mut field = Map::new();
                field.insert("convert".into(), Value::String(kind.name().into()));
                if !extra.is_empty() {
                    let extra: Value = serde_json::from_str(&format!("{{{extra}}}")).unwrap();
                    field.extend(extra.as_object().unwrap().clone());
                }
                let c = kind.compile(&field).unwrap();
                let input: Value = serde_json::from_str(input).unwrap();
                let want: Value = serde_json::from_str(output).unwrap();
                assert_eq!(
                    c.apply(&input).unwrap_or(Value::Null),
                    want,
                    "{} of {input}",
                    kind.name()
                );
            }
        }
    }

    /// The names and extra keys that config errors and the field mapping's key check use,
    /// and what logs show of a conversion.
    #[test]
    fn names_extra_keys_and_debug() {
        assert_eq!(
            known(),
            "fen, yuan_to_fen, zhe_to_percent_off, pay_rate_to_percent_off, names"
        );
        assert_eq!(extra_keys().collect::<Vec<_>>(), ["names_key"]);
        assert!(find("yuan").is_none());
        for kind in REGISTRY {
            assert_eq!(format!("{kind:?}"), kind.name());
        }
        for name in [
            "fen",
            "yuan_to_fen",
            "zhe_to_percent_off",
            "pay_rate_to_percent_off",
        ] {
            let c = find(name).unwrap().compile(&Map::new()).unwrap();
            assert_eq!(format!("{c:?}"), name);
        }
    }

    /// Which canonical field types each conversion may fill (the field mapping refuses the
    /// others when the config is loaded).
    #[test]
    fn each_conversion_fits_its_field_types_only() {
        use FieldType::*;
        let all = [
            Text, Money, Percent, Integer, Time, TextList, Weekdays, HourRanges, Url,
        ];
        let fits = |name: &str| -> Vec<FieldType> {
            let kind = find(name).unwrap();
            all.iter().copied().filter(|t| kind.fits(*t)).collect()
        };
        assert_eq!(fits("fen"), [Money, Integer]);
        assert_eq!(fits("yuan_to_fen"), [Money, Integer]);
        assert_eq!(fits("zhe_to_percent_off"), [Percent]);
        assert_eq!(fits("pay_rate_to_percent_off"), [Percent]);
        assert_eq!(fits("names"), [TextList]);
        let e = find("names")
            .unwrap()
            .compile(
                &serde_json::json!({"names_key": 1})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .unwrap_err();
        assert_eq!(e.0, "names_key");
    }
}
