//! The tower layer with opskit's per-request stack (Axum, hyper, tonic).
//!
//! One service does all the per-request work in one future, instead of a tower
//! of single-purpose layers: fewer allocations, one pass over the request.
//!
//! ```
//! use tower::{Layer, Service, ServiceExt};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_req: http::Request<String>| async {
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
use crate::Problem;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The route template type the layer can read from request extensions.
#[cfg(feature = "axum")]
type Route = axum::extract::MatchedPath;

#[derive(Debug)]
struct Shared {
    recorder: Recorder,
    request_id_header: HeaderName,
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
        Self::new(Recorder::default())
    }
}

impl OpsLayer {
    /// The layer around this recorder.
    pub fn new(recorder: Recorder) -> Self {
        let request_id_header = HeaderName::from_bytes(recorder.request_id_header().as_bytes())
            .unwrap_or(HeaderName::from_static("x-request-id"));
        Self {
            shared: Arc::new(Shared {
                recorder,
                request_id_header,
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
    client: Option<IpAddr>,
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
        Outcome::captured(
            self.method.as_str(),
            self.uri.path(),
            route,
            status,
            self.client,
            self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
            aborted,
            report,
        )
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

pin_project! {
    /// Marks the thread as running request code around every poll of `F`.
    pub(crate) struct InRequestFuture<F> {
        #[pin]
        pub(crate) inner: F,
    }
}

impl<F: Future> Future for InRequestFuture<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _in_request = InRequest::enter();
        self.project().inner.poll(cx)
    }
}

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
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<OpsBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let started = shared.recorder.start(
            req.headers()
                .get(&shared.request_id_header)
                .map(HeaderValue::as_bytes),
        );
        req.extensions_mut().insert(started.request_id.clone());
        let captured = Captured {
            method: req.method().clone(),
            uri: req.uri().clone(),
            #[cfg(feature = "axum")]
            route: req.extensions().get::<Route>().cloned(),
            user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
            client: client_ip(&req),
            #[cfg(feature = "sentry")]
            report_headers: [
                req.headers().get(http::header::HOST).cloned(),
                req.headers().get(http::header::ACCEPT).cloned(),
                req.headers().get(http::header::CONTENT_TYPE).cloned(),
            ],
        };
        let kind = {
            let _entered = started.span.enter();
            let _in_request = InRequest::enter();
            match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
                Ok(future) => Kind::Running { future },
                Err(payload) => Kind::Panicked {
                    payload: Some(payload),
                },
            }
        };
        ResponseFuture {
            kind,
            state: Some(State {
                shared: shared.clone(),
                started,
                captured,
            }),
        }
    }
}

#[derive(Debug)]
struct State {
    shared: Arc<Shared>,
    started: Started,
    captured: Captured,
}

impl State {
    /// Echoes the request id and writes the access-log line.
    fn finish<B>(self, res: &mut Response<B>, panic: Option<&str>) {
        if let Ok(v) = HeaderValue::from_maybe_shared(self.started.request_id.to_bytes()) {
            res.headers_mut()
                .insert(self.shared.request_id_header.clone(), v);
        }
        let mut outcome = self.captured.outcome(res.status().as_u16(), false);
        outcome.panic = panic;
        self.shared.recorder.finish(&self.started, &outcome);
    }
}

pin_project! {
    /// The future of [`OpsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        state: Option<State>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before a response: the client went away (or the server
            // gave up on the request at the shutdown deadline).
            if let Some(state) = this.project().state.take() {
                let outcome = state.captured.outcome(499, true);
                state.shared.recorder.finish(&state.started, &outcome);
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Running { #[pin] future: F },
        Panicked { payload: Option<Box<dyn Any + Send>> },
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
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<OpsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut panicked: Option<Box<dyn Any + Send>> = None;
        let polled = match this.kind.project() {
            KindProj::Running { future } => {
                let _entered = this.state.as_ref().map(|s| s.started.span.enter());
                let _in_request = InRequest::enter();
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
            KindProj::Panicked { payload } => {
                panicked = payload.take();
                Ok(panic_response())
            }
        };
        match polled {
            Ok(mut res) => {
                if let Some(state) = this.state.take() {
                    state.finish(&mut res, panicked.as_deref().map(panic_message));
                }
                Poll::Ready(Ok(res))
            }
            Err(e) => {
                // The service failed without a response (the connection will
                // be closed); log it as a 500 so that it is not silent.
                if let Some(state) = this.state.take() {
                    let outcome = state.captured.outcome(500, false);
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
