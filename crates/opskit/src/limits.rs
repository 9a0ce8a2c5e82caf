//! How large a request body may be and how long a request may take: one
//! limit for every route (`OPSKIT_BODY_LIMIT`, `OPSKIT_REQUEST_TIMEOUT`), and
//! per-route limits over it (`OPSKIT_ROUTE_LIMITS`, [`Builder::route_limit`](crate::Builder::route_limit))
//! for the upload route that needs 100 MiB or the export that takes minutes.
//!
//! The pipeline looks the request's limits up once, by the path the router
//! matches, with the rate limiter's route patterns (exact, or a prefix ending
//! in `*`; the first match wins); a route policy sets one limit or both, the
//! others stay global.
//!
//! ```
//! use opskit::limits::RouteLimit;
//! use std::time::Duration;
//! let upload = RouteLimit::new("/upload/*").body_limit(100 << 20);
//! let export = RouteLimit::new("/export").timeout(Duration::from_secs(120));
//! assert_eq!(upload.pattern, "/upload/*");
//! assert_eq!(export.timeout, Some(Duration::from_secs(120)));
//! ```

use std::time::Duration;

/// Whether `path` matches a route pattern: the pattern itself, or, for a
/// pattern ending in `*`, any path starting with what comes before it (the
/// syntax of the rate limiter's routes, of route limits and of
/// `OPSKIT_TELEMETRY_EXCLUDE`).
pub(crate) fn pattern_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == pattern,
    }
}

/// Limits for the routes matching `pattern`; `None` keeps the global limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteLimit {
    /// `/upload/*` (a prefix), `/export` (exact).
    pub pattern: String,
    /// The largest accepted body, in bytes.
    pub body_limit: Option<u64>,
    /// The longest time a request may take (zero: no limit).
    pub timeout: Option<Duration>,
}

impl RouteLimit {
    /// No limit of its own yet for `pattern`: set them with
    /// [`Self::body_limit`] and [`Self::timeout`].
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            body_limit: None,
            timeout: None,
        }
    }

    /// The route's body limit, in bytes.
    #[must_use]
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// The route's request timeout (zero: none).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The limits of one request, and the answers when it goes past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest body, in bytes.
    pub(crate) body: u64,
    /// How long the handler may run.
    pub(crate) timeout: Option<Duration>,
    /// The status of a timeout's answer (408, 503 or 504).
    pub(crate) timeout_status: u16,
}

impl Limits {
    /// The problem for a request whose declared `Content-Length` is over the
    /// limit. (Bodies without a declared length are counted as they stream:
    /// the pipeline cuts them off at the limit and answers
    /// [`Self::body_too_large`].)
    pub(crate) fn check_body(&self, content_length: Option<u64>) -> Option<crate::Problem> {
        (content_length? > self.body).then(|| self.body_too_large())
    }

    /// The 413 problem for a body over the limit.
    pub(crate) fn body_too_large(&self) -> crate::Problem {
        crate::Problem::new(413).detail(format!(
            "the request body is larger than {} bytes",
            self.body
        ))
    }

    /// The problem answered when a request times out.
    pub(crate) fn timeout_problem(&self) -> crate::Problem {
        crate::Problem::new(self.timeout_status).detail(format!(
            "the request took longer than {} ms",
            self.timeout.unwrap_or_default().as_millis()
        ))
    }
}

/// The global limits and the route limits over them.
#[derive(Debug, Clone)]
pub(crate) struct LimitTable {
    global: Limits,
    routes: Vec<(String, Limits)>,
}

impl LimitTable {
    /// The table: `routes` each over `global` (a zero timeout is none).
    pub(crate) fn new(global: Limits, routes: &[RouteLimit]) -> Self {
        let routes = routes
            .iter()
            .map(|r| {
                let timeout = match r.timeout {
                    Some(t) => (!t.is_zero()).then_some(t),
                    None => global.timeout,
                };
                let body = r.body_limit.unwrap_or(global.body);
                let limits = Limits {
                    body,
                    timeout,
                    ..global
                };
                (r.pattern.clone(), limits)
            })
            .collect();
        Self { global, routes }
    }

    /// The limits every route has unless a route limit says otherwise.
    pub(crate) fn global(&self) -> &Limits {
        &self.global
    }

    /// The limits of a request to `path` (as the router matches it).
    pub(crate) fn for_path(&self, path: &str) -> Limits {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, path))
            .map_or(self.global, |(_, limits)| *limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_route_sets_its_limits_over_the_global_ones() {
        let global = Limits {
            body: 1 << 20,
            timeout: Some(Duration::from_secs(30)),
            timeout_status: 504,
        };
        let table = LimitTable::new(
            global,
            &[
                RouteLimit::new("/upload/*").body_limit(100 << 20),
                RouteLimit::new("/upload/slow").timeout(Duration::from_secs(1)),
                RouteLimit::new("/export").timeout(Duration::ZERO),
            ],
        );
        let up = table.for_path("/upload/slow");
        assert_eq!((up.body, up.timeout), (100 << 20, global.timeout));
        let export = table.for_path("/export");
        assert_eq!((export.body, export.timeout), (1 << 20, None));
        assert_eq!(table.for_path("/export/1"), global);
        assert_eq!(table.for_path("/uploads"), global);
        assert_eq!(
            up.body_too_large().to_json(),
            crate::Problem::new(413)
                .detail("the request body is larger than 104857600 bytes")
                .to_json()
        );
    }
}
