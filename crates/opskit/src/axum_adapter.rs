//! Axum's operational routes (the per-request stack is the tower
//! [layer](crate::layer); the server is [`Ops::serve`]).

use crate::operational::{Call, MAX_BODY};
use crate::Ops;
use axum::extract::{Path, RawQuery, Request};
use axum::routing::any;
use axum::Router;

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
                        endpoint.answer(call).await.into_http::<axum::body::Body>()
                    }
                };
            router = router.route(&path, any(handler));
        }
        router
    }
}
