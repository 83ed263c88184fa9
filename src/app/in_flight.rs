//! Which cached reads have a vendor call in flight right now.
//!
//! The response cache answers a request that waited for an identical call in flight the way
//! it answers a plain hit (`Lookup::Hit`); the catalogue counts the two apart
//! (`cgw_cache_lookups_total{result="coalesced"}`), because a burst of coalesced waits says
//! the vendor is slow while hits say nothing. A request that finds its key here when it looks,
//! and is then answered without calling the vendor itself, waited for that call.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The cache keys with a vendor call running, each with the number of such calls.
#[derive(Debug, Default)]
pub struct InFlightCalls {
    keys: Mutex<HashMap<Arc<str>, u32>>,
}

impl InFlightCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u32>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call for `key` is running now.
    pub fn busy(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Marks a call for `key` as running until the returned guard is dropped (the call ended
    /// or was cancelled).
    pub fn enter(&self, key: Arc<str>) -> Calling<'_> {
        *self.lock().entry(key.clone()).or_insert(0) += 1;
        Calling { calls: self, key }
    }
}

/// A running call of [`InFlightCalls::enter`].
pub struct Calling<'a> {
    calls: &'a InFlightCalls,
    key: Arc<str>,
}

impl Drop for Calling<'_> {
    fn drop(&mut self) {
        let mut keys = self.calls.lock();
        if let Some(n) = keys.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_busy_while_any_of_its_calls_runs() {
        let calls = InFlightCalls::default();
        let key: Arc<str> = Arc::from("op\u{1f}list_coupons\u{1f}m");
        assert!(!calls.busy(&key));
        let a = calls.enter(key.clone());
        let b = calls.enter(key.clone());
        assert!(calls.busy(&key));
        assert!(!calls.busy("op\u{1f}list_coupons\u{1f}other"));
        drop(a);
        assert!(calls.busy(&key), "the second call still runs");
        drop(b);
        assert!(!calls.busy(&key));
        assert!(calls.lock().is_empty(), "nothing is kept for an idle key");
    }
}
