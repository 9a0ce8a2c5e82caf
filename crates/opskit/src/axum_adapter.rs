//! Axum's operational routes (the per-request stack is the tower
//! [layer](crate::layer); the server is [`Ops::serve`]).

use crate::health::ProbeResponse;
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

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints: `/livez`, `/readyz`, `/startupz` (each also
    /// `/{probe}/{check}`, with `?verbose` and `?exclude=`), and `/health`,
    /// under `OPSKIT_HEALTH_PREFIX`; and `/metrics` (`OPSKIT_METRICS_PATH`,
    /// feature `prometheus`).
    ///
    /// Merge them into the application's router: `app.merge(ops.routes())`.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let mut router = Router::new();
        for endpoint in self.operational_endpoints() {
            let path = endpoint.path.clone();
            let handler =
                move |check: Option<Path<String>>, RawQuery(q): RawQuery, h: HeaderMap| {
                    let endpoint = endpoint.clone();
                    async move {
                        let auth = h.get(header::AUTHORIZATION).map(|v| v.as_bytes());
                        let check = check.as_ref().map(|Path(c)| c.as_str());
                        to_response(endpoint.answer(check, q.as_deref(), auth).await)
                    }
                };
            router = router.route(&path, get(handler));
        }
        router
    }
}
