//! A bounded, non-blocking writer of log lines: the application appends each
//! line to one shared buffer; a background thread writes what has gathered
//! to the real output.
//!
//! Written by hand rather than with `tracing-appender`'s `NonBlocking`,
//! which copies every line into a fresh `Vec`, sends it over a channel and
//! wakes its writer thread for each one: an allocation, a free on another
//! thread and a futex wake-up per request (~1,000 instructions of a log
//! line under callgrind, and a context switch per request on a busy core).
//! Here a line is one `memcpy` under a short lock; the writer thread wakes
//! itself every few milliseconds while lines keep coming (a request wakes it
//! only after a quiet spell, or when the buffer is half full), and writes
//! all that gathered in one `write(2)`.
//!
//! Bounded: past [`DEFAULT_LIMIT`] bytes waiting, lines are dropped and
//! counted rather than blocking a request or growing memory.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes that may wait for the output (about 16,000 access lines); past
/// this, new lines are dropped and counted.
pub const DEFAULT_LIMIT: usize = 8 << 20;

/// A buffer kept between writes is shrunk back to this after a burst.
const KEEP: usize = 256 << 10;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
    limit: usize,
}

/// How long the writer thread lets lines gather after a write before it
/// looks again: under load it writes every few milliseconds, woken by its
/// own timer, and no request pays for a wake-up.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    mode: Mode,
    closed: bool,
}

/// What the writer thread is doing, for producers deciding whether to wake it.
#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum Mode {
    /// Writing (or about to): lines appended now go in its next batch.
    #[default]
    Busy,
    /// Waiting up to [`LINGER`] for more lines: woken early only when the
    /// buffer is half full.
    Lingering,
    /// Idle, waiting without a timeout: the next line wakes it (one system
    /// call, only after a quiet spell).
    Asleep,
}

impl Shared {
    /// Half the bound waiting: the writer should not linger any longer.
    fn half_full(&self, st: &State) -> bool {
        st.buf.len() >= self.limit / 2
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent
        // (appends and swaps only): keep logging.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer half: cheap to clone, a `MakeWriter` for `tracing-subscriber`
/// (each event's line arrives in one `write`).
#[derive(Clone)]
pub struct LineWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LineWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWriter")
            .field("dropped", &self.shared.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Counts lines dropped because the output could not keep up (or failed).
#[derive(Clone)]
pub struct DroppedLines(Arc<Shared>);

impl DroppedLines {
    /// Lines dropped so far.
    pub fn dropped_lines(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for DroppedLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DroppedLines")
            .field(&self.dropped_lines())
            .finish()
    }
}

/// Owns the writer thread: dropping it writes out every waiting line and
/// stops the thread. Lines logged afterwards are dropped and counted.
#[must_use = "dropping the guard stops the log writer"]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for WriterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterGuard").finish_non_exhaustive()
    }
}

/// How long dropping the [`WriterGuard`] waits for the waiting lines to be
/// written: an output that does not take them (a full pipe nobody reads)
/// must not hold the process past its shutdown budget (docs/health.md).
pub const FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let Some(t) = self.thread.take() else { return };
        // `JoinHandle` has no timed join: poll its end, briefly, at exit.
        let deadline = std::time::Instant::now() + FLUSH_AT_EXIT;
        while !t.is_finished() {
            if std::time::Instant::now() >= deadline {
                return; // the thread is left to the process's exit
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = t.join();
    }
}

/// A non-blocking writer into `out` holding at most `limit` bytes waiting,
/// with its thread's guard. [`init`](crate::init) writes stdout through one.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let (writer, guard) = opskit::logging::non_blocking(std::io::stdout(), opskit::logging::DEFAULT_LIMIT);
/// let subscriber = tracing_subscriber::registry().with(opskit::logging::json_layer(writer));
/// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
/// drop(guard); // writes out what is waiting
/// ```
pub fn non_blocking<W: Write + Send + 'static>(out: W, limit: usize) -> (LineWriter, WriterGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
        limit,
    });
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("opskit-log".into())
        .spawn(move || drain(&worker, out))
        .map_err(|e| {
            eprintln!("opskit: no log writer thread ({e}); log lines are dropped and counted")
        })
        .ok();
    if thread.is_none() {
        // Without a thread the lines would only pile up: mark the writer
        // closed so they are counted as dropped instead.
        shared.lock().closed = true;
    }
    (
        LineWriter {
            shared: shared.clone(),
        },
        WriterGuard { shared, thread },
    )
}

impl LineWriter {
    /// The counter of dropped lines.
    pub fn dropped(&self) -> DroppedLines {
        DroppedLines(self.shared.clone())
    }
}

fn drain<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut st = shared.lock();
            if !st.closed && !shared.half_full(&st) {
                st.mode = Mode::Lingering;
                st = shared
                    .wake
                    .wait_timeout_while(st, LINGER, |s| !s.closed && !shared.half_full(s))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            while st.buf.is_empty() && !st.closed {
                st.mode = Mode::Asleep;
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.mode = Mode::Busy;
            std::mem::swap(&mut st.buf, &mut batch);
            st.closed
        };
        if !batch.is_empty() && out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            let lines = batch.iter().filter(|&&b| b == b'\n').count();
            shared.dropped.fetch_add(lines as u64, Ordering::Relaxed);
        }
        batch.clear();
        if batch.capacity() > KEEP {
            batch.shrink_to(KEEP);
        }
        // Once closed (seen under the lock that took the last batch), no
        // line is appended any more: nothing is left.
        if closed {
            return;
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        if st.closed || st.buf.len() + line.len() > shared.limit {
            drop(st);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        st.buf.extend_from_slice(line);
        let wake = match st.mode {
            Mode::Asleep => true,
            Mode::Lingering => shared.half_full(&st),
            Mode::Busy => false,
        };
        if wake {
            st.mode = Mode::Busy;
        }
        drop(st);
        if wake {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>, Arc<AtomicU64>);

    impl Write for Collect {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_from_many_threads() {
        let out = Collect::default();
        let (w, guard) = non_blocking(out.clone(), DEFAULT_LIMIT);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "lines of one thread keep their order");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4]);
        assert_eq!(w.dropped().dropped_lines(), 0);
        // Batched: far fewer writes than lines.
        assert!(out.1.load(Ordering::Relaxed) < 20_000);
    }

    /// "A line logged alone appears at once": after a quiet spell the writer
    /// thread sleeps without a timer and the line itself wakes it; while it
    /// lingers after a write, a line waits at most [`LINGER`]. The bound
    /// below is 100 lingers: scheduling noise on a loaded machine stays far
    /// under it, and a writer that waited for a timer, a batch or a full
    /// buffer instead of being woken would miss it.
    /// An output that never takes a line (a full pipe nobody reads): the
    /// guard's drop still returns, after [`FLUSH_AT_EXIT`], instead of
    /// holding the process at exit. (The 30 s bound only catches a hang.)
    #[test]
    fn an_output_that_never_takes_a_line_does_not_hold_the_exit() {
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                loop {
                    std::thread::park();
                }
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut w, guard) = non_blocking(Stuck, DEFAULT_LIMIT);
        w.write_all(b"never written\n").unwrap();
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
        assert!(
            dropped.recv_timeout(Duration::from_secs(30)).is_ok(),
            "dropping the guard waited for an output that never takes the line"
        );
    }

    #[test]
    fn a_line_alone_is_written_promptly() {
        let out = Collect::default();
        let (mut w, _guard) = non_blocking(out.clone(), DEFAULT_LIMIT);
        let bound = LINGER * 100;
        let shared = w.shared.clone();
        let asleep = || shared.lock().mode == Mode::Asleep;
        for round in 1..=3 {
            // A quiet spell: the thread goes to sleep, without a timer.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !asleep() {
                assert!(Instant::now() < deadline, "the writer never went idle");
                std::thread::sleep(LINGER);
            }
            // The line alone wakes it (and says so), then the next one
            // finds it lingering and is written with the next batch.
            for n in 1..=2 {
                let written = out.0.lock().unwrap().len();
                let t = Instant::now();
                w.write_all(b"one\n").unwrap();
                if n == 1 {
                    assert!(!asleep(), "round {round}: the line did not wake the writer");
                }
                while out.0.lock().unwrap().len() < written + 4 {
                    assert!(
                        t.elapsed() < bound,
                        "round {round}, line {n}: not written within {bound:?}"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// An output that blocks until released: lines past the limit are
    /// dropped and counted, the caller never waits, memory stays bounded.
    #[test]
    fn a_stuck_output_drops_and_counts_instead_of_blocking() {
        #[derive(Clone)]
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Collect);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let (m, c) = &*self.0;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = c.wait(open).unwrap();
                }
                self.1.write(b)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let stuck = Stuck(gate.clone(), Collect::default());
        let (mut w, guard) = non_blocking(stuck.clone(), 1_000);
        let started = Instant::now();
        for _ in 0..1_000 {
            w.write_all(b"0123456789\n").unwrap();
        }
        // Whatever the thread took before it blocked, plus ~1,000 bytes.
        assert!(w.dropped().dropped_lines() >= 800);
        assert!(started.elapsed() < Duration::from_secs(5));
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let written = stuck.1 .0.lock().unwrap().len() as u64 / 11;
        assert_eq!(written + w.dropped().dropped_lines(), 1_000);
        // After the guard, lines are counted, not lost silently.
        w.write_all(b"late\n").unwrap();
        assert_eq!(written + w.dropped().dropped_lines(), 1_001);
    }

    #[test]
    fn a_failing_output_counts_its_lines_as_dropped() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut w, guard) = non_blocking(Broken, DEFAULT_LIMIT);
        for _ in 0..10 {
            w.write_all(b"x\n").unwrap();
        }
        drop(guard);
        assert_eq!(w.dropped().dropped_lines(), 10);
    }
}
