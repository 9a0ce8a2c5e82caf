//! Actix-web adapter: middleware, operational routes and the graceful server.

use crate::health::{Probe, ProbeResponse};
use crate::recorder::{Outcome, Recorder, Started};
use crate::Ops;
use actix_web::body::MessageBody;
use actix_web::dev::{
    forward_ready, Service, ServiceFactory, ServiceRequest, ServiceResponse, Transform,
};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::http::{Method, Uri};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::future::{ready, Ready};
use futures_util::FutureExt;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use tracing::Instrument;

fn to_response(p: ProbeResponse) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
        .content_type(p.content_type)
        .body(p.body)
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints for `App::configure`: `/livez`, `/readyz`,
    /// `/startupz` (each also `/{probe}/{check}`, with `?verbose` and
    /// `?exclude=`), and `/health`, under `OPSKIT_HEALTH_PREFIX`.
    pub fn actix_routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        let health = self.health().clone();
        let prefix = self.settings().health_prefix.clone();
        move |cfg: &mut web::ServiceConfig| {
            for (name, probe) in [
                ("livez", Probe::Live),
                ("readyz", Probe::Ready),
                ("startupz", Probe::Startup),
                ("health", Probe::Report),
            ] {
                let h = health.clone();
                cfg.route(
                    &format!("{prefix}/{name}"),
                    web::get().to(move |req: HttpRequest| {
                        let h = h.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get(actix_web::http::header::AUTHORIZATION)
                                .map(|v| v.as_bytes());
                            let q = Some(req.query_string()).filter(|q| !q.is_empty());
                            to_response(h.respond(probe, None, q, auth).await)
                        }
                    }),
                );
                if probe == Probe::Report {
                    continue;
                }
                let h = health.clone();
                cfg.route(
                    &format!("{prefix}/{name}/{{check}}"),
                    web::get().to(move |check: web::Path<String>, req: HttpRequest| {
                        let h = h.clone();
                        async move {
                            let q = Some(req.query_string()).filter(|q| !q.is_empty());
                            to_response(h.respond(probe, Some(&check), q, None).await)
                        }
                    }),
                );
            }
        }
    }

    /// The middleware with the whole per-request stack, for `App::wrap`.
    pub fn actix_middleware(&self) -> OpsMiddleware {
        OpsMiddleware::new(self.recorder().clone())
    }

    /// Runs an Actix server for `factory` on `listener` until SIGTERM/SIGINT,
    /// then follows the same sequence as [`Ops::serve`]: readiness 503, delay,
    /// stop accepting, drain for up to `OPSKIT_SHUTDOWN_TIMEOUT`, return `Ok`.
    ///
    /// Actix's own signal handling is disabled so that opskit owns shutdown.
    /// Call it inside an Actix system (`#[actix_web::main]`).
    pub async fn serve_actix<F, I, S, B>(
        self,
        listener: std::net::TcpListener,
        factory: F,
    ) -> std::io::Result<()>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: actix_service::IntoServiceFactory<S, actix_http::Request>,
        S: ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<actix_web::dev::Response<B>> + 'static,
        <S::Service as Service<actix_http::Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        self.shutdown().listen_for_signals()?;
        let addr = listener.local_addr().ok();
        let timeout = self.settings().shutdown_timeout;
        let server = actix_web::HttpServer::new(factory)
            .disable_signals()
            // Actix takes whole seconds; round up so no request is cut early.
            .shutdown_timeout(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0))
            .listen(listener)?
            .run();
        let handle = server.handle();
        let ops = self.clone();
        actix_web::rt::spawn(async move {
            ops.stop_accepting().await;
            handle.stop(true).await;
        });
        self.announce(addr, "actix");
        server.await?;
        tracing::info!("server stopped");
        self.finish_telemetry();
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    recorder: Recorder,
    request_id_header: HeaderName,
}

/// The Actix middleware; get it from [`Ops::actix_middleware`].
#[derive(Debug, Clone)]
pub struct OpsMiddleware {
    shared: Rc<Shared>,
}

impl OpsMiddleware {
    /// The middleware around this recorder.
    pub fn new(recorder: Recorder) -> Self {
        let request_id_header = HeaderName::from_bytes(recorder.request_id_header().as_bytes())
            .unwrap_or(HeaderName::from_static("x-request-id"));
        Self {
            shared: Rc::new(Shared {
                recorder,
                request_id_header,
            }),
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
            service,
            shared: self.shared.clone(),
        }))
    }
}

/// The service made by [`OpsMiddleware`].
#[derive(Debug)]
pub struct OpsActixService<S> {
    service: S,
    shared: Rc<Shared>,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// What the access log needs from the request (Actix's request moves into the
/// handler, and is gone if the handler panics).
struct Captured {
    method: Method,
    uri: Uri,
    route: Option<String>,
    user_agent: Option<HeaderValue>,
    client: Option<IpAddr>,
    /// Host, Accept, Content-Type: read only for error reports.
    #[cfg(feature = "sentry")]
    report_headers: [Option<HeaderValue>; 3],
}

#[cfg(feature = "sentry")]
fn header_str(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

impl Captured {
    fn outcome(&self, status: u16, aborted: bool) -> Outcome<'_> {
        #[cfg(feature = "sentry")]
        let report = self.report_headers.each_ref().map(header_str);
        #[cfg(not(feature = "sentry"))]
        let report = [None; 3];
        Outcome::captured(
            self.method.as_str(),
            self.uri.path(),
            self.route.as_deref(),
            status,
            self.client,
            self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
            aborted,
            report,
        )
    }
}

/// Writes the aborted line if the request future is dropped before finishing.
struct Guard {
    shared: Rc<Shared>,
    started: Started,
    captured: Captured,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            let outcome = self.captured.outcome(499, true);
            self.shared.recorder.finish(&self.started, &outcome);
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

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let shared = self.shared.clone();
        let started = shared.recorder.start(
            req.headers()
                .get(&shared.request_id_header)
                .map(HeaderValue::as_bytes),
        );
        req.extensions_mut().insert(started.request_id.clone());
        let captured = Captured {
            method: req.method().clone(),
            uri: req.uri().clone(),
            // Matched against the app's resource map without routing, so that
            // the route is known even if the handler panics.
            route: req.resource_map().match_pattern(req.path()),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .cloned(),
            client: req.peer_addr().map(|a| a.ip()),
            #[cfg(feature = "sentry")]
            report_headers: {
                use actix_web::http::header::{ACCEPT, CONTENT_TYPE, HOST};
                [
                    req.headers().get(HOST).cloned(),
                    req.headers().get(ACCEPT).cloned(),
                    req.headers().get(CONTENT_TYPE).cloned(),
                ]
            },
        };
        // A panic becomes an `Err` holding the problem: Actix renders it through
        // `ResponseError`. (Keeping a clone of the `HttpRequest` to build a
        // `ServiceResponse` here would break Actix's router, which needs the
        // request uniquely owned while it matches.)
        let fut = {
            let _entered = started.span.enter();
            let _in_request = crate::layer::InRequest::enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(req)))
        };
        let span = started.span.clone();
        let mut guard = Guard {
            shared,
            started,
            captured,
            done: false,
        };
        Box::pin(
            async move {
                let outcome = match fut {
                    Ok(fut) => {
                        AssertUnwindSafe(crate::layer::InRequestFuture { inner: fut })
                            .catch_unwind()
                            .await
                    }
                    Err(payload) => Err(payload),
                };
                let mut panicked = None;
                let result = match outcome {
                    Ok(result) => result,
                    Err(payload) => {
                        panicked = Some(payload);
                        Err(crate::layer::panic_problem().into())
                    }
                };
                guard.done = true;
                let status = match &result {
                    Ok(res) => res.status().as_u16(),
                    Err(e) => e.as_response_error().status_code().as_u16(),
                };
                let header =
                    HeaderValue::from_maybe_shared(guard.started.request_id.to_bytes()).ok();
                let result = match (result, header) {
                    (Ok(mut res), Some(v)) => {
                        res.headers_mut()
                            .insert(guard.shared.request_id_header.clone(), v);
                        Ok(res)
                    }
                    (Err(e), Some(v)) => {
                        let mut res = e.error_response();
                        res.headers_mut()
                            .insert(guard.shared.request_id_header.clone(), v);
                        Err(actix_web::error::InternalError::from_response(e, res).into())
                    }
                    (r, None) => r,
                };
                let mut outcome = guard.captured.outcome(status, false);
                outcome.panic = panicked.as_deref().map(crate::layer::panic_message);
                guard.shared.recorder.finish(&guard.started, &outcome);
                result
            }
            .instrument(span),
        )
    }
}
