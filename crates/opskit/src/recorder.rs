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
use crate::RequestId;
use std::net::IpAddr;
use std::time::Instant;
use tracing::{Level, Span};

/// The `error.type` of a request cut at the shutdown deadline.
const SHUTDOWN_CUT: &str = "shutdown";

/// Bounds on what one access-log line may carry from the request.
const MAX_PATH: usize = 2048;
const MAX_USER_AGENT: usize = 512;

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
}

/// What an adapter knows once the response is decided.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The request method as received.
    pub method: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The route template that matched (`/users/{id}`), if any.
    pub route: Option<&'a str>,
    /// The response status (499 when the client went away first).
    pub status: u16,
    /// The client's address: the socket peer, or, behind trusted proxies,
    /// the address they forwarded (`client.address`).
    pub client: Option<IpAddr>,
    /// The socket peer (`network.peer.address`): a proxy's address when the
    /// client is behind one.
    pub peer: Option<IpAddr>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The client closed the connection before the response was ready.
    pub aborted: bool,
    /// The `Host` header (error reports).
    pub host: Option<&'a str>,
    /// The `Accept` header (error reports).
    pub accept: Option<&'a str>,
    /// The `Content-Type` header (error reports).
    pub content_type: Option<&'a str>,
    /// The panic message, when the handler panicked (error reports only;
    /// never sent to the client).
    pub panic: Option<&'a str>,
    /// The request came over HTTPS (metrics' `url_scheme`).
    pub https: bool,
    /// Why it failed when the status does not say: `timeout` (metrics' `error_type`).
    pub error: Option<&'static str>,
    /// The declared request body size.
    pub request_size: Option<u64>,
    /// The response body size, when known before sending.
    pub response_size: Option<u64>,
}

impl<'a> Outcome<'a> {
    /// The outcome an adapter builds from what it captured; `report_headers`
    /// are Host, Accept and Content-Type (read only for error reports).
    #[allow(clippy::too_many_arguments)]
    pub fn captured(
        method: &'a str,
        path: &'a str,
        route: Option<&'a str>,
        status: u16,
        client: Option<IpAddr>,
        user_agent: Option<&'a str>,
        aborted: bool,
        report_headers: [Option<&'a str>; 3],
    ) -> Self {
        let [host, accept, content_type] = report_headers;
        Self {
            method,
            path,
            route,
            status,
            client,
            user_agent,
            aborted,
            peer: None,
            host,
            accept,
            content_type,
            panic: None,
            https: false,
            error: None,
            request_size: None,
            response_size: None,
        }
    }

    /// An outcome with status 200 and nothing else known.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            route: None,
            status: 200,
            client: None,
            peer: None,
            user_agent: None,
            aborted: false,
            host: None,
            accept: None,
            content_type: None,
            panic: None,
            https: false,
            error: None,
            request_size: None,
            response_size: None,
        }
    }
}

/// The methods of RFC 9110 and PATCH: anything else is `_OTHER`, as the
/// OpenTelemetry semantic conventions ask (bounded label values and keys).
pub fn known_method(method: &str) -> Option<&'static str> {
    Some(match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => return None,
    })
}

/// A header value as text for the log and the span: its valid UTF-8 (RFC
/// 9110 lets a value carry bytes beyond ASCII, and clients send UTF-8 in
/// `User-Agent`), up to the first byte that is not; `None` when that leaves
/// nothing. `HeaderValue::to_str` refuses anything beyond visible ASCII.
pub fn header_text(value: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(value) {
        Ok(text) => text,
        // The prefix up to `valid_up_to` is valid UTF-8 by definition.
        Err(e) => std::str::from_utf8(&value[..e.valid_up_to()]).unwrap_or_default(),
    };
    Some(text).filter(|t| !t.is_empty())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

    /// The paths of the operational routes (`/readyz`, `/metrics`, …; each
    /// also with sub-paths such as `/readyz/{check}`): their answers, a
    /// readiness 503 included, are the service's state rather than
    /// application errors, and are never sent as error reports.
    #[must_use]
    pub fn with_operational_paths(mut self, paths: Vec<String>) -> Self {
        self.operational = paths.into();
        self
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
            active: self.metrics.as_ref().map(|m| m.start(method, https)),
            trace,
            trace_header,
            counted,
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
        let cut = outcome.aborted
            && self
                .shutdown
                .as_ref()
                .is_some_and(crate::Shutdown::deadline_passed);
        let cut_outcome;
        let outcome = if cut {
            cut_outcome = Outcome {
                status: 503,
                aborted: false,
                error: Some(SHUTDOWN_CUT),
                ..*outcome
            };
            &cut_outcome
        } else {
            outcome
        };
        if let Some(m) = &self.metrics {
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
            });
        }
        #[cfg(feature = "sentry")]
        if let Some(reporter) = &self.reporter {
            let failed =
                (outcome.status >= 500 && !outcome.aborted && !cut) || outcome.panic.is_some();
            if failed && !self.is_operational(outcome.path) {
                let crumbs = crate::report::take_breadcrumbs(&started.span);
                reporter.report_request(outcome, &started.request_id, crumbs);
            }
            reporter.maybe_send_transaction(outcome, &started.request_id, elapsed);
        }
        #[cfg(otlp)]
        if let Some(sink) = &self.spans {
            if started.trace.sampled() {
                sink.send(server_span(sink, started, outcome, elapsed));
            }
        }
        let a = &self.access;
        if !a.enabled {
            return;
        }
        let level = match outcome.status {
            500.. => a.levels.server_error,
            400..=499 => a.levels.client_error,
            _ => a.levels.success,
        };
        let Some(level) = level else { return };
        if outcome.status < 400 {
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
        let message = if outcome.aborted {
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

/// The OpenTelemetry server span of a finished request, built in one go
/// (semantic conventions for HTTP servers): name `{method} {route}`, the
/// request's trace and span ids, the caller's span as parent, status Error
/// on 5xx, and a panic as an `exception` event.
#[cfg(otlp)]
fn server_span(
    sink: &crate::otel::SpanSink,
    started: &Started,
    outcome: &Outcome<'_>,
    elapsed: std::time::Duration,
) -> opentelemetry_sdk::trace::SpanData {
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::KeyValue;
    let end = std::time::SystemTime::now();
    let (trace_id, span_id, parent) = started.trace.raw();
    let method = known_method(outcome.method).unwrap_or("_OTHER");
    let (name, route) = span_name(method, outcome.route);
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new("http.request.method", method));
    if method == "_OTHER" {
        attributes.push(KeyValue::new(
            "http.request.method_original",
            truncate(outcome.method, 32).to_owned(),
        ));
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", route));
    }
    attributes.push(KeyValue::new(
        "url.path",
        truncate(outcome.path, MAX_PATH).to_owned(),
    ));
    attributes.push(KeyValue::new(
        "url.scheme",
        if outcome.https { "https" } else { "http" },
    ));
    if !outcome.aborted {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(outcome.status),
        ));
    }
    if let Some(client) = outcome.client {
        attributes.push(KeyValue::new(
            "client.address",
            IpText::new(client).as_str().to_owned(),
        ));
    }
    if let Some(peer) = outcome.peer {
        attributes.push(KeyValue::new(
            "network.peer.address",
            IpText::new(peer).as_str().to_owned(),
        ));
    }
    if let Some(ua) = outcome.user_agent {
        static AGENTS: SharedStrings = SharedStrings::new();
        attributes.push(KeyValue::new(
            "user_agent.original",
            AGENTS.get(truncate(ua, MAX_USER_AGENT)),
        ));
    }
    if let Some(host) = outcome.host {
        static HOSTS: SharedStrings = SharedStrings::new();
        let (address, port) = split_host(host);
        attributes.push(KeyValue::new(
            "server.address",
            HOSTS.get(truncate(address, 255)),
        ));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    let error_type = if outcome.aborted {
        Some("aborted".into())
    } else if outcome.panic.is_some() {
        Some("panic".into())
    } else if let Some(e) = outcome.error {
        Some(e.into())
    } else if outcome.status >= 500 {
        Some(outcome.status.to_string().into())
    } else {
        None
    };
    let failed = outcome.status >= 500 || outcome.panic.is_some();
    if let Some(e) = error_type {
        attributes.push(KeyValue::new("error.type", opentelemetry::Value::String(e)));
    }
    let mut events = opentelemetry_sdk::trace::SpanEvents::default();
    if let Some(message) = outcome.panic {
        events.events.push(opentelemetry::trace::Event::new(
            "exception",
            end,
            vec![
                KeyValue::new("exception.type", "panic"),
                KeyValue::new("exception.message", truncate(message, 1024).to_owned()),
            ],
            0,
        ));
    }
    let state = started
        .trace
        .tracestate()
        .and_then(|t| t.parse::<TraceState>().ok())
        .unwrap_or_default();
    opentelemetry_sdk::trace::SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(span_id),
            TraceFlags::SAMPLED,
            false,
            state,
        ),
        parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Server,
        name,
        start_time: end.checked_sub(elapsed).unwrap_or(end),
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events,
        links: opentelemetry_sdk::trace::SpanLinks::default(),
        status: if failed {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: sink.scope().clone(),
    }
}

/// The span name (`{method} {route}`, `HTTP {route}` for other methods, the
/// method alone without a route) and the route as a `StringValue`.
///
/// Interned: the first request of each method and route leaks the two
/// strings once, so later spans carry `&'static str`s instead of allocating
/// both per request (allocated here and freed on the export thread, each
/// allocation took glibc's slow path: ~300 instructions apiece). Routes are
/// the application's templates, so the set is small; past
/// [`INTERNED_ROUTES`] (a flood of distinct route strings) spans allocate as
/// before and memory stays bounded.
#[cfg(otlp)]
fn span_name(
    method: &'static str,
    route: Option<&str>,
) -> (
    std::borrow::Cow<'static, str>,
    Option<opentelemetry::StringValue>,
) {
    use std::collections::HashMap;
    use std::sync::RwLock;
    const METHODS: [&str; 10] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
    ];
    /// Per route, the name for each method (by index in `METHODS`) and the
    /// route itself, both leaked.
    type Names = RwLock<
        HashMap<Box<str>, (&'static str, [Option<&'static str>; 10]), foldhash::fast::RandomState>,
    >;
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    let shown = if method == "_OTHER" { "HTTP" } else { method };
    let Some(route) = route else {
        return (shown.into(), None);
    };
    let m = METHODS.iter().position(|k| *k == method).unwrap_or(9);
    let names = NAMES.get_or_init(Default::default);
    let found = names
        .read()
        .ok()
        .and_then(|n| n.get(route).and_then(|(r, by)| Some((by[m]?, *r))));
    if let Some((name, route)) = found {
        return (name.into(), Some(route.into()));
    }
    let name = format!("{shown} {route}");
    if let Ok(mut n) = names.write() {
        if n.len() < INTERNED_ROUTES || n.contains_key(route) {
            let entry = n
                .entry(route.into())
                .or_insert_with(|| (Box::leak(Box::<str>::from(route)), [None; 10]));
            entry.1[m].get_or_insert_with(|| Box::leak(name.clone().into_boxed_str()));
        }
    }
    (name.into(), Some(route.to_owned().into()))
}

/// The values of a span attribute that repeat across requests (user agents,
/// host names), shared as `Arc<str>` by the spans that carry them: a span
/// then clones a reference count instead of allocating a copy that its
/// export thread frees (see [`span_name`] for why that is slow). At most
/// [`SHARED_STRINGS`] values are kept; a full set is emptied and starts over,
/// so a flood of distinct values costs only the allocation it cost before.
/// Hashed with `foldhash` (seeded per process): values are client-chosen, but
/// the set's bound caps what colliding values could cost.
#[cfg(otlp)]
struct SharedStrings(
    std::sync::OnceLock<
        std::sync::RwLock<
            std::collections::HashSet<std::sync::Arc<str>, foldhash::fast::RandomState>,
        >,
    >,
);

#[cfg(otlp)]
impl SharedStrings {
    const fn new() -> Self {
        Self(std::sync::OnceLock::new())
    }

    fn get(&self, value: &str) -> opentelemetry::StringValue {
        let set = self.0.get_or_init(Default::default);
        if let Some(v) = set.read().ok().and_then(|s| s.get(value).cloned()) {
            return v.into();
        }
        let v: std::sync::Arc<str> = value.into();
        if let Ok(mut s) = set.write() {
            if s.len() >= SHARED_STRINGS {
                s.clear();
            }
            s.insert(v.clone());
        }
        v.into()
    }
}

/// How many values each [`SharedStrings`] keeps.
#[cfg(otlp)]
const SHARED_STRINGS: usize = 256;

/// How many routes [`span_name`] interns at most.
#[cfg(otlp)]
const INTERNED_ROUTES: usize = 2048;

/// `host[:port]` or `[v6]:port` of a `Host` header.
#[cfg(otlp)]
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            return (addr, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// An IP address as text on the stack: IPv4 written from the digit table
/// (the common case; `Display` costs several hundred instructions), IPv6 by
/// `Display`.
struct IpText {
    buf: [u8; 46],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        use std::fmt::Write as _;
        let mut t = Self {
            buf: [0; 46],
            len: 0,
        };
        // 46 bytes hold the longest address text: writes cannot fail.
        let _ = match ip {
            IpAddr::V4(v4) => v4
                .octets()
                .into_iter()
                .enumerate()
                .try_for_each(|(i, octet)| {
                    if i > 0 {
                        t.write_str(".")?;
                    }
                    crate::decimal::write_u64(&mut t, u64::from(octet))
                }),
            IpAddr::V6(v6) => write!(t, "{v6}"),
        };
        t
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new(AccessLogSettings::default(), "x-request-id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_keeps_utf8_and_stops_at_a_bad_byte() {
        assert_eq!(header_text(b"curl/8"), Some("curl/8"));
        assert_eq!(header_text("Ünïcødé 漢字".as_bytes()), Some("Ünïcødé 漢字"));
        assert_eq!(header_text(b"caf\xe9 au lait"), Some("caf"));
        assert_eq!(header_text(b"\xff"), None);
        assert_eq!(header_text(b""), None);
        let long = format!("{}{}", "a".repeat(511), "é".repeat(50));
        assert_eq!(truncate(&long, MAX_USER_AGENT), "a".repeat(511));
    }

    /// Repeated attribute values are shared; the set empties when full.
    #[cfg(otlp)]
    #[test]
    fn shared_strings_are_shared_and_bounded() {
        static S: SharedStrings = SharedStrings::new();
        let a = S.get("Mozilla/5.0");
        assert_eq!(a.as_str(), "Mozilla/5.0");
        let len = || S.0.get().unwrap().read().unwrap().len();
        let b = S.get("Mozilla/5.0");
        assert_eq!(len(), 1, "a repeated value is not added again");
        let count =
            S.0.get()
                .unwrap()
                .read()
                .unwrap()
                .get("Mozilla/5.0")
                .map(std::sync::Arc::strong_count);
        assert_eq!(
            count,
            Some(3),
            "the set and both spans' values hold one string"
        );
        drop((a, b));
        for i in 0..SHARED_STRINGS + 3 {
            assert_eq!(S.get(&format!("agent {i}")).as_str(), format!("agent {i}"));
            assert!(len() <= SHARED_STRINGS);
        }
    }

    /// Span names and routes are interned per route (later spans borrow
    /// them), and a flood of distinct routes stops the interning at its
    /// bound instead of leaking without end.
    #[cfg(otlp)]
    #[test]
    fn span_names_are_interned_up_to_a_bound() {
        use std::borrow::Cow;
        let (name, route) = span_name("GET", Some("/interned/{id}"));
        assert_eq!(name, "GET /interned/{id}");
        assert_eq!(route.unwrap().as_str(), "/interned/{id}");
        let (name, _) = span_name("GET", Some("/interned/{id}"));
        assert!(matches!(name, Cow::Borrowed("GET /interned/{id}")));
        assert_eq!(
            span_name("_OTHER", Some("/interned/{id}")).0,
            "HTTP /interned/{id}"
        );
        assert!(matches!(
            span_name("_OTHER", Some("/interned/{id}")).0,
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            span_name("POST", None),
            (Cow::Borrowed("POST"), None)
        ));
        for i in 0..INTERNED_ROUTES + 10 {
            span_name("GET", Some(&format!("/flood/{i}")));
        }
        let late = format!("/flood/{}", INTERNED_ROUTES + 5);
        let (name, route) = span_name("GET", Some(&late));
        assert!(
            matches!(name, Cow::Owned(_)),
            "past the bound: not interned"
        );
        assert_eq!(name, format!("GET {late}"));
        assert_eq!(route.unwrap().as_str(), late);
        // Routes interned before the bound still are.
        assert!(matches!(
            span_name("GET", Some("/interned/{id}")).0,
            Cow::Borrowed(_)
        ));
    }

    /// A request dropped after the drain's deadline is counted (and
    /// logged) as cut by the server: 503 with `error_type` `shutdown`; one
    /// dropped before it stays the client's abort.
    #[cfg(feature = "prometheus")]
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

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        assert_eq!(known_method("GET"), Some("GET"));
        assert_eq!(known_method("PATCH"), Some("PATCH"));
        assert_eq!(known_method("get"), None);
        assert_eq!(known_method("PROPFIND"), None);
    }

    #[test]
    fn ip_text_matches_display() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..10_000 {
            let v4 = IpAddr::from(rng.u32(..).to_be_bytes());
            assert_eq!(IpText::new(v4).as_str(), v4.to_string());
        }
        for s in [
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
