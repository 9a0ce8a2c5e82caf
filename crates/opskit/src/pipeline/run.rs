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
use std::ops::DerefMut;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::task::Unconstrained;
use tokio::time::Sleep;

/// How an adapter holds a request's [`InFlight`] while the handler runs: a
/// box of it (tower, whose future a router boxes: the state is moved on as
/// a pointer), or a borrow of it (Actix, whose whole future is boxed: the
/// state stays where it is).
pub(crate) trait Holds {
    type Map: HeaderMapLike;
    type Kept: Kept;
    fn flight(&mut self) -> &mut InFlight<Self::Map, Self::Kept>;
}

impl<M: HeaderMapLike, K: Kept, P: DerefMut<Target = InFlight<M, K>>> Holds for P {
    type Map = M;
    type Kept = K;
    fn flight(&mut self) -> &mut InFlight<M, K> {
        self
    }
}

pin_project! {
    /// A request from [`Next`] to how its handler ended: the (Redis) rate
    /// limit awaited and its decision taken, then the handler's future `F`
    /// polled in the request's scope, catching a panic, within the request
    /// timeout, until the shutdown's cut. `R` is the request, kept until the
    /// handler is called; `H` holds the request's state, handed back at the
    /// end for [`InFlight::replacement`] or [`InFlight::answer`], then
    /// [`InFlight::finish`].
    ///
    /// The handler's future is dropped inside the request's scope, also when
    /// the `Run` is dropped before the end (the client went away): what its
    /// drop logs carries the request's id and trace.
    pub(crate) struct Run<F, R, H: Holds> {
        #[pin]
        state: State<F, R>,
        held: Option<H>,
    }

    impl<F, R, H: Holds> PinnedDrop for Run<F, R, H> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if let Some(held) = this.held.as_mut() {
                let _scope = held.flight().scope();
                this.state.set(State::Stopped { stop: None });
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        /// Waiting for the (Redis) rate limit; then the handler is called.
        Limited { check: LimitCheck, req: Option<R> },
        Running {
            #[pin] future: F,
            // Polled outside the task's budget, as `tokio::time::timeout`
            // polls its timer: a handler that spends the whole budget on
            // every poll (a busy channel) still times out.
            #[pin] deadline: Option<Unconstrained<Sleep>>,
            #[pin] cut: CutSignal,
        },
        /// Answered without the handler, the handler failed to start, or
        /// (`None`) the handler's part has ended.
        Stopped { stop: Option<Stop> },
    }
}

impl<F: Future, R, H: Holds> Run<F, R, H> {
    /// Goes on as the pipeline said: `start` calls the handler with the
    /// request now ([`Next::Call`]), or the request waits for the limit.
    pub(crate) fn new(mut held: H, next: Next, req: R, start: impl FnOnce(R) -> F) -> Self {
        let state = match next {
            Next::Call => State::start(held.flight(), req, start),
            Next::Answer(answer) => State::Stopped {
                stop: Some(Stop::Answer(answer)),
            },
            Next::Limit(check) => State::Limited {
                check,
                req: Some(req),
            },
        };
        Self {
            state,
            held: Some(held),
        }
    }

    /// Polls the request on: the handler's output, or how the request
    /// stopped without it, with the request's state. `start` calls the
    /// handler (as in [`Run::new`]) when the rate limit admits a request
    /// that waited for it.
    pub(crate) fn poll_run(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        start: impl FnOnce(R) -> F,
    ) -> Poll<(Result<F::Output, Stop>, H)> {
        let mut this = self.project();
        let Some(held) = this.held.as_mut() else {
            panic!("a request's `Run` polled after it ended");
        };
        let flight = held.flight();
        let mut start = Some(start);
        let ended = loop {
            match this.state.as_mut().project() {
                StateProj::Running {
                    future,
                    deadline,
                    cut,
                } => {
                    // One scope for the poll and, when the handler has
                    // ended, for dropping its future (`InFlight::call`
                    // would enter a second).
                    let _scope = flight.scope();
                    let stopped = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Ready(output)) => Ok(output),
                        Err(payload) => Err(Failure::Panicked(payload)),
                        Ok(Poll::Pending) => {
                            if let Some(Poll::Ready(())) = deadline.as_pin_mut().map(|d| d.poll(cx))
                            {
                                Err(Failure::TimedOut)
                            } else if flight.poll_cut(cut, cx).is_ready() {
                                Err(Failure::Cut)
                            } else {
                                return Poll::Pending;
                            }
                        }
                    };
                    // The handler's future goes in the request's scope.
                    this.state.set(State::Stopped { stop: None });
                    break stopped.map_err(Stop::Failed);
                }
                StateProj::Limited { check, req } => {
                    let checked = match flight.call(|| check.as_mut().poll(cx)) {
                        Ok(polled) => ready!(polled),
                        Err(panicked) => break Err(panicked),
                    };
                    let (Some(req), Some(start)) = (req.take(), start.take()) else {
                        unreachable!("a limited request is admitted once")
                    };
                    let next = match flight.admit(checked) {
                        Some(answer) => State::Stopped {
                            stop: Some(Stop::Answer(answer)),
                        },
                        None => State::start(flight, req, start),
                    };
                    this.state.set(next);
                }
                StateProj::Stopped { stop } => match stop.take() {
                    Some(stop) => break Err(stop),
                    None => unreachable!("a `Run` that ended has handed its request back"),
                },
            }
        };
        match this.held.take() {
            Some(held) => Poll::Ready((ended, held)),
            None => unreachable!("the request's state is handed back once"),
        }
    }
}

impl<F: Future, R> State<F, R> {
    /// Calls the handler inside the request's scope, catching a panic.
    fn start<M: HeaderMapLike, K: Kept>(
        flight: &InFlight<M, K>,
        req: R,
        start: impl FnOnce(R) -> F,
    ) -> Self {
        match flight.call(|| start(req)) {
            Ok(future) => State::Running {
                future,
                deadline: flight
                    .timeout()
                    .map(|t| tokio::task::unconstrained(tokio::time::sleep(t))),
                cut: CutSignal::default(),
            },
            Err(stop) => State::Stopped { stop: Some(stop) },
        }
    }
}
