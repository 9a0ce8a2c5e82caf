//! [`ResponseFuture`]: runs the handler (catching panics, within the
//! timeout) and hands how it ended to the pipeline.

use super::body::{OpsBody, RequestBody};
use crate::pipeline::{Failure, InFlight, Kept, Next, Stop};
use crate::ratelimit::LimitCheck;
use crate::shutdown::CutSignal;
use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::borrow::Cow;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower_service::Service;

/// The route template type the layer can read from request extensions.
#[cfg(feature = "axum")]
pub(super) type Route = axum::extract::MatchedPath;

/// What the pipeline keeps of a tower request: reference-counted clones.
#[derive(Debug)]
pub(super) struct TowerKept {
    pub(super) method: Method,
    pub(super) uri: Uri,
    #[cfg(feature = "axum")]
    pub(super) route: Option<Route>,
}

impl Kept for TowerKept {
    fn target(&self) -> (&str, &str) {
        (self.method.as_str(), self.uri.path())
    }
    fn route(&self) -> Option<Cow<'_, str>> {
        #[cfg(feature = "axum")]
        return self.route.as_ref().map(|r| Cow::Borrowed(r.as_str()));
        #[cfg(not(feature = "axum"))]
        None
    }
}

pub(super) type Flight = InFlight<http::HeaderMap, TowerKept>;

pin_project! {
    /// The future of [`OpsService`](super::OpsService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        #[pin]
        kind: Kind<S::Future, S, Request<RequestBody<B>>>,
        // Boxed: the request's state is most of the future's size, and
        // routers box the future (Axum does): a future over ~1 KiB takes
        // glibc's slow allocation path and is copied on each move, while a
        // separate box of the state stays in the per-thread cache.
        flight: Option<Box<Flight>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, S, R> {
        Running {
            #[pin] future: F,
            #[pin] deadline: Option<tokio::time::Sleep>,
            #[pin] cut: CutSignal,
        },
        /// Waiting for the (Redis) rate limit; then the service is called.
        Limited { check: LimitCheck, call: Option<(S, R)> },
        /// Answered without the handler, or the handler failed to start.
        Stopped { stop: Option<Stop> },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Calls the service, within the request timeout.
fn call<S: Service<R>, R>(inner: &mut S, req: R, flight: &Flight) -> Kind<S::Future, S, R> {
    match flight.call(|| inner.call(req)) {
        Ok(future) => Kind::Running {
            future,
            deadline: flight.timeout().map(tokio::time::sleep),
            cut: CutSignal::default(),
        },
        Err(stop) => Kind::Stopped { stop: Some(stop) },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>> + Clone,
{
    /// Goes on as the pipeline said (`next`) with the request.
    pub(super) fn new(
        flight: Box<Flight>,
        next: Next,
        inner: &mut S,
        req: Request<RequestBody<B>>,
    ) -> Self {
        let kind = match next {
            Next::Call => call(inner, req, &flight),
            Next::Answer(answer) => Kind::Stopped {
                stop: Some(Stop::Answer(answer)),
            },
            // The service that was made ready takes this request once
            // admitted; the clone waits for the next one (tower's rule for
            // moving a call into a future).
            Next::Limit(check) => {
                let clone = inner.clone();
                let call = Some((std::mem::replace(inner, clone), req));
                Kind::Limited { check, call }
            }
        };
        Self {
            kind,
            flight: Some(flight),
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<Response<OpsBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(flight) = this.flight.as_mut() else {
            panic!("`ResponseFuture` polled after it completed");
        };
        let ended = loop {
            match this.kind.as_mut().project() {
                KindProj::Running {
                    future,
                    deadline,
                    cut,
                } => {
                    let _scope = flight.scope();
                    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Ready(result)) => break Ok(result),
                        Err(payload) => break Err(Stop::Failed(Failure::Panicked(payload))),
                        Ok(Poll::Pending) => {
                            if let Some(Poll::Ready(())) = deadline.as_pin_mut().map(|d| d.poll(cx))
                            {
                                break Err(Stop::Failed(Failure::TimedOut));
                            }
                            if flight.poll_cut(cut, cx).is_ready() {
                                break Err(Stop::Failed(Failure::Cut));
                            }
                            return Poll::Pending;
                        }
                    }
                }
                KindProj::Limited { check, call: next } => {
                    let checked = {
                        let _scope = flight.scope();
                        ready!(check.as_mut().poll(cx))
                    };
                    let Some((mut inner, req)) = next.take() else {
                        unreachable!("the call is taken once, when the check ends")
                    };
                    let kind = match flight.admit(checked) {
                        Some(answer) => Kind::Stopped {
                            stop: Some(Stop::Answer(answer)),
                        },
                        None => call(&mut inner, req, flight),
                    };
                    this.kind.set(kind);
                }
                KindProj::Stopped { stop } => match stop.take() {
                    Some(stop) => break Err(stop),
                    None => unreachable!("a stop is taken once, with the flight"),
                },
            }
        };
        let Some(mut flight) = this.flight.take() else {
            panic!("`ResponseFuture` polled after it completed");
        };
        let mut res = match ended {
            Ok(Ok(res)) => {
                let empty = res.body().size_hint().exact() == Some(0);
                match flight.replacement(res.status().as_u16(), empty) {
                    Some(a) => a.to_response::<Full<Bytes>>().map(OpsBody::opskit),
                    None => res.map(OpsBody::inner),
                }
            }
            Ok(Err(e)) => {
                flight.failed();
                return Poll::Ready(Err(e));
            }
            Err(stop) => flight
                .answer(stop)
                .to_response::<Full<Bytes>>()
                .map(OpsBody::opskit),
        };
        let status = res.status().as_u16();
        let size = res.body().size_hint().exact();
        // A gRPC call whose status comes in the trailers ends with its body
        // (at once when the body has already ended: it has none).
        if let Some(call) = flight.finish(res.headers_mut(), status, size) {
            match res.body().is_end_stream() {
                true => call.end_stream(None),
                false => res.body_mut().ending(Box::new(call)),
            }
        }
        Poll::Ready(Ok(res))
    }
}
