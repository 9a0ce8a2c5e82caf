//! Actix-web adapter: middleware, operational routes and the graceful server.

use crate::health::{Probe, ProbeResponse};
use crate::recorder::{Outcome, Recorder, Started};
use crate::security::{CorsDecision, CspNonce, SecurityPolicy};
use crate::Ops;
use actix_web::body::MessageBody;
use actix_web::dev::{
    forward_ready, ResourceMap, Service, ServiceFactory, ServiceRequest, ServiceResponse, Transform,
};
use actix_web::http::header::HeaderValue;
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
use std::time::Duration;
use tracing::Instrument;

// Request headers read on every request, as names parsed at compile time:
// a lookup by `&str` parses and validates the name each time.
static X_FORWARDED_PROTO: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("x-forwarded-proto");
static TRACEPARENT: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("traceparent");
static TRACESTATE: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("tracestate");
static BAGGAGE: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("baggage");
static X_FORWARDED_FOR: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("x-forwarded-for");

/// A request header by a name the rate limiter's key asks for (a header
/// key, a custom key function).
fn header_by_name<'h>(h: &'h actix_web::http::header::HeaderMap, name: &str) -> Option<&'h [u8]> {
    h.get(name).map(HeaderValue::as_bytes)
}

/// Every line of a forwarding header the trusted proxies set, in order: the
/// names as parsed statics, as Actix parses a `&str` name into a new
/// `HeaderName` (an allocation for a non-standard one) per lookup.
fn header_lines<'h>(
    h: &'h actix_web::http::header::HeaderMap,
    name: &str,
) -> impl DoubleEndedIterator<Item = &'h [u8]> {
    match name {
        "forwarded" => h.get_all(actix_web::http::header::FORWARDED),
        _ => h.get_all(&X_FORWARDED_FOR),
    }
    .map(HeaderValue::as_bytes)
}

fn to_response(p: ProbeResponse) -> HttpResponse {
    let mut res = HttpResponse::build(
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
    );
    if let Some(challenge) = p.www_authenticate {
        res.insert_header((actix_web::http::header::WWW_AUTHENTICATE, challenge));
    }
    res.content_type(p.content_type).body(p.body)
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints for `App::configure`: `/livez`, `/readyz`,
    /// `/startupz` (each also `/{probe}/{check}`, with `?verbose` and
    /// `?exclude=`), and `/health`, under `OPSKIT_HEALTH_PREFIX`; and
    /// `/metrics` (`OPSKIT_METRICS_PATH`, feature `prometheus`).
    pub fn actix_routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
        let health = self.health().clone();
        let prefix = self.settings().health_prefix.clone();
        #[cfg(feature = "prometheus")]
        let metrics = self
            .metrics_endpoint()
            .cloned()
            .map(|e| (e, self.settings().metrics.path.clone()));
        move |cfg: &mut web::ServiceConfig| {
            #[cfg(feature = "prometheus")]
            if let Some((endpoint, path)) = &metrics {
                let endpoint = endpoint.clone();
                cfg.route(
                    path,
                    web::get().to(move |req: HttpRequest| {
                        let auth = req
                            .headers()
                            .get(actix_web::http::header::AUTHORIZATION)
                            .map(|v| v.as_bytes());
                        ready(to_response(endpoint.respond(auth)))
                    }),
                );
            }
            for probe in Probe::ALL {
                let name = probe.path_segment();
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
        OpsMiddleware::with_rate_limiter(
            self.recorder().clone(),
            crate::security::SecurityPolicy::new(&self.settings().security),
            Some(self.rate_limiter().clone()),
        )
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
        use actix_service::ServiceFactoryExt;
        self.shutdown().listen_for_signals()?;
        // Actix's workers drop the requests cut at the deadline on their own
        // threads: count requests so that their lines can be waited for.
        self.shutdown().track_requests();
        let addr = listener.local_addr().ok();
        let settings = self.settings();
        let timeout = settings.shutdown_timeout;
        // From the shutdown signal on, every response closes its connection
        // (the same decision as `ops.serve`'s).
        let shutdown = self.shutdown().clone();
        let factory = move || {
            let shutdown = shutdown.clone();
            factory().into_factory().map(move |res: S::Response| {
                let mut res: actix_web::dev::Response<B> = res.into();
                if shutdown.close_connection(res.status().as_u16()) {
                    res.head_mut()
                        .set_connection_type(actix_http::ConnectionType::Close);
                }
                res
            })
        };
        let keep_alive = match settings.keep_alive_timeout {
            t if t.is_zero() => actix_http::KeepAlive::Disabled,
            t => actix_http::KeepAlive::Timeout(t),
        };
        // A second handle on the listening socket: opskit stops it listening
        // itself (below).
        let socket = listener.try_clone()?;
        let server = actix_web::HttpServer::new(factory.clone())
            .disable_signals()
            .client_request_timeout(settings.header_read_timeout)
            .keep_alive(keep_alive)
            // Actix takes whole seconds; round up so no request is cut early.
            .shutdown_timeout(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0))
            .listen(listener)?
            .run();
        let handle = server.handle();
        let ops = self.clone();
        let stopper = actix_web::rt::spawn(async move {
            ops.stop_accepting().await;
            // Actix's own stop closes the listener (resetting the connections
            // the kernel has queued) and, at the same moment, every
            // connection without a request in flight, including those just
            // accepted whose first request is on its way. Instead: Actix
            // stops accepting; opskit takes what is queued, then stops the
            // socket listening (new clients are refused), serves what it took,
            // and gives fresh connections a moment before Actix's stop.
            handle.pause().await;
            // Until Actix's accept thread has let go of the socket.
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            let mut queued = Vec::new();
            if socket.set_nonblocking(true).is_ok() {
                while let Ok((tcp, _)) = socket.accept() {
                    queued.push(tcp);
                }
            }
            if let Err(e) = socket2::SockRef::from(&socket).shutdown(std::net::Shutdown::Read) {
                tracing::debug!(error = %e, "cannot stop the listener");
            }
            drop(socket);
            let mut served = Vec::new();
            if !queued.is_empty() {
                // The same application, as Actix's workers serve it (Host
                // and address come from each request, as there).
                let app = actix_service::map_config(
                    factory().map_err(|e: S::Error| {
                        let e: actix_web::Error = e.into();
                        e.error_response()
                    }),
                    |()| actix_web::dev::AppConfig::default(),
                );
                let service = actix_http::HttpService::build()
                    .client_request_timeout(ops.settings().header_read_timeout)
                    .keep_alive(keep_alive)
                    .finish(app)
                    .tcp()
                    .new_service(())
                    .await;
                match service {
                    Ok(service) => {
                        for tcp in queued {
                            let io = tcp
                                .set_nonblocking(true)
                                .and_then(|()| actix_web::rt::net::TcpStream::from_std(tcp));
                            match io {
                                Ok(io) => served.push(actix_web::rt::spawn(service.call(io))),
                                Err(e) => {
                                    tracing::debug!(error = %e, "cannot serve a queued connection")
                                }
                            }
                        }
                    }
                    Err(()) => tracing::warn!("cannot serve the queued connections"),
                }
            }
            actix_web::rt::time::sleep(
                ops.settings()
                    .header_read_timeout
                    .min(crate::shutdown::LAST_REQUEST_GRACE),
            )
            .await;
            // Actix cuts what is still running at its own timeout (started
            // just after this one, rounded up): requests dropped from a moment
            // before it are logged as cut by the server, not the client.
            let deadline = ops.clone();
            actix_web::rt::spawn(async move {
                let t = deadline.settings().shutdown_timeout;
                actix_web::rt::time::sleep(t.saturating_sub(Duration::from_millis(50))).await;
                deadline.shutdown().pass_deadline();
            });
            handle.stop(true).await;
            let _ = actix_web::rt::time::timeout(
                ops.settings().shutdown_timeout,
                futures_util::future::join_all(served),
            )
            .await;
        });
        self.announce(addr, "actix");
        server.await?;
        // The connections opskit took from the queue at the end.
        let _ = stopper.await;
        if self.shutdown().deadline_passed() {
            // Actix's workers drop the requests they cut on their own
            // threads, after the server has stopped: wait for their lines.
            self.shutdown()
                .requests_finished(Duration::from_secs(1))
                .await;
        }
        tracing::info!("server stopped");
        self.finish_telemetry();
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    recorder: Recorder,
    headers: crate::response_headers::Prepared<actix_web::http::header::HeaderMap>,
}

/// The Actix middleware; get it from [`Ops::actix_middleware`].
#[derive(Debug, Clone)]
pub struct OpsMiddleware {
    shared: Rc<Shared>,
}

impl OpsMiddleware {
    /// The middleware around this recorder and security policy.
    pub fn new(recorder: Recorder, security: SecurityPolicy) -> Self {
        Self::with_rate_limiter(recorder, security, None)
    }

    /// The same with a rate limiter (used when it limits anything).
    pub fn with_rate_limiter(
        recorder: Recorder,
        security: SecurityPolicy,
        limiter: Option<crate::ratelimit::Limiter>,
    ) -> Self {
        Self {
            shared: Rc::new(Shared {
                headers: crate::response_headers::Prepared::new(&recorder, security, limiter),
                recorder,
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
            service: Rc::new(service),
            shared: self.shared.clone(),
            rmap: std::cell::OnceCell::new(),
        }))
    }
}

/// The service made by [`OpsMiddleware`].
#[derive(Debug)]
pub struct OpsActixService<S> {
    service: Rc<S>,
    shared: Rc<Shared>,
    /// The app's resource map, copied on the first request (it is fixed once
    /// the app is built): the route of a request whose handler panicked, timed
    /// out or was answered early is matched against it after the request is
    /// gone. Every other request takes the route the router already found.
    rmap: std::cell::OnceCell<Rc<ResourceMap>>,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// What the access log needs from the request (Actix's request moves into the
/// handler, and is gone if the handler panics).
struct Captured {
    method: Method,
    uri: Uri,
    /// Known once the request is done: see [`Captured::route_from`].
    route: Option<String>,
    rmap: Rc<ResourceMap>,
    user_agent: Option<HeaderValue>,
    /// Resolved through trusted proxies once, for the limiter and the logs.
    client: Option<IpAddr>,
    peer: Option<IpAddr>,
    /// The path Actix routes (escapes decoded), when it differs from the
    /// path as sent: the route of an early answer is matched against it.
    routed_path: Option<String>,
    https: bool,
    request_size: Option<u64>,
    /// Host, Accept, Content-Type: read only for error reports.
    #[cfg(feature = "sentry")]
    report_headers: [Option<HeaderValue>; 3],
}

#[cfg(feature = "sentry")]
fn header_str(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

impl Captured {
    /// The route template: from the router's own match when the response
    /// still carries the request (no second match), else by matching the path
    /// against the resource map (a panic, a timeout, an early answer).
    fn route_from<B>(&mut self, res: Option<&ServiceResponse<B>>) {
        self.route = match res {
            Some(res) => res.request().match_pattern(),
            None => self
                .rmap
                .match_pattern(self.routed_path.as_deref().unwrap_or(self.uri.path())),
        };
    }

    fn outcome(&self, status: u16, aborted: bool) -> Outcome<'_> {
        #[cfg(feature = "sentry")]
        let report = self.report_headers.each_ref().map(header_str);
        #[cfg(not(feature = "sentry"))]
        let report = [None; 3];
        let mut outcome = Outcome::captured(
            self.method.as_str(),
            self.uri.path(),
            self.route.as_deref(),
            status,
            self.client,
            self.user_agent
                .as_ref()
                .and_then(|v| crate::recorder::header_text(v.as_bytes())),
            aborted,
            report,
        );
        outcome.https = self.https;
        outcome.request_size = self.request_size;
        outcome.peer = self.peer;
        outcome
    }
}

/// How a request starts: the handler's future, a panic while making it, or
/// an answer given without the handler.
enum Start<F> {
    Call(F),
    /// Redis decides first; then the service is called.
    Deferred(ServiceRequest, crate::ratelimit::Limiter),
    Panicked(Box<dyn std::any::Any + Send>),
    Early(HttpResponse),
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
            self.captured.route_from::<()>(None);
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

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let shared = self.shared.clone();
        // A body without a declared length (chunked, or HTTP/2 without
        // Content-Length) is counted as it streams and cut off at the limit.
        let over = (!req
            .headers()
            .contains_key(actix_web::http::header::CONTENT_LENGTH)
            && (req
                .headers()
                .contains_key(actix_web::http::header::TRANSFER_ENCODING)
                || req.version() == actix_web::http::Version::HTTP_2))
            .then(|| limit_payload(&mut req, shared.headers.security.body_limit()));
        let security = &shared.headers.security;
        let h = req.headers();
        let https = security.is_https(
            h.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
            h.get(actix_web::http::header::FORWARDED)
                .map(HeaderValue::as_bytes),
        );
        let started = shared.recorder.start(
            h.get(&shared.headers.request_id_header)
                .map(HeaderValue::as_bytes),
            req.method().as_str(),
            https,
            &crate::trace::TraceHeaders {
                traceparent: h.get_all(&TRACEPARENT).map(HeaderValue::as_bytes).collect(),
                tracestate: h.get_all(&TRACESTATE).map(HeaderValue::as_bytes).collect(),
                baggage: h.get_all(&BAGGAGE).map(HeaderValue::as_bytes).collect(),
            },
        );
        req.extensions_mut().insert(started.request_id.clone());
        let nonce = security.nonce_enabled().then(CspNonce::generate);
        if let Some(n) = &nonce {
            req.extensions_mut().insert(n.clone());
        }
        let h = req.headers();
        let cors = security.cors(
            req.method().as_str(),
            h.get(actix_web::http::header::ORIGIN)
                .map(HeaderValue::as_bytes),
            h.get(actix_web::http::header::ACCESS_CONTROL_REQUEST_METHOD)
                .map(HeaderValue::as_bytes),
        );
        let early: Option<HttpResponse> = match &cors {
            CorsDecision::Preflight(_) => Some(HttpResponse::NoContent().finish()),
            _ => crate::problem::refuse_path(req.path())
                .or_else(|| {
                    security.check_body(
                        h.get(actix_web::http::header::CONTENT_LENGTH)
                            .map(HeaderValue::as_bytes),
                    )
                })
                .map(|p| actix_web::ResponseError::error_response(&p)),
        };
        let cors = match cors {
            CorsDecision::Preflight(h) | CorsDecision::Actual(h) => h,
            CorsDecision::None => Vec::new(),
        };
        let timeout = security.timeout();
        let peer = req.peer_addr().map(|a| a.ip());
        let client = shared
            .headers
            .proxies
            .client(peer, |name| header_lines(req.headers(), name));
        // Actix routes the path with its percent-escapes decoded (all but
        // `%2F`, `%25`, `%2B`): route policies meet that path, not the one sent.
        let routed_path = req.match_info().as_str();
        let captured = Captured {
            method: req.method().clone(),
            uri: req.uri().clone(),
            route: None,
            rmap: self
                .rmap
                .get_or_init(|| Rc::new(req.resource_map().clone()))
                .clone(),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .cloned(),
            client,
            peer,
            routed_path: (routed_path != req.path()).then(|| routed_path.to_owned()),
            https,
            request_size: req
                .headers()
                .get(actix_web::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
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
        let mut rate = None;
        let start = match (early, &shared.headers.limiter) {
            (Some(res), _) => Start::Early(res),
            (None, Some(limiter)) if limiter.uses_redis() => Start::Deferred(req, limiter.clone()),
            (None, Some(limiter))
                if {
                    let h = req.headers();
                    let header = |name: &str| header_by_name(h, name);
                    let info = crate::ratelimit::RequestInfo {
                        method: req.method().as_str(),
                        path: req.match_info().as_str(),
                        client: captured.client,
                        header: &header,
                    };
                    // A refusal is logged under the request's span (its ids).
                    rate = limiter.check_memory_for(&info, Some(&started.span));
                    rate.as_ref().is_some_and(|c| !c.decision.allowed)
                } =>
            {
                let problem = rate.as_ref().map(crate::ratelimit::Checked::problem);
                Start::Early(actix_web::ResponseError::error_response(
                    &problem.unwrap_or_else(|| crate::Problem::new(429)),
                ))
            }
            (None, _) => {
                let _scope = crate::layer::RequestScope::enter(&started);
                match std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(req))) {
                    Ok(fut) => Start::Call(fut),
                    Err(payload) => Start::Panicked(payload),
                }
            }
        };
        let span = started.span.clone();
        let mut guard = Guard {
            shared,
            started,
            captured,
            done: false,
        };
        let service = self.service.clone();
        let client = guard.captured.client;
        Box::pin(
            async move {
                let mut error = None;
                let start = match start {
                    Start::Deferred(req, limiter) => {
                        rate = {
                            let h = req.headers();
                            let header = |name: &str| header_by_name(h, name);
                            let info = crate::ratelimit::RequestInfo {
                                method: req.method().as_str(),
                                path: req.match_info().as_str(),
                                client,
                                header: &header,
                            };
                            limiter.check(&info).await
                        };
                        match rate.as_ref().filter(|c| !c.decision.allowed) {
                            Some(c) => {
                                Start::Early(actix_web::ResponseError::error_response(&c.problem()))
                            }
                            None => {
                                let _in_request = crate::layer::InRequest::enter();
                                let _trace = crate::trace::Entered::enter(&guard.started.trace);
                                match std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    service.call(req)
                                })) {
                                    Ok(fut) => Start::Call(fut),
                                    Err(payload) => Start::Panicked(payload),
                                }
                            }
                        }
                    }
                    other => other,
                };
                let outcome = match start {
                    // A preflight or a refused body: answered without the handler.
                    Start::Early(res) => Ok(Err(actix_web::error::InternalError::from_response(
                        "", res,
                    )
                    .into())),
                    Start::Panicked(payload) => Err(payload),
                    Start::Deferred(..) => unreachable!("resolved above"),
                    Start::Call(fut) => {
                        let guarded = AssertUnwindSafe(crate::layer::InRequestFuture {
                            inner: fut,
                            trace: Some(guard.started.trace.clone()),
                        })
                        .catch_unwind();
                        match timeout {
                            Some(t) => match actix_web::rt::time::timeout(t, guarded).await {
                                Ok(r) => r,
                                Err(_elapsed) => {
                                    error = Some("timeout");
                                    tracing::warn!(
                                        timeout_ms = t.as_millis() as u64,
                                        "request timed out"
                                    );
                                    Ok(Err(guard.shared.headers.security.timeout_problem().into()))
                                }
                            },
                            None => guarded.await,
                        }
                    }
                };
                let mut panicked = None;
                let result = match outcome {
                    // The handler saw its body cut off at the limit: whatever it
                    // answered (a failed extractor's error, say), the answer is 413.
                    Ok(_) if over.as_ref().is_some_and(|o| o.get()) => {
                        Err(guard.shared.headers.security.body_too_large().into())
                    }
                    Ok(result) => result,
                    Err(payload) => {
                        panicked = Some(payload);
                        Err(crate::layer::panic_problem().into())
                    }
                };
                // No route handles the method: the same answer as on Axum.
                let unrouted = result.as_ref().ok().and_then(|res| {
                    use actix_web::body::BodySize;
                    let empty = matches!(
                        res.response().body().size(),
                        BodySize::None | BodySize::Sized(0)
                    );
                    crate::problem::replace_unrouted(
                        guard.captured.method.as_str(),
                        res.status().as_u16(),
                        empty,
                    )
                });
                let result = match unrouted {
                    Some(p) => Err(p.into()),
                    None => result,
                };
                guard.done = true;
                let status = match &result {
                    Ok(res) => res.status().as_u16(),
                    Err(e) => e.as_response_error().status_code().as_u16(),
                };
                let per_response = crate::response_headers::PerResponse {
                    https,
                    nonce: nonce.as_ref(),
                    cors: &cors,
                    request_id: &guard.started.request_id,
                    trace: &guard.started.trace_header,
                    rate: rate.as_ref(),
                };
                guard.captured.route_from(result.as_ref().ok());
                let response_size;
                let result = match result {
                    Ok(mut res) => {
                        guard.shared.headers.apply(res.headers_mut(), &per_response);
                        response_size = sized(res.response().body().size());
                        Ok(res)
                    }
                    Err(e) => {
                        let mut res = e.error_response();
                        guard.shared.headers.apply(res.headers_mut(), &per_response);
                        response_size = sized(res.body().size());
                        Err(actix_web::error::InternalError::from_response(e, res).into())
                    }
                };
                let mut outcome = guard.captured.outcome(status, false);
                outcome.panic = panicked.as_deref().map(crate::layer::panic_message);
                outcome.error = error;
                outcome.response_size = response_size;
                guard.shared.recorder.finish(&guard.started, &outcome);
                result
            }
            .instrument(span),
        )
    }
}

/// Replaces the request's payload with one that fails with
/// `PayloadError::Overflow` past `limit` bytes; the returned flag says it did.
fn limit_payload(req: &mut ServiceRequest, limit: u64) -> Rc<std::cell::Cell<bool>> {
    use futures_util::StreamExt;
    let over = Rc::new(std::cell::Cell::new(false));
    let flag = over.clone();
    let mut remaining = limit;
    let limited = req.take_payload().map(move |chunk| {
        let chunk = chunk?;
        let len = chunk.len() as u64;
        if len > remaining {
            flag.set(true);
            return Err(actix_web::error::PayloadError::Overflow);
        }
        remaining -= len;
        Ok(chunk)
    });
    req.set_payload(actix_web::dev::Payload::from(
        Box::pin(limited) as std::pin::Pin<Box<dyn futures_util::Stream<Item = _>>>
    ));
    over
}

fn sized(size: actix_web::body::BodySize) -> Option<u64> {
    match size {
        actix_web::body::BodySize::Sized(n) => Some(n),
        _ => None,
    }
}
