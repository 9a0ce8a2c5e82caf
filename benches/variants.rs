//! The router variants of `opskit-callgrind` (instructions) and
//! `opskit-allocs` (allocations). Drives `N` requests through one router variant in-process, for
//! `scripts/callgrind` (or serves it over loopback for `scripts/load`:
//! `opskit-callgrind serve <variant> [addr]`): instructions per request = (I(2N) − I(N)) / N, so
//! start-up cancels out.
//!
//! `opskit-callgrind <variant> <requests>`; variants: `bare`, `bare+headers`
//! (the bare router sending opskit's response headers from a prebuilt map:
//! the floor for any stack sending them), `opskit`
//! (default settings plus the JSON access log, metrics into a Prometheus
//! recorder, an in-memory rate limit, sampled server spans into a dropping
//! exporter, Sentry with an unreachable DSN), `peer` (tower-http TraceLayer
//! with JSON logs and the request-id layers, axum-prometheus, one
//! `SetResponseHeaderLayer` per security header, tracing-opentelemetry
//! sampling every request into a dropping exporter, `tower_governor` keyed
//! by `X-Forwarded-For`, `sentry-tower` with an unreachable DSN),
//! and for the tracing budgets alone: `opskit-spans`, `opskit-unsampled`,
//! `opskit-no-spans` (opskit with logging, metrics and headers off),
//! `peer-otel` (TraceLayer + tracing-opentelemetry, no log output); for
//! the application's own spans, `+children` (opskit's `SpanLayer`) and
//! `+child` (the handler opens one `#[instrument]` span) on opskit variants
//! (`opskit+spans+children+child`, `opskit+unsampled+children+child`…),
//! and `peer-otel+child`, `peer-otel-unsampled[+child]`; and
//! `limit-decision`, `limit-decision+headers`: the in-memory rate-limit
//! decision alone, without and with its response header values. `+enrich`
//! (a handler setting two fields with `RequestTelemetry`), `+labels`
//! (`tenant` declared a metric label, values `acme|globex`: with
//! `+metrics+enrich`) and `+routes` (the
//! quiet operational routes and three route limits the request does not
//! match) add issue 17's parts to any opskit variant; `opskit+lean` and
//! `actix-opskit+lean` are the full stacks with the lean header profile
//! (`OPSKIT_SECURITY_HEADERS=lean`); and `tonic-bare`,
//! `tonic-opskit`: one unary gRPC call through tonic's router, bare and
//! behind opskit's full layer (`tonic_call.rs`); and `client-plain`,
//! `client-middleware`, `client-opskit`, `client-reqwest-tracing`
//! (`+unsampled`): one outbound call per request (`outbound.rs`).

use crate::tonic_call;

use opskit::layer::OpsLayer;
use opskit::ratelimit::{LimitSettings, Limiter, Quota};
use opskit_benches::{
    bare_router, opskit_parts, opskit_sink_writer, request, sink_writer, UNREACHABLE_DSN,
};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

/// The peer's Sentry transport (this build of `sentry` has none): drops
/// envelopes, as an unreachable server would; none is sent without errors.
struct DroppingTransport;

impl sentry::Transport for DroppingTransport {
    fn send_envelope(&self, envelope: sentry::Envelope) {
        drop(envelope);
    }
}

/// opskit's layer with the parts `variant` names: `opskit` is the full
/// default stack; `opskit-core` has request id, log span, trace context,
/// request timeout and panic catching only (JSON subscriber installed, access
/// log off); `opskit+log`, `+metrics`, `+headers`, `+limit`, `+spans`,
/// `+unsampled` (spans with a sampler that takes none), `+sentry` add one part
/// to the core, so each part's cost is its difference from `opskit-core`.
fn opskit_variant(variant: &str, sink: &opskit::otel::SpanSink) -> axum::Router {
    let (rec, security, limiter) = opskit_parts(variant, sink);
    // `+enrich`: the handler puts `user.id` and `tenant` on its request.
    let router = if variant.split('+').any(|p| p == "enrich") {
        axum::Router::new().route(
            "/users/{id}",
            axum::routing::get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    let telemetry = opskit::telemetry::RequestTelemetry::current();
                    let _ = telemetry.set("user.id", &id);
                    let _ = telemetry.set("tenant", "acme");
                    id
                },
            ),
        )
    } else if variant.split('+').any(|p| p == "child") {
        opskit_benches::child_router()
    } else {
        bare_router()
    };
    router.layer(OpsLayer::with_rate_limiter(rec, security, limiter))
}

/// The realistic request, for Actix's test service (peer address set: the
/// governor keys by it).
fn actix_request() -> actix_http::Request {
    actix_web::test::TestRequest::get()
        .uri("/users/7")
        .insert_header(("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0"))
        .insert_header(("accept", "application/json"))
        .insert_header(("x-forwarded-for", "203.0.113.7"))
        .insert_header((
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .peer_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 40_000)))
        .to_request()
}

async fn actix_user(id: actix_web::web::Path<String>) -> String {
    id.into_inner()
}

/// `actix-bare`, `actix-opskit` (opskit's middleware, the full default
/// stack) and `actix-peer` (actix-web-prom, tracing-actix-web's
/// `TracingLogger` with the JSON subscriber and tracing-opentelemetry,
/// actix-governor, sentry-actix, `DefaultHeaders` with the 12 security
/// headers): `n` requests through Actix's in-process test service.
fn run_actix(
    variant: &str,
    n: usize,
    writer: tracing_appender::non_blocking::NonBlocking,
    ops_writer: opskit::logging::LineWriter,
    sink: &opskit::otel::SpanSink,
) -> usize {
    use actix_web::{web, App};
    macro_rules! drive {
        ($app:expr) => {{
            let srv = actix_web::test::init_service($app).await;
            let mut ok = 0;
            for _ in 0..n {
                let res = actix_web::test::call_service(&srv, actix_request()).await;
                ok += usize::from(res.status().is_success());
            }
            ok
        }};
    }
    let variant = variant.to_owned();
    let sink = sink.clone();
    actix_web::rt::System::new().block_on(async move {
        match variant.as_str() {
            "actix-bare" => drive!(App::new().route("/users/{id}", web::get().to(actix_user))),
            "actix-peer" => {
                let subscriber = opskit_benches::peer_json_subscriber(writer)
                    .with(opskit_benches::peer_otel_layer(true));
                tracing::subscriber::set_global_default(subscriber).expect("subscriber");
                init_peer_sentry();
                let mut headers = actix_web::middleware::DefaultHeaders::new();
                for (name, value) in opskit_benches::default_security_headers() {
                    headers = headers.add((name.as_str(), value.as_bytes()));
                }
                let governor = actix_governor::GovernorConfigBuilder::default()
                    .requests_per_second(1)
                    .burst_size(u32::MAX)
                    .finish()
                    .expect("governor config");
                let prometheus = actix_web_prom::PrometheusMetricsBuilder::new("api")
                    .endpoint("/metrics")
                    .build()
                    .expect("prometheus");
                drive!(App::new()
                    .wrap(headers)
                    .wrap(actix_governor::Governor::new(&governor))
                    .wrap(prometheus)
                    .wrap(tracing_actix_web::TracingLogger::default())
                    .wrap(sentry_actix::Sentry::new())
                    .route("/users/{id}", web::get().to(actix_user)))
            }
            v => {
                let subscriber = tracing_subscriber::registry()
                    .with(tracing_subscriber::EnvFilter::new("info"))
                    .with(opskit::logging::json_layer(ops_writer));
                tracing::subscriber::set_global_default(subscriber).expect("subscriber");
                let (rec, security, limiter) = opskit_parts(v, &sink);
                drive!(App::new()
                    .wrap(opskit::OpsMiddleware::from(&OpsLayer::with_rate_limiter(
                        rec, security, limiter
                    )))
                    .route("/users/{id}", web::get().to(actix_user)))
            }
        }
    })
}

/// Sentry with an unreachable DSN and a dropping transport, as a peer
/// service would configure it.
fn init_peer_sentry() {
    let mut options = sentry::ClientOptions::new().transport(|_: &sentry::ClientOptions| {
        std::sync::Arc::new(DroppingTransport) as std::sync::Arc<dyn sentry::Transport>
    });
    options.dsn = UNREACHABLE_DSN.parse().ok();
    std::mem::forget(sentry::init(options));
}

/// Runs the variant the command line names (see the module docs).
pub fn run() {
    let mut args = std::env::args().skip(1);
    let mut variant = args.next().unwrap_or_else(|| "bare".to_owned());
    // `serve <variant> [addr]`: the same router over loopback, for scripts/load.
    let serve = (variant == "serve").then(|| {
        variant = args.next().unwrap_or_else(|| "bare".to_owned());
        args.next().unwrap_or_else(|| "127.0.0.1:0".to_owned())
    });
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    if variant.starts_with("client-") {
        // Outbound calls (outbound.rs): a runtime with I/O of their own.
        crate::outbound::run(&variant, n);
        return;
    }
    let rt = if serve.is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    } else {
        opskit_benches::runtime()
    };
    let _enter = rt.enter();
    if let Some(headers) = variant.strip_prefix("limit-decision") {
        // The rate-limit decision alone (`limit-decision`), and with its
        // response header values (`limit-decision+headers`), n times.
        let mut limits = LimitSettings::default();
        limits.default = Some(Quota::parse("1000000000/1m").expect("quota"));
        let limiter = Limiter::new(limits);
        let headers_of = request().into_parts().0.headers;
        let header = |name: &str| headers_of.get(name).map(|v| v.as_bytes());
        let info = opskit::ratelimit::RequestInfo {
            method: "GET",
            path: "/users/7",
            client: "203.0.113.9".parse().ok(),
            header: &header,
        };
        let mut allowed = 0;
        for _ in 0..n {
            let checked = limiter.check_memory(&info).expect("limited");
            allowed += usize::from(checked.decision.allowed);
            if headers == "+headers" {
                std::hint::black_box(checked.headers(false));
            }
        }
        assert_eq!(allowed, n);
        return;
    }
    if serve.is_some() {
        // Over loopback, spans queue as in production (both sides alike;
        // BENCH_SPAN_QUEUE overrides, for comparison).
        opskit_benches::set_span_queue(
            std::env::var("BENCH_SPAN_QUEUE")
                .ok()
                .and_then(|q| q.parse().ok())
                .unwrap_or(opskit::otel::BatchSettings::default().max_queue_size),
        );
    }
    let (writer, _guard) = sink_writer();
    let (ops_writer, _ops_guard) = opskit_sink_writer();
    let sink = opskit_benches::dropping_span_sink();
    if variant.starts_with("tonic-") {
        let layer = (variant == "tonic-opskit").then(|| {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(opskit::logging::json_layer(ops_writer));
            tracing::subscriber::set_global_default(subscriber).expect("subscriber");
            let (rec, security, limiter) = opskit_parts("opskit", &sink);
            OpsLayer::with_rate_limiter(rec, security, limiter)
        });
        let app = tonic_call::router(layer).with_state(());
        let ok = (0..n)
            .filter(|_| rt.block_on(tonic_call::call(app.clone())))
            .count();
        assert_eq!(ok, n, "every call is OK");
        let _ = sink.shutdown();
        let exported = opskit_benches::EXPORTED.load(std::sync::atomic::Ordering::Relaxed);
        if variant == "tonic-opskit" {
            assert_eq!(exported, n, "every span reached the exporter");
        }
        return;
    }
    if variant.starts_with("actix-") {
        let ok = run_actix(&variant, n, writer, ops_writer, &sink);
        assert_eq!(ok, n, "every request succeeds");
        let _ = sink.shutdown();
        let exported = opskit_benches::EXPORTED.load(std::sync::atomic::Ordering::Relaxed);
        if variant == "actix-opskit" {
            assert_eq!(exported, n, "every span reached the exporter");
        }
        return;
    }
    let app = match variant.as_str() {
        "bare" => bare_router(),
        "bare+headers" => {
            // The floor for any stack sending the same response headers:
            // the bare router plus opskit's default security headers and
            // headers of the same sizes as its request-id, traceresponse and
            // rate-limit ones, copied from a prebuilt map (no other work).
            let mut extra: http::HeaderMap = opskit_benches::default_security_headers()
                .into_iter()
                .collect();
            for (name, value) in [
                ("x-request-id", "83cb6369-f424-45c8-9507-36879d6119d8"),
                (
                    "traceresponse",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-4b41231050393544-01",
                ),
                ("ratelimit-policy", "\"default\";q=1000000000;w=60"),
                ("ratelimit", "\"default\";r=999999999;t=1"),
            ] {
                extra.insert(name, http::HeaderValue::from_static(value));
            }
            bare_router().layer(axum::middleware::map_response(
                move |mut res: axum::response::Response| {
                    let extra = extra.clone();
                    async move {
                        res.headers_mut().extend(extra);
                        res
                    }
                },
            ))
        }
        "opskit-reload" => {
            // The full stack with the level filter behind tracing-subscriber's
            // reload layer, as `init` installs it when OPSKIT_ADMIN_TOKEN is
            // set (`PUT /loggers`): the cost of a reloadable filter.
            let (filter, _handle) =
                tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("info"));
            let subscriber = tracing_subscriber::registry()
                .with(filter)
                .with(opskit::logging::json_layer(ops_writer));
            tracing::subscriber::set_global_default(subscriber).expect("subscriber");
            opskit_variant("opskit", &sink)
        }
        v if v.starts_with("opskit") => {
            // `+children`: opskit's layer exporting the application's spans
            // (sampled as the request: `+unsampled` samples none).
            let parts: Vec<&str> = v.split('+').collect();
            let unsampled = parts.contains(&"unsampled");
            let children = parts.contains(&"children").then(|| {
                let sampler = opskit::trace::Sampler {
                    parent_based: !unsampled,
                    ratio: if unsampled { 0.0 } else { 1.0 },
                };
                opskit::otel::SpanLayer::new(&sink, opskit::otel::SpanFilter::default(), sampler)
            });
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(opskit::logging::json_layer(ops_writer))
                .with(children);
            tracing::subscriber::set_global_default(subscriber).expect("subscriber");
            opskit_variant(v, &sink)
        }
        "peer" => {
            use tower_http::set_header::SetResponseHeaderLayer;
            let subscriber = opskit_benches::peer_json_subscriber(writer)
                .with(opskit_benches::peer_otel_layer(true));
            tracing::subscriber::set_global_default(subscriber).expect("subscriber");
            let (prometheus, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
            let mut app = bare_router();
            for (name, value) in opskit_benches::default_security_headers() {
                app = app.layer(SetResponseHeaderLayer::overriding(name, value));
            }
            // Sentry with an unreachable DSN, as the peer would configure it.
            let mut options =
                sentry::ClientOptions::new().transport(|_: &sentry::ClientOptions| {
                    std::sync::Arc::new(DroppingTransport) as std::sync::Arc<dyn sentry::Transport>
                });
            options.dsn = UNREACHABLE_DSN.parse().ok();
            let _sentry = sentry::init(options);
            std::mem::forget(_sentry);
            let governor = tower_governor::governor::GovernorConfigBuilder::default()
                .per_second(1)
                .burst_size(u32::MAX)
                .key_extractor(tower_governor::key_extractor::SmartIpKeyExtractor)
                .finish()
                .expect("governor config");
            let app = app
                .layer(prometheus)
                .layer(tower_governor::GovernorLayer::new(governor))
                .layer(sentry::integrations::tower::SentryHttpLayer::new())
                .layer(sentry::integrations::tower::NewSentryLayer::new_from_top());
            opskit_benches::peer_logging(app)
        }
        v if v.starts_with("peer-otel") => {
            // `peer-otel-unsampled` samples no request; `+child`: the
            // handler opens one span (a child under tracing-opentelemetry).
            let sampled = !v.starts_with("peer-otel-unsampled");
            tracing::subscriber::set_global_default(opskit_benches::peer_otel_subscriber(sampled))
                .expect("subscriber");
            let router = if v.ends_with("+child") {
                opskit_benches::child_router()
            } else {
                bare_router()
            };
            opskit_benches::peer_trace_layer(router)
        }
        other => panic!("unknown variant {other}"),
    };
    if let Some(addr) = serve {
        // One worker: the current-thread runtime this binary drives requests on.
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
            println!("listening {}", listener.local_addr().expect("address"));
            axum::serve(listener, app).await.expect("serve");
        });
        return;
    }
    // As `axum::serve` and `into_make_service` do: handlers become routes
    // once, not on every request (what `Router<()>` as a bare `Service` does).
    let app = app.with_state(());
    let mut ok = 0;
    for _ in 0..n {
        let res = rt
            .block_on(app.clone().oneshot(request()))
            .expect("response");
        ok += usize::from(res.status().is_success());
    }
    assert_eq!(ok, n, "every request succeeds");
    // Flush, so that export is paid for, and check that no span was dropped
    // before export (which would flatter the count).
    let _ = sink.shutdown();
    let exported = opskit_benches::EXPORTED.load(std::sync::atomic::Ordering::Relaxed);
    if variant == "opskit" || variant.ends_with("+spans") {
        assert_eq!(exported, n, "every span reached the exporter");
    }
    if variant == "opskit+spans+children+child" {
        assert_eq!(exported, 2 * n, "every server and child span was exported");
    }
}
