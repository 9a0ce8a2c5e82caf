//! A Sentry transport that never blocks the caller, delivers with timeouts,
//! and counts what it sends, fails and drops.
//!
//! Written here instead of using `sentry`'s ureq transport because that one
//! has no timeouts (a black-holed endpoint stalls its queue for good) and
//! reports failures only to Sentry itself; an operator needs them counted.

use sentry::{Envelope, Transport};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Envelopes waiting for delivery; past this, new ones are dropped (and counted).
const QUEUE: usize = 64;

/// Delivery counters of the error reporter. Every envelope handed to the
/// transport ends up in exactly one of them; those still queued or in
/// flight when the reporter closes are counted as dropped then.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Envelopes accepted by the server (2xx).
    pub sent: AtomicU64,
    /// Envelopes the server refused or that could not be delivered.
    pub failed: AtomicU64,
    /// Envelopes given up without an answer: queue full, the server asked
    /// to back off, or still queued or in flight when the reporter closed.
    pub dropped: AtomicU64,
    /// Envelopes handed to the transport.
    offered: AtomicU64,
    /// Set by [`DeliveryStats::close`]: from then on the worker counts nothing.
    closed: Mutex<bool>,
}

impl DeliveryStats {
    /// Counts one envelope in `counter` (one of this struct's), unless the
    /// reporter has closed and counted it already.
    fn count(&self, counter: impl Fn(&Self) -> &AtomicU64) {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if !*closed {
            counter(self).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts every envelope not yet sent, failed or dropped (still queued,
    /// or in flight) as dropped, and stops the counting. Returns
    /// `(sent, failed, dropped)`, which add up to the envelopes offered.
    pub(crate) fn close(&self) -> (u64, u64, u64) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        *closed = true;
        let sent = self.sent.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let unfinished = self
            .offered
            .load(Ordering::Relaxed)
            .saturating_sub(sent + failed + dropped);
        self.dropped.fetch_add(unfinished, Ordering::Relaxed);
        (sent, failed, dropped + unfinished)
    }
}

enum Msg {
    // Boxed: the queue holds up to 64 messages, most of them flushes' size otherwise.
    Envelope(Box<Envelope>),
    Flush(SyncSender<()>),
}

pub(crate) struct HttpTransport {
    tx: SyncSender<Msg>,
    stats: Arc<DeliveryStats>,
}

impl HttpTransport {
    pub(crate) fn new(
        dsn: &sentry::types::Dsn,
        timeout: Duration,
        stats: Arc<DeliveryStats>,
    ) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let worker = Worker {
            url: dsn.envelope_api_url().to_string(),
            auth: dsn.to_auth(Some("opskit")).to_string(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            stats: stats.clone(),
            backoff_until: None,
            last_warning: None,
        };
        // If the thread cannot start, sends fail and are counted as dropped.
        let _ = std::thread::Builder::new()
            .name("opskit-sentry".to_owned())
            .spawn(move || worker.run(rx));
        Self { tx, stats }
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Envelope(Box::new(envelope)))
        {
            self.stats.count(|s| &s.dropped);
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack, done) = sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

struct Worker {
    url: String,
    auth: String,
    agent: ureq::Agent,
    stats: Arc<DeliveryStats>,
    backoff_until: Option<Instant>,
    last_warning: Option<Instant>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        for msg in rx {
            match msg {
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
                Msg::Envelope(envelope) => self.deliver(&envelope),
            }
        }
    }

    fn deliver(&mut self, envelope: &Envelope) {
        if self.backoff_until.is_some_and(|t| Instant::now() < t) {
            self.stats.count(|s| &s.dropped);
            return;
        }
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            self.stats.count(|s| &s.failed);
            return;
        }
        let result = self
            .agent
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header("Content-Type", "application/x-sentry-envelope")
            .send(&body[..]);
        match result {
            Ok(res) if res.status().is_success() => {
                self.stats.count(|s| &s.sent);
            }
            Ok(res) => {
                self.stats.count(|s| &s.failed);
                if res.status() == 429 {
                    let secs = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(60);
                    self.backoff_until = Some(Instant::now() + Duration::from_secs(secs.min(3600)));
                }
                self.warn(&format!("the server answered {}", res.status().as_u16()));
            }
            Err(e) => {
                self.stats.count(|s| &s.failed);
                self.warn(&e.to_string());
            }
        }
    }

    /// At most one warning a minute: a dead endpoint must not flood the log.
    fn warn(&mut self, reason: &str) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_warning = Some(now);
            tracing::warn!(
                reason = %crate::redact_urls(reason),
                failed = self.stats.failed.load(Ordering::Relaxed),
                "cannot deliver error events to Sentry; they are counted and dropped"
            );
        }
    }
}
