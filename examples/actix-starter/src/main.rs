//! `cargo run -p actix-starter`: the Actix-web starter with embedded defaults.

use actix_starter::Config;
use actix_web::{web, App};

#[actix_web::main]
async fn main() {
    let ops = opskit::Builder::new()
        .service(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        .commit(option_env!("GIT_COMMIT").unwrap_or("unknown"))
        .init::<Config>()
        .unwrap_or_else(|e| e.exit());
    actix_starter::register_checks(&ops);
    actix_starter::describe_metrics();
    let listener = match ops.bind_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, address = %ops.settings().listen_addr(), "cannot listen");
            drop(ops);
            std::process::exit(opskit::EXIT_SOFTWARE);
        }
    };
    let app_ops = ops.clone();
    let body_limit = usize::try_from(ops.settings().security.body_limit).unwrap_or(usize::MAX);
    let factory = move || {
        App::new()
            .app_data(web::Data::new(app_ops.clone()))
            // Extractors accept bodies up to opskit's limit (Actix's own default is 256 KiB).
            .app_data(web::PayloadConfig::new(body_limit))
            .configure(actix_starter::routes)
            .configure(app_ops.actix_routes())
            .wrap(app_ops.actix_middleware())
    };
    if let Err(e) = ops.serve_actix(listener, factory).await {
        tracing::error!(error = %e, "server failed");
        std::process::exit(opskit::EXIT_SOFTWARE);
    }
}
