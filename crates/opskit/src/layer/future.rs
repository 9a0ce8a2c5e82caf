//! [`ResponseFuture`]: runs the handler (catching panics, within the
//! timeout) and hands how it ended to the pipeline.

use super::body::{OpsBody, RequestBody};
use crate::pipeline::{Answer, Failure, InFlight, Kept, Stop};
use crate::ratelimit::LimitCheck;
use crate::Problem;
use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::borrow::Cow;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
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

type Flight = InFlight<http::HeaderMap, TowerKept>;

/// How a request goes on once started: the handler runs, or it stopped.
type Started<S, B> =
    Result<Kind<<S as Service<Request<RequestBody<B>>>>::Future, S, Request<RequestBody<B>>>, Stop>;

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
        stop: Option<Stop>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, S, R> {
        Running { #[pin] future: F, #[pin] deadline: Option<tokio::time::Sleep> },
        /// Waiting for the (Redis) rate limit; then the service is called.
        Limited { check: LimitCheck, call: Option<(S, R)> },
        Stopped,
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
fn call<S, R>(inner: &mut S, req: R, flight: &Flight) -> Result<Kind<S::Future, S, R>, Stop>
where
    S: Service<R>,
{
    let future = flight.call(|| inner.call(req))?;
    Ok(Kind::Running {
        future,
        deadline: flight.timeout().map(tokio::time::sleep),
    })
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    fn new(flight: Box<Flight>, kind: Started<S, B>) -> Self {
        let (kind, stop) = match kind {
            Ok(kind) => (kind, None),
            Err(stop) => (Kind::Stopped, Some(stop)),
        };
        Self {
            kind,
            flight: Some(flight),
            stop,
        }
    }

    pub(super) fn call(flight: Box<Flight>, inner: &mut S, req: Request<RequestBody<B>>) -> Self {
        let kind = call(inner, req, &flight);
        Self::new(flight, kind)
    }

    pub(super) fn answer(flight: Box<Flight>, answer: Answer) -> Self {
        Self::new(flight, Err(Stop::Answer(answer)))
    }

    pub(super) fn limited(
        flight: Box<Flight>,
        check: LimitCheck,
        inner: S,
        req: Request<RequestBody<B>>,
    ) -> Self {
        Self::new(
            flight,
            Ok(Kind::Limited {
                check,
                call: Some((inner, req)),
            }),
        )
    }
}

/// A response made by opskit.
fn full<B>(status: http::StatusCode, body: Vec<u8>) -> Response<OpsBody<B>> {
    let mut res = Response::new(OpsBody::Right(Full::new(Bytes::from(body))));
    *res.status_mut() = status;
    res
}

fn problem<B>(p: &Problem) -> Response<OpsBody<B>> {
    p.to_response::<Vec<u8>>()
        .map(|v| OpsBody::Right(Full::new(Bytes::from(v))))
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
            if let Some(stop) = this.stop.take() {
                break Err(stop);
            }
            match this.kind.as_mut().project() {
                KindProj::Running { future, deadline } => {
                    let _scope = flight.scope();
                    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Ready(result)) => break Ok(result),
                        Err(payload) => break Err(Stop::Failed(Failure::Panicked(payload))),
                        Ok(Poll::Pending) => match deadline.as_pin_mut().map(|d| d.poll(cx)) {
                            Some(Poll::Ready(())) => break Err(Stop::Failed(Failure::TimedOut)),
                            _ => return Poll::Pending,
                        },
                    }
                }
                KindProj::Limited {
                    check,
                    call: pending,
                } => {
                    let checked = {
                        let _scope = flight.scope();
                        match check.as_mut().poll(cx) {
                            Poll::Ready(checked) => checked,
                            Poll::Pending => return Poll::Pending,
                        }
                    };
                    let Some((mut inner, req)) = pending.take() else {
                        unreachable!("the call is taken once, when the check ends")
                    };
                    let next = match flight.admit(checked) {
                        Some(answer) => Err(Stop::Answer(answer)),
                        None => call(&mut inner, req, flight),
                    };
                    match next {
                        Ok(kind) => this.kind.set(kind),
                        Err(stop) => *this.stop = Some(stop),
                    }
                }
                KindProj::Stopped => unreachable!("a stopped request's stop is taken above"),
            }
        };
        let Some(mut flight) = this.flight.take() else {
            panic!("`ResponseFuture` polled after it completed");
        };
        let mut res = match ended {
            Ok(Ok(res)) => {
                match flight.replacement(
                    res.status().as_u16(),
                    res.body().size_hint().exact() == Some(0),
                ) {
                    Some(p) => problem(&p),
                    None => res.map(OpsBody::Left),
                }
            }
            Ok(Err(e)) => {
                flight.failed();
                return Poll::Ready(Err(e));
            }
            Err(Stop::Answer(Answer::NoContent)) => full(http::StatusCode::NO_CONTENT, Vec::new()),
            Err(Stop::Answer(Answer::Problem(p))) => problem(&p),
            Err(Stop::Failed(failure)) => problem(&flight.failure(failure)),
        };
        let status = res.status().as_u16();
        let size = res.body().size_hint().exact();
        flight.finish(res.headers_mut(), status, size);
        Poll::Ready(Ok(res))
    }
}
