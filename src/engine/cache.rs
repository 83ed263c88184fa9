//! The answer cache of read operations (moka): one store for every operation, bounded by one
//! memory budget (`server.cache_max_bytes`), with request coalescing and stale-if-error.
//!
//! Every cached answer lives in one [`AnswerStore`], so an operator can say how much memory the
//! caches may take whatever the number of vendors: entries are weighed by an estimate of what
//! they really hold in memory, not by the vendor's answer size. The store keeps each answer
//! packed (its rows as compressed JSON, `super::packed`: ~80 bytes a coupon instead of ~1.7 KB
//! decoded with its canonical records), and the answers hits read lately decoded as well, in a
//! tier of their own with an eighth of the budget, so a hit on a member asked for often
//! decodes nothing and 10,000 members of three vendors fit in 64 MiB. An entry is *fresh* for
//! its operation's ttl (or the shorter `empty_ttl` for "nothing found") and kept
//! `stale_if_error` longer, so that when the vendor fails the last good answer can still be
//! served and reported as `stale`.
//! Errors are never cached. Keys are the canonical inputs that reach the vendor, never anything
//! signed or secret.
//!
//! Each operation reaches the store through its own [`ResponseCache`] (its ttl settings, its
//! metrics, its key space). Concurrent misses of one key are coalesced into one vendor call
//! through a small table of fills in progress; a write's invalidation of an operation moves it
//! to a new key space at once, so a fill that started before the write cannot bring the old
//! answer back.
//!
//! With several replicas a second level sits under the store (`crate::shared::cache`): a miss
//! asks it before the vendor and keeps what it finds only for the ttl that answer has left; an
//! answer from the vendor is stored there for the other replicas; and when the vendor fails,
//! the shared level's stale copy is served if this replica has none.
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge};
use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use serde_json::Value;

use super::call::{CallInput, CallOutput};
use super::coalesce::{Coalescer, Part};
use super::packed::Packed;
use crate::config::CacheConfig;
use crate::shared::cache::{Found, SharedAnswers};

/// A cached answer.
pub type Answer = Arc<CallOutput>;

/// What the readers of an operation's answers build from its rows — the canonical coupons of
/// a coupon list (`app::coupons`) — made when the cache opens an answer, from rows it then
/// stops holding: the rows move into the records (a coupon keeps its row), and the decoded
/// tier holds one form of an answer, not two.
pub type Records =
    fn(vendor: &Arc<str>, rows: Vec<Vec<Value>>) -> Vec<crate::canonical::coupon::Coupon>;

/// A decoded answer, with what its readers derive from it once.
#[derive(Debug)]
pub struct Cached {
    pub answer: Answer,
    /// Unique among the answers this process ever stored: the same id is the same answer.
    pub id: u64,
    /// The canonical coupons of the answer, built by their first reader
    /// (`app::coupons`), so that a hit never rebuilds them from rows.
    pub coupons: OnceLock<Arc<Vec<crate::canonical::coupon::Coupon>>>,
    /// Whether the store still serves it fresh, for answers the store keeps (`None`: a
    /// stale copy from the shared level, or an answer no cache keeps).
    pub standing: Option<Arc<Standing>>,
    /// [`Cached::weight`], reckoned when it was opened (before the rows were used up, if
    /// they were).
    weight: u64,
}

/// Whether a stored answer is still what a lookup of its key would serve fresh, told without
/// a lookup: readers that keep what they built from a hit (`app::coupons`'s whole answers)
/// check it on every reuse, and three moka lookups were a tenth of a repeated query's
/// instructions. A refresh (`Replaced`) or an eviction marks it gone through the store's
/// eviction listener; the end of the ttl and an invalidation (a new key space) are told by
/// the clock and the operation's generation.
#[derive(Debug)]
pub struct Standing {
    fresh_until: Instant,
    /// The key space's generation it was stored under.
    generation: u32,
    gone: AtomicBool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Cached {
    /// An answer no store keeps.
    pub fn new(answer: Answer) -> Arc<Cached> {
        Cached::with(answer, None)
    }

    fn with(answer: Answer, standing: Option<Arc<Standing>>) -> Arc<Cached> {
        // its readers will build their records from copies of the rows' text
        let weight = 2 * rows_bytes(&answer.rows) + FIXED_BYTES;
        Arc::new(Cached {
            answer,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            coupons: OnceLock::new(),
            standing,
            weight,
        })
    }

    /// An answer the cache opens (just stored, or unpacked) with id `id`: with `records`, its
    /// records are built here out of its rows, which it then no longer holds.
    fn opened(
        mut answer: CallOutput,
        id: u64,
        standing: Option<Arc<Standing>>,
        records: Option<&(Records, Arc<str>)>,
    ) -> Arc<Cached> {
        let rows = rows_bytes(&answer.rows);
        let (coupons, weight) = match records {
            Some((build, vendor)) => {
                let built = build(vendor, std::mem::take(&mut answer.rows));
                // the records hold the rows themselves, moved
                (OnceLock::from(Arc::new(built)), rows + FIXED_BYTES)
            }
            None => (OnceLock::new(), 2 * rows + FIXED_BYTES),
        };
        Arc::new(Cached {
            answer: Arc::new(answer),
            id,
            coupons,
            standing,
            weight,
        })
    }

    /// An estimate of the memory this answer takes once its readers have built their records:
    /// the rows' values (heap included) counted twice when the records are built from copies
    /// of them, once when they were built out of the rows, plus the fixed parts.
    /// `tests/cache_weight.rs` checks it against the heap really taken.
    pub fn weight(&self) -> u64 {
        self.weight
    }
}

/// The fixed parts of a decoded answer.
const FIXED_BYTES: u64 = (size_of::<Cached>() + size_of::<CallOutput>() + 64) as u64;

/// Bytes the rows take in memory, their values' heap included.
fn rows_bytes(rows: &[Vec<Value>]) -> u64 {
    rows.iter()
        .map(|row| 24 + row.iter().map(value_bytes).sum::<usize>())
        .sum::<usize>() as u64
}

/// Bytes a JSON value takes in memory, its heap included (serde_json without
/// `preserve_order`: objects are B-trees; ~40 bytes of node overhead per member).
fn value_bytes(v: &Value) -> usize {
    size_of::<Value>()
        + match v {
            Value::String(s) => s.capacity(),
            Value::Array(a) => a.iter().map(value_bytes).sum::<usize>(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| size_of::<String>() + k.capacity() + 40 + value_bytes(v))
                .sum::<usize>(),
            _ => 0,
        }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// This request asked the vendor.
    Miss,
    /// Served from the cache.
    Hit,
    /// Served the answer of an identical request that was asking the vendor at the same time.
    Coalesced,
    /// The vendor failed; the last good answer was served.
    Stale,
}

impl Lookup {
    /// The value of `sources[].cache` in the canonical API (`miss`, `hit` or `stale`: a
    /// coalesced wait is a hit to the caller).
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Miss => "miss",
            Lookup::Hit | Lookup::Coalesced => "hit",
            Lookup::Stale => "stale",
        }
    }

    /// The `result` label of the cache metrics and spans, which tell coalesced waits apart.
    pub fn label(self) -> &'static str {
        match self {
            Lookup::Coalesced => "coalesced",
            l => l.as_str(),
        }
    }
}

/// What the store spends on an entry besides the packed answer and its key: moka's node, timer
/// and deque entries, the slot. Measured with a counting allocator: ~1,090 bytes an entry in
/// all with 30,000 sandbox-shaped answers (`tests/cache_fit.rs`), weighed ~1,210 with this.
const ENTRY_OVERHEAD: u64 = 640;

/// What the decoded tier spends on an entry besides the `Cached` record and its rows (moka's
/// node and deque entries; no timer: the tier has no expiry of its own). `tests/cache_weight.rs`
/// checks both overheads, with every answer held in both tiers.
const OPEN_OVERHEAD: u64 = 512;

/// Keys in the store: the operation's key space (cache id << 32 | generation) and the key,
/// with their hash, taken once when the key is made. moka and the fills table hash a key on
/// every lookup and insert, and moka's map hashes every key it holds again each time it
/// rehashes (it does, steadily, while answers come and go): with the key's text hashed each
/// time, that was ~1 % of a 16-vendor request's CPU in perf.
#[derive(Debug, Clone)]
struct StoreKey {
    space: u64,
    text: Arc<str>,
    hash: u64,
}

impl StoreKey {
    fn new(space: u64, text: Arc<str>) -> StoreKey {
        // seeded at random per process, like the store's own hasher
        static SEED: std::sync::LazyLock<Hasher> = std::sync::LazyLock::new(Hasher::default);
        let hash = std::hash::BuildHasher::hash_one(&*SEED, (space, &*text));
        StoreKey { space, text, hash }
    }
}

impl PartialEq for StoreKey {
    fn eq(&self, other: &StoreKey) -> bool {
        self.hash == other.hash && self.space == other.space && self.text == other.text
    }
}

impl Eq for StoreKey {}

impl std::hash::Hash for StoreKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// An entry of the store.
#[derive(Clone)]
struct Slot {
    /// The answer's [`Cached::id`].
    id: u64,
    packed: Arc<Packed>,
    /// Until when it is served without asking the vendor, and whether it still is.
    standing: Arc<Standing>,
    /// How long the store keeps it: fresh, then stale-if-error.
    keep: Duration,
    weight: u32,
    owner: Arc<Owner>,
}

/// What the store keeps of each operation: its gauges and eviction counters.
struct Owner {
    entries: Gauge,
    bytes: Gauge,
    /// By [`crate::telemetry::EVICTION_CAUSES`]: expired, size, explicit.
    evictions: [Counter; 3],
}

impl Owner {
    fn new(vendor: &str, operation: &str) -> Owner {
        use crate::telemetry::{CACHE_BYTES, CACHE_ENTRIES, CACHE_EVICTIONS, EVICTION_CAUSES};
        let (v, o) = (vendor.to_owned(), operation.to_owned());
        Owner {
            entries: metrics::gauge!(CACHE_ENTRIES, "vendor" => v.clone(), "operation" => o.clone()),
            bytes: metrics::gauge!(CACHE_BYTES, "vendor" => v.clone(), "operation" => o.clone()),
            evictions: EVICTION_CAUSES.map(|cause| {
                metrics::counter!(CACHE_EVICTIONS, "vendor" => v.clone(), "operation" => o.clone(), "cause" => cause)
            }),
        }
    }

    fn added(&self, weight: u32) {
        self.entries.increment(1.0);
        self.bytes.increment(f64::from(weight));
    }

    fn removed(&self, weight: u32, cause: RemovalCause) {
        self.entries.decrement(1.0);
        self.bytes.decrement(f64::from(weight));
        let i = match cause {
            RemovalCause::Expired => Some(0),
            RemovalCause::Size => Some(1),
            RemovalCause::Explicit => Some(2),
            // a refresh took its place: not an eviction
            RemovalCause::Replaced => None,
        };
        if let Some(i) = i {
            self.evictions[i].increment(1);
        }
    }
}

struct KeepFor;

impl Expiry<StoreKey, Slot> for KeepFor {
    fn expire_after_create(&self, _: &StoreKey, slot: &Slot, _: Instant) -> Option<Duration> {
        Some(slot.keep)
    }

    fn expire_after_update(
        &self,
        _: &StoreKey,
        slot: &Slot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.keep)
    }
}

/// One part in this many of the budget is for merged pages (see [`AnswerStore::pages_budget`]),
/// and as much for the decoded tier.
const PAGES_SHARE: u64 = 8;

/// foldhash instead of SipHash for the store's keys (a vendor, an operation and the canonical
/// inputs, never a secret): every cached query looks up each of its vendors. Seeded at random
/// per process, so keys cannot be chosen to collide without knowing the seed.
type Hasher = foldhash::fast::RandomState;

/// The one store of every operation's cached answers, bounded by `server.cache_max_bytes`
/// together with the merged pages built from them.
pub struct AnswerStore {
    /// Every answer kept, packed.
    answers: Cache<StoreKey, Slot, Hasher>,
    /// Answers read lately, decoded, under the key of their packed entry (TinyLFU keeps those
    /// asked for most). A copy whose id is not its packed entry's is out of date.
    open: Cache<StoreKey, Arc<Cached>, Hasher>,
    /// Fills in progress, so that concurrent misses of one key make one vendor call; each
    /// brings the answer decoded and stored (its `standing` says until when it is fresh).
    fills: Coalescer<StoreKey, Arc<Cached>>,
    budget: u64,
    next_space: AtomicU32,
}

impl AnswerStore {
    pub fn new(max_bytes: u64) -> Arc<AnswerStore> {
        metrics::gauge!(crate::telemetry::CACHE_BUDGET).set(max_bytes as f64);
        let share = max_bytes / PAGES_SHARE;
        Arc::new(AnswerStore {
            answers: Cache::builder()
                .max_capacity(max_bytes - 2 * share)
                .weigher(|_: &StoreKey, slot: &Slot| slot.weight)
                .expire_after(KeepFor)
                .support_invalidation_closures()
                .eviction_listener(|_key, slot: Slot, cause| {
                    slot.standing.gone.store(true, Ordering::Release);
                    slot.owner.removed(slot.weight, cause);
                })
                .build_with_hasher(Hasher::default()),
            open: Cache::builder()
                .max_capacity(share)
                // the key's text is the packed entry's (one `Arc`), weighed there
                .weigher(|_: &StoreKey, cached: &Arc<Cached>| {
                    u32::try_from(cached.weight() + OPEN_OVERHEAD).unwrap_or(u32::MAX)
                })
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default()),
            fills: Coalescer::default(),
            budget: max_bytes,
            next_space: AtomicU32::new(1),
        })
    }

    /// The part of the budget left to the merged pages readers keep above the answers
    /// (`app::coupons`): an eighth.
    pub fn pages_budget(&self) -> u64 {
        self.budget / PAGES_SHARE
    }

    /// Runs moka's pending work (expiries, evictions and their metrics) every second, so that
    /// it is not left to whichever request comes next, and the gauges settle when traffic
    /// stops. Ends with the store; does nothing outside a tokio runtime.
    pub fn keep_house(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                store.answers.run_pending_tasks().await;
                store.open.run_pending_tasks().await;
            }
        });
    }

    /// Weighed size of everything held now, packed and decoded (after pending housekeeping).
    pub async fn weighed_size(&self) -> u64 {
        self.answers.run_pending_tasks().await;
        self.open.run_pending_tasks().await;
        self.answers.weighted_size() + self.open.weighted_size()
    }

    /// Answers held now, packed (after pending housekeeping).
    pub async fn answers_held(&self) -> u64 {
        self.answers.run_pending_tasks().await;
        self.answers.entry_count()
    }

    /// The answer of `slot`, decoded: from the decoded tier, or unpacked and put there. `None`
    /// if it does not decode (a bug, logged): the caller goes on as if nothing were stored.
    async fn open(
        &self,
        key: &StoreKey,
        slot: &Slot,
        records: Option<&(Records, Arc<str>)>,
    ) -> Option<Arc<Cached>> {
        if let Some(cached) = self.open.get(key).await
            && cached.id == slot.id
        {
            return Some(cached);
        }
        match slot.packed.unpack() {
            Ok(out) => {
                let standing = Some(Arc::clone(&slot.standing));
                let cached = Cached::opened(out, slot.id, standing, records);
                self.open.insert(key.clone(), Arc::clone(&cached)).await;
                Some(cached)
            }
            Err(e) => {
                tracing::error!(error = %e, "a cached answer was dropped");
                None
            }
        }
    }
}

/// One operation's view of the [`AnswerStore`]: its ttl settings, metrics and key space.
pub struct ResponseCache {
    store: Arc<AnswerStore>,
    /// The high half of this operation's keys in the store.
    space: u32,
    /// Bumped by [`invalidate_all`](Self::invalidate_all): the low half of the keys.
    generation: AtomicU32,
    ttl: Duration,
    empty_ttl: Duration,
    stale_if_error: Duration,
    owner: Arc<Owner>,
    shared: Option<SharedAnswers>,
    /// The records its answers' readers build, with the vendor they are built for.
    records: Option<(Records, Arc<str>)>,
}

impl ResponseCache {
    pub fn new(
        store: &Arc<AnswerStore>,
        cfg: &CacheConfig,
        vendor: &str,
        operation: &str,
    ) -> ResponseCache {
        ResponseCache {
            store: Arc::clone(store),
            space: store.next_space.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU32::new(0),
            ttl: Duration::from_millis(cfg.ttl_ms),
            empty_ttl: Duration::from_millis(cfg.empty_ttl_ms.unwrap_or(cfg.ttl_ms.min(5_000))),
            stale_if_error: Duration::from_millis(cfg.stale_if_error_ms),
            owner: Arc::new(Owner::new(vendor, operation)),
            shared: None,
            records: None,
        }
    }

    /// This cache, building `records` of `vendor` from each answer it opens (see [`Records`]).
    pub fn with_records(self, records: Records, vendor: &str) -> ResponseCache {
        ResponseCache {
            records: Some((records, vendor.into())),
            ..self
        }
    }

    /// A cache over `shared`, the level the replicas share.
    pub fn with_shared(
        store: &Arc<AnswerStore>,
        cfg: &CacheConfig,
        vendor: &str,
        operation: &str,
        shared: SharedAnswers,
    ) -> ResponseCache {
        ResponseCache {
            shared: Some(shared),
            ..ResponseCache::new(store, cfg, vendor, operation)
        }
    }

    /// The key of a call: vendor, operation and the canonical inputs only.
    pub fn key(vendor: &str, operation: &str, input: &CallInput) -> Arc<str> {
        let member = input.member_id.as_deref().unwrap_or("");
        let openid = input.openid.as_deref().unwrap_or("");
        let mut k =
            String::with_capacity(vendor.len() + operation.len() + member.len() + openid.len() + 8);
        // \u{1f} (unit separator) cannot appear in a JSON-escaped string or an id we send
        for part in [vendor, operation, member, openid] {
            k.push_str(part);
            k.push('\u{1f}');
        }
        if input.inputs.is_empty() {
            k.push_str("[]");
        } else {
            k.push_str(&serde_json::to_string(&input.inputs).unwrap_or_default());
        }
        Arc::from(k)
    }

    /// Whether a lookup now would be a fresh hit on the stored answer `standing` describes
    /// (`now` read once by the caller for all its answers). A refresh, an invalidation, an
    /// eviction or the end of the ttl all say no.
    pub fn serves(&self, standing: &Standing, now: Instant) -> bool {
        now < standing.fresh_until
            && !standing.gone.load(Ordering::Acquire)
            && standing.generation == self.generation.load(Ordering::Acquire)
    }

    fn store_key(&self, key: Arc<str>) -> StoreKey {
        let generation = self.generation.load(Ordering::Acquire);
        StoreKey::new((u64::from(self.space) << 32) | u64::from(generation), key)
    }

    /// `out` decoded for the caller who fetched it, and packed in the slot the store keeps
    /// under `key`, fresh for `left` (what the shared level said it has left) or the
    /// operation's ttl.
    fn stored(
        &self,
        key: &StoreKey,
        out: CallOutput,
        left: Option<Duration>,
    ) -> (Arc<Cached>, Slot) {
        let fresh = left.unwrap_or(if out.rows.is_empty() {
            self.empty_ttl
        } else {
            self.ttl
        });
        let standing = Arc::new(Standing {
            fresh_until: Instant::now() + fresh,
            // the low half of the key space is the generation
            generation: key.space as u32,
            gone: AtomicBool::new(false),
        });
        let packed = Packed::of(&out);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let cached = Cached::opened(out, id, Some(Arc::clone(&standing)), self.records.as_ref());
        let slot = Slot {
            weight: u32::try_from(packed.weight() + ENTRY_OVERHEAD + 2 * key.text.len() as u64)
                .unwrap_or(u32::MAX),
            id: cached.id,
            packed: Arc::new(packed),
            standing,
            keep: fresh + self.stale_if_error,
            owner: Arc::clone(&self.owner),
        };
        (cached, slot)
    }

    /// Stores `out` under `key`, packed only. The decoded tier takes an answer when it is
    /// first read from the store (`AnswerStore::open`), not here: most answers a miss brings
    /// are asked for once, and keeping each decoded until TinyLFU evicted it churned the heap
    /// (its records' hundreds of small allocations freed cold, long after they were made):
    /// 13–20 % of the CPU of a miss in `bench/run`, for ~1 % of its instructions.
    async fn keep(&self, key: StoreKey, out: CallOutput, left: Option<Duration>) -> Arc<Cached> {
        let (cached, slot) = self.stored(&key, out, left);
        self.owner.added(slot.weight);
        self.store.answers.insert(key, slot).await;
        cached
    }

    /// Serves `key` from the cache, or runs `fetch` once for all concurrent askers. With
    /// `bypass` (the caller sent `Cache-Control: no-cache`) the vendor is asked regardless
    /// and the cache refreshed. On failure the last good answer is returned, if any.
    pub async fn get<F, E>(
        &self,
        key: Arc<str>,
        bypass: bool,
        fetch: F,
    ) -> (Result<Answer, Arc<E>>, Lookup, Option<Answer>)
    where
        F: std::future::Future<Output = Result<CallOutput, E>>,
        E: Send + Sync + 'static,
    {
        let (r, lookup, stale) = self.get_cached(key, bypass, fetch).await;
        (
            r.map(|c| c.answer.clone()),
            lookup,
            stale.map(|c| c.answer.clone()),
        )
    }

    /// [`get`](Self::get), answering with the cache's own records (an id and what readers
    /// derived from the answer).
    pub async fn get_cached<F, E>(
        &self,
        key: Arc<str>,
        bypass: bool,
        fetch: F,
    ) -> (Result<Arc<Cached>, Arc<E>>, Lookup, Option<Arc<Cached>>)
    where
        F: std::future::Future<Output = Result<CallOutput, E>>,
        E: Send + Sync + 'static,
    {
        let skey = self.store_key(key.clone());
        let held = if bypass {
            None
        } else {
            self.store.answers.get(&skey).await
        };
        if let Some(slot) = &held
            && slot.standing.fresh_until > Instant::now()
            && let Some(cached) = self.store.open(&skey, slot, self.records.as_ref()).await
        {
            return (Ok(cached), Lookup::Hit, None);
        }
        // the shared level's copy past its ttl, kept in case the vendor fails
        let shared_stale: Mutex<Option<Arc<Cached>>> = Mutex::new(None);
        let from_shared = AtomicBool::new(false);
        let result = if bypass {
            match fetch.await {
                Ok(out) => {
                    if let Some(shared) = &self.shared {
                        shared.put(&key, &out);
                    }
                    let cached = Box::pin(self.keep(skey.clone(), out, None)).await;
                    Ok((cached, Lookup::Miss))
                }
                Err(e) => Err(Arc::new(e)),
            }
        } else {
            // boxed, as what it awaits only for a moment (storing, the shared level): every
            // vendor of every request in progress holds this lookup while its call runs (inline,
            // under moka's `or_try_insert_with`, a lookup was ~6.2 KB)
            let fill = Box::pin(async {
                if let Some(shared) = &self.shared {
                    match Box::pin(shared.get(&key)).await {
                        Some(Found::Fresh { answer, left }) => {
                            from_shared.store(true, Ordering::Relaxed);
                            return Ok(Box::pin(self.keep(skey.clone(), answer, Some(left))).await);
                        }
                        Some(Found::Stale(answer)) => {
                            *shared_stale.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(Cached::new(Arc::new(answer)));
                        }
                        None => {}
                    }
                }
                // coalesce with the other replicas: one asks the vendor, the others wait for it
                let filling = match &self.shared {
                    Some(shared) if !Box::pin(shared.begin_fill(&key)).await => {
                        if let Some(Found::Fresh { answer, left }) =
                            Box::pin(shared.wait_fill(&key)).await
                        {
                            from_shared.store(true, Ordering::Relaxed);
                            return Ok(Box::pin(self.keep(skey.clone(), answer, Some(left))).await);
                        }
                        false
                    }
                    Some(_) => true,
                    None => false,
                };
                let out = fetch.await;
                if let Some(shared) = &self.shared {
                    match (&out, filling) {
                        (_, true) => Box::pin(shared.finish_fill(&key, out.as_ref().ok())).await,
                        (Ok(out), false) => shared.put(&key, out),
                        (Err(_), false) => {}
                    }
                }
                // in the store before the fill ends: whoever comes next finds it there
                Ok(Box::pin(self.keep(skey.clone(), out?, None)).await)
            });
            let (filled, part) = self.store.fills.run(&skey, fill).await;
            filled.map(|cached| {
                let lookup = match part {
                    Part::Waited => Lookup::Coalesced,
                    Part::Ran if from_shared.load(Ordering::Relaxed) => Lookup::Hit,
                    Part::Ran => Lookup::Miss,
                };
                (cached, lookup)
            })
        };
        match result {
            Ok((answer, lookup)) => (Ok(answer), lookup, None),
            Err(e) => {
                // only with stale-if-error: a failed `no-cache` request is not served the
                // fresh entry it asked to bypass
                let last = match held {
                    _ if self.stale_if_error.is_zero() => None,
                    held @ Some(_) => held,
                    None => self.store.answers.get(&skey).await,
                };
                let stale = match last {
                    Some(slot) => self.store.open(&skey, &slot, self.records.as_ref()).await,
                    None => None,
                };
                let stale =
                    stale.or_else(|| shared_stale.into_inner().unwrap_or_else(|e| e.into_inner()));
                let lookup = if stale.is_some() {
                    Lookup::Stale
                } else {
                    Lookup::Miss
                };
                (Err(e), lookup, stale)
            }
        }
    }

    /// Drops every answer of this operation (a write changed the vendor's lists): later
    /// lookups use a new key space, and the old entries are removed from the store.
    pub fn invalidate_all(&self) {
        if let Some(shared) = &self.shared {
            shared.invalidate_all();
        }
        let old = self.generation.fetch_add(1, Ordering::AcqRel);
        let space = (u64::from(self.space) << 32) | u64::from(old);
        // support_invalidation_closures is set on both tiers, so this cannot fail
        let old = move |k: &StoreKey| k.space >> 32 == space >> 32 && k.space <= space;
        let _ = self.store.answers.invalidate_entries_if(move |k, _| old(k));
        let _ = self.store.open.invalidate_entries_if(move |k, _| old(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // moka measures time with the real clock, not tokio's: these tests let real time pass,
    // and only ever wait for an expiry (a lower bound), never race one.

    fn cfg(ttl_ms: u64, stale_if_error_ms: u64) -> CacheConfig {
        CacheConfig {
            ttl_ms,
            empty_ttl_ms: Some(ttl_ms / 2),
            stale_if_error_ms,
            max_bytes: None,
        }
    }

    /// An operation's cache on a store of its own.
    fn alone(cfg: &CacheConfig) -> ResponseCache {
        ResponseCache::new(&AnswerStore::new(1 << 20), cfg, "v", "op")
    }

    async fn failing(cache: &ResponseCache, k: &Arc<str>) -> (Lookup, Option<Answer>) {
        let (r, l, stale) = cache
            .get(k.clone(), false, async {
                Err::<CallOutput, _>("down".to_owned())
            })
            .await;
        assert_eq!(*r.unwrap_err(), "down");
        (l, stale)
    }

    fn out(rows: usize) -> CallOutput {
        CallOutput {
            rows: (0..rows).map(|i| vec![json!(i)]).collect(),
            bytes: 100,
            ..CallOutput::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_identical_misses_make_one_call() {
        let cache = Arc::new(alone(&cfg(60_000, 0)));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (cache, calls) = (cache.clone(), calls.clone());
            set.spawn(async move {
                let (r, lookup, _) = cache
                    .get(Arc::from("k"), false, async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, String>(out(2))
                    })
                    .await;
                (r.unwrap().rows.len(), lookup)
            });
        }
        let (mut misses, mut coalesced) = (0, 0);
        while let Some(r) = set.join_next().await {
            let (rows, lookup) = r.unwrap();
            assert_eq!(rows, 2);
            misses += usize::from(lookup == Lookup::Miss);
            coalesced += usize::from(lookup == Lookup::Coalesced);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            misses, 1,
            "one request asked the vendor, 99 were served its answer"
        );
        assert!(
            coalesced > 0,
            "the requests that waited for the call in flight are told apart from hits"
        );
    }

    #[tokio::test]
    async fn hits_share_one_decoded_answer_until_a_refresh_replaces_it() {
        let cache = alone(&cfg(60_000, 0));
        let k: Arc<str> = Arc::from("k");
        let get = |bypass: bool, rows: usize| {
            cache.get_cached(k.clone(), bypass, async move { Ok::<_, String>(out(rows)) })
        };
        let (first, _, _) = get(false, 3).await;
        let (hit, lookup, _) = get(false, 9).await;
        let (again, _, _) = get(false, 9).await;
        let (first, hit, again) = (first.unwrap(), hit.unwrap(), again.unwrap());
        assert_eq!(lookup, Lookup::Hit);
        // the miss did not keep its decoded copy: the first hit unpacked the same answer
        assert!(!Arc::ptr_eq(&first, &hit));
        assert_eq!((hit.id, hit.answer.rows.len()), (first.id, 3));
        // ... and the decoded tier kept that, so what readers built from it (the canonical
        // coupons) is built once for all later hits
        assert!(Arc::ptr_eq(&hit, &again), "a hit decoded the answer again");
        // a refresh replaces the packed answer, and so the decoded copy
        let (fresh, _, _) = get(true, 5).await;
        let (hit, _, _) = get(false, 9).await;
        let (again, _, _) = get(false, 9).await;
        let (fresh, hit, again) = (fresh.unwrap(), hit.unwrap(), again.unwrap());
        assert!(Arc::ptr_eq(&hit, &again));
        assert_eq!((hit.answer.rows.len(), hit.id), (5, fresh.id));
        assert_ne!(hit.id, first.id);
    }

    #[tokio::test]
    async fn a_stored_answer_stands_until_refreshed_invalidated_evicted_or_past_its_ttl() {
        let cache = alone(&cfg(60_000, 0));
        let get = |key: &str, bypass: bool| {
            let k: Arc<str> = Arc::from(key);
            let cache = &cache;
            async move {
                let (r, _, _) = cache
                    .get_cached(k, bypass, async { Ok::<_, String>(out(3)) })
                    .await;
                r.unwrap().standing.clone().expect("a stored answer")
            }
        };
        let now = Instant::now;
        let first = get("a", false).await;
        let hit = get("a", false).await;
        assert!(
            Arc::ptr_eq(&first, &hit),
            "a hit stands for the answer stored"
        );
        assert!(cache.serves(&first, now()));
        // a refresh replaces it
        let refreshed = get("a", true).await;
        assert!(!cache.serves(&first, now()));
        assert!(cache.serves(&refreshed, now()));
        // an invalidation ends it at once, before the store removes it
        cache.invalidate_all();
        assert!(!cache.serves(&refreshed, now()));
        let after = get("a", false).await;
        assert!(cache.serves(&after, now()));
        // the end of its ttl
        assert!(!cache.serves(&after, after.fresh_until));
        // an eviction: a store too small for a second answer
        let store = AnswerStore::new(3 * (ENTRY_OVERHEAD + 400));
        let small = ResponseCache::new(&store, &cfg(60_000, 0), "v", "op");
        let mut standings = Vec::new();
        for k in ["a", "b", "c", "d", "e", "f"] {
            let (r, _, _) = small
                .get_cached(Arc::from(k), false, async { Ok::<_, String>(out(3)) })
                .await;
            standings.push((k, r.unwrap().standing.clone().unwrap()));
        }
        store.answers.run_pending_tasks().await;
        let mut evicted = 0;
        for (k, standing) in &standings {
            let held = store.answers.contains_key(&small.store_key(Arc::from(*k)));
            assert_eq!(small.serves(standing, now()), held, "{k}: served iff held");
            evicted += usize::from(!held);
        }
        assert!(evicted > 0, "the store was meant to evict some answers");
        // an answer no store keeps has no standing
        assert!(Cached::new(Arc::new(out(1))).standing.is_none());
    }

    /// A lookup's future lives as long as its vendor's call, one per vendor of every request
    /// in progress: kept small by boxing what it awaits only for a moment (~2 KB with a small
    /// fetch; it was ~6 KB when the fill and the storing were inline).
    #[test]
    fn a_lookup_in_progress_is_small() {
        let cache = alone(&cfg(60_000, 60_000));
        let lookup = cache.get_cached(Arc::from("k"), false, async { Ok::<_, String>(out(3)) });
        let size = std::mem::size_of_val(&lookup);
        assert!(size <= 3 * 1024, "a cache lookup's future is {size} bytes");
    }

    #[tokio::test]
    async fn within_ttl_the_vendor_is_not_asked() {
        let cache = alone(&cfg(60_000, 60_000));
        let k: Arc<str> = Arc::from("k");
        let (r, l, _) = cache
            .get(k.clone(), false, async { Ok::<_, String>(out(3)) })
            .await;
        assert!(r.is_ok());
        assert_eq!(l, Lookup::Miss);
        let (r, l, _) = cache
            .get(k.clone(), false, async {
                Err::<CallOutput, _>("down".to_owned())
            })
            .await;
        assert_eq!((r.unwrap().rows.len(), l), (3, Lookup::Hit));
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_fall_back_to_the_last_good_answer() {
        let cache = alone(&cfg(50, 60_000));
        let k: Arc<str> = Arc::from("k");
        let (r, l, _) = cache
            .get(k.clone(), false, async { Ok::<_, String>(out(3)) })
            .await;
        assert!(r.is_ok());
        assert_eq!(l, Lookup::Miss);
        tokio::time::sleep(Duration::from_millis(200)).await; // past ttl, far within the window
        let (l, stale) = failing(&cache, &k).await;
        assert_eq!(l, Lookup::Stale);
        assert_eq!(stale.unwrap().rows.len(), 3);
        // the error was not cached: the next call asks again
        let (r, l, _) = cache.get(k, false, async { Ok::<_, String>(out(1)) }).await;
        assert_eq!((r.unwrap().rows.len(), l), (1, Lookup::Miss));
    }

    #[tokio::test]
    async fn past_the_stale_window_the_last_good_answer_is_gone() {
        let cache = alone(&cfg(50, 100));
        let k: Arc<str> = Arc::from("k");
        let (r, _, _) = cache
            .get(k.clone(), false, async { Ok::<_, String>(out(3)) })
            .await;
        assert!(r.is_ok());
        tokio::time::sleep(Duration::from_millis(500)).await; // past ttl + stale_if_error (150)
        let (l, stale) = failing(&cache, &k).await;
        assert_eq!(l, Lookup::Miss, "nothing stale to serve");
        assert!(stale.is_none());
    }

    #[tokio::test]
    async fn empty_answers_expire_sooner_and_bypass_refreshes() {
        let cache = alone(&CacheConfig {
            empty_ttl_ms: Some(100),
            ..cfg(600_000, 0)
        });
        let k: Arc<str> = Arc::from("k");
        let (r, _, _) = cache
            .get(k.clone(), false, async { Ok::<_, String>(out(0)) })
            .await;
        assert!(r.is_ok());
        tokio::time::sleep(Duration::from_millis(300)).await; // past empty_ttl, far within ttl
        let (_, l, _) = cache
            .get(k.clone(), false, async { Ok::<_, String>(out(2)) })
            .await;
        assert_eq!(l, Lookup::Miss, "the empty answer had expired");
        let (r, l, _) = cache
            .get(k.clone(), true, async { Ok::<_, String>(out(5)) })
            .await;
        assert_eq!(
            (r.unwrap().rows.len(), l),
            (5, Lookup::Miss),
            "no-cache asks the vendor"
        );
        let (r, l, _) = cache.get(k, false, async { Ok::<_, String>(out(9)) }).await;
        assert_eq!(
            (r.unwrap().rows.len(), l),
            (5, Lookup::Hit),
            "and refreshed the cache"
        );
    }

    fn rows_of(n: usize, text_len: usize) -> CallOutput {
        CallOutput {
            rows: (0..n)
                .map(|i| vec![json!(i), json!("x".repeat(text_len))])
                .collect(),
            // what the vendor sent: deliberately unrelated to what is kept
            bytes: 10,
            ..CallOutput::default()
        }
    }

    #[test]
    fn answers_are_weighed_by_what_they_hold_not_by_the_vendor_s_byte_count() {
        let small = Cached::new(Arc::new(rows_of(10, 10))).weight();
        let large = Cached::new(Arc::new(rows_of(10, 1_000))).weight();
        // ten rows of 1,000-byte strings, held twice (rows and the records built from them)
        assert!(large >= small + 2 * 10 * 990, "{small} → {large}");
        let more = Cached::new(Arc::new(rows_of(100, 10))).weight();
        assert!(
            more > 9 * small,
            "weight grows with the rows held: {small} → {more}"
        );
    }

    /// Rows of hex text that compression cannot shrink much (it still halves hex).
    fn varied_rows(n: usize, text_len: usize, seed: u64) -> CallOutput {
        let mut x = seed | 1;
        let mut text = || {
            (0..text_len)
                .map(|_| {
                    // xorshift: reproducible, and nothing repeats within an answer
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b"0123456789abcdef"[(x & 15) as usize])
                })
                .collect::<String>()
        };
        CallOutput {
            rows: (0..n).map(|i| vec![json!(i), json!(text())]).collect(),
            ..CallOutput::default()
        }
    }

    #[tokio::test]
    async fn all_operations_share_one_budget() {
        let budget = 256 * 1024;
        let store = AnswerStore::new(budget);
        let a = ResponseCache::new(&store, &cfg(600_000, 600_000), "a", "list");
        let b = ResponseCache::new(&store, &cfg(600_000, 600_000), "b", "list");
        let each = Packed::of(&varied_rows(20, 500, 1)).weight() + ENTRY_OVERHEAD;
        // twice what the budget holds, spread over two operations
        let n = (2 * budget / each) as usize;
        for i in 0..n {
            let cache = if i % 2 == 0 { &a } else { &b };
            let (r, _, _) = cache
                .get(Arc::from(format!("k{i}")), false, async {
                    Ok::<_, String>(varied_rows(20, 500, i as u64))
                })
                .await;
            assert!(r.is_ok());
        }
        let held = store.weighed_size().await;
        assert!(
            held <= budget,
            "{held} bytes held over a budget of {budget}"
        );
        assert!(held > budget / 4, "the store is used: {held} of {budget}");
    }

    #[tokio::test]
    async fn a_fill_that_began_before_an_invalidation_does_not_bring_the_old_answer_back() {
        let cache = Arc::new(alone(&cfg(600_000, 0)));
        let k: Arc<str> = Arc::from("list");
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (started, is_started) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let (cache, k) = (cache.clone(), k.clone());
            tokio::spawn(async move {
                cache
                    .get(k, false, async move {
                        let _ = started.send(());
                        let _ = wait.await;
                        Ok::<_, String>(out(1))
                    })
                    .await
            })
        };
        is_started.await.unwrap();
        cache.invalidate_all(); // a write happened while the old list was being fetched
        release.send(()).unwrap();
        let (r, _, _) = slow.await.unwrap();
        assert_eq!(r.unwrap().rows.len(), 1);
        let (r, l, _) = cache.get(k, false, async { Ok::<_, String>(out(2)) }).await;
        assert_eq!(
            (r.unwrap().rows.len(), l),
            (2, Lookup::Miss),
            "the list fetched before the write was not kept"
        );
    }

    #[tokio::test]
    async fn an_invalidation_leaves_the_other_operations_alone() {
        let store = AnswerStore::new(1 << 20);
        let a = ResponseCache::new(&store, &cfg(600_000, 0), "v", "a");
        let b = ResponseCache::new(&store, &cfg(600_000, 0), "v", "b");
        let k: Arc<str> = Arc::from("same key");
        for cache in [&a, &b] {
            let (r, _, _) = cache
                .get(k.clone(), false, async { Ok::<_, String>(out(1)) })
                .await;
            assert!(r.is_ok());
        }
        a.invalidate_all();
        let (_, la, _) = a
            .get(k.clone(), false, async { Ok::<_, String>(out(1)) })
            .await;
        let (_, lb, _) = b.get(k, false, async { Ok::<_, String>(out(1)) }).await;
        assert_eq!((la, lb), (Lookup::Miss, Lookup::Hit));
    }

    #[test]
    fn store_keys_are_one_key_by_their_space_and_text_and_hash_alike() {
        use std::hash::BuildHasher as _;
        let k = |space: u64, text: &str| StoreKey::new(space, Arc::from(text));
        let hasher = Hasher::default();
        let a = k(1 << 32 | 1, "op\u{1f}list_coupons\u{1f}m1");
        let same = k(1 << 32 | 1, "op\u{1f}list_coupons\u{1f}m1");
        assert_eq!(a, same);
        assert_eq!(hasher.hash_one(&a), hasher.hash_one(&same));
        // another generation, another operation, another member: another key
        for other in [
            k(1 << 32 | 2, "op\u{1f}list_coupons\u{1f}m1"),
            k(2 << 32 | 1, "op\u{1f}list_coupons\u{1f}m1"),
            k(1 << 32 | 1, "op\u{1f}list_coupons\u{1f}m2"),
        ] {
            assert_ne!(a, other);
            assert_ne!(a.hash, other.hash, "{other:?}");
        }
    }

    #[test]
    fn keys_hold_only_canonical_inputs() {
        let input = CallInput {
            member_id: Some("K1".into()),
            openid: None,
            inputs: vec![Some(json!("p1"))],
        };
        let k = ResponseCache::key("hkl", "list_coupons", &input);
        assert_eq!(&*k, "hkl\u{1f}list_coupons\u{1f}K1\u{1f}\u{1f}[\"p1\"]");
    }

    #[test]
    fn nested_values_are_weighed_with_their_members_names_and_contents() {
        let grown = |small: &Value, large: &Value| value_bytes(large) - value_bytes(small);
        let long = "x".repeat(100);
        // lists count what they hold
        assert_eq!(grown(&json!(["x"]), &json!([long.clone()])), 99);
        // a member counts its name and its value (plus a fixed node overhead)
        assert_eq!(grown(&json!({"a": 1}), &json!({ long.clone(): 1 })), 99);
        assert_eq!(grown(&json!({"a": "x"}), &json!({"a": long})), 99);
        assert!(
            value_bytes(&json!({"a": 1})) >= 2 * size_of::<Value>() + size_of::<String>() + 1 + 40
        );
    }

    #[test]
    fn an_empty_answer_weighs_at_least_its_records_and_their_arcs() {
        let empty = Cached::new(Arc::new(CallOutput::default())).weight();
        // `Cached` and `CallOutput`, each behind an `Arc` (two counters of 8 bytes)
        let records = size_of::<Cached>() + size_of::<CallOutput>() + 2 * 16;
        assert!(empty >= records as u64, "{empty} < {records}");
    }

    #[test]
    fn lookups_are_named_for_the_api_and_told_apart_for_metrics() {
        let all = [Lookup::Miss, Lookup::Hit, Lookup::Coalesced, Lookup::Stale];
        assert_eq!(all.map(Lookup::as_str), ["miss", "hit", "hit", "stale"]);
        assert_eq!(
            all.map(Lookup::label),
            ["miss", "hit", "coalesced", "stale"]
        );
    }

    async fn weighed_alone(key: String) -> u64 {
        let store = AnswerStore::new(1 << 20);
        let cache = ResponseCache::new(&store, &cfg(600_000, 0), "v", "op");
        let (r, _, _) = cache
            .get(Arc::from(key), false, async { Ok::<_, String>(out(1)) })
            .await;
        assert!(r.is_ok());
        store.weighed_size().await
    }

    #[tokio::test]
    async fn an_entry_counts_its_key_twice() {
        let short = weighed_alone("k".to_owned()).await;
        let long = weighed_alone(format!("k{}", "x".repeat(100))).await;
        assert_eq!(long - short, 200);
    }

    #[tokio::test]
    async fn an_invalidation_removes_its_own_old_answers_from_the_store_and_no_other() {
        let store = AnswerStore::new(1 << 20);
        let a = ResponseCache::new(&store, &cfg(600_000, 0), "v", "a");
        let b = ResponseCache::new(&store, &cfg(600_000, 0), "v", "b");
        let k: Arc<str> = Arc::from("same key");
        let (r, _, _) = a
            .get(k.clone(), false, async { Ok::<_, String>(out(1)) })
            .await;
        assert!(r.is_ok());
        let only_a = store.weighed_size().await;
        assert!(only_a > 0);
        // the same key in another operation is another answer
        let (r, l, _) = b
            .get(k.clone(), false, async { Ok::<_, String>(out(2)) })
            .await;
        assert_eq!((r.unwrap().rows.len(), l), (2, Lookup::Miss));
        assert!(store.weighed_size().await > only_a);
        for _ in 0..2 {
            b.invalidate_all();
            assert_eq!(
                store.weighed_size().await,
                only_a,
                "b's answer is gone from the store, a's is still there"
            );
            let (_, l, _) = b
                .get(k.clone(), false, async { Ok::<_, String>(out(2)) })
                .await;
            assert_eq!(l, Lookup::Miss);
        }
        let (_, l, _) = a
            .get(k.clone(), false, async { Ok::<_, String>(out(1)) })
            .await;
        assert_eq!(l, Lookup::Hit);
        b.invalidate_all();
        a.invalidate_all();
        assert_eq!(store.weighed_size().await, 0);
    }

    #[tokio::test]
    async fn without_stale_if_error_a_failed_no_cache_request_gets_no_stale_answer() {
        let cache = alone(&cfg(600_000, 0));
        let k: Arc<str> = Arc::from("k");
        let (r, _, _) = cache
            .get(k.clone(), false, async { Ok::<_, String>(out(3)) })
            .await;
        assert!(r.is_ok());
        let (r, l, stale) = cache
            .get(k, true, async { Err::<CallOutput, _>("down".to_owned()) })
            .await;
        assert!(r.is_err());
        assert_eq!(l, Lookup::Miss);
        assert!(stale.is_none(), "the fresh answer it asked to bypass");
    }

    #[test]
    fn entries_are_kept_fresh_then_stale() {
        let cache = alone(&cfg(60_000, 30_000));
        let key = cache.store_key(Arc::from("k"));
        let (_, slot) = cache.stored(&key, out(1), None);
        let keep = Some(Duration::from_secs(90));
        assert_eq!(
            KeepFor.expire_after_create(&key, &slot, Instant::now()),
            keep
        );
        // a refresh (no-cache) is kept as long as a new answer, not for ever
        let left = Some(Duration::from_secs(1));
        assert_eq!(
            KeepFor.expire_after_update(&key, &slot, Instant::now(), left),
            keep
        );
    }

    #[test]
    fn merged_pages_get_an_eighth_of_the_budget() {
        assert_eq!(AnswerStore::new(8 << 20).pages_budget(), 1 << 20);
    }

    #[tokio::test]
    async fn housekeeping_evicts_expired_answers_without_waiting_for_traffic() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let store = AnswerStore::new(1 << 20);
        // the operation's gauges and counters go to this test's own recorder
        let cache = metrics::with_local_recorder(&recorder, || {
            ResponseCache::new(&store, &cfg(50, 0), "v", "op")
        });
        store.keep_house();
        let (r, _, _) = cache
            .get(Arc::from("k"), false, async { Ok::<_, String>(out(1)) })
            .await;
        assert!(r.is_ok());
        // nothing asks the cache from here on: only the housekeeping sees the answer expire
        let expired = |text: &str| {
            text.lines().any(|l| {
                l.starts_with("cgw_cache_evictions_total")
                    && l.contains("cause=\"expired\"")
                    && l.ends_with(" 1")
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !expired(&metrics.render()) {
            assert!(Instant::now() < deadline, "{}", metrics.render());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            metrics
                .render()
                .lines()
                .any(|l| l.starts_with("cgw_cache_entries") && l.ends_with(" 0"))
        );
    }
}
