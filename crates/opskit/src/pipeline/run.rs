//! [`Run`]: the handler's part of a request, between [`Pipeline::begin`]
//! and [`InFlight::finish`], written once for every adapter.
//!
//! [`Pipeline::begin`]: super::Pipeline::begin

use super::{Failure, InFlight, Kept, Next, Stop};
use crate::ratelimit::LimitCheck;
use crate::response_headers::HeaderMapLike;
use crate::shutdown::CutSignal;
use pin_project_lite::pin_project;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

pin_project! {
    /// A request from [`Next`] to how its handler ended: the (Redis) rate
    /// limit awaited and its decision taken, then the handler's future `F`
    /// polled in the request's scope, catching a panic, within the request
    /// timeout, until the shutdown's cut. `R` is the request, kept until the
    /// handler is called.
    ///
    /// The adapter polls it with [`Run::poll_run`] and hands what it gives
    /// to [`InFlight::replacement`] or [`InFlight::answer`].
    #[project = RunProj]
    pub(crate) enum Run<F, R> {
        /// Waiting for the (Redis) rate limit; then the handler is called.
        Limited { check: LimitCheck, req: Option<R> },
        Running {
            #[pin] future: F,
            #[pin] deadline: Option<tokio::time::Sleep>,
            #[pin] cut: CutSignal,
        },
        /// Answered without the handler, or the handler failed to start.
        Stopped { stop: Option<Stop> },
    }
}

impl<F: Future, R> Run<F, R> {
    /// Goes on as the pipeline said: `start` calls the handler with the
    /// request now ([`Next::Call`]), or the request waits for the limit.
    pub(crate) fn new<M: HeaderMapLike, K: Kept>(
        flight: &InFlight<M, K>,
        next: Next,
        req: R,
        start: impl FnOnce(R) -> F,
    ) -> Self {
        match next {
            Next::Call => Self::start(flight, req, start),
            Next::Answer(answer) => Run::Stopped {
                stop: Some(Stop::Answer(answer)),
            },
            Next::Limit(check) => Run::Limited {
                check,
                req: Some(req),
            },
        }
    }

    /// Calls the handler inside the request's scope, catching a panic.
    fn start<M: HeaderMapLike, K: Kept>(
        flight: &InFlight<M, K>,
        req: R,
        start: impl FnOnce(R) -> F,
    ) -> Self {
        match flight.call(|| start(req)) {
            Ok(future) => Run::Running {
                future,
                deadline: flight.timeout().map(tokio::time::sleep),
                cut: CutSignal::default(),
            },
            Err(stop) => Run::Stopped { stop: Some(stop) },
        }
    }

    /// Polls the request on: the handler's output, or how the request
    /// stopped without it. `start` calls the handler (as in [`Run::new`])
    /// when the rate limit admits a request that waited for it.
    pub(crate) fn poll_run<M: HeaderMapLike, K: Kept>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        flight: &mut InFlight<M, K>,
        start: impl FnOnce(R) -> F,
    ) -> Poll<Result<F::Output, Stop>> {
        let mut start = Some(start);
        loop {
            match self.as_mut().project() {
                RunProj::Running {
                    future,
                    deadline,
                    cut,
                } => {
                    let _scope = flight.scope();
                    let stopped = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Ready(output)) => return Poll::Ready(Ok(output)),
                        Err(payload) => Failure::Panicked(payload),
                        Ok(Poll::Pending) => {
                            if let Some(Poll::Ready(())) = deadline.as_pin_mut().map(|d| d.poll(cx))
                            {
                                Failure::TimedOut
                            } else if flight.poll_cut(cut, cx).is_ready() {
                                Failure::Cut
                            } else {
                                return Poll::Pending;
                            }
                        }
                    };
                    return Poll::Ready(Err(Stop::Failed(stopped)));
                }
                RunProj::Limited { check, req } => {
                    let checked = {
                        let _scope = flight.scope();
                        ready!(check.as_mut().poll(cx))
                    };
                    let (Some(req), Some(start)) = (req.take(), start.take()) else {
                        unreachable!("a limited request is admitted once")
                    };
                    let next = match flight.admit(checked) {
                        Some(answer) => Run::Stopped {
                            stop: Some(Stop::Answer(answer)),
                        },
                        None => Self::start(flight, req, start),
                    };
                    self.set(next);
                }
                RunProj::Stopped { stop } => match stop.take() {
                    Some(stop) => return Poll::Ready(Err(stop)),
                    None => panic!("a request's `Run` polled after it ended"),
                },
            }
        }
    }
}
