//! One access-token fetch for all replicas. Used by `engine::token::TokenCache` when its own
//! token is missing, stale or revoked (under its single-flight lock, so one caller per process
//! gets here at a time).
//!
//! `<prefix>tok:<vendor>` holds the token, expiring (PX) when replicas should stop handing it
//! out (`expires_in - refresh_before`); its PTTL tells a reader how long it may keep it.
//! `<prefix>tok:<vendor>:lock` is a short lock (SET NX PX `token_lock_ms`): its holder fetches
//! and stores the token, the other replicas wait for it. A replica whose token was answered 401
//! deletes the shared token only if it is still that one, so the first 401 renews it for
//! everyone and later 401s of the same token just read the new one.
//!
//! When Redis cannot be asked, the caller fetches its own token (one per replica).
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use secrecy::{ExposeSecret, SecretString};

use super::{Call, Piece, Shared};
use crate::engine::token::FetchedToken;

/// Deletes KEYS[1] if it holds ARGV[1].
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// How often a waiting replica looks for the token another one is fetching.
const POLL: Duration = Duration::from_millis(20);

/// The shared token of one vendor.
pub struct SharedTokens {
    shared: Arc<Shared>,
    key: String,
    lock: String,
    refresh_before: Duration,
    delete_if: redis::Script,
}

impl SharedTokens {
    pub fn new(shared: Arc<Shared>, vendor: &str, refresh_before: Duration) -> SharedTokens {
        SharedTokens {
            key: shared.key(&format!("tok:{vendor}")),
            lock: shared.key(&format!("tok:{vendor}:lock")),
            shared,
            refresh_before,
            delete_if: redis::Script::new(DELETE_IF),
        }
    }

    /// A token for this replica: the shared one unless it is `revoked`, else one fetched by
    /// whichever replica takes the lock (maybe this one, with `fetch`). `fetch` runs at most
    /// once; without Redis it runs here.
    pub async fn obtain<F, Fut, E>(
        &self,
        revoked: Option<&str>,
        fetch: F,
    ) -> Result<FetchedToken, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FetchedToken, E>>,
    {
        match self.read(revoked).await {
            Ok(Some(token)) => return Ok(token),
            Ok(None) => {}
            Err(()) => return fetch().await,
        }
        let nonce = format!("{:032x}", {
            use rand::RngExt as _;
            rand::rng().random::<u128>()
        });
        let mut lock = redis::cmd("SET");
        lock.arg(&self.lock)
            .arg(&nonce)
            .arg("NX")
            .arg("PX")
            .arg(self.shared.token_lock.as_millis() as u64);
        match self.shared.run::<Value, _>(Piece::Tokens, &lock).await {
            Ok(Value::Okay) => {
                // ours: unless the previous holder published a token meanwhile (between our
                // read and our lock), fetch, publish, unlock
                let fetched = match self.read(revoked).await {
                    Ok(Some(token)) => Ok(token),
                    Ok(None) | Err(()) => {
                        let fetched = fetch().await;
                        if let Ok(token) = &fetched {
                            self.publish(token).await;
                        }
                        fetched
                    }
                };
                let unlock = Call {
                    script: &self.delete_if,
                    keys: vec![self.lock.clone()],
                    args: vec![nonce.into_bytes()],
                };
                let _ = self.shared.run::<i64, _>(Piece::Tokens, &unlock).await;
                fetched
            }
            Ok(_) => {
                // another replica is fetching: wait for its token, at most the lock's life
                let until = tokio::time::Instant::now() + self.shared.token_lock;
                while tokio::time::Instant::now() < until {
                    tokio::time::sleep(POLL).await;
                    match self.read(revoked).await {
                        Ok(Some(token)) => return Ok(token),
                        Ok(None) => {}
                        Err(()) => break,
                    }
                }
                fetch().await
            }
            Err(_) => fetch().await,
        }
    }

    /// The shared token with how long it may be used, unless absent or `revoked` (which is
    /// then deleted, if still there, so one replica's 401 renews it for all).
    async fn read(&self, revoked: Option<&str>) -> Result<Option<FetchedToken>, ()> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&self.key).cmd("PTTL").arg(&self.key);
        let (token, pttl): (Option<String>, i64) = self
            .shared
            .run(Piece::Tokens, &pipe)
            .await
            .map_err(|_| ())?;
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if revoked == Some(token.as_str()) {
            let delete = Call {
                script: &self.delete_if,
                keys: vec![self.key.clone()],
                args: vec![token.into_bytes()],
            };
            self.shared
                .run::<i64, _>(Piece::Tokens, &delete)
                .await
                .map_err(|_| ())?;
            return Ok(None);
        }
        let Ok(left) = u64::try_from(pttl) else {
            // no expiry set (-1) is never written by us; -2 is gone since the GET
            return Ok(None);
        };
        Ok(Some(FetchedToken {
            token: SecretString::from(token),
            expires_in: Duration::from_millis(left) + self.refresh_before,
        }))
    }

    /// Stores a freshly fetched token for the other replicas, until they should refresh it.
    async fn publish(&self, token: &FetchedToken) {
        let valid_for = token.expires_in.saturating_sub(self.refresh_before);
        let ms = u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return;
        }
        let mut set = redis::cmd("SET");
        set.arg(&self.key)
            .arg(token.token.expose_secret())
            .arg("PX")
            .arg(ms);
        let _ = self.shared.run::<Value, _>(Piece::Tokens, &set).await;
    }
}
