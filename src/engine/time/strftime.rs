//! strftime patterns (jiff's): any layout containing `%`. A pattern without a time of day is
//! a date: read at the start or end of that day (`bound`) in the field's zone.
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde_json::Value;

use super::{DayBound, Layout, LayoutKind};

pub struct Strftime;

impl LayoutKind for Strftime {
    fn name(&self) -> &'static str {
        "strftime"
    }
    fn written(&self) -> &'static str {
        "a pattern with `%`, e.g. `%Y/%m/%d %H:%M`, `%Y-%m-%d %H:%M:%S%.f`"
    }
    fn summary(&self) -> &'static str {
        "strftime fields in the zone; without `%H %M %S %T %I %R` it is a date (`bound` applies)"
    }
    fn compile(&self, spec: &str) -> Option<Result<Arc<dyn Layout>, String>> {
        spec.contains('%').then(|| pattern(spec.to_owned()))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, i64, &'static str)] {
        &[
            (
                "%Y/%m/%d %H:%M:%S",
                "+08:00",
                1_448_531_062_000,
                "2015/11/26 17:44:22",
            ),
            ("%Y-%m-%d", "+08:00", 1_448_467_200_000, "2015-11-26"),
        ]
    }
}

/// Compiles a strftime pattern (also the target of the `yyyy…` patterns).
pub fn pattern(pattern: String) -> Result<Arc<dyn Layout>, String> {
    let date_only = !["%H", "%M", "%S", "%T", "%I", "%R", "%s"]
        .iter()
        .any(|t| pattern.contains(t));
    // refuse patterns jiff cannot use at all
    let probe = jiff::civil::date(2020, 1, 2).at(3, 4, 5, 0);
    jiff::fmt::strtime::format(pattern.as_str(), probe)
        .map_err(|e| format!("bad time pattern `{pattern}`: {e}"))?;
    Ok(Arc::new(Pattern { pattern, date_only }))
}

#[derive(Debug)]
struct Pattern {
    pattern: String,
    date_only: bool,
}

impl Layout for Pattern {
    fn read(&self, v: &Value, zone: &TimeZone, bound: DayBound) -> Option<Timestamp> {
        let s = v.as_str()?.trim();
        let at = if self.date_only {
            let d = Date::strptime(&self.pattern, s).ok()?;
            match bound {
                DayBound::Start => d.at(0, 0, 0, 0),
                DayBound::End => d.at(23, 59, 59, 0),
            }
        } else {
            DateTime::strptime(&self.pattern, s).ok()?
        };
        at.to_zoned(zone.clone()).ok().map(|z| z.timestamp())
    }
    fn write(&self, t: Timestamp, zone: &TimeZone) -> String {
        t.to_zoned(zone.clone()).strftime(&self.pattern).to_string()
    }
}
