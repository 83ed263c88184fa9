//! Epoch seconds and milliseconds: JSON numbers or digit strings when read, digits when
//! written. The zone does not apply.
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

use super::{DayBound, Layout, LayoutKind};
use crate::engine::convert::Decimal;

pub struct EpochS;
pub struct EpochMs;

fn integer(v: &Value) -> Option<i64> {
    Decimal::from_json(v)?.scaled_exact(0)
}

impl LayoutKind for EpochS {
    fn name(&self) -> &'static str {
        "epoch_s"
    }
    fn written(&self) -> &'static str {
        "`epoch_s`"
    }
    fn summary(&self) -> &'static str {
        "seconds since 1970-01-01T00:00:00Z (number or digit string); zone does not apply"
    }
    fn compile(&self, spec: &str) -> Option<Result<Arc<dyn Layout>, String>> {
        (spec == "epoch_s").then(|| Ok(Arc::new(Seconds) as Arc<dyn Layout>))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, i64, &'static str)] {
        &[("epoch_s", "UTC", 1_547_186_244_000, "1547186244")]
    }
}

impl LayoutKind for EpochMs {
    fn name(&self) -> &'static str {
        "epoch_ms"
    }
    fn written(&self) -> &'static str {
        "`epoch_ms`"
    }
    fn summary(&self) -> &'static str {
        "milliseconds since 1970-01-01T00:00:00Z (number or digit string); zone does not apply"
    }
    fn compile(&self, spec: &str) -> Option<Result<Arc<dyn Layout>, String>> {
        (spec == "epoch_ms").then(|| Ok(Arc::new(Millis) as Arc<dyn Layout>))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, i64, &'static str)] {
        &[("epoch_ms", "+08:00", 1_448_531_062_897, "1448531062897")]
    }
}

#[derive(Debug)]
struct Seconds;

impl Layout for Seconds {
    fn read(&self, v: &Value, _: &TimeZone, _: DayBound) -> Option<Timestamp> {
        Timestamp::from_second(integer(v)?).ok()
    }
    fn write(&self, t: Timestamp, _: &TimeZone) -> String {
        t.as_second().to_string()
    }
}

#[derive(Debug)]
struct Millis;

impl Layout for Millis {
    fn read(&self, v: &Value, _: &TimeZone, _: DayBound) -> Option<Timestamp> {
        Timestamp::from_millisecond(integer(v)?).ok()
    }
    fn write(&self, t: Timestamp, _: &TimeZone) -> String {
        t.as_millisecond().to_string()
    }
}
