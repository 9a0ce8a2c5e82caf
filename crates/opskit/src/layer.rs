//! The tower layer with opskit's per-request stack (Axum, hyper, tonic).
//!
//! One service does all the per-request work in one future, instead of a tower
//! of single-purpose layers: fewer allocations, one pass over the request.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_req: http::Request<opskit::layer::RequestBody<String>>| async {
//!     if true { panic!("boom") }
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! });
//! let res = opskit::layer::OpsLayer::default()
//!     .layer(svc)
//!     .oneshot(http::Request::new(String::new()))
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 500);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(res.headers()["x-request-id"].len(), 36); // a new UUID, echoed
//! # }
//! ```

use crate::recorder::{Outcome, Recorder, Started};
use crate::security::{CorsDecision, CspNonce, SecurityPolicy};
use crate::Problem;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

// Request headers read on every request, as names parsed at compile time:
// a lookup by `&str` parses and validates the name each time.
static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
static BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

/// The route template type the layer can read from request extensions.
#[cfg(feature = "axum")]
type Route = axum::extract::MatchedPath;

#[derive(Debug)]
struct Shared {
    recorder: Recorder,
    headers: crate::response_headers::Prepared<http::HeaderMap>,
}

/// Applies [`OpsService`]. Get it from [`Ops::layer`](crate::Ops::layer);
/// `OpsLayer::default()` gives the default policy without [`init`](crate::init).
#[derive(Debug, Clone)]
#[must_use]
pub struct OpsLayer {
    shared: Arc<Shared>,
}

impl Default for OpsLayer {
    fn default() -> Self {
        Self::new(
            Recorder::default(),
            SecurityPolicy::new(&crate::security::SecuritySettings::default()),
        )
    }
}

impl OpsLayer {
    /// The layer around this recorder and security policy.
    pub fn new(recorder: Recorder, security: SecurityPolicy) -> Self {
        Self::with_rate_limiter(recorder, security, None)
    }

    /// The same with a rate limiter (used when it limits anything).
    pub fn with_rate_limiter(
        recorder: Recorder,
        security: SecurityPolicy,
        limiter: Option<crate::ratelimit::Limiter>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                headers: crate::response_headers::Prepared::new(&recorder, security, limiter),
                recorder,
            }),
        }
    }
}

impl<S> Layer<S> for OpsLayer {
    type Service = OpsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OpsService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The per-request service; see [`OpsLayer`].
#[derive(Debug, Clone)]
pub struct OpsService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What the access log needs from the request, kept for the end of the
/// request. Every field is a reference-counted clone: no allocation.
#[derive(Debug)]
struct Captured {
    method: Method,
    uri: Uri,
    #[cfg(feature = "axum")]
    route: Option<Route>,
    user_agent: Option<HeaderValue>,
    /// Resolved through trusted proxies once, for the limiter and the logs.
    client: Option<IpAddr>,
    peer: Option<IpAddr>,
    request_size: Option<u64>,
    /// Host, Accept, Content-Type: read only for error reports.
    #[cfg(feature = "sentry")]
    report_headers: [Option<HeaderValue>; 3],
}

impl Captured {
    fn outcome(&self, status: u16, aborted: bool) -> Outcome<'_> {
        #[cfg(feature = "axum")]
        let route = self.route.as_ref().map(Route::as_str);
        #[cfg(not(feature = "axum"))]
        let route = None;
        #[cfg(feature = "sentry")]
        let report = self.report_headers.each_ref().map(header_str);
        #[cfg(not(feature = "sentry"))]
        let report = [None; 3];
        let mut outcome = Outcome::captured(
            self.method.as_str(),
            self.uri.path(),
            route,
            status,
            self.client,
            self.user_agent
                .as_ref()
                .and_then(|v| crate::recorder::header_text(v.as_bytes())),
            aborted,
            report,
        );
        outcome.request_size = self.request_size;
        outcome.peer = self.peer;
        outcome
    }
}

#[cfg(feature = "sentry")]
fn header_str(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

thread_local! {
    static IN_REQUEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
/// in-request flag (the adapter reports its panics), its trace context.
pub(crate) struct RequestScope<'a> {
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
            _trace: crate::trace::Entered::enter(&started.trace),
            _in_request: in_request,
            _span: span,
        }
    }
}

pin_project! {
    /// Marks the thread as running request code around every poll of `F`.
    pub(crate) struct InRequestFuture<F> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) trace: Option<crate::trace::TraceContext>,
    }
}

impl<F: Future> Future for InRequestFuture<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _in_request = InRequest::enter();
        let this = self.project();
        let _trace = this.trace.as_ref().map(crate::trace::Entered::enter);
        this.inner.poll(cx)
    }
}

/// The request headers the layer reads, found in one pass over the map:
/// a request carries a handful of headers and the layer reads a dozen names,
/// most absent, so one walk comparing names (enum tags for the standard ones)
/// costs a fraction of a dozen hashed lookups (~2,000 instructions a request).
/// Each slot holds the first value of its name, as `HeaderMap::get` would;
/// the trace-context headers keep every line.
#[derive(Default)]
struct Wanted<'a> {
    forwarded_proto: Option<&'a HeaderValue>,
    forwarded: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
    trace: crate::trace::TraceHeaders<'a>,
    content_length: Option<&'a HeaderValue>,
    origin: Option<&'a HeaderValue>,
    request_method: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    #[cfg(feature = "sentry")]
    host: Option<&'a HeaderValue>,
    #[cfg(feature = "sentry")]
    accept: Option<&'a HeaderValue>,
    #[cfg(feature = "sentry")]
    content_type: Option<&'a HeaderValue>,
}

impl<'a> Wanted<'a> {
    fn scan(h: &'a http::HeaderMap, request_id: &http::HeaderName) -> Self {
        use http::header;
        let mut w = Self::default();
        for (name, value) in h {
            // The request id's name is configurable: checked on its own.
            if name == request_id {
                w.request_id.get_or_insert(value);
            }
            let lines = if name == TRACEPARENT {
                Some(&mut w.trace.traceparent)
            } else if name == TRACESTATE {
                Some(&mut w.trace.tracestate)
            } else if name == BAGGAGE {
                Some(&mut w.trace.baggage)
            } else {
                None
            };
            if let Some(lines) = lines {
                lines.push(value.as_bytes());
                continue;
            }
            let slot = if name == header::USER_AGENT {
                &mut w.user_agent
            } else if name == header::CONTENT_LENGTH {
                &mut w.content_length
            } else if name == X_FORWARDED_PROTO {
                &mut w.forwarded_proto
            } else if name == header::FORWARDED {
                &mut w.forwarded
            } else if name == header::ORIGIN {
                &mut w.origin
            } else if name == header::ACCESS_CONTROL_REQUEST_METHOD {
                &mut w.request_method
            } else {
                #[cfg(feature = "sentry")]
                if name == header::HOST {
                    w.host.get_or_insert(value);
                } else if name == header::ACCEPT {
                    w.accept.get_or_insert(value);
                } else if name == header::CONTENT_TYPE {
                    w.content_type.get_or_insert(value);
                }
                continue;
            };
            slot.get_or_insert(value);
        }
        w
    }
}

/// The socket peer's address.
fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(ci) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(ci.0.ip());
    }
    req.extensions()
        .get::<std::net::SocketAddr>()
        .map(std::net::SocketAddr::ip)
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for OpsService<S>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<OpsBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        // A body whose length is not declared within the limit (chunked) is
        // counted as it streams; the flag tells the response it was cut off.
        let limit = shared.headers.security.body_limit();
        let over = (req.body().size_hint().upper().is_none_or(|u| u > limit))
            .then(|| Arc::new(AtomicBool::new(false)));
        let mut req = req.map(|inner| RequestBody {
            inner,
            remaining: limit,
            over: over.clone(),
        });
        let w = Wanted::scan(req.headers(), &shared.headers.request_id_header);
        fn bytes(v: Option<&HeaderValue>) -> Option<&[u8]> {
            v.map(HeaderValue::as_bytes)
        }
        let https = shared
            .headers
            .security
            .is_https(bytes(w.forwarded_proto), bytes(w.forwarded));
        let started =
            shared
                .recorder
                .start(bytes(w.request_id), req.method().as_str(), https, &w.trace);
        let nonce = shared
            .headers
            .security
            .nonce_enabled()
            .then(CspNonce::generate);
        let content_length = w.content_length;
        let cors = shared.headers.security.cors(
            req.method().as_str(),
            bytes(w.origin),
            (req.method() == http::Method::OPTIONS)
                .then_some(w.request_method)
                .flatten()
                .map(HeaderValue::as_bytes),
        );
        let early = match &cors {
            CorsDecision::Preflight(_) => {
                let mut res = Response::new(Vec::new());
                *res.status_mut() = http::StatusCode::NO_CONTENT;
                Some(res)
            }
            _ => crate::problem::refuse_path(req.uri().path())
                .or_else(|| {
                    shared
                        .headers
                        .security
                        .check_body(content_length.map(HeaderValue::as_bytes))
                })
                .map(|p| p.to_response::<Vec<u8>>()),
        };
        let cors = match cors {
            CorsDecision::Preflight(h) | CorsDecision::Actual(h) => h,
            CorsDecision::None => Vec::new(),
        };
        let peer = client_ip(&req);
        let client = shared.headers.proxies.client(peer, |name| {
            req.headers()
                .get_all(name)
                .iter()
                .map(HeaderValue::as_bytes)
        });
        let captured = Captured {
            method: req.method().clone(),
            uri: req.uri().clone(),
            #[cfg(feature = "axum")]
            route: req.extensions().get::<Route>().cloned(),
            user_agent: w.user_agent.cloned(),
            client,
            peer,
            request_size: content_length.and_then(|v| v.to_str().ok()?.parse().ok()),
            #[cfg(feature = "sentry")]
            report_headers: [w.host.cloned(), w.accept.cloned(), w.content_type.cloned()],
        };
        req.extensions_mut().insert(started.request_id.clone());
        if let Some(n) = &nonce {
            req.extensions_mut().insert(n.clone());
        }
        // Rate limit: in memory, decided here; in Redis, awaited in a boxed
        // future that then calls the service.
        let mut rate = None;
        let mut limited = None;
        let early = match (early, &shared.headers.limiter) {
            (None, Some(limiter)) if limiter.uses_redis() => {
                limited = Some(limiter.clone());
                None
            }
            (None, Some(limiter)) => {
                let h = req.headers();
                let header = |name: &str| h.get(name).map(HeaderValue::as_bytes);
                // Axum routes the path as sent (matchit), as does any
                // tower router on `uri().path()`.
                let info = crate::ratelimit::RequestInfo {
                    method: req.method().as_str(),
                    path: req.uri().path(),
                    client: captured.client,
                    header: &header,
                };
                // A refusal is logged under the request's span (its ids).
                rate = limiter.check_memory_for(&info, Some(&started.span));
                rate.as_ref()
                    .filter(|c| !c.decision.allowed)
                    .map(|c| c.problem().to_response::<Vec<u8>>())
            }
            (early, _) => early,
        };
        let kind = if let Some(res) = early {
            Kind::Early { res: Some(res) }
        } else if let Some(limiter) = limited {
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            Kind::Limited {
                future: Box::pin(limited_call(
                    limiter,
                    inner,
                    req,
                    captured.client,
                    shared.headers.security.timeout(),
                )),
            }
        } else {
            let _scope = RequestScope::enter(&started);
            match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
                Ok(future) => match shared.headers.security.timeout() {
                    Some(t) => Kind::Timed {
                        future: tokio::time::timeout(t, future),
                    },
                    None => Kind::Running { future },
                },
                Err(payload) => Kind::Panicked {
                    payload: Some(payload),
                },
            }
        };
        ResponseFuture {
            kind,
            state: Some(Box::new(State {
                shared: shared.clone(),
                started,
                captured,
                https,
                nonce,
                cors,
                over,
                rate,
            })),
        }
    }
}

/// What the boxed rate-limited call ends with (type-erased in [`Kind`],
/// which names only the service's future type).
enum LimitedOut<T> {
    Refused(crate::ratelimit::Checked),
    TimedOut(Option<crate::ratelimit::Checked>),
    Done(Option<crate::ratelimit::Checked>, T),
}

/// Asks the (Redis) limiter, then calls the service if admitted.
async fn limited_call<S, ReqB, ResB>(
    limiter: crate::ratelimit::Limiter,
    mut inner: S,
    req: Request<RequestBody<ReqB>>,
    client: Option<IpAddr>,
    timeout: Option<std::time::Duration>,
) -> Box<dyn Any + Send>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    let checked = {
        let h = req.headers();
        let header = |name: &str| h.get(name).map(HeaderValue::as_bytes);
        let info = crate::ratelimit::RequestInfo {
            method: req.method().as_str(),
            path: req.uri().path(),
            client,
            header: &header,
        };
        limiter.check(&info).await
    };
    if let Some(c) = checked.as_ref().filter(|c| !c.decision.allowed) {
        return Box::new(LimitedOut::<Result<S::Response, S::Error>>::Refused(
            c.clone(),
        ));
    }
    let future = inner.call(req);
    let out = match timeout {
        Some(t) => match tokio::time::timeout(t, future).await {
            Ok(r) => LimitedOut::Done(checked, r),
            Err(_) => LimitedOut::TimedOut(checked),
        },
        None => LimitedOut::Done(checked, future.await),
    };
    Box::new(out)
}

#[derive(Debug)]
struct State {
    shared: Arc<Shared>,
    started: Started,
    captured: Captured,
    https: bool,
    nonce: Option<CspNonce>,
    cors: Vec<(&'static str, String)>,
    /// Set when a streamed request body went over the limit.
    over: Option<Arc<AtomicBool>>,
    /// The rate-limit decision, for its headers.
    rate: Option<crate::ratelimit::Checked>,
}

impl State {
    /// Echoes the request id and writes the access-log line.
    fn finish<B: Body>(
        self,
        res: &mut Response<B>,
        panic: Option<&str>,
        error: Option<&'static str>,
    ) {
        self.shared.headers.apply(
            res.headers_mut(),
            &crate::response_headers::PerResponse {
                https: self.https,
                nonce: self.nonce.as_ref(),
                cors: &self.cors,
                request_id: &self.started.request_id,
                trace: &self.started.trace_header,
                rate: self.rate.as_ref(),
            },
        );
        let mut outcome = self.captured.outcome(res.status().as_u16(), false);
        outcome.panic = panic;
        outcome.error = error;
        outcome.https = self.https;
        outcome.response_size = res.body().size_hint().exact();
        self.shared.recorder.finish(&self.started, &outcome);
    }
}

pin_project! {
    /// The future of [`OpsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        // Boxed: the request's state is most of the future's size, and
        // routers box the future (Axum does): a future over ~1 KiB takes
        // glibc's slow allocation path and is copied on each move, while a
        // separate box of the state stays in the per-thread cache.
        state: Option<Box<State>>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before a response: the client went away (or the server
            // gave up on the request at the shutdown deadline).
            if let Some(state) = this.project().state.take() {
                let mut outcome = state.captured.outcome(499, true);
                outcome.https = state.https;
                state.shared.recorder.finish(&state.started, &outcome);
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Running { #[pin] future: F },
        Timed { #[pin] future: tokio::time::Timeout<F> },
        Panicked { payload: Option<Box<dyn Any + Send>> },
        Early { res: Option<Response<Vec<u8>>> },
        Limited { future: Pin<Box<dyn Future<Output = Box<dyn Any + Send>> + Send>> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + 'static,
    E: 'static,
{
    type Output = Result<Response<OpsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut panicked: Option<Box<dyn Any + Send>> = None;
        let mut error = None;
        let polled = match this.kind.project() {
            KindProj::Running { future } => {
                let _scope = this.state.as_ref().map(|s| RequestScope::enter(&s.started));
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(res))) => Ok(res.map(OpsBody::inner)),
                    Ok(Poll::Ready(Err(e))) => Err(e),
                    Err(payload) => {
                        panicked = Some(payload);
                        Ok(panic_response())
                    }
                }
            }
            KindProj::Timed { future } => {
                let _scope = this.state.as_ref().map(|s| RequestScope::enter(&s.started));
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(Ok(res)))) => Ok(res.map(OpsBody::inner)),
                    Ok(Poll::Ready(Ok(Err(e)))) => Err(e),
                    Ok(Poll::Ready(Err(_elapsed))) => {
                        error = Some("timeout");
                        let problem = this
                            .state
                            .as_ref()
                            .map(|s| s.shared.headers.security.timeout_problem())
                            .unwrap_or_else(|| Problem::new(504));
                        tracing::warn!(
                            timeout_ms = this
                                .state
                                .as_ref()
                                .and_then(|s| s.shared.headers.security.timeout())
                                .unwrap_or_default()
                                .as_millis() as u64,
                            "request timed out"
                        );
                        Ok(problem
                            .to_response::<Vec<u8>>()
                            .map(|v| OpsBody::full(Bytes::from(v))))
                    }
                    Err(payload) => {
                        panicked = Some(payload);
                        Ok(panic_response())
                    }
                }
            }
            KindProj::Panicked { payload } => {
                panicked = payload.take();
                Ok(panic_response())
            }
            KindProj::Early { res } => Ok(res
                .take()
                .unwrap_or_default()
                .map(|v| OpsBody::full(Bytes::from(v)))),
            KindProj::Limited { future } => {
                let mut new_rate = None;
                let polled = {
                    let _scope = this.state.as_ref().map(|s| RequestScope::enter(&s.started));
                    match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(out)) => {
                            let full = |p: Problem| {
                                p.to_response::<Vec<u8>>()
                                    .map(|v| OpsBody::full(Bytes::from(v)))
                            };
                            match out
                                .downcast::<LimitedOut<Result<Response<B>, E>>>()
                                .map(|b| *b)
                            {
                                Ok(LimitedOut::Refused(c)) => {
                                    let res = full(c.problem());
                                    new_rate = Some(c);
                                    Ok(res)
                                }
                                Ok(LimitedOut::TimedOut(c)) => {
                                    error = Some("timeout");
                                    new_rate = c;
                                    Ok(full(this.state.as_ref().map_or_else(
                                        || Problem::new(504),
                                        |s| s.shared.headers.security.timeout_problem(),
                                    )))
                                }
                                Ok(LimitedOut::Done(c, r)) => {
                                    new_rate = c;
                                    r.map(|res| res.map(OpsBody::inner))
                                }
                                // Not reachable: the future is made in `call`
                                // for exactly this output type.
                                Err(_) => Ok(full(Problem::new(500))),
                            }
                        }
                        Err(payload) => {
                            panicked = Some(payload);
                            Ok(panic_response())
                        }
                    }
                };
                if let (Some(s), Some(c)) = (this.state.as_mut(), new_rate) {
                    s.rate = Some(c);
                }
                polled
            }
        };
        match polled {
            Ok(mut res) => {
                if let Some(state) = this.state.take() {
                    // No route handles the method: the same answer as on Actix.
                    if let Some(p) = crate::problem::replace_unrouted(
                        state.captured.method.as_str(),
                        res.status().as_u16(),
                        res.body().size_hint().exact() == Some(0),
                    ) {
                        res = p
                            .to_response::<Vec<u8>>()
                            .map(|v| OpsBody::full(Bytes::from(v)));
                    }
                    // The handler saw its body cut off at the limit: whatever it
                    // answered (a failed extractor's 400, say), the answer is 413.
                    if state
                        .over
                        .as_ref()
                        .is_some_and(|o| o.load(Ordering::Relaxed))
                    {
                        res = state
                            .shared
                            .headers
                            .security
                            .body_too_large()
                            .to_response::<Vec<u8>>()
                            .map(|v| OpsBody::full(Bytes::from(v)));
                    }
                    (*state).finish(&mut res, panicked.as_deref().map(panic_message), error);
                }
                Poll::Ready(Ok(res))
            }
            Err(e) => {
                // The service failed without a response (the connection will
                // be closed); log it as a 500 so that it is not silent.
                if let Some(state) = this.state.take() {
                    let mut outcome = state.captured.outcome(500, false);
                    outcome.https = state.https;
                    state.shared.recorder.finish(&state.started, &outcome);
                }
                Poll::Ready(Err(e))
            }
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
pub(crate) fn panic_problem() -> Problem {
    Problem::new(500).detail("The server hit an unexpected error; it has been logged.")
}

/// The response for a panic. The panic itself was logged by the hook that
/// [`init`](crate::init) installs, inside the request's context.
fn panic_response<B>() -> Response<OpsBody<B>> {
    panic_problem()
        .to_response::<Vec<u8>>()
        .map(|v| OpsBody::full(Bytes::from(v)))
}

pin_project! {
    /// The request body as the inner service sees it: the body itself, with a
    /// body of undeclared length (chunked) cut off at the body limit
    /// (`OPSKIT_BODY_LIMIT`); a declared `Content-Length` over the limit is
    /// refused before the handler runs.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        over: Option<Arc<AtomicBool>>,
    }
}

impl<B> RequestBody<B> {
    /// The body, unlimited (for services called outside [`OpsService`]).
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            remaining: u64::MAX,
            over: None,
        }
    }
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// The error of a request body cut off at the body limit.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body is larger than the limit")
    }
}

impl std::error::Error for BodyTooLarge {}

impl<B: Body> Body for RequestBody<B>
where
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        use bytes::Buf;
        let this = self.project();
        let polled = this.inner.poll_frame(cx).map_err(Into::into);
        let Some(over) = this.over else {
            return polled;
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let len = frame.data_ref().map_or(0, |d| d.remaining() as u64);
            if len > *this.remaining {
                over.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
            }
            *this.remaining -= len;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The response body of [`OpsService`]: the inner body, or one made by opskit.
    pub struct OpsBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> OpsBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: BodyKind::Inner { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: BodyKind::Full { data: Some(data) },
        }
    }
}

impl<B> std::fmt::Debug for OpsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpsBody")
    }
}

impl<B: Body<Data = Bytes>> Body for OpsBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner { body } => body.poll_frame(cx),
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
