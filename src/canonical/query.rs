//! `POST /v1/coupons/query`: the request body, its validation, and the opaque cursor.
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::cursor::{CursorSigner, SortKey};
use super::schema::{KINDS, STATUSES};
use super::strict::{self, clip};
use crate::crypto;

/// Members of the query body, and of its `member` object.
pub const QUERY_MEMBERS: &[&str] = &[
    "member", "status", "kinds", "vendors", "limit", "cursor", "require",
];
pub const MEMBER_MEMBERS: &[&str] = &["ids", "openid"];

/// The request body as the contract gives it. Strict: an unknown or repeated member is refused
/// (checked by `strict` before this type is read), as is an unknown filter value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub member: MemberBody,
    #[serde(default)]
    pub status: Option<Vec<String>>,
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub vendors: Option<Vec<String>>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub cursor: Option<String>,
    /// `"all"` or a list of vendor ids that must answer (an addition to the contract).
    #[serde(default)]
    pub require: Option<Value>,
}

/// Which vendors must answer for the query to succeed; otherwise it is a 502 with `sources`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Require {
    /// The default: 200 as long as one vendor answered.
    #[default]
    Any,
    /// Every vendor asked must answer (502 unless `complete`).
    All,
    /// These vendors must be asked and answer.
    Vendors(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    #[serde(default)]
    pub ids: BTreeMap<String, String>,
    #[serde(default)]
    pub openid: Option<String>,
}

/// A validated query.
#[derive(Debug, Clone)]
pub struct CouponQuery {
    pub ids: BTreeMap<String, String>,
    pub openid: Option<String>,
    pub status: Option<Vec<&'static str>>,
    pub kinds: Option<Vec<&'static str>>,
    pub vendors: Option<Vec<String>>,
    pub limit: usize,
    /// The sort key of the last coupon of the previous page (from `cursor`).
    pub after: Option<SortKey>,
    pub require: Require,
    /// Everything but paging, as a canonical JSON array: what identifies the query (the key of
    /// its merged pages), and what its fingerprint hashes.
    pub canonical: String,
    /// The hash of `canonical` a cursor carries (a cursor only continues the query it came
    /// from), made when a cursor is checked or issued: most queries do neither.
    fingerprint: std::sync::OnceLock<String>,
    signer: CursorSigner,
}

/// Limits of the route (from routes.yaml).
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub default_limit: usize,
    pub max_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidQuery(pub String);

impl CouponQuery {
    /// Parses and validates a body; `known_vendors` are the vendors that offer the route's
    /// operation, in routes.yaml order; `signer` checks the cursor at `now`.
    pub fn parse(
        body: &[u8],
        limits: QueryLimits,
        known_vendors: &[&str],
        signer: &CursorSigner,
        now: jiff::Timestamp,
    ) -> Result<CouponQuery, InvalidQuery> {
        let invalid = |e: String| InvalidQuery(format!("the body is not a valid query: {e}"));
        let value = strict::parse_object(body, QUERY_MEMBERS).map_err(invalid)?;
        if let Some(Value::Object(member)) = value.get("member") {
            strict::known_members(member, MEMBER_MEMBERS, "member").map_err(invalid)?;
            if let Some(Value::Object(ids)) = member.get("ids")
                && let Some(unknown) = ids.keys().find(|k| !known_vendors.contains(&k.as_str()))
            {
                return Err(InvalidQuery(format!(
                    "unknown vendor `{}` in `member.ids`{}",
                    clip(unknown),
                    strict::hint(unknown, known_vendors)
                )));
            }
        }
        let b: QueryBody =
            serde_json::from_value(Value::Object(value)).map_err(|e| invalid(e.to_string()))?;
        let status = closed_set("status", b.status, STATUSES)?;
        let kinds = closed_set("kinds", b.kinds, KINDS)?;
        if let Some(vs) = &b.vendors
            && let Some(unknown) = vs.iter().find(|v| !known_vendors.contains(&v.as_str()))
        {
            return Err(InvalidQuery(format!(
                "unknown vendor `{}` in `vendors`{}",
                clip(unknown),
                strict::hint(unknown, known_vendors)
            )));
        }
        for (vendor, id) in &b.member.ids {
            if id.trim().is_empty() {
                return Err(InvalidQuery(format!(
                    "`member.ids.{}` is empty",
                    clip(vendor)
                )));
            }
        }
        if b.member
            .openid
            .as_deref()
            .is_some_and(|o| o.trim().is_empty())
        {
            return Err(InvalidQuery("`member.openid` is empty".to_owned()));
        }
        let limit = match b.limit {
            None => limits.default_limit,
            Some(l) if l >= 1 && (l as u64) <= limits.max_limit as u64 => l as usize,
            Some(_) => {
                return Err(InvalidQuery(format!(
                    "`limit` must be between 1 and {}",
                    limits.max_limit
                )));
            }
        };
        let require = require(b.require, known_vendors, &b.vendors)?;
        let openid = b.member.openid.filter(|o| !o.is_empty());
        let canonical = canonical(&b.member.ids, &openid, &status, &kinds, &b.vendors);
        let fingerprint = std::sync::OnceLock::new();
        let after = match &b.cursor {
            None => None,
            Some(c) => Some(
                signer
                    .check(c, fingerprint.get_or_init(|| hash(&canonical)), now)
                    .map_err(|e| InvalidQuery(e.to_string()))?,
            ),
        };
        Ok(CouponQuery {
            ids: b.member.ids,
            openid,
            status,
            kinds,
            vendors: b.vendors,
            limit,
            after,
            require,
            canonical,
            fingerprint,
            signer: signer.clone(),
        })
    }

    /// Whether the request's `vendors` filter lets `vendor` be considered.
    pub fn considers(&self, vendor: &str) -> bool {
        self.vendors
            .as_ref()
            .is_none_or(|vs| vs.iter().any(|v| v == vendor))
    }

    /// The cursor of the page after the one ending at `last`.
    pub fn cursor_after(&self, last: &SortKey, now: jiff::Timestamp) -> String {
        self.signer.issue(self.fingerprint(), last, now)
    }

    /// The fingerprint a cursor of this query carries: the first 8 bytes of the SHA-256 of
    /// [`CouponQuery::canonical`], in hex.
    pub fn fingerprint(&self) -> &str {
        self.fingerprint.get_or_init(|| hash(&self.canonical))
    }
}

/// Reads `require`: `"all"`, or a list of vendors that can be asked (and are not excluded by
/// the request's own `vendors` filter).
fn require(
    value: Option<Value>,
    known_vendors: &[&str],
    filter: &Option<Vec<String>>,
) -> Result<Require, InvalidQuery> {
    let shape = || InvalidQuery("`require` is \"all\" or a list of vendor ids".to_owned());
    let list = match value {
        None | Some(Value::Null) => return Ok(Require::Any),
        Some(Value::String(s)) if s == "all" => return Ok(Require::All),
        Some(Value::String(s)) => {
            return Err(InvalidQuery(format!(
                "`require` is \"all\" or a list of vendor ids, not `{}`{}",
                clip(&s),
                strict::hint(&s, &["all"])
            )));
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(shape()),
    };
    let mut vendors: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let Value::String(v) = item else {
            return Err(shape());
        };
        if !known_vendors.contains(&v.as_str()) {
            return Err(InvalidQuery(format!(
                "unknown vendor `{}` in `require`{}",
                clip(&v),
                strict::hint(&v, known_vendors)
            )));
        }
        if filter.as_ref().is_some_and(|f| !f.contains(&v)) {
            return Err(InvalidQuery(format!(
                "`require` names `{v}`, which the `vendors` filter leaves out"
            )));
        }
        if !vendors.contains(&v) {
            vendors.push(v);
        }
    }
    Ok(Require::Vendors(vendors))
}

fn closed_set(
    field: &str,
    values: Option<Vec<String>>,
    allowed: &'static [&'static str],
) -> Result<Option<Vec<&'static str>>, InvalidQuery> {
    let Some(values) = values else {
        return Ok(None);
    };
    values
        .iter()
        .map(|v| {
            allowed.iter().copied().find(|a| a == v).ok_or_else(|| {
                InvalidQuery(format!(
                    "unknown value `{}` in `{field}`{}",
                    clip(v),
                    strict::hint(v, allowed)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The query's parts as one JSON array, filters sorted: the same query always writes the
/// same text.
fn canonical(
    ids: &BTreeMap<String, String>,
    openid: &Option<String>,
    status: &Option<Vec<&'static str>>,
    kinds: &Option<Vec<&'static str>>,
    vendors: &Option<Vec<String>>,
) -> String {
    let sorted = |v: &Option<Vec<&'static str>>| -> Option<Vec<&'static str>> {
        v.as_ref().map(|v| {
            let mut v = v.clone();
            v.sort_unstable();
            v
        })
    };
    let vendors = vendors.as_ref().map(|v| {
        let mut v = v.clone();
        v.sort_unstable();
        v
    });
    // a JSON array, serialized straight from the parts (the same bytes `json!` gave, without
    // building a `Value` per request): cursors made by another replica or before an upgrade
    // keep matching
    serde_json::to_string(&(ids, openid, sorted(status), sorted(kinds), vendors))
        .expect("strings serialize")
}

/// A fingerprint of `canonical`.
fn hash(canonical: &str) -> String {
    crypto::hex_lower(&crypto::sha256(canonical.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueryLimits = QueryLimits {
        default_limit: 100,
        max_limit: 500,
    };
    const VENDORS: &[&str] = &["alpha", "beta", "gamma"];

    static SIGNER: std::sync::LazyLock<CursorSigner> =
        std::sync::LazyLock::new(CursorSigner::random);

    fn now() -> jiff::Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_fingerprint_is_the_hash_of_the_canonical_json_array() {
        // cursors carry it across replicas and versions: its bytes must not change
        let ids: BTreeMap<String, String> =
            [("op".into(), "u1".into()), ("hkl".into(), "k\"2".into())]
                .into_iter()
                .collect();
        let openid = Some("o-1".to_owned());
        let status = Some(vec!["used", "available"]);
        let kinds = None;
        let vendors = Some(vec!["zvcms".to_owned(), "op".to_owned()]);
        let expected = serde_json::json!([
            ids,
            openid,
            ["available", "used"],
            serde_json::Value::Null,
            ["op", "zvcms"]
        ]);
        let canonical = canonical(&ids, &openid, &status, &kinds, &vendors);
        assert_eq!(canonical, expected.to_string());
        assert_eq!(
            hash(&canonical),
            crypto::hex_lower(&crypto::sha256(expected.to_string().as_bytes())[..8])
        );
    }

    fn parse(body: &str) -> Result<CouponQuery, InvalidQuery> {
        CouponQuery::parse(body.as_bytes(), LIMITS, VENDORS, &SIGNER, now())
    }

    fn key() -> SortKey {
        SortKey {
            r: 0,
            u: None,
            v: "alpha".into(),
            i: "alpha:1".into(),
        }
    }

    #[test]
    fn the_api_example_parses() {
        let q = parse(r#"{"member":{"ids":{"alpha":"u00011234567890","beta":"K1H93QDKI00B7"},"openid":"oEv"},
            "status":["usable"],"kinds":["cash","discount"],"vendors":["alpha","beta","gamma"],"limit":50,"cursor":null}"#)
        .unwrap();
        assert_eq!(q.limit, 50);
        assert_eq!(q.after, None);
        assert_eq!(q.status, Some(vec!["usable"]));
        assert_eq!(q.openid.as_deref(), Some("oEv"));
        assert!(q.considers("gamma"));
    }

    #[test]
    fn the_vendors_filter_decides_which_vendors_are_considered() {
        let q = parse(r#"{"member":{},"vendors":["alpha","gamma"]}"#).unwrap();
        let considered: Vec<&str> = VENDORS.iter().copied().filter(|v| q.considers(v)).collect();
        assert_eq!(considered, ["alpha", "gamma"]);
        let q = parse(r#"{"member":{}}"#).unwrap();
        assert!(VENDORS.iter().all(|v| q.considers(v)));
        assert_eq!(q.openid, None);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("{", "not a valid query"),
            (r#"{"status":["usable"]}"#, "missing field `member`"),
            (
                r#"{"member":{},"status":["valid"]}"#,
                "unknown value `valid` in `status`",
            ),
            (
                r#"{"member":{},"kinds":["coupon"]}"#,
                "unknown value `coupon` in `kinds`",
            ),
            (
                r#"{"member":{},"vendors":["acme"]}"#,
                "unknown vendor `acme`",
            ),
            (r#"{"member":{},"limit":0}"#, "between 1 and 500"),
            (r#"{"member":{},"limit":501}"#, "between 1 and 500"),
            (
                r#"{"member":{"ids":{"alpha":""}}}"#,
                "`member.ids.alpha` is empty",
            ),
            (
                r#"{"member":{},"cursor":"garbage"}"#,
                "not a cursor this gateway issued",
            ),
            (r#"{"member":{"ids":{"alpha":5}}}"#, "not a valid query"),
        ];
        for (body, want) in cases {
            let e = parse(body).unwrap_err();
            assert!(e.0.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn typos_and_repeats_are_refused_with_the_nearest_name() {
        let cases = [
            (
                r#"{"member":{},"kind":["cash"]}"#,
                "unknown member `kind` (did you mean `kinds`?)",
            ),
            (
                r#"{"member":{},"statuses":["used"]}"#,
                "unknown member `statuses` (did you mean `status`?)",
            ),
            (
                r#"{"member":{},"vendor":["alpha"]}"#,
                "unknown member `vendor` (did you mean `vendors`?)",
            ),
            (
                r#"{"member":{},"Limit":1}"#,
                "unknown member `Limit` (did you mean `limit`?)",
            ),
            (
                r#"{"member":{"id":{}}}"#,
                "unknown member `member.id` (did you mean `ids`?)",
            ),
            (
                r#"{"member":{"ids":{"betta":"x"}}}"#,
                "unknown vendor `betta` in `member.ids` (did you mean `beta`?)",
            ),
            (
                r#"{"member":{"ids":{"acme":"x"}}}"#,
                "unknown vendor `acme` in `member.ids` (known: alpha, beta, gamma)",
            ),
            (
                r#"{"member":{},"limit":1,"limit":2}"#,
                "duplicate member `limit`",
            ),
            (
                r#"{"member":{"ids":{"alpha":"a","alpha":"b"}}}"#,
                "duplicate member `member.ids.alpha`",
            ),
            (
                r#"{"member":{},"status":["usabel"]}"#,
                "unknown value `usabel` in `status` (did you mean `usable`?)",
            ),
            ("[]", "must be a JSON object"),
            (r#"{"member":{},"require":"al"}"#, "did you mean `all`?"),
            (
                r#"{"member":{},"require":["betta"]}"#,
                "unknown vendor `betta` in `require` (did you mean `beta`?)",
            ),
            (r#"{"member":{},"require":[1]}"#, "a list of vendor ids"),
            (
                r#"{"member":{},"require":["alpha"],"vendors":["beta"]}"#,
                "leaves out",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body).unwrap_err();
            assert!(e.0.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn require_is_all_or_a_list_of_vendors() {
        assert_eq!(parse(r#"{"member":{}}"#).unwrap().require, Require::Any);
        assert_eq!(
            parse(r#"{"member":{},"require":"all"}"#).unwrap().require,
            Require::All
        );
        assert_eq!(
            parse(r#"{"member":{},"require":["alpha","alpha","beta"]}"#)
                .unwrap()
                .require,
            Require::Vendors(vec!["alpha".into(), "beta".into()])
        );
    }

    #[test]
    fn the_vendors_filter_order_does_not_change_the_cursor() {
        let q = parse(r#"{"member":{"ids":{"alpha":"a"}},"vendors":["alpha","beta"]}"#).unwrap();
        let c = q.cursor_after(&key(), now());
        let again = parse(&format!(
            r#"{{"member":{{"ids":{{"alpha":"a"}}}},"vendors":["beta","alpha"],"cursor":"{c}"}}"#
        ));
        assert_eq!(again.unwrap().after, Some(key()));
    }

    #[test]
    fn cursors_continue_only_their_own_query() {
        let q = parse(r#"{"member":{"ids":{"alpha":"a"}},"status":["usable","used"]}"#).unwrap();
        let c = q.cursor_after(&key(), now());
        // the same query with its filter values in another order accepts it
        let again = parse(&format!(
            r#"{{"member":{{"ids":{{"alpha":"a"}}}},"status":["used","usable"],"cursor":"{c}"}}"#
        ))
        .unwrap();
        assert_eq!(again.after, Some(key()));
        let other = parse(&format!(
            r#"{{"member":{{"ids":{{"alpha":"b"}}}},"cursor":"{c}"}}"#
        ));
        assert!(other.unwrap_err().0.contains("another query"));
    }
}
