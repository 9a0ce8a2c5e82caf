//! The OpenTelemetry server span of a finished request, built in one go
//! from the request's [`Outcome`] when it finishes (no live span object
//! while the handler runs).

use super::SpanSink;
use crate::decimal::IpText;
use crate::request::{
    known_method, method_index, truncate, Outcome, MAX_PATH, MAX_USER_AGENT, METHODS,
};
use crate::trace::TraceContext;

/// The context of a span opskit exports (server, child or client span): its
/// ids, sampled (only sampled spans are exported), local, with the trace's
/// `tracestate`.
pub(super) fn exported_context(
    trace_id: u128,
    span_id: u64,
    state: opentelemetry::trace::TraceState,
) -> opentelemetry::trace::SpanContext {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};
    SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        TraceFlags::SAMPLED,
        false,
        state,
    )
}

/// The OpenTelemetry server span of a finished request, built in one go
/// (semantic conventions for HTTP servers): name `{method} {route}`, the
/// request's trace and span ids, the caller's span as parent, status Error
/// on 5xx, and a panic as an `exception` event. It starts at `started_at`
/// and lasts `elapsed` (the wall clock read now, less the time since
/// `started_at`: building the span after the access line must not shift it
/// past the start of the application's child spans).
pub(crate) fn server_span(
    sink: &SpanSink,
    trace: &TraceContext,
    outcome: &Outcome<'_>,
    started_at: std::time::Instant,
    elapsed: std::time::Duration,
) -> opentelemetry_sdk::trace::SpanData {
    use opentelemetry::trace::{SpanId, SpanKind, Status, TraceState};
    use opentelemetry::KeyValue;
    let now = std::time::SystemTime::now();
    let start = now.checked_sub(started_at.elapsed()).unwrap_or(now);
    let end = start + elapsed;
    let (trace_id, span_id, parent) = trace.raw();
    let method = known_method(outcome.method).unwrap_or("_OTHER");
    let (mut name, route) = span_name(method, outcome.route);
    let mut attributes = Vec::with_capacity(15);
    // A gRPC call (RPC semantic conventions v1.40): named
    // `package.Service/Method`, its status code the outcome.
    if let Some(rpc) = &outcome.rpc {
        name = std::borrow::Cow::Owned(rpc.method.to_owned());
        attributes.push(KeyValue::new("rpc.system.name", "grpc"));
        attributes.push(KeyValue::new("rpc.method", rpc.method.to_owned()));
        attributes.push(KeyValue::new(
            "rpc.response.status_code",
            crate::grpc::code_name(rpc.code),
        ));
    }
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
    if let Some(e) = outcome.enrichment {
        for (key, value) in e.fields() {
            attributes.push(KeyValue::new(key.to_owned(), value.to_owned()));
        }
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
    } else if let Some(rpc) = &outcome.rpc {
        crate::grpc::is_server_error(rpc.code).then(|| crate::grpc::code_name(rpc.code).into())
    } else if outcome.status >= 500 {
        Some(outcome.status.to_string().into())
    } else {
        None
    };
    // Error: a gRPC server error code (UNKNOWN, DEADLINE_EXCEEDED,
    // UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), an HTTP 5xx.
    let failed = match &outcome.rpc {
        Some(rpc) => crate::grpc::is_server_error(rpc.code),
        None => outcome.status >= 500,
    } || outcome.panic.is_some();
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
    let state = trace
        .tracestate()
        .and_then(|t| t.parse::<TraceState>().ok())
        .unwrap_or_default();
    opentelemetry_sdk::trace::SpanData {
        span_context: exported_context(trace_id, span_id, state),
        parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Server,
        name,
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events,
        links: link(trace),
        status: if failed {
            Status::error(
                outcome
                    .rpc
                    .and_then(|r| r.message)
                    .map_or_else(String::new, |m| truncate(m, 1024).to_owned()),
            )
        } else {
            Status::Unset
        },
        instrumentation_scope: sink.scope().clone(),
    }
}

/// The caller's context as a span link, when the request only linked it
/// (`OPSKIT_TRACE_UNTRUSTED`) instead of making it the parent.
fn link(trace: &TraceContext) -> opentelemetry_sdk::trace::SpanLinks {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut links = opentelemetry_sdk::trace::SpanLinks::default();
    if let Some((trace_id, span_id, flags)) = trace.raw_link() {
        let caller = SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(span_id),
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        links
            .links
            .push(opentelemetry::trace::Link::new(caller, Vec::new(), 0));
    }
    links
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
fn span_name(
    method: &'static str,
    route: Option<&str>,
) -> (
    std::borrow::Cow<'static, str>,
    Option<opentelemetry::StringValue>,
) {
    use std::collections::HashMap;
    use std::sync::RwLock;
    /// One name per method of [`METHODS`], then `_OTHER`'s.
    const SLOTS: usize = METHODS.len() + 1;
    /// Per route, the name for each method (by slot) and the route itself,
    /// both leaked.
    type Names = RwLock<
        HashMap<
            Box<str>,
            (&'static str, [Option<&'static str>; SLOTS]),
            foldhash::fast::RandomState,
        >,
    >;
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    let shown = if method == "_OTHER" { "HTTP" } else { method };
    let Some(route) = route else {
        return (shown.into(), None);
    };
    let m = method_index(method).unwrap_or(METHODS.len());
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
                .or_insert_with(|| (Box::leak(Box::<str>::from(route)), [None; SLOTS]));
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
struct SharedStrings(
    std::sync::OnceLock<
        std::sync::RwLock<
            std::collections::HashSet<std::sync::Arc<str>, foldhash::fast::RandomState>,
        >,
    >,
);

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
const SHARED_STRINGS: usize = 256;

/// How many routes [`span_name`] interns at most.
const INTERNED_ROUTES: usize = 2048;

/// `host[:port]` or `[v6]:port` of a `Host` header.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeated attribute values are shared; the set empties when full.
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
}
