//! The OTLP pipelines: exporters over HTTP or gRPC, the batch span queue,
//! the meter provider.

use super::{OtelSettings, Protocol, Target};
use crate::ServiceInfo;
use opentelemetry::metrics::{Histogram, MeterProvider as _, UpDownCounter};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Logs a failed export at warn, at most once a minute per signal.
#[derive(Debug, Default)]
struct Throttle(Mutex<Option<Instant>>);

impl Throttle {
    fn warn(&self, signal: &str, reason: &str) {
        let Ok(mut last) = self.0.lock() else { return };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(signal, reason = %crate::redact_urls(reason), "OTLP export failed (counted in opskit_otlp_exports_total; next warning in a minute at the earliest)");
        }
    }
}

/// Registers the counters of an exported signal at 0, so that every
/// series exists from start-up (one born with its first increment
/// hides that increment from `rate()`): the exports by outcome, and
/// for traces the spans exported and dropped.
fn zero_counters(signal: &'static str) {
    for outcome in ["sent", "failed"] {
        metrics::counter!("opskit_otlp_exports_total", "signal" => signal, "outcome" => outcome)
            .increment(0);
    }
    if signal == "traces" {
        metrics::counter!("opskit_otlp_spans_exported_total").increment(0);
        for reason in ["queue_full", "export_failed"] {
            metrics::counter!("opskit_otlp_spans_dropped_total", "reason" => reason).increment(0);
        }
    }
}

fn count_export(signal: &'static str, ok: bool) {
    let outcome = if ok { "sent" } else { "failed" };
    metrics::counter!("opskit_otlp_exports_total", "signal" => signal, "outcome" => outcome)
        .increment(1);
}

/// An `opentelemetry-http` client on `ureq` (already opskit's HTTP client
/// for Sentry): blocking, which suits the exporters' own threads, and no
/// second HTTP stack or async runtime to pull in.
#[cfg(feature = "otlp-http")]
#[derive(Debug)]
struct UreqClient {
    agent: ureq::Agent,
    signal: &'static str,
    /// Traces count in [`Counting`], for every protocol alike.
    count: bool,
    throttle: Throttle,
}

#[cfg(feature = "otlp-http")]
impl UreqClient {
    fn new(target: &Target, signal: &'static str, count: bool) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(target.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            signal,
            count,
            throttle: Throttle::default(),
        }
    }

    fn outcome(&self, failure: Option<String>) {
        if !self.count {
            return;
        }
        count_export(self.signal, failure.is_none());
        if let Some(reason) = failure {
            self.throttle.warn(self.signal, &reason);
        }
    }
}

#[cfg(feature = "otlp-http")]
#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for UreqClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, body.to_vec());
        let response = match self.agent.run(request) {
            Ok(r) => r,
            Err(e) => {
                self.outcome(Some(e.to_string()));
                return Err(e.into());
            }
        };
        let (parts, mut body) = response.into_parts();
        let bytes = body.with_config().limit(4 << 20).read_to_vec();
        let failure = match (&bytes, parts.status) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(_), s) if !s.is_success() => Some(format!("the collector answered {s}")),
            _ => None,
        };
        self.outcome(failure);
        Ok(http::Response::from_parts(
            parts,
            bytes::Bytes::from(bytes?),
        ))
    }
}

/// A current-thread Tokio runtime on a thread of its own, for tonic's
/// channel: its connection task lives here, so gRPC export works whatever
/// runtime (or none) the application runs, until opskit shuts it down.
#[cfg(feature = "otlp-grpc")]
#[derive(Debug)]
pub(crate) struct GrpcRuntime {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[cfg(feature = "otlp-grpc")]
impl GrpcRuntime {
    fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("opskit-otlp-grpc".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = rx.await;
                });
            })?;
        Ok(Self {
            handle,
            stop: Mutex::new(Some(tx)),
        })
    }

    fn stop(&self) {
        if let Some(tx) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
    }
}

#[cfg(feature = "otlp-grpc")]
fn metadata(
    headers: &[(String, String)],
) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::try_from(k.as_str()),
            http::HeaderValue::try_from(v.as_str()),
        ) {
            map.append(k, v);
        }
    }
    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map)
}

/// What the exporters need besides their target.
#[derive(Debug, Default)]
pub(crate) struct Transport {
    #[cfg(feature = "otlp-grpc")]
    grpc: Option<GrpcRuntime>,
}

/// One OTLP exporter of `$kind` (`SpanExporter`, `MetricExporter`) for
/// `$target`, over gRPC or HTTP: the two builders have the same methods
/// but no common trait.
macro_rules! build_exporter {
    ($transport:ident, $target:ident, $kind:ident, $signal:literal, $count:literal) => {
        match $target.protocol {
            #[cfg(feature = "otlp-grpc")]
            Protocol::Grpc => {
                use opentelemetry_otlp::WithTonicConfig;
                let handle = $transport.grpc()?;
                let _entered = handle.enter();
                opentelemetry_otlp::$kind::builder()
                    .with_tonic()
                    .with_endpoint($target.url.clone())
                    .with_timeout($target.timeout)
                    .with_metadata(metadata(&$target.headers))
                    .build()
                    .map_err(|e| e.to_string())
            }
            #[cfg(feature = "otlp-http")]
            p @ (Protocol::HttpProtobuf | Protocol::HttpJson) => {
                use opentelemetry_otlp::WithHttpConfig;
                opentelemetry_otlp::$kind::builder()
                    .with_http()
                    .with_http_client(UreqClient::new($target, $signal, $count))
                    .with_endpoint($target.url.clone())
                    .with_timeout($target.timeout)
                    .with_protocol(http_protocol(p))
                    .with_headers($target.headers.iter().cloned().collect())
                    .build()
                    .map_err(|e| e.to_string())
            }
            #[allow(unreachable_patterns)]
            p => Err(missing_feature(p)),
        }
    };
}

impl Transport {
    /// Stops the gRPC runtime (after the pipelines flushed).
    pub(crate) fn stop(&self) {
        #[cfg(feature = "otlp-grpc")]
        if let Some(g) = &self.grpc {
            g.stop();
        }
    }

    #[cfg(feature = "otlp-grpc")]
    fn grpc(&mut self) -> Result<tokio::runtime::Handle, String> {
        if self.grpc.is_none() {
            self.grpc = Some(GrpcRuntime::start().map_err(|e| e.to_string())?);
        }
        Ok(self
            .grpc
            .as_ref()
            .map(|g| g.handle.clone())
            .ok_or("no runtime")?)
    }

    fn span_exporter(
        &mut self,
        target: &Target,
    ) -> Result<opentelemetry_otlp::SpanExporter, String> {
        // Spans count their exports in `Counting`, for both protocols.
        build_exporter!(self, target, SpanExporter, "traces", false)
    }

    fn metric_exporter(
        &mut self,
        target: &Target,
    ) -> Result<opentelemetry_otlp::MetricExporter, String> {
        build_exporter!(self, target, MetricExporter, "metrics", true)
    }
}

#[cfg(feature = "otlp-http")]
fn http_protocol(p: Protocol) -> opentelemetry_otlp::Protocol {
    match p {
        Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        _ => opentelemetry_otlp::Protocol::HttpBinary,
    }
}

#[allow(dead_code)] // unused when both transports are built
fn missing_feature(p: Protocol) -> String {
    let feature = if p == Protocol::Grpc {
        "otlp-grpc"
    } else {
        "otlp-http"
    };
    format!(
        "the OTLP protocol is {} but opskit was built without the `{feature}` feature (set OTEL_EXPORTER_OTLP_PROTOCOL, or enable the feature)",
        p.name()
    )
}

fn resource(settings: &OtelSettings, service: &ServiceInfo) -> Resource {
    let mut attrs: Vec<KeyValue> = settings
        .resource_attributes
        .iter()
        .filter(|(k, _)| k != "service.name")
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attrs.push(KeyValue::new("service.version", service.version.clone()));
    attrs.push(KeyValue::new(
        "deployment.environment.name",
        service.environment.clone(),
    ));
    attrs.push(KeyValue::new("process.pid", i64::from(std::process::id())));
    attrs.push(KeyValue::new("process.runtime.name", "rust"));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(name) = exe.file_name().and_then(|n| n.to_str()) {
            attrs.push(KeyValue::new("process.executable.name", name.to_owned()));
        }
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        attrs.push(KeyValue::new("host.name", host.trim().to_owned()));
    }
    attrs.push(KeyValue::new("host.arch", std::env::consts::ARCH));
    attrs.push(KeyValue::new("os.type", std::env::consts::OS));
    attrs.push(KeyValue::new("telemetry.sdk.name", "opentelemetry"));
    attrs.push(KeyValue::new("telemetry.sdk.language", "rust"));
    attrs.push(KeyValue::new("telemetry.distro.name", "opskit"));
    attrs.push(KeyValue::new(
        "telemetry.distro.version",
        env!("CARGO_PKG_VERSION"),
    ));
    Resource::builder_empty()
        .with_service_name(service.name.clone())
        .with_attributes(attrs)
        .build()
}

/// The meter provider exporting over OTLP; shut down (flushing) with `Ops`.
#[derive(Debug, Clone)]
pub(crate) struct MetricsPipeline {
    provider: SdkMeterProvider,
    /// The export timeout, which also bounds the last push at shutdown.
    timeout: Duration,
}

/// The bucket boundaries of the HTTP histograms, as the metrics settings
/// have them (the Prometheus histograms use the same).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistogramBounds<'a> {
    /// `http.server.request.duration`, in seconds.
    pub(crate) duration: &'a [f64],
    /// `http.server.request.body.size` and `http.server.response.body.size`, in bytes.
    pub(crate) body_size: &'a [f64],
}

/// The instruments the HTTP metrics record into.
#[derive(Debug, Clone)]
pub(crate) struct OtelInstruments {
    pub(crate) duration: Histogram<f64>,
    pub(crate) request_size: Histogram<u64>,
    pub(crate) response_size: Histogram<u64>,
    pub(crate) active: UpDownCounter<i64>,
    /// `http.client.request.duration` (outbound calls, `opskit::client`).
    pub(crate) client_duration: Histogram<f64>,
}

impl MetricsPipeline {
    /// Starts exporting where `settings` say; `None` when metrics are not
    /// exported over OTLP, or (logged) when the exporter cannot be built.
    pub(crate) fn start(
        settings: &OtelSettings,
        service: &ServiceInfo,
        bounds: HistogramBounds<'_>,
        transport: &mut Transport,
    ) -> Option<(Self, OtelInstruments)> {
        let target = &settings.metrics_target()?;
        let exporter = match transport.metric_exporter(target) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %crate::redact_urls(&e), "cannot build the OTLP metric exporter; metrics are not pushed");
                return None;
            }
        };
        let reader = PeriodicReader::builder(exporter)
            .with_interval(settings.metric_export_interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource(settings, service))
            .with_reader(reader)
            .build();
        let meter = provider.meter("opskit");
        let body = || bounds.body_size.to_vec();
        let instruments = OtelInstruments {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(bounds.duration.to_vec())
                .build(),
            request_size: meter
                .u64_histogram("http.server.request.body.size")
                .with_unit("By")
                .with_description("Size of HTTP server request bodies.")
                .with_boundaries(body())
                .build(),
            response_size: meter
                .u64_histogram("http.server.response.body.size")
                .with_unit("By")
                .with_description("Size of HTTP server response bodies.")
                .with_boundaries(body())
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("Number of active HTTP server requests.")
                .build(),
            client_duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP client requests.")
                .with_boundaries(bounds.duration.to_vec())
                .build(),
        };
        // Metric exports are counted by the HTTP client only.
        if target.protocol != Protocol::Grpc {
            zero_counters("metrics");
        }
        tracing::info!(endpoint = %crate::redact_urls(&target.url), protocol = target.protocol.name(), interval_ms = settings.metric_export_interval.as_millis() as u64, "exporting metrics over OTLP");
        let timeout = target.timeout;
        Some((Self { provider, timeout }, instruments))
    }

    /// Exports what is pending and stops. The SDK's periodic reader (0.33)
    /// waits at most 5 s for it, whatever timeout it is given; the timeout
    /// is passed anyway, for when it honours it.
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(self.timeout) {
            tracing::warn!(error = %crate::redact_urls(&e.to_string()), "the last OTLP metric export failed");
        }
    }
}

/// The spans waiting for export, counted so that a full queue is
/// counted by opskit (the SDK's own drop count is private).
#[derive(Debug)]
struct SinkInner {
    processor: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    scope: opentelemetry::InstrumentationScope,
}

/// Where finished server spans go: an OpenTelemetry SDK
/// `BatchSpanProcessor` (a bounded queue drained by its own thread) in
/// front of any `SpanExporter`. `init` builds one for OTLP; build one
/// yourself to send the spans elsewhere — the SDK's
/// `InMemorySpanExporter` in your tests, say — and hand it to
/// [`Recorder::with_spans`](crate::recorder::Recorder::with_spans).
#[derive(Debug, Clone)]
pub struct SpanSink(Arc<SinkInner>);

impl SpanSink {
    /// A sink exporting through `exporter` in batches bounded by `batch`;
    /// spans carry `resource`. Drops (counted) are the same as for OTLP.
    pub fn new<E: SpanExporter + 'static>(
        exporter: E,
        batch: super::BatchSettings,
        resource: &Resource,
    ) -> Self {
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Counting {
            inner: exporter,
            queued: queued.clone(),
            throttle: Throttle::default(),
        };
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(batch.max_queue_size)
            .with_max_export_batch_size(batch.max_export_batch_size.min(batch.max_queue_size))
            .with_scheduled_delay(batch.schedule_delay)
            .build();
        let mut processor = BatchSpanProcessor::new(exporter, config);
        processor.set_resource(resource);
        let scope = opentelemetry::InstrumentationScope::builder("opskit")
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url("https://opentelemetry.io/schemas/1.37.0")
            .build();
        Self(Arc::new(SinkInner {
            processor,
            queued,
            max_queue: batch.max_queue_size,
            scope,
        }))
    }

    /// Exports what is queued and stops the export thread.
    pub fn shutdown(&self) -> OTelSdkResult {
        self.0.processor.shutdown()
    }

    /// The instrumentation scope of opskit's spans.
    pub(crate) fn scope(&self) -> &opentelemetry::InstrumentationScope {
        &self.0.scope
    }

    /// Queues a finished span, or drops (and counts) it when the queue
    /// is full. Never blocks.
    pub fn send(&self, span: SpanData) {
        let inner = &self.0;
        if inner.queued.fetch_add(1, Ordering::Relaxed) >= inner.max_queue {
            inner.queued.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("opskit_otlp_spans_dropped_total", "reason" => "queue_full")
                .increment(1);
            return;
        }
        inner.processor.on_end(span);
    }
}

/// Lets the SDK's tracer provider (spans the application starts) share
/// the queue and the counts of opskit's own spans.
#[derive(Debug)]
struct Forward(SpanSink);

impl SpanProcessor for Forward {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.send(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0 .0.processor.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0 .0.processor.shutdown_with_timeout(timeout)
    }
}

/// Counts every export of spans, by outcome, and every span lost with a
/// failed export — for gRPC and HTTP alike.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    throttle: Throttle,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        count_export("traces", result.is_ok());
        match &result {
            Ok(()) => {
                metrics::counter!("opskit_otlp_spans_exported_total").increment(n as u64);
            }
            Err(e) => {
                metrics::counter!("opskit_otlp_spans_dropped_total", "reason" => "export_failed")
                    .increment(n as u64);
                self.throttle.warn("traces", &e.to_string());
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The span pipeline; shut down (flushing) with `Ops`.
#[derive(Debug, Clone)]
pub(crate) struct TracesPipeline {
    provider: SdkTracerProvider,
    sink: SpanSink,
    /// The export timeout, which also bounds the last export at shutdown.
    timeout: Duration,
}

fn sdk_sampler(s: crate::trace::Sampler) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler;
    let root = if s.ratio >= 1.0 {
        Sampler::AlwaysOn
    } else if s.ratio <= 0.0 {
        Sampler::AlwaysOff
    } else {
        Sampler::TraceIdRatioBased(s.ratio)
    };
    if s.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

impl TracesPipeline {
    /// Starts exporting spans where `settings` say; `None` when spans are
    /// not exported, or (logged) when the exporter cannot be built.
    pub(crate) fn start(
        settings: &OtelSettings,
        service: &ServiceInfo,
        transport: &mut Transport,
    ) -> Option<Self> {
        let target = &settings.traces_target()?;
        let exporter = match transport.span_exporter(target) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %crate::redact_urls(&e), "cannot build the OTLP span exporter; spans are not exported");
                return None;
            }
        };
        let resource = resource(settings, service);
        let sink = SpanSink::new(exporter, settings.batch, &resource);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Forward(sink.clone()))
            .with_sampler(sdk_sampler(settings.sampler))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        super::children::activate(sink.clone(), settings.spans.clone(), settings.sampler);
        zero_counters("traces");
        tracing::info!(endpoint = %crate::redact_urls(&target.url), protocol = target.protocol.name(), sampler_ratio = settings.sampler.ratio, parent_based = settings.sampler.parent_based, "exporting spans over OTLP");
        let timeout = target.timeout;
        Some(Self {
            provider,
            sink,
            timeout,
        })
    }

    /// Where the recorder sends finished server spans.
    pub(crate) fn sink(&self) -> SpanSink {
        self.sink.clone()
    }

    /// The provider for spans the application starts.
    pub(crate) fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports what is pending and stops, waiting up to the export timeout
    /// (the SDK's `shutdown()` would wait 5 s whatever the timeout is).
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(self.timeout) {
            tracing::warn!(error = %crate::redact_urls(&e.to_string()), "the last OTLP span export failed");
        }
    }
}
