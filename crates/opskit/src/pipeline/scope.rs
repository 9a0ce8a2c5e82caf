//! A request's context on the thread that runs it, and panics: both adapters
//! run their handlers inside [`RequestScope`] and turn a caught panic into
//! [`panic_problem`].

use crate::recorder::Started;
use crate::Problem;
use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    static IN_REQUEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs request code now.
#[cfg(test)]
pub(crate) fn in_request() -> bool {
    IN_REQUEST.with(std::cell::Cell::get)
}

/// Marks the current thread as running request code (so the panic hook knows
/// a panic will be caught and reported by the adapter) until dropped.
pub(crate) struct InRequest(bool);

impl InRequest {
    pub(crate) fn enter() -> Self {
        Self(IN_REQUEST.with(|c| c.replace(true)))
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        IN_REQUEST.with(|c| c.set(self.0));
    }
}

/// A request's context on this thread until dropped: its log span, the
/// in-request flag (the adapter reports its panics), its trace context, and
/// whether its code enriched its telemetry.
pub(crate) struct RequestScope<'a> {
    _enriched: Enriched<'a>,
    // Dropped in this order: the reverse of entering.
    _trace: crate::trace::Entered,
    _in_request: InRequest,
    _span: tracing::span::Entered<'a>,
}

impl<'a> RequestScope<'a> {
    pub(crate) fn enter(started: &'a Started) -> Self {
        let span = started.span.enter();
        let in_request = InRequest::enter();
        Self {
            _enriched: Enriched::enter(&started.enriched),
            _trace: crate::trace::Entered::enter(&started.trace),
            _in_request: in_request,
            _span: span,
        }
    }
}

/// Carries the thread's enrichment mark (set by
/// [`RequestTelemetry`](crate::telemetry::RequestTelemetry)) over to the
/// request when request code leaves the thread.
pub(crate) struct Enriched<'a> {
    request: &'a AtomicBool,
    outer: bool,
}

impl<'a> Enriched<'a> {
    pub(crate) fn enter(request: &'a AtomicBool) -> Self {
        let outer = crate::request::swap_enriched(false);
        Self { request, outer }
    }
}

impl Drop for Enriched<'_> {
    fn drop(&mut self) {
        if crate::request::swap_enriched(self.outer) {
            self.request.store(true, Ordering::Relaxed);
        }
    }
}

/// The message of a panic payload (`&str` or `String`), for the log.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Replaces the panic hook with one that writes the panic as one error event
/// (message, location; backtrace when `RUST_BACKTRACE` asks for it) through
/// `tracing`, so it lands in the JSON log with the current request's context.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => backtrace.to_string(),
            _ => String::new(),
        };
        let message = panic_message(info.payload());
        tracing::error!(
            panic.message = message,
            panic.location = location,
            panic.backtrace = backtrace,
            "panicked"
        );
        // A panic in request code is caught and reported by the adapter with
        // the request's context; any other panic is reported here.
        #[cfg(feature = "sentry")]
        if !IN_REQUEST.with(std::cell::Cell::get) {
            if let Some(r) = crate::report::global() {
                r.report_panic(message, &location);
            }
        }
    }));
}

/// The problem body answered for a panic: no panic detail reaches the client.
/// The panic itself was logged by the hook that [`init`](crate::init)
/// installs, inside the request's context.
pub(crate) fn panic_problem() -> Problem {
    Problem::new(500).detail("The server hit an unexpected error; it has been logged.")
}
