//! Drives `N` requests through one router variant in-process, for
//! `scripts/callgrind`: instructions per request = (I(2N) − I(N)) / N, so
//! start-up cancels out.
//!
//! `opskit-callgrind <variant> <requests>`; variants: `bare`, `opskit`
//! (default settings plus the JSON access log, metrics into a Prometheus
//! recorder, an in-memory rate limit), `peer` (tower-http TraceLayer with
//! JSON logs and the request-id layers, axum-prometheus, one
//! `SetResponseHeaderLayer` per security header).

use opskit::layer::OpsLayer;
use opskit::metrics::{HttpMetrics, MetricsSettings};
use opskit::ratelimit::{LimitSettings, Limiter, Quota};
use opskit::recorder::Recorder;
use opskit::security::{SecurityPolicy, SecuritySettings};
use opskit_benches::{bare_router, request, sink_writer};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "bare".to_owned());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let rt = opskit_benches::runtime();
    let _enter = rt.enter();
    let (writer, _guard) = sink_writer();
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
                .with_metrics(Some(HttpMetrics::new(&MetricsSettings::default())));
            bare_router().layer(OpsLayer::with_rate_limiter(
                rec,
                SecurityPolicy::new(&SecuritySettings::default()),
                Some(Limiter::new(limits)),
            ))
        }
        "peer" => {
            use tower_http::set_header::SetResponseHeaderLayer;
            let subscriber = opskit_benches::peer_json_subscriber(writer);
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
}
