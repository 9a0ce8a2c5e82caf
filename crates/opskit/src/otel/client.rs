//! The CLIENT span of an outbound HTTP call (`opskit::client`): where it
//! belongs — under the innermost exported `tracing` span entered on this
//! thread (a `#[tracing::instrument]`ed function making the call), else under
//! the request's server span — and the finished span, sent to the same
//! [`SpanSink`] as the server span (one queue, one export thread).

use super::children::{Live, NotSampled, LIVE};
use super::SpanSink;
use opentelemetry::trace::{SpanKind, Status, TraceState};
use opentelemetry::KeyValue;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Where the current code runs, as far as exported `tracing` spans go.
#[derive(Debug)]
pub(crate) enum SpanParent {
    /// Inside an exported span: `(trace id, span id, tracestate)`.
    Span(u128, u64, TraceState),
    /// Inside a span that is not exported because its trace is not sampled.
    Unsampled,
    /// Inside no exported span (or spans are not exported).
    None,
}

/// Whether spans are exported at all (the trace pipeline has started).
pub(crate) fn exporting() -> bool {
    super::children::sink().is_some()
}

/// The innermost exported (or unsampled) `tracing` span entered on this
/// thread, walking out from the current span past spans the filter left
/// out. A relaxed atomic load when no exported span is alive anywhere;
/// else a registry lookup (opskit's subscriber is a `Registry` with
/// layers; another subscriber has no such spans).
pub(crate) fn current_span_parent() -> SpanParent {
    use tracing::Subscriber as _;
    use tracing_subscriber::registry::LookupSpan as _;
    if LIVE.load(Ordering::Relaxed) == 0 {
        return SpanParent::None;
    }
    tracing::dispatcher::get_default(|dispatch| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
            return SpanParent::None;
        };
        let current = registry.current_span();
        let Some(span) = current.id().and_then(|id| registry.span(id)) else {
            return SpanParent::None;
        };
        for s in span.scope() {
            let ext = s.extensions();
            if let Some(live) = ext.get::<Live>() {
                return SpanParent::Span(live.trace_id, live.span_id, live.state.clone());
            }
            if ext.get::<NotSampled>().is_some() {
                return SpanParent::Unsampled;
            }
        }
        SpanParent::None
    })
}

/// A CLIENT span while its call runs.
#[derive(Debug)]
pub(crate) struct ClientSpan {
    sink: &'static SpanSink,
    trace_id: u128,
    span_id: u64,
    parent: u64,
    state: TraceState,
    name: &'static str,
    start: SystemTime,
    attributes: Vec<KeyValue>,
}

/// What a CLIENT span starts with (semantic conventions for HTTP clients).
#[derive(Debug)]
pub(crate) struct ClientStart<'a> {
    /// `http.request.method` (`_OTHER` for methods outside the known set).
    pub(crate) method: &'static str,
    /// The method as sent, when it is `_OTHER`.
    pub(crate) method_original: &'a str,
    /// `server.address`.
    pub(crate) address: &'a str,
    /// `server.port`.
    pub(crate) port: Option<u16>,
    /// `url.full`, credentials and query already redacted.
    pub(crate) url: String,
}

impl ClientSpan {
    /// Starts a span under `parent` of trace `trace_id`; `None` when spans
    /// are not exported.
    pub(crate) fn start(
        trace_id: u128,
        parent: u64,
        state: TraceState,
        start: ClientStart<'_>,
    ) -> Option<Self> {
        let sink = super::children::sink()?;
        let mut attributes = Vec::with_capacity(8);
        attributes.push(KeyValue::new("http.request.method", start.method));
        if start.method == "_OTHER" {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                crate::request::truncate(start.method_original, 32).to_owned(),
            ));
        }
        attributes.push(KeyValue::new(
            "server.address",
            crate::request::truncate(start.address, 255).to_owned(),
        ));
        if let Some(port) = start.port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        attributes.push(KeyValue::new("url.full", start.url));
        Some(Self {
            sink,
            trace_id,
            span_id: crate::trace::new_span_id(),
            parent,
            state,
            // `{method}`: a URL is no span name (no template is known).
            name: if start.method == "_OTHER" {
                "HTTP"
            } else {
                start.method
            },
            start: SystemTime::now(),
            attributes,
        })
    }

    /// The span's id: the parent the callee's server span will have.
    pub(crate) fn span_id(&self) -> u64 {
        self.span_id
    }

    /// Ends the span with the call's outcome: the response status, or the
    /// transport error's class and message. Status Error for a transport
    /// error and for a status from 400 on (HTTP client conventions).
    pub(crate) fn finish(mut self, status: Option<u16>, error: Option<(&'static str, &str)>) {
        use opentelemetry::trace::SpanId;
        if let Some(s) = status {
            self.attributes
                .push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        let error_type = crate::request::client_error_type(status, error.map(|e| e.0));
        let failed = error_type.is_some();
        if let Some(e) = error_type {
            self.attributes.push(KeyValue::new(
                "error.type",
                opentelemetry::Value::String(e.into()),
            ));
        }
        let description = error.map_or_else(String::new, |(_, message)| {
            crate::redact_urls(crate::request::truncate(message, 1024)).into_owned()
        });
        let span = opentelemetry_sdk::trace::SpanData {
            span_context: super::span::exported_context(self.trace_id, self.span_id, self.state),
            parent_span_id: SpanId::from(self.parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: self.name.into(),
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: if failed {
                Status::error(description)
            } else {
                Status::Unset
            },
            instrumentation_scope: self.sink.scope().clone(),
        };
        self.sink.send(span);
    }
}
