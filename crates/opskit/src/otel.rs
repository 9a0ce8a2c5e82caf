//! OpenTelemetry export over OTLP/HTTP (feature `otlp-http`), configured
//! from the standard `OTEL_*` variables, read through opskit's validated
//! configuration (so `.env`, `Builder::set` and the all-problems report apply).
//!
//! Today it exports the HTTP server metrics (`http.server.request.duration`,
//! `http.server.active_requests`, `http.server.request.body.size`,
//! `http.server.response.body.size`) with a periodic reader on its own thread:
//! requests never wait for the collector, and a dead one costs one failed
//! export per interval.

use std::time::Duration;

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// OpenTelemetry export settings (`OTEL_*`; see the configuration reference).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OtelSettings {
    /// `OTEL_SDK_DISABLED`.
    pub disabled: bool,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, without a trailing slash.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, used as is.
    pub metrics_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: Protocol,
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`.
    pub timeout: Duration,
    /// `OTEL_METRIC_EXPORT_INTERVAL`.
    pub metric_export_interval: Duration,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            disabled: false,
            endpoint: None,
            metrics_endpoint: None,
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            metric_export_interval: Duration::from_secs(60),
            resource_attributes: Vec::new(),
        }
    }
}

impl OtelSettings {
    /// The metrics endpoint, if metrics are to be exported.
    pub fn metrics_url(&self) -> Option<String> {
        if self.disabled {
            return None;
        }
        self.metrics_endpoint
            .clone()
            .or_else(|| self.endpoint.as_ref().map(|e| format!("{e}/v1/metrics")))
    }
}

#[cfg(feature = "otlp-http")]
pub(crate) use export::{MetricsPipeline, OtelInstruments};

#[cfg(feature = "otlp-http")]
mod export {
    use super::{OtelSettings, Protocol};
    use crate::ServiceInfo;
    use opentelemetry::metrics::{Histogram, MeterProvider as _, UpDownCounter};
    use opentelemetry::KeyValue;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::Resource;

    /// An `opentelemetry-http` client on `ureq` (already opskit's HTTP client
    /// for Sentry): blocking, which suits the periodic reader's own thread,
    /// and no second HTTP stack or async runtime to pull in.
    ///
    /// Every export is counted (`opskit_otlp_exports_total{signal,outcome}`)
    /// and failures are logged at warn, at most once a minute.
    #[derive(Debug)]
    struct UreqClient {
        agent: ureq::Agent,
        signal: &'static str,
        last_warning: std::sync::Mutex<Option<std::time::Instant>>,
    }

    impl UreqClient {
        fn outcome(&self, failure: Option<String>) {
            let outcome = if failure.is_some() { "failed" } else { "sent" };
            metrics::counter!("opskit_otlp_exports_total", "signal" => self.signal, "outcome" => outcome)
                .increment(1);
            let Some(reason) = failure else { return };
            let Ok(mut last) = self.last_warning.lock() else {
                return;
            };
            if last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                *last = Some(std::time::Instant::now());
                tracing::warn!(signal = self.signal, reason = %reason, "OTLP export failed (counted in opskit_otlp_exports_total; next warning in a minute at the earliest)");
            }
        }
    }

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

    /// The meter provider exporting over OTLP; shut down (flushing) with `Ops`.
    #[derive(Debug, Clone)]
    pub(crate) struct MetricsPipeline {
        provider: SdkMeterProvider,
    }

    /// The instruments the HTTP metrics record into.
    #[derive(Debug, Clone)]
    pub(crate) struct OtelInstruments {
        pub(crate) duration: Histogram<f64>,
        pub(crate) request_size: Histogram<u64>,
        pub(crate) response_size: Histogram<u64>,
        pub(crate) active: UpDownCounter<i64>,
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
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            attrs.push(KeyValue::new("host.name", host.trim().to_owned()));
        }
        Resource::builder_empty()
            .with_service_name(service.name.clone())
            .with_attributes(attrs)
            .build()
    }

    impl MetricsPipeline {
        /// Starts exporting to `url`; `None` (logged) when the exporter cannot be built.
        pub(crate) fn start(
            settings: &OtelSettings,
            url: String,
            service: &ServiceInfo,
            duration_buckets: &[f64],
        ) -> Option<(Self, OtelInstruments)> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(settings.timeout))
                .http_status_as_error(false)
                .build()
                .into();
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(UreqClient {
                    agent,
                    signal: "metrics",
                    last_warning: std::sync::Mutex::new(None),
                })
                .with_endpoint(url.clone())
                .with_timeout(settings.timeout)
                .with_protocol(match settings.protocol {
                    Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
                    Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
                })
                .with_headers(settings.headers.iter().cloned().collect())
                .build();
            let exporter = match exporter {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the OTLP metric exporter; metrics are not pushed");
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
            let body = || super::super::metrics::BODY_SIZE_BUCKETS.to_vec();
            let instruments = OtelInstruments {
                duration: meter
                    .f64_histogram("http.server.request.duration")
                    .with_unit("s")
                    .with_description("Duration of HTTP server requests.")
                    .with_boundaries(duration_buckets.to_vec())
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
            };
            tracing::info!(endpoint = %url, interval_ms = settings.metric_export_interval.as_millis() as u64, "exporting metrics over OTLP");
            Some((Self { provider }, instruments))
        }

        /// Exports what is pending and stops.
        pub(crate) fn shutdown(&self) {
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "the last OTLP metric export failed");
            }
        }
    }
}
