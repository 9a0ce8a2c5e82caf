//! The framework-neutral request recorder: request id and log context at the
//! start of a request, one access-log line at its end.
//!
//! Adapters call [`Recorder::start`] with the incoming request-id header and
//! [`Recorder::finish`] with an [`Outcome`] built from their own request and
//! response types; the policy (id validation, levels, skipping, sampling,
//! field names) lives here, so Axum and Actix log identical lines.
//!
//! ```
//! use opskit::recorder::{Outcome, Recorder};
//! let rec = Recorder::new(Default::default(), "x-request-id");
//! let start = rec.start(Some(b"abc-123"), "GET", false, &Default::default());
//! assert_eq!(start.request_id.as_str(), "abc-123");
//! rec.finish(&start, &Outcome { status: 200, ..Outcome::new("GET", "/users/7") });
//! ```

use crate::config::AccessLogSettings;
use crate::decimal::IpText;
use crate::request::{truncate, MAX_PATH, MAX_USER_AGENT};
use crate::RequestId;
use std::time::Instant;
use tracing::{Level, Span};

/// The `error.type` of a request cut at the shutdown deadline.
pub(crate) const SHUTDOWN_CUT: &str = "shutdown";

pub(crate) use crate::request::{header_text, known_method};
pub use crate::request::{Outcome, Rpc};

/// The per-request policy shared by every adapter. Built once at start-up.
#[derive(Debug, Clone)]
pub struct Recorder {
    access: AccessLogSettings,
    request_id_header: String,
    #[cfg(feature = "sentry")]
    reporter: Option<crate::report::Reporter>,
    metrics: Option<crate::metrics::HttpMetrics>,
    trace_response_header: Option<String>,
    sampler: crate::trace::Sampler,
    propagation: crate::trace::Propagation,
    #[cfg(otlp)]
    spans: Option<crate::otel::SpanSink>,
    /// Tells a request cut at the shutdown deadline from one its client left.
    shutdown: Option<crate::Shutdown>,
    /// The operational routes (probes, metrics): their answers are never
    /// error reports.
    operational: std::sync::Arc<[String]>,
    /// Quiet routes, in the order they are matched: no histogram, active
    /// count, span or access line; counted by pattern and status instead.
    quiet: std::sync::Arc<[Quiet]>,
}

/// A quiet route: its pattern, and how it matches.
#[derive(Debug, Clone)]
struct Quiet {
    /// The pattern as configured: the counter's `http_route` label.
    pattern: std::sync::Arc<str>,
    /// An operational route: the path and the paths below it (`/readyz`,
    /// `/readyz/db`). Else a route pattern (exact, or a prefix ending in `*`).
    operational: bool,
}

impl Quiet {
    fn matches(&self, path: &str) -> bool {
        match self.operational {
            true => crate::ratelimit::path_is_under(path, &self.pattern),
            false => crate::limits::pattern_matches(&self.pattern, path),
        }
    }
}

/// What [`Recorder::start`] hands back to the adapter.
#[derive(Debug)]
pub struct Started {
    /// The request's id (incoming if well-formed, else new).
    pub request_id: RequestId,
    /// The request's log span: every event inside it carries `request_id`.
    pub span: Span,
    /// When the request started.
    pub at: Instant,
    /// Counted in `http_server_active_requests` while this lives.
    pub active: Option<crate::metrics::Active>,
    /// The W3C trace context (joined or new); its ids are on every log line.
    pub trace: crate::trace::TraceContext,
    /// `trace`'s `traceresponse` value, written once for the log span's
    /// fields and the response header.
    pub(crate) trace_header: [u8; 55],
    /// Counted among the requests the server waits for at shutdown.
    pub(crate) counted: bool,
    /// The quiet route the request is to (an index of the recorder's).
    pub(crate) quiet: Option<u16>,
    /// Set when the handler added to the request's telemetry (read from
    /// the request's span at the end only then).
    pub(crate) enriched: std::sync::atomic::AtomicBool,
}

macro_rules! access_event {
    ($level:expr, $parent:expr, $($rest:tt)*) => {
        match $level {
            Level::ERROR => tracing::event!(target: "opskit::access", parent: $parent, Level::ERROR, $($rest)*),
            Level::WARN => tracing::event!(target: "opskit::access", parent: $parent, Level::WARN, $($rest)*),
            Level::INFO => tracing::event!(target: "opskit::access", parent: $parent, Level::INFO, $($rest)*),
            Level::DEBUG => tracing::event!(target: "opskit::access", parent: $parent, Level::DEBUG, $($rest)*),
            Level::TRACE => tracing::event!(target: "opskit::access", parent: $parent, Level::TRACE, $($rest)*),
        }
    };
}

impl Recorder {
    /// A recorder with these access-log settings, reading request ids from
    /// `request_id_header`.
    pub fn new(access: AccessLogSettings, request_id_header: &str) -> Self {
        Self {
            access,
            request_id_header: request_id_header.to_ascii_lowercase(),
            #[cfg(feature = "sentry")]
            reporter: None,
            metrics: None,
            trace_response_header: Some("traceresponse".to_owned()),
            sampler: crate::trace::Sampler::default(),
            propagation: crate::trace::Propagation::default(),
            #[cfg(otlp)]
            spans: None,
            shutdown: None,
            operational: std::sync::Arc::new([]),
            quiet: std::sync::Arc::new([]),
        }
    }

    /// Follows `shutdown`: a request dropped after the drain's deadline is
    /// logged and counted as cut by the server (status 503, `error.type`
    /// `shutdown`), not as aborted by its client.
    #[must_use]
    pub fn with_shutdown(mut self, shutdown: crate::Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// The shutdown coordinator it follows, if any.
    pub(crate) fn shutdown(&self) -> Option<&crate::Shutdown> {
        self.shutdown.as_ref()
    }

    /// The paths of the operational routes (`/readyz`, `/metrics`, …; each
    /// also with sub-paths such as `/readyz/{check}`): their answers, a
    /// readiness 503 included, are the service's state rather than
    /// application errors, and are never sent as error reports.
    #[must_use]
    pub fn with_operational_paths(mut self, paths: Vec<String>) -> Self {
        self.operational = paths.into();
        self
    }

    /// Makes requests to these routes quiet (no request histogram series,
    /// active-request count, span or access line; counted in
    /// `opskit_quiet_requests_total` by pattern and status): the
    /// `operational` paths (each with the paths below it), unless
    /// `measure_operational`, and the application's `exclude` patterns
    /// (exact, or a prefix ending in `*`). A 5xx of an application route is
    /// still logged.
    #[must_use]
    pub fn with_quiet_routes(
        mut self,
        operational: &[String],
        measure_operational: bool,
        exclude: &[String],
    ) -> Self {
        let operational = operational.iter().filter(|_| !measure_operational);
        let quiet = operational.map(|p| (p, true));
        self.quiet = quiet
            .chain(exclude.iter().map(|p| (p, false)))
            .map(|(p, operational)| Quiet {
                pattern: p.as_str().into(),
                operational,
            })
            .collect();
        self
    }

    /// The quiet route `path` (as the router matches it) is under, if any:
    /// the pipeline asks once per request.
    pub(crate) fn quiet_route(&self, path: &str) -> Option<u16> {
        self.quiet
            .iter()
            .position(|q| q.matches(path))
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Whether `path` is one of the operational routes.
    #[cfg(feature = "sentry")]
    fn is_operational(&self, path: &str) -> bool {
        self.operational
            .iter()
            .any(|p| crate::ratelimit::path_is_under(path, p))
    }

    /// Samples with `sampler` and reads/writes the formats `propagation` names.
    #[must_use]
    pub fn with_trace_context(
        mut self,
        sampler: crate::trace::Sampler,
        propagation: crate::trace::Propagation,
    ) -> Self {
        self.sampler = sampler;
        self.propagation = propagation;
        self
    }

    /// Sends a server span of every sampled request to `spans`.
    #[cfg(otlp)]
    #[must_use]
    pub fn with_spans(mut self, spans: Option<crate::otel::SpanSink>) -> Self {
        self.spans = spans;
        self
    }

    /// Whether W3C `baggage` is read (`OTEL_PROPAGATORS` includes `baggage`).
    pub fn reads_baggage(&self) -> bool {
        self.propagation.baggage
    }

    /// Answers the trace context in this header (`None`: not at all).
    #[must_use]
    pub fn with_trace_response_header(mut self, name: Option<String>) -> Self {
        self.trace_response_header = name;
        self
    }

    /// The header answering the trace context, lower case.
    pub fn trace_response_header(&self) -> Option<&str> {
        self.trace_response_header.as_deref()
    }

    /// Records the HTTP server metrics of every request into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<crate::metrics::HttpMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sends an error event for every 5xx and panic through `reporter`.
    #[cfg(feature = "sentry")]
    #[must_use]
    pub fn with_reporter(mut self, reporter: Option<crate::report::Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The request-id header name, lower case.
    pub fn request_id_header(&self) -> &str {
        &self.request_id_header
    }

    /// Starts a request: validates or makes its id, joins or starts its
    /// trace (`traceparent`, `tracestate`, `baggage`), opens its log span,
    /// counts it as active.
    pub fn start(
        &self,
        incoming_request_id: Option<&[u8]>,
        method: &str,
        https: bool,
        trace_headers: &crate::trace::TraceHeaders<'_>,
    ) -> Started {
        self.start_route(incoming_request_id, method, https, trace_headers, None)
    }

    /// [`Self::start`] for a request to a route: `quiet` (from
    /// [`Self::quiet_route`]) when it is quiet.
    pub(crate) fn start_route(
        &self,
        incoming_request_id: Option<&[u8]>,
        method: &str,
        https: bool,
        trace_headers: &crate::trace::TraceHeaders<'_>,
        quiet: Option<u16>,
    ) -> Started {
        let request_id = RequestId::from_incoming_or_generate(incoming_request_id);
        let trace =
            crate::trace::TraceContext::from_request(trace_headers, self.sampler, self.propagation);
        let trace_header = trace.header_bytes();
        // The trace id's and span id's digits, checked as text once (hex
        // digits and the dash between them: ASCII, so it cannot fail).
        let (trace_digits, span_digits) =
            (crate::trace::TRACE_ID_DIGITS, crate::trace::SPAN_ID_DIGITS);
        let start = trace_digits.start;
        let ids = std::str::from_utf8(&trace_header[start..span_digits.end]).unwrap_or_default();
        let hex = |digits: std::ops::Range<usize>| {
            ids.get(digits.start - start..digits.end - start)
                .unwrap_or_default()
        };
        let span =
            crate::logging::request_span(request_id.as_str(), hex(trace_digits), hex(span_digits));
        let counted = self
            .shutdown
            .as_ref()
            .is_some_and(crate::Shutdown::request_started);
        Started {
            request_id,
            span,
            at: Instant::now(),
            active: self
                .metrics
                .as_ref()
                .filter(|_| quiet.is_none())
                .map(|m| m.start(method, https)),
            trace,
            trace_header,
            counted,
            quiet,
            enriched: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Writes the access-log line for a finished (or aborted) request, and
    /// reports it as an error event if it failed (5xx or panic).
    pub fn finish(&self, started: &Started, outcome: &Outcome<'_>) {
        // One reading of the clock: the metric, the transaction and the log
        // line report the same duration.
        let elapsed = started.at.elapsed();
        // Counted as finished once everything below is done (every return).
        let _finished = self
            .shutdown
            .as_ref()
            .filter(|_| started.counted)
            .map(Finished);
        // Dropped after the drain's deadline: the server cut it. Its own
        // outcome, 503 with `error.type` `shutdown`, not the client's 499.
        let dropped_at_deadline = outcome.aborted
            && self
                .shutdown
                .as_ref()
                .is_some_and(crate::Shutdown::deadline_passed);
        // Or answered at it (503, UNAVAILABLE), its handler stopped.
        let cut = dropped_at_deadline || outcome.error == Some(SHUTDOWN_CUT);
        let cut_outcome;
        let outcome = if dropped_at_deadline {
            cut_outcome = Outcome {
                status: 503,
                aborted: false,
                error: Some(SHUTDOWN_CUT),
                // A gRPC call cut by the server: UNAVAILABLE, as the
                // shutdown answers gRPC clients.
                rpc: outcome.rpc.map(|r| crate::request::Rpc {
                    code: crate::grpc::UNAVAILABLE,
                    ..r
                }),
                ..*outcome
            };
            &cut_outcome
        } else {
            outcome
        };
        // What the handler added (read only when it added something): its
        // route replaces the router's.
        let enrichment = started
            .enriched
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| crate::telemetry::enrichment_of(&started.span))
            .flatten();
        let enriched_outcome;
        let outcome = match &enrichment {
            Some(e) => {
                enriched_outcome = Outcome {
                    route: e.route().or(outcome.route),
                    enrichment: Some(e),
                    ..*outcome
                };
                &enriched_outcome
            }
            None => outcome,
        };
        let quiet = started.quiet.and_then(|i| self.quiet.get(usize::from(i)));
        if let (Some(m), Some(q)) = (&self.metrics, quiet) {
            m.count_quiet(&q.pattern, outcome.status);
        }
        if let (Some(m), Some(rpc)) = (
            self.metrics.as_ref().filter(|_| quiet.is_none()),
            outcome.rpc,
        ) {
            // A gRPC call is counted once: as an RPC, not as an HTTP request.
            m.finish_rpc(rpc.method, rpc.code, elapsed);
        } else if let Some(m) = self.metrics.as_ref().filter(|_| quiet.is_none()) {
            let aborted = outcome.aborted;
            m.finish(&crate::metrics::Request {
                method: outcome.method,
                https: outcome.https,
                route: outcome.route,
                status: (!aborted).then_some(outcome.status),
                error: if aborted {
                    Some("aborted")
                } else if outcome.panic.is_some() {
                    Some("panic")
                } else {
                    outcome.error
                },
                request_size: outcome.request_size,
                response_size: outcome.response_size,
                duration: elapsed,
                enrichment: outcome.enrichment,
            });
        }
        #[cfg(feature = "sentry")]
        if let Some(reporter) = &self.reporter {
            // A gRPC call is reported for the codes that mean the server is
            // broken (INTERNAL, UNKNOWN, DATA_LOSS), whatever its HTTP status.
            let server_failed = match outcome.rpc {
                Some(r) => crate::grpc::is_reported(r.code),
                None => outcome.status >= 500,
            };
            let failed = (server_failed && !outcome.aborted && !cut) || outcome.panic.is_some();
            if failed && !self.is_operational(outcome.path) {
                let crumbs = crate::report::take_breadcrumbs(&started.span);
                reporter.report_request(outcome, &started.request_id, &started.trace, crumbs);
            }
            if quiet.is_none() {
                reporter.maybe_send_transaction(
                    outcome,
                    &started.request_id,
                    &started.trace,
                    elapsed,
                );
            }
        }
        #[cfg(otlp)]
        if let Some(sink) = &self.spans {
            if started.trace.sampled() && quiet.is_none() {
                sink.send(crate::otel::server_span(
                    sink,
                    &started.trace,
                    outcome,
                    started.at,
                    elapsed,
                ));
            }
        }
        let a = &self.access;
        // A quiet route logs only an application route's server error.
        // A gRPC call's class is its status code's: a server error per the
        // semantic conventions, another failure (the client's), or OK.
        let class = match outcome.rpc {
            Some(r) if crate::grpc::is_server_error(r.code) => 500,
            Some(r) if r.code != 0 => 400,
            Some(_) => 200,
            None => outcome.status,
        };
        let quieted = quiet.is_some_and(|q| q.operational || class < 500);
        if !a.enabled || quieted {
            return;
        }
        let level = match class {
            500.. => a.levels.server_error,
            400..=499 => a.levels.client_error,
            _ => a.levels.success,
        };
        let Some(level) = level else { return };
        if class < 400 {
            if a.skip_paths
                .iter()
                .flatten()
                .any(|p| crate::ratelimit::path_is_under(outcome.path, p))
            {
                return;
            }
            if a.sample_rate < 1.0 && fastrand::f64() >= a.sample_rate {
                return;
            }
        }
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let (method, method_original) = match known_method(outcome.method) {
            Some(m) => (m, None),
            None => ("_OTHER", Some(truncate(outcome.method, 32))),
        };
        let rpc = outcome.rpc.as_ref();
        let message = if outcome.aborted && rpc.is_some() {
            "call cancelled by the client"
        } else if outcome.aborted {
            "request aborted by the client"
        } else if cut {
            "request cut at the shutdown deadline"
        } else {
            "request completed"
        };
        let client = outcome.client.map(IpText::new);
        // The peer only when it is not the client (a proxy in between; the
        // client is canonical: an IPv4-mapped peer is its IPv4 address).
        let peer = outcome
            .peer
            .filter(|p| outcome.client != Some(p.to_canonical()))
            .map(IpText::new);
        // The request span as the explicit parent: the line carries its
        // fields without entering and leaving it (~300 instructions).
        access_event!(
            level,
            &started.span,
            // A `&str` message field (not `"{}", message`): recorded as a
            // string rather than formatted through `fmt::Arguments`.
            message = message,
            http.request.method = method,
            http.request.method_original = method_original,
            url.path = truncate(outcome.path, MAX_PATH),
            http.route = outcome.route,
            http.response.status_code = u64::from(outcome.status),
            client.address = client.as_ref().map(IpText::as_str),
            network.peer.address = peer.as_ref().map(IpText::as_str),
            user_agent.original = outcome.user_agent.map(|u| truncate(u, MAX_USER_AGENT)),
            error.type = cut.then_some(SHUTDOWN_CUT),
            rpc.system.name = rpc.map(|_| "grpc"),
            rpc.method = rpc.map(|r| r.method),
            rpc.response.status_code = rpc.map(|r| crate::grpc::code_name(r.code)),
            rpc.grpc.status_code = rpc.map(|r| u64::from(r.code)),
            rpc.grpc.status_message = rpc.and_then(|r| r.message).map(|m| truncate(m, 1024)),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0
        );
    }
}

/// Counts a request as finished when dropped (the end of [`Recorder::finish`]).
struct Finished<'a>(&'a crate::Shutdown);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new(AccessLogSettings::default(), "x-request-id")
    }
}

/// The recorder read through what it records (Prometheus metrics), with a
/// server that cuts requests at the shutdown deadline.
#[cfg(all(test, feature = "prometheus", any(feature = "axum", feature = "actix")))]
mod tests {
    use super::*;

    /// A request dropped after the drain's deadline is counted (and
    /// logged) as cut by the server: 503 with `error_type` `shutdown`; one
    /// dropped before it stays the client's abort.
    #[test]
    fn a_request_cut_at_the_shutdown_deadline_is_counted_as_shutdown() {
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = prometheus.handle();
        metrics::with_local_recorder(&prometheus, || {
            let shutdown = crate::Shutdown::new();
            let rec = Recorder::default()
                .with_metrics(Some(crate::metrics::HttpMetrics::new(&Default::default())))
                .with_shutdown(shutdown.clone());
            let dropped = |route: &'static str| {
                let started = rec.start(None, "GET", false, &Default::default());
                rec.finish(
                    &started,
                    &Outcome {
                        status: 499,
                        aborted: true,
                        route: Some(route),
                        ..Outcome::new("GET", route)
                    },
                );
            };
            dropped("/left");
            shutdown.trigger();
            shutdown.pass_deadline();
            dropped("/cut");
        });
        let text = handle.render();
        let count = |route: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("http_server_request_duration_seconds_count")
                        && l.contains(&format!("http_route=\"{route}\""))
                })
                .unwrap_or_else(|| panic!("no series for {route}:\n{text}"))
                .to_owned()
        };
        let cut = count("/cut");
        assert!(cut.contains("error_type=\"shutdown\""), "{cut}");
        assert!(cut.contains("http_response_status_code=\"503\""), "{cut}");
        assert!(count("/left").contains("error_type=\"aborted\""));
    }
}
