//! [`OpsService`]: translates a tower request into the pipeline's terms.

use super::body::{OpsBody, RequestBody};
use super::future::ResponseFuture;
use super::kept::TowerKept;
use crate::pipeline::{Begun, BodyBound, Head, Pipeline};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

#[cfg(feature = "axum")]
use super::kept::Route;

/// The per-request service; see [`OpsLayer`](super::OpsLayer).
#[derive(Debug, Clone)]
pub struct OpsService<S> {
    inner: S,
    pipeline: Arc<Pipeline<http::HeaderMap>>,
}

impl<S> OpsService<S> {
    pub(super) fn new(inner: S, pipeline: Arc<Pipeline<http::HeaderMap>>) -> Self {
        Self { inner, pipeline }
    }
}

/// The socket peer's address.
pub(crate) fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
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
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<OpsBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let kept = TowerKept {
            method: req.method().clone(),
            uri: req.uri().clone(),
            #[cfg(feature = "axum")]
            route: req.extensions().get::<Route>().cloned(),
        };
        // Axum (matchit) routes the path as sent, as does any tower router
        // on `uri().path()`.
        let head = Head {
            method: req.method().as_str(),
            path: req.uri().path(),
            routed_path: req.uri().path(),
            headers: req.headers(),
            peer: peer(&req),
            body: BodyBound::Known(req.body().size_hint().upper()),
        };
        let Begun { flight, next, body } = self.pipeline.begin(&head, kept);
        // Boxed once, here: the state is large, and moved on as a pointer.
        let flight = Box::new(flight);
        let mut req = req.map(|inner| RequestBody::counted(inner, body));
        req.extensions_mut().insert(flight.request_id().clone());
        if let Some(n) = flight.nonce() {
            req.extensions_mut().insert(n.clone());
        }
        ResponseFuture::new(flight, next, &mut self.inner, req)
    }
}
