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
    let fixed = Fixed::of(&pattern);
    Ok(Arc::new(Pattern {
        pattern,
        date_only,
        fixed,
    }))
}

#[derive(Debug)]
struct Pattern {
    pattern: String,
    date_only: bool,
    /// The pattern as fixed positions, when it is made of `%Y %m %d %H %M %S` and ASCII
    /// literals only (what vendors send: `%Y-%m-%d %H:%M:%S`, `%Y%m%d`).
    fixed: Option<Fixed>,
}

/// A pattern of zero-padded numbers at fixed places: read by position, without interpreting
/// the pattern again for every value as `strptime` does (~1.4k instructions a date, most of
/// a vendor date's cost). Text it does not read exactly goes to `strptime`, so both read the
/// same: any other width, a sign, a leap second, a day the calendar lacks.
#[derive(Debug)]
struct Fixed {
    /// Each byte of a value: a literal to match, or a digit of field `0..6` (Y m d H M S).
    places: Vec<Place>,
    /// What a field the pattern lacks reads as: 1 for month and day, 0 otherwise.
    absent: [i32; 6],
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Literal(u8),
    Digit(usize),
}

impl Fixed {
    fn of(pattern: &str) -> Option<Fixed> {
        let mut places = Vec::new();
        let mut absent = [0, 1, 1, 0, 0, 0];
        let mut bytes = pattern.bytes();
        while let Some(b) = bytes.next() {
            if b != b'%' {
                if !b.is_ascii() {
                    return None;
                }
                places.push(Place::Literal(b));
                continue;
            }
            let (field, width) = match bytes.next()? {
                b'Y' => (0, 4),
                b'm' => (1, 2),
                b'd' => (2, 2),
                b'H' => (3, 2),
                b'M' => (4, 2),
                b'S' => (5, 2),
                _ => return None,
            };
            places.extend(std::iter::repeat_n(Place::Digit(field), width));
            absent[field] = 0;
        }
        Some(Fixed { places, absent })
    }

    /// The civil time of `s`, when it has exactly the pattern's shape and names a real time
    /// (fields absent from the pattern: 1 for month and day, 0 for the time of day).
    fn read(&self, s: &str) -> Option<DateTime> {
        if s.len() != self.places.len() {
            return None;
        }
        let mut f = self.absent;
        for (b, place) in s.bytes().zip(&self.places) {
            match *place {
                Place::Literal(l) if b == l => {}
                Place::Digit(i) if b.is_ascii_digit() => f[i] = f[i] * 10 + i32::from(b - b'0'),
                _ => return None,
            }
        }
        let n = |i: usize| i8::try_from(f[i]).ok();
        DateTime::new(
            i16::try_from(f[0]).ok()?,
            n(1)?,
            n(2)?,
            n(3)?,
            n(4)?,
            n(5)?,
            0,
        )
        .ok()
    }
}

impl Layout for Pattern {
    fn read(&self, v: &Value, zone: &TimeZone, bound: DayBound) -> Option<Timestamp> {
        let s = v.as_str()?.trim();
        let fixed = self.fixed.as_ref().and_then(|f| f.read(s));
        let at = if self.date_only {
            let d = match fixed {
                Some(dt) => dt.date(),
                None => Date::strptime(&self.pattern, s).ok()?,
            };
            match bound {
                DayBound::Start => d.at(0, 0, 0, 0),
                DayBound::End => d.at(23, 59, 59, 0),
            }
        } else {
            match fixed {
                Some(dt) => dt,
                None => DateTime::strptime(&self.pattern, s).ok()?,
            }
        };
        at.to_zoned(zone.clone()).ok().map(|z| z.timestamp())
    }
    fn write(&self, t: Timestamp, zone: &TimeZone) -> String {
        t.to_zoned(zone.clone()).strftime(&self.pattern).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast way and `strptime` read every value alike: valid times written by jiff in
    /// each pattern, and text of other shapes that only `strptime` may accept or refuse.
    #[test]
    fn fixed_places_read_what_strptime_reads() {
        let patterns = [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d",
            "%Y%m%d%H%M%S",
            "%Y/%m/%d %H:%M",
            "%d.%m.%Y",
        ];
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut values: Vec<String> = Vec::new();
        for _ in 0..3_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = Timestamp::from_second((x % 4_102_444_800) as i64).unwrap();
            let dt = t.to_zoned(TimeZone::UTC).datetime();
            for p in patterns {
                values.push(dt.strftime(p).to_string());
            }
        }
        values.extend(
            [
                "2026-1-5",
                "2026-01-05 7:08:09",
                "2026-02-30",
                "2026-02-29",
                "2024-02-29",
                "2026-13-01",
                "2026-12-31 23:59:60",
                "2026-12-31 24:00:00",
                "+2026-01-05",
                "2026-01-05 ",
                "20260105",
                "2026-01-0x",
                "0000-01-01",
                "9999-12-31 23:59:59",
                "",
                "2026/01/05 10:11",
                "05.01.2026",
                "5.1.2026",
                "２０２６-01-05",
                // the right length, another separator
                "2026/01/05",
                "2026-01-05T10:11:12",
                "2026.01.05 10:11:12",
                "05-01-2026",
            ]
            .map(str::to_owned),
        );
        let mut fast = 0;
        for p in patterns {
            let layout = Pattern {
                pattern: p.to_owned(),
                date_only: !p.contains("%H"),
                fixed: Fixed::of(p),
            };
            assert!(layout.fixed.is_some(), "{p}");
            let general = Pattern {
                pattern: p.to_owned(),
                date_only: layout.date_only,
                fixed: None,
            };
            for v in &values {
                for bound in [DayBound::Start, DayBound::End] {
                    let v = Value::from(v.as_str());
                    let zone = TimeZone::fixed(jiff::tz::offset(8));
                    assert_eq!(
                        layout.read(&v, &zone, bound),
                        general.read(&v, &zone, bound),
                        "{p} {v}"
                    );
                }
                fast += usize::from(layout.fixed.as_ref().unwrap().read(v).is_some());
            }
        }
        assert!(fast > 3_000, "the fast way read {fast} values");
        // patterns with anything else go to strptime alone
        for p in [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%y-%m-%d",
            "%Y-%m-%d %H:%M:%S %z",
            "%b %d %Y",
            "%Y年%m月%d日",
        ] {
            assert!(Fixed::of(p).is_none(), "{p}");
        }
    }
}
