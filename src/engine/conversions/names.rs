//! Lists of names: a JSON list of strings, numbers or objects (the name under `names_key`,
//! default `name`), or a comma-separated string.
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Conversion, ConversionKind};
use crate::canonical::schema::FieldType;
use crate::engine::convert;

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
        Ok(Arc::new(Run(key)))
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
struct Run(String);

impl Conversion for Run {
    fn apply(&self, v: &Value) -> Option<Value> {
        convert::names(v, &self.0).map(Value::from)
    }
}
