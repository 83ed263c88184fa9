//! Idempotency keys for non-idempotent vendor calls (e.g. `POST /v1/templates`).
//!
//! A caller that sends an `Idempotency-Key` gets at-most-once creation per key:
//!
//! * the first request with a key [`claim`](IdempotencyStore::claim)s it and gets
//!   [`Claim::Proceed`] with a [`Pending`] guard; it does the work and calls
//!   [`Pending::complete`] with the answer to remember (a definite vendor answer: 2xx, or a 4xx
//!   such as 422);
//! * a repeat with the same key and the same body [`fingerprint`] gets [`Claim::Replay`] with
//!   the stored answer (same status, same body);
//! * the same key with a different fingerprint gets [`Claim::Conflict`] (a `409`), whether the
//!   first request is finished or still in flight;
//! * concurrent repeats wait (up to `wait`) for the first request's answer and then replay it;
//!   if it is still running after `wait` they get [`IdempotencyError::InProgress`];
//! * if the first request fails in a way that must not be remembered (vendor unreachable, caller
//!   went away and its future was dropped), dropping the [`Pending`] (or calling
//!   [`Pending::abandon`]) releases the key: waiters race to claim it again and exactly one of
//!   them proceeds.
//!
//! [`MemoryStore`] is the in-process store; `crate::shared::idempotency::RedisStore` is the
//! one several replicas share. A store that cannot tell whether a key is free (its backend is
//! down) answers [`IdempotencyError::Unavailable`]: the request must then be refused, never
//! run, since running it could create a second record.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

/// What the store remembers: the answer to replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status of the first answer.
    pub status: u16,
    /// `Content-Type` of the first answer.
    pub content_type: String,
    /// Body of the first answer, replayed byte for byte.
    pub body: Bytes,
}

/// The outcome of claiming a key.
#[derive(Debug)]
pub enum Claim {
    /// First use: do the work, then call `Pending::complete` (or drop it / `abandon()` to release the key).
    Proceed(Pending),
    /// The key was used with the same request fingerprint: answer this.
    Replay(StoredResponse),
    /// The key was used with a different request fingerprint.
    Conflict,
}

/// Errors of [`IdempotencyStore::claim`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdempotencyError {
    /// Another request holding the same key was still running when the wait elapsed.
    #[error("a request with this idempotency key is still in progress")]
    InProgress,
    /// The store could not be asked (a shared store whose backend is down or too slow):
    /// refuse the request (503) rather than risk a second creation.
    #[error("the idempotency records cannot be reached")]
    Unavailable,
}

/// The future returned by [`IdempotencyStore::claim`].
pub type ClaimFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Claim, IdempotencyError>> + Send + 'a>>;

/// The interface a shared store would implement too.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` (scoped by the caller, e.g. "templates.create:<key>") for a request whose
    /// body fingerprint is `fingerprint`. Waits while another request holds the same key, up to `wait`;
    /// if still in progress after `wait`, returns Err(IdempotencyError::InProgress).
    fn claim(&self, key: &str, fingerprint: &str, wait: Duration) -> ClaimFuture<'_>;
}

/// A remembered answer together with the fingerprint of the request that produced it.
#[derive(Debug)]
struct Record {
    fingerprint: String,
    response: StoredResponse,
}

impl Record {
    fn claim_for(&self, fingerprint: &str) -> Claim {
        if self.fingerprint == fingerprint {
            Claim::Replay(self.response.clone())
        } else {
            Claim::Conflict
        }
    }
}

/// The state of an in-flight key, broadcast to waiters.
#[derive(Clone, Debug)]
enum Phase {
    /// The claim holder is doing the work.
    Running,
    /// The claim holder completed; the record is on its way into the cache.
    Done(Arc<Record>),
    /// The claim holder gave up; the key is free again.
    Released,
}

/// A claimed key that is not yet (or only just) in the completed-records cache.
struct Flight {
    /// Identifies the claim, so a guard only ever touches its own entry.
    id: u64,
    fingerprint: String,
    phase: watch::Sender<Phase>,
}

#[derive(Default)]
struct Flights {
    by_key: HashMap<String, Flight>,
    /// Source of [`Flight::id`].
    next_id: u64,
    /// Bumped whenever a completed flight leaves the map (its record is then in the cache). A
    /// claim that saw the key absent, then missed the cache, may only proceed if this did not
    /// move in between; otherwise the record may have moved from the map to the cache behind
    /// its back.
    generation: u64,
}

struct Inner {
    completed: moka::future::Cache<String, Arc<Record>>,
    /// In-flight claims: kept apart from the bounded cache so capacity pressure cannot evict
    /// them. Bounded by the number of concurrent requests.
    flights: Mutex<Flights>,
}

impl Inner {
    fn flights(&self) -> MutexGuard<'_, Flights> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-process store: moka, bounded by entry count (`max_entries`), records expire `ttl` after completion.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("completed", &self.inner.completed.entry_count())
            .field("in_flight", &self.inner.flights().by_key.len())
            .finish()
    }
}

/// moka refuses (panics on) expirations longer than 1000 years.
const MAX_TTL: Duration = Duration::from_secs(1_000 * 365 * 24 * 3600);

impl MemoryStore {
    /// Default record lifetime of the gateway (24 h).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

    /// A store keeping at most `max_entries` completed records, each for `ttl` after completion
    /// (`ttl` is capped at 1000 years). In-flight claims do not count against `max_entries`.
    pub fn new(max_entries: u64, ttl: Duration) -> MemoryStore {
        let completed = moka::future::Cache::builder()
            .name("idempotency")
            .max_capacity(max_entries)
            .time_to_live(ttl.min(MAX_TTL))
            .build();
        MemoryStore {
            inner: Arc::new(Inner {
                completed,
                flights: Mutex::new(Flights::default()),
            }),
        }
    }

    async fn claim_inner(
        &self,
        key: &str,
        fingerprint: &str,
        wait: Duration,
    ) -> Result<Claim, IdempotencyError> {
        // `None` (overflow) means "wait forever".
        let deadline = tokio::time::Instant::now().checked_add(wait);
        loop {
            // 1. Is the key in flight?
            let seen = {
                let flights = self.inner.flights();
                match flights.by_key.get(key) {
                    Some(flight) => {
                        // Read and subscribe under the lock: every phase change happens under
                        // it too, so no change is missed.
                        let phase = flight.phase.borrow().clone();
                        match phase {
                            Phase::Done(record) => return Ok(record.claim_for(fingerprint)),
                            Phase::Running if flight.fingerprint != fingerprint => {
                                return Ok(Claim::Conflict);
                            }
                            Phase::Running => Err(flight.phase.subscribe()),
                            // Released flights leave the map under the same lock; look again.
                            Phase::Released => continue,
                        }
                    }
                    None => Ok(flights.generation),
                }
            };
            let generation = match seen {
                Ok(generation) => generation,
                Err(mut rx) => {
                    let waited = rx.wait_for(|phase| !matches!(phase, Phase::Running));
                    let outcome = match deadline {
                        Some(deadline) => match tokio::time::timeout_at(deadline, waited).await {
                            Ok(outcome) => outcome.map(|phase| phase.clone()),
                            Err(_elapsed) => return Err(IdempotencyError::InProgress),
                        },
                        None => waited.await.map(|phase| phase.clone()),
                    };
                    match outcome {
                        // Answer straight from the broadcast record: it may already be gone from
                        // a small cache, and claiming anew would repeat the work.
                        Ok(Phase::Done(record)) => return Ok(record.claim_for(fingerprint)),
                        // Released, or the flight left the map: race to claim again.
                        Ok(Phase::Released | Phase::Running) | Err(_) => continue,
                    }
                }
            };

            // 2. Is there a completed record?
            if let Some(record) = self.inner.completed.get(key).await {
                return Ok(record.claim_for(fingerprint));
            }

            // 3. Claim it, unless something moved while we looked at the cache.
            if let Some(pending) = self.try_begin(key, fingerprint, generation) {
                return Ok(Claim::Proceed(pending));
            }
        }
    }

    /// Registers a new flight for `key`, provided the key is still absent and no completed
    /// flight has left the map since the caller saw `seen_generation` (its record could then be
    /// in the cache although the caller's cache lookup missed it).
    fn try_begin(&self, key: &str, fingerprint: &str, seen_generation: u64) -> Option<Pending> {
        let mut flights = self.inner.flights();
        if flights.generation != seen_generation || flights.by_key.contains_key(key) {
            return None;
        }
        let id = flights.next_id;
        flights.next_id = flights.next_id.wrapping_add(1);
        let (phase, _) = watch::channel(Phase::Running);
        flights.by_key.insert(
            key.to_owned(),
            Flight {
                id,
                fingerprint: fingerprint.to_owned(),
                phase,
            },
        );
        Some(Pending {
            backend: Backend::Memory {
                inner: Arc::clone(&self.inner),
                id,
            },
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            settled: false,
        })
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim(&self, key: &str, fingerprint: &str, wait: Duration) -> ClaimFuture<'_> {
        let key = key.to_owned();
        let fingerprint = fingerprint.to_owned();
        Box::pin(async move { self.claim_inner(&key, &fingerprint, wait).await })
    }
}

/// Holds a claimed key. `complete(self, StoredResponse)` stores the answer and wakes waiters;
/// dropping it without completing (or [`abandon`](Pending::abandon)ing it) releases the key and
/// wakes waiters, which then race to claim again: exactly one proceeds.
#[must_use = "dropping a Pending releases the idempotency key; call complete() with the answer"]
pub struct Pending {
    backend: Backend,
    key: String,
    fingerprint: String,
    /// Completed or released: nothing left for `Drop` to do.
    settled: bool,
}

/// Where a claim is held.
enum Backend {
    /// In a [`MemoryStore`]; `id` identifies this claim's flight.
    Memory { inner: Arc<Inner>, id: u64 },
    /// In another store, which settles it (taken when settled).
    Other(Option<Box<dyn Settle>>),
}

/// How another store (e.g. Redis) settles a claim it handed out in a [`Pending`].
pub trait Settle: Send + Sync + 'static {
    /// Remembers `response` for the request whose fingerprint was `fingerprint`.
    fn complete(self: Box<Self>, fingerprint: String, response: StoredResponse);
    /// Frees the key without remembering anything.
    fn release(self: Box<Self>);
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("key", &self.key)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// A claim of `key` held in another store, which `settle` completes or releases.
    pub fn settled_by(key: &str, fingerprint: &str, settle: Box<dyn Settle>) -> Pending {
        Pending {
            backend: Backend::Other(Some(settle)),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            settled: false,
        }
    }

    /// Remembers `response` for the key (for the store's TTL) and hands it to every waiter.
    ///
    /// Waiters and new claims see the answer at once; it reaches the bounded cache on a tokio
    /// task, so this must run inside a tokio runtime (it always does in the gateway). Outside
    /// one the waiters still get the answer but it is not remembered, and a warning is logged.
    pub fn complete(mut self, response: StoredResponse) {
        self.settled = true;
        let fingerprint = std::mem::take(&mut self.fingerprint);
        let (inner, id) = match &mut self.backend {
            Backend::Memory { inner, id } => (Arc::clone(inner), *id),
            Backend::Other(settle) => {
                if let Some(settle) = settle.take() {
                    settle.complete(fingerprint, response);
                }
                return;
            }
        };
        let record = Arc::new(Record {
            fingerprint,
            response,
        });
        {
            let flights = inner.flights();
            match flights.by_key.get(&self.key) {
                Some(flight) if flight.id == id => {
                    flight.phase.send_replace(Phase::Done(Arc::clone(&record)));
                }
                // Cannot happen: only this guard removes its own entry.
                _ => return,
            }
        }
        let key = self.key.clone();
        let store = {
            let inner = Arc::clone(&inner);
            async move {
                inner.completed.insert(key.clone(), record).await;
                // Only now leave the map; the generation bump tells racing claims to look again.
                let mut flights = inner.flights();
                if flights
                    .by_key
                    .get(&key)
                    .is_some_and(|flight| flight.id == id)
                {
                    flights.by_key.remove(&key);
                    flights.generation = flights.generation.wrapping_add(1);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(store);
            }
            Err(_) => {
                drop(store);
                tracing::warn!(
                    key = %self.key,
                    "idempotency record not stored: complete() called outside a tokio runtime"
                );
                // Waiters already hold the answer; a later repeat may try again.
                let mut flights = inner.flights();
                if flights
                    .by_key
                    .get(&self.key)
                    .is_some_and(|flight| flight.id == id)
                {
                    flights.by_key.remove(&self.key);
                }
            }
        }
    }

    /// Releases the key without remembering anything (same as dropping the guard), so a later
    /// repeat may try again. Use it for failures that must not be replayed: the vendor could not
    /// be reached, the answer was indefinite.
    pub fn abandon(self) {
        drop(self);
    }

    fn release(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let (inner, id) = match &mut self.backend {
            Backend::Memory { inner, id } => (inner, *id),
            Backend::Other(settle) => {
                if let Some(settle) = settle.take() {
                    settle.release();
                }
                return;
            }
        };
        let mut flights = inner.flights();
        if flights
            .by_key
            .get(&self.key)
            .is_some_and(|flight| flight.id == id)
            && let Some(flight) = flights.by_key.remove(&self.key)
        {
            flight.phase.send_replace(Phase::Released);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.release();
    }
}

/// Fingerprint of a request body: lowercase hex SHA-256 of the bytes, canonicalized first when they are JSON
/// (parse and re-serialize with sorted keys via serde_json::Value, so key order and whitespace do not matter).
///
/// The body must parse as a `serde_json::Value`; the canonical form is then written with object
/// keys sorted (stably, by code point), no whitespace, strings re-escaped by serde_json, and
/// numbers kept exactly as written. Keeping the number text (rather than going through `f64`)
/// means two bodies whose numbers differ beyond `f64` precision never share a fingerprint,
/// while equal numbers written differently (`1.5`, `1.50`, `15e-1`) do. Bodies that are not
/// JSON (or are nested too deeply for serde_json) are hashed as raw bytes.
pub fn fingerprint(body: &[u8]) -> String {
    let canonical = canonical_json(body);
    let bytes = canonical.as_deref().unwrap_or(body);
    crate::crypto::hex_lower(&crate::crypto::sha256(bytes))
}

/// The canonical JSON form of `body`, or `None` when it is not JSON.
fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    // serde_json validates (grammar, UTF-8, escapes, nesting limit) so the writer below only
    // meets well-formed input of bounded depth.
    serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let mut canon = Canonicalizer { src: body, pos: 0 };
    let mut out = Vec::with_capacity(body.len());
    canon.skip_ws();
    canon.value(&mut out)?;
    canon.skip_ws();
    (canon.pos == body.len()).then_some(out)
}

/// An exact canonical form of a JSON number, so equal numbers written differently (`1.5`,
/// `1.50`, `15e-1`) share it and different ones never do, however many digits they have
/// (no `f64` on the way): whole numbers as plain digits, others as `[-]DIGITSeEXP` with no
/// leading or trailing zeros in DIGITS, and `0` for every zero.
fn canonical_number(text: &str) -> Option<String> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut exp = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    exp = exp.checked_add(i64::try_from(digits.len() - trimmed.len()).ok()?)?;
    if trimmed.is_empty() {
        return Some("0".to_owned());
    }
    let sign = if negative { "-" } else { "" };
    // whole numbers of sane size stay as written (`150`), the rest as `15e-1`
    Some(match usize::try_from(exp) {
        Ok(zeros) if zeros <= 32 => format!("{sign}{trimmed}{}", "0".repeat(zeros)),
        _ => format!("{sign}{trimmed}e{exp}"),
    })
}

/// Writes already-validated JSON in canonical form. Every method returns `None` on anything
/// unexpected instead of panicking.
struct Canonicalizer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Canonicalizer<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn value(&mut self, out: &mut Vec<u8>) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(out),
            b'[' => self.array(out),
            b'"' => {
                let s = self.string()?;
                out.extend_from_slice(serde_json::to_string(&s).ok()?.as_bytes());
                Some(())
            }
            b't' => self.literal(b"true", out),
            b'f' => self.literal(b"false", out),
            b'n' => self.literal(b"null", out),
            _ => self.number(out),
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        if self.src.get(self.pos..end)? != word {
            return None;
        }
        self.pos = end;
        out.extend_from_slice(word);
        Some(())
    }

    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        let text = std::str::from_utf8(self.src.get(start..self.pos)?).ok()?;
        out.extend_from_slice(canonical_number(text)?.as_bytes());
        Some(())
    }

    /// Decodes the string literal at the cursor.
    fn string(&mut self) -> Option<String> {
        let start = self.pos;
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        serde_json::from_slice(self.src.get(start..self.pos)?).ok()
    }

    fn array(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'[')?;
        out.push(b'[');
        self.skip_ws();
        if self.eat(b']').is_some() {
            out.push(b']');
            return Some(());
        }
        loop {
            self.skip_ws();
            self.value(out)?;
            self.skip_ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    out.push(b',');
                }
                b']' => {
                    self.pos += 1;
                    out.push(b']');
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'{')?;
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        self.skip_ws();
        if self.eat(b'}').is_none() {
            loop {
                self.skip_ws();
                let key = self.string()?;
                self.skip_ws();
                self.eat(b':')?;
                self.skip_ws();
                let mut value = Vec::new();
                self.value(&mut value)?;
                members.push((key, value));
                self.skip_ws();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        // Stable: duplicate keys keep their order, so bodies differing only there stay distinct.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(b'{');
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(serde_json::to_string(key).ok()?.as_bytes());
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    /// Waits until every completed record has left the in-flight map for the cache (a task
    /// `complete` spawns does that). The limit only turns a hang into a failure.
    async fn settled(store: &MemoryStore) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !store.inner.flights().by_key.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("completed records reach the cache");
    }

    fn response(status: u16, body: &'static str) -> StoredResponse {
        StoredResponse {
            status,
            content_type: "application/json".to_owned(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    async fn proceed(store: &MemoryStore, key: &str, fp: &str) -> Pending {
        match store.claim(key, fp, WAIT).await {
            Ok(Claim::Proceed(pending)) => pending,
            other => panic!("expected Proceed, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replay_after_complete_and_conflict_on_other_fingerprint() {
        let store = MemoryStore::new(100, MemoryStore::DEFAULT_TTL);
        let answer = response(201, r#"{"template_id":"t-1"}"#);
        proceed(&store, "templates.create:k1", "fp-a")
            .await
            .complete(answer.clone());

        match store.claim("templates.create:k1", "fp-a", WAIT).await {
            Ok(Claim::Replay(replayed)) => assert_eq!(replayed, answer),
            other => panic!("expected Replay, got {other:?}"),
        }
        assert!(matches!(
            store.claim("templates.create:k1", "fp-b", WAIT).await,
            Ok(Claim::Conflict)
        ));
        // Still answered from the cache once the record has left the in-flight map.
        settled(&store).await;
        assert!(store.inner.completed.contains_key("templates.create:k1"));
        match store.claim("templates.create:k1", "fp-a", WAIT).await {
            Ok(Claim::Replay(replayed)) => assert_eq!(replayed, answer),
            other => panic!("expected Replay, got {other:?}"),
        }
        assert!(matches!(
            store.claim("templates.create:k1", "fp-b", WAIT).await,
            Ok(Claim::Conflict)
        ));
        // Keys are independent.
        let other = proceed(&store, "templates.create:k2", "fp-a").await;
        drop(other);
    }

    /// The race `claim` guards against: a claimer sees the key absent, misses the cache, and
    /// meanwhile another request's record moves from the in-flight map into the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_second_claim_when_a_record_moves_into_the_cache_meanwhile() {
        let store = MemoryStore::new(100, MemoryStore::DEFAULT_TTL);
        let seen = store.inner.flights().generation; // the racing claimer saw "absent" here
        proceed(&store, "k", "fp")
            .await
            .complete(response(201, "{}"));
        settled(&store).await;
        assert!(store.try_begin("k", "fp", seen).is_none());
        // With a current view, a free key is claimable.
        let now = store.inner.flights().generation;
        assert!(store.try_begin("other", "fp", now).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn definite_error_answers_are_replayed_too() {
        let store = MemoryStore::new(100, MemoryStore::DEFAULT_TTL);
        let answer = response(422, r#"{"error":"bad face value"}"#);
        proceed(&store, "k", "fp").await.complete(answer.clone());
        match store.claim("k", "fp", WAIT).await {
            Ok(Claim::Replay(replayed)) => assert_eq!(replayed, answer),
            other => panic!("expected Replay, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn different_fingerprint_conflicts_while_in_flight() {
        let store = MemoryStore::new(100, MemoryStore::DEFAULT_TTL);
        let pending = proceed(&store, "k", "fp-a").await;
        let started = Instant::now();
        assert!(matches!(
            store.claim("k", "fp-b", WAIT).await,
            Ok(Claim::Conflict)
        ));
        // the paused clock only moves when something waits for it
        assert_eq!(started.elapsed(), Duration::ZERO, "must not wait");
        pending.complete(response(201, "{}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_claims_proceed_exactly_once() {
        let store = Arc::new(MemoryStore::new(100, MemoryStore::DEFAULT_TTL));
        let proceeded = Arc::new(AtomicUsize::new(0));
        let answer = response(201, r#"{"template_id":"t-50"}"#);
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, proceeded, answer, barrier) = (
                    Arc::clone(&store),
                    Arc::clone(&proceeded),
                    answer.clone(),
                    Arc::clone(&barrier),
                );
                tokio::spawn(async move {
                    barrier.wait().await;
                    match store.claim("templates.create:c", "fp", WAIT).await {
                        Ok(Claim::Proceed(pending)) => {
                            proceeded.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            pending.complete(answer.clone());
                            None
                        }
                        Ok(Claim::Replay(replayed)) => Some(replayed),
                        other => panic!("unexpected claim outcome {other:?}"),
                    }
                })
            })
            .collect();
        let mut replays = 0;
        for task in tasks {
            if let Some(replayed) = task.await.expect("task panicked") {
                assert_eq!(replayed, answer);
                replays += 1;
            }
        }
        assert_eq!(proceeded.load(Ordering::SeqCst), 1);
        assert_eq!(replays, 49);
    }

    // On the paused clock a sleep ends only once every other task is idle: after the sleep
    // below, all ten waiters are parked on the key, not just started.
    #[tokio::test(start_paused = true)]
    async fn dropping_pending_releases_the_key_to_exactly_one_waiter() {
        let store = Arc::new(MemoryStore::new(100, MemoryStore::DEFAULT_TTL));
        let first = proceed(&store, "k", "fp").await;
        let proceeded = Arc::new(AtomicUsize::new(0));
        let answer = response(201, r#"{"template_id":"second-try"}"#);
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let (store, proceeded, answer) =
                    (Arc::clone(&store), Arc::clone(&proceeded), answer.clone());
                tokio::spawn(async move {
                    match store.claim("k", "fp", WAIT).await {
                        Ok(Claim::Proceed(pending)) => {
                            proceeded.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            pending.complete(answer);
                            None
                        }
                        Ok(Claim::Replay(replayed)) => Some(replayed),
                        other => panic!("unexpected claim outcome {other:?}"),
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "waiters must wait while the key is held"
        );
        assert_eq!(proceeded.load(Ordering::SeqCst), 0);
        drop(first);
        let mut replays = 0;
        for waiter in waiters {
            if let Some(replayed) = waiter.await.expect("task panicked") {
                assert_eq!(replayed, answer);
                replays += 1;
            }
        }
        assert_eq!(proceeded.load(Ordering::SeqCst), 1);
        assert_eq!(replays, 9);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn abandon_releases_the_key() {
        let store = MemoryStore::new(100, MemoryStore::DEFAULT_TTL);
        proceed(&store, "k", "fp").await.abandon();
        // Not remembered: a repeat (even with another body) may try again.
        let again = proceed(&store, "k", "fp-other").await;
        again.complete(response(201, "{}"));
        assert!(matches!(
            store.claim("k", "fp", WAIT).await,
            Ok(Claim::Conflict)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_elapsing_while_in_progress_is_an_error() {
        let store = MemoryStore::new(100, MemoryStore::DEFAULT_TTL);
        let pending = proceed(&store, "k", "fp").await;

        let started = Instant::now();
        let outcome = store.claim("k", "fp", Duration::from_millis(100)).await;
        let waited = started.elapsed();
        assert_eq!(outcome.err(), Some(IdempotencyError::InProgress));
        // on the paused clock: exactly the wait, give or take the timer's millisecond
        assert!(
            (Duration::from_millis(100)..Duration::from_millis(102)).contains(&waited),
            "gave up at the wait: {waited:?}"
        );

        assert_eq!(
            store.claim("k", "fp", Duration::ZERO).await.err(),
            Some(IdempotencyError::InProgress)
        );
        // A huge wait does not overflow; it is answered when the holder completes.
        let answer = response(201, "{}");
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.claim("k", "fp", Duration::MAX).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        pending.complete(answer.clone());
        match waiter.await.expect("task panicked") {
            Ok(Claim::Replay(replayed)) => assert_eq!(replayed, answer),
            other => panic!("expected Replay, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn records_expire_after_ttl() {
        let store = MemoryStore::new(100, Duration::from_millis(100));
        proceed(&store, "k", "fp")
            .await
            .complete(response(201, "{}"));
        assert!(matches!(
            store.claim("k", "fp", WAIT).await,
            Ok(Claim::Replay(_))
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = proceed(&store, "k", "fp").await;
        drop(fresh);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn in_flight_claims_survive_capacity_pressure() {
        let store = MemoryStore::new(2, MemoryStore::DEFAULT_TTL);
        let held = proceed(&store, "held", "fp").await;
        for i in 0..50 {
            proceed(&store, &format!("filler-{i}"), "fp")
                .await
                .complete(response(201, "{}"));
        }
        store.inner.completed.run_pending_tasks().await;
        assert!(store.inner.completed.entry_count() <= 2);
        assert_eq!(
            store.claim("held", "fp", Duration::ZERO).await.err(),
            Some(IdempotencyError::InProgress)
        );
        drop(held);
    }

    #[test]
    fn complete_outside_a_runtime_does_not_panic_and_frees_the_key() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = MemoryStore::new(10, MemoryStore::DEFAULT_TTL);
        let pending = runtime.block_on(proceed(&store, "k", "fp"));
        pending.complete(response(201, "{}")); // no runtime context here
        assert!(store.inner.flights().by_key.is_empty());
        let again = runtime.block_on(proceed(&store, "k", "fp"));
        drop(again);
    }

    #[test]
    fn memory_store_tolerates_extreme_ttl() {
        let _ = MemoryStore::new(10, Duration::MAX);
    }

    #[test]
    fn records_live_for_the_configured_ttl_capped_at_a_thousand_years() {
        let ttl = |store: MemoryStore| store.inner.completed.policy().time_to_live();
        let year = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(
            ttl(MemoryStore::new(10, MemoryStore::DEFAULT_TTL)),
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(ttl(MemoryStore::new(10, year * 999)), Some(year * 999));
        assert_eq!(ttl(MemoryStore::new(10, Duration::MAX)), Some(year * 1000));
    }

    #[tokio::test]
    async fn debug_shows_counts_not_keys() {
        let store = MemoryStore::new(10, MemoryStore::DEFAULT_TTL);
        let _held = proceed(&store, "templates.create:secret-key", "fp").await;
        let text = format!("{store:?}");
        assert_eq!(text, "MemoryStore { completed: 0, in_flight: 1 }");
    }

    #[tokio::test]
    async fn pending_debug_names_the_claim() {
        let store = MemoryStore::new(10, MemoryStore::DEFAULT_TTL);
        let held = proceed(&store, "templates.create:k1", "fp-a").await;
        let text = format!("{held:?}");
        assert!(
            text.starts_with("Pending {") && text.contains("fp-a"),
            "{text}"
        );
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        crate::crypto::hex_lower(&crate::crypto::sha256(bytes))
    }

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace() {
        let a = fingerprint(
            br#"{"name":"10 off","face":{"amount":10,"currency":"CNY"},"tags":["a","b"]}"#,
        );
        let b = fingerprint(
            b"{\n  \"tags\" : [ \"a\", \"b\" ],\n  \"face\": {\"currency\":\"CNY\", \"amount\": 10},\n  \"name\": \"10 off\"\n}\n",
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        // The canonical form is compact JSON with sorted keys; escapes are normalized.
        assert_eq!(
            fingerprint(b" { \"b\" : 1 , \"a\" : \"\\u0041\" } "),
            sha256_hex(br#"{"a":"A","b":1}"#)
        );
        // Literals and strings with escaped quotes are canonicalized too, not hashed raw.
        assert_eq!(
            fingerprint(
                b"{ \"t\" : true , \"f\" : false , \"n\" : null , \"q\" : \"say \\\"hi\\\"\" }"
            ),
            sha256_hex(br#"{"f":false,"n":null,"q":"say \"hi\"","t":true}"#)
        );
    }

    #[test]
    fn fingerprint_sees_different_values() {
        let base = fingerprint(br#"{"amount":10,"currency":"CNY","tags":["a","b"]}"#);
        for other in [
            &br#"{"amount":11,"currency":"CNY","tags":["a","b"]}"#[..],
            br#"{"amount":"10","currency":"CNY","tags":["a","b"]}"#,
            br#"{"amount":10,"currency":"USD","tags":["a","b"]}"#,
            br#"{"amount":10,"currency":"CNY","tags":["b","a"]}"#,
            br#"{"amount":10,"currency":"CNY","tags":["a","b"],"x":null}"#,
            br#"{"amount":10,"currency":"CNY "  ,"tags":["a","b"]}"#,
        ] {
            assert_ne!(
                fingerprint(other),
                base,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        // Numbers that collapse into one f64 stay distinct.
        assert_ne!(
            fingerprint(br#"{"n":12345678901234567890123}"#),
            fingerprint(br#"{"n":12345678901234567890124}"#)
        );
        assert_ne!(
            fingerprint(br#"{"n":0.1}"#),
            fingerprint(br#"{"n":0.10000000000000000001}"#)
        );
    }

    #[test]
    fn equal_numbers_share_a_fingerprint_however_written() {
        let f = |n: &str| fingerprint(format!(r#"{{"n":{n}}}"#).as_bytes());
        for (a, b) in [
            ("1.5", "1.50"),
            ("1.5", "15e-1"),
            ("150", "1.5E2"),
            ("0", "-0.0"),
            ("100", "1e2"),
            ("-2.0", "-2"),
        ] {
            assert_eq!(f(a), f(b), "{a} = {b}");
        }
        for (a, b) in [
            ("1.5", "1.05"),
            ("12345678901234567890123", "12345678901234567890124"),
            ("1", "-1"),
            ("10", "1"),
        ] {
            assert_ne!(f(a), f(b), "{a} ≠ {b}");
        }
        assert_eq!(canonical_number("1.50").as_deref(), Some("15e-1"));
        assert_eq!(canonical_number("-0.000").as_deref(), Some("0"));
        // Whole numbers are written out up to 32 trailing zeros; beyond, the exponent stays
        // (`1e1000000000` must not become a gigabyte of zeros).
        assert_eq!(
            canonical_number("1e32"),
            Some(format!("1{}", "0".repeat(32)))
        );
        assert_eq!(canonical_number("1e33").as_deref(), Some("1e33"));
    }

    #[test]
    fn fingerprint_hashes_non_json_raw() {
        // SHA-256("abc"), FIPS 180-2 example.
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for raw in [
            &b"name=10 off&amount=10"[..],
            b"",
            b"{\"a\":1",
            b"{\"a\":1} trailing",
            b"\xff\xfe",
        ] {
            assert_eq!(fingerprint(raw), sha256_hex(raw));
        }
        // Whitespace matters for raw bodies.
        assert_ne!(fingerprint(b"a=1&b=2"), fingerprint(b"a=1& b=2"));
        // Pathologically deep JSON falls back to raw bytes instead of recursing without bound.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(fingerprint(deep.as_bytes()), sha256_hex(deep.as_bytes()));
    }
}
