//! A complete small Axum service on opskit: copy it and grow it.
//!
//! Routes: `GET /`, `GET /users/{id}`, and demo routes `GET /demo/error`
//! (500), `GET /demo/panic` (panics), `GET /demo/slow?ms=N` (sleeps N ms,
//! at most `APP_SLOW_MAX_MS`), plus opskit's operational routes.

mod config;

pub use config::Config;

/// Registers the starter's health checks: its dependencies when configured
/// (critical: readiness fails without them) and free disk space (a warning).
pub fn register_checks(ops: &Ops<Config>) {
    use opskit::health::checks;
    if let Some(url) = &ops.app().database_url {
        ops.health()
            .register(checks::postgres("postgres", url.as_str()));
    }
    if let Some(url) = &ops.app().redis_url {
        ops.health().register(checks::redis("redis", url.as_str()));
    }
    ops.health()
        .register(checks::disk_free("disk", ".", 64 << 20).critical(false));
}

use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use opskit::{Ops, Problem, RequestId};
use serde_json::{json, Value};
use std::time::Duration;

/// The service's router, with opskit's routes and layer.
pub fn app(ops: &Ops<Config>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/users/{id}", get(user))
        .route("/demo/error", get(demo_error))
        .route("/demo/panic", get(demo_panic))
        .route("/demo/slow", get(demo_slow))
        .with_state(ops.clone())
        .merge(ops.routes())
        .layer(ops.layer())
}

async fn index(State(ops): State<Ops<Config>>) -> Json<Value> {
    Json(json!({ "service": ops.service().name, "message": ops.app().greeting }))
}

async fn user(Path(id): Path<String>, request_id: RequestId) -> Result<Json<Value>, Problem> {
    let id: u64 = id
        .parse()
        .map_err(|_| Problem::new(400).detail("the user id must be a whole number"))?;
    // Inside the request: this line carries `request_id` too.
    tracing::info!(user.id = id, "user looked up");
    Ok(Json(
        json!({ "id": id, "name": format!("user-{id}"), "request_id": request_id.as_str() }),
    ))
}

async fn demo_error() -> Problem {
    // Becomes a breadcrumb of the error event.
    tracing::warn!(step = "charge", "payment provider unreachable");
    Problem::new(500).detail("this route always fails, to show error handling")
}

async fn demo_panic() -> Json<Value> {
    panic!("demo panic: this handler always panics");
}

async fn demo_slow(
    State(ops): State<Ops<Config>>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, Problem> {
    let max = ops.app().slow_max_ms;
    let ms = slow_ms(q.as_deref(), max)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "slept_ms": ms })))
}

/// `ms` from the query string: a whole number up to `max`, 100 when absent.
fn slow_ms(query: Option<&str>, max: u64) -> Result<u64, Problem> {
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="));
    let ms = match raw {
        None => 100,
        Some(v) => v
            .parse()
            .map_err(|_| Problem::new(400).detail("ms must be a whole number of milliseconds"))?,
    };
    if ms > max {
        return Err(Problem::new(400).detail(format!("ms must be at most {max}")));
    }
    Ok(ms)
}
