//! Discounts as percent off: from 折 (the share paid, in tenths) or a pay rate (the fraction
//! paid), computed in hundredths so `8.5` gives exactly `15.0`.
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Conversion, ConversionKind};
use crate::canonical::schema::FieldType;
use crate::engine::convert;

pub struct ZheToPercentOff;
pub struct PayRateToPercentOff;

impl ConversionKind for ZheToPercentOff {
    fn name(&self) -> &'static str {
        "zhe_to_percent_off"
    }
    fn summary(&self) -> &'static str {
        "折 (0–10, at most 3 decimals) → percent off"
    }
    fn field_types(&self) -> &'static str {
        "percent"
    }
    fn fits(&self, ty: FieldType) -> bool {
        ty == FieldType::Percent
    }
    fn compile(&self, _: &Map<String, Value>) -> Result<Arc<dyn Conversion>, (String, String)> {
        Ok(Arc::new(Run(
            "zhe_to_percent_off",
            convert::zhe_to_percent_off,
        )))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("", "8.5", "15.0"),
            ("", "5", "50.0"),
            ("", "\"9.5\"", "5.0"),
            ("", "11", "null"),
        ]
    }
}

impl ConversionKind for PayRateToPercentOff {
    fn name(&self) -> &'static str {
        "pay_rate_to_percent_off"
    }
    fn summary(&self) -> &'static str {
        "fraction paid (0–1, at most 4 decimals) → percent off"
    }
    fn field_types(&self) -> &'static str {
        "percent"
    }
    fn fits(&self, ty: FieldType) -> bool {
        ty == FieldType::Percent
    }
    fn compile(&self, _: &Map<String, Value>) -> Result<Arc<dyn Conversion>, (String, String)> {
        Ok(Arc::new(Run(
            "pay_rate_to_percent_off",
            convert::pay_rate_to_percent_off,
        )))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &[
            ("", "0.85", "15.0"),
            ("", "\"0.7\"", "30.0"),
            ("", "1.5", "null"),
        ]
    }
}

struct Run(&'static str, fn(&Value) -> Option<f64>);

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Conversion for Run {
    fn apply(&self, v: &Value) -> Option<Value> {
        (self.1)(v)
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
    }
}
