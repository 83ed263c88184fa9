//! Lists of names: a JSON list of strings, numbers or objects (the name under `names_key`,
//! default `name`), or a comma-separated string.
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Conversion, ConversionKind, Lift};
use crate::canonical::schema::FieldType;
use crate::engine::convert;
use crate::engine::extract::Seg;

pub struct Names;

impl ConversionKind for Names {
    fn name(&self) -> &'static str {
        "names"
    }
    fn summary(&self) -> &'static str {
        "a list of strings, numbers or objects, or a comma-separated string (`\"\"` → `[]`) → a list of names"
    }
    fn field_types(&self) -> &'static str {
        "text list"
    }
    fn fits(&self, ty: FieldType) -> bool {
        ty == FieldType::TextList
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &["names_key"]
    }
    fn compile(&self, field: &Map<String, Value>) -> Result<Arc<dyn Conversion>, (String, String)> {
        let key = match field.get("names_key") {
            None => "name".to_owned(),
            Some(Value::String(k)) => k.clone(),
            Some(_) => return Err(("names_key".into(), "the member name of the objects".into())),
        };
        // a list's elements are names, or objects whose name is under `key`: nothing else of
        // an element is read (a value that is not a list is read as it is)
        let within = vec![vec![Seg::Index(0), Seg::Key(key.clone())]];
        // an object's name, as the name it gives (text), or nothing: `apply` reads the
        // lifted list as it reads the objects
        let lift = Lift {
            member: key.clone(),
            of: |name| {
                name.and_then(convert::text_owned)
                    .map_or(Value::Null, Value::String)
            },
        };
        Ok(Arc::new(Run { key, within, lift }))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("", r#"["咖啡", 7]"#, r#"["咖啡", "7"]"#),
            (
                r#""names_key": "title""#,
                r#"[{"title": "打车"}]"#,
                r#"["打车"]"#,
            ),
            ("", r#""a, b""#, r#"["a", "b"]"#),
            ("", r#""""#, "[]"),
        ]
    }
}

#[derive(Debug)]
struct Run {
    key: String,
    within: Vec<Vec<Seg>>,
    lift: Lift,
}

impl Conversion for Run {
    fn apply(&self, v: &Value) -> Option<Value> {
        convert::names(v, &self.key).map(Value::from)
    }
    fn apply_owned(&self, v: Value) -> Result<Value, Value> {
        convert::names_owned(v, &self.key)
    }
    fn reads_within(&self) -> Option<&[Vec<Seg>]> {
        Some(&self.within)
    }
    fn lift(&self) -> Option<&Lift> {
        Some(&self.lift)
    }
}
