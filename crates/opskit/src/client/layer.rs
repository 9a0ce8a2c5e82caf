//! The tower layer for HTTP clients (hyper-util's `Client`, tonic
//! channels): [`ClientLayer`].

use super::{Call, Target};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A tower layer for HTTP clients: every request sent carries the trace
/// context on and, inside a sampled request, gets a CLIENT span (the
/// parent of the callee's server span); every call is measured in
/// `http.client.request.duration` (see the [module docs](super)).
/// Replaces `opskit::trace::PropagateLayer`, which only propagated.
///
/// The service's error must be a `std::error::Error` (hyper-util's and
/// tonic's are): its I/O cause gives `error.type` (`connect`, `timeout`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientLayer;

impl<S> tower_layer::Layer<S> for ClientLayer {
    type Service = Client<S>;
    fn layer(&self, inner: S) -> Client<S> {
        Client { inner }
    }
}

/// The service of [`ClientLayer`].
#[derive(Debug, Clone)]
pub struct Client<S> {
    inner: S,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Client<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: std::error::Error + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let uri = req.uri();
        let host = uri
            .host()
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h))
            })
            .unwrap_or("");
        let call = Call::start(Target {
            method: req.method().as_str(),
            scheme: uri.scheme_str().unwrap_or("http"),
            host,
            port: uri.port_u16(),
            url: uri,
        });
        call.inject(req.headers_mut());
        ClientFuture {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Client`]: ends the call's span and
    /// measurement when the response (or the error) comes.
    #[derive(Debug)]
    pub struct ClientFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, RB, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    E: std::error::Error + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some(mut call) = this.call.take() {
            match &out {
                Ok(response) => call.finish(Some(response.status().as_u16()), None),
                Err(e) => call.finish(None, Some((super::error_class(e), &e.to_string()))),
            }
        }
        Poll::Ready(out)
    }
}
