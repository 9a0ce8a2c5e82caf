//! `cargo run -p tonic-starter`: a gRPC service (`users.v1.Users`, see
//! proto/users/v1/users.proto) behind opskit's layer, with the standard
//! `grpc.health.v1.Health` service backed by opskit's health registry.
//!
//! gRPC and the operational HTTP routes (`/livez`, `/readyz`, `/metrics`)
//! share one port, served by opskit's HTTP/1.1 + HTTP/2 server (gRPC
//! clients speak HTTP/2 with prior knowledge); with `OPSKIT_METRICS_ADDR`
//! set, `/metrics` moves to that address as in the other starters.
//!
//! Environment: opskit's (`OPSKIT_*`, `OTEL_*`, `SENTRY_*`, `PORT`, …), and
//! `APP_SLOW_MAX_MS` (the longest `Sleep` and stream interval honoured,
//! 10 000 ms by default).

mod users;

use opskit::AppConfig;
use serde::Deserialize;
use std::time::Duration;

/// The starter's own configuration.
#[derive(Debug, Clone, Deserialize)]
struct Config {
    /// `APP_SLOW_MAX_MS`.
    #[serde(default = "default_slow_max")]
    slow_max_ms: u64,
}

fn default_slow_max() -> u64 {
    10_000
}

impl AppConfig for Config {}

#[tokio::main]
async fn main() {
    let ops = opskit::Builder::new()
        .service(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        .commit(option_env!("GIT_COMMIT").unwrap_or("unknown"))
        .init::<Config>()
        .unwrap_or_else(|e| e.exit());
    let users = users::UsersServer::new(users::Users {
        slow_max: Duration::from_millis(ops.app().slow_max_ms),
    });
    let app = tonic::service::Routes::new(users)
        .add_service(ops.grpc_health())
        .into_axum_router()
        .merge(ops.routes())
        .layer(ops.layer());
    let listener = match ops.bind().await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, address = %ops.settings().listen_addr(), "cannot listen");
            drop(ops);
            std::process::exit(opskit::EXIT_SOFTWARE);
        }
    };
    if let Err(e) = ops.serve(listener, app).await {
        tracing::error!(error = %e, "server failed");
        std::process::exit(opskit::EXIT_SOFTWARE);
    }
}
