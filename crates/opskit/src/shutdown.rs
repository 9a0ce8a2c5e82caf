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

use std::sync::Arc;
use tokio::sync::watch;

/// A cloneable handle on the process' shutdown state.
///
/// [`Ops::serve`](crate::Ops) triggers it on SIGTERM or SIGINT; readiness reports
/// 503 from that moment; the server then waits the configured delay, stops
/// accepting, and drains in-flight requests.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
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
