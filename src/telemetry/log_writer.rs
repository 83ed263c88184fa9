//! Where log lines go: a buffer that a thread of its own writes to stderr in batches.
//!
//! A request only appends its line to memory; it never waits on stderr (a slow terminal, a full
//! pipe, a stalled log shipper). tracing-appender's non-blocking writer does that too, but it
//! hands each line to its thread through a channel and wakes the thread for every line: under
//! load that is a context switch per request on a 2-core machine, which the benchmark showed.
//! Here the thread wakes every [`FLUSH_EVERY`], or as soon as [`FLUSH_AT`] bytes wait, and writes
//! everything pending with one call. Lines are kept whole and in order. When stderr stalls and
//! [`MAX_PENDING`] bytes wait, further lines are dropped and counted (the log must never hold
//! memory or requests hostage), and the count is written once stderr moves again.
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Pending bytes that wake the writer at once.
const FLUSH_AT: usize = 64 * 1024;
/// Pending bytes beyond which lines are dropped.
const MAX_PENDING: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
struct State {
    pending: Vec<u8>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer the log layers are given (cheap to clone).
#[derive(Debug, Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread after writing what is pending (on drop).
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread that writes to `out`.
pub fn spawn<W: Write + Send + 'static>(out: W) -> (LogWriter, FlushGuard) {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(&shared, out))
            .expect("start the log writer thread")
    };
    (
        LogWriter {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    )
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(FLUSH_AT);
    loop {
        let closed = {
            let mut state = shared.lock();
            if !state.closed && state.pending.len() < FLUSH_AT {
                state = shared
                    .wake
                    .wait_timeout(state, FLUSH_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut state.pending, &mut spare);
            state.closed
        };
        // written outside the lock: requests keep appending meanwhile
        if !spare.is_empty() {
            let _ = out.write_all(&spare);
            spare.clear();
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "{{\"level\":\"WARN\",\"target\":\"log\",\"message\":\"{dropped} log lines dropped: stderr did not keep up\"}}"
            );
        }
        let _ = out.flush();
        if closed {
            return;
        }
    }
}

impl LogWriter {
    /// Appends `buf` (whole lines) to what the thread writes next, or drops it past the bound.
    fn append(&self, buf: &[u8]) {
        let mut state = self.shared.lock();
        if state.pending.len() + buf.len() > MAX_PENDING {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.pending.extend_from_slice(buf);
        if state.pending.len() >= FLUSH_AT {
            self.shared.wake.notify_one();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for &LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read while the writer owns it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_the_guard_flushes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        w.write_all(format!("{t}:{i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t}:")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(
                mine,
                (0..500).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
    }

    #[test]
    fn a_line_is_written_within_the_flush_interval_without_more_lines() {
        let sink = Sink::default();
        let (mut writer, _guard) = spawn(sink.clone());
        writer.write_all(b"one\n").unwrap();
        // generous: the writer wakes every FLUSH_EVERY on its own
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < until, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&sink.0.lock().unwrap()[..], b"one\n");
    }

    #[test]
    fn a_stalled_output_drops_lines_beyond_the_bound_and_says_how_many() {
        // an output that blocks until released: the writer thread sits in write_all
        #[derive(Clone)]
        struct Stalled(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut o = open.lock().unwrap();
                while !*o {
                    o = cv.wait(o).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (mut writer, guard) = spawn(Stalled(gate.clone(), sink.clone()));
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        // far more than MAX_PENDING while the output is stalled
        for _ in 0..(3 * MAX_PENDING / 1024) {
            writer.write_all(&line).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let out = sink.0.lock().unwrap().clone();
        let text = String::from_utf8_lossy(&out);
        let kept = text.lines().filter(|l| l.starts_with('x')).count();
        // the batch the thread took before it stalled, and what fitted in the bound after
        assert!(
            kept > 0 && kept <= 2 * MAX_PENDING / 1024,
            "{kept} lines kept"
        );
        let dropped = 3 * MAX_PENDING / 1024 - kept;
        assert!(
            text.contains(&format!("{dropped} log lines dropped")),
            "the drop is reported with its count"
        );
    }
}
