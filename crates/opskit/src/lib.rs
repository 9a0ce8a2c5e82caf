#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod client;
pub mod config;
mod decimal;
mod grpc;
#[cfg(feature = "grpc")]
pub mod grpc_health;
pub mod health;
pub mod layer;
pub mod limits;
pub mod logging;
pub mod metrics;
#[cfg(any(feature = "axum", feature = "actix"))]
mod operational;
mod ops;
pub mod otel;
mod pipeline;
pub mod problem;
pub mod ratelimit;
pub mod recorder;
#[cfg(feature = "sentry")]
pub mod report;
mod request;
pub mod request_id;
mod response_headers;
mod secret;
pub mod security;
mod server;
mod service;
mod shutdown;
pub mod telemetry;
mod time;
pub mod trace;

#[cfg(feature = "actix")]
mod actix_adapter;
#[cfg(feature = "axum")]
mod axum_adapter;

#[cfg(feature = "actix")]
pub use actix_adapter::{OpsActixService, OpsMiddleware};
pub use config::AppConfig;
pub use ops::{init, Builder, InitError, Ops, EXIT_CONFIG, EXIT_SOFTWARE};
pub use problem::Problem;
pub use request_id::RequestId;
pub use secret::{redact_urls, Secret};
#[cfg(feature = "axum")]
pub use server::ServeError;
pub use service::ServiceInfo;
pub use shutdown::Shutdown;
/// The URL type for configuration fields (`url::Url`, with serde).
pub use url::Url;
