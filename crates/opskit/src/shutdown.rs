//! The shutdown coordinator: one signal, seen by readiness, the server and the drain.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let shutdown = opskit::Shutdown::new();
//! assert!(!shutdown.is_triggered());
//! let waiter = { let s = shutdown.clone(); tokio::spawn(async move { s.triggered().await }) };
//! shutdown.trigger();
//! waiter.await.unwrap();
//! assert!(shutdown.is_triggered());
//! # }
//! ```

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{watch, Notify};

/// How long after the listener closed an idle connection may still bring a
/// request (answered with `Connection: close`): one just accepted may have
/// its first request on the way, a keep-alive client its next one. Both
/// servers close idle connections after it.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) const LAST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long before the drain's deadline the handlers still running are
/// stopped and answered (503, gRPC UNAVAILABLE), so that their answers are
/// written before the server closes the connections at the deadline.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) const ANSWER_BEFORE_CUT: std::time::Duration = std::time::Duration::from_millis(250);

/// A cloneable handle on the process' shutdown state.
///
/// [`Ops::serve`](crate::Ops) triggers it on SIGTERM or SIGINT; readiness reports
/// 503 from that moment; the server then waits the configured delay, stops
/// accepting, and drains in-flight requests.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    /// Set when the drain's deadline (`OPSKIT_SHUTDOWN_TIMEOUT`) has passed:
    /// requests dropped from then on were cut by the server, not the client.
    deadline_passed: Arc<AtomicBool>,
    /// Wakes the handlers waiting on [`CutSignal`] when the deadline passes.
    cut: Arc<Notify>,
    /// Requests started and not yet finished (logged), so that the server
    /// can wait for the lines of the requests it cut before the log closes.
    /// Counted only once a server that waits for them asks (`track`): every
    /// other service would pay two shared atomic writes per request for it.
    requests: Arc<AtomicUsize>,
    track: Arc<AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A coordinator that has not been triggered.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
            deadline_passed: Arc::new(AtomicBool::new(false)),
            cut: Arc::new(Notify::new()),
            requests: Arc::new(AtomicUsize::new(0)),
            track: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the shutdown (idempotent).
    pub fn trigger(&self) {
        self.tx.send_if_modified(|v| !std::mem::replace(v, true));
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once shutdown has started.
    pub async fn triggered(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it closed.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Whether a response with this status should close its connection:
    /// from the shutdown signal on, so that keep-alive clients stop reusing a
    /// connection the server is about to close and open a new one (to
    /// another instance once load balancers have seen readiness fail); never
    /// a `101 Switching Protocols`, whose connection goes on as the new
    /// protocol.
    ///
    /// Both servers call it for every response: HTTP/1.1 answers carry
    /// `Connection: close` and the server closes the connection after them;
    /// HTTP/2 connections get a GOAWAY instead (streams in flight finish).
    ///
    /// ```
    /// let shutdown = opskit::Shutdown::new();
    /// assert!(!shutdown.close_connection(200));
    /// shutdown.trigger();
    /// assert!(shutdown.close_connection(200));
    /// assert!(!shutdown.close_connection(101));
    /// ```
    pub fn close_connection(&self, status: u16) -> bool {
        status != 101 && self.is_triggered()
    }

    /// Marks the drain's deadline as passed: requests still running are
    /// about to be cut by the server. Handlers still running stop now and
    /// their requests are answered (see [`CutSignal`]).
    #[cfg(any(feature = "axum", feature = "actix"))]
    pub(crate) fn pass_deadline(&self) {
        self.deadline_passed.store(true, Ordering::Release);
        self.cut.notify_waiters();
    }

    /// Whether the drain's deadline has passed: a request dropped now was
    /// cut by the server (logged with status 503 and `error.type`
    /// `shutdown`), not abandoned by its client.
    pub fn deadline_passed(&self) -> bool {
        self.deadline_passed.load(Ordering::Acquire)
    }

    /// Asks for requests to be counted from now on (before serving any):
    /// the server will wait for the lines of those it cuts.
    #[cfg(feature = "actix")]
    pub(crate) fn track_requests(&self) {
        self.track.store(true, Ordering::Release);
    }

    /// Counts a request as started, when requests are tracked (the recorder
    /// calls it); whether it was counted, so that only then is its finish.
    pub(crate) fn request_started(&self) -> bool {
        if !self.track.load(Ordering::Relaxed) {
            return false;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Counts a request as finished: its access line is written.
    pub(crate) fn request_finished(&self) {
        self.requests.fetch_sub(1, Ordering::Release);
    }

    /// Waits (up to `timeout`) until every started request has finished: a
    /// server whose workers drop the requests they cut on their own threads
    /// (Actix) waits for their access lines before the log closes.
    #[cfg(feature = "actix")]
    pub(crate) async fn requests_finished(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.requests.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[cfg(any(feature = "axum", feature = "actix"))]
    /// Triggers this coordinator on the first SIGTERM or SIGINT (Ctrl-C).
    pub(crate) fn listen_for_signals(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let signal = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
                () = this.triggered() => return,
            };
            #[cfg(not(unix))]
            let signal = tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                () = this.triggered() => return,
            };
            tracing::info!(
                signal,
                "shutdown signal received; readiness now reports 503"
            );
            this.trigger();
        });
        Ok(())
    }
}

pin_project! {
    /// The drain's deadline as seen by one request's handler: ready once
    /// [`Shutdown::pass_deadline`] has run, so that the pipeline answers the
    /// request (503, or UNAVAILABLE to a gRPC client: retry elsewhere)
    /// instead of the connection being closed under it.
    ///
    /// Armed on the first poll that finds the handler still pending: a
    /// handler that answers at once pays nothing, one that waits pays one
    /// registration with the shutdown's `Notify`.
    #[derive(Debug, Default)]
    pub(crate) struct CutSignal {
        #[pin]
        notified: Option<tokio::sync::futures::OwnedNotified>,
    }
}

impl CutSignal {
    /// Whether `shutdown`'s deadline has passed; registers to be woken when
    /// it does. Never ready without a shutdown coordinator.
    pub(crate) fn poll_cut(
        self: Pin<&mut Self>,
        shutdown: Option<&Shutdown>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let Some(shutdown) = shutdown else {
            return Poll::Pending;
        };
        let mut notified = self.project().notified;
        if notified.is_none() {
            notified.set(Some(Arc::clone(&shutdown.cut).notified_owned()));
            // Registered before the flag is read: a deadline passed between
            // the two still wakes this task.
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }
        }
        if shutdown.deadline_passed() {
            return Poll::Ready(());
        }
        match notified.as_pin_mut() {
            Some(n) => n.poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(all(test, any(feature = "axum", feature = "actix")))]
mod tests {
    use super::*;

    /// Polls `cut` once with a waker that counts its wakes.
    fn poll(
        cut: Pin<&mut CutSignal>,
        shutdown: Option<&Shutdown>,
        wakes: &Arc<AtomicUsize>,
    ) -> Poll<()> {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(Arc::new(Count(Arc::clone(wakes))));
        cut.poll_cut(shutdown, &mut Context::from_waker(&waker))
    }

    #[test]
    fn the_cut_wakes_a_waiting_handler_and_then_stays_ready() {
        let shutdown = Shutdown::new();
        let wakes = Arc::new(AtomicUsize::new(0));
        let mut cut = std::pin::pin!(CutSignal::default());
        assert!(poll(cut.as_mut(), Some(&shutdown), &wakes).is_pending());
        shutdown.trigger();
        assert!(poll(cut.as_mut(), Some(&shutdown), &wakes).is_pending());
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
        shutdown.pass_deadline();
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "woken at the deadline");
        assert!(poll(cut.as_mut(), Some(&shutdown), &wakes).is_ready());
        // Armed after the deadline: ready at once.
        let mut late = std::pin::pin!(CutSignal::default());
        assert!(poll(late.as_mut(), Some(&shutdown), &wakes).is_ready());
        // Without a coordinator: never.
        let mut none = std::pin::pin!(CutSignal::default());
        assert!(poll(none.as_mut(), None, &wakes).is_pending());
    }
}
