//! Carrying the current request's trace context on to the calls it makes:
//! the thread's current context (entered around every poll of a request),
//! the outgoing headers, and a tower layer for HTTP clients.

use super::TraceContext;

thread_local! {
    static CURRENT: std::cell::RefCell<Option<TraceContext>> = const { std::cell::RefCell::new(None) };
}

/// Makes `cx` the current trace context of this thread until dropped
/// (adapters hold one around every poll of a request's future, so code in
/// the handler sees its request's context; tasks it spawns do not).
pub(crate) struct Entered(Option<TraceContext>);

impl Entered {
    pub(crate) fn enter(cx: &TraceContext) -> Self {
        Self(CURRENT.with(|c| c.replace(Some(cx.clone()))))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl TraceContext {
    /// The context of a call this request's side makes through its span
    /// `span_id` (a CLIENT span): the same trace, flags, `tracestate` and
    /// `baggage`, with `span_id` as the span the callee sees as its parent.
    #[cfg(otlp)]
    pub(crate) fn child(&self, span_id: u64) -> Self {
        Self {
            span_id,
            parent_span_id: Some(self.span_id),
            linked: None,
            ..self.clone()
        }
    }

    /// The context of a sampled span outside any request (a `+background`
    /// trace): `traceparent` only.
    #[cfg(otlp)]
    pub(crate) fn background(trace_id: u128, span_id: u64, tracestate: Option<&str>) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id: None,
            flags: 1,
            tracestate: tracestate.map(std::sync::Arc::from),
            baggage: None,
            propagate: true,
            linked: None,
        }
    }
}

/// `f` of the current request's trace context, without cloning it.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&TraceContext>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref()))
}

/// The current request's trace context, inside a request.
pub fn current() -> Option<TraceContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Adds `traceparent` (and `tracestate`, and `baggage` when propagated)
/// for the current request to the headers of an outgoing HTTP call; does
/// nothing outside a request.
pub fn inject(headers: &mut http::HeaderMap) {
    for (name, value) in outgoing_headers() {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// Writes the trace headers of an outgoing call for `cx`: `traceparent`
/// naming `cx`'s span (when `OTEL_PROPAGATORS` propagates trace context),
/// `tracestate` and `baggage` when it carries them. No string is built for
/// `traceparent` (its bytes are made on the stack).
pub(crate) fn inject_context(cx: &TraceContext, headers: &mut http::HeaderMap) {
    if cx.propagate {
        if let Ok(v) = http::HeaderValue::from_bytes(&cx.header_bytes()) {
            headers.insert(http::header::HeaderName::from_static("traceparent"), v);
        }
        if let Some(v) = cx
            .tracestate()
            .and_then(|t| http::HeaderValue::from_str(t).ok())
        {
            headers.insert(http::header::HeaderName::from_static("tracestate"), v);
        }
    }
    if let Some(v) = cx
        .baggage()
        .and_then(|b| http::HeaderValue::from_str(b).ok())
    {
        headers.insert(http::header::HeaderName::from_static("baggage"), v);
    }
}

/// The headers an outgoing call made inside the current request carries,
/// for any HTTP client (`ureq`, `reqwest`, `awc`…): `traceparent`, and
/// `tracestate`/`baggage` when the request brought them. Empty outside a
/// request. Read it on the request's task: a `spawn_blocking` closure or a
/// spawned task does not see the request (capture the headers first).
///
/// ```
/// let headers = opskit::trace::outgoing_headers();
/// assert!(headers.is_empty(), "outside a request");
/// ```
pub fn outgoing_headers() -> Vec<(&'static str, String)> {
    let Some(cx) = current() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(3);
    if cx.propagate {
        out.push(("traceparent", cx.traceparent()));
        if let Some(ts) = cx.tracestate() {
            out.push(("tracestate", ts.to_owned()));
        }
    }
    if let Some(b) = cx.baggage() {
        out.push(("baggage", b.to_owned()));
    }
    out
}

/// A tower layer for HTTP clients: every request sent from inside a
/// request carries its trace context on ([`inject`]), and nothing else.
///
/// Replaced by `opskit::client::ClientLayer`, which also records a CLIENT
/// span per call (the parent of the callee's server span) and
/// `http.client.request.duration`. This module is a leaf of the crate
/// (it imports nothing of opskit's), so it cannot reach the span pipeline
/// and the metrics: the new layer lives in `opskit::client`.
#[deprecated(
    since = "0.1.0",
    note = "use opskit::client::ClientLayer: the same propagation, plus a CLIENT span and http.client.request.duration per call"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateLayer;

#[allow(deprecated)]
impl<S> tower_layer::Layer<S> for PropagateLayer {
    type Service = Propagate<S>;
    fn layer(&self, inner: S) -> Propagate<S> {
        Propagate { inner }
    }
}

/// The service of [`PropagateLayer`] (replaced by `opskit::client::Client`).
#[allow(deprecated)]
#[derive(Debug, Clone)]
pub struct Propagate<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for Propagate<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        inject(req.headers_mut());
        self.inner.call(req)
    }
}
