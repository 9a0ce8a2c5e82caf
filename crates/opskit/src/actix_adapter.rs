//! Actix-web adapter: middleware, operational routes and the graceful server.

use crate::health::{Health, Probe};
use crate::Ops;
use actix_web::body::MessageBody;
use actix_web::dev::{
    forward_ready, Service, ServiceFactory, ServiceRequest, ServiceResponse, Transform,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::future::{ready, Ready};
use futures_util::FutureExt;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

fn probe_response(health: &Health, probe: Probe) -> HttpResponse {
    let p = health.probe(probe);
    HttpResponse::build(StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
        .content_type("text/plain; charset=utf-8")
        .body(p.body)
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints for `App::configure`: `/livez`, `/readyz`, `/startupz`.
    pub fn actix_routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        let health = self.health().clone();
        move |cfg: &mut web::ServiceConfig| {
            for (path, probe) in [
                ("/livez", Probe::Live),
                ("/readyz", Probe::Ready),
                ("/startupz", Probe::Startup),
            ] {
                let h = health.clone();
                cfg.route(
                    path,
                    web::get().to(move || {
                        let h = h.clone();
                        async move { probe_response(&h, probe) }
                    }),
                );
            }
        }
    }

    /// The middleware with the whole per-request stack, for `App::wrap`.
    pub fn actix_middleware(&self) -> OpsMiddleware {
        OpsMiddleware {}
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
        Ok(())
    }
}

/// The Actix middleware; get it from [`Ops::actix_middleware`].
#[derive(Debug, Clone, Default)]
pub struct OpsMiddleware {}

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
        ready(Ok(OpsActixService { service }))
    }
}

/// The service made by [`OpsMiddleware`].
#[derive(Debug)]
pub struct OpsActixService<S> {
    service: S,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

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
        // A panic becomes an `Err` holding the problem: Actix renders it through
        // `ResponseError`. (Keeping a clone of the `HttpRequest` to build a
        // `ServiceResponse` here would break Actix's router, which needs the
        // request uniquely owned while it matches.)
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(req)));
        Box::pin(async move {
            let outcome = match fut {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                Err(payload) => Err(payload),
            };
            match outcome {
                Ok(result) => result,
                Err(_payload) => Err(crate::layer::panic_problem().into()),
            }
        })
    }
}
