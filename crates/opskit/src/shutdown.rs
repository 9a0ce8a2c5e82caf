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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// How long after the listener closed an idle connection may still bring a
/// request (answered with `Connection: close`): one just accepted may have
/// its first request on the way, a keep-alive client its next one. Both
/// servers close idle connections after it.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) const LAST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

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
    /// about to be cut by the server.
    #[cfg(any(feature = "axum", feature = "actix"))]
    pub(crate) fn pass_deadline(&self) {
        self.deadline_passed.store(true, Ordering::Release);
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
