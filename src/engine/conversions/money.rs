//! Money: integer fen, exactly (no floating point on the way).
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Conversion, ConversionKind};
use crate::canonical::schema::FieldType;
use crate::engine::convert;

pub struct Fen;
pub struct YuanToFen;

fn money(ty: FieldType) -> bool {
    matches!(ty, FieldType::Money | FieldType::Integer)
}

impl ConversionKind for Fen {
    fn name(&self) -> &'static str {
        "fen"
    }
    fn summary(&self) -> &'static str {
        "a whole number of fen (number or numeric string) → integer fen"
    }
    fn field_types(&self) -> &'static str {
        "money, integer"
    }
    fn fits(&self, ty: FieldType) -> bool {
        money(ty)
    }
    fn compile(&self, _: &Map<String, Value>) -> Result<Arc<dyn Conversion>, (String, String)> {
        Ok(Arc::new(Run("fen", convert::fen)))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("", "500", "500"),
            ("", "\"500\"", "500"),
            ("", "500.0", "500"),
            ("", "500.5", "null"),
        ]
    }
}

impl ConversionKind for YuanToFen {
    fn name(&self) -> &'static str {
        "yuan_to_fen"
    }
    fn summary(&self) -> &'static str {
        "yuan with at most 2 decimals (number or decimal string) → integer fen"
    }
    fn field_types(&self) -> &'static str {
        "money, integer"
    }
    fn fits(&self, ty: FieldType) -> bool {
        money(ty)
    }
    fn compile(&self, _: &Map<String, Value>) -> Result<Arc<dyn Conversion>, (String, String)> {
        Ok(Arc::new(Run("yuan_to_fen", convert::yuan_to_fen)))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("", "\"12.50\"", "1250"),
            ("", "12.5", "1250"),
            ("", "\"1999.995\"", "null"),
            ("", "\"1e3\"", "null"),
        ]
    }
}

struct Run(&'static str, fn(&Value) -> Option<i64>);

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Conversion for Run {
    fn apply(&self, v: &Value) -> Option<Value> {
        (self.1)(v).map(Value::from)
    }
}
