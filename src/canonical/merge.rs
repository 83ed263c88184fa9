//! Merging vendor answers into one canonical answer: effective status, filters, dedup,
//! ordering, paging, the `sources` report, `complete`, and the status code.
use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use super::coupon::Coupon;
use super::cursor::SortKey;
use super::query::{CouponQuery, Require};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    CircuitOpen,
    RateLimited,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::RateLimited => "rate_limited",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One entry of `sources`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub vendor: String,
    pub outcome: Outcome,
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Items of the answer the gateway could not map (an addition to API.md).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
    /// The vendor had more pages than `max_pages` allows (an addition to API.md).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Source {
    pub fn skipped(vendor: &str, reason: String) -> Source {
        Source {
            vendor: vendor.to_owned(),
            outcome: Outcome::Skipped,
            count: 0,
            latency_ms: None,
            cache: None,
            error: Some(reason),
            dropped: 0,
            truncated: false,
        }
    }
}

/// What one vendor contributed: its coupons as built once from its answer (shared with the
/// cache that keeps the answer; each request judges their effective status itself).
#[derive(Debug)]
pub struct VendorResult {
    pub source: Source,
    pub coupons: Arc<Vec<Coupon>>,
}

#[derive(Debug, Serialize)]
pub struct QueryAnswer {
    pub coupons: Vec<Coupon>,
    pub sources: Vec<Source>,
    pub complete: bool,
    pub next_cursor: Option<String>,
}

/// How the answer as a whole went (API.md status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200: at least one vendor answered (or was served stale), or every vendor was skipped.
    Answered,
    /// 504: every vendor asked timed out.
    AllTimedOut,
    /// 502: every vendor asked failed, not all by timing out.
    AllFailed,
    /// 502: some vendor the request's `require` names did not answer.
    RequiredFailed,
}

/// The verdict and `complete` of results given in routes.yaml order.
pub fn judge(results: &[VendorResult], q: &CouponQuery) -> (Verdict, bool) {
    let asked = || {
        results
            .iter()
            .map(|r| &r.source)
            .filter(|s| s.outcome != Outcome::Skipped)
    };
    let answered = asked().any(|s| s.outcome == Outcome::Ok || s.cache == Some("stale"));
    let verdict = if asked().next().is_none() || answered {
        Verdict::Answered
    } else if asked().all(|s| s.outcome == Outcome::Timeout) {
        Verdict::AllTimedOut
    } else {
        Verdict::AllFailed
    };
    let complete = results
        .iter()
        .all(|r| matches!(r.source.outcome, Outcome::Ok | Outcome::Skipped));
    // a required vendor answers only with `ok`: skipped, failed or served stale does not do
    let required_failed = match &q.require {
        Require::Any => false,
        Require::All => !complete,
        Require::Vendors(vs) => vs.iter().any(|v| {
            !results
                .iter()
                .any(|r| &r.source.vendor == v && r.source.outcome == Outcome::Ok)
        }),
    };
    let verdict = if verdict == Verdict::Answered && required_failed {
        Verdict::RequiredFailed
    } else {
        verdict
    };
    (verdict, complete)
}

/// One page of the merged coupons, as judged at one instant.
#[derive(Debug)]
pub struct Page<C = Coupon> {
    /// The page's coupons, with their effective status.
    pub coupons: Vec<C>,
    /// The sort key of the page's last coupon when more follow (what the cursor carries).
    pub last: Option<SortKey>,
    /// The first instant after `now` at which any coupon's effective status changes (when the
    /// same inputs would make another page); none: never.
    pub changes_at: Option<jiff::Timestamp>,
}

/// A judged coupon's place in the order: the same as [`SortKey::tuple`]'s.
type Order<'a> = (u8, bool, i64, &'a str, &'a str);

/// The order of a judged coupon; the same as [`SortKey`]'s, without building one.
fn order_of<'a>(status: &str, c: &'a Coupon) -> Order<'a> {
    let u = c.until_ts.map(|t| t.as_millisecond());
    (rank(status), u.is_none(), u.unwrap_or(0), &c.vendor, &c.id)
}

/// The next instant after `now` at which `c`'s effective status differs from the one at `now`.
fn next_change(c: &Coupon, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    if !matches!(c.status(), "pending" | "usable") {
        return None;
    }
    // pending while now < from; expired once now > until
    let from = c.from_ts.filter(|f| *f > now);
    let until = c
        .until_ts
        .filter(|u| *u >= now)
        .and_then(|u| u.checked_add(jiff::SignedDuration::from_nanos(1)).ok());
    match (from, until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Judges, filters, dedups and orders the coupons of results given in routes.yaml order, and
/// cuts the query's page, as copies with their effective status.
pub fn page(results: &[VendorResult], q: &CouponQuery, now: jiff::Timestamp) -> Page {
    let chosen = choose(results, q, now);
    let coupons = chosen
        .coupons
        .iter()
        .map(|(s, c)| {
            let mut c = (*c).clone();
            c.set_status(s);
            c
        })
        .collect();
    Page {
        coupons,
        last: chosen.last,
        changes_at: chosen.changes_at,
    }
}

/// [`page`] without copying: each coupon of the page with its effective status, borrowed from
/// the results (a merged page is written out as JSON at once, `Coupon::write_page`).
///
/// Ids are unique among the coupons kept (the first of a repeated id wins), so no two have the
/// same order: the page is the same whether the list is sorted stably or not, or only as far
/// as the page reaches. Each coupon's order is computed once, not at every comparison, and
/// only the page's coupons are sorted: 16 vendors' ~180 coupons for a page of 100 took ~140k
/// instructions a query sorted whole, comparator and all (docs/benchmarks.md, twentieth
/// session).
pub fn choose<'a>(
    results: &'a [VendorResult],
    q: &CouponQuery,
    now: jiff::Timestamp,
) -> Page<(&'static str, &'a Coupon)> {
    let total: usize = results.iter().map(|r| r.coupons.len()).sum();
    // foldhash, seeded per process as the caches' hashers are: for one query's few hundred
    // ids SipHash's strength buys nothing
    let mut seen: HashSet<&str, foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(total, Default::default());
    let mut kept: Vec<(Order<'a>, &'static str, &'a Coupon)> = Vec::with_capacity(total);
    let mut changes_at: Option<jiff::Timestamp> = None;
    let after = q.after.as_ref().map(SortKey::tuple);
    for r in results {
        for c in r.coupons.iter() {
            if let Some(t) = next_change(c, now) {
                changes_at = Some(changes_at.map_or(t, |x| x.min(t)));
            }
            let status = c.effective_status(now);
            let keep = q.status.as_ref().is_none_or(|s| s.contains(&status))
                && q.kinds.as_ref().is_none_or(|k| k.contains(&c.kind()));
            if keep && seen.insert(c.id.as_str()) {
                let order = order_of(status, c);
                // keyset paging: the page starts strictly after the previous page's last
                // key, in the list as it is now
                if after.is_none_or(|a| order > a) {
                    kept.push((order, status, c));
                }
            }
        }
    }
    let end = q.limit.min(kept.len());
    let more = end < kept.len();
    if more {
        // the `end` first in order before the rest, in no order yet
        kept.select_nth_unstable_by(end, |a, b| a.0.cmp(&b.0));
    }
    kept.truncate(end);
    kept.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let last = kept
        .last()
        .filter(|_| more)
        .map(|(_, s, c)| key_with_status(s, c));
    Page {
        coupons: kept.into_iter().map(|(_, s, c)| (s, c)).collect(),
        last,
        changes_at,
    }
}

/// Merges results given in routes.yaml order.
pub fn merge(
    results: Vec<VendorResult>,
    q: &CouponQuery,
    now: jiff::Timestamp,
) -> (Verdict, QueryAnswer) {
    let (verdict, complete) = judge(&results, q);
    let page = page(&results, q, now);
    let next_cursor = page.last.as_ref().map(|k| q.cursor_after(k, now));
    (
        verdict,
        QueryAnswer {
            coupons: page.coupons,
            sources: results.into_iter().map(|r| r.source).collect(),
            complete,
            next_cursor,
        },
    )
}

/// A coupon's place in the order: usable, pending, the rest; then `valid_until` (null
/// last), vendor, id.
pub fn sort_key(c: &Coupon) -> SortKey {
    key_with_status(c.status(), c)
}

/// [`sort_key`] of `c` judged to be `status` (its effective status, which a page orders by).
fn key_with_status(status: &str, c: &Coupon) -> SortKey {
    SortKey {
        r: rank(status),
        u: c.until_ts.map(|t| t.as_millisecond()),
        v: c.vendor.to_string(),
        i: c.id.clone(),
    }
}

fn rank(status: &str) -> u8 {
    match status {
        "usable" => 0,
        "pending" => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::query::QueryLimits;
    use crate::canonical::schema::{COUPON, slot};
    use serde_json::{Value, json};

    fn coupon(vendor: &str, id: &str, status: &str, kind: &str, until: Option<&str>) -> Coupon {
        let mut row = vec![Value::Null; COUPON.len()];
        let mut set = |name: &str, v: Value| row[slot(COUPON, name).unwrap()] = v;
        set("id", json!(id));
        set("status", json!(status));
        set("kind", json!(kind));
        set("valid_from", json!("2015-01-01T00:00:00+08:00"));
        if let Some(u) = until {
            set("valid_until", json!(u));
        }
        Coupon::from_row(&vendor.into(), &row)
    }

    fn ok(vendor: &str, coupons: Vec<Coupon>) -> VendorResult {
        VendorResult {
            source: Source {
                vendor: vendor.into(),
                outcome: Outcome::Ok,
                count: coupons.len(),
                latency_ms: Some(1),
                cache: None,
                error: None,
                dropped: 0,
                truncated: false,
            },
            coupons: Arc::new(coupons),
        }
    }

    fn failed(vendor: &str, outcome: Outcome) -> VendorResult {
        let mut r = ok(vendor, vec![]);
        r.source.outcome = outcome;
        r
    }

    fn query(body: &str) -> CouponQuery {
        let limits = QueryLimits {
            default_limit: 100,
            max_limit: 500,
        };
        CouponQuery::parse(body.as_bytes(), limits, &["a", "b", "c"], &SIGNER, now()).unwrap()
    }

    static SIGNER: std::sync::LazyLock<crate::canonical::cursor::CursorSigner> =
        std::sync::LazyLock::new(crate::canonical::cursor::CursorSigner::random);

    fn now() -> jiff::Timestamp {
        "2015-12-01T00:00:00+08:00".parse().unwrap()
    }

    #[test]
    fn usable_then_pending_then_rest_by_end_date_vendor_and_id() {
        let a = vec![
            coupon("a", "1", "used", "cash", Some("2015-12-02T00:00:00+08:00")),
            coupon("a", "2", "usable", "cash", None),
            coupon(
                "a",
                "3",
                "usable",
                "cash",
                Some("2015-12-20T00:00:00+08:00"),
            ),
        ];
        let b = vec![
            coupon(
                "b",
                "1",
                "usable",
                "cash",
                Some("2015-12-10T00:00:00+08:00"),
            ),
            coupon(
                "b",
                "2",
                "usable",
                "cash",
                Some("2015-11-01T00:00:00+08:00"),
            ), // expired by date
            coupon(
                "b",
                "0",
                "usable",
                "cash",
                Some("2015-12-10T00:00:00+08:00"),
            ),
        ];
        let (v, ans) = merge(
            vec![ok("a", a), ok("b", b)],
            &query(r#"{"member":{}}"#),
            now(),
        );
        assert_eq!(v, Verdict::Answered);
        assert_eq!(
            ids_and_statuses(&ans),
            [
                ("b:0", "usable"),
                ("b:1", "usable"),
                ("a:3", "usable"),
                ("a:2", "usable"),
                ("b:2", "expired"),
                ("a:1", "used"),
            ]
        );
        assert!(ans.complete);
    }

    /// The answer's coupons as (id, status), in order.
    fn ids_and_statuses(ans: &QueryAnswer) -> Vec<(&str, &str)> {
        ans.coupons
            .iter()
            .map(|c| (c.id.as_str(), c.status()))
            .collect()
    }

    #[test]
    fn pending_coupons_come_after_usable_ones_and_before_the_rest() {
        let mut pending = coupon("a", "x", "usable", "cash", None);
        pending.from_ts = Some("2015-12-05T00:00:00+08:00".parse().unwrap());
        let cs = vec![
            coupon("a", "b", "used", "cash", None),
            pending,
            coupon("a", "y", "usable", "cash", None),
        ];
        let (_, ans) = merge(vec![ok("a", cs)], &query(r#"{"member":{}}"#), now());
        assert_eq!(
            ids_and_statuses(&ans),
            [("a:y", "usable"), ("a:x", "pending"), ("a:b", "used")]
        );
    }

    #[test]
    fn outcomes_read_as_in_sources_and_dropped_shows_only_when_some_were() {
        // the label of metrics and logs is the word of API.md's `sources[].outcome`
        for o in [
            Outcome::Ok,
            Outcome::Error,
            Outcome::Timeout,
            Outcome::CircuitOpen,
            Outcome::RateLimited,
            Outcome::Skipped,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        let mut source = ok("a", vec![]).source;
        assert!(
            serde_json::to_value(&source)
                .unwrap()
                .get("dropped")
                .is_none()
        );
        source.dropped = 3;
        assert_eq!(serde_json::to_value(&source).unwrap()["dropped"], 3);
    }

    #[test]
    fn ordering_does_not_depend_on_vendor_answer_order() {
        let cs = || {
            vec![
                coupon(
                    "a",
                    "1",
                    "usable",
                    "cash",
                    Some("2015-12-10T00:00:00+08:00"),
                ),
                coupon(
                    "a",
                    "2",
                    "usable",
                    "cash",
                    Some("2015-12-03T00:00:00+08:00"),
                ),
                coupon("a", "3", "pending", "cash", None),
            ]
        };
        let q = query(r#"{"member":{}}"#);
        let (_, x) = merge(vec![ok("a", cs())], &q, now());
        let mut rev = cs();
        rev.reverse();
        let (_, y) = merge(vec![ok("a", rev)], &q, now());
        assert_eq!(x.coupons, y.coupons);
    }

    #[test]
    fn filters_apply_to_the_effective_status_and_duplicates_go() {
        let a = vec![
            coupon(
                "a",
                "1",
                "usable",
                "cash",
                Some("2015-11-01T00:00:00+08:00"),
            ),
            coupon(
                "a",
                "2",
                "usable",
                "discount",
                Some("2015-12-31T00:00:00+08:00"),
            ),
            coupon(
                "a",
                "2",
                "usable",
                "discount",
                Some("2015-12-31T00:00:00+08:00"),
            ),
        ];
        let (_, ans) = merge(
            vec![ok("a", a)],
            &query(r#"{"member":{},"status":["usable"]}"#),
            now(),
        );
        assert_eq!(ans.coupons.len(), 1);
        assert_eq!(ans.coupons[0].id, "a:2");
        assert_eq!(ans.sources[0].count, 3, "count is before filters");
        let a = vec![
            coupon("a", "1", "usable", "cash", None),
            coupon("a", "2", "usable", "discount", None),
        ];
        let (_, ans) = merge(
            vec![ok("a", a)],
            &query(r#"{"member":{},"kinds":["discount"]}"#),
            now(),
        );
        assert_eq!(ans.coupons.len(), 1);
    }

    #[test]
    fn pages_follow_the_cursor() {
        let a: Vec<Coupon> = (0..5)
            .map(|i| coupon("a", &i.to_string(), "usable", "cash", None))
            .collect();
        let q = query(r#"{"member":{},"limit":2}"#);
        let (_, p1) = merge(vec![ok("a", a.clone())], &q, now());
        assert_eq!(p1.coupons.len(), 2);
        let c = p1.next_cursor.unwrap();
        let q2 = query(&format!(r#"{{"member":{{}},"limit":2,"cursor":"{c}"}}"#));
        let (_, p2) = merge(vec![ok("a", a.clone())], &q2, now());
        assert_eq!(p2.coupons[0].id, "a:2");
        let q3 = query(&format!(
            r#"{{"member":{{}},"limit":2,"cursor":"{}"}}"#,
            p2.next_cursor.unwrap()
        ));
        let (_, p3) = merge(vec![ok("a", a)], &q3, now());
        assert_eq!(p3.coupons.len(), 1);
        assert_eq!(p3.next_cursor, None);
    }

    /// `choose` sorts only as far as a page reaches: walking every page by its cursor gives
    /// the whole list in the order of one full sort, whatever the page size, with ties on
    /// status and end date everywhere (vendor and id decide them).
    #[test]
    fn pages_of_any_size_walk_the_one_full_order() {
        let untils = [
            None,
            Some("2015-12-10T00:00:00+08:00"),
            Some("2015-12-20T00:00:00+08:00"),
            Some("2015-11-01T00:00:00+08:00"),
        ];
        let statuses = ["usable", "used", "usable", "pending", "expired"];
        let results = || {
            ["c", "a", "b"]
                .into_iter()
                .map(|v| {
                    // a different order in each vendor's list: i * 17 mod 40 visits all 40
                    let coupons = (0..40)
                        .map(|i| (i * 17) % 40)
                        .map(|i| {
                            let s = statuses[i % statuses.len()];
                            coupon(v, &format!("{i:02}"), s, "cash", untils[i % untils.len()])
                        })
                        .collect();
                    ok(v, coupons)
                })
                .collect::<Vec<_>>()
        };
        let ids = |p: &QueryAnswer| p.coupons.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        let all = merge(results(), &query(r#"{"member":{},"limit":500}"#), now()).1;
        assert_eq!(all.coupons.len(), 120);
        assert_eq!(all.next_cursor, None);
        let mut reference = all.coupons.clone();
        reference.sort_by_key(sort_key);
        assert_eq!(
            ids(&all),
            reference.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
        );
        for limit in [1, 7, 50, 119, 120] {
            let mut walked = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let body = match &cursor {
                    Some(c) => format!(r#"{{"member":{{}},"limit":{limit},"cursor":"{c}"}}"#),
                    None => format!(r#"{{"member":{{}},"limit":{limit}}}"#),
                };
                let page = merge(results(), &query(&body), now()).1;
                assert!(page.coupons.len() <= limit);
                walked.extend(ids(&page));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
                assert!(walked.len() <= 120, "limit {limit}: pages repeat");
            }
            assert_eq!(walked, ids(&all), "limit {limit}");
        }
    }

    #[test]
    fn required_vendors_that_did_not_answer_fail_the_query() {
        let v = |body: &str, rs: Vec<VendorResult>| merge(rs, &query(body), now()).0;
        let mixed = || vec![ok("a", vec![]), failed("b", Outcome::Timeout)];
        assert_eq!(v(r#"{"member":{}}"#, mixed()), Verdict::Answered);
        assert_eq!(
            v(r#"{"member":{},"require":["a"]}"#, mixed()),
            Verdict::Answered
        );
        assert_eq!(
            v(r#"{"member":{},"require":["b"]}"#, mixed()),
            Verdict::RequiredFailed
        );
        assert_eq!(
            v(r#"{"member":{},"require":"all"}"#, mixed()),
            Verdict::RequiredFailed
        );
        let skipped = || {
            vec![
                ok("a", vec![]),
                VendorResult {
                    source: Source::skipped("c", "no identity for c".into()),
                    coupons: Arc::default(),
                },
            ]
        };
        assert_eq!(
            v(r#"{"member":{},"require":"all"}"#, skipped()),
            Verdict::Answered
        );
        assert_eq!(
            v(r#"{"member":{},"require":["c"]}"#, skipped()),
            Verdict::RequiredFailed
        );
        let mut stale = failed("b", Outcome::Error);
        stale.source.cache = Some("stale");
        assert_eq!(
            v(
                r#"{"member":{},"require":["b"]}"#,
                vec![ok("a", vec![]), stale]
            ),
            Verdict::RequiredFailed
        );
        // every vendor timing out stays a 504
        let all_out = vec![failed("a", Outcome::Timeout), failed("b", Outcome::Timeout)];
        assert_eq!(
            v(r#"{"member":{},"require":["a"]}"#, all_out),
            Verdict::AllTimedOut
        );
    }

    #[test]
    fn pages_neither_skip_nor_repeat_a_coupon_when_the_list_changes() {
        let c = |i: u32| coupon("a", &format!("{i:02}"), "usable", "cash", None);
        let q = query(r#"{"member":{},"limit":3}"#);
        let (_, p1) = merge(vec![ok("a", (0..8).map(c).collect())], &q, now());
        let ids = |p: &QueryAnswer| p.coupons.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&p1), ["a:00", "a:01", "a:02"]);
        // before page 2: a coupon already shown goes, one before the cursor arrives, one
        // after it arrives too
        let changed: Vec<Coupon> = [1, 3, 4, 5, 6, 7, 9]
            .into_iter()
            .map(c)
            .chain([coupon("a", "00a", "usable", "cash", None)])
            .collect();
        let cursor = p1.next_cursor.unwrap();
        let q2 = query(&format!(
            r#"{{"member":{{}},"limit":3,"cursor":"{cursor}"}}"#
        ));
        let (_, p2) = merge(vec![ok("a", changed)], &q2, now());
        assert_eq!(ids(&p2), ["a:03", "a:04", "a:05"]);
    }

    #[test]
    fn verdicts_follow_the_api_status_rules() {
        let q = query(r#"{"member":{}}"#);
        let v = |rs: Vec<VendorResult>| merge(rs, &q, now());
        let (verdict, ans) = v(vec![ok("a", vec![]), failed("b", Outcome::Error)]);
        assert_eq!(verdict, Verdict::Answered);
        assert!(!ans.complete);
        assert_eq!(
            v(vec![
                failed("a", Outcome::Timeout),
                failed("b", Outcome::Timeout)
            ])
            .0,
            Verdict::AllTimedOut
        );
        assert_eq!(
            v(vec![
                failed("a", Outcome::Timeout),
                failed("b", Outcome::Error)
            ])
            .0,
            Verdict::AllFailed
        );
        let skipped = VendorResult {
            source: Source::skipped("c", "no identity for c".into()),
            coupons: Arc::default(),
        };
        let (verdict, ans) = v(vec![skipped]);
        assert_eq!(verdict, Verdict::Answered);
        assert!(ans.complete);
        let mut stale = failed("a", Outcome::Error);
        stale.source.cache = Some("stale");
        assert_eq!(
            v(vec![stale, failed("b", Outcome::Error)]).0,
            Verdict::Answered
        );
    }

    #[test]
    fn a_page_stands_until_the_next_effective_status_change() {
        let ts = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        let mut later = coupon(
            "a",
            "2",
            "usable",
            "cash",
            Some("2015-12-31T23:59:59+08:00"),
        );
        later.from_ts = Some(ts("2015-12-05T00:00:00+08:00"));
        let cs = vec![
            coupon(
                "a",
                "1",
                "usable",
                "cash",
                Some("2015-12-12T23:59:59+08:00"),
            ),
            later,
            // decided by the vendor: its dates never change its status
            coupon("a", "3", "used", "cash", Some("2015-12-02T00:00:00+08:00")),
            // already expired: stays so
            coupon(
                "a",
                "4",
                "usable",
                "cash",
                Some("2015-11-02T00:00:00+08:00"),
            ),
        ];
        let r = [ok("a", cs)];
        let q = query(r#"{"member": {"ids": {"a": "m"}}}"#);
        let p = page(&r, &q, now());
        // a:2 stops being pending at its start, before a:1 expires
        assert_eq!(p.changes_at, Some(ts("2015-12-05T00:00:00+08:00")));
        let statuses = |p: &Page| {
            p.coupons
                .iter()
                .map(|c| (c.id.clone(), c.status().to_owned()))
                .collect::<Vec<_>>()
        };
        let just_before = p.changes_at.unwrap() - jiff::SignedDuration::from_nanos(1);
        assert_eq!(statuses(&page(&r, &q, just_before)), statuses(&p));
        let at = page(&r, &q, p.changes_at.unwrap());
        assert_ne!(statuses(&at), statuses(&p));
        // from its start on a:2 is usable: the next change is a:1's end, not now
        assert_eq!(
            at.changes_at,
            Some(ts("2015-12-12T23:59:59+08:00") + jiff::SignedDuration::from_nanos(1))
        );
        // past its end a coupon expires the next nanosecond, not at the end itself
        let end = ts("2015-12-12T23:59:59+08:00");
        let p = page(&r, &q, end);
        assert_eq!(
            p.changes_at,
            Some(end + jiff::SignedDuration::from_nanos(1))
        );
        assert_eq!(p.coupons[0].status(), "usable");
        let after = page(&r, &q, p.changes_at.unwrap());
        assert!(
            after
                .coupons
                .iter()
                .any(|c| c.id == "a:1" && c.status() == "expired")
        );
    }
}
