//! Shared pieces of the benches: the routers, the request, the subscribers.

use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http::Request;
use opskit::metrics::{HttpMetrics, MetricsSettings};
use opskit::ratelimit::{LimitSettings, Limiter, Quota};
use opskit::recorder::Recorder;
use opskit::security::{SecurityPolicy, SecuritySettings};

/// A small router like the starters': one route with a path parameter.
pub fn bare_router() -> Router {
    Router::new().route(
        "/users/{id}",
        get(|Path(id): Path<String>| async move { id }),
    )
}

/// [`bare_router`] whose handler calls an `#[instrument]`ed function: one
/// application span per request (the child-span budgets of
/// docs/performance.md).
pub fn child_router() -> Router {
    Router::new().route(
        "/users/{id}",
        get(|Path(id): Path<String>| async move { find_user(id) }),
    )
}

/// A repository lookup as an application writes it.
#[tracing::instrument(name = "users.find", skip_all, fields(db.system.name = "postgresql"))]
fn find_user(id: String) -> String {
    id
}

/// The 12 response headers opskit sends by default over plain HTTP (its
/// fixed security headers and the CSP, no HSTS), as `http` 1.x pairs: what
/// the peer stacks and the `bare+headers` floor send.
pub fn default_security_headers() -> Vec<(http::HeaderName, http::HeaderValue)> {
    use opskit::security::{SecurityPolicy, SecuritySettings};
    let policy = SecurityPolicy::new(&SecuritySettings::default());
    let (csp_name, csp) = policy.csp(false, None).expect("csp");
    let csp = (csp_name, csp.into_owned());
    policy
        .fixed_headers()
        .iter()
        .cloned()
        .chain([csp])
        .map(|(name, value)| {
            (
                http::HeaderName::from_static(name),
                http::HeaderValue::from_str(&value).expect("value"),
            )
        })
        .collect()
}

/// A realistic request: user agent, accept, x-forwarded-for, traceparent.
/// Header values are `from_static`, so that cloning one costs no allocation
/// — as with hyper, whose header values share the connection's read buffer
/// (a `Vec`-backed value would allocate on its first clone, which no served
/// request does).
pub fn request() -> Request<Body> {
    use http::HeaderValue;
    Request::builder()
        .uri(http::Uri::from_static("/users/7"))
        .header(
            "user-agent",
            HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
        )
        .header("accept", HeaderValue::from_static("application/json"))
        .header("x-forwarded-for", HeaderValue::from_static("203.0.113.7"))
        .header(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        )
        .body(Body::empty())
        .expect("a valid request")
}

/// opskit's non-blocking line writer into `io::sink`, as `init` sets up
/// for stdout.
pub fn opskit_sink_writer() -> (opskit::logging::LineWriter, opskit::logging::WriterGuard) {
    opskit::logging::non_blocking(std::io::sink(), opskit::logging::DEFAULT_LIMIT)
}

/// `tracing-appender`'s non-blocking writer into `io::sink`: what a peer
/// stack writes its log through.
pub fn sink_writer() -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::sink())
}

/// The usual peer logging assembly around `app`: tower-http `TraceLayer` at
/// INFO (span + one event per response) and the request-id layers.
pub fn peer_logging(app: Router) -> Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
    let header = http::HeaderName::from_static("x-request-id");
    app.layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
}

/// tracing-subscriber's own JSON format (flattened events) at INFO into `writer`:
/// what a peer stack logs through.
pub fn peer_json_subscriber(
    writer: tracing_appender::non_blocking::NonBlocking,
) -> impl tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync {
    use tracing_subscriber::layer::SubscriberExt;
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(writer),
        )
}

/// The runtime the benches drive requests on: current-thread, timers on (as
/// under `#[tokio::main]`: the request timeout and health timeouts need them).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Spans [`DroppingExporter`] was handed (to check that none were lost
/// before export, which would flatter a measurement).
pub static EXPORTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An OpenTelemetry exporter that drops every batch: the cost measured is the
/// request path's (span building and queueing), not a collector's.
#[derive(Debug)]
pub struct DroppingExporter;

impl opentelemetry_sdk::trace::SpanExporter for DroppingExporter {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        EXPORTED.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
        drop(batch);
        Ok(())
    }
}

/// The batch queue of both sides in the benches: large enough that a burst
/// of in-process requests (millions a second, far faster than any real
/// traffic) never fills it — a full queue drops spans, which would flatter
/// a measurement. The callgrind binary checks every span reached the exporter.
pub const BENCH_QUEUE: usize = 1 << 16;

/// The queue size [`dropping_span_sink`] and [`dropping_batch_processor`]
/// use: [`BENCH_QUEUE`] in-process; `serve` (loopback) sets the production
/// default instead, as a service runs (the batch thread keeps up with
/// network-paced requests). (A 65,536-span queue is a ring of ~30 MB; an
/// interleaved A/B of the two sizes over loopback showed no difference
/// within this VM's noise, but the default is what a service runs.)
static QUEUE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(BENCH_QUEUE);

/// Sets the span queue size of the dropping sinks made after this call.
pub fn set_span_queue(size: usize) {
    QUEUE.store(size, std::sync::atomic::Ordering::Relaxed);
}

fn span_queue() -> usize {
    QUEUE.load(std::sync::atomic::Ordering::Relaxed)
}

/// opskit's span sink over [`DroppingExporter`].
pub fn dropping_span_sink() -> opskit::otel::SpanSink {
    let batch = opskit::otel::BatchSettings {
        max_queue_size: span_queue(),
        ..Default::default()
    };
    opskit::otel::SpanSink::new(
        DroppingExporter,
        batch,
        &opentelemetry_sdk::Resource::builder_empty().build(),
    )
}

/// The SDK's batch processor over [`DroppingExporter`], bounded alike.
pub fn dropping_batch_processor() -> opentelemetry_sdk::trace::BatchSpanProcessor {
    let config = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_max_queue_size(span_queue())
        .build();
    opentelemetry_sdk::trace::BatchSpanProcessor::builder(DroppingExporter)
        .with_batch_config(config)
        .build()
}

/// The peer's tracing: `tracing-opentelemetry` over an SDK tracer provider
/// (batch processor, [`DroppingExporter`]) sampling every or no request.
pub fn peer_otel_layer<S>(sampled: bool) -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use opentelemetry::trace::TracerProvider as _;
    let sampler = if sampled {
        opentelemetry_sdk::trace::Sampler::AlwaysOn
    } else {
        opentelemetry_sdk::trace::Sampler::AlwaysOff
    };
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(dropping_batch_processor())
        .with_sampler(sampler)
        .build();
    tracing_opentelemetry::layer().with_tracer(provider.tracer("peer"))
}

/// [`peer_otel_layer`] alone at INFO, under `TraceLayer`'s span per request.
pub fn peer_otel_subscriber(sampled: bool) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::layer::SubscriberExt;
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(peer_otel_layer(sampled))
}

/// `TraceLayer` at INFO: the span tracing-opentelemetry exports.
pub fn peer_trace_layer(app: Router) -> Router {
    use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
    app.layer(
        TraceLayer::new_for_http()
            .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
    )
}

/// A DSN nothing listens on (error events would fail to send; none occur).
pub const UNREACHABLE_DSN: &str = "http://public@127.0.0.1:9/1";

/// The recorder, security policy and limiter of an opskit variant
/// (`variants.rs`, also the outbound variants' server side).
pub fn opskit_parts(
    variant: &str,
    sink: &opskit::otel::SpanSink,
) -> (Recorder, SecurityPolicy, Option<Limiter>) {
    let variant = variant.strip_prefix("actix-").unwrap_or(variant);
    // `opskit+lean`: the full stack with OPSKIT_SECURITY_HEADERS=lean (the
    // handler's text answer is not a document: OWASP's REST set only).
    let lean = variant == "opskit+lean";
    let all = variant == "opskit" || lean;
    let on =
        |part: &str| (all && part != "unsampled") || variant.split('+').skip(1).any(|p| p == part);
    let mut access = opskit::config::AccessLogSettings::default();
    access.enabled = on("log");
    let unsampled = on("unsampled");
    let sampler = opskit::trace::Sampler {
        parent_based: !unsampled,
        ratio: if unsampled { 0.0 } else { 1.0 },
    };
    if on("metrics") {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::set_global_recorder(recorder).expect("recorder");
    }
    // `+routes`: the quiet operational routes of `init` (probes, `/health`,
    // `/metrics`) and three route limits, none of which the request matches.
    let routes = variant.split('+').any(|p| p == "routes");
    // `+labels`: `tenant` (set by `+enrich`) is a declared metric label.
    let mut metrics_settings = MetricsSettings::default();
    if variant.split('+').any(|p| p == "labels") {
        metrics_settings.labels =
            vec![opskit::metrics::MetricLabel::new("tenant").values(["acme", "globex"])];
    }
    let mut rec = Recorder::new(access, "x-request-id")
        .with_trace_context(sampler, opskit::trace::Propagation::default())
        .with_metrics(on("metrics").then(|| HttpMetrics::new(&metrics_settings)))
        .with_spans((on("spans") || unsampled).then(|| sink.clone()));
    if on("sentry") {
        rec = rec.with_reporter(opskit::report::Reporter::from_settings(
            &opskit::config::SentrySettings::with_dsn(opskit::Secret::new(UNREACHABLE_DSN)),
            &opskit::ServiceInfo {
                name: "bench".into(),
                version: "1".into(),
                environment: "bench".into(),
            },
        ));
    }
    let mut security = SecuritySettings::default();
    security.enabled = on("headers");
    security.lean = lean;
    if routes {
        let operational: Vec<String> = ["/livez", "/readyz", "/startupz", "/health", "/metrics"]
            .map(String::from)
            .to_vec();
        rec = rec.with_quiet_routes(&operational, false, &["/favicon.ico".to_owned()]);
        security.route_limits = vec![
            opskit::limits::RouteLimit::new("/upload/*").body_limit(100 << 20),
            opskit::limits::RouteLimit::new("/export").timeout(std::time::Duration::from_secs(300)),
            opskit::limits::RouteLimit::new("/reports/*")
                .timeout(std::time::Duration::from_secs(60)),
        ];
    }
    let limiter = on("limit").then(|| {
        let mut limits = LimitSettings::default();
        limits.default = Some(Quota::parse("1000000000/1m").expect("quota"));
        Limiter::new(limits)
    });
    (rec, SecurityPolicy::new(&security), limiter)
}
