//! ns/request and allocations/request of opskit's layer beside a bare router
//! and the peer stack (tower-http `TraceLayer` + `SetRequestId` +
//! `PropagateRequestId` with `tracing-subscriber`'s JSON format).
//!
//! Run: `cargo bench -p opskit-benches --bench layers`. Allocation counts come
//! from divan's counting global allocator (all threads).

use opskit::layer::OpsLayer;
use opskit_benches::{bare_router, request, sink_writer};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn drive(b: divan::Bencher<'_, '_>, app: axum::Router) {
    let rt = runtime();
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
    let (writer, _guard) = sink_writer();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(opskit::logging::json_layer(writer));
    let _default = tracing::subscriber::set_default(subscriber);
    drive(b, bare_router().layer(OpsLayer::default()));
}

/// The same layer with the access log off: request id, span, panic catching.
#[divan::bench]
fn opskit_request_id_only(b: divan::Bencher<'_, '_>) {
    let (writer, _guard) = sink_writer();
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
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
    let (writer, _guard) = sink_writer();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(writer),
        );
    let _default = tracing::subscriber::set_default(subscriber);
    let header = http::HeaderName::from_static("x-request-id");
    let app = bare_router()
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid));
    drive(b, app);
}
