//! A complete small Axum service on opskit: copy it and grow it.
//!
//! Routes: `GET /`, `GET /users/{id}`, and demo routes `GET /demo/error`
//! (500), `GET /demo/panic` (panics), `GET /demo/slow?ms=N` (sleeps N ms,
//! at most `APP_SLOW_MAX_MS`), `POST /demo/echo` (counts the body's bytes),
//! `GET /demo/page` (a page for the browser checks of the security headers),
//! `GET /demo/embed` (the same page, framable from anywhere: a per-route CSP),
//! `GET /demo/legacy` (a handler that announces its server software, as many
//! libraries do: opskit removes those headers),
//! `GET /demo/downstream` (calls another service, carrying the trace on),
//! `POST /upload` (counts a large body as it streams: the route's own body
//! limit, [`UPLOAD_LIMIT`], is set in `main` with `Builder::route_limit`),
//! `GET /demo/background-panic` (starts a task that panics: opskit logs and
//! reports it), `GET /demo/own-metrics` (the application's own metrics
//! recorder, 404 unless `APP_DEMO_OWN_RECORDER` installed it; see [`demo`]),
//! `GET /pages/{slug}` (served by the fallback, which names its route),
//! plus opskit's operational routes.

mod config;
pub mod demo;

pub use config::Config;

/// The body limit of `POST /upload`, over `OPSKIT_BODY_LIMIT` (1 MiB by
/// default) for every other route.
pub const UPLOAD_LIMIT: u64 = 64 << 20;

/// The starter's business counter (see `describe_metrics`).
pub const USERS_LOOKED_UP: &str = "app_users_looked_up_total";

/// Describes the starter's own metrics (the HELP line Prometheus shows).
pub fn describe_metrics() {
    metrics::describe_counter!(USERS_LOOKED_UP, "Users looked up by id.");
}

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
    if let Some(check) = demo::maintenance_check(ops.app()) {
        ops.health().register(check);
    }
}

use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use opskit::security::CspNonce;
use opskit::telemetry::RequestTelemetry;
use opskit::{Ops, Problem, RequestId};
use serde_json::{json, Value};
use std::time::Duration;

/// The demo page: a script carrying the CSP nonce (runs when nonces are on),
/// an inline script without it (always blocked by the CSP), and a listener
/// that lists the CSP violations it sees; when framed, it tells its parent.
pub fn demo_page_html(nonce: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>opskit starter</title></head>
<body>
<p id="allowed">not run</p>
<p id="inline">not run</p>
<p id="violations">none</p>
<script nonce="{nonce}">
document.addEventListener("securitypolicyviolation", function (e) {{
  var v = document.getElementById("violations");
  v.textContent = (v.textContent === "none" ? "" : v.textContent + " ") + e.violatedDirective;
}});
document.getElementById("allowed").textContent = "ran";
if (window.parent !== window) {{ window.parent.postMessage("framed", "*"); }}
</script>
<script>document.getElementById("inline").textContent = "ran";</script>
</body></html>
"#
    )
}

/// The service's router, with opskit's routes and layer.
pub fn app(ops: &Ops<Config>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/users/{id}", get(user))
        .route("/demo/error", get(demo_error))
        .route("/demo/panic", get(demo_panic))
        .route("/demo/slow", get(demo_slow))
        .route("/demo/page", get(demo_page))
        .route("/demo/embed", get(demo_embed))
        .route("/demo/legacy", get(demo_legacy))
        .route("/demo/echo", post(demo_echo))
        .route("/demo/downstream", get(demo_downstream))
        .route("/upload", post(upload))
        .route("/demo/background-panic", get(demo_background_panic))
        .route("/demo/own-metrics", get(demo_own_metrics))
        .fallback(pages)
        .with_state(ops.clone())
        .merge(ops.routes())
        // Extractors accept bodies up to opskit's limit (Axum's own default is 2 MB).
        .layer(axum::extract::DefaultBodyLimit::max(
            usize::try_from(ops.settings().security.body_limit).unwrap_or(usize::MAX),
        ))
        .layer(ops.layer())
}

async fn index(State(ops): State<Ops<Config>>) -> Json<Value> {
    // Written only when the filter lets this crate's debug events through
    // (`RUST_LOG`, or at run time with `PUT /loggers`: see docs/logging.md).
    tracing::debug!(greeting = %ops.app().greeting, "index served");
    Json(json!({ "service": ops.service().name, "message": ops.app().greeting }))
}

async fn user(
    Path(id): Path<String>,
    request_id: RequestId,
    telemetry: RequestTelemetry,
) -> Result<Json<Value>, Problem> {
    let id: u64 = id
        .parse()
        .map_err(|_| Problem::new(400).detail("the user id must be a whole number"))?;
    // On this request's access line, span and error report (see
    // docs/logging.md, "Request enrichment").
    let _ = telemetry.set("user.id", id);
    let name = find_user(id).map_err(|e| Problem::new(503).detail(e))?;
    // Inside the request: this line carries `request_id` and `user.id` too.
    tracing::info!("user looked up");
    // A business metric: plain `metrics` macros land in opskit's /metrics.
    metrics::counter!(USERS_LOOKED_UP).increment(1);
    Ok(Json(
        json!({ "id": id, "name": name, "request_id": request_id.as_str() }),
    ))
}

/// Ids from here on live in the (pretend) archive, which is down: the
/// lookup logs an error inside its span and the request answers 503.
pub const ARCHIVED_USERS: u64 = 1_000_000;

/// A pretend repository lookup, traced the Rust way: `#[instrument]` opens a
/// span that opskit exports as a child of the request's server span (when
/// the request is sampled and OTLP is on), named `users.find`, with its
/// fields as attributes; the cache check inside it is a nested span; the
/// error event of an archived id sets the span's status to Error
/// (docs/tracing.md, "Your own spans").
#[tracing::instrument(
    name = "users.find",
    target = "app::repo",
    skip_all,
    fields(db.system.name = "postgresql", db.collection.name = "users", db.operation.name = "SELECT")
)]
fn find_user(id: u64) -> Result<String, &'static str> {
    {
        let _cache =
            tracing::info_span!(target: "app::repo", "users.cache", cache.hit = false).entered();
    }
    if id >= ARCHIVED_USERS {
        tracing::error!(target: "app::repo", shard = id % 8, "the archive shard is unavailable");
        return Err("the user archive is unavailable; try again later");
    }
    Ok(format!("user-{id}"))
}

async fn demo_error(telemetry: RequestTelemetry) -> Problem {
    // A failure of a known user and tenant: both on the error report (the
    // user only with OPSKIT_SENTRY_SEND_PII).
    let _ = telemetry.set("user.id", 42);
    let _ = telemetry.set("tenant", "acme");
    // Becomes a breadcrumb of the error event.
    tracing::warn!(step = "charge", "payment provider unreachable");
    Problem::new(500).detail("this route always fails, to show error handling")
}

async fn demo_panic() -> Json<Value> {
    panic!("demo panic: this handler always panics");
}

/// Starts a background task that panics, and answers at once: outside any
/// request, the panic is logged and reported to Sentry (once) by opskit's
/// panic hook, and the service keeps serving.
async fn demo_background_panic() -> (axum::http::StatusCode, Json<Value>) {
    tokio::spawn(async {
        panic!("demo background panic: this task always panics");
    });
    (
        axum::http::StatusCode::ACCEPTED,
        Json(json!({ "spawned": true })),
    )
}

/// The application's own metrics recorder (see [`demo::before_init`]).
async fn demo_own_metrics() -> Result<String, Problem> {
    demo::own_metrics().ok_or_else(|| {
        Problem::new(404).detail("APP_DEMO_OWN_RECORDER is off: opskit serves the metrics")
    })
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

/// Calls another service (`APP_DOWNSTREAM_URL`, by default this one's
/// `/users/42`) with async `reqwest` and opskit's middleware: the call
/// joins this trace (server span → `downstream.call` → CLIENT span → the
/// callee's server span). A transport error or a 5xx answer is a 502.
async fn demo_downstream(State(ops): State<Ops<Config>>) -> Result<Json<Value>, Problem> {
    let url = ops.app().downstream_url(ops.local_addr());
    let (status, body) = call_downstream(&url).await.map_err(downstream_problem)?;
    Ok(Json(
        json!({ "downstream_status": status, "downstream": body }),
    ))
}

/// The HTTP client of `/demo/downstream`: async `reqwest` with opskit's
/// middleware, built once (it pools connections). Every call carries the
/// trace context on, gets a CLIENT span when the request is sampled, and is
/// measured in `http_client_request_duration_seconds`.
static DOWNSTREAM: std::sync::LazyLock<reqwest_middleware::ClientWithMiddleware> =
    std::sync::LazyLock::new(|| {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        reqwest_middleware::ClientBuilder::new(client)
            .with(opskit::client::TraceMiddleware)
            .build()
    });

/// Why a downstream call gave no usable answer.
#[derive(Debug)]
enum DownstreamError {
    /// No response: connection refused, timeout… (the text is redacted).
    Transport(String),
    /// The downstream service answered with a server error.
    Status(u16),
}

/// The downstream call, in a span of its own (`downstream.call`, exported
/// as an INTERNAL span under the request's): the middleware's CLIENT span
/// is its child, and the callee's server span the CLIENT span's.
#[tracing::instrument(
    name = "downstream.call",
    target = "app::downstream",
    skip_all,
    fields(downstream.url = %opskit::redact_urls(url))
)]
async fn call_downstream(url: &str) -> Result<(u16, Value), DownstreamError> {
    // An error may quote the URL: its credentials stay out of the log.
    let redacted = |e: &dyn std::fmt::Display| opskit::redact_urls(&e.to_string()).into_owned();
    let mut response = DOWNSTREAM
        .get(url)
        .send()
        .await
        .map_err(|e| DownstreamError::Transport(redacted(&e)))?;
    let status = response.status().as_u16();
    if status >= 500 {
        return Err(DownstreamError::Status(status));
    }
    // At most 1 MiB of JSON; anything else is `null`.
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| DownstreamError::Transport(redacted(&e)))?
    {
        if body.len() + chunk.len() > 1 << 20 {
            body.clear();
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The 502 problem of a failed downstream call (logged at warn).
fn downstream_problem(e: DownstreamError) -> Problem {
    match e {
        DownstreamError::Transport(error) => {
            tracing::warn!(%error, "downstream call failed");
            Problem::new(502).detail("the downstream service did not answer")
        }
        DownstreamError::Status(status) => {
            tracing::warn!(status, "downstream call failed");
            Problem::new(502).detail(format!("the downstream service answered {status}"))
        }
    }
}

/// The fallback: pages no route names (a content store's, say) under
/// `/pages/{slug}`, 404 for any other path. It names its route for the
/// metrics, span and access line (without it they have no `http.route`),
/// and puts the page on its telemetry: a metric label only when the service
/// declares it, capped (`OPSKIT_METRICS_LABELS=page:cap=20`).
async fn pages(uri: axum::http::Uri, telemetry: RequestTelemetry) -> axum::response::Response {
    use axum::response::IntoResponse;
    match page_slug(uri.path()) {
        Some(slug) => {
            let _ = telemetry.set_route("/pages/{slug}");
            let _ = telemetry.set("page", slug);
            Json(json!({ "page": slug })).into_response()
        }
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// The page of a `/pages/{slug}` path.
fn page_slug(path: &str) -> Option<&str> {
    path.strip_prefix("/pages/")
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

async fn demo_page(nonce: Option<CspNonce>) -> axum::response::Html<String> {
    axum::response::Html(demo_page_html(nonce.as_ref().map_or("", CspNonce::as_str)))
}

/// Counts an upload's bytes as they stream, without holding them. A body
/// over the route's limit is cut off and answered 413 by opskit.
async fn upload(body: axum::body::Body) -> Result<Json<Value>, Problem> {
    use futures_util::StreamExt;
    let (mut bytes, mut stream) = (0, body.into_data_stream());
    while let Some(chunk) = stream.next().await {
        bytes += chunk
            .map_err(|_| Problem::new(400).detail("the upload did not arrive whole"))?
            .len();
    }
    Ok(Json(json!({ "bytes": bytes })))
}

async fn demo_echo(body: axum::body::Bytes) -> Json<Value> {
    Json(json!({ "bytes": body.len() }))
}

/// Sets its own CSP (overridable by default: kept, so any origin may frame
/// the page; browsers then ignore X-Frame-Options) and X-Frame-Options (not
/// overridable: opskit's value wins).
async fn demo_embed() -> impl axum::response::IntoResponse {
    (
        [
            ("content-security-policy", "frame-ancestors *"),
            ("x-frame-options", "ALLOWALL"),
        ],
        axum::response::Html(demo_page_html("")),
    )
}

/// Announces its server software, as many frameworks and libraries do:
/// opskit removes `Server` and `X-Powered-By` from every response.
async fn demo_legacy() -> impl axum::response::IntoResponse {
    (
        [("server", "legacy-app/1.0"), ("x-powered-by", "PHP/5.6")],
        Json(json!({ "legacy": true })),
    )
}
