//! How many vendor calls may be in progress at once, every vendor together.
//!
//! `server.max_vendor_calls` is the ceiling. Below it the limit adapts to one question: are
//! calls in progress waiting for their vendors, or for the gateway's CPU? A call in progress
//! holds a connection, its buffers and the answer (~60 KB measured); when answers arrive
//! faster than the CPU can read them (vendors that answer in a millisecond, many vendors a
//! query), more calls at once only add answers waiting in memory (16 vendors at 0 ms: 153 MiB
//! of peak RSS at 512 calls at once, 127 MiB and the same throughput at 64). When calls wait
//! for their vendors, the limit grows, up to the ceiling, so slow vendors are never starved:
//! 16 vendors at 200 ms need ~16 × the queries in progress.
//!
//! The signal is the share of a call's time spent between being woken (its answer, or the next
//! piece of it, arrived) and being polled again ([`stamped`]): ready work waiting for a
//! thread. It is a share, not a time: 16 answers of one query arriving together are read one
//! after the other, a millisecond or two of waiting that a 20 ms call does not mind but a
//! 0.2 ms one is made of. One call in [`SAMPLE_EVERY`] is stamped. An additive-increase,
//! multiplicative-decrease rule on the running average moves the limit between a floor and
//! the ceiling at most every [`ADJUST_EVERY`]; it starts at the floor, so a burst at start
//! does not open a connection per call that it would then keep idle. A ceiling at or below
//! the floor is a fixed limit.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The lowest adaptive limit: below the ceiling, the limit never falls under this many calls
/// (measured: 32 at once cut the throughput of 16 vendors at 0 ms by a quarter, 64 did not).
pub const FLOOR: usize = 64;
/// How often at most the limit moves.
pub const ADJUST_EVERY: Duration = Duration::from_millis(10);
/// Average share of a call's time spent waiting for a thread above which the limit shrinks by
/// an eighth: most of what calls in progress wait for is the gateway's CPU, not their vendor.
pub const SHRINK_ABOVE: f64 = 0.5;
/// Average share below which a busy limit grows by an eighth: calls wait for their vendors.
pub const GROW_BELOW: f64 = 0.25;
/// One call in this many is stamped and counted.
pub const SAMPLE_EVERY: u64 = 8;

/// The calls-in-progress limit of one client (see the module).
#[derive(Debug)]
pub struct CallLimit {
    slots: Arc<Semaphore>,
    ceiling: usize,
    floor: usize,
    state: Mutex<State>,
    /// Slots taken out of the limit while in use: forgotten as their calls end.
    debt: AtomicUsize,
    /// Calls started, for sampling.
    started: AtomicU64,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Running average of the share of a call's time it waited for a thread.
    waiting: f64,
    last_change: Instant,
}

/// A slot among the calls in progress, held until the call ends.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<CallLimit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take()
            && self
                .limit
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok()
        {
            // the limit shrank while this slot was in use: it goes with its call
            p.forget();
        }
    }
}

impl CallLimit {
    /// A limit adapting between `min(ceiling, FLOOR)` and `ceiling`, starting at the former.
    pub fn new(ceiling: usize) -> Arc<CallLimit> {
        CallLimit::with_floor(ceiling, FLOOR)
    }

    pub fn with_floor(ceiling: usize, floor: usize) -> Arc<CallLimit> {
        let ceiling = ceiling.max(1);
        let floor = floor.clamp(1, ceiling);
        Arc::new(CallLimit {
            slots: Arc::new(Semaphore::new(floor)),
            ceiling,
            floor,
            state: Mutex::new(State {
                limit: floor,
                waiting: 0.0,
                last_change: Instant::now(),
            }),
            debt: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Whether the call about to start is to be stamped and reported to
    /// [`finished`](Self::finished): one in [`SAMPLE_EVERY`] (none when the limit is fixed).
    pub fn sampled(&self) -> bool {
        self.floor < self.ceiling
            && self
                .started
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(SAMPLE_EVERY)
    }

    /// Waits for a free slot (first come, first served).
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        // the semaphore is never closed, so acquiring never fails
        let permit = Arc::clone(&self.slots).acquire_owned().await.ok();
        Slot {
            permit,
            limit: Arc::clone(self),
        }
    }

    /// A sampled call ended after `took`, of which it waited `waited` for a thread in all (see
    /// [`stamped`]).
    pub fn finished(&self, waited: Duration, took: Duration) {
        let share = waited.as_secs_f64() / took.as_secs_f64().max(1e-6);
        self.observe(share.min(1.0), Instant::now());
    }

    fn observe(&self, share: f64, now: Instant) {
        let mut s = self.lock();
        s.waiting += (share - s.waiting) / 16.0;
        if self.floor == self.ceiling || now.duration_since(s.last_change) < ADJUST_EVERY {
            return;
        }
        let in_use = (s.limit + self.debt.load(Ordering::Acquire))
            .saturating_sub(self.slots.available_permits());
        let step = (s.limit / 8).max(1);
        let to = if s.waiting > SHRINK_ABOVE {
            s.limit.saturating_sub(step).max(self.floor)
        } else if s.waiting < GROW_BELOW && 4 * in_use >= 3 * s.limit {
            (s.limit + step).min(self.ceiling)
        } else {
            s.limit
        };
        if to == s.limit {
            return;
        }
        if to < s.limit {
            let cut = s.limit - to;
            let forgotten = self.slots.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::AcqRel);
        } else {
            let add = to - s.limit;
            // slots still owed are kept instead of forgotten first
            let owed = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d - d.min(add))
                })
                .unwrap_or_else(|d| d);
            self.slots.add_permits(add - owed.min(add));
        }
        s.limit = to;
        s.last_change = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `fut`, adding up how long it waited between each wake and the poll that followed:
/// how long its ready work waited for a thread. Returns the output and that sum.
pub async fn stamped<F: Future>(fut: F) -> (F::Output, Duration) {
    let stamp = Arc::new(Stamp::default());
    let waker = Waker::from(Arc::clone(&stamp));
    let mut fut = std::pin::pin!(fut);
    let out = std::future::poll_fn(|cx| poll_stamped(fut.as_mut(), &stamp, &waker, cx)).await;
    (
        out,
        Duration::from_nanos(stamp.waited.load(Ordering::Relaxed)),
    )
}

fn poll_stamped<F: Future>(
    fut: Pin<&mut F>,
    stamp: &Stamp,
    waker: &Waker,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    let woken = stamp.woken.swap(0, Ordering::AcqRel);
    if woken != 0 {
        let gap = nanos_since_start().saturating_sub(woken);
        stamp.waited.fetch_add(gap, Ordering::Relaxed);
    }
    stamp.task.register(cx.waker());
    fut.poll(&mut Context::from_waker(waker))
}

/// The waker a [`stamped`] future's inner future sees: it notes when it was woken and wakes
/// the task.
#[derive(Debug, Default)]
struct Stamp {
    task: AtomicWaker,
    /// When it was last woken and not polled since (ns since [`nanos_since_start`]'s epoch; 0:
    /// not woken).
    woken: AtomicU64,
    /// Sum of the waits so far, ns.
    waited: AtomicU64,
}

impl Wake for Stamp {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // the first wake since the last poll is when the wait began
        let _ = self.woken.compare_exchange(
            0,
            nanos_since_start().max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.task.wake();
    }
}

fn nanos_since_start() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` calls that spent `share` of their time waiting for a thread, an interval apart.
    fn at(l: &CallLimit, share: f64, n: usize, mut now: Instant) -> Instant {
        for _ in 0..n {
            now += ADJUST_EVERY;
            l.observe(share, now);
        }
        now
    }

    #[tokio::test]
    async fn the_limit_starts_at_the_floor_grows_while_busy_calls_are_read_at_once_and_shrinks_back_when_answers_wait()
     {
        let l = CallLimit::with_floor(64, 8);
        assert_eq!(l.limit(), 8);
        assert_eq!(l.slots.available_permits(), 8);
        // idle: nothing to grow for
        let now = at(&l, 0.0, 50, Instant::now());
        assert_eq!(l.limit(), 8, "an idle limit stays where it is");
        // every slot in use, answers read at once: grows to the ceiling, and no further
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(l.acquire().await);
        }
        let mut now = now;
        for _ in 0..200 {
            // 20 ms at the vendor, 0.1 ms waiting for a thread
            now = at(&l, 0.005, 1, now);
            while l.slots.available_permits() > 0 {
                held.push(l.acquire().await);
            }
        }
        assert_eq!(l.limit(), 64);
        assert_eq!(
            held.len(),
            64,
            "every slot of the grown limit was handed out"
        );
        // a share between the two thresholds moves nothing
        let now = at(&l, 0.4, 200, now);
        assert_eq!(l.limit(), 64);
        // calls spending nine tenths of their time waiting for a thread: back down to the floor
        let now = at(&l, 0.9, 200, now);
        assert_eq!(l.limit(), 8);
        assert_eq!(l.slots.available_permits(), 0);
        assert_eq!(l.debt.load(Ordering::Acquire), 56, "56 slots to take back");
        // growing again while they are still in use keeps them instead of adding new slots
        let now = at(&l, 0.0, 40, now);
        assert_eq!(l.limit(), 64);
        assert_eq!(l.debt.load(Ordering::Acquire), 0);
        assert_eq!(
            l.slots.available_permits(),
            0,
            "no slot beyond the 64 in use"
        );
        // down again; the 56 slots taken out are forgotten as their calls end, 8 come back
        let _ = at(&l, 0.9, 200, now);
        assert_eq!((l.limit(), l.debt.load(Ordering::Acquire)), (8, 56));
        drop(held);
        assert_eq!(l.debt.load(Ordering::Acquire), 0);
        assert_eq!(l.slots.available_permits(), 8);
    }

    #[test]
    fn one_call_in_eight_is_sampled_and_none_under_a_fixed_limit() {
        let l = CallLimit::with_floor(64, 8);
        let sampled = (0..80).filter(|_| l.sampled()).count();
        assert_eq!(sampled, 10);
        let fixed = CallLimit::with_floor(2, 64);
        assert!((0..80).all(|_| !fixed.sampled()));
    }

    #[test]
    fn a_ceiling_at_or_below_the_floor_is_a_fixed_limit() {
        let l = CallLimit::with_floor(2, 64);
        assert_eq!((l.limit(), l.slots.available_permits()), (2, 2));
        let _ = at(&l, 1.0, 100, Instant::now());
        assert_eq!(l.limit(), 2);
    }

    #[tokio::test]
    async fn changes_wait_for_the_interval() {
        let l = CallLimit::with_floor(64, 8);
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(l.acquire().await);
        }
        let start = Instant::now();
        // busy, calls waiting for their vendor, all within one interval of the start: the
        // average moves, the limit does not
        for _ in 0..100 {
            l.observe(0.0, start + ADJUST_EVERY / 2);
        }
        assert_eq!(l.limit(), 8);
        l.observe(0.0, start + ADJUST_EVERY);
        assert_eq!(l.limit(), 9, "one step once the interval is over");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stamped_future_counts_the_time_between_its_wake_and_its_next_poll() {
        // woken from another thread after 5 ms while this thread is busy for 30 ms: ~25 ms
        // of ready work waiting for a thread, not the 5 ms it waited for its answer
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            let _ = tx.send(());
        });
        let blocker = tokio::spawn(async { std::thread::sleep(Duration::from_millis(30)) });
        let (answer, waited) = stamped(rx).await;
        answer.unwrap();
        blocker.await.unwrap();
        assert!(
            waited >= Duration::from_millis(15),
            "waited {waited:?} behind a busy thread"
        );
        // nothing else to run: the answer is read as soon as it comes
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            let _ = tx.send(());
        });
        let (answer, waited) = stamped(rx).await;
        answer.unwrap();
        assert!(waited < Duration::from_millis(10), "waited {waited:?}");
    }
}
