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
//! let res = opskit::layer::OpsLayer::new()
//!     .layer(svc)
//!     .oneshot(http::Request::new(String::new()))
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 500);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! # }
//! ```

use crate::Problem;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Applies [`OpsService`]. Get it from [`Ops::layer`](crate::Ops::layer).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct OpsLayer {}

impl OpsLayer {
    /// The layer with default behaviour.
    pub fn new() -> Self {
        Self {}
    }
}

impl<S> Layer<S> for OpsLayer {
    type Service = OpsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OpsService { inner }
    }
}

/// The per-request service; see [`OpsLayer`].
#[derive(Debug, Clone)]
pub struct OpsService<S> {
    inner: S,
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

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let kind = match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => Kind::Running { future },
            Err(payload) => Kind::Panicked {
                payload: Some(payload),
            },
        };
        ResponseFuture { kind }
    }
}

pin_project! {
    /// The future of [`OpsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
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
        let payload = match self.project().kind.project() {
            KindProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(res))) => return Poll::Ready(Ok(res.map(OpsBody::inner))),
                    Ok(Poll::Ready(Err(e))) => return Poll::Ready(Err(e)),
                    Err(payload) => payload,
                }
            }
            KindProj::Panicked { payload } => payload.take().unwrap_or_else(|| Box::new(())),
        };
        drop(payload);
        Poll::Ready(Ok(panic_response()))
    }
}

/// The message of a panic payload (`&str` or `String`), for the log.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
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
        tracing::error!(
            panic.message = panic_message(info.payload()),
            panic.location = location,
            panic.backtrace = backtrace,
            "panicked"
        );
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
