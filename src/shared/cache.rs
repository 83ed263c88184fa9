//! The second cache level of vendor answers, under each replica's moka cache, so N replicas
//! ask a vendor about a member once per ttl instead of N times.
//!
//! `<prefix>c:<vendor>:<operation>:<sha256 of the cache key>` (member ids are never written in
//! clear as key names) holds the answer as JSON for its ttl plus `stale_if_error_ms`; its PTTL
//! says how old it is, on Redis's clock. A reader gets it as *fresh* (with the ttl it has left,
//! so a replica never serves it past the writer's ttl) or, past its ttl, as *stale*: only
//! served when the vendor fails.
//!
//! Concurrent misses across replicas are coalesced: the first replica to miss takes
//! `<key>:fill` (SET NX, PX the vendor's timeout), asks the vendor and stores the answer; the
//! others poll for that answer (every 20 ms) and ask the vendor themselves only if the fill
//! ends without one (the vendor failed, the filler went away) or outlives the vendor timeout.
//! A miss thus costs up to three round trips to Redis (look, take the fill, store and free it)
//! before and after the vendor call it may save.
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Piece, Shared};
use crate::config::CacheConfig;
use crate::engine::call::CallOutput;

/// What the shared level had.
#[derive(Debug)]
pub enum Found {
    /// Within its ttl, which has `left` to run.
    Fresh { answer: CallOutput, left: Duration },
    /// Past its ttl, within stale-if-error.
    Stale(CallOutput),
}

/// `CallOutput` as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    rows: Vec<Vec<Value>>,
    dropped: usize,
    pages: u32,
    truncated: bool,
    bytes: usize,
    page_info: Option<[i64; 4]>,
}

impl From<&CallOutput> for Stored {
    fn from(o: &CallOutput) -> Stored {
        Stored {
            rows: o.rows.clone(),
            dropped: o.dropped,
            pages: o.pages,
            truncated: o.truncated,
            bytes: o.bytes,
            page_info: o.page_info,
        }
    }
}

impl From<Stored> for CallOutput {
    fn from(s: Stored) -> CallOutput {
        CallOutput {
            rows: s.rows,
            dropped: s.dropped,
            pages: s.pages,
            truncated: s.truncated,
            bytes: s.bytes,
            page_info: s.page_info,
        }
    }
}

/// The shared level of one operation's cache.
pub struct SharedAnswers {
    shared: Arc<Shared>,
    /// `<prefix>c:<vendor>:<operation>:`
    namespace: String,
    ttl: Duration,
    empty_ttl: Duration,
    stale: Duration,
    /// How long a fill may take: the vendor's whole-call timeout.
    fill: Duration,
}

/// How often a replica waiting on another's fill looks for its answer.
const POLL: Duration = Duration::from_millis(20);

impl SharedAnswers {
    pub fn new(
        shared: Arc<Shared>,
        vendor: &str,
        operation: &str,
        cfg: &CacheConfig,
        vendor_timeout: Duration,
    ) -> SharedAnswers {
        let ttl = Duration::from_millis(cfg.ttl_ms);
        SharedAnswers {
            namespace: shared.key(&format!("c:{vendor}:{operation}:")),
            shared,
            ttl,
            empty_ttl: Duration::from_millis(cfg.empty_ttl_ms.unwrap_or(cfg.ttl_ms.min(5_000))),
            stale: Duration::from_millis(cfg.stale_if_error_ms),
            fill: vendor_timeout.max(Duration::from_millis(1)),
        }
    }

    fn redis_key(&self, key: &str) -> String {
        let digest = crate::crypto::hex_lower(&crate::crypto::sha256(key.as_bytes()));
        format!("{}{digest}", self.namespace)
    }

    fn fresh_ttl(&self, answer: &CallOutput) -> Duration {
        if answer.rows.is_empty() {
            self.empty_ttl
        } else {
            self.ttl
        }
    }

    /// The stored answer of `key`, if any (nothing when Redis cannot be asked).
    pub async fn get(&self, key: &str) -> Option<Found> {
        let rkey = self.redis_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&rkey).cmd("PTTL").arg(&rkey);
        let (raw, pttl): (Option<Vec<u8>>, i64) =
            self.shared.run(Piece::Cache, &pipe).await.ok()?;
        self.found(raw?, pttl)
    }

    /// Takes the fill of `key`: true when this replica should ask the vendor (also when Redis
    /// cannot be asked), false when another replica is asking it.
    pub async fn begin_fill(&self, key: &str) -> bool {
        let mut set = redis::cmd("SET");
        set.arg(format!("{}:fill", self.redis_key(key)))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(self.fill.as_millis()).unwrap_or(u64::MAX));
        !matches!(
            self.shared.run::<redis::Value, _>(Piece::Cache, &set).await,
            Ok(redis::Value::Nil)
        )
    }

    /// Ends this replica's fill: stores `answer` (when the vendor gave one) and frees the fill.
    pub async fn finish_fill(&self, key: &str, answer: Option<&CallOutput>) {
        let rkey = self.redis_key(key);
        let mut pipe = redis::pipe();
        if let Some(answer) = answer
            && let Some((json, ms)) = self.encode(answer)
        {
            pipe.cmd("SET")
                .arg(&rkey)
                .arg(json)
                .arg("PX")
                .arg(ms)
                .ignore();
        }
        pipe.cmd("DEL").arg(format!("{rkey}:fill")).ignore();
        let _ = self
            .shared
            .run::<redis::Value, _>(Piece::Cache, &pipe)
            .await;
    }

    /// Waits for another replica's fill of `key`: its fresh answer, or `None` once the fill
    /// ended without one (or took longer than the vendor's timeout).
    pub async fn wait_fill(&self, key: &str) -> Option<Found> {
        let rkey = self.redis_key(key);
        let until = tokio::time::Instant::now() + self.fill;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(POLL).await;
            let mut pipe = redis::pipe();
            pipe.cmd("GET")
                .arg(&rkey)
                .cmd("PTTL")
                .arg(&rkey)
                .cmd("EXISTS")
                .arg(format!("{rkey}:fill"));
            let (raw, pttl, filling): (Option<Vec<u8>>, i64, bool) =
                self.shared.run(Piece::Cache, &pipe).await.ok()?;
            if let Some(found @ Found::Fresh { .. }) = raw.and_then(|raw| self.found(raw, pttl)) {
                return Some(found);
            }
            if !filling {
                return None;
            }
        }
        None
    }

    fn found(&self, raw: Vec<u8>, pttl: i64) -> Option<Found> {
        let answer: CallOutput = serde_json::from_slice::<Stored>(&raw).ok()?.into();
        let left_in_redis = Duration::from_millis(u64::try_from(pttl).ok()?);
        let fresh_ttl = self.fresh_ttl(&answer);
        // stored for fresh_ttl + stale: what is left beyond `stale` is left of its ttl
        match left_in_redis.checked_sub(self.stale) {
            Some(left) if !left.is_zero() => Some(Found::Fresh {
                answer,
                left: left.min(fresh_ttl),
            }),
            _ => Some(Found::Stale(answer)),
        }
    }

    /// The stored form of `answer` and how long to keep it (ms).
    fn encode(&self, answer: &CallOutput) -> Option<(Vec<u8>, u64)> {
        let json = serde_json::to_vec(&Stored::from(answer)).ok()?;
        let life = self.fresh_ttl(answer) + self.stale;
        Some((
            json,
            u64::try_from(life.as_millis()).unwrap_or(u64::MAX).max(1),
        ))
    }

    /// Stores `answer` for the other replicas (on a task: the caller does not wait).
    pub fn put(&self, key: &str, answer: &CallOutput) {
        let Some((json, ms)) = self.encode(answer) else {
            return;
        };
        let mut set = redis::cmd("SET");
        set.arg(self.redis_key(key)).arg(json).arg("PX").arg(ms);
        self.spawn(move |shared| async move {
            let _ = shared.run::<redis::Value, _>(Piece::Cache, &set).await;
        });
    }

    /// Drops every stored answer of this operation (after a write changed what it lists).
    pub fn invalidate_all(&self) {
        let pattern = format!("{}*", self.namespace);
        self.spawn(move |shared| async move {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500);
                let Ok((next, keys)) = shared
                    .run::<(u64, Vec<String>), _>(Piece::Cache, &scan)
                    .await
                else {
                    return;
                };
                if !keys.is_empty() {
                    let mut unlink = redis::cmd("UNLINK");
                    unlink.arg(&keys);
                    let _ = shared.run::<i64, _>(Piece::Cache, &unlink).await;
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        });
    }

    fn spawn<F, Fut>(&self, job: F)
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(job(Arc::clone(&self.shared)));
        }
    }
}
