//! `Idempotency-Key` records in Redis, so a key repeated to another replica replays the first
//! answer instead of creating a second record.
//!
//! One Redis string per key, `<prefix>idem:<key>`:
//!
//! * `R:<owner>:<fingerprint>` while the claiming request runs, with a PX lease
//!   (`idempotency_lease_ms`) so a replica that dies mid-request frees the key eventually;
//! * `D:<json>` once answered: fingerprint, status, content type and body, for the record TTL.
//!
//! A claim is one Lua call (SET NX, else the current value), so exactly one request proceeds.
//! Completing or releasing checks the owner, so a claim whose lease ran out never overwrites
//! the next holder's. The lease must outlast a request (`server.request_timeout_ms`). Whenever Redis cannot be asked, `claim` answers
//! [`IdempotencyError::Unavailable`] and the request is refused: running it could create a
//! second record.
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::{Call, Piece, Shared};
use crate::idempotency::{
    Claim, ClaimFuture, IdempotencyError, IdempotencyStore, Pending, Settle, StoredResponse,
};

/// SET NX with the lease, else the current value: `nil` means "claimed".
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
";

/// Replaces the claim of owner ARGV[1] (the prefix `R:<owner>:`) with the answer; also when
/// the claim's lease ran out and nobody claimed the key since (the answer is still the truth).
const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Deletes the claim of owner ARGV[1], and nothing else.
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// How often a repeat looks whether the first request has answered.
const POLL: Duration = Duration::from_millis(20);

#[derive(Serialize, Deserialize)]
struct Done {
    fp: String,
    status: u16,
    ct: String,
    body: String,
}

/// The [`IdempotencyStore`] several replicas share.
pub struct RedisStore {
    shared: Arc<Shared>,
    ttl: Duration,
    scripts: Arc<Scripts>,
}

struct Scripts {
    claim: redis::Script,
    complete: redis::Script,
    release: redis::Script,
}

impl RedisStore {
    /// Records live `ttl` after their answer.
    pub fn new(shared: Arc<Shared>, ttl: Duration) -> RedisStore {
        RedisStore {
            shared,
            ttl,
            scripts: Arc::new(Scripts {
                claim: redis::Script::new(CLAIM),
                complete: redis::Script::new(COMPLETE),
                release: redis::Script::new(RELEASE),
            }),
        }
    }

    async fn claim_inner(
        &self,
        key: &str,
        fingerprint: &str,
        wait: Duration,
    ) -> Result<Claim, IdempotencyError> {
        let deadline = tokio::time::Instant::now().checked_add(wait);
        let rkey = self.shared.key(&format!("idem:{key}"));
        let owner = format!("{:032x}", {
            use rand::RngExt as _;
            rand::rng().random::<u128>()
        });
        let running = format!("R:{owner}:{fingerprint}");
        let lease = self.shared.idempotency_lease.as_millis().to_string();
        loop {
            let call = Call {
                script: &self.scripts.claim,
                keys: vec![rkey.clone()],
                args: vec![running.clone().into_bytes(), lease.clone().into_bytes()],
            };
            let current: Option<Vec<u8>> = self
                .shared
                .run(Piece::Idempotency, &call)
                .await
                .map_err(|_| IdempotencyError::Unavailable)?;
            let Some(current) = current else {
                return Ok(Claim::Proceed(Pending::settled_by(
                    key,
                    fingerprint,
                    Box::new(RedisClaim {
                        shared: Arc::clone(&self.shared),
                        scripts: Arc::clone(&self.scripts),
                        key: rkey,
                        owner: format!("R:{owner}:"),
                        ttl: self.ttl,
                    }),
                )));
            };
            match parse(&current) {
                Some(Record::Done(done)) if done.fp == fingerprint => {
                    return Ok(Claim::Replay(StoredResponse {
                        status: done.status,
                        content_type: done.ct,
                        body: B64
                            .decode(done.body.as_bytes())
                            .map_err(|_| IdempotencyError::Unavailable)?
                            .into(),
                    }));
                }
                Some(Record::Done(_)) => return Ok(Claim::Conflict),
                Some(Record::Running { fp }) if fp != fingerprint => return Ok(Claim::Conflict),
                Some(Record::Running { .. }) => {
                    let now = tokio::time::Instant::now();
                    match deadline {
                        Some(d) if now >= d => return Err(IdempotencyError::InProgress),
                        Some(d) => tokio::time::sleep(POLL.min(d - now)).await,
                        None => tokio::time::sleep(POLL).await,
                    }
                }
                // not ours to interpret: refuse rather than overwrite
                None => return Err(IdempotencyError::Unavailable),
            }
        }
    }
}

impl IdempotencyStore for RedisStore {
    fn claim(&self, key: &str, fingerprint: &str, wait: Duration) -> ClaimFuture<'_> {
        let key = key.to_owned();
        let fingerprint = fingerprint.to_owned();
        Box::pin(async move { self.claim_inner(&key, &fingerprint, wait).await })
    }
}

enum Record {
    Running { fp: String },
    Done(Done),
}

fn parse(value: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(value).ok()?;
    if let Some(rest) = text.strip_prefix("R:") {
        let (_owner, fp) = rest.split_once(':')?;
        return Some(Record::Running { fp: fp.to_owned() });
    }
    serde_json::from_str(text.strip_prefix("D:")?)
        .ok()
        .map(Record::Done)
}

/// A claim held in Redis by this process.
struct RedisClaim {
    shared: Arc<Shared>,
    scripts: Arc<Scripts>,
    key: String,
    /// `R:<owner>:`, the prefix of our claim's value.
    owner: String,
    ttl: Duration,
}

impl RedisClaim {
    /// Runs a settling script on a task, retrying while Redis is down, until the lease ends
    /// (after it the claim is no longer ours to settle).
    fn settle(
        self,
        script: fn(&Scripts) -> &redis::Script,
        args: Vec<Vec<u8>>,
        what: &'static str,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("idempotency record not settled: no tokio runtime");
            return;
        };
        runtime.spawn(async move {
            let give_up = tokio::time::Instant::now() + self.shared.idempotency_lease;
            let mut args_all = vec![self.owner.clone().into_bytes()];
            args_all.extend(args);
            loop {
                let call = Call {
                    script: script(&self.scripts),
                    keys: vec![self.key.clone()],
                    args: args_all.clone(),
                };
                if self
                    .shared
                    .run::<i64, _>(Piece::Idempotency, &call)
                    .await
                    .is_ok()
                {
                    return;
                }
                if tokio::time::Instant::now() >= give_up {
                    tracing::error!(
                        what,
                        "idempotency record not settled in Redis before its lease ended"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

impl Settle for RedisClaim {
    fn complete(self: Box<Self>, fingerprint: String, response: StoredResponse) {
        let done = Done {
            fp: fingerprint,
            status: response.status,
            ct: response.content_type,
            body: B64.encode(&response.body),
        };
        let value = match serde_json::to_string(&done) {
            Ok(json) => format!("D:{json}"),
            Err(_) => return self.release(),
        };
        let ttl = self.ttl.as_millis().max(1).to_string();
        self.settle(
            |s| &s.complete,
            vec![value.into_bytes(), ttl.into_bytes()],
            "complete",
        );
    }

    fn release(self: Box<Self>) {
        self.settle(|s| &s.release, Vec::new(), "release");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_foreign_values_do_not() {
        assert!(matches!(
            parse(b"R:abc:fp1"),
            Some(Record::Running { fp }) if fp == "fp1"
        ));
        let done = br#"D:{"fp":"f","status":201,"ct":"application/json","body":"e30="}"#;
        assert!(matches!(parse(done), Some(Record::Done(d)) if d.status == 201));
        for foreign in [&b"hello"[..], b"R:nofp", b"D:{", b"\xff"] {
            assert!(parse(foreign).is_none());
        }
    }
}
