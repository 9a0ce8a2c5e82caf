//! Actix-web adapter: the middleware that runs the [pipeline](crate::pipeline)
//! and the operational routes (the server is [`Ops::serve_actix`]).

use crate::health::ProbeResponse;
use crate::pipeline::{Begun, BodyBound, BodyCounter, Head, Kept, Pipeline, Run};
use crate::Ops;
use actix_web::body::BodySize;
use actix_web::body::MessageBody;
use actix_web::dev::{
    forward_ready, ResourceMap, Service, ServiceRequest, ServiceResponse, Transform,
};
use actix_web::error::InternalError;
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::http::{Method, Uri};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::future::{ready, Ready};
use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

fn to_response(p: ProbeResponse) -> HttpResponse {
    let mut res = HttpResponse::build(
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
    );
    for header in p.headers() {
        res.insert_header(header);
    }
    res.body(p.body)
}

/// An operational endpoint's body, up to [`MAX_BODY`](crate::operational::MAX_BODY)
/// bytes (`None`: longer, or cut off).
async fn read_body(payload: &mut web::Payload) -> Option<Vec<u8>> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        body.extend_from_slice(&chunk.ok()?);
        if body.len() > crate::operational::MAX_BODY {
            return None;
        }
    }
    Some(body)
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints for `App::configure`: `/livez`, `/readyz`,
    /// `/startupz` (each also `/{probe}/{check}`, with `?verbose` and
    /// `?exclude=`), and `/health`, under `OPSKIT_HEALTH_PREFIX`; and
    /// `/metrics` (`OPSKIT_METRICS_PATH`, feature `prometheus`); `/loggers`
    /// when `OPSKIT_ADMIN_TOKEN` is set.
    pub fn actix_routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        let endpoints = self.operational_endpoints();
        move |cfg: &mut web::ServiceConfig| {
            for endpoint in &endpoints {
                let endpoint = endpoint.clone();
                let path = endpoint.path.clone();
                cfg.route(
                    &path,
                    web::route().to(move |req: HttpRequest, mut payload: web::Payload| {
                        let endpoint = endpoint.clone();
                        async move {
                            let body = read_body(&mut payload).await;
                            let call = crate::operational::Call {
                                method: req.method().as_str(),
                                check: req.match_info().get("check"),
                                query: Some(req.query_string()),
                                headers: req.headers(),
                                peer: req.peer_addr().map(|a| a.ip()),
                                body: body.as_deref(),
                            };
                            to_response(endpoint.answer(call).await)
                        }
                    }),
                );
            }
        }
    }

    /// The middleware with the whole per-request stack, for `App::wrap`:
    /// the same policy as [`Ops::layer`]'s.
    pub fn actix_middleware(&self) -> OpsMiddleware {
        OpsMiddleware::from(&self.layer())
    }
}

/// The Actix middleware; get it from [`Ops::actix_middleware`], or from an
/// [`OpsLayer`](crate::layer::OpsLayer) with `OpsMiddleware::from(&layer)`.
#[derive(Debug, Clone)]
pub struct OpsMiddleware {
    pipeline: Arc<Pipeline<HeaderMap>>,
}

/// The policy of a tower [`OpsLayer`](crate::layer::OpsLayer), for Actix: build
/// the layer (`OpsLayer::new`, `OpsLayer::with_rate_limiter`) and convert it.
impl From<&crate::layer::OpsLayer> for OpsMiddleware {
    fn from(layer: &crate::layer::OpsLayer) -> Self {
        Self {
            pipeline: Arc::new(layer.pipeline().for_map()),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for OpsMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = OpsActixService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(OpsActixService {
            service: Rc::new(service),
            pipeline: self.pipeline.clone(),
            rmap: std::cell::OnceCell::new(),
        }))
    }
}

/// The service made by [`OpsMiddleware`].
#[derive(Debug)]
pub struct OpsActixService<S> {
    service: Rc<S>,
    pipeline: Arc<Pipeline<HeaderMap>>,
    /// The app's resource map, copied on the first request (it is fixed once
    /// the app is built): the route of a request whose handler panicked, timed
    /// out or was answered early is matched against it after the request is
    /// gone. Every other request takes the route the router already found.
    rmap: std::cell::OnceCell<Rc<ResourceMap>>,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// What the pipeline keeps of an Actix request (which moves into the
/// handler, and is gone if the handler panics).
struct ActixKept {
    method: Method,
    uri: Uri,
    /// The router's own match, once the response carries the request.
    matched: Option<Option<String>>,
    rmap: Rc<ResourceMap>,
    /// The path Actix routes (escapes decoded), when it differs from the
    /// path as sent: the route of an early answer is matched against it.
    routed_path: Option<String>,
}

impl Kept for ActixKept {
    fn target(&self) -> (&str, &str) {
        (self.method.as_str(), self.uri.path())
    }
    /// The router's own match when the response still carried the request
    /// (no second match), else the path matched against the resource map
    /// (a panic, a timeout, an early answer).
    fn route(&self) -> Option<Cow<'_, str>> {
        match &self.matched {
            Some(matched) => matched.as_deref().map(Cow::Borrowed),
            None => self
                .rmap
                .match_pattern(self.routed_path.as_deref().unwrap_or(self.uri.path()))
                .map(Cow::Owned),
        }
    }
}

impl<S, B> Service<ServiceRequest> for OpsActixService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        // Actix routes the path with its percent-escapes decoded (all but
        // `%2F`, `%25`, `%2B`): route policies meet that path, not the one sent.
        let routed_path = req.match_info().as_str();
        let kept = ActixKept {
            method: req.method().clone(),
            uri: req.uri().clone(),
            matched: None,
            rmap: self
                .rmap
                .get_or_init(|| Rc::new(req.resource_map().clone()))
                .clone(),
            routed_path: (routed_path != req.path()).then(|| routed_path.to_owned()),
        };
        let head = Head {
            method: req.method().as_str(),
            path: req.path(),
            routed_path,
            headers: req.headers(),
            peer: req.peer_addr().map(|a| a.ip()),
            body: BodyBound::FromHeaders {
                http2: req.version() >= actix_web::http::Version::HTTP_2,
            },
        };
        let Begun {
            mut flight,
            next,
            body,
        } = self.pipeline.begin(&head, kept);
        if let Some(counter) = body {
            limit_payload(&mut req, counter);
        }
        req.extensions_mut().insert(flight.request_id().clone());
        if let Some(n) = flight.nonce() {
            req.extensions_mut().insert(n.clone());
        }
        let service = self.service.clone();
        let start = move |req| service.call(req);
        Box::pin(async move {
            let ended = {
                let mut run = std::pin::pin!(Run::new(&mut flight, next, req, &start));
                poll_fn(|cx| run.as_mut().poll_run(cx, &start)).await.0
            };
            // An answer of opskit's is an `Err` that Actix renders through
            // `ResponseError`. (Keeping a clone of the `HttpRequest` to build
            // a `ServiceResponse` would break Actix's router, which needs the
            // request uniquely owned while it matches.)
            let result: Result<ServiceResponse<B>, actix_web::Error> = match ended {
                Ok(Ok(res)) => {
                    flight.kept_mut().matched = Some(res.request().match_pattern());
                    let empty = res.response().body().size().is_eof();
                    match flight.replacement(res.status().as_u16(), empty) {
                        Some(p) => Err(p.into()),
                        None => Ok(res),
                    }
                }
                Ok(Err(e)) => {
                    let status = e.as_response_error().status_code().as_u16();
                    Err(flight.replacement(status, false).map_or(e, Into::into))
                }
                Err(stop) => Err(flight.answer(stop).into()),
            };
            match result {
                Ok(mut res) => {
                    let (status, size) = (res.status().as_u16(), res.response().body().size());
                    flight.finish_without_trailers(res.headers_mut(), status, sized(size));
                    Ok(res)
                }
                Err(e) => {
                    let mut res = e.error_response();
                    let (status, size) = (res.status().as_u16(), res.body().size());
                    flight.finish_without_trailers(res.headers_mut(), status, sized(size));
                    Err(InternalError::from_response(e, res).into())
                }
            }
        })
    }
}

/// Replaces the request's payload with one that fails with
/// `PayloadError::Overflow` past the limit.
fn limit_payload(req: &mut ServiceRequest, mut counter: BodyCounter) {
    use futures_util::StreamExt;
    let limited = req.take_payload().map(move |chunk| {
        let chunk = chunk?;
        if !counter.take(chunk.len() as u64) {
            return Err(actix_web::error::PayloadError::Overflow);
        }
        Ok(chunk)
    });
    req.set_payload(actix_web::dev::Payload::from(
        Box::pin(limited) as Pin<Box<dyn futures_util::Stream<Item = _>>>
    ));
}

fn sized(size: BodySize) -> Option<u64> {
    match size {
        BodySize::Sized(n) => Some(n),
        _ => None,
    }
}
