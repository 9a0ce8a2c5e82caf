//! The tower adapter (Axum, hyper, tonic): [`OpsLayer`] runs opskit's
//! per-request pipeline (the crate's one ordering of the per-request steps,
//! shared with the Actix middleware) around any tower service.
//!
//! One service does all the per-request work in one future, instead of a tower
//! of single-purpose layers: fewer allocations, one pass over the request. The
//! files split as tower-http splits a middleware: this layer, the
//! [`OpsService`] (translation into the pipeline), its [`ResponseFuture`]
//! (running the handler) and the bodies ([`RequestBody`], [`OpsBody`]); and
//! what the pipeline keeps of a tower request (`kept.rs`).
//!
//! ```
//! use tower::{Layer, Service, ServiceExt};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_req: http::Request<opskit::layer::RequestBody<String>>| async {
//!     if true { panic!("boom") }
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! });
//! let res = opskit::layer::OpsLayer::default()
//!     .layer(svc)
//!     .oneshot(http::Request::new(String::new()))
//!     .await
//!     .unwrap();
//! assert_eq!(res.status(), 500);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(res.headers()["x-request-id"].len(), 36); // a new UUID, echoed
//! # }
//! ```

mod body;
mod future;
mod kept;
mod service;

pub use body::{BodyTooLarge, OpsBody, RequestBody};
pub use future::ResponseFuture;
#[cfg(feature = "axum")]
pub(crate) use service::peer;
pub use service::OpsService;

use crate::pipeline::Pipeline;
use crate::recorder::Recorder;
use crate::security::SecurityPolicy;
use std::sync::Arc;
use tower_layer::Layer;

/// Applies [`OpsService`]. Get it from [`Ops::layer`](crate::Ops::layer);
/// `OpsLayer::default()` gives the default policy without [`init`](crate::init).
#[derive(Debug, Clone)]
#[must_use]
pub struct OpsLayer {
    pipeline: Arc<Pipeline<http::HeaderMap>>,
}

impl Default for OpsLayer {
    fn default() -> Self {
        Self::new(
            Recorder::default(),
            SecurityPolicy::new(&crate::security::SecuritySettings::default()),
        )
    }
}

impl OpsLayer {
    /// The layer around this recorder and security policy.
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
            pipeline: Arc::new(Pipeline::new(recorder, security, limiter)),
        }
    }
}

impl OpsLayer {
    /// The per-request policy (the Actix middleware converts it).
    #[cfg(feature = "actix")]
    pub(crate) fn pipeline(&self) -> &Pipeline<http::HeaderMap> {
        &self.pipeline
    }
}

impl<S> Layer<S> for OpsLayer {
    type Service = OpsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OpsService::new(inner, self.pipeline.clone())
    }
}

#[cfg(all(test, feature = "prometheus"))]
mod grpc_tests;
