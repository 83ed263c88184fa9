//! The response cache of read operations (moka), with request coalescing and
//! stale-if-error.
//!
//! Two moka caches share the same `Arc`ed answers. `fresh` holds an answer for its ttl (or
//! the shorter `empty_ttl` for "nothing found") and coalesces concurrent misses into one
//! vendor call; `last_good` keeps it for ttl + stale_if_error, so that when the vendor fails
//! the last good answer can still be served and reported as `stale`. Errors are never cached.
//! Keys are the canonical inputs that reach the vendor, never anything signed or secret.
//!
//! With several replicas a second level sits under `fresh` (`crate::shared::cache`): a miss
//! asks it before the vendor and keeps what it finds only for the ttl that answer has left; an
//! answer from the vendor is stored there for the other replicas; and when the vendor fails,
//! the shared level's stale copy is served if this replica has none.
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::call::{CallInput, CallOutput};
use crate::config::CacheConfig;
use crate::shared::cache::{Found, SharedAnswers};

/// A cached answer.
pub type Answer = Arc<CallOutput>;

/// An answer as the cache keeps it, with what its readers derive from it once.
#[derive(Debug)]
pub struct Cached {
    pub answer: Answer,
    /// Unique among the answers this process ever stored: the same id is the same answer.
    pub id: u64,
    /// The canonical coupons of the answer, built by their first reader
    /// (`app::coupons`), so that a hit never rebuilds them from rows.
    pub coupons: OnceLock<Arc<Vec<crate::canonical::coupon::Coupon>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Cached {
    pub fn new(answer: Answer) -> Arc<Cached> {
        Arc::new(Cached {
            answer,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            coupons: OnceLock::new(),
        })
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// This request asked the vendor.
    Miss,
    /// Served from the cache (including a concurrent identical request's answer).
    Hit,
    /// The vendor failed; the last good answer was served.
    Stale,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Miss => "miss",
            Lookup::Hit => "hit",
            Lookup::Stale => "stale",
        }
    }
}

pub struct ResponseCache {
    fresh: Cache<Arc<str>, Entry>,
    last_good: Option<Cache<Arc<str>, Arc<Cached>>>,
    shared: Option<SharedAnswers>,
}

/// An answer in `fresh`, with the ttl it has left when it came from the shared level.
#[derive(Clone)]
struct Entry {
    cached: Arc<Cached>,
    left: Option<Duration>,
}

/// Per-entry lifetime: "nothing found" lives shorter than a real answer.
struct FreshExpiry {
    ttl: Duration,
    empty_ttl: Duration,
}

impl Expiry<Arc<str>, Entry> for FreshExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Entry,
        _now: Instant,
    ) -> Option<Duration> {
        Some(
            value
                .left
                .unwrap_or(if value.cached.answer.rows.is_empty() {
                    self.empty_ttl
                } else {
                    self.ttl
                }),
        )
    }
}

fn weigh_entry(key: &Arc<str>, value: &Entry) -> u32 {
    weigh(key, &value.cached)
}

fn weigh(key: &Arc<str>, value: &Arc<Cached>) -> u32 {
    // the vendor's answer size is a fair measure of what its rows hold in memory
    u32::try_from(key.len() + value.answer.bytes + 64).unwrap_or(u32::MAX)
}

impl ResponseCache {
    pub fn new(cfg: &CacheConfig) -> ResponseCache {
        let ttl = Duration::from_millis(cfg.ttl_ms);
        let empty_ttl = Duration::from_millis(cfg.empty_ttl_ms.unwrap_or(cfg.ttl_ms.min(5_000)));
        let fresh = Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(weigh_entry)
            .expire_after(FreshExpiry { ttl, empty_ttl })
            .build();
        let last_good = (cfg.stale_if_error_ms > 0).then(|| {
            Cache::builder()
                .max_capacity(cfg.max_bytes)
                .weigher(weigh)
                .time_to_live(ttl + Duration::from_millis(cfg.stale_if_error_ms))
                .build()
        });
        ResponseCache {
            fresh,
            last_good,
            shared: None,
        }
    }

    /// A cache over `shared`, the level the replicas share.
    pub fn with_shared(cfg: &CacheConfig, shared: SharedAnswers) -> ResponseCache {
        ResponseCache {
            shared: Some(shared),
            ..ResponseCache::new(cfg)
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
        // the shared level's copy past its ttl, kept in case the vendor fails
        let shared_stale: Mutex<Option<Arc<Cached>>> = Mutex::new(None);
        let from_shared = AtomicBool::new(false);
        let result = if bypass {
            match fetch.await {
                Ok(out) => {
                    if let Some(shared) = &self.shared {
                        shared.put(&key, &out);
                    }
                    let answer = Cached::new(Arc::new(out));
                    let entry = Entry {
                        cached: answer.clone(),
                        left: None,
                    };
                    self.fresh.insert(key.clone(), entry).await;
                    Ok((answer, Lookup::Miss))
                }
                Err(e) => Err(Arc::new(e)),
            }
        } else {
            let fill = async {
                if let Some(shared) = &self.shared {
                    match shared.get(&key).await {
                        Some(Found::Fresh { answer, left }) => {
                            from_shared.store(true, Ordering::Relaxed);
                            return Ok(Entry {
                                cached: Cached::new(Arc::new(answer)),
                                left: Some(left),
                            });
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
                    Some(shared) if !shared.begin_fill(&key).await => {
                        if let Some(Found::Fresh { answer, left }) = shared.wait_fill(&key).await {
                            from_shared.store(true, Ordering::Relaxed);
                            return Ok(Entry {
                                cached: Cached::new(Arc::new(answer)),
                                left: Some(left),
                            });
                        }
                        false
                    }
                    Some(_) => true,
                    None => false,
                };
                let out = fetch.await;
                if let Some(shared) = &self.shared {
                    match (&out, filling) {
                        (_, true) => shared.finish_fill(&key, out.as_ref().ok()).await,
                        (Ok(out), false) => shared.put(&key, out),
                        (Err(_), false) => {}
                    }
                }
                let out = out?;
                Ok(Entry {
                    cached: Cached::new(Arc::new(out)),
                    left: None,
                })
            };
            match self.fresh.entry(key.clone()).or_try_insert_with(fill).await {
                Ok(entry) => {
                    // filled by this request: from the vendor (a miss) or the shared level
                    let lookup = if entry.is_fresh() && !from_shared.load(Ordering::Relaxed) {
                        Lookup::Miss
                    } else {
                        Lookup::Hit
                    };
                    let filled = entry.is_fresh();
                    let answer = entry.into_value().cached;
                    if filled
                        && lookup == Lookup::Hit
                        && let Some(last) = &self.last_good
                    {
                        last.insert(key.clone(), answer.clone()).await;
                    }
                    Ok((answer, lookup))
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok((answer, lookup)) => {
                if lookup == Lookup::Miss
                    && let Some(last) = &self.last_good
                {
                    last.insert(key, answer.clone()).await;
                }
                (Ok(answer), lookup, None)
            }
            Err(e) => {
                let stale = match &self.last_good {
                    Some(last) => last.get(&key).await,
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

    pub fn invalidate_all(&self) {
        if let Some(shared) = &self.shared {
            shared.invalidate_all();
        }
        self.fresh.invalidate_all();
        if let Some(last) = &self.last_good {
            last.invalidate_all();
        }
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
            max_bytes: 1 << 20,
        }
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
        let cache = Arc::new(ResponseCache::new(&cfg(60_000, 0)));
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
        let mut misses = 0;
        while let Some(r) = set.join_next().await {
            let (rows, lookup) = r.unwrap();
            assert_eq!(rows, 2);
            misses += usize::from(lookup == Lookup::Miss);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            misses, 1,
            "one request asked the vendor, 99 were served its answer"
        );
    }

    #[tokio::test]
    async fn within_ttl_the_vendor_is_not_asked() {
        let cache = ResponseCache::new(&cfg(60_000, 60_000));
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
        let cache = ResponseCache::new(&cfg(50, 60_000));
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
        let cache = ResponseCache::new(&cfg(50, 100));
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
        let cache = ResponseCache::new(&CacheConfig {
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
}
