//! ns/request and allocations/request of opskit's layer beside a bare router
//! and the peer stack (tower-http `TraceLayer` + `SetRequestId` +
//! `PropagateRequestId` with `tracing-subscriber`'s JSON format).
//!
//! Run: `cargo bench -p opskit-benches --bench layers`. Allocation counts come
//! from divan's counting global allocator (all threads).

use opskit::layer::OpsLayer;
use opskit_benches::{bare_router, opskit_sink_writer, request, runtime, sink_writer};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

fn drive(b: divan::Bencher<'_, '_>, app: axum::Router) {
    let rt = runtime();
    // As `axum::serve` and `into_make_service` do: handlers become routes
    // once, not on every request.
    let app = app.with_state(());
    b.bench_local(|| {
        let res = rt.block_on(app.clone().oneshot(request()));
        divan::black_box(res.map(|r| r.status()))
    });
}

/// No middleware at all.
#[divan::bench]
fn bare(b: divan::Bencher<'_, '_>) {
    drive(b, bare_router());
}

/// opskit's layer (request id, log span, access-log line, panic catching)
/// with its JSON format through the non-blocking writer, as in production.
#[divan::bench]
fn opskit_logging_and_request_id(b: divan::Bencher<'_, '_>) {
    let (writer, _guard) = opskit_sink_writer();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(opskit::logging::json_layer(writer));
    let _default = tracing::subscriber::set_default(subscriber);
    drive(b, bare_router().layer(OpsLayer::default()));
}

/// The same layer with the access log off: request id, span, panic catching.
#[divan::bench]
fn opskit_request_id_only(b: divan::Bencher<'_, '_>) {
    let (writer, _guard) = opskit_sink_writer();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "info,opskit::access=off",
        ))
        .with(opskit::logging::json_layer(writer));
    let _default = tracing::subscriber::set_default(subscriber);
    drive(b, bare_router().layer(OpsLayer::default()));
}

/// The usual assembly: TraceLayer at INFO (span + one event per response)
/// with tracing-subscriber's JSON format, plus the request-id layers.
#[divan::bench]
fn peer_tower_http_trace_and_request_id(b: divan::Bencher<'_, '_>) {
    let (writer, _guard) = sink_writer();
    let subscriber = opskit_benches::peer_json_subscriber(writer);
    let _default = tracing::subscriber::set_default(subscriber);
    let app = opskit_benches::peer_logging(bare_router());
    drive(b, app);
}

/// The security policy's cost: opskit's layer with the default headers
/// (helmet-grade set, CSP, no `Server`) against the same layer with them off.
/// No subscriber: only the headers differ.
mod security_headers {
    use super::drive;
    use opskit::layer::OpsLayer;
    use opskit::recorder::Recorder;
    use opskit::security::{SecurityPolicy, SecuritySettings};
    use opskit_benches::bare_router;

    /// opskit's layer, security headers off.
    #[divan::bench]
    fn opskit_headers_off(b: divan::Bencher<'_, '_>) {
        let mut off = SecuritySettings::default();
        off.enabled = false;
        let layer = OpsLayer::new(Recorder::default(), SecurityPolicy::new(&off));
        drive(b, bare_router().layer(layer));
    }

    /// opskit's layer, security headers and request timeout off.
    #[divan::bench]
    fn opskit_headers_and_timeout_off(b: divan::Bencher<'_, '_>) {
        let mut off = SecuritySettings::default();
        off.enabled = false;
        off.request_timeout = std::time::Duration::ZERO;
        let layer = OpsLayer::new(Recorder::default(), SecurityPolicy::new(&off));
        drive(b, bare_router().layer(layer));
    }

    /// opskit's layer with its default headers (12 set over HTTP, 2 removed).
    #[divan::bench]
    fn opskit_headers_on(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(OpsLayer::default()));
    }

    /// The peer way: one tower-http `SetResponseHeaderLayer` per header, the
    /// same 12 values as opskit sends over plain HTTP (no HSTS there).
    #[divan::bench]
    fn peer_set_response_header_chain(b: divan::Bencher<'_, '_>) {
        use tower_http::set_header::SetResponseHeaderLayer;
        let headers = opskit_benches::default_security_headers();
        let mut app = bare_router();
        for (name, value) in headers {
            app = app.layer(SetResponseHeaderLayer::overriding(name, value));
        }
        drive(b, app);
    }
}

/// The metrics' cost: opskit's layer with and without its HTTP metrics
/// (security headers off in both, no subscriber), and `axum-prometheus`
/// beside a bare router. All record into the same Prometheus recorder,
/// installed once by `axum-prometheus`.
mod metrics_layer {
    use super::drive;
    use opskit::layer::OpsLayer;
    use opskit::metrics::{HttpMetrics, MetricsSettings};
    use opskit::recorder::Recorder;
    use opskit::security::{SecurityPolicy, SecuritySettings};
    use opskit_benches::bare_router;
    use std::sync::OnceLock;

    fn peer_layer() -> axum_prometheus::PrometheusMetricLayer<'static> {
        static PAIR: OnceLock<axum_prometheus::PrometheusMetricLayer<'static>> = OnceLock::new();
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        PAIR.get_or_init(|| {
            // `pair` spawns its upkeep task: it needs a runtime (never driven
            // here, as opskit's upkeep thread is not started in benches).
            let _entered = RT.get_or_init(super::runtime).enter();
            axum_prometheus::PrometheusMetricLayer::pair().0
        })
        .clone()
    }

    fn opskit(metrics: bool) -> OpsLayer {
        let _ = peer_layer(); // the same global recorder for every variant
        let mut off = SecuritySettings::default();
        off.enabled = false;
        let recorder = Recorder::default()
            .with_metrics(metrics.then(|| HttpMetrics::new(&MetricsSettings::default())));
        OpsLayer::new(recorder, SecurityPolicy::new(&off))
    }

    /// opskit's layer without metrics.
    #[divan::bench]
    fn opskit_metrics_off(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(opskit(false)));
    }

    /// opskit's layer with its metrics: duration, body sizes, active requests.
    #[divan::bench]
    fn opskit_metrics_on(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(opskit(true)));
    }

    /// The peer: `axum-prometheus`'s layer (requests, duration, pending).
    #[divan::bench]
    fn peer_axum_prometheus(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(peer_layer()));
    }
}

/// The rate limiter's cost inside the layer (in memory, every request
/// admitted): decision, `RateLimit` headers. Security headers off.
mod rate_limit_layer {
    use super::drive;
    use opskit::layer::OpsLayer;
    use opskit::ratelimit::{LimitSettings, Limiter, Quota};
    use opskit::recorder::Recorder;
    use opskit::security::{SecurityPolicy, SecuritySettings};
    use opskit_benches::bare_router;

    fn layer(limit: bool) -> OpsLayer {
        let mut off = SecuritySettings::default();
        off.enabled = false;
        let mut l = LimitSettings::default();
        l.default = limit.then(|| Quota::parse("1000000000/1m").expect("quota"));
        OpsLayer::with_rate_limiter(
            Recorder::default(),
            SecurityPolicy::new(&off),
            Some(Limiter::new(l)),
        )
    }

    /// opskit's layer, no rate limit.
    #[divan::bench]
    fn opskit_rate_limit_off(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(layer(false)));
    }

    /// opskit's layer with an in-memory rate limit.
    #[divan::bench]
    fn opskit_rate_limit_on(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(layer(true)));
    }
}

/// Server spans: opskit's (one `SpanData` built when the request finishes,
/// into the batch processor) sampled and unsampled, against tower-http
/// `TraceLayer` + `tracing-opentelemetry` sampled and unsampled. Both export
/// through a dropping exporter; no log output, so only tracing differs.
mod spans {
    use super::drive;
    use opskit::layer::OpsLayer;
    use opskit::recorder::Recorder;
    use opskit::security::{SecurityPolicy, SecuritySettings};
    use opskit::trace::{Propagation, Sampler};
    use opskit_benches::{bare_router, dropping_span_sink, peer_otel_subscriber, peer_trace_layer};

    fn opskit(spans: bool, sampled: bool) -> OpsLayer {
        let mut off = SecuritySettings::default();
        off.enabled = false;
        let sampler = Sampler {
            parent_based: sampled,
            ratio: if sampled { 1.0 } else { 0.0 },
        };
        let recorder = Recorder::default()
            .with_trace_context(sampler, Propagation::default())
            .with_spans(spans.then(dropping_span_sink));
        OpsLayer::new(recorder, SecurityPolicy::new(&off))
    }

    #[divan::bench]
    fn opskit_no_export(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(opskit(false, true)));
    }

    #[divan::bench]
    fn opskit_spans_sampled(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(opskit(true, true)));
    }

    #[divan::bench]
    fn opskit_spans_unsampled(b: divan::Bencher<'_, '_>) {
        drive(b, bare_router().layer(opskit(true, false)));
    }

    #[divan::bench]
    fn peer_trace_layer_otel_sampled(b: divan::Bencher<'_, '_>) {
        let _default = tracing::subscriber::set_default(peer_otel_subscriber(true));
        drive(b, peer_trace_layer(bare_router()));
    }

    #[divan::bench]
    fn peer_trace_layer_otel_unsampled(b: divan::Bencher<'_, '_>) {
        let _default = tracing::subscriber::set_default(peer_otel_subscriber(false));
        drive(b, peer_trace_layer(bare_router()));
    }
}
