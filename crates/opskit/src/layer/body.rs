//! The request body the inner service sees, and the response body it answers.

use super::kept::Flight;
use crate::pipeline::BodyCounter;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The request body as the inner service sees it: the body itself, with a
    /// body whose size is not bounded before it is read (chunked, HTTP/2
    /// without `Content-Length`) cut off at the body limit
    /// (`OPSKIT_BODY_LIMIT`); a declared `Content-Length` over the limit is
    /// refused before the handler runs.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        counter: Option<BodyCounter>,
    }
}

impl<B> RequestBody<B> {
    /// The body, unlimited (for services called outside [`OpsService`](super::OpsService)).
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            counter: None,
        }
    }

    pub(crate) fn counted(inner: B, counter: Option<BodyCounter>) -> Self {
        Self { inner, counter }
    }
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("counter", &self.counter)
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
        if let (Some(counter), Poll::Ready(Some(Ok(frame)))) = (this.counter, &polled) {
            let len = frame.data_ref().map_or(0, |d| d.remaining() as u64);
            if !counter.take(len) {
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
            }
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

pin_project! {
    /// The response body of [`OpsService`](super::OpsService): the inner
    /// body, or one made by opskit (a problem, a preflight's empty body).
    ///
    /// A gRPC call's status comes in the trailers at the end of its body:
    /// the call is recorded (access line, metrics, span, error report) when
    /// this body yields them, and recorded as CANCELLED when it is dropped
    /// before its end (the client went away).
    pub struct OpsBody<B> {
        #[pin]
        inner: Either<B, Full<Bytes>>,
        call: Option<Box<Flight>>,
    }
}

impl<B> OpsBody<B> {
    /// The inner service's body.
    pub(super) fn inner(body: B) -> Self {
        Self {
            inner: Either::Left(body),
            call: None,
        }
    }

    /// A body opskit made.
    pub(super) fn opskit(body: Full<Bytes>) -> Self {
        Self {
            inner: Either::Right(body),
            call: None,
        }
    }

    /// Keeps a gRPC call until the body's trailers.
    pub(super) fn ending(&mut self, call: Box<Flight>) {
        self.call = Some(call);
    }
}

impl<B> std::fmt::Debug for OpsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsBody")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for OpsBody<B>
where
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if this.call.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        if let Some(call) = this.call.take() {
                            call.end_stream(Some(trailers));
                        }
                    }
                }
                Poll::Ready(None) => {
                    if let Some(call) = this.call.take() {
                        call.end_stream(None);
                    }
                }
                // The body failed mid-stream: the call is cut off.
                Poll::Ready(Some(Err(_))) => {
                    if let Some(call) = this.call.take() {
                        call.failed();
                    }
                }
                Poll::Pending => {}
            }
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
