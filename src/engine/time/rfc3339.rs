//! RFC 3339: read with any offset (`Z`, `+08:00`, fractions allowed); written to the second
//! (`rfc3339`) or the millisecond (`rfc3339_ms`), with `Z` in UTC and the offset elsewhere.
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

use super::{DayBound, Layout, LayoutKind};

pub struct Rfc3339;

impl LayoutKind for Rfc3339 {
    fn name(&self) -> &'static str {
        "rfc3339"
    }
    fn written(&self) -> &'static str {
        "`rfc3339`, `rfc3339_ms`"
    }
    fn summary(&self) -> &'static str {
        "RFC 3339 / ISO 8601 with an offset; read with any offset, written with `Z` in UTC"
    }
    fn compile(&self, spec: &str) -> Option<Result<Arc<dyn Layout>, String>> {
        match spec {
            "rfc3339" => Some(Ok(Arc::new(Run { millis: false }))),
            "rfc3339_ms" => Some(Ok(Arc::new(Run { millis: true }))),
            _ => None,
        }
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, i64, &'static str)] {
        &[
            (
                "rfc3339",
                "+08:00",
                1_448_531_062_000,
                "2015-11-26T17:44:22+08:00",
            ),
            ("rfc3339", "UTC", 1_448_531_062_000, "2015-11-26T09:44:22Z"),
            (
                "rfc3339_ms",
                "UTC",
                1_448_531_062_897,
                "2015-11-26T09:44:22.897Z",
            ),
        ]
    }
}

#[derive(Debug)]
struct Run {
    millis: bool,
}

impl Layout for Run {
    fn read(&self, v: &Value, _: &TimeZone, _: DayBound) -> Option<Timestamp> {
        v.as_str()?.trim().parse::<Timestamp>().ok()
    }
    fn write(&self, t: Timestamp, zone: &TimeZone) -> String {
        let z = t.to_zoned(zone.clone());
        let base = if self.millis {
            "%Y-%m-%dT%H:%M:%S%.3f"
        } else {
            "%Y-%m-%dT%H:%M:%S"
        };
        if z.offset().seconds() == 0 && zone == &TimeZone::UTC {
            format!("{}Z", z.strftime(base))
        } else {
            format!("{}{}", z.strftime(base), z.strftime("%:z"))
        }
    }
}
