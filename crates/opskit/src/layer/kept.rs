//! What the pipeline keeps of a tower request, and the request's state
//! ([`Flight`]) that the future and, for a gRPC call, the body hold.

use crate::pipeline::{InFlight, Kept};
use http::{Method, Uri};
use std::borrow::Cow;

/// The route template type the layer can read from request extensions.
#[cfg(feature = "axum")]
pub(super) type Route = axum::extract::MatchedPath;

/// What the pipeline keeps of a tower request: reference-counted clones.
#[derive(Debug)]
pub(super) struct TowerKept {
    pub(super) method: Method,
    pub(super) uri: Uri,
    #[cfg(feature = "axum")]
    pub(super) route: Option<Route>,
}

impl Kept for TowerKept {
    fn target(&self) -> (&str, &str) {
        (self.method.as_str(), self.uri.path())
    }
    fn route(&self) -> Option<Cow<'_, str>> {
        #[cfg(feature = "axum")]
        return self.route.as_ref().map(|r| Cow::Borrowed(r.as_str()));
        #[cfg(not(feature = "axum"))]
        None
    }
}

pub(super) type Flight = InFlight<http::HeaderMap, TowerKept>;
