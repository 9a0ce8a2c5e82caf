//! `cargo run -p axum-starter`: the Axum starter with embedded defaults.

use axum_starter::Config;
use opskit::limits::RouteLimit;

#[tokio::main]
async fn main() {
    let builder = opskit::Builder::new()
        .service(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        .commit(option_env!("GIT_COMMIT").unwrap_or("unknown"))
        // One route takes large bodies (streamed, never held whole).
        .route_limit(RouteLimit::new("/upload").body_limit(axum_starter::UPLOAD_LIMIT));
    // Test and demo hooks, off unless their APP_DEMO_* variable is set.
    let ops = axum_starter::demo::before_init(builder)
        .init::<Config>()
        .unwrap_or_else(|e| e.exit());
    axum_starter::register_checks(&ops);
    axum_starter::describe_metrics();
    let app = axum_starter::app(&ops);
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
