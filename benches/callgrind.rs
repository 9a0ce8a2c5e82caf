//! Drives `N` requests through one router variant in-process, for
//! `scripts/callgrind`: instructions per request = (I(2N) − I(N)) / N, so
//! start-up cancels out.
//!
//! `opskit-callgrind <variant> <requests>`; variants: `bare`, `opskit`
//! (default settings plus the JSON access log, metrics into a Prometheus
//! recorder, an in-memory rate limit, sampled server spans into a dropping
//! exporter), `peer` (tower-http TraceLayer with JSON logs and the request-id
//! layers, axum-prometheus, one `SetResponseHeaderLayer` per security header,
//! tracing-opentelemetry sampling every request into a dropping exporter),
//! and for the tracing budgets alone: `opskit-spans`, `opskit-unsampled`,
//! `opskit-no-spans` (opskit with logging, metrics and headers off),
//! `peer-otel` (TraceLayer + tracing-opentelemetry, no log output).

use opskit::layer::OpsLayer;
use opskit::metrics::{HttpMetrics, MetricsSettings};
use opskit::ratelimit::{LimitSettings, Limiter, Quota};
use opskit::recorder::Recorder;
use opskit::security::{SecurityPolicy, SecuritySettings};
use opskit_benches::{bare_router, request, sink_writer};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

/// tracing-opentelemetry sampling every span into a dropping exporter.
fn peer_otel_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(opskit_benches::dropping_batch_processor())
        .build();
    tracing_opentelemetry::layer().with_tracer(provider.tracer("peer"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "bare".to_owned());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let rt = opskit_benches::runtime();
    let _enter = rt.enter();
    let (writer, _guard) = sink_writer();
    let sink = opskit_benches::dropping_span_sink();
    let app = match variant.as_str() {
        "bare" => bare_router(),
        "opskit" => {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(opskit::logging::json_layer(writer));
            tracing::subscriber::set_global_default(subscriber).expect("subscriber");
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            metrics::set_global_recorder(recorder).expect("recorder");
            let mut limits = LimitSettings::default();
            limits.default = Some(Quota::parse("1000000000/1m").expect("quota"));
            let rec = Recorder::default()
                .with_metrics(Some(HttpMetrics::new(&MetricsSettings::default())))
                .with_spans(Some(sink.clone()));
            bare_router().layer(OpsLayer::with_rate_limiter(
                rec,
                SecurityPolicy::new(&SecuritySettings::default()),
                Some(Limiter::new(limits)),
            ))
        }
        "peer" => {
            use tower_http::set_header::SetResponseHeaderLayer;
            let subscriber = opskit_benches::peer_json_subscriber(writer).with(peer_otel_layer());
            tracing::subscriber::set_global_default(subscriber).expect("subscriber");
            let (prometheus, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
            let policy = SecurityPolicy::new(&SecuritySettings::default());
            let mut app = bare_router();
            let (csp_name, csp) = policy.csp(false, None).expect("csp");
            let csp = (csp_name, csp.into_owned());
            for (name, value) in policy.fixed_headers().iter().cloned().chain([csp]) {
                app = app.layer(SetResponseHeaderLayer::overriding(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_str(&value).expect("value"),
                ));
            }
            opskit_benches::peer_logging(app.layer(prometheus))
        }
        "opskit-spans" | "opskit-unsampled" | "opskit-no-spans" => {
            let sampled = variant != "opskit-unsampled";
            let sampler = opskit::trace::Sampler {
                parent_based: sampled,
                ratio: if sampled { 1.0 } else { 0.0 },
            };
            let mut off = SecuritySettings::default();
            off.enabled = false;
            let mut access = opskit::config::AccessLogSettings::default();
            access.enabled = false;
            let rec = Recorder::new(access, "x-request-id")
                .with_trace_context(sampler, opskit::trace::Propagation::default())
                .with_spans((variant != "opskit-no-spans").then(|| sink.clone()));
            bare_router().layer(OpsLayer::new(rec, SecurityPolicy::new(&off)))
        }
        "peer-otel" => {
            tracing::subscriber::set_global_default(opskit_benches::peer_otel_subscriber(true))
                .expect("subscriber");
            opskit_benches::peer_trace_layer(bare_router())
        }
        other => panic!("unknown variant {other}"),
    };
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
    if variant.starts_with("opskit")
        && variant != "opskit-no-spans"
        && variant != "opskit-unsampled"
    {
        assert_eq!(exported, n, "every span reached the exporter");
    }
}
