//! Axum's operational routes (the per-request stack is the tower
//! [layer](crate::layer); the server is [`Ops::serve`]).

use crate::health::{Health, Probe, ProbeResponse};
use crate::Ops;
use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

fn to_response(p: ProbeResponse) -> Response {
    let challenge = p.www_authenticate.map(|c| [(header::WWW_AUTHENTICATE, c)]);
    (
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        [(header::CONTENT_TYPE, p.content_type)],
        challenge,
        p.body,
    )
        .into_response()
}

fn probe_routes<S: Clone + Send + Sync + 'static>(health: &Health, prefix: &str) -> Router<S> {
    let mut router = Router::new();
    for probe in Probe::ALL {
        let name = probe.path_segment();
        let h = health.clone();
        router = router.route(
            &format!("{prefix}/{name}"),
            get(move |RawQuery(q): RawQuery, headers: HeaderMap| {
                let h = h.clone();
                async move {
                    let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
                    to_response(h.respond(probe, None, q.as_deref(), auth).await)
                }
            }),
        );
        if probe == Probe::Report {
            continue;
        }
        let h = health.clone();
        router = router.route(
            &format!("{prefix}/{name}/{{check}}"),
            get(move |Path(check): Path<String>, RawQuery(q): RawQuery| {
                let h = h.clone();
                async move { to_response(h.respond(probe, Some(&check), q.as_deref(), None).await) }
            }),
        );
    }
    router
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints: `/livez`, `/readyz`, `/startupz` (each also
    /// `/{probe}/{check}`, with `?verbose` and `?exclude=`), and `/health`,
    /// under `OPSKIT_HEALTH_PREFIX`; and `/metrics` (`OPSKIT_METRICS_PATH`,
    /// feature `prometheus`).
    ///
    /// Merge them into the application's router: `app.merge(ops.routes())`.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let router = probe_routes(self.health(), &self.settings().health_prefix);
        #[cfg(feature = "prometheus")]
        let router = match self.metrics_endpoint() {
            Some(endpoint) => {
                let endpoint = endpoint.clone();
                router.route(
                    &self.settings().metrics.path,
                    get(move |headers: HeaderMap| {
                        let endpoint = endpoint.clone();
                        async move {
                            let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
                            to_response(endpoint.respond(auth))
                        }
                    }),
                )
            }
            None => router,
        };
        router
    }
}
