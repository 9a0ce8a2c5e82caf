//! The OpenTelemetry variables: export (endpoints, protocols, headers,
//! timeouts, batching), sampling, propagation, and the response header
//! that carries the trace context.

use super::parse::{items, Bounded, FromVar, HeaderName, Ratio, Reader};
use super::VarSpec;
use std::time::Duration;

pub(super) const OTEL_SDK_DISABLED: VarSpec = VarSpec::new(
    "OTEL_SDK_DISABLED",
    "true or false",
    Some("false"),
    "Turn OpenTelemetry export off whatever else is set.",
);
pub(super) const OTLP_ENDPOINT: VarSpec = VarSpec::new("OTEL_EXPORTER_OTLP_ENDPOINT", "an http(s) URL such as http://collector:4318", None, "Where OTLP data goes (over HTTP `/v1/traces` and `/v1/metrics` are appended). Unset: no OTLP export (features `otlp-http`, `otlp-grpc`).");
pub(super) const OTLP_METRICS_ENDPOINT: VarSpec = VarSpec::new("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "an http(s) URL", None, "The metrics endpoint, used as is (overrides the one derived from `OTEL_EXPORTER_OTLP_ENDPOINT`).");
pub(super) const OTLP_TRACES_ENDPOINT: VarSpec = VarSpec::new("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "an http(s) URL", None, "The traces endpoint, used as is (overrides the one derived from `OTEL_EXPORTER_OTLP_ENDPOINT`).");
pub(super) const OTLP_PROTOCOL: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "grpc, http/protobuf or http/json",
    None,
    "The OTLP transport. Unset: `grpc` when the endpoint's port is 4317, else `http/protobuf`.",
);
pub(super) const OTLP_TRACES_PROTOCOL: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "grpc, http/protobuf or http/json",
    None,
    "The transport of spans (overrides `OTEL_EXPORTER_OTLP_PROTOCOL`).",
);
pub(super) const OTLP_TRACES_HEADERS: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "a comma-separated list of key=value",
    None,
    "Headers sent with span exports, instead of `OTEL_EXPORTER_OTLP_HEADERS` (treated as a secret).",
)
.secret();
pub(super) const OTLP_TRACES_TIMEOUT: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "milliseconds",
    None,
    "Longest time one span export may take (overrides `OTEL_EXPORTER_OTLP_TIMEOUT`).",
);
pub(super) const TRACES_SAMPLER: VarSpec = VarSpec::new(
    "OTEL_TRACES_SAMPLER",
    "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
    Some("parentbased_traceidratio"),
    "Which requests get an exported span: parent-based samplers follow the caller's `traceparent` flag.",
);
pub(super) const TRACES_SAMPLER_ARG: VarSpec = VarSpec::new(
    "OTEL_TRACES_SAMPLER_ARG",
    "a number from 0 to 1",
    Some("1"),
    "The ratio of the `traceidratio` samplers (share of new traces sampled).",
);
pub(super) const PROPAGATORS: VarSpec = VarSpec::new(
    "OTEL_PROPAGATORS",
    "a comma-separated list of tracecontext, baggage, none",
    Some("tracecontext"),
    "Context read from and written to HTTP headers: W3C `traceparent`/`tracestate`, W3C `baggage`.",
);
pub(super) const BSP_SCHEDULE_DELAY: VarSpec = VarSpec::new(
    "OTEL_BSP_SCHEDULE_DELAY",
    "milliseconds",
    Some("5000"),
    "Time between two span exports.",
);
pub(super) const BSP_MAX_QUEUE_SIZE: VarSpec = VarSpec::new(
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "a whole number from 1 to 1000000",
    Some("2048"),
    "Spans waiting for export at most; more are dropped and counted (`opskit_otlp_spans_dropped_total`).",
);
pub(super) const BSP_MAX_EXPORT_BATCH_SIZE: VarSpec = VarSpec::new(
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "a whole number from 1 to 1000000",
    Some("512"),
    "Spans in one export at most.",
);
pub(super) const OTLP_HEADERS: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_HEADERS",
    "a comma-separated list of key=value",
    None,
    "Headers sent with every export (API keys: treated as a secret).",
)
.secret();
pub(super) const OTLP_TIMEOUT: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "milliseconds",
    Some("10000"),
    "Longest time one export may take.",
);
pub(super) const METRIC_EXPORT_INTERVAL: VarSpec = VarSpec::new(
    "OTEL_METRIC_EXPORT_INTERVAL",
    "milliseconds",
    Some("60000"),
    "Time between two metric exports.",
);
pub(super) const RESOURCE_ATTRIBUTES: VarSpec = VarSpec::new("OTEL_RESOURCE_ATTRIBUTES", "a comma-separated list of key=value (percent-encoded)", None, "Extra resource attributes (`team=payments,region=eu`); `OTEL_SERVICE_NAME` wins for `service.name`.");

pub(super) const TRACE_RESPONSE_HEADER: VarSpec = VarSpec::new("OPSKIT_TRACE_RESPONSE_HEADER", "a header name, or off", Some("traceresponse"), "The response header carrying the request's W3C trace context (`00-<trace id>-<span id>-<flags>`), for users to quote in bug reports.");
pub(super) const TRACE_UNTRUSTED: VarSpec = VarSpec::new(
    "OPSKIT_TRACE_UNTRUSTED",
    "join, link or link-all",
    Some("join"),
    "What an incoming `traceparent` decides. `join`: the request joins the caller's trace (parent and, with a parent-based sampler, sampling). `link`: a caller that is not in `OPSKIT_TRUSTED_PROXIES` cannot: the request starts its own trace and its span links to the caller's context (for services that face the internet). `link-all`: the same for trusted proxies too.",
);

/// `OPSKIT_TRACE_UNTRUSTED`.
impl FromVar for crate::trace::IncomingTrace {
    fn from_var(value: &str) -> Result<Self, String> {
        super::parse::one_of(
            value,
            &[
                ("join", Self::Join),
                ("link", Self::Link),
                ("link-all", Self::LinkAll),
            ],
        )
    }
}

pub(super) const TRACE_SPANS: VarSpec = VarSpec::new("OPSKIT_TRACE_SPANS", "target=level directives such as info or my_app=debug,sqlx=off, and +background", Some("info"), "Which of the application's `tracing` spans (`#[instrument]`, `info_span!`) are exported as child spans of a sampled request's trace; `+background` also exports spans opened outside any request as traces of their own; `off`: none (docs/tracing.md).");

impl FromVar for crate::otel::SpanFilter {
    fn from_var(value: &str) -> Result<Self, String> {
        value.parse()
    }
}

/// An OTLP/HTTP endpoint.
struct HttpUrl(String);

impl FromVar for HttpUrl {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        let u = url::Url::parse(v).map_err(|_| "the value is not a URL".to_owned())?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err("the value is not an http(s) URL with a host".to_owned());
        }
        Ok(Self(v.trim_end_matches('/').to_owned()))
    }
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
struct ProtocolVar(crate::otel::Protocol);

impl FromVar for ProtocolVar {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim() {
            "http/protobuf" => Ok(Self(crate::otel::Protocol::HttpProtobuf)),
            "http/json" => Ok(Self(crate::otel::Protocol::HttpJson)),
            "grpc" => Ok(Self(crate::otel::Protocol::Grpc)),
            _ => Err("the value is not grpc, http/protobuf or http/json".to_owned()),
        }
    }
}

/// `OTEL_TRACES_SAMPLER`: (parent-based?, ratio from the argument?).
struct SamplerVar(bool, Option<f64>);

impl FromVar for SamplerVar {
    fn from_var(value: &str) -> Result<Self, String> {
        Ok(match value.trim() {
            "always_on" => Self(false, Some(1.0)),
            "always_off" => Self(false, Some(0.0)),
            "traceidratio" => Self(false, None),
            "parentbased_always_on" => Self(true, Some(1.0)),
            "parentbased_always_off" => Self(true, Some(0.0)),
            "parentbased_traceidratio" => Self(true, None),
            "jaeger_remote" | "parentbased_jaeger_remote" | "xray" => {
                return Err("this sampler is not supported".to_owned())
            }
            _ => return Err("the value is not one of the listed samplers".to_owned()),
        })
    }
}

/// `OTEL_PROPAGATORS`.
struct PropagatorsVar(crate::trace::Propagation);

impl FromVar for PropagatorsVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut p = crate::trace::Propagation {
            trace_context: false,
            baggage: false,
            ..Default::default()
        };
        for (n, item) in items(value) {
            match item {
                "tracecontext" => p.trace_context = true,
                "baggage" => p.baggage = true,
                "none" => {}
                "b3" | "b3multi" | "jaeger" | "xray" | "ottrace" => {
                    return Err(format!("item {n} is a propagator opskit does not support"))
                }
                _ => return Err(format!("item {n} is not tracecontext, baggage or none")),
            }
        }
        Ok(Self(p))
    }
}

/// A whole number from 1 to 1,000,000 (queue and batch sizes).
type Count = Bounded<1, 1_000_000>;

/// `key=value,key2=value2`, values percent-decoded (W3C baggage-like, as the
/// OpenTelemetry spec says for headers and resource attributes).
struct KeyValues(Vec<(String, String)>);

impl FromVar for KeyValues {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, item) in items(value) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(format!("item {n} has no `=`"));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("item {n} has an empty key"));
            }
            let v = percent_decode(v.trim())
                .ok_or_else(|| format!("item {n} is not valid percent-encoding"))?;
            out.push((k.to_owned(), v));
        }
        Ok(Self(out))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A header name, or `off` (`None`).
struct HeaderOrOff(Option<String>);

impl FromVar for HeaderOrOff {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim() {
            v if v.eq_ignore_ascii_case("off") || v.is_empty() => Ok(Self(None)),
            v => HeaderName::from_var(v).map(|h| Self(Some(h.0))),
        }
    }
}

/// The OpenTelemetry part of [`super::Settings`].
pub(super) struct Otel {
    /// `Settings::otel`.
    pub(super) export: crate::otel::OtelSettings,
    /// `Settings::trace_response_header`.
    pub(super) trace_response_header: Option<String>,
}

/// Reads every OpenTelemetry variable through `r` (each problem is
/// recorded there), then combines them: `None` when one is invalid.
pub(super) fn read(r: &mut Reader<'_>) -> Option<Otel> {
    let disabled = r.read(&OTEL_SDK_DISABLED);
    let endpoint: Option<HttpUrl> = r.read(&OTLP_ENDPOINT);
    let metrics_endpoint: Option<HttpUrl> = r.read(&OTLP_METRICS_ENDPOINT);
    let protocol: Option<ProtocolVar> = r.read(&OTLP_PROTOCOL);
    let headers: Option<KeyValues> = r.read(&OTLP_HEADERS);
    let timeout: Option<u64> = r.read(&OTLP_TIMEOUT);
    let interval: Option<u64> = r.read(&METRIC_EXPORT_INTERVAL);
    let resource: Option<KeyValues> = r.read(&RESOURCE_ATTRIBUTES);
    let traces_endpoint: Option<HttpUrl> = r.read(&OTLP_TRACES_ENDPOINT);
    let traces_protocol: Option<ProtocolVar> = r.read(&OTLP_TRACES_PROTOCOL);
    let traces_headers: Option<KeyValues> = r.read(&OTLP_TRACES_HEADERS);
    let traces_timeout: Option<u64> = r.read(&OTLP_TRACES_TIMEOUT);
    let sampler: Option<SamplerVar> = r.read(&TRACES_SAMPLER);
    let arg: Option<Ratio> = r.read(&TRACES_SAMPLER_ARG);
    let propagators: Option<PropagatorsVar> = r.read(&PROPAGATORS);
    let delay: Option<u64> = r.read(&BSP_SCHEDULE_DELAY);
    let queue: Option<Count> = r.read(&BSP_MAX_QUEUE_SIZE);
    let batch: Option<Count> = r.read(&BSP_MAX_EXPORT_BATCH_SIZE);
    let trace_response_header: Option<HeaderOrOff> = r.read(&TRACE_RESPONSE_HEADER);
    let incoming = r.read(&TRACE_UNTRUSTED);
    let spans: Option<crate::otel::SpanFilter> = r.read(&TRACE_SPANS);
    // Each `?` below comes after every variable was read, so every problem
    // is reported.
    let sampler = sampler?;
    let export = crate::otel::OtelSettings {
        disabled: disabled?,
        endpoint: endpoint.map(|e| e.0),
        metrics_endpoint: metrics_endpoint.map(|e| e.0),
        traces_endpoint: traces_endpoint.map(|e| e.0),
        protocol: protocol.map(|p| p.0),
        traces_protocol: traces_protocol.map(|p| p.0),
        headers: headers.map(|h| h.0).unwrap_or_default(),
        traces_headers: traces_headers.map(|h| h.0),
        timeout: Duration::from_millis(timeout?),
        traces_timeout: traces_timeout.map(Duration::from_millis),
        metric_export_interval: Duration::from_millis(interval?.max(100)),
        resource_attributes: resource.map(|h| h.0).unwrap_or_default(),
        sampler: crate::trace::Sampler {
            parent_based: sampler.0,
            ratio: sampler.1.unwrap_or(arg?.0),
        },
        propagation: crate::trace::Propagation {
            incoming: incoming?,
            ..propagators?.0
        },
        batch: crate::otel::BatchSettings {
            schedule_delay: Duration::from_millis(delay?.max(1)),
            max_queue_size: queue?.0 as usize,
            max_export_batch_size: batch?.0 as usize,
        },
        spans: spans?,
    };
    Some(Otel {
        export,
        trace_response_header: trace_response_header?.0,
    })
}
