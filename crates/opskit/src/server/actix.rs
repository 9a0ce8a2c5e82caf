//! The graceful server for Actix: [`Ops::serve_actix`].

use crate::Ops;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory};
use std::fmt;
use std::time::Duration;

impl<C: Send + Sync + 'static> Ops<C> {
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
            // A client that closes its side has left (as hyper's default
            // has it): the request is dropped and recorded as aborted (499)
            // instead of running to the end for nobody.
            .h1_allow_half_closed(false)
            // Actix takes whole seconds; round up so no request is cut early.
            .shutdown_timeout(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0))
            .listen_auto_h2c(listener)?
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
                    .h1_allow_half_closed(false)
                    .finish(app)
                    .tcp_auto_h2c()
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
            // just after this one, rounded up). A moment before it, handlers
            // still running stop and their requests are answered (503, gRPC
            // UNAVAILABLE) while their connections are still open; requests
            // dropped from then on are logged as cut by the server, not the
            // client.
            let deadline = ops.clone();
            actix_web::rt::spawn(async move {
                let t = deadline.settings().shutdown_timeout;
                actix_web::rt::time::sleep(t.saturating_sub(crate::shutdown::ANSWER_BEFORE_CUT))
                    .await;
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
