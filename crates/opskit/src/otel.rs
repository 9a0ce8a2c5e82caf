//! OpenTelemetry export over OTLP (features `otlp-http`, `otlp-grpc`),
//! configured from the standard `OTEL_*` variables, read through opskit's
//! validated configuration (so `.env`, `Builder::set` and the all-problems
//! report apply).
//!
//! Two signals leave the process:
//! - **traces**: one server span per sampled request, built by the
//!   [`Recorder`](crate::recorder::Recorder) when the request finishes (one
//!   `SpanData`, no live span object while the handler runs) and handed to
//!   the SDK's `BatchSpanProcessor`: a bounded queue drained by its own
//!   thread. A full queue or a failed export drops spans — counted in
//!   `opskit_otlp_spans_dropped_total{reason}` — and never blocks a request.
//!   The same pipeline backs an `SdkTracerProvider` (installed as the global
//!   one) for spans the application starts itself.
//! - **metrics**: the HTTP server metrics (`http.server.request.duration`,
//!   `http.server.active_requests`, `http.server.request.body.size`,
//!   `http.server.response.body.size`) from a periodic reader on its own thread.
//!
//! Both export over OTLP/HTTP (protobuf or JSON, through `ureq`) or OTLP/gRPC
//! (tonic, on a small runtime of its own so export never depends on the
//! application's runtime being alive, e.g. while it shuts down).
//!
//! Where each signal goes follows the variables as the OpenTelemetry
//! specification has them (the signal's own endpoint used as is, the
//! general one with `/v1/traces` or `/v1/metrics` appended), with one
//! addition: port 4317 without a protocol means gRPC.
//!
//! ```
//! use opskit::otel::{OtelSettings, Protocol};
//! let mut settings = OtelSettings::default();
//! assert!(settings.traces_target().is_none(), "no endpoint: nothing is exported");
//!
//! settings.endpoint = Some("http://collector:4318".into());
//! let traces = settings.traces_target().unwrap();
//! assert_eq!(traces.url, "http://collector:4318/v1/traces");
//! assert_eq!(traces.protocol, Protocol::HttpProtobuf);
//!
//! settings.endpoint = Some("http://collector:4317".into());
//! assert_eq!(settings.metrics_target().unwrap().protocol, Protocol::Grpc);
//!
//! settings.disabled = true; // OTEL_SDK_DISABLED=true
//! assert!(settings.metrics_target().is_none());
//! ```

use std::time::Duration;

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf` (the default, port 4318).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
    /// `grpc` (port 4317; feature `otlp-grpc`).
    Grpc,
}

impl Protocol {
    /// The name used in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
            Self::Grpc => "grpc",
        }
    }

    /// The protocol of an endpoint when none is configured: `grpc` for port
    /// 4317 (the collector's gRPC port), `http/protobuf` otherwise. The spec's
    /// default is `http/protobuf` everywhere, but `…:4317` with HTTP is the
    /// most common OTLP misconfiguration there is, and fails silently.
    pub fn inferred(endpoint: &str) -> Self {
        match url::Url::parse(endpoint).ok().and_then(|u| u.port()) {
            Some(4317) => Self::Grpc,
            _ => Self::HttpProtobuf,
        }
    }
}

/// The batch span processor's bounds (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// `OTEL_BSP_SCHEDULE_DELAY`: time between two exports.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans kept waiting at most; more are dropped.
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export at most.
    pub max_export_batch_size: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            schedule_delay: Duration::from_millis(5000),
            max_queue_size: 2048,
            max_export_batch_size: 512,
        }
    }
}

/// OpenTelemetry settings (`OTEL_*`; see the configuration reference).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OtelSettings {
    /// `OTEL_SDK_DISABLED`.
    pub disabled: bool,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, without a trailing slash.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, used as is.
    pub metrics_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as is.
    pub traces_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`None`: inferred from the port).
    pub protocol: Option<Protocol>,
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`.
    pub traces_protocol: Option<Protocol>,
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (replace the general ones for traces).
    pub traces_headers: Option<Vec<(String, String)>>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`.
    pub timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`.
    pub traces_timeout: Option<Duration>,
    /// `OTEL_METRIC_EXPORT_INTERVAL`.
    pub metric_export_interval: Duration,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: crate::trace::Sampler,
    /// `OTEL_PROPAGATORS`.
    pub propagation: crate::trace::Propagation,
    /// `OTEL_BSP_*`.
    pub batch: BatchSettings,
    /// `OPSKIT_TRACE_SPANS`: which of the application's `tracing` spans
    /// are exported as spans of the request's trace.
    pub spans: SpanFilter,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            disabled: false,
            endpoint: None,
            metrics_endpoint: None,
            traces_endpoint: None,
            protocol: None,
            traces_protocol: None,
            headers: Vec::new(),
            traces_headers: None,
            timeout: Duration::from_secs(10),
            traces_timeout: None,
            metric_export_interval: Duration::from_secs(60),
            resource_attributes: Vec::new(),
            sampler: crate::trace::Sampler::default(),
            propagation: crate::trace::Propagation::default(),
            batch: BatchSettings::default(),
            spans: SpanFilter::default(),
        }
    }
}

/// `OPSKIT_TRACE_SPANS`: which of the application's `tracing` spans become
/// OpenTelemetry spans. Targets and levels in `tracing-subscriber`'s
/// `Targets` syntax (`info`, `my_app=debug,sqlx=off`); the item
/// `+background` also exports spans opened outside any request, each
/// starting a trace of its own (sampled by the root sampler), which are
/// otherwise skipped. `off` exports none.
///
/// ```
/// use opskit::otel::SpanFilter;
/// let f: SpanFilter = "info,noisy=off".parse().unwrap();
/// assert!(f.enabled("my_app::db", &tracing::Level::INFO));
/// assert!(!f.enabled("my_app::db", &tracing::Level::DEBUG));
/// assert!(!f.enabled("noisy::pool", &tracing::Level::ERROR));
/// assert!(!f.background());
/// assert!("info,+background".parse::<SpanFilter>().unwrap().background());
/// assert!("info,my_app=loud".parse::<SpanFilter>().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct SpanFilter {
    targets: tracing_subscriber::filter::Targets,
    background: bool,
}

impl SpanFilter {
    /// Whether spans of `target` at `level` are exported.
    pub fn enabled(&self, target: &str, level: &tracing::Level) -> bool {
        self.targets.would_enable(target, level)
    }

    /// Whether spans outside any request start traces of their own.
    pub fn background(&self) -> bool {
        self.background
    }
}

impl Default for SpanFilter {
    fn default() -> Self {
        Self {
            targets: tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO),
            background: false,
        }
    }
}

impl std::str::FromStr for SpanFilter {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        let mut background = false;
        let mut directives = Vec::new();
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "+background" {
                background = true;
            } else {
                directives.push(item);
            }
        }
        let targets = directives.join(",").parse().map_err(|_| {
            let bad = directives
                .iter()
                .position(|d| d.parse::<tracing_subscriber::filter::Targets>().is_err())
                .map_or(1, |n| n + 1);
            format!("directive {bad} is not a target=level directive")
        })?;
        Ok(Self {
            targets,
            background,
        })
    }
}

/// Where and how one signal is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The full URL (`…/v1/traces` over HTTP; the endpoint as is over gRPC).
    pub url: String,
    /// The protocol.
    pub protocol: Protocol,
    /// Headers (gRPC metadata) sent with every export.
    pub headers: Vec<(String, String)>,
    /// Longest time one export may take.
    pub timeout: Duration,
}

/// What one signal sets for itself (`OTEL_EXPORTER_OTLP_TRACES_*`), over
/// the general variables.
struct SignalOverrides<'a> {
    /// The signal's own endpoint, used as is.
    endpoint: Option<&'a String>,
    /// Appended to the general endpoint over HTTP (`/v1/traces`).
    path: &'static str,
    protocol: Option<Protocol>,
    headers: Option<&'a Vec<(String, String)>>,
    timeout: Option<Duration>,
}

impl OtelSettings {
    fn target(&self, signal: SignalOverrides<'_>) -> Option<Target> {
        if self.disabled {
            return None;
        }
        let (base, as_is) = match signal.endpoint {
            Some(u) => (u.clone(), true),
            None => (self.endpoint.clone()?, false),
        };
        let protocol = signal
            .protocol
            .or(self.protocol)
            .unwrap_or_else(|| Protocol::inferred(&base));
        let url = if as_is || protocol == Protocol::Grpc {
            base
        } else {
            format!("{base}{}", signal.path)
        };
        Some(Target {
            url,
            protocol,
            headers: signal.headers.unwrap_or(&self.headers).clone(),
            timeout: signal.timeout.unwrap_or(self.timeout),
        })
    }

    /// Where metrics go, if they are exported.
    pub fn metrics_target(&self) -> Option<Target> {
        self.target(SignalOverrides {
            endpoint: self.metrics_endpoint.as_ref(),
            path: "/v1/metrics",
            protocol: None,
            headers: None,
            timeout: None,
        })
    }

    /// Where spans go, if they are exported.
    pub fn traces_target(&self) -> Option<Target> {
        self.target(SignalOverrides {
            endpoint: self.traces_endpoint.as_ref(),
            path: "/v1/traces",
            protocol: self.traces_protocol,
            headers: self.traces_headers.as_ref(),
            timeout: self.traces_timeout,
        })
    }
}

#[cfg(otlp)]
pub use export::SpanSink;
#[cfg(otlp)]
pub(crate) use export::{HistogramBounds, MetricsPipeline, OtelInstruments, TracesPipeline};
#[cfg(otlp)]
pub(crate) use span::server_span;

#[cfg(otlp)]
mod children;
#[cfg(otlp)]
mod client;
#[cfg(otlp)]
pub(crate) use client::{current_span_parent, exporting, ClientSpan, ClientStart, SpanParent};
#[cfg(otlp)]
mod export;
#[cfg(otlp)]
mod span;
#[cfg(otlp)]
pub use children::SpanLayer;

#[cfg(otlp)]
pub(crate) use export::Transport;

#[cfg(all(test, otlp))]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
