//! Axum adapter: operational routes and the graceful server.

use crate::health::{Health, Probe};
use crate::Ops;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;

fn probe_response(health: &Health, probe: Probe) -> Response {
    let p = health.probe(probe);
    (
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        p.body,
    )
        .into_response()
}

/// Why [`Ops::serve`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Installing the signal handlers or serving failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints: `/livez`, `/readyz`, `/startupz`.
    ///
    /// Merge them into the application's router: `app.merge(ops.routes())`.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let h = self.health().clone();
        let (live, ready, startup) = (h.clone(), h.clone(), h);
        Router::new()
            .route(
                "/livez",
                get(move || async move { probe_response(&live, Probe::Live) }),
            )
            .route(
                "/readyz",
                get(move || async move { probe_response(&ready, Probe::Ready) }),
            )
            .route(
                "/startupz",
                get(move || async move { probe_response(&startup, Probe::Startup) }),
            )
    }

    /// Serves `app` on `listener` until SIGTERM/SIGINT (or
    /// [`Shutdown::trigger`](crate::Shutdown::trigger)), then: readiness turns
    /// 503, the server keeps serving for `OPSKIT_SHUTDOWN_DELAY`, stops
    /// accepting, lets in-flight requests finish for up to
    /// `OPSKIT_SHUTDOWN_TIMEOUT`, and returns `Ok` (the handle flushes on drop).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        app: Router,
    ) -> Result<(), ServeError> {
        self.shutdown().listen_for_signals()?;
        let addr = listener.local_addr().ok();
        let ops = self.clone();
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { ops.stop_accepting().await });
        self.announce(addr, "axum");
        let deadline = async {
            self.shutdown().triggered().await;
            tokio::time::sleep(self.settings().shutdown_delay + self.settings().shutdown_timeout)
                .await;
        };
        tokio::select! {
            res = server => res?,
            () = deadline => tracing::warn!("shutdown timeout reached with requests still in flight; exiting anyway"),
        }
        self.flush();
        tracing::info!("server stopped");
        Ok(())
    }
}
