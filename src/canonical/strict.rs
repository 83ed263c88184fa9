//! The strict reading of callers' JSON and query strings: duplicate members are refused
//! (serde_json would silently keep the last), and an unknown member is named together with
//! the nearest known name, so a typo is a clear 400 instead of an ignored filter.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `body` as JSON, refusing a member that appears twice in one object.
pub fn parse(body: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = StrictSeed {
        path: String::new(),
    }
    .deserialize(&mut de)
    .map_err(|e| format!("the body is not valid JSON: {e}"))?;
    de.end()
        .map_err(|e| format!("the body is not valid JSON: {e}"))?;
    Ok(value)
}

/// Parses `body` as a JSON object whose members are all in `known`.
pub fn parse_object(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, String> {
    match parse(body)? {
        Value::Object(m) => {
            known_members(&m, known, "")?;
            Ok(m)
        }
        _ => Err("the body must be a JSON object".to_owned()),
    }
}

/// Refuses the first member of `obj` not in `known`; `at` is the object's path (`""` for the
/// body itself, `member` for a nested object).
pub fn known_members(obj: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), String> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(format!(
            "unknown member `{}`{}",
            clip(&join(at, k)),
            hint(k, known)
        )),
    }
}

/// Checks a query string: every parameter known, none twice. Parameters are split on `&`;
/// names are percent-decoded before comparing.
pub fn check_query(query: Option<&str>, known: &[&str]) -> Result<(), String> {
    let Some(query) = query else {
        return Ok(());
    };
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
        let name = percent_encoding::percent_decode_str(&raw.replace('+', " "))
            .decode_utf8()
            .map_err(|_| "the query string is not valid UTF-8".to_owned())?
            .into_owned();
        if !known.contains(&name.as_str()) {
            return Err(if known.is_empty() {
                format!(
                    "unknown query parameter `{}` (this route takes none)",
                    clip(&name)
                )
            } else {
                format!(
                    "unknown query parameter `{}`{}",
                    clip(&name),
                    hint(&name, known)
                )
            });
        }
        if seen.contains(&name) {
            return Err(format!("query parameter `{}` is given twice", clip(&name)));
        }
        seen.push(name);
    }
    Ok(())
}

/// The decoded value of parameter `name` (names and values percent-decoded, `+` a space in
/// values), as the route's own reader sees it.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter(|p| !p.is_empty())
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_encoding::percent_decode_str(k).decode_utf8().ok()?;
            (k == name).then(|| {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
}

/// ` (did you mean `kinds`?)` when one known name is close to `given`, else ` (known: …)`.
pub fn hint(given: &str, known: &[&str]) -> String {
    match nearest(given, known) {
        Some(n) => format!(" (did you mean `{n}`?)"),
        None if known.is_empty() => String::new(),
        None => format!(" (known: {})", known.join(", ")),
    }
}

/// The known name nearest to `given`, when it is near enough to be a typo: a case change,
/// or an edit distance of at most a third of the name (at least 2).
pub fn nearest<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    // a caller's text can be long: typos of short names are short
    if given.chars().count() > 64 {
        return None;
    }
    let lower = given.to_lowercase();
    known
        .iter()
        .map(|k| (distance(&lower, &k.to_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// Caller text quoted in an error is kept short.
pub fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

// === impl StrictSeed ===

/// Builds a `Value` like serde_json does, but fails on a duplicate member, naming its path.
struct StrictSeed {
    path: String,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Value;

    crate::json_scalars::value_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed {
            path: format!("{}[{}]", self.path, items.len()),
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            if members.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate member `{}`",
                    clip(&path)
                )));
            }
            let value = map.next_value_seed(StrictSeed { path })?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_nearest_known_name() {
        let known = ["member", "status", "kinds", "vendors", "limit", "cursor"];
        let cases = [
            ("kind", Some("kinds")),
            ("statuses", Some("status")),
            ("vendor", Some("vendors")),
            ("Limit", Some("limit")),
            ("curser", Some("cursor")),
            ("colour", None),
            ("", None),
        ];
        for (given, want) in cases {
            assert_eq!(nearest(given, &known), want, "{given}");
        }
        assert_eq!(hint("zzz", &["a", "b"]), " (known: a, b)");
    }

    #[test]
    fn duplicate_members_are_refused_with_their_path() {
        let cases = [
            (r#"{"a":1,"a":2}"#, "duplicate member `a`"),
            (
                r#"{"m":{"ids":{"x":"1","x":"2"}}}"#,
                "duplicate member `m.ids.x`",
            ),
            (r#"{"l":[{"k":1,"k":1}]}"#, "duplicate member `l[0].k`"),
        ];
        for (body, want) in cases {
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert_eq!(
            parse(br#"{"a":{"a":1},"b":[1,2.5,null,true,"x"]}"#).unwrap(),
            serde_json::json!({"a":{"a":1},"b":[1,2.5,null,true,"x"]})
        );
        assert!(parse(b"{} {}").is_err(), "trailing text");
    }

    #[test]
    fn query_strings_are_checked_by_name() {
        let known = ["vendor", "kind", "page"];
        assert!(check_query(Some("vendor=a&kind=b"), &known).is_ok());
        assert!(check_query(None, &[]).is_ok());
        let e = check_query(Some("vendor=a&knid=b"), &known).unwrap_err();
        assert!(e.contains("`knid` (did you mean `kind`?)"), "{e}");
        let e = check_query(Some("page=1&page=2"), &known).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = check_query(Some("x=1"), &[]).unwrap_err();
        assert!(e.contains("takes none"), "{e}");
        assert!(
            check_query(Some("%6Bind=b"), &known).is_ok(),
            "decoded names"
        );
    }

    #[test]
    fn every_json_type_is_kept() {
        assert_eq!(
            parse(br#"[-1, 18446744073709551615, -0.5, "a\"b", "", false, {}]"#).unwrap(),
            serde_json::json!([-1, 18446744073709551615u64, -0.5, "a\"b", "", false, {}])
        );
        assert_eq!(
            parse_object(br#"{"kinds": 1}"#, &["kinds"]).unwrap()["kinds"],
            1
        );
        assert_eq!(
            parse_object(b"[]", &["kinds"]).unwrap_err(),
            "the body must be a JSON object"
        );
        let e = parse_object(br#"{"kind": 1}"#, &["kinds"]).unwrap_err();
        assert_eq!(e, "unknown member `kind` (did you mean `kinds`?)");
        let m = parse_object(br#"{"ids": {"opnid": "x"}}"#, &["ids"]).unwrap();
        let e =
            known_members(m["ids"].as_object().unwrap(), &["openid"], "member.ids").unwrap_err();
        assert_eq!(
            e,
            "unknown member `member.ids.opnid` (did you mean `openid`?)"
        );
    }

    #[test]
    fn long_names_are_clipped_and_not_matched() {
        let long = "k".repeat(65);
        assert_eq!(nearest(&long, &["kinds"]), None);
        let known = ["a".repeat(64)];
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let typo = format!("{}b", "a".repeat(63));
        assert_eq!(nearest(&typo, &known), Some(known[0]));
        // a third of the name: 9 letters allow 3 edits, 2 letters still 2
        assert_eq!(nearest("abcxyz", &["abcdefghi"]), None);
        assert_eq!(nearest("abcdefxyz", &["abcdefghi"]), Some("abcdefghi"));
        assert_eq!(nearest("xy", &["ab"]), Some("ab"));
        assert_eq!(nearest("xyz", &["ab"]), None);
        assert_eq!(nearest("kidz", &["kinds", "kid"]), Some("kid"));
        assert_eq!(clip(&long).chars().count(), 64);
        let e = check_query(Some(&format!("{long}=1")), &["kinds"]).unwrap_err();
        assert_eq!(
            e,
            format!("unknown query parameter `{}` (known: kinds)", &long[..64])
        );
        assert_eq!(hint("zzz", &[]), "");
    }

    #[test]
    fn query_parameters_are_decoded_like_the_route_reads_them() {
        assert_eq!(
            check_query(Some("%FF=1"), &["kinds"]).unwrap_err(),
            "the query string is not valid UTF-8"
        );
        assert!(check_query(Some("&&kinds=1&"), &["kinds"]).is_ok());
        assert!(check_query(Some("a+b=1"), &["a b"]).is_ok());
        let q = Some("x=1&kinds=a+b%2Cc&kinds=later&empty");
        assert_eq!(query_param(q, "kinds").as_deref(), Some("a b,c"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "none"), None);
        assert_eq!(query_param(None, "kinds"), None);
        assert_eq!(
            query_param(Some("%6Binds=1"), "kinds").as_deref(),
            Some("1")
        );
    }
}
