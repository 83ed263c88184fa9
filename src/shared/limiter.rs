//! A vendor's quota (`limits.rps`, `burst`) held across replicas: GCRA in one Lua script.
//!
//! `<prefix>rate:<vendor>` holds the theoretical arrival time (TAT, µs on Redis's clock, so
//! replicas' clocks do not matter). A call *reserves* its slot: the script answers how long to
//! wait before sending (0 when there is room) and moves the TAT on, or answers -1 when the slot
//! is further away than the caller may queue (`queue_ms`), reserving nothing. One round trip
//! per call, and waiting callers are served in the order they reserved.
//!
//! Used by `VendorGuard::pace`; when Redis cannot be asked, `pace` falls back to the replica's
//! own limiter (each replica then allows the whole quota: see docs/replicas.md).
use std::sync::Arc;
use std::time::Duration;

use super::{Call, Piece, Shared, Unavailable};

/// ARGV: emission interval (µs), burst tolerance (µs), longest wait (µs).
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if wait > max_wait then return -1 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return wait
";

/// One vendor's shared quota.
pub struct SharedRate {
    shared: Arc<Shared>,
    key: String,
    interval_us: u64,
    tolerance_us: u64,
    script: redis::Script,
}

impl SharedRate {
    /// `rps` calls per second, `burst` at once (as the local limiter: `burst` defaults to `rps`).
    pub fn new(shared: Arc<Shared>, vendor: &str, rps: u32, burst: u32) -> SharedRate {
        let interval_us = 1_000_000 / u64::from(rps.max(1));
        SharedRate {
            key: shared.key(&format!("rate:{vendor}")),
            shared,
            interval_us: interval_us.max(1),
            tolerance_us: interval_us * u64::from(burst.max(1) - 1),
            script: redis::Script::new(RESERVE),
        }
    }

    /// Reserves the next slot: `Some(wait)` before sending, or `None` when the slot is more
    /// than `max_wait` away (nothing reserved: the call is refused as rate limited).
    pub async fn reserve(&self, max_wait: Duration) -> Result<Option<Duration>, Unavailable> {
        let max_wait_us = u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX / 2);
        let call = Call {
            script: &self.script,
            keys: vec![self.key.clone()],
            args: vec![
                self.interval_us.to_string().into_bytes(),
                self.tolerance_us.to_string().into_bytes(),
                max_wait_us.to_string().into_bytes(),
            ],
        };
        let wait: i64 = self.shared.run(Piece::Limiter, &call).await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_micros))
    }
}
