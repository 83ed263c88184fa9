//! Unit conversions and natural readings of values from vendor answers (times: `engine::time`).
//!
//! Money never goes through floating point: amounts are parsed as exact decimals
//! (`"12.50"`, `12.5`, `"1250"`) and scaled with integer arithmetic. Vendors send numbers as
//! JSON numbers or as strings; every conversion accepts both.
use serde_json::Value;

/// An exact decimal: `units / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub units: i128,
    pub scale: u32,
}

impl Decimal {
    /// Parses a JSON number or numeric string exactly (no float rounding; `1e3` is refused).
    pub fn from_json(v: &Value) -> Option<Decimal> {
        match v {
            // integers, nearly every vendor number, need no formatting
            Value::Number(n) if n.is_i64() || n.is_u64() => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .map(|units| Decimal { units, scale: 0 }),
            Value::Number(n) => Decimal::parse(&n.to_string()),
            Value::String(s) => Decimal::parse(s.trim()),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Decimal> {
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || int.len() + frac.len() > 30
        {
            return None;
        }
        let frac = frac.trim_end_matches('0');
        let mut units: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            units = units * 10 + i128::from(b - b'0');
        }
        Some(Decimal {
            units: if neg { -units } else { units },
            scale: frac.len() as u32,
        })
    }

    /// The value times `10^shift`, if that is a whole number.
    pub fn scaled_exact(self, shift: u32) -> Option<i64> {
        if self.scale > shift {
            return None;
        }
        let v = self
            .units
            .checked_mul(10i128.checked_pow(shift - self.scale)?)?;
        i64::try_from(v).ok()
    }

    pub fn to_f64(self) -> f64 {
        self.units as f64 / 10f64.powi(self.scale as i32)
    }
}

/// Integer fen from fen (`500`, `"500"`, `500.0`).
pub fn fen(v: &Value) -> Option<i64> {
    Decimal::from_json(v)?.scaled_exact(0)
}

/// Integer fen from a yuan amount (`"12.5"` → 1250). More than two decimals is not money.
pub fn yuan_to_fen(v: &Value) -> Option<i64> {
    Decimal::from_json(v)?.scaled_exact(2)
}

/// Percent off from a 折 figure: the customer pays x/10, so 8.5 → 15.0 and 5 → 50.0.
pub fn zhe_to_percent_off(v: &Value) -> Option<f64> {
    let d = Decimal::from_json(v)?;
    // 100 - x*10 computed in hundredths so 8.5 gives exactly 15.0
    let hundredths = d.scaled_exact(3)?; // x * 1000 = (x*10) in hundredths
    let off = 10_000i64.checked_sub(hundredths)?;
    (0..=10_000).contains(&off).then(|| off as f64 / 100.0)
}

/// Percent off from a pay rate, the fraction paid: 0.85 → 15.0.
pub fn pay_rate_to_percent_off(v: &Value) -> Option<f64> {
    let d = Decimal::from_json(v)?;
    let hundredths = d.scaled_exact(4)?; // rate * 10000 = percent paid in hundredths
    let off = 10_000i64.checked_sub(hundredths)?;
    (0..=10_000).contains(&off).then(|| off as f64 / 100.0)
}

/// A plain number (percent, count): JSON number or numeric string.
pub fn number(v: &Value) -> Option<f64> {
    Decimal::from_json(v).map(Decimal::to_f64)
}

/// Text of a scalar: strings as they are, numbers and booleans as written.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // integers (vendors' status and type codes, mostly) as itoa writes them, which is
        // how `Number`'s Display writes them too, without the formatter and its growing
        // String: ~200 instructions a code
        Value::Number(n) => Some(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => itoa::Buffer::new().format(u).to_owned(),
            (None, Some(i)) => itoa::Buffer::new().format(i).to_owned(),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer from a JSON integer, an integral float or a digit string.
fn integer(v: &Value) -> Option<i64> {
    Decimal::from_json(v)?.scaled_exact(0)
}

/// ISO weekdays 1–7 from `"1,2,3"`, `[1,2,3]`, `["1","2"]` or day names (`MON`, `Monday`,
/// `周一`, `星期一`); empty means every day (None).
pub fn weekdays(v: &Value) -> Option<Vec<u8>> {
    let mut days: Vec<u8> = Vec::new();
    let mut push = |d: &Value| -> Option<()> {
        let n = integer(d).or_else(|| d.as_str().and_then(day_name))?;
        (1..=7).contains(&n).then(|| days.push(n as u8))
    };
    match v {
        Value::Array(a) => a.iter().try_for_each(&mut push)?,
        Value::String(s) => s
            .split([',', ';', ' ', '，', '、'])
            .filter(|p| !p.trim().is_empty())
            .try_for_each(|p| push(&Value::String(p.trim().to_owned())))?,
        _ => return None,
    }
    days.sort_unstable();
    days.dedup();
    (!days.is_empty()).then_some(days)
}

/// An ISO weekday from its English or Chinese name.
fn day_name(s: &str) -> Option<i64> {
    const EN: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    const ZH: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    if let Some(i) = EN.iter().position(|d| lower.starts_with(d)) {
        return Some(i as i64 + 1);
    }
    let rest = s
        .strip_prefix("星期")
        .or_else(|| s.strip_prefix("周"))
        .or_else(|| s.strip_prefix("礼拜"))?;
    let rest = if rest == "天" { "日" } else { rest };
    ZH.iter().position(|d| *d == rest).map(|i| i as i64 + 1)
}

/// Time-of-day ranges from `"11:00-14:00"` (several joined by `,` or `;`), a list of such
/// strings, or a list of objects with `from`/`to` (or `start`/`end`); empty → None.
pub fn hour_ranges(v: &Value) -> Option<Vec<(String, String)>> {
    let one = |p: &str| -> Option<(String, String)> {
        let (from, to) = p.split_once('-')?;
        Some((clock(from)?, clock(to)?))
    };
    let ranges: Vec<(String, String)> = match v {
        Value::String(s) => s
            .split([',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(one)
            .collect::<Option<_>>()?,
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => one(s.trim()),
                Value::Object(o) => {
                    let get =
                        |a: &str, b: &str| o.get(a).or_else(|| o.get(b))?.as_str().and_then(clock);
                    Some((get("from", "start")?, get("to", "end")?))
                }
                _ => None,
            })
            .collect::<Option<_>>()?,
        _ => return None,
    };
    (!ranges.is_empty()).then_some(ranges)
}

fn clock(s: &str) -> Option<String> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60).then(|| format!("{h:02}:{m:02}"))
}

/// Names from a list of strings or of objects carrying the name under `key`.
pub fn names(v: &Value, key: &str) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| match i {
                    Value::String(_) | Value::Number(_) => text(i),
                    Value::Object(o) => o.get(key).and_then(text),
                    _ => None,
                })
                .collect(),
        ),
        Value::String(s) if s.trim().is_empty() => Some(Vec::new()),
        Value::String(s) => Some(s.split(',').map(|p| p.trim().to_owned()).collect()),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// [`names`] of a value the caller gives up, as a JSON list: the names move out of it (and
/// a list of them keeps its allocation) instead of being copied; the value back when it is
/// not a list of names.
pub fn names_owned(v: Value, key: &str) -> Result<Value, Value> {
    let texts = |list: Vec<String>| Value::Array(list.into_iter().map(Value::String).collect());
    match v {
        Value::Array(items) => Ok(Value::Array(
            items
                .into_iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(Value::String(s)),
                    Value::Object(mut o) => o.remove(key).and_then(text_owned).map(Value::String),
                    n @ Value::Number(_) => text(&n).map(Value::String),
                    _ => None,
                })
                .collect(),
        )),
        Value::String(s) => Ok(texts(names(&Value::String(s), key).unwrap_or_default())),
        Value::Null => Ok(Value::Array(Vec::new())),
        other => Err(other),
    }
}

/// [`text`] of a value the caller gives up: a string moves.
pub fn text_owned(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        other => text(&other),
    }
}

/// An absolute URL: absolute ones as they are, paths resolved against `origin`.
pub fn url(v: &Value, origin: &str) -> Option<String> {
    let s = v.as_str()?.trim();
    if s.is_empty() {
        None
    } else if s.starts_with("http://") || s.starts_with("https://") {
        Some(s.to_owned())
    } else if let Some(rest) = s.strip_prefix("//") {
        let scheme = origin.split("://").next().unwrap_or("https");
        Some(format!("{scheme}://{rest}"))
    } else if s.starts_with('/') {
        Some(format!("{origin}{s}"))
    } else {
        Some(format!("{origin}/{s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_is_exact() {
        let cases = [
            (json!("12.50"), Some(1250)),
            (json!("12.5"), Some(1250)),
            (json!(0.1), Some(10)),
            (json!("19.99"), Some(1999)),
            (json!("1999.995"), None),
            (json!("abc"), None),
            (json!(""), None),
            (json!("1e3"), None),
        ];
        for (v, want) in cases {
            assert_eq!(yuan_to_fen(&v), want, "yuan {v}");
        }
        assert_eq!(fen(&json!(500)), Some(500));
        assert_eq!(fen(&json!("500")), Some(500));
        assert_eq!(fen(&json!(500.0)), Some(500));
        assert_eq!(fen(&json!(500.5)), None);
        assert_eq!(fen(&json!(null)), None);
    }

    #[test]
    fn discounts_become_percent_off() {
        assert_eq!(zhe_to_percent_off(&json!(8.5)), Some(15.0));
        assert_eq!(zhe_to_percent_off(&json!(5)), Some(50.0));
        assert_eq!(zhe_to_percent_off(&json!("9.5")), Some(5.0));
        assert_eq!(zhe_to_percent_off(&json!(8.85)), Some(11.5));
        assert_eq!(zhe_to_percent_off(&json!(11)), None);
        assert_eq!(pay_rate_to_percent_off(&json!(0.85)), Some(15.0));
        assert_eq!(pay_rate_to_percent_off(&json!("0.7")), Some(30.0));
        assert_eq!(pay_rate_to_percent_off(&json!(1.2)), None);
    }

    #[test]
    fn weekdays_hours_names_urls() {
        assert_eq!(weekdays(&json!("1,2,3,4,5")), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(weekdays(&json!("")), None);
        assert_eq!(weekdays(&json!("1,9")), None);
        assert_eq!(weekdays(&json!([7, 1])), Some(vec![1, 7]));
        assert_eq!(
            hour_ranges(&json!("11:00-14:00")),
            Some(vec![("11:00".into(), "14:00".into())])
        );
        assert_eq!(hour_ranges(&json!("")), None);
        assert_eq!(hour_ranges(&json!("lunch")), None);
        assert_eq!(
            names(&json!([{"id": "1", "name": "咖啡"}, "打车"]), "name"),
            Some(vec!["咖啡".to_owned(), "打车".to_owned()])
        );
        assert_eq!(names(&json!(null), "name"), Some(vec![]));
        let origin = "http://crm.houcaller.com";
        assert_eq!(
            url(&json!("/upload_img/a.jpg"), origin).unwrap(),
            "http://crm.houcaller.com/upload_img/a.jpg"
        );
        assert_eq!(
            url(&json!("https://x.y/z.png"), origin).unwrap(),
            "https://x.y/z.png"
        );
        assert_eq!(url(&json!(""), origin), None);
    }

    #[test]
    fn decimals_are_exact_signed_and_bounded() {
        let d = |s: &str| Decimal::parse(s);
        assert_eq!(
            d("-12.50"),
            Some(Decimal {
                units: -125,
                scale: 1
            })
        );
        assert_eq!(d("+7"), Some(Decimal { units: 7, scale: 0 }));
        assert_eq!(d(".5"), Some(Decimal { units: 5, scale: 1 }));
        assert_eq!(d("5."), Some(Decimal { units: 5, scale: 0 }));
        assert_eq!(d("."), None);
        assert_eq!(d("-"), None);
        assert_eq!(d("1.2.3"), None);
        // 30 digits fit an i128 exactly; more are refused before they could overflow it
        let thirty = format!("1{}", "0".repeat(29));
        assert_eq!(
            d(&thirty),
            Some(Decimal {
                units: 10i128.pow(29),
                scale: 0
            })
        );
        assert_eq!(d(&format!("{thirty}0")), None);
        assert_eq!(d(&"9".repeat(40)), None);
        assert_eq!(yuan_to_fen(&json!("-12.50")), Some(-1250));
        assert_eq!(yuan_to_fen(&json!(" 3.07 ")), Some(307));
        assert_eq!(fen(&json!(u64::MAX)), None, "beyond i64");
        assert_eq!(fen(&json!("9223372036854775807")), Some(i64::MAX));
        assert_eq!(number(&json!("12.5")), Some(12.5));
        assert_eq!(number(&json!(-0.25)), Some(-0.25));
        assert_eq!(number(&json!(true)), None);
    }

    #[test]
    fn percent_off_ends_at_zero_and_a_hundred() {
        assert_eq!(zhe_to_percent_off(&json!(10)), Some(0.0));
        assert_eq!(zhe_to_percent_off(&json!(0)), Some(100.0));
        assert_eq!(zhe_to_percent_off(&json!(-1)), None);
        assert_eq!(
            zhe_to_percent_off(&json!(8.8888)),
            None,
            "finer than a hundredth"
        );
        assert_eq!(pay_rate_to_percent_off(&json!(1)), Some(0.0));
        assert_eq!(pay_rate_to_percent_off(&json!(0)), Some(100.0));
        assert_eq!(pay_rate_to_percent_off(&json!(-0.1)), None);
        assert_eq!(pay_rate_to_percent_off(&json!("0.8525")), Some(14.75));
    }

    #[test]
    fn weekdays_by_number_or_name_in_english_or_chinese() {
        assert_eq!(
            weekdays(&json!("MON, Tuesday;周三、星期四 礼拜五，sat")),
            Some(vec![1, 2, 3, 4, 5, 6])
        );
        assert_eq!(weekdays(&json!("礼拜天")), Some(vec![7]));
        assert_eq!(weekdays(&json!("星期日")), Some(vec![7]));
        assert_eq!(weekdays(&json!(["7", "1", 1])), Some(vec![1, 7]));
        assert_eq!(weekdays(&json!([0])), None);
        assert_eq!(weekdays(&json!(["周八"])), None);
        assert_eq!(weekdays(&json!([])), None);
        assert_eq!(weekdays(&json!(3)), None);
    }

    #[test]
    fn numbers_become_the_text_json_writes_them_as() {
        for n in [
            json!(0),
            json!(7),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1795536000000_u64),
            json!(2.5),
            json!(-0.0),
            json!(1e300),
        ] {
            assert_eq!(text(&n), Some(n.to_string()), "{n}");
        }
        assert_eq!(text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(text(&json!(null)), None);
    }

    #[test]
    fn hour_ranges_from_text_lists_and_objects() {
        let r = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            hour_ranges(&json!("9:5-11:30; 17:00-24:00")),
            Some(vec![r("09:05", "11:30"), r("17:00", "24:00")])
        );
        assert_eq!(
            hour_ranges(
                &json!([{"from": "08:00", "to": "10:00"}, {"start": "12:00", "end": "13:59"}, " 20:00-21:00 "])
            ),
            Some(vec![
                r("08:00", "10:00"),
                r("12:00", "13:59"),
                r("20:00", "21:00")
            ])
        );
        assert_eq!(hour_ranges(&json!("25:00-26:00")), None);
        assert_eq!(hour_ranges(&json!("10:60-11:00")), None);
        assert_eq!(hour_ranges(&json!([{"from": "08:00"}])), None);
        assert_eq!(hour_ranges(&json!([1])), None);
        assert_eq!(hour_ranges(&json!([])), None);
        assert_eq!(hour_ranges(&json!(5)), None);
    }

    #[test]
    fn names_and_urls_of_every_shape() {
        let n = |v: Value| names(&v, "title");
        assert_eq!(
            n(json!([{"title": 7}, {"title": true}, {"other": "x"}, 3.5, null, "a"])),
            Some(vec![
                "7".to_owned(),
                "true".to_owned(),
                "3.5".to_owned(),
                "a".to_owned()
            ])
        );
        assert_eq!(
            n(json!(" a ,b")),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(n(json!("  ")), Some(vec![]));
        assert_eq!(n(json!(5)), None);
        assert_eq!(text(&json!(false)).as_deref(), Some("false"));
        assert_eq!(text(&json!([1])), None);
        let origin = "http://crm.houcaller.com";
        assert_eq!(
            url(&json!("//cdn.x/a.png"), origin).as_deref(),
            Some("http://cdn.x/a.png")
        );
        assert_eq!(
            url(&json!(" img/a.png "), origin).as_deref(),
            Some("http://crm.houcaller.com/img/a.png")
        );
        assert_eq!(
            url(&json!("http://x.y/z"), origin).as_deref(),
            Some("http://x.y/z")
        );
        assert_eq!(url(&json!(5), origin), None);
    }
}
