//! The graceful servers: each serves its framework's application until
//! SIGTERM/SIGINT, then follows opskit's shutdown sequence (readiness 503,
//! delay, stop accepting, drain, flush). They own connections, not requests:
//! the per-request policy is the [pipeline](crate::pipeline)'s.

#[cfg(feature = "actix")]
mod actix;
#[cfg(feature = "axum")]
mod axum;

#[cfg(feature = "axum")]
pub use self::axum::ServeError;
