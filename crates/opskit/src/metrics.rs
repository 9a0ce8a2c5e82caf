//! HTTP server metrics named after the OpenTelemetry semantic conventions,
//! recorded through the `metrics` facade, with a bounded number of series.
//!
//! | metric (Prometheus name) | type | labels |
//! |---|---|---|
//! | `http_server_request_duration_seconds` | histogram | `http_request_method`, `url_scheme`, `http_route`, `http_response_status_code`, `error_type` |
//! | `http_server_request_body_size_bytes` | histogram | the same |
//! | `http_server_response_body_size_bytes` | histogram | the same |
//! | `http_server_active_requests` | gauge | `http_request_method`, `url_scheme` |
//! | `http_client_request_duration_seconds` | histogram | `http_request_method`, `server_address` (at most [`MAX_SERVER_ADDRESSES`], then `_OTHER`), `server_port`, `http_response_status_code`, `error_type` (outbound calls through `opskit::client`) |
//! | `rpc_server_call_duration_seconds` | histogram | `rpc_system_name`, `rpc_method`, `rpc_response_status_code`, `error_type` (gRPC calls, not in the HTTP histograms) |
//! | `opskit_metrics_overflow_total` | counter | — |
//! | `opskit_metrics_label_overflow_total` | counter | `label` (declared labels only) |
//!
//! `http_route` is the route *template*; requests that matched no route have
//! no `http_route` label (one series per method and status, whatever the
//! path). Methods outside RFC 9110 + PATCH are `_OTHER`. At most
//! `OPSKIT_METRICS_MAX_SERIES` label sets are kept; the rest are recorded
//! under `otel_metric_overflow="true"` (as OpenTelemetry SDKs do) and counted.
//!
//! A handler's enrichment field becomes a label of the three histograms only
//! when the service declared it ([`MetricLabel`], `OPSKIT_METRICS_LABELS`),
//! with its allowed values or a cap ([`MetricLabel`]).
//!
//! ```
//! use opskit::metrics::{HttpMetrics, MetricsSettings, Request};
//! let m = HttpMetrics::new(&MetricsSettings::default());
//! let active = m.start("GET", false); // counted as active until dropped
//! m.finish(&Request { route: Some("/users/{id}"), status: Some(200), ..Request::new("GET") });
//! drop(active);
//! assert_eq!(m.series(), 1);
//! ```

use crate::request::{method_index, METHODS};
use metrics::{Counter, Gauge, Histogram, Label};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// `http.server.request.duration`, in seconds.
pub const REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// `http.server.active_requests`.
pub const ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// `http.server.request.body.size`, in bytes.
pub const REQUEST_BODY_SIZE: &str = "http_server_request_body_size_bytes";
/// `http.server.response.body.size`, in bytes.
pub const RESPONSE_BODY_SIZE: &str = "http_server_response_body_size_bytes";
/// Requests recorded under the overflow series.
pub const OVERFLOW: &str = "opskit_metrics_overflow_total";

/// OpenTelemetry's advisory buckets for `http.server.request.duration`.
pub const DEFAULT_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Buckets for the body sizes: powers of four from 64 B to 16 MiB.
pub const BODY_SIZE_BUCKETS: [f64; 10] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
];

/// A method's code: its index in [`METHODS`] + 1 (0: `_OTHER`).
fn method_code(method: &str) -> u8 {
    method_index(method).map_or(0, |i| i as u8 + 1)
}

fn method_name(code: u8) -> &'static str {
    match code {
        0 => "_OTHER",
        c => METHODS[usize::from(c) - 1],
    }
}

/// Metrics settings (`OPSKIT_METRICS*`; see the configuration reference).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MetricsSettings {
    /// Record and serve metrics at all.
    pub enabled: bool,
    /// Where the metrics are served.
    pub path: String,
    /// Bearer token the scraper must send, if any.
    pub token: Option<crate::Secret>,
    /// Most label sets kept for the HTTP histograms.
    pub max_series: usize,
    /// Buckets of the request duration, in seconds.
    pub duration_buckets: Vec<f64>,
    /// Serve the metrics on this address instead of the application's port.
    pub addr: Option<std::net::SocketAddr>,
    /// Enrichment fields that are labels of the HTTP histograms
    /// (`OPSKIT_METRICS_LABELS`, then `Builder::metric_label`).
    pub labels: Vec<MetricLabel>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/metrics".to_owned(),
            token: None,
            max_series: 1000,
            duration_buckets: DEFAULT_DURATION_BUCKETS.to_vec(),
            addr: None,
            labels: Vec::new(),
        }
    }
}

/// What the metrics need to know about a finished request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method as received.
    pub method: &'a str,
    /// Whether the request came over HTTPS.
    pub https: bool,
    /// The route template, if a route matched.
    pub route: Option<&'a str>,
    /// The response status; `None` when there was no response (the client left).
    pub status: Option<u16>,
    /// `error.type`: `panic`, `timeout`, `aborted`, … (`None`: the status
    /// code on 5xx, nothing otherwise).
    pub error: Option<&'static str>,
    /// The request body size, when declared.
    pub request_size: Option<u64>,
    /// The response body size, when known.
    pub response_size: Option<u64>,
    /// How long the request took.
    pub duration: Duration,
    /// What the handler added to its request's telemetry: the values of
    /// the declared labels are read from it.
    pub enrichment: Option<&'a crate::request::Enrichment>,
}

impl<'a> Request<'a> {
    /// A request with this method and nothing else known.
    pub fn new(method: &'a str) -> Self {
        Self {
            method,
            https: false,
            route: None,
            status: None,
            error: None,
            request_size: None,
            response_size: None,
            duration: Duration::ZERO,
            enrichment: None,
        }
    }
}

/// OpenTelemetry attributes of one label set, built once.
#[cfg(otlp)]
type Attributes = Arc<[opentelemetry::KeyValue]>;

/// The handles of one label set.
#[derive(Debug)]
struct Series {
    duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
    #[cfg(otlp)]
    attributes: Attributes,
}

impl Series {
    fn new(labels: &[Label], _declared: &Declared) -> Self {
        Self {
            duration: metrics::histogram!(REQUEST_DURATION, labels.iter()),
            request_size: metrics::histogram!(REQUEST_BODY_SIZE, labels.iter()),
            response_size: metrics::histogram!(RESPONSE_BODY_SIZE, labels.iter()),
            #[cfg(otlp)]
            attributes: labels
                .iter()
                .map(|l| otel_attribute(l, _declared))
                .collect(),
        }
    }

    fn record(&self, r: &Request<'_>, _inner: &Inner) {
        let seconds = r.duration.as_secs_f64();
        self.duration.record(seconds);
        if let Some(n) = r.request_size {
            self.request_size.record(n as f64);
        }
        if let Some(n) = r.response_size {
            self.response_size.record(n as f64);
        }
        #[cfg(otlp)]
        if let Some(o) = &_inner.otel {
            o.duration.record(seconds, &self.attributes);
            if let Some(n) = r.request_size {
                o.request_size.record(n, &self.attributes);
            }
            if let Some(n) = r.response_size {
                o.response_size.record(n, &self.attributes);
            }
        }
    }
}

/// The OpenTelemetry attribute for a Prometheus label: the semantic
/// conventions' dotted name, the status code as an integer, a declared
/// label's field name.
#[cfg(otlp)]
fn otel_attribute(label: &Label, declared: &Declared) -> opentelemetry::KeyValue {
    use opentelemetry::KeyValue;
    let value = label.value().to_owned();
    match label.key() {
        "http_request_method" => KeyValue::new("http.request.method", value),
        "url_scheme" => KeyValue::new("url.scheme", value),
        "http_route" => KeyValue::new("http.route", value),
        "http_response_status_code" => KeyValue::new(
            "http.response.status_code",
            value.parse::<i64>().unwrap_or_default(),
        ),
        "error_type" => KeyValue::new("error.type", value),
        "otel_metric_overflow" => KeyValue::new("otel.metric.overflow", true),
        other => KeyValue::new(declared.field_of(other).unwrap_or(other).to_owned(), value),
    }
}

/// One label set, owned.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    method: u8,
    https: bool,
    status: Option<u16>,
    error: Option<&'static str>,
    route: Option<Box<str>>,
    /// The declared labels' value codes (0: none set).
    labels: u64,
}

/// The same, borrowed from the request (no allocation to look it up).
struct KeyRef<'a> {
    method: u8,
    https: bool,
    status: Option<u16>,
    error: Option<&'static str>,
    route: Option<&'a str>,
    labels: u64,
}

impl Hash for KeyRef<'_> {
    /// Two writes (the small fields packed, then the route) where the
    /// derived `Hash` made about ten, each a full SipHash round: ~400
    /// instructions per request. `error` is left out: it almost always
    /// follows from the status, and [`KeyRef::matches`] compares it anyway.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let packed = u64::from(self.method)
            | u64::from(self.https) << 8
            | self.status.map_or(0, |s| u64::from(s) + 1) << 16
            | u64::from(self.route.is_some()) << 40;
        state.write_u64(packed);
        if let Some(route) = self.route {
            state.write(route.as_bytes());
        }
        // Only requests with a declared label set pay a third write.
        if self.labels != 0 {
            state.write_u64(self.labels);
        }
    }
}

impl KeyRef<'_> {
    fn matches(&self, k: &Key) -> bool {
        self.method == k.method
            && self.https == k.https
            && self.status == k.status
            && self.error == k.error
            && self.route == k.route.as_deref()
            && self.labels == k.labels
    }

    fn labels(&self, declared: &Declared) -> Vec<Label> {
        let mut labels = vec![
            Label::from_static_parts("http_request_method", method_name(self.method)),
            Label::from_static_parts("url_scheme", if self.https { "https" } else { "http" }),
        ];
        if let Some(route) = self.route {
            labels.push(Label::new("http_route", route.to_owned()));
        }
        if let Some(status) = self.status {
            labels.push(Label::new("http_response_status_code", status.to_string()));
        }
        if let Some(error) = self.error {
            labels.push(Label::from_static_parts("error_type", error));
        }
        declared.push_labels(self.labels, &mut labels);
        labels
    }
}

/// The hasher of a map whose keys are hashes already: passes the `u64` on.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys reach here (through `write_u64`); fold anything
        // else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The label sets whose keys hash alike (almost always one).
type Bucket = Vec<(Key, Arc<Series>)>;

/// The HTTP server metrics: cheap to clone, shared by every adapter.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_series: usize,
    /// The enrichment fields declared as labels (most often none).
    labels: Declared,
    /// Keys are bounded (route templates, methods, codes), so a fast
    /// seeded hash suffices (SipHash cost ~250 instructions a request).
    hasher: foldhash::fast::RandomState,
    /// Buckets by hash of the borrowed key; collisions share a bucket. The
    /// key is that (keyed) hash already, so the map does not hash it again.
    series: RwLock<HashMap<u64, Bucket, std::hash::BuildHasherDefault<Prehashed>>>,
    count: AtomicUsize,
    overflow: OnceLock<(Series, Counter)>,
    /// `rpc_server_call_duration_seconds`: gRPC calls.
    rpc: rpc::RpcSeries,
    /// `http_server_active_requests` by method code and scheme, made on first use.
    active: [OnceLock<ActiveSlot>; (METHODS.len() + 1) * 2],
    #[cfg(otlp)]
    otel: Option<crate::otel::OtelInstruments>,
}

#[derive(Debug)]
struct ActiveSlot {
    gauge: Gauge,
    #[cfg(otlp)]
    attributes: Attributes,
}

/// A request in flight: counted in `http_server_active_requests` until dropped.
#[derive(Debug)]
pub struct Active {
    gauge: Gauge,
    #[cfg(otlp)]
    otel: Option<(opentelemetry::metrics::UpDownCounter<i64>, Attributes)>,
}

/// The counter of requests to quiet routes.
pub(crate) const QUIET_REQUESTS: &str = "opskit_quiet_requests_total";

impl HttpMetrics {
    /// Counts a request to a quiet route (`pattern`, as configured: a
    /// bounded label) instead of measuring it.
    pub(crate) fn count_quiet(&self, pattern: &std::sync::Arc<str>, status: u16) {
        metrics::counter!(
            QUIET_REQUESTS,
            "http_route" => pattern.clone(),
            "http_response_status_code" => status.to_string()
        )
        .increment(1);
    }

    /// Metrics recorded into the global `metrics` recorder.
    pub fn new(settings: &MetricsSettings) -> Self {
        Self::build(
            settings,
            #[cfg(otlp)]
            None,
        )
    }

    /// Metrics recorded into the global `metrics` recorder and into these
    /// OpenTelemetry instruments.
    #[cfg(otlp)]
    pub(crate) fn with_otel(
        settings: &MetricsSettings,
        otel: Option<crate::otel::OtelInstruments>,
    ) -> Self {
        Self::build(settings, otel)
    }

    fn build(
        settings: &MetricsSettings,
        #[cfg(otlp)] otel: Option<crate::otel::OtelInstruments>,
    ) -> Self {
        // At 0 from start-up: a series born with its first increment hides
        // that increment from `rate()` and `increase()`.
        metrics::counter!(OVERFLOW).increment(0);
        Self {
            inner: Arc::new(Inner {
                max_series: settings.max_series,
                labels: Declared::new(&settings.labels),
                hasher: foldhash::fast::RandomState::default(),
                series: RwLock::new(HashMap::default()),
                count: AtomicUsize::new(0),
                overflow: OnceLock::new(),
                rpc: rpc::RpcSeries::new(settings.max_series),
                active: std::array::from_fn(|_| OnceLock::new()),
                #[cfg(otlp)]
                otel,
            }),
        }
    }

    /// Counts a request in `http_server_active_requests` until it finishes.
    pub fn start(&self, method: &str, https: bool) -> Active {
        let code = method_code(method);
        let slot = usize::from(code) * 2 + usize::from(https);
        let active = self.inner.active[slot].get_or_init(|| {
            let scheme = if https { "https" } else { "http" };
            ActiveSlot {
                gauge: metrics::gauge!(
                    ACTIVE_REQUESTS,
                    "http_request_method" => method_name(code),
                    "url_scheme" => scheme
                ),
                #[cfg(otlp)]
                attributes: Arc::new([
                    opentelemetry::KeyValue::new("http.request.method", method_name(code)),
                    opentelemetry::KeyValue::new("url.scheme", scheme),
                ]),
            }
        });
        active.gauge.increment(1.0);
        #[cfg(otlp)]
        let otel = self.inner.otel.as_ref().map(|o| {
            o.active.add(1, &active.attributes);
            (o.active.clone(), active.attributes.clone())
        });
        Active {
            gauge: active.gauge.clone(),
            #[cfg(otlp)]
            otel,
        }
    }

    /// Records a finished (or abandoned) request.
    pub fn finish(&self, r: &Request<'_>) {
        let error = r.error.or(match r.status {
            Some(s) if s >= 500 => Some(status_text(s)),
            _ => None,
        });
        let key = KeyRef {
            method: method_code(r.method),
            https: r.https,
            status: r.status,
            error,
            route: r.route,
            labels: match r.enrichment {
                Some(e) if !self.inner.labels.is_empty() => self.inner.labels.codes(e),
                _ => 0,
            },
        };
        let hash = self.inner.hasher.hash_one(&key);
        {
            let map = self.inner.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map
                .get(&hash)
                .and_then(|b| b.iter().find(|(k, _)| key.matches(k)))
            {
                s.1.record(r, &self.inner);
                return;
            }
        }
        self.new_series(hash, &key, r);
    }

    #[cold]
    fn new_series(&self, hash: u64, key: &KeyRef<'_>, r: &Request<'_>) {
        let mut map = self.inner.series.write().unwrap_or_else(|e| e.into_inner());
        let bucket = map.entry(hash).or_default();
        if let Some((_, s)) = bucket.iter().find(|(k, _)| key.matches(k)) {
            s.record(r, &self.inner);
            return;
        }
        if self.inner.count.load(Ordering::Relaxed) >= self.inner.max_series {
            drop(map);
            let (series, counter) = self.inner.overflow.get_or_init(|| {
                (
                    Series::new(
                        &[Label::from_static_parts("otel_metric_overflow", "true")],
                        &self.inner.labels,
                    ),
                    metrics::counter!(OVERFLOW),
                )
            });
            series.record(r, &self.inner);
            counter.increment(1);
            return;
        }
        let series = Arc::new(Series::new(
            &key.labels(&self.inner.labels),
            &self.inner.labels,
        ));
        series.record(r, &self.inner);
        bucket.push((
            Key {
                method: key.method,
                https: key.https,
                status: key.status,
                error: key.error,
                route: key.route.map(Box::from),
                labels: key.labels,
            },
            series,
        ));
        self.inner.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished gRPC call (not in the HTTP histograms): its
    /// method (`package.Service/Method` or `_OTHER`) and status code.
    pub fn finish_rpc(&self, method: &str, code: u8, duration: Duration) {
        self.inner.rpc.record(method, code, duration);
    }

    /// How many label sets are kept (the overflow series not counted).
    pub fn series(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
        #[cfg(otlp)]
        if let Some((counter, attributes)) = &self.otel {
            counter.add(-1, attributes);
        }
    }
}

/// The status code as a static string (`error_type` on 5xx).
fn status_text(status: u16) -> &'static str {
    const CODES: [&str; 12] = [
        "500", "501", "502", "503", "504", "505", "506", "507", "508", "509", "510", "511",
    ];
    CODES
        .get(usize::from(status.saturating_sub(500)))
        .copied()
        .unwrap_or("5xx")
}

/// Describes opskit's metrics (HELP and unit lines) in the installed recorder.
pub fn describe() {
    use metrics::Unit;
    metrics::describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests."
    );
    metrics::describe_gauge!(ACTIVE_REQUESTS, "Number of active HTTP server requests.");
    metrics::describe_histogram!(
        CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of outbound HTTP client requests (opskit::client), by method, server address (bounded), port, status and error type."
    );
    metrics::describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Duration of gRPC server calls, by method and status code."
    );
    metrics::describe_histogram!(
        REQUEST_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP server request bodies (as declared by Content-Length)."
    );
    metrics::describe_histogram!(
        RESPONSE_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP server response bodies (when known before sending)."
    );
    metrics::describe_counter!(
        OVERFLOW,
        "Requests recorded under the overflow series because OPSKIT_METRICS_MAX_SERIES was reached."
    );
    metrics::describe_counter!(
        LABEL_OVERFLOW,
        "Requests whose value of a declared label (OPSKIT_METRICS_LABELS) was recorded as _OTHER: not an allowed value, or past the label's cap."
    );
    metrics::describe_counter!(
        QUIET_REQUESTS,
        "Requests to quiet routes (probes, /metrics, OPSKIT_TELEMETRY_EXCLUDE), by route pattern and status: they have no request histogram series, span or access line."
    );
    metrics::describe_gauge!(
        "opskit_build_info",
        "The service's build: always 1, labelled with its name, version and commit."
    );
    metrics::describe_counter!(
        "opskit_log_lines_dropped_total",
        "Log lines dropped because the log writer's buffer was full."
    );
    metrics::describe_counter!(
        "opskit_rate_limit_decisions_total",
        "Rate-limit decisions by policy and decision: allowed, rejected, allowed_store_failed, rejected_store_failed."
    );
    metrics::describe_counter!(
        "opskit_otlp_exports_total",
        "OTLP exports by signal and outcome: sent, failed."
    );
    metrics::describe_counter!(
        "opskit_otlp_spans_exported_total",
        "Spans exported over OTLP."
    );
    metrics::describe_counter!(
        "opskit_otlp_spans_dropped_total",
        "Spans lost before export, by reason: queue_full (OTEL_BSP_MAX_QUEUE_SIZE reached), export_failed."
    );
    metrics::describe_counter!(
        "opskit_error_reports_total",
        "Error reports (Sentry envelopes) by outcome: sent, failed, dropped."
    );
}

#[cfg(feature = "prometheus")]
mod exporter;
#[cfg(feature = "prometheus")]
pub(crate) use exporter::listen;
#[cfg(feature = "prometheus")]
pub use exporter::{Endpoint, Exporter, CONTENT_TYPE};

mod client;
pub(crate) use client::{configure as configure_client, record as record_client, ClientCall};
pub use client::{CLIENT_REQUEST_DURATION, MAX_SERVER_ADDRESSES};
mod rpc;
pub use rpc::CALL_DURATION;

mod labels;
use labels::Declared;
pub(crate) use labels::{set_problem as labels_problem, MAX_CAP};
pub use labels::{LabelValues, MetricLabel, FOLDED, LABEL_OVERFLOW};

#[cfg(test)]
mod tests;
