//! Time layouts and zones: how vendor times are read (`time: {formats: […], zone, bound}` in a
//! field mapping) and how instants are written into requests (`{{now | time:LAYOUT | zone:Z}}`,
//! `{{input.begin_at | time:epoch_ms}}`).
//!
//! Each family of layouts lives in a file of its own and implements [`LayoutKind`]; it
//! recognises the layouts it owns (a name such as `epoch_ms`, or a pattern such as
//! `%Y%m%d` or `yyyyMMddHHmmss`) and compiles them into a [`Layout`] that reads and writes.
//! [`REGISTRY`] lists every family once, in the order they are tried.
mod epoch;
mod java;
mod rfc3339;
mod strftime;

use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use serde_json::Value;

/// Which end of the day a date-only value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayBound {
    Start,
    End,
}

/// A family of layouts.
pub trait LayoutKind: Sync {
    /// The family's name in the docs.
    fn name(&self) -> &'static str;
    /// How it is written in routes.yaml, for the reference table.
    fn written(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    /// The layout `spec` compiled, or None when `spec` is not of this family.
    fn compile(&self, spec: &str) -> Option<Result<Arc<dyn Layout>, String>>;
    /// Known answers: (layout, zone, epoch milliseconds, text). Each is written from the
    /// instant and read back to it (to the layout's precision).
    fn examples(&self) -> &'static [(&'static str, &'static str, i64, &'static str)];
}

/// A compiled layout.
pub trait Layout: std::fmt::Debug + Send + Sync {
    /// Reads a vendor value; `zone` applies to text without an offset, `bound` to dates.
    fn read(&self, v: &Value, zone: &TimeZone, bound: DayBound) -> Option<Timestamp>;
    /// Writes an instant in `zone`.
    fn write(&self, t: Timestamp, zone: &TimeZone) -> String;
}

/// Every layout family, in the order a layout is matched against them.
pub static REGISTRY: &[&dyn LayoutKind] = &[
    &epoch::EpochS,
    &epoch::EpochMs,
    &rfc3339::Rfc3339,
    &strftime::Strftime,
    &java::JavaPattern,
];

/// Compiles a layout as written in routes.yaml (`date` and `datetime` are short names of
/// `yyyy-MM-dd` and `yyyy-MM-dd HH:mm:ss`).
pub fn layout(spec: &str) -> Result<Arc<dyn Layout>, String> {
    let spec = match spec {
        "date" => "yyyy-MM-dd",
        "datetime" => "yyyy-MM-dd HH:mm:ss",
        s => s,
    };
    REGISTRY
        .iter()
        .find_map(|k| k.compile(spec))
        .unwrap_or_else(|| {
            Err(format!(
                "unknown time layout `{spec}` (known: epoch_s, epoch_ms, rfc3339, rfc3339_ms, date, datetime, a strftime pattern such as `%Y/%m/%d %H:%M`, or a pattern such as `yyyyMMddHHmmss`)"
            ))
        })
}

/// The zone every canonical time is written in (and the vendors' default): UTC+08:00.
pub fn canonical_zone() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(8))
}

/// `+08:00`, `-05:30`, `UTC`, `Z`, or an IANA name such as `Asia/Shanghai`.
pub fn zone(z: &str) -> Result<TimeZone, String> {
    if z.eq_ignore_ascii_case("utc") || z == "Z" {
        return Ok(TimeZone::UTC);
    }
    let bad = || {
        format!(
            "bad zone `{z}` (write it as +08:00, -05:30, UTC, or an IANA name such as Asia/Shanghai)"
        )
    };
    let (sign, rest) = match z.as_bytes().first() {
        Some(b'+') => (1, &z[1..]),
        Some(b'-') => (-1, &z[1..]),
        _ => return TimeZone::get(z).map_err(|_| bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60))
        .map(TimeZone::fixed)
        .map_err(|_| bad())
}

/// How to read a time: layouts tried in order, the zone of times without an offset, and the
/// end of the day a bare date means.
#[derive(Debug, Clone)]
pub struct TimeSpec {
    pub layouts: Vec<Arc<dyn Layout>>,
    pub zone: TimeZone,
    pub bound: DayBound,
}

impl TimeSpec {
    pub fn read(&self, v: &Value) -> Option<Timestamp> {
        self.layouts
            .iter()
            .find_map(|l| l.read(v, &self.zone, self.bound))
    }

    /// From a field mapping's `time: {formats, zone, bound}`.
    pub fn compile(v: &Value) -> Result<TimeSpec, String> {
        let Value::Object(m) = v else {
            return Err(
                "`time` is a mapping `{formats: [...], zone: \"+08:00\", bound: start|end}`"
                    .to_owned(),
            );
        };
        for k in m.keys() {
            if !["formats", "zone", "bound"].contains(&k.as_str()) {
                return Err(format!("unknown key `{k}` (known: formats, zone, bound)"));
            }
        }
        let layouts = match m.get("formats") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|f| {
                    f.as_str()
                        .ok_or("formats are strings".to_owned())
                        .and_then(layout)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::String(s)) => vec![layout(s)?],
            _ => return Err("`formats` lists at least one time format".to_owned()),
        };
        let zone = match m.get("zone").and_then(Value::as_str) {
            None => canonical_zone(),
            Some(z) => zone(z)?,
        };
        let bound = match m.get("bound").and_then(Value::as_str) {
            None | Some("start") => DayBound::Start,
            Some("end") => DayBound::End,
            Some(other) => return Err(format!("unknown bound `{other}` (start or end)")),
        };
        Ok(TimeSpec {
            layouts,
            zone,
            bound,
        })
    }
}

/// A layout and a zone to write an instant in: one entry of a request's clock table.
#[derive(Debug, Clone)]
pub struct Rendering {
    pub layout: Arc<dyn Layout>,
    pub zone: TimeZone,
}

impl Rendering {
    pub fn write(&self, t: Timestamp) -> String {
        self.layout.write(t, &self.zone)
    }
}

/// Reads a canonical time given as an input (RFC 3339 with any offset, or a `yyyy-MM-dd`
/// date at the start of that day in the canonical zone).
pub fn read_canonical(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    text.parse::<Timestamp>().ok().or_else(|| {
        jiff::civil::Date::strptime("%Y-%m-%d", text)
            .ok()?
            .to_zoned(canonical_zone())
            .ok()
            .map(|z| z.timestamp())
    })
}

/// RFC 3339 in UTC+08:00, seconds precision: `2015-11-25T00:00:00+08:00`, the canonical form.
///
/// Written digit by digit: every coupon of a vendor answer has two of these, and jiff's
/// `strftime` (a format string interpreted per call, a `Zoned` made per instant) was ~2.8k
/// instructions a time, 3 % of a miss. Years before 0000 (which no vendor sends, but a
/// conversion can reach) go the general way.
pub fn canonical(t: Timestamp) -> String {
    const ZONE: Offset = jiff::tz::offset(8);
    let dt = ZONE.to_datetime(t);
    // jiff's years end at 9999; negative ones are written with a sign
    let Ok(year) = u32::try_from(dt.year()) else {
        return canonical_general(t);
    };
    let mut b = *b"0000-00-00T00:00:00+08:00";
    put_date_time(&mut b, year, dt);
    std::str::from_utf8(&b).expect("ASCII digits").to_owned()
}

/// Writes `year` (0–9999) and `dt`'s month, day, hour, minute and second over the digits of
/// `b`, which is shaped `0000-00-00T00:00:00…`: the digit-by-digit writers of times (the
/// canonical form here, the access line's timestamp) share it.
pub(crate) fn put_date_time(b: &mut [u8], year: u32, dt: jiff::civil::DateTime) {
    put_digits(b, 0, year, 4);
    put_digits(b, 5, dt.month() as u32, 2);
    put_digits(b, 8, dt.day() as u32, 2);
    put_digits(b, 11, dt.hour() as u32, 2);
    put_digits(b, 14, dt.minute() as u32, 2);
    put_digits(b, 17, dt.second() as u32, 2);
}

/// `n` as `width` decimal digits, zero-padded, at `b[at..at + width]`.
pub(crate) fn put_digits(b: &mut [u8], at: usize, mut n: u32, width: usize) {
    for i in (at..at + width).rev() {
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The instant a canonical time names (as [`canonical`] writes it), read by position; any
/// other RFC 3339 text by jiff. Every coupon built from a stored row reads two of these.
pub fn canonical_instant(s: &str) -> Option<Timestamp> {
    by_position(s).or_else(|| s.parse().ok())
}

/// The instant of text shaped exactly as [`canonical`] writes it (a year from 0000), or None.
fn by_position(s: &str) -> Option<Timestamp> {
    const ZONE: Offset = jiff::tz::offset(8);
    let b = s.as_bytes();
    let shape = b.len() == 25
        && s.ends_with("+08:00")
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b'T'
        && [13, 16].iter().all(|&i| b[i] == b':');
    if !shape {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i32> {
        b[from..to].iter().try_fold(0_i32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i32::from(d - b'0'))
        })
    };
    let dt = jiff::civil::DateTime::new(
        i16::try_from(num(0, 4)?).ok()?,
        i8::try_from(num(5, 7)?).ok()?,
        i8::try_from(num(8, 10)?).ok()?,
        i8::try_from(num(11, 13)?).ok()?,
        i8::try_from(num(14, 16)?).ok()?,
        i8::try_from(num(17, 19)?).ok()?,
        0,
    )
    .ok()?;
    ZONE.to_timestamp(dt).ok()
}

/// [`canonical`] by jiff's `strftime`: the reference the fast way is tested against.
fn canonical_general(t: Timestamp) -> String {
    t.to_zoned(canonical_zone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// The reference table of docs/routes.md, made from the registry and its examples.
pub fn reference_table() -> String {
    let mut out = String::from(
        "| layout | what it is | example (instant, zone → text) |\n| --- | --- | --- |\n",
    );
    for k in REGISTRY {
        let examples: Vec<String> = k
            .examples()
            .iter()
            .map(|(spec, zone, _, text)| format!("`{spec}` in {zone} → `{text}`"))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            k.written(),
            k.summary(),
            examples.join("<br>")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(formats: &[&str], bound: DayBound) -> TimeSpec {
        TimeSpec {
            layouts: formats.iter().map(|f| layout(f).unwrap()).collect(),
            zone: canonical_zone(),
            bound,
        }
    }

    #[test]
    fn times_in_every_vendor_format() {
        let start = spec(&["epoch_ms", "date"], DayBound::Start);
        let end = spec(&["epoch_ms", "date"], DayBound::End);
        let t = |s: &TimeSpec, v: Value| s.read(&v).map(canonical);
        assert_eq!(
            t(&start, json!(1448380800000i64)).unwrap(),
            "2015-11-25T00:00:00+08:00"
        );
        assert_eq!(
            t(&end, json!(1449935999000i64)).unwrap(),
            "2015-12-12T23:59:59+08:00"
        );
        assert_eq!(
            t(&start, json!("2015-11-25")).unwrap(),
            "2015-11-25T00:00:00+08:00"
        );
        assert_eq!(
            t(&end, json!("2015-12-12")).unwrap(),
            "2015-12-12T23:59:59+08:00"
        );
        assert_eq!(
            t(&start, json!("1448380800000")).unwrap(),
            "2015-11-25T00:00:00+08:00"
        );
        assert_eq!(t(&start, json!("yesterday")), None);

        let dt = spec(&["datetime"], DayBound::Start);
        assert_eq!(
            t(&dt, json!("2019-08-24 00:00:00")).unwrap(),
            "2019-08-24T00:00:00+08:00"
        );
        let secs = spec(&["epoch_s"], DayBound::Start);
        assert_eq!(
            t(&secs, json!(1547186244)).unwrap(),
            "2019-01-11T13:57:24+08:00"
        );
        let rfc = spec(&["rfc3339"], DayBound::Start);
        assert_eq!(
            t(&rfc, json!("2026-11-30T16:00:00Z")).unwrap(),
            "2026-12-01T00:00:00+08:00"
        );
        // a UTC wall-clock pattern (wxcard's list dates)
        let utc = TimeSpec {
            layouts: vec![layout("%Y-%m-%d %H:%M:%S%.f").unwrap()],
            zone: TimeZone::UTC,
            bound: DayBound::Start,
        };
        assert_eq!(
            t(&utc, json!("2026-11-30 16:00:00.000000")).unwrap(),
            "2026-12-01T00:00:00+08:00"
        );
        assert!(layout("yesterday").is_err());
    }

    #[test]
    fn every_family_writes_and_reads_its_examples() {
        for kind in REGISTRY {
            assert!(!kind.examples().is_empty(), "{}", kind.name());
            for (spec, z, ms, text) in kind.examples() {
                let l = layout(spec).unwrap();
                let z = zone(z).unwrap();
                let t = Timestamp::from_millisecond(*ms).unwrap();
                assert_eq!(l.write(t, &z), *text, "{spec} writes");
                let v = if spec.starts_with("epoch") {
                    serde_json::from_str(text).unwrap()
                } else {
                    Value::String((*text).to_owned())
                };
                let back = l
                    .read(&v, &z, DayBound::Start)
                    .unwrap_or_else(|| panic!("{spec} reads {text}"));
                assert!(
                    (t.as_millisecond() - back.as_millisecond()).abs() < 86_400_000,
                    "{spec} read {text} as {back}"
                );
            }
        }
    }

    #[test]
    fn zones_fixed_utc_and_iana() {
        let t = Timestamp::from_second(0).unwrap();
        let rfc = layout("rfc3339").unwrap();
        assert_eq!(rfc.write(t, &zone("UTC").unwrap()), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc.write(t, &zone("+08:00").unwrap()),
            "1970-01-01T08:00:00+08:00"
        );
        assert_eq!(
            rfc.write(t, &zone("-05:30").unwrap()),
            "1969-12-31T18:30:00-05:30"
        );
        assert_eq!(
            rfc.write(t, &zone("Asia/Shanghai").unwrap()),
            "1970-01-01T08:00:00+08:00"
        );
        // New York is on daylight time in July
        let july = Timestamp::from_second(1_784_000_000).unwrap();
        assert!(
            rfc.write(july, &zone("America/New_York").unwrap())
                .ends_with("-04:00")
        );
        assert!(zone("Mars/Olympus").unwrap_err().contains("IANA"));
        assert!(zone("+15:00").is_err());
    }

    #[test]
    fn unknown_layouts_list_what_exists() {
        assert!(
            layout("julian")
                .unwrap_err()
                .contains("known: epoch_s, epoch_ms, rfc3339")
        );
        assert!(layout("%Q").is_err());
    }

    #[test]
    fn canonical_times_are_written_as_strftime_writes_them() {
        // instants spread over the years jiff knows, and the edges of each field
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let (lo, hi) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
        let mut seconds: Vec<i64> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                lo + (x % (hi - lo + 1) as u64) as i64
            })
            .collect();
        seconds.extend([
            0,
            -1,
            1_448_380_800,
            253_402_178_399,
            253_402_178_400,
            -62_167_248_000,
        ]);
        seconds.extend([
            -62_167_248_001,
            lo,
            hi,
            1_700_000_000 + 59,
            1_700_000_000 - 28_800,
        ]);
        for s in seconds {
            let t = Timestamp::from_second(s).unwrap();
            assert_eq!(canonical(t), canonical_general(t), "at {s}");
        }
        // subseconds are not written
        let t = Timestamp::new(1_448_380_800, 999_999_999).unwrap();
        assert_eq!(canonical(t), "2015-11-25T00:00:00+08:00");
    }

    #[test]
    fn canonical_times_read_back_as_jiff_reads_them() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut texts: Vec<String> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (lo, hi) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
                canonical(Timestamp::from_second(lo + (x % (hi - lo + 1) as u64) as i64).unwrap())
            })
            .collect();
        texts.extend(
            [
                "2015-11-25T00:00:00+08:00",
                "2015-11-25T00:00:00+09:00",
                "2015-11-25T00:00:00Z",
                "2015-11-25 00:00:00+08:00",
                "2015-02-30T00:00:00+08:00",
                "2016-12-31T23:59:60+08:00",
                "2015-11-25T24:00:00+08:00",
                "2015-11-25T00:00:00.5+08:00",
                "2015-1-25T00:00:00+08:00",
                "2015-11-25T0a:00:00+08:00",
                "",
                "+2015-11-25T00:00:00+08:00",
                "9999-12-31T23:59:59+08:00",
            ]
            .map(str::to_owned),
        );
        for t in &texts {
            let jiffs = t.parse::<Timestamp>().ok();
            assert_eq!(canonical_instant(t), jiffs, "{t}");
            // and the canonical text of a year from 0000 is read by position, not by jiff
            if !t.starts_with('-') && t.len() == 25 && jiffs.is_some_and(|j| canonical(j) == *t) {
                assert_eq!(by_position(t), jiffs, "{t}");
            }
        }
    }

    #[test]
    fn canonical_inputs_read_as_instants() {
        assert_eq!(
            read_canonical("2026-12-01").map(canonical).as_deref(),
            Some("2026-12-01T00:00:00+08:00")
        );
        assert_eq!(
            read_canonical("2026-11-30T16:00:00Z")
                .map(canonical)
                .as_deref(),
            Some("2026-12-01T00:00:00+08:00")
        );
        assert_eq!(read_canonical("yesterday"), None);
    }

    #[test]
    fn zones_at_their_bounds_and_every_spelling_of_utc() {
        let t = Timestamp::from_second(0).unwrap();
        let rfc = layout("rfc3339").unwrap();
        for z in ["UTC", "utc", "Z"] {
            assert_eq!(
                rfc.write(t, &zone(z).unwrap()),
                "1970-01-01T00:00:00Z",
                "{z}"
            );
        }
        // the widest offsets in use (Kiribati, +14:00) and the last minute of an hour
        assert_eq!(
            rfc.write(t, &zone("+14:00").unwrap()),
            "1970-01-01T14:00:00+14:00"
        );
        assert_eq!(
            rfc.write(t, &zone("-03:59").unwrap()),
            "1969-12-31T20:01:00-03:59"
        );
        // a zone that is at offset zero only part of the year keeps its offset; only UTC
        // (and `+00:00`, the same zone) is written `Z`
        let winter = Timestamp::from_second(1_420_070_400).unwrap();
        assert_eq!(
            rfc.write(winter, &zone("Europe/London").unwrap()),
            "2015-01-01T00:00:00+00:00"
        );
        assert_eq!(
            rfc.write(winter, &zone("+00:00").unwrap()),
            "2015-01-01T00:00:00Z"
        );
        for bad in ["+15:00", "+05:60", "+0800", "+08:xx"] {
            assert!(zone(bad).unwrap_err().contains("bad zone"), "{bad}");
        }
    }

    #[test]
    fn time_specs_compile_from_field_mappings() {
        // `formats` as one string or a list; no zone means the canonical one; no bound, start
        let one = TimeSpec::compile(&json!({"formats": "date"})).unwrap();
        assert_eq!(one.layouts.len(), 1);
        assert_eq!(one.zone, canonical_zone());
        assert_eq!(one.bound, DayBound::Start);
        assert_eq!(
            one.read(&json!("2015-11-25")).map(canonical).as_deref(),
            Some("2015-11-25T00:00:00+08:00")
        );
        let end = TimeSpec::compile(
            &json!({"formats": ["epoch_ms", "date"], "zone": "UTC", "bound": "end"}),
        )
        .unwrap();
        assert_eq!(end.layouts.len(), 2);
        assert_eq!(end.bound, DayBound::End);
        assert_eq!(
            end.read(&json!("2015-11-25")).map(canonical).as_deref(),
            Some("2015-11-26T07:59:59+08:00")
        );
        let start = TimeSpec::compile(&json!({"formats": ["date"], "bound": "start"})).unwrap();
        assert_eq!(start.bound, DayBound::Start);

        let err = |v: Value| TimeSpec::compile(&v).unwrap_err();
        assert!(err(json!("date")).contains("is a mapping"));
        assert!(err(json!({"formats": []})).contains("at least one"));
        assert!(err(json!({})).contains("at least one"));
        assert!(err(json!({"formats": [1]})).contains("strings"));
        assert!(err(json!({"formats": ["julian"]})).contains("unknown time layout"));
        assert!(err(json!({"formats": "date", "zone": "+99:00"})).contains("bad zone"));
        assert!(err(json!({"formats": "date", "bound": "noon"})).contains("unknown bound `noon`"));
        assert!(err(json!({"formats": "date", "zones": "UTC"})).contains("unknown key `zones`"));
    }

    #[test]
    fn each_family_is_named_once_and_its_name_is_in_its_docs_row() {
        let names: Vec<&str> = REGISTRY.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            ["epoch_s", "epoch_ms", "rfc3339", "strftime", "pattern"]
        );
        for k in REGISTRY {
            let row = format!("{} {}", k.written(), k.summary());
            assert!(row.contains(k.name()), "{} not in `{row}`", k.name());
        }
    }
}
