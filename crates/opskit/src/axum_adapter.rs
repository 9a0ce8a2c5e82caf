//! Axum's operational routes (the per-request stack is the tower
//! [layer](crate::layer); the server is [`Ops::serve`]).

use crate::health::ProbeResponse;
use crate::operational::{Call, MAX_BODY};
use crate::Ops;
use axum::extract::{Path, RawQuery, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

fn to_response(p: ProbeResponse) -> Response {
    let challenge = p.www_authenticate.map(|c| [(header::WWW_AUTHENTICATE, c)]);
    let allow = p.allow.map(|a| [(header::ALLOW, a)]);
    (
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        [(header::CONTENT_TYPE, p.content_type)],
        challenge,
        allow,
        p.body,
    )
        .into_response()
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// The operational endpoints: `/livez`, `/readyz`, `/startupz` (each also
    /// `/{probe}/{check}`, with `?verbose` and `?exclude=`), and `/health`,
    /// under `OPSKIT_HEALTH_PREFIX`; and `/metrics` (`OPSKIT_METRICS_PATH`,
    /// feature `prometheus`); `/loggers` when `OPSKIT_ADMIN_TOKEN` is set.
    ///
    /// Merge them into the application's router: `app.merge(ops.routes())`.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let mut router = Router::new();
        for endpoint in self.operational_endpoints() {
            let path = endpoint.path.clone();
            let handler =
                move |check: Option<Path<String>>, RawQuery(q): RawQuery, req: Request| {
                    let endpoint = endpoint.clone();
                    async move {
                        let peer = crate::layer::peer(&req);
                        let (head, body) = req.into_parts();
                        let body = axum::body::to_bytes(body, MAX_BODY).await.ok();
                        let call = Call {
                            method: head.method.as_str(),
                            check: check.as_ref().map(|Path(c)| c.as_str()),
                            query: q.as_deref(),
                            headers: &head.headers,
                            peer,
                            body: body.as_deref(),
                        };
                        to_response(endpoint.answer(call).await)
                    }
                };
            router = router.route(&path, any(handler));
        }
        router
    }
}
