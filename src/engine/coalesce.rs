//! Concurrent misses of one key made into one fill: the first lookup runs it, the others wait
//! for what it brings, its error included.
//!
//! The answer store used a moka cache for this (`or_try_insert_with`), which is built for
//! entries that stay: every miss inserted a waiter in one concurrent map and an entry in
//! another, took an async lock, queued two writes for moka's housekeeping (the insert and the
//! removal) and a timer — ~2 % of a miss's instructions and ~15 allocations, for a table that
//! holds only the fills in progress (a few hundred at most). A mutex around a hash map and a
//! `watch` channel per fill do the same.
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a fill brought, its error type erased (a table holds fills of any error type).
type Outcome<V> = Option<Result<V, Arc<dyn Any + Send + Sync>>>;

/// The fills in progress, by key.
pub struct Coalescer<K, V> {
    /// Each fill's channel: `None` while it runs, its outcome once it is over. The sender is
    /// its runner's; a runner that is dropped (its request cancelled) or panics closes it.
    running: Mutex<HashMap<K, watch::Receiver<Outcome<V>>, foldhash::fast::RandomState>>,
}

/// How a lookup took part in a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// It ran the fill.
    Ran,
    /// It waited for another lookup's fill.
    Waited,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Coalescer<K, V> {
    fn default() -> Self {
        Coalescer {
            running: Mutex::new(HashMap::default()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Coalescer<K, V> {
    /// Runs `fill` for `key`, unless a fill of `key` is running: then waits for it and
    /// shares its outcome. If that fill is abandoned (its lookup dropped, or it panicked), one
    /// of its waiters runs its own.
    pub async fn run<E, F>(&self, key: &K, fill: F) -> (Result<V, Arc<E>>, Part)
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        loop {
            let (mut waiting, ours) = {
                let mut running = self.lock();
                match running.get(key) {
                    Some(rx) => (rx.clone(), None),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        running.insert(key.clone(), rx.clone());
                        (rx, Some(tx))
                    }
                }
            };
            if let Some(tx) = ours {
                let leave = Leave {
                    table: self,
                    key,
                    mine: waiting,
                };
                let out = fill.await.map_err(Arc::new);
                let shared = out.clone().map_err(|e| e as Arc<dyn Any + Send + Sync>);
                tx.send_replace(Some(shared));
                drop(leave);
                return (out, Part::Ran);
            }
            let shared = match waiting.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                // the fill was abandoned: try again (run one, or wait for a newer one)
                Err(_) => continue,
            };
            return match shared.map(|o| o.map_err(Arc::downcast::<E>)) {
                Some(Ok(v)) => (Ok(v), Part::Waited),
                Some(Err(Ok(e))) => (Err(e), Part::Waited),
                // a fill of another error type under the same key: not shared, run ours
                _ => (fill.await.map_err(Arc::new), Part::Ran),
            };
        }
    }

    /// Fills running now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        HashMap<K, watch::Receiver<Outcome<V>>, foldhash::fast::RandomState>,
    > {
        // the map is consistent between any two statements: a panic elsewhere leaves it usable
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes a runner's fill out of the table when it ends: done, dropped or unwinding.
struct Leave<'a, K: Hash + Eq + Clone, V: Clone> {
    table: &'a Coalescer<K, V>,
    key: &'a K,
    mine: watch::Receiver<Outcome<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leave<'_, K, V> {
    fn drop(&mut self) {
        let mut running = self.table.lock();
        // only its own: after an abandoned fill another one may run under the key
        if running
            .get(self.key)
            .is_some_and(|rx| rx.same_channel(&self.mine))
        {
            running.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_lookups_of_a_key_share_one_fill() {
        let table = Coalescer::<u32, u32>::default();
        let fills = AtomicUsize::new(0);
        let fill = || async {
            fills.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, String>(7)
        };
        let (a, b, c) = tokio::join!(table.run(&1, fill()), table.run(&1, fill()), async {
            // another key is another fill
            table.run(&2, fill()).await
        });
        assert_eq!(fills.load(Ordering::SeqCst), 2);
        let parts = [a.1, b.1];
        assert!(
            parts.contains(&Part::Ran) && parts.contains(&Part::Waited),
            "{parts:?}"
        );
        assert_eq!((a.0.unwrap(), b.0.unwrap(), c.0.unwrap()), (7, 7, 7));
        assert_eq!(c.1, Part::Ran);
        assert_eq!(table.len(), 0, "a fill leaves the table when it ends");
    }

    #[tokio::test]
    async fn waiters_share_the_fill_s_error() {
        let table = Coalescer::<u32, u32>::default();
        let fill = || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err::<u32, _>("down".to_owned())
        };
        let (a, b) = tokio::join!(table.run(&1, fill()), table.run(&1, fill()));
        let (a, b) = (a.0.unwrap_err(), b.0.unwrap_err());
        assert!(Arc::ptr_eq(&a, &b), "one error, shared");
        assert_eq!(*a, "down");
    }

    #[tokio::test]
    async fn a_waiter_runs_its_own_fill_when_the_one_it_waits_for_is_dropped() {
        let table = Coalescer::<u32, u32>::default();
        let ran = AtomicUsize::new(0);
        let first = async {
            // never ends by itself: dropped by the timeout below
            let _ = tokio::time::timeout(
                Duration::from_millis(20),
                table.run(&1, std::future::pending::<Result<u32, String>>()),
            )
            .await;
        };
        let second = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            table
                .run(&1, async {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(9)
                })
                .await
        };
        let ((), (r, part)) = tokio::join!(first, second);
        assert_eq!((r.unwrap(), part), (9, Part::Ran));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(table.len(), 0);
    }

    #[tokio::test]
    async fn a_panicking_fill_leaves_the_table() {
        let table = Arc::new(Coalescer::<u32, u32>::default());
        let t = Arc::clone(&table);
        let panicked = tokio::spawn(async move {
            t.run(&1, async {
                if true {
                    panic!("fill");
                }
                Ok::<u32, String>(0)
            })
            .await
        })
        .await;
        assert!(panicked.is_err());
        assert_eq!(table.len(), 0);
        let (r, part) = table.run(&1, async { Ok::<_, String>(3) }).await;
        assert_eq!((r.unwrap(), part), (3, Part::Ran));
    }
}
