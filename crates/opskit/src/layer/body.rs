//! The request body the inner service sees, and the response body it answers.

use crate::pipeline::BodyCounter;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
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

/// The response body of [`OpsService`](super::OpsService): the inner body
/// (`Left`), or one made by opskit (`Right`: a problem, a preflight's empty body).
pub type OpsBody<B> = http_body_util::Either<B, http_body_util::Full<Bytes>>;
