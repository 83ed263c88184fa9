//! Access-token caching for vendors that use token-endpoint auth.
//!
//! Such a vendor is called by first POSTing credentials to a token endpoint, which answers
//! `{"access_token":"…","expires_in":7200}`; every call then carries
//! `Authorization: Bearer <token>`. The token is reused until shortly before it expires, and
//! when a call is answered 401 (the token was revoked) the caller invalidates the token it
//! used, fetches a new one and retries that call once.
//!
//! This module owns only the caching policy; how a token is fetched is the caller's closure.
//! A token is never logged, printed or shown by `Debug`.
//!
//! # Single flight
//!
//! [`TokenCache::get`] serialises fetches on an async mutex held across the fetch: callers
//! that find no usable token queue on it, and when they get it they look again and normally
//! find the token the previous holder just fetched. To let the callers waiting on a flight
//! share that flight's *failure* too (rather than each refetching in turn), every finished
//! flight bumps a generation counter, and the last failure is kept with the generation it
//! ended. A caller notes the generation before it queues; if, once it holds the mutex, a
//! flight has ended since then and that flight failed, it returns the same error (`Arc<E>`)
//! instead of fetching. A caller that arrives after the failure sees the newer generation and
//! fetches again, so failures are never cached beyond their own flight.
//!
//! Errors are stored type-erased (the cache is not generic over `E`). If the waiting caller's
//! `E` is not the type of the stored error (two callers of one cache using different error
//! types), it does not share the error and fetches itself.
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::shared::tokens::SharedTokens;

/// A token and how long it is valid from when it was fetched.
#[derive(Debug)]
pub struct FetchedToken {
    /// The access token, as sent after `Bearer `.
    pub token: SecretString,
    /// How long the token is valid, counted from when its fetch started.
    pub expires_in: Duration,
}

/// A handle to a cached token (cheap to clone); [`Token::expose`] gives the text for a
/// header. `Debug` never shows the value.
#[derive(Clone)]
pub struct Token {
    /// Shared by every handle of one fetched token; its identity (`Arc::ptr_eq`) is what
    /// [`TokenCache::invalidate`] compares.
    secret: Arc<SecretString>,
}

impl Token {
    /// The token text, for an `Authorization: Bearer …` header. Never log it.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Whether `self` and `other` are handles of the same fetched token.
    fn same(&self, other: &Token) -> bool {
        Arc::ptr_eq(&self.secret, &other.secret)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The token currently held by a cache.
struct Cached {
    token: Token,
    /// From this instant on the token is not handed out to new callers; `None` when the
    /// expiry is too far away to be represented (never refreshed for age).
    refresh_at: Option<Instant>,
    /// The generation of the flight that fetched it.
    generation: u64,
}

impl Cached {
    fn is_fresh(&self, now: Instant) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }
}

/// A type-erased fetch error, shared as the `Arc<E>` every waiter of its flight receives.
type SharedError = Arc<dyn Any + Send + Sync>;

/// State guarded by the flight mutex (held across a fetch).
#[derive(Default)]
struct Flight {
    /// The last flight's failure and the generation that flight ended; cleared by a
    /// successful flight.
    last_error: Option<(u64, SharedError)>,
}

/// Caches one vendor's access token.
///
/// `Send + Sync`; share it (e.g. in an `Arc` or a plan) between all calls to one vendor.
pub struct TokenCache {
    /// A token is treated as expired this long before its real expiry.
    refresh_before: Duration,
    /// The current token. A sync mutex, never held across an `.await`, so that the fast path
    /// and [`TokenCache::invalidate`] never wait for a fetch. Only the holder of `flight`
    /// stores a token here; `invalidate` may clear it at any time.
    current: Mutex<Option<Cached>>,
    /// Serialises fetches (single flight); see the module docs.
    flight: tokio::sync::Mutex<Flight>,
    /// The number of finished flights (successful or failed): the generation of the last one.
    /// Written only while holding `flight`.
    generation: AtomicU64,
    /// With several replicas: the token they share (`crate::shared::tokens`), asked before
    /// fetching, so one replica fetches for all.
    shared: Option<SharedTokens>,
    /// The last token this cache dropped after a 401, so the shared tier does not hand it
    /// back (it deletes it instead, once for every replica).
    revoked: Mutex<Option<Arc<SecretString>>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("refresh_before", &self.refresh_before)
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// `refresh_before`: a token is treated as expired this long before its real expiry.
    pub fn new(refresh_before: Duration) -> TokenCache {
        TokenCache {
            refresh_before,
            current: Mutex::new(None),
            flight: tokio::sync::Mutex::new(Flight::default()),
            generation: AtomicU64::new(0),
            shared: None,
            revoked: Mutex::new(None),
        }
    }

    /// A cache that shares its token with other replicas through `shared`; without Redis it
    /// behaves as [`TokenCache::new`] (one fetch per replica).
    pub fn with_shared(refresh_before: Duration, shared: SharedTokens) -> TokenCache {
        TokenCache {
            shared: Some(shared),
            ..TokenCache::new(refresh_before)
        }
    }

    /// The current token, fetching one with `fetch` when there is none or it is (about to
    /// be) expired.
    ///
    /// Concurrent callers share ONE fetch (single flight): 50 concurrent first calls cause
    /// exactly one `fetch`, and the callers that waited on it receive the token it fetched
    /// (even if that token is already within `refresh_before` of its expiry).
    /// A failed fetch is returned (as the same `Arc<E>`) to every caller that waited on that
    /// flight and is not cached: the next call fetches again.
    ///
    /// Cancel-safe: if the fetching caller is dropped mid-fetch, the next waiter fetches.
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<Token, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FetchedToken, E>>,
        E: Send + Sync + 'static,
    {
        // Noted before queueing: any flight that ends after this is one we waited on.
        let seen = self.generation.load(Ordering::Acquire);
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }

        let mut flight = self.flight.lock().await;
        {
            let current = self.current();
            if let Some(cached) = current.as_ref()
                && (cached.is_fresh(Instant::now()) || cached.generation > seen)
            {
                return Ok(cached.token.clone());
            }
        }
        if let Some((generation, error)) = &flight.last_error
            && *generation > seen
            && let Ok(error) = Arc::clone(error).downcast::<E>()
        {
            return Err(error);
        }

        tracing::debug!("fetching an access token");
        let started = Instant::now();
        let outcome = match &self.shared {
            None => fetch().await,
            Some(shared) => {
                let revoked = self
                    .revoked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                shared
                    .obtain(revoked.as_deref().map(|s| s.expose_secret()), fetch)
                    .await
            }
        };
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let result = match outcome {
            Ok(fetched) => {
                let token = Token {
                    secret: Arc::new(fetched.token),
                };
                let valid_for = fetched.expires_in.saturating_sub(self.refresh_before);
                *self.current() = Some(Cached {
                    token: token.clone(),
                    refresh_at: started.checked_add(valid_for),
                    generation,
                });
                flight.last_error = None;
                tracing::debug!(
                    expires_in_s = fetched.expires_in.as_secs(),
                    "fetched an access token"
                );
                Ok(token)
            }
            Err(error) => {
                let error = Arc::new(error);
                // Whatever was here was stale (or already invalidated): drop it so that
                // waiters of this flight get this flight's error, not an older token.
                *self.current() = None;
                flight.last_error = Some((generation, Arc::clone(&error) as SharedError));
                tracing::debug!("fetching an access token failed");
                Err(error)
            }
        };
        self.generation.store(generation, Ordering::Release);
        drop(flight);
        result
    }

    /// Called after a vendor answered 401 to a call made with `used`: drops the cached token
    /// only if it is still `used` (so N concurrent 401s for the same token cause one refresh,
    /// not N).
    pub fn invalidate(&self, used: &Token) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|c| c.token.same(used)) {
            *current = None;
            *self.revoked.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(Arc::clone(&used.secret));
            tracing::debug!("access token invalidated");
        }
    }

    /// The cached token if it is still fresh at `now`.
    fn fresh(&self, now: Instant) -> Option<Token> {
        self.current()
            .as_ref()
            .filter(|c| c.is_fresh(now))
            .map(|c| c.token.clone())
    }

    /// Locks `current`. Nothing panics while holding it, so poisoning is ignored.
    fn current(&self) -> MutexGuard<'_, Option<Cached>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures_util::future::join_all;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);

    #[derive(Debug, PartialEq)]
    struct FetchError(&'static str);

    /// A fetch that counts its calls, yields to let concurrent callers pile up, and returns
    /// `tok-<n>` valid for `expires_in`.
    async fn fetcher(
        calls: &AtomicUsize,
        expires_in: Duration,
    ) -> Result<FetchedToken, FetchError> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(FetchedToken {
            token: SecretString::from(format!("tok-{n}")),
            expires_in,
        })
    }

    /// A fetch that counts its calls, yields, and fails.
    async fn failing(calls: &AtomicUsize) -> Result<FetchedToken, FetchError> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(FetchError("token endpoint said no"))
    }

    #[tokio::test(start_paused = true)]
    async fn first_get_fetches_then_reuses() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let a = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(a.expose(), "tok-1");
        let b = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(b.expose(), "tok-1");
        assert!(a.same(&b));
    }

    #[tokio::test(start_paused = true)]
    async fn refetches_refresh_before_expiry() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        // Still fresh just before expires_in - refresh_before (counted from the fetch start).
        tokio::time::advance(HOUR - MINUTE - Duration::from_secs(1)).await;
        let t = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), t.expose()), (1, "tok-1"));
        // Past it (but before the real expiry): treated as expired.
        tokio::time::advance(Duration::from_secs(2)).await;
        let t = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), t.expose()), (2, "tok-2"));
        let t = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), t.expose()), (2, "tok-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_stale_from_its_refresh_instant_on() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        // the fetch starts now (the clock is paused) and lasts 10 ms
        let started = Instant::now();
        cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        let refresh_at = started + (HOUR - MINUTE);
        tokio::time::advance(refresh_at - Instant::now()).await;
        assert_eq!(Instant::now(), refresh_at);
        let t = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), t.expose()), (2, "tok-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_first_gets_share_one_fetch() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let results = join_all((0..50).map(|_| cache.get(|| fetcher(&calls, HOUR)))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(results.len(), 50);
        for r in &results {
            assert_eq!(r.as_ref().unwrap().expose(), "tok-1");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_gets_on_threads_share_one_fetch() {
        let cache = Arc::new(TokenCache::new(MINUTE));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
                tokio::spawn(async move {
                    let t = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
                    t.expose().to_owned()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), "tok-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_current_refetches_older_does_not() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let first = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        cache.invalidate(&first);
        let second = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!(
            (calls.load(Ordering::SeqCst), second.expose()),
            (2, "tok-2")
        );

        // A late 401 for the older token must not throw away the newer one.
        cache.invalidate(&first);
        let again = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), again.expose()), (2, "tok-2"));
        assert!(again.same(&second));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_401s_for_one_token_refresh_once() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let used = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        let retried = join_all((0..20).map(|_| {
            let (cache, calls, used) = (&cache, &calls, used.clone());
            async move {
                // The vendor answered 401 to a call made with `used`.
                tokio::task::yield_now().await;
                cache.invalidate(&used);
                cache.get(|| fetcher(calls, HOUR)).await
            }
        }))
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        for r in &retried {
            assert_eq!(r.as_ref().unwrap().expose(), "tok-2");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_401s_on_threads_refresh_once() {
        let cache = Arc::new(TokenCache::new(MINUTE));
        let calls = Arc::new(AtomicUsize::new(0));
        let used = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls, used) = (Arc::clone(&cache), Arc::clone(&calls), used.clone());
                tokio::spawn(async move {
                    cache.invalidate(&used);
                    let t = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
                    t.expose().to_owned()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), "tok-2");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_fetch_is_shared_by_its_flight_and_not_cached() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let results = join_all((0..10).map(|_| cache.get(|| failing(&calls)))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let first = results[0].as_ref().unwrap_err();
        assert_eq!(**first, FetchError("token endpoint said no"));
        for r in &results {
            // Every waiter receives the very same error.
            assert!(Arc::ptr_eq(r.as_ref().unwrap_err(), first));
        }

        // Not cached: the next call fetches again, and may fail again ...
        let again = cache.get(|| failing(&calls)).await;
        assert!(again.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // ... or succeed.
        let ok = AtomicUsize::new(0);
        let t = cache.get(|| fetcher(&ok, HOUR)).await.unwrap();
        assert_eq!(t.expose(), "tok-1");
        assert_eq!(ok.load(Ordering::SeqCst), 1);
        let t = cache.get(|| failing(&calls)).await.unwrap();
        assert_eq!(t.expose(), "tok-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_refresh_drops_the_stale_token() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        tokio::time::advance(HOUR).await;
        let results = join_all((0..5).map(|_| cache.get(|| failing(&calls)))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(results.iter().all(Result::is_err));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_fetch_lets_the_next_caller_fetch() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let slow = cache.get(|| fetcher(&calls, HOUR));
        // Dropped mid-fetch (the 10 ms sleep is not over).
        assert!(
            tokio::time::timeout(Duration::from_millis(1), slow)
                .await
                .is_err()
        );
        let t = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), t.expose()), (2, "tok-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_get_a_token_that_is_stale_on_arrival() {
        // expires_in <= refresh_before: the token is stale at once, yet the callers that
        // waited on its fetch still share it instead of fetching one each.
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let results = join_all((0..10).map(|_| cache.get(|| fetcher(&calls, MINUTE)))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap().expose() == "tok-1")
        );
        // A later caller refetches.
        let t = cache.get(|| fetcher(&calls, MINUTE)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), t.expose()), (2, "tok-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn huge_expiry_does_not_overflow() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        cache.get(|| fetcher(&calls, Duration::MAX)).await.unwrap();
        tokio::time::advance(HOUR * 24 * 365).await;
        cache.get(|| fetcher(&calls, Duration::MAX)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn debug_does_not_show_the_token() {
        let cache = TokenCache::new(MINUTE);
        let calls = AtomicUsize::new(0);
        let token = cache.get(|| fetcher(&calls, HOUR)).await.unwrap();
        let shown = format!("{token:?} {token:#?} {cache:?}");
        assert!(!shown.contains("tok-1"), "{shown}");
        assert!(shown.starts_with("Token("));
        assert!(format!("{cache:?}").starts_with("TokenCache {"), "{shown}");
        let fetched = FetchedToken {
            token: SecretString::from("tok-secret".to_owned()),
            expires_in: HOUR,
        };
        assert!(!format!("{fetched:?}").contains("tok-secret"));
    }

    #[test]
    fn cache_is_send_sync_and_get_is_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: T) {}
        send_sync::<TokenCache>();
        send_sync::<Token>();
        let cache = TokenCache::new(MINUTE);
        send(cache.get(|| async {
            Ok::<_, FetchError>(FetchedToken {
                token: SecretString::from("x".to_owned()),
                expires_in: HOUR,
            })
        }));
    }
}
