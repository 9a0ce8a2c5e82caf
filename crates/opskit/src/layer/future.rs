//! [`ResponseFuture`]: polls the pipeline's [`Run`] (the handler's part of
//! the request) and hands how it ended back to the pipeline.

use super::body::{OpsBody, RequestBody};
use super::kept::Flight;
use crate::pipeline::{Next, Run};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower_service::Service;

pin_project! {
    /// The future of [`OpsService`](super::OpsService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        // The request's state is boxed: it is most of the future's size,
        // and routers box the future (Axum does): a future over ~1 KiB takes
        // glibc's slow allocation path and is copied on each move, while a
        // separate box of the state stays in the per-thread cache.
        #[pin]
        run: Run<S::Future, Request<RequestBody<B>>, Box<Flight>>,
        // The service that takes a request admitted after the (Redis)
        // rate limit.
        service: Option<S>,
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
        // The service that was made ready takes a request that waits for
        // the limit; the clone waits for the next one (tower's rule for
        // moving a call into a future).
        let service = matches!(next, Next::Limit(_)).then(|| {
            let clone = inner.clone();
            std::mem::replace(inner, clone)
        });
        Self {
            run: Run::new(flight, next, req, |req| inner.call(req)),
            service,
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
        let this = self.project();
        let service = this.service;
        let (ended, mut flight) = ready!(this.run.poll_run(cx, |req| {
            let Some(mut service) = service.take() else {
                unreachable!("the service is kept for a request that waits for the limit")
            };
            service.call(req)
        }));
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
