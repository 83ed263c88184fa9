//! `POST /v1/coupons/query`: validate, choose each vendor's identity, fan out, merge.
use crate::engine::routes::RouteId;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache as MokaCache;

/// The caches of this module are looked up several times per cached query, keyed by request
/// bodies and fingerprints: foldhash instead of SipHash, whose hashing of those keys was 3 % of
/// a cached answer's instructions. It is seeded at random per process, so keys cannot be
/// chosen to collide without knowing the seed; the callers are the company's own services.
type Cache<K, V> = MokaCache<K, V, foldhash::fast::RandomState>;

use crate::app::{AppState, Asked, Generation, through_cache};
use crate::canonical::coupon::Coupon;
use crate::canonical::cursor::SortKey;
#[cfg(doc)]
use crate::canonical::merge::QueryAnswer;
use crate::canonical::merge::{Outcome, Page, Source, VendorResult, Verdict, choose, judge};
use crate::canonical::query::{CouponQuery, InvalidQuery, QueryLimits, Require};
use crate::config::IdentityKind;
use crate::engine::cache::{Cached, Lookup, Standing};
use crate::engine::call::CallInput;
use crate::engine::fanout::{self, call_with_deadline};
use crate::engine::plan::OperationPlan;

/// Why a query was not asked.
#[derive(Debug)]
pub enum Refused {
    /// 400: the query is not valid.
    Invalid(InvalidQuery),
    /// 403: it names a vendor the caller may not reach.
    Forbidden(String),
}

/// What a query answered: `sources` and `complete` as of this request, the page of coupons
/// already serialized (possibly shared with identical queries), and the cursor.
#[derive(Debug)]
pub struct Reply {
    pub sources: Vec<Source>,
    pub complete: bool,
    pub next_cursor: Option<String>,
    page: Arc<MergedPage>,
    /// The whole body, when it was kept from an identical earlier request ([`WholeAnswers`]).
    ready: Option<Bytes>,
    /// The whole body, when it was written with the page, merged for this request.
    made: Option<Bytes>,
}

impl Reply {
    /// What follows the coupons: `sources`, `complete`, `next_cursor`.
    fn tail(&self) -> Vec<u8> {
        tail_of(&self.sources, self.complete, self.next_cursor.as_deref())
    }

    fn whole(&self, tail: &[u8]) -> Vec<u8> {
        let json = &self.page.coupons_json;
        let mut out = Vec::with_capacity(HEAD.len() + json.len() + tail.len());
        out.extend_from_slice(HEAD);
        out.extend_from_slice(json);
        out.extend_from_slice(tail);
        out
    }

    /// The answer's JSON, byte for byte what serializing a [`QueryAnswer`] gives.
    pub fn to_json(&self) -> Vec<u8> {
        self.whole(&self.tail())
    }

    /// [`to_json`](Self::to_json) as a body: when the page's previous body had the same
    /// `sources`, `complete` and cursor (as repeated hits do), that body is shared, not copied.
    pub fn body(&self) -> Bytes {
        if let Some(body) = self.ready.as_ref().or(self.made.as_ref()) {
            return body.clone();
        }
        let tail = self.tail();
        let mut last = self
            .page
            .last_body
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((t, body)) = &*last
            && *t == tail
        {
            return body.clone();
        }
        let body = Bytes::from(self.whole(&tail));
        *last = Some((tail, body.clone()));
        body
    }
}

/// What an answer's body starts with, before the page of coupons.
const HEAD: &[u8] = b"{\"coupons\":";

/// What follows the coupons in an answer's body: `sources`, `complete`, `next_cursor`.
fn tail_of(sources: &[Source], complete: bool, next_cursor: Option<&str>) -> Vec<u8> {
    let cursor = next_cursor.map_or(0, str::len);
    let mut out = Vec::with_capacity(160 * sources.len() + cursor + 64);
    out.extend_from_slice(b",\"sources\":");
    serde_json::to_writer(&mut out, sources).expect("sources serialize");
    out.extend_from_slice(if complete {
        b",\"complete\":true,\"next_cursor\":"
    } else {
        b",\"complete\":false,\"next_cursor\":"
    });
    serde_json::to_writer(&mut out, &next_cursor).expect("cursors serialize");
    out.push(b'}');
    out
}

/// A merged page kept for identical queries over the same vendor answers.
#[derive(Debug)]
struct MergedPage {
    coupons_json: Bytes,
    last: Option<SortKey>,
    /// The page stands until this instant (the next change of a coupon's effective status).
    changes_at: Option<jiff::Timestamp>,
    /// The last whole body made with this page, and its tail.
    last_body: Mutex<Option<(Vec<u8>, Bytes)>>,
}

impl MergedPage {
    /// What it weighs in the budget: the page, the last whole body made with it, its key.
    fn weight(&self, key: &str) -> u32 {
        u32::try_from(key.len() + 2 * self.coupons_json.len() + 512).unwrap_or(u32::MAX)
    }

    /// Whether the page is still what merging would give at `now`: no coupon's effective
    /// status has changed since it was made (moka's expiry says the same, but lazily).
    fn stands_at(&self, now: jiff::Timestamp) -> bool {
        self.changes_at.is_none_or(|t| now < t)
    }
}

/// The longest a merged page is kept; its vendor answers usually expire sooner, after which
/// nothing asks for it again (its key names the answers by id).
const MERGED_MAX_LIFE: Duration = Duration::from_secs(600);

struct MergedExpiry;

impl moka::Expiry<Arc<str>, Arc<MergedPage>> for MergedExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<MergedPage>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        let left = value.changes_at.map_or(MERGED_MAX_LIFE, |t| {
            let d = t.duration_since(jiff::Timestamp::now());
            Duration::try_from(d).unwrap_or(Duration::ZERO)
        });
        Some(left.min(MERGED_MAX_LIFE))
    }
}

/// Merged pages by query (its canonical form), limit, cursor position and the ids of the vendor
/// answers merged. Ids are unique in the process, so one key always means the same inputs.
/// Bounded by the answer store's share for pages (less the eighths [`ParsedQueries`] and
/// [`WholeAnswers`] take), part of the one `server.cache_max_bytes` budget.
fn merged(state: &AppState) -> &'static Cache<Arc<str>, Arc<MergedPage>> {
    static MERGED: OnceLock<Cache<Arc<str>, Arc<MergedPage>>> = OnceLock::new();
    MERGED.get_or_init(|| {
        MokaCache::builder()
            .max_capacity(Shares::of(state.answers.pages_budget()).merged)
            .weigher(|k: &Arc<str>, v: &Arc<MergedPage>| v.weight(k))
            .expire_after(MergedExpiry)
            .build_with_hasher(foldhash::fast::RandomState::default())
    })
}

/// The key of a merged page, or none when some answer cannot be named (an operation without
/// a cache).
fn merged_key(q: &CouponQuery, ids: &[Option<u64>]) -> Option<Arc<str>> {
    use std::fmt::Write as _;
    // the query's canonical text itself, not its hash: exact, and no SHA-256 per new query
    let mut k = String::with_capacity(q.canonical.len() + 24 + 12 * ids.len());
    k.push_str(&q.canonical);
    let _ = write!(k, "\u{1f}{}\u{1f}", q.limit);
    if let Some(after) = &q.after {
        k.push_str(&serde_json::to_string(after).ok()?);
    }
    for id in ids {
        let _ = write!(k, "\u{1f}{}", (*id)?);
    }
    Some(Arc::from(k))
}

/// How the answer store's share for what identical queries share is divided: an eighth each
/// for parsed queries and whole answers (small: a body and a reference each), the rest for
/// merged pages (the coupons' JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub merged: u64,
    pub parsed: u64,
    pub whole: u64,
}

impl Shares {
    pub fn of(pages_budget: u64) -> Shares {
        let eighth = pages_budget / 8;
        Shares {
            merged: pages_budget - 2 * eighth,
            parsed: eighth,
            whole: eighth,
        }
    }
}

/// Queries already parsed, by their exact body (bodies without a cursor: a cursor is checked
/// against the clock). A service asking again for the same member sends the same bytes, and
/// validating them again (strict JSON, vendor names, the fingerprint's hash) was a fifth of a
/// cached answer's instructions. It belongs to one generation: the vendors a query may name
/// and its limits come from the plan. Bounded by a part of the pages' share of the budget.
pub struct ParsedQueries(Cache<Bytes, Arc<CouponQuery>>);

impl ParsedQueries {
    pub fn new(max_bytes: u64) -> ParsedQueries {
        ParsedQueries(
            MokaCache::builder()
                .max_capacity(max_bytes)
                // the body twice (key and the parsed strings) and the parsed form's own
                .weigher(|k: &Bytes, _: &Arc<CouponQuery>| {
                    u32::try_from(2 * k.len() + 512).unwrap_or(u32::MAX)
                })
                .build_with_hasher(foldhash::fast::RandomState::default()),
        )
    }

    async fn parse(
        &self,
        body: &[u8],
        limits: QueryLimits,
        known: &[&str],
        cursors: &crate::canonical::cursor::CursorSigner,
        now: jiff::Timestamp,
    ) -> Result<Arc<CouponQuery>, InvalidQuery> {
        if let Some(q) = self.0.get(body).await {
            return Ok(q);
        }
        let q = Arc::new(CouponQuery::parse(body, limits, known, cursors, now)?);
        if q.after.is_none() {
            self.0.insert(Bytes::copy_from_slice(body), q.clone()).await;
        }
        Ok(q)
    }
}

/// Whole answers by the exact request (the vendors the caller may reach, and the body), kept
/// while answering again would give the same bytes: every vendor answer it was merged from
/// is still the one a lookup would serve fresh (by id: a refresh, an invalidation, an
/// eviction or the end of the ttl all end it), no coupon's effective status has changed
/// since, and it was made of fresh hits and skipped vendors only (so its `sources` say `hit`,
/// with a latency of 0 ms: no vendor time). A repeated query then costs a lookup here and one
/// per vendor instead of the fan-out, the merge lookup and the rendering of `sources`; the
/// metrics count each vendor's hit as before. Bodies with a cursor are not kept (a cursor is
/// checked against the clock). Part of one generation, bounded like [`ParsedQueries`].
pub struct WholeAnswers(Cache<Bytes, Arc<Whole>>);

struct Whole {
    body: Bytes,
    sources: Vec<Source>,
    complete: bool,
    next_cursor: Option<String>,
    page: Arc<MergedPage>,
    /// The vendor answers it was made from.
    served: Vec<Served>,
    /// Where the vendors skipped for want of an identity are counted, again on each use.
    skipped: Vec<Arc<crate::telemetry::OperationHandles>>,
}

struct Served {
    cache: Arc<crate::engine::cache::ResponseCache>,
    standing: Arc<Standing>,
    /// Where its hits are counted (looked up once, not per use).
    handles: Option<Arc<crate::telemetry::OperationHandles>>,
}

impl WholeAnswers {
    pub fn new(max_bytes: u64) -> WholeAnswers {
        WholeAnswers(
            MokaCache::builder()
                .max_capacity(max_bytes)
                // the key, and the body unless it is the page's last body (counted there)
                .weigher(|k: &Bytes, w: &Arc<Whole>| {
                    u32::try_from(k.len() + w.body.len() + 256 * w.sources.len() + 512)
                        .unwrap_or(u32::MAX)
                })
                .build_with_hasher(foldhash::fast::RandomState::default()),
        )
    }

    /// The key: the vendors the caller is limited to (none: all), then the body.
    fn key(allowed: Option<&[String]>, body: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(body.len() + 32);
        match allowed {
            None => k.push(b'*'),
            Some(vs) => {
                for v in vs {
                    k.extend_from_slice(v.as_bytes());
                    k.push(b',');
                }
            }
        }
        k.push(0x1f);
        k.extend_from_slice(body);
        k
    }

    /// The kept answer for `key`, if answering again would give the same bytes.
    async fn reply(&self, key: &[u8], now: jiff::Timestamp) -> Option<Reply> {
        let w = self.0.get(key).await?;
        if w.page.changes_at.is_some_and(|t| now >= t) {
            return None;
        }
        let now = std::time::Instant::now();
        if !w.served.iter().all(|s| s.cache.serves(&s.standing, now)) {
            return None;
        }
        for h in w.served.iter().filter_map(|s| s.handles.as_ref()) {
            h.cache_lookup("hit");
        }
        for h in &w.skipped {
            h.skipped();
        }
        Some(Reply {
            sources: w.sources.clone(),
            complete: w.complete,
            next_cursor: w.next_cursor.clone(),
            page: w.page.clone(),
            ready: Some(w.body.clone()),
            made: None,
        })
    }
}

/// Answers one query; `bypass_cache` when the caller sent `Cache-Control: no-cache`;
/// `allowed` limits the vendors to those the caller may reach.
pub async fn query(
    state: &Arc<AppState>,
    body: &[u8],
    bypass_cache: bool,
    allowed: Option<&[String]>,
) -> Result<(Verdict, Reply), Refused> {
    let generation = state.generation();
    let now = jiff::Timestamp::now();
    let whole_key = (!bypass_cache).then(|| WholeAnswers::key(allowed, body));
    if let Some(k) = &whole_key
        && let Some(reply) = generation.whole.reply(k, now).await
    {
        return Ok((Verdict::Answered, reply));
    }
    let plan = &generation.plan;
    let route = plan.route(RouteId::CouponsQuery);
    // the vendors that can be asked: those offering the route's operation
    let known: Vec<&str> = route
        .targets
        .iter()
        .map(|op| op.vendor.id.as_str())
        .collect();
    let limits = QueryLimits {
        default_limit: route.default_limit,
        max_limit: route.max_limit,
    };
    let q = generation
        .queries
        .parse(body, limits, &known, &state.cursors, now)
        .await
        .map_err(Refused::Invalid)?;
    let may = |v: &str| allowed.is_none_or(|a| a.iter().any(|x| x == v));
    let named = q
        .vendors
        .iter()
        .flatten()
        .chain(q.ids.keys())
        .chain(match &q.require {
            Require::Vendors(vs) => vs.as_slice(),
            _ => &[],
        });
    if let Some(v) = named.into_iter().find(|v| !may(v)) {
        return Err(Refused::Forbidden(format!(
            "this caller may not ask vendor `{v}`"
        )));
    }
    // without a `vendors` filter, a limited caller's query considers the vendors it may reach
    let asked: Vec<&Arc<OperationPlan>> = route
        .targets
        .iter()
        .filter(|op| q.considers(&op.vendor.id) && may(&op.vendor.id))
        .collect();
    // boxed: a list of whole futures would be copied as it is collected
    let asks = asked
        .iter()
        .map(|op| Box::pin(ask(state, &generation, op, &q, bypass_cache)));
    let answered = fanout::all(asks).await;
    let mut results = Vec::with_capacity(answered.len());
    let mut ids = Vec::with_capacity(answered.len());
    let mut standings = Vec::with_capacity(answered.len());
    for (result, id, standing) in answered {
        results.push(result);
        ids.push(id);
        standings.push(standing);
    }
    let (verdict, complete) = judge(&results, &q);
    // the page is a function of the query, the answers merged and the effective statuses:
    // identical queries over the same answers share it until a status changes
    let key = merged_key(&q, &ids);
    // an answer this request fetched has an id no page was merged from yet: no lookup
    let fetched = results
        .iter()
        .any(|r| r.source.outcome == Outcome::Ok && r.source.cache == Some(Lookup::Miss.as_str()));
    let cached = match &key {
        Some(k) if !bypass_cache && !fetched => {
            merged(state).get(k).await.filter(|m| m.stands_at(now))
        }
        _ => None,
    };
    let reply = match cached {
        Some(page) => Reply {
            next_cursor: page.last.as_ref().map(|k| q.cursor_after(k, now)),
            sources: results.into_iter().map(|r| r.source).collect(),
            complete,
            page,
            ready: None,
            made: None,
        },
        None => {
            let reply = merge_now(results, complete, &q, now);
            // a page merged from an answer just fetched is kept when it is asked for again
            // (its answers then come from the store): most such pages, one for each new
            // member, never are, and the answer store keeps decoded only what hits read
            if let Some(k) = key
                && !fetched
            {
                merged(state).insert(k, reply.page.clone()).await;
            }
            reply
        }
    };
    if let Some(k) = whole_key
        && verdict == Verdict::Answered
        && q.after.is_none()
        && let Some(whole) = whole_of(&generation, &asked, &ids, &standings, &reply)
    {
        generation
            .whole
            .0
            .insert(Bytes::from(k), Arc::new(whole))
            .await;
    }
    Ok((verdict, reply))
}

thread_local! {
    /// Where bodies are written before they are copied out at their exact size.
    static PAGE_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The reply of a page merged now from `results`: its whole body written at once, and the
/// page's JSON kept as the part of it that it is. A page written on its own and then copied
/// into the body was two copies of ~50 KB for a page of 100 coupons. Copied out of the
/// scratch buffer at its exact size: pages are kept (merged pages, whole answers) and weighed
/// by their length, and a buffer sized by an estimate per coupon held a quarter more than it
/// weighed (the allocator keeps a block that shrinks by less than half).
fn merge_now(
    results: Vec<VendorResult>,
    complete: bool,
    q: &CouponQuery,
    now: jiff::Timestamp,
) -> Reply {
    PAGE_SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(HEAD);
        let Page {
            coupons,
            last,
            changes_at,
        } = choose(&results, q, now);
        Coupon::write_page(&coupons, buf);
        drop(coupons);
        let json = HEAD.len()..buf.len();
        let next_cursor = last.as_ref().map(|k| q.cursor_after(k, now));
        let sources: Vec<Source> = results.into_iter().map(|r| r.source).collect();
        let tail = tail_of(&sources, complete, next_cursor.as_deref());
        buf.extend_from_slice(&tail);
        let whole = Bytes::copy_from_slice(buf);
        // a page of a few hundred coupons is a few hundred KB: not kept past 1 MiB
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        let page = Arc::new(MergedPage {
            coupons_json: whole.slice(json),
            last,
            changes_at,
            last_body: Mutex::new(Some((tail, whole.clone()))),
        });
        Reply {
            sources,
            complete,
            next_cursor,
            page,
            ready: None,
            made: Some(whole),
        }
    })
}

/// What [`WholeAnswers`] keeps of `reply`, when it was made of fresh hits and skipped vendors
/// only.
fn whole_of(
    generation: &Generation,
    asked: &[&Arc<OperationPlan>],
    ids: &[Option<u64>],
    standings: &[Option<Arc<Standing>>],
    reply: &Reply,
) -> Option<Whole> {
    let mut served = Vec::with_capacity(asked.len());
    let mut skipped = Vec::new();
    for (((op, id), standing), source) in asked.iter().zip(ids).zip(standings).zip(&reply.sources) {
        match id {
            Some(0) if source.outcome == Outcome::Skipped => {
                skipped.extend(crate::telemetry::operation(&op.vendor.id, &op.name));
            }
            Some(_)
                if source.outcome == Outcome::Ok && source.cache == Some(Lookup::Hit.as_str()) =>
            {
                served.push(Served {
                    cache: generation.caches[op.slot].clone()?,
                    standing: standing.clone()?,
                    handles: crate::telemetry::operation(&op.vendor.id, &op.name),
                });
            }
            _ => return None,
        }
    }
    // served from here, a vendor's answer takes no time: whatever this lookup took (under
    // 1 ms on an idle machine, more on a loaded one), a repeat says 0
    let mut sources = reply.sources.clone();
    for s in &mut sources {
        if s.outcome == Outcome::Ok {
            s.latency_ms = Some(0);
        }
    }
    let kept = Reply {
        sources,
        complete: reply.complete,
        next_cursor: reply.next_cursor.clone(),
        page: reply.page.clone(),
        ready: None,
        made: None,
    };
    Some(Whole {
        body: kept.body(),
        sources: kept.sources,
        complete: kept.complete,
        next_cursor: kept.next_cursor,
        page: kept.page,
        served,
        skipped,
    })
}

/// The identity to send to `op`'s vendor: the first kind it accepts that the caller gave.
fn identity(op: &OperationPlan, q: &CouponQuery) -> Option<CallInput> {
    op.identity.iter().find_map(|kind| match kind {
        IdentityKind::MemberId => q.ids.get(&op.vendor.id).map(|id| CallInput {
            member_id: Some(id.clone()),
            ..CallInput::default()
        }),
        IdentityKind::Openid => q.openid.as_ref().map(|o| CallInput {
            openid: Some(o.clone()),
            ..CallInput::default()
        }),
    })
}

/// The coupons of an answer's rows, built out of them: what the caches of the coupon lists
/// build from each answer they open (`engine::cache::Records`).
pub fn coupons_out_of(vendor: &Arc<str>, rows: Vec<Vec<serde_json::Value>>) -> Vec<Coupon> {
    rows.into_iter()
        .map(|row| Coupon::from_owned_row(vendor, row))
        .collect()
}

/// The canonical coupons of an answer, built by its first reader only (an answer its cache
/// opened has them already).
fn coupons_of(vendor: &str, cached: &Cached) -> Arc<Vec<Coupon>> {
    cached
        .coupons
        .get_or_init(|| {
            let vendor: Arc<str> = vendor.into();
            Arc::new(
                cached
                    .answer
                    .rows
                    .iter()
                    .map(|row| Coupon::from_row(&vendor, row))
                    .collect(),
            )
        })
        .clone()
}

/// Asks `op`'s vendor (as [`crate::app::ask_vendor`] does) and returns what it contributed with
/// the id of the answer served (0: none; `None`: an answer no cache keeps) and, for one the
/// store keeps, whether it still stands.
async fn ask(
    state: &Arc<AppState>,
    generation: &Generation,
    op: &Arc<OperationPlan>,
    q: &CouponQuery,
    bypass_cache: bool,
) -> (VendorResult, Option<u64>, Option<Arc<Standing>>) {
    let vendor = op.vendor.id.as_str();
    let Some(input) = identity(op, q) else {
        if let Some(h) = crate::telemetry::operation(vendor, &op.name) {
            h.skipped();
        }
        return (
            VendorResult {
                source: Source::skipped(vendor, format!("no identity for {vendor}")),
                coupons: Arc::default(),
            },
            Some(0),
            None,
        );
    };
    let started = tokio::time::Instant::now();
    let fetch = async {
        call_with_deadline(
            op,
            &state.upstream,
            &input,
            &generation.guards[op.vendor.slot],
            bypass_cache,
        )
        .await
        .result
    };
    let (result, lookup, stale, keeps) = match &generation.caches[op.slot] {
        None => (
            fetch
                .await
                .map(|out| Cached::new(Arc::new(out)))
                .map_err(Arc::new),
            None,
            None,
            false,
        ),
        Some(cache) => {
            let (r, lookup, stale) = through_cache(op, cache, &input, bypass_cache, fetch).await;
            (r, Some(lookup), stale, true)
        }
    };
    crate::app::count_own_call(op, lookup, result.as_ref().ok().map(|c| &*c.answer));
    let served = match &result {
        Ok(c) => Some(c.clone()),
        Err(_) => stale.clone(),
    };
    let asked = Asked {
        result: result.map(|c| c.answer.clone()),
        lookup,
        stale: stale.map(|c| c.answer.clone()),
        latency: started.elapsed(),
    };
    let (mut source, _) = asked.report(vendor);
    let coupons = served
        .as_ref()
        .map_or_else(Arc::default, |c| coupons_of(vendor, c));
    // an answer opened by its cache holds coupons, not rows: count those
    source.count = coupons.len();
    let id = keeps.then(|| served.as_ref().map_or(0, |c| c.id));
    let standing = served.and_then(|c| c.standing.clone());
    (VendorResult { source, coupons }, id, standing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_whole_answer_serves_repeats_until_a_vendor_answer_it_was_made_of_is_refreshed() {
        let sb = crate::sandbox::Sandbox::start().await.unwrap();
        let plan =
            crate::embedded::sandbox_plan("routes.yaml", crate::embedded::ROUTES_YAML, &sb, false)
                .unwrap();
        let state = AppState::new(plan);
        let body = crate::sandbox::demo_query();
        let ask = |bypass: bool, allowed: Option<Vec<String>>| {
            let state = state.clone();
            let body = body.clone();
            async move {
                let (verdict, reply) = query(&state, body.as_bytes(), bypass, allowed.as_deref())
                    .await
                    .unwrap();
                assert_eq!(verdict, Verdict::Answered);
                reply
            }
        };
        let first = ask(false, None).await;
        assert!(first.ready.is_none(), "vendors asked");
        let calls = sb.vendors().map(|(_, h)| h.requests());
        let hits = ask(false, None).await;
        assert!(hits.ready.is_none(), "made of cache hits, merged");
        assert!(hits.sources.iter().all(|s| s.cache == Some("hit")));
        let kept = ask(false, None).await;
        assert!(kept.ready.is_some(), "the whole answer again");
        let json = |r: &Reply| serde_json::from_slice::<serde_json::Value>(&r.body()).unwrap();
        let mut expected = json(&hits);
        for s in expected["sources"].as_array_mut().unwrap() {
            s["latency_ms"] = serde_json::json!(0);
        }
        assert_eq!(json(&kept), expected, "the same answer, no vendor time");
        assert_eq!(kept.sources.len(), hits.sources.len());
        assert_eq!(
            sb.vendors().map(|(_, h)| h.requests()),
            calls,
            "no vendor asked"
        );
        // a caller limited to some vendors makes another request, even with the same body
        let some = || Some(vec!["op".to_owned(), "hkl".into(), "zvcms".into()]);
        assert!(ask(false, some()).await.ready.is_none());
        assert!(ask(false, some()).await.ready.is_some());
        // no-cache asks every vendor again: the answers kept are no longer what a lookup serves
        let fresh = ask(true, None).await;
        assert!(fresh.ready.is_none());
        let after = ask(false, None).await;
        assert!(
            after.ready.is_none(),
            "the refreshed answers are merged again"
        );
        assert!(
            ask(false, None).await.ready.is_some(),
            "and kept from then on"
        );
        // a reload starts with nothing kept
        let plan =
            crate::embedded::sandbox_plan("routes.yaml", crate::embedded::ROUTES_YAML, &sb, false)
                .unwrap();
        let current = state.generation();
        let (next, _) = Generation::build(
            plan,
            Default::default(),
            &state.answers,
            None,
            Some(&current),
        );
        state.swap_generation(next);
        assert!(ask(false, None).await.ready.is_none());
    }

    #[test]
    fn a_merged_page_weighs_its_json_twice_and_stands_until_a_status_changes() {
        let at: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let page = MergedPage {
            coupons_json: Bytes::from(vec![b' '; 1000]),
            last: None,
            changes_at: Some(at),
            last_body: Mutex::new(None),
        };
        assert_eq!(page.weight("key"), 3 + 2 * 1000 + 512);
        let before = at - jiff::SignedDuration::from_nanos(1);
        assert!(page.stands_at(before));
        assert!(
            !page.stands_at(at),
            "the instant of the change is the change"
        );
        assert!(!page.stands_at(at + jiff::SignedDuration::from_secs(1)));
        let forever = MergedPage {
            changes_at: None,
            ..page
        };
        assert!(forever.stands_at(at));
    }

    fn sandbox_state(sb: &crate::sandbox::Sandbox) -> Arc<AppState> {
        let plan =
            crate::embedded::sandbox_plan("routes.yaml", crate::embedded::ROUTES_YAML, sb, false)
                .unwrap();
        AppState::new(plan)
    }

    async fn ask_as(
        state: &Arc<AppState>,
        body: &str,
        allowed: Option<&[&str]>,
    ) -> Result<(Verdict, Reply), Refused> {
        let allowed: Option<Vec<String>> =
            allowed.map(|a| a.iter().map(|v| (*v).to_owned()).collect());
        query(state, body.as_bytes(), false, allowed.as_deref()).await
    }

    #[tokio::test]
    async fn a_limited_caller_asks_only_its_vendors_and_may_not_name_others() {
        use crate::sandbox::data::{HKL_MEMBER, OP_MEMBER};
        let sb = crate::sandbox::Sandbox::start().await.unwrap();
        let state = sandbox_state(&sb);
        let op_only = Some(&["op"][..]);
        let mine = format!(r#"{{"member":{{"ids":{{"op":"{OP_MEMBER}"}}}}}}"#);
        let (_, reply) = ask_as(&state, &mine, op_only).await.unwrap();
        let asked: Vec<&str> = reply.sources.iter().map(|s| s.vendor.as_str()).collect();
        assert_eq!(asked, ["op"], "the others are not even considered");
        for named in [
            format!(r#"{{"member":{{"ids":{{"op":"{OP_MEMBER}","hkl":"{HKL_MEMBER}"}}}}}}"#),
            format!(r#"{{"member":{{"ids":{{"op":"{OP_MEMBER}"}}}},"vendors":["hkl"]}}"#),
            format!(r#"{{"member":{{"ids":{{"op":"{OP_MEMBER}"}}}},"require":["hkl"]}}"#),
        ] {
            match ask_as(&state, &named, op_only).await {
                Err(Refused::Forbidden(e)) => assert!(e.contains("`hkl`"), "{e}"),
                other => panic!("{named}: {:?}", other.map(|(v, _)| v)),
            }
        }
    }

    #[tokio::test]
    async fn whole_answers_keep_skipped_vendors_but_never_a_failed_one() {
        use crate::sandbox::data::{HKL_MEMBER, OP_MEMBER};
        let sb = crate::sandbox::Sandbox::start().await.unwrap();
        let state = sandbox_state(&sb);
        // zvcms knows members by id only: without one it is skipped
        let body = format!(r#"{{"member":{{"ids":{{"op":"{OP_MEMBER}","hkl":"{HKL_MEMBER}"}}}}}}"#);
        let first = ask_as(&state, &body, None).await.unwrap().1;
        let hits = ask_as(&state, &body, None).await.unwrap().1;
        assert!(
            !Arc::ptr_eq(&first.page, &hits.page),
            "a page merged from answers just fetched is not kept"
        );
        let kept = ask_as(&state, &body, None).await.unwrap().1;
        assert!(
            Arc::ptr_eq(&hits.page, &kept.page),
            "the same answers from the store merge into the same page, made once"
        );
        assert!(
            kept.ready.is_some(),
            "skipped vendors do not prevent keeping"
        );
        let json = |r: &Reply| serde_json::from_slice::<serde_json::Value>(&r.body()).unwrap();
        let sources = json(&kept)["sources"].clone();
        let zvcms = sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["vendor"] == "zvcms")
            .unwrap();
        assert_eq!(zvcms["outcome"], "skipped");
        assert!(zvcms["latency_ms"].is_null(), "{zvcms}");
        assert_eq!(json(&kept)["coupons"], json(&hits)["coupons"]);
        assert_eq!(json(&first)["coupons"], json(&hits)["coupons"]);

        // a vendor that fails is asked again by every repeat: nothing is kept over it
        let sb2 = crate::sandbox::Sandbox::start().await.unwrap();
        let state2 = sandbox_state(&sb2);
        sb2.vendors()[1]
            .1
            .set_fault(crate::sandbox::Fault::Status(500));
        assert_eq!(sb2.vendors()[1].0, "hkl");
        for _ in 0..3 {
            let (verdict, reply) = ask_as(&state2, &body, None).await.unwrap();
            assert_eq!(verdict, Verdict::Answered);
            assert!(
                reply.ready.is_none(),
                "an answer with a failed vendor is not kept"
            );
            assert!(!reply.complete);
        }
    }

    #[test]
    fn the_pages_share_is_divided_whole() {
        let s = Shares::of(8 * 1024 * 1024);
        assert_eq!(s.parsed, 1024 * 1024);
        assert_eq!(s.whole, 1024 * 1024);
        assert_eq!(s.merged, 6 * 1024 * 1024);
        let odd = Shares::of(1001);
        assert_eq!(odd.merged + odd.parsed + odd.whole, 1001);
    }

    #[test]
    fn a_merged_page_expires_when_a_status_changes_and_within_ten_minutes() {
        let page = |changes_at: Option<jiff::Timestamp>| {
            Arc::new(MergedPage {
                coupons_json: Bytes::new(),
                last: None,
                changes_at,
                last_body: Mutex::new(None),
            })
        };
        let ttl = |p: &Arc<MergedPage>| {
            moka::Expiry::expire_after_create(
                &MergedExpiry,
                &Arc::from("k"),
                p,
                std::time::Instant::now(),
            )
            .unwrap()
        };
        assert_eq!(ttl(&page(None)), MERGED_MAX_LIFE);
        let soon = ttl(&page(Some(
            jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60),
        )));
        assert!(
            soon > Duration::from_secs(50) && soon <= Duration::from_secs(60),
            "{soon:?}"
        );
        let far = page(Some(
            jiff::Timestamp::now() + jiff::SignedDuration::from_secs(86_400),
        ));
        assert_eq!(ttl(&far), MERGED_MAX_LIFE);
        let past = page(Some(
            jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1),
        ));
        assert_eq!(ttl(&past), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_body_seen_before_is_not_parsed_again_unless_it_carries_a_cursor() {
        let memo = ParsedQueries::new(1 << 20);
        let signer = crate::canonical::cursor::CursorSigner::random();
        let limits = QueryLimits {
            default_limit: 2,
            max_limit: 10,
        };
        let known = ["op", "hkl"];
        let now = jiff::Timestamp::now();
        let body = br#"{"member":{"ids":{"op":"u1","hkl":"k1"}}}"#;
        let a = memo
            .parse(body, limits, &known, &signer, now)
            .await
            .unwrap();
        let b = memo
            .parse(body, limits, &known, &signer, now)
            .await
            .unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second is the first, not parsed again"
        );
        // refused bodies are not kept: they are refused each time
        let bad = br#"{"member":{"ids":{"nope":"u1"}}}"#;
        assert!(memo.parse(bad, limits, &known, &signer, now).await.is_err());
        assert!(memo.0.get(&bad[..]).await.is_none());
        // a cursor is checked against the clock at every request
        let last = SortKey {
            r: 0,
            u: None,
            v: "op".into(),
            i: "op:c1".into(),
        };
        let cursor = a.cursor_after(&last, now);
        let paged =
            format!(r#"{{"member":{{"ids":{{"op":"u1","hkl":"k1"}}}},"cursor":"{cursor}"}}"#);
        let p = memo
            .parse(paged.as_bytes(), limits, &known, &signer, now)
            .await
            .unwrap();
        assert!(p.after.is_some());
        assert!(memo.0.get(paged.as_bytes()).await.is_none(), "not kept");
    }

    #[test]
    fn a_page_merged_now_is_written_once_inside_its_body() {
        use crate::canonical::schema::{COUPON, slot};
        let now: jiff::Timestamp = "2015-12-01T00:00:00+08:00".parse().unwrap();
        let coupon = |vendor: &str, id: &str| {
            let mut row = vec![serde_json::Value::Null; COUPON.len()];
            row[slot(COUPON, "id").unwrap()] = id.into();
            row[slot(COUPON, "name").unwrap()] = "满50减5元券".into();
            Coupon::from_row(&vendor.into(), &row)
        };
        let result = |vendor: &str, ids: &[&str]| VendorResult {
            source: Source::skipped(vendor, String::new()),
            coupons: Arc::new(ids.iter().map(|id| coupon(vendor, id)).collect()),
        };
        let signer = crate::canonical::cursor::CursorSigner::random();
        let limits = QueryLimits {
            default_limit: 100,
            max_limit: 500,
        };
        // a page of two of three coupons: the body carries a cursor
        let q = CouponQuery::parse(
            br#"{"member": {}, "limit": 2}"#,
            limits,
            &["a", "b"],
            &signer,
            now,
        )
        .unwrap();
        let reply = merge_now(
            vec![result("a", &["2", "1"]), result("b", &["1"])],
            false,
            &q,
            now,
        );
        let body = reply.body();
        assert_eq!(&body[..], &reply.to_json()[..], "the page and its tail");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let ids: Vec<&str> = v["coupons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a:1", "a:2"]);
        assert!(v["next_cursor"].is_string());
        assert_eq!(v["complete"], false);
        assert_eq!(v["sources"].as_array().unwrap().len(), 2);
        // the page is the part of the body it is, not a copy
        let page = &reply.page.coupons_json;
        assert_eq!(page.as_ptr(), body[HEAD.len()..].as_ptr());
        assert_eq!(page[0], b'[');
        // a later reply over the same page with the same tail shares the body too
        let again = Reply {
            sources: reply.sources.clone(),
            complete: reply.complete,
            next_cursor: reply.next_cursor.clone(),
            page: reply.page.clone(),
            ready: None,
            made: None,
        };
        assert_eq!(again.body().as_ptr(), body.as_ptr());
    }

    #[test]
    fn bodies_are_the_answer_and_shared_while_the_tail_is_the_same() {
        let page = Arc::new(MergedPage {
            coupons_json: Bytes::from_static(b"[{\"id\":\"a:1\"}]"),
            last: None,
            changes_at: None,
            last_body: Mutex::new(None),
        });
        let reply = |complete: bool| Reply {
            sources: vec![Source::skipped("b", "no identity for b".into())],
            complete,
            next_cursor: None,
            page: page.clone(),
            ready: None,
            made: None,
        };
        let (a, b, c) = (reply(true), reply(true), reply(false));
        let body = a.body();
        assert_eq!(&body[..], &a.to_json()[..]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["coupons"][0]["id"], "a:1");
        assert_eq!(v["sources"][0]["vendor"], "b");
        assert_eq!(v["complete"], true);
        assert!(v["next_cursor"].is_null());
        assert_eq!(
            b.body().as_ptr(),
            body.as_ptr(),
            "the same tail shares the body"
        );
        let other = c.body();
        assert_ne!(other.as_ptr(), body.as_ptr());
        assert_eq!(&other[..], &c.to_json()[..]);
    }
}
