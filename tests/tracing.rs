//! OpenTelemetry server spans over OTLP from both starters: decoded with the
//! official `opentelemetry-proto` messages by a test receiver, and through a
//! real collector (rotel) over gRPC and HTTP/protobuf.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{
    eventually_every, free_port, BlackHole, ExportedSpan, Kind, OtlpReceiver, Rotel, Starter,
};
use serde_json::Value;
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    every_request_is_a_server_span_with_the_semconv_attributes,
    failures_are_error_spans_and_panics_exception_events,
    an_outgoing_call_carries_the_trace_on,
    sampling_follows_the_sampler_and_the_caller,
    a_dead_collector_costs_nothing_but_counted_drops,
    a_full_queue_drops_spans_counted_as_queue_full,
    a_real_collector_receives_spans_over_grpc_and_http,
    instrumented_functions_are_child_spans_of_the_request,
    an_unsampled_request_exports_no_child_span,
    the_span_filter_excludes_a_target,
);

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(15);

/// A starter exporting spans to `endpoint` every 100 ms.
fn exporting(kind: Kind, endpoint: &str, extra: &[(&str, &str)]) -> Starter {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "tracing-test"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=payments"),
    ];
    env.extend_from_slice(extra);
    Starter::spawn(kind, &env)
}

/// The JSON log line of request `rid` with `message`, waited for.
#[track_caller]
fn log_line(s: &Starter, rid: &str, message: &str) -> Value {
    s.expect_json_line(
        &format!("{message:?} line for {rid}"),
        Duration::from_secs(5),
        |l| l["request_id"] == rid && l["message"] == message,
    )
}

fn span_for(receiver: &OtlpReceiver, path: &str) -> ExportedSpan {
    receiver
        .wait_for_span(WAIT, |s| s.attr("url.path").as_deref() == Some(path))
        .unwrap_or_else(|| panic!("no span for {path}: {:#?}", receiver.spans()))
}

fn every_request_is_a_server_span_with_the_semconv_attributes(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(kind, &receiver.endpoint(), &[]);
    let r = s
        .request(
            "GET",
            "/users/7",
            &[
                ("traceparent", PARENT),
                ("x-request-id", "span-1"),
                ("user-agent", "curl/8.5.0"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let span = span_for(&receiver, "/users/7");
    assert_eq!(span.span.name, "GET /users/{id}");
    assert_eq!(span.span.kind, 2, "SPAN_KIND_SERVER");
    // The caller's trace is joined, its span is the parent.
    assert_eq!(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.parent_span_id(), "00f067aa0ba902b7");
    for (key, want) in [
        ("http.request.method", "GET"),
        ("http.route", "/users/{id}"),
        ("url.path", "/users/7"),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("client.address", "127.0.0.1"),
        ("user_agent.original", "curl/8.5.0"),
        ("server.address", "127.0.0.1"),
    ] {
        assert_eq!(span.attr(key).as_deref(), Some(want), "{key}");
    }
    assert!(span.attr("server.port").is_some());
    assert!(span.attr("error.type").is_none());
    assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    assert!(span.span.start_time_unix_nano > 0);
    assert_eq!(
        span.resource_attr("service.name").as_deref(),
        Some("tracing-test")
    );
    assert_eq!(span.resource_attr("team").as_deref(), Some("payments"));
    for key in [
        "service.version",
        "deployment.environment.name",
        "host.name",
        "process.pid",
    ] {
        assert!(span.resource_attr(key).is_some(), "resource {key}");
    }
    // Logs and the response carry the span's ids.
    let access = log_line(&s, "span-1", "request completed");
    assert_eq!(access["trace_id"], span.trace_id().as_str());
    assert_eq!(access["span_id"], span.span_id().as_str());
    let handler = log_line(&s, "span-1", "user looked up");
    assert_eq!(handler["span_id"], span.span_id().as_str());
    assert_eq!(
        r.header("traceresponse").unwrap(),
        format!("00-{}-{}-01", span.trace_id(), span.span_id())
    );
    // A malformed traceparent: a fresh trace, no parent.
    let r = s
        .request(
            "GET",
            "/users/8",
            &[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let fresh = span_for(&receiver, "/users/8");
    assert_ne!(fresh.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(fresh.trace_id(), "0".repeat(32));
    assert_eq!(fresh.parent_span_id(), "");
    // Unmatched paths are named by the method alone (bounded span names).
    assert_eq!(s.get("/no/such/path").unwrap().status, 404);
    let unmatched = span_for(&receiver, "/no/such/path");
    assert_eq!(unmatched.span.name, "GET");
    assert!(unmatched.attr("http.route").is_none());
}

fn failures_are_error_spans_and_panics_exception_events(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(kind, &receiver.endpoint(), &[]);
    assert_eq!(s.get("/demo/error").unwrap().status, 500);
    assert_eq!(s.get("/demo/panic").unwrap().status, 500);
    assert_eq!(s.get("/users/x").unwrap().status, 400);
    let error = span_for(&receiver, "/demo/error");
    let status = error.span.status.clone().unwrap();
    assert_eq!(status.code, 2, "STATUS_CODE_ERROR");
    assert_eq!(error.attr("error.type").as_deref(), Some("500"));
    let panic = span_for(&receiver, "/demo/panic");
    assert_eq!(panic.span.status.clone().unwrap().code, 2);
    assert_eq!(panic.attr("error.type").as_deref(), Some("panic"));
    let event = panic
        .span
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("an exception event");
    let message = event
        .attributes
        .iter()
        .find(|a| a.key == "exception.message")
        .unwrap();
    assert!(format!("{message:?}").contains("demo panic"));
    // A 4xx is the client's fault: not an error on a server span.
    let client_error = span_for(&receiver, "/users/x");
    assert_ne!(client_error.span.status.clone().map_or(0, |s| s.code), 2);
    assert!(client_error.attr("error.type").is_none());
}

fn an_outgoing_call_carries_the_trace_on(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(kind, &receiver.endpoint(), &[]);
    let r = s.get("/demo/downstream").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["downstream_status"], 200);
    let outer = span_for(&receiver, "/demo/downstream");
    let inner = span_for(&receiver, "/users/42");
    assert_eq!(inner.trace_id(), outer.trace_id(), "one trace");
    // Called through the starter's CLIENT span (tests/outbound.rs checks
    // the whole tree): server → downstream.call → CLIENT → server.
    let client = child(&receiver, &outer.trace_id(), "GET");
    assert_eq!(client.span.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(
        inner.parent_span_id(),
        client.span_id(),
        "called by the outer request's CLIENT span"
    );
    assert_eq!(
        outer.parent_span_id(),
        "",
        "the outer request started the trace"
    );
}

fn sampling_follows_the_sampler_and_the_caller(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(
        kind,
        &receiver.endpoint(),
        &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
    );
    // A new trace: not sampled, still ids on the response and in the log.
    let r = s
        .request("GET", "/users/1", &[("x-request-id", "unsampled")], b"")
        .unwrap();
    let tr = r.header("traceresponse").unwrap().to_owned();
    assert!(tr.ends_with("-00"), "{tr}");
    let line = log_line(&s, "unsampled", "request completed");
    assert_eq!(line["trace_id"].as_str().unwrap(), &tr[3..35]);
    // The caller sampled its trace: this request's span is exported.
    let r = s
        .request("GET", "/users/2", &[("traceparent", PARENT)], b"")
        .unwrap();
    assert!(r.header("traceresponse").unwrap().ends_with("-01"));
    let sampled = span_for(&receiver, "/users/2");
    assert_eq!(sampled.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    // Spans are queued and exported in order, one export at a time: had
    // /users/1 been sampled, its span would have arrived no later than this one.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s.attr("url.path").as_deref() != Some("/users/1")),
        "an unsampled span was exported"
    );
}

fn a_dead_collector_costs_nothing_but_counted_drops(kind: Kind) {
    const SAMPLED: u64 = 300;
    // Nothing listens there: every export fails (connection refused). Only
    // requests whose caller sampled the trace have spans: the harness's
    // probes and the test's /metrics polls have none, so the drop count is
    // exactly the requests below.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut s = exporting(
        kind,
        &dead,
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
        ],
    );
    let t = Instant::now();
    send_sampled(&s, SAMPLED);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "300 requests took {took:?}");
    let dropped = || -> f64 {
        let text = s.get("/metrics").unwrap().text();
        text.lines()
            .find(|l| {
                l.starts_with("opskit_otlp_spans_dropped_total{")
                    && l.contains(r#"reason="export_failed""#)
            })
            .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or(0.0)
    };
    eventually_every(
        "every sampled span counted as dropped",
        WAIT,
        Duration::from_millis(100),
        || {
            let n = dropped();
            if n >= SAMPLED as f64 {
                Ok(())
            } else {
                Err(format!("{n} of {SAMPLED}"))
            }
        },
    );
    assert!(s.wait_for_output(r#""signal":"traces""#, Duration::from_secs(5)));
    // Not one more: the polls above were not counted.
    assert_eq!(dropped(), SAMPLED as f64, "one count per sampled span");
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(status.is_some_and(|st| st.success()), "{status:?}");
}

/// `opskit_otlp_spans_dropped_total{reason="<reason>"}` of a `/metrics` text.
fn spans_dropped(text: &str, reason: &str) -> f64 {
    let label = format!(r#"reason="{reason}""#);
    text.lines()
        .find(|l| l.starts_with("opskit_otlp_spans_dropped_total{") && l.contains(&label))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("no {reason} series in\n{text}"))
}

/// A collector that never answers (a black hole) holds the one export in
/// flight; the queue of `OTEL_BSP_MAX_QUEUE_SIZE` spans fills and every span
/// past it is dropped and counted with `reason="queue_full"`.
fn a_full_queue_drops_spans_counted_as_queue_full(kind: Kind) {
    const QUEUE: u64 = 8;
    const SAMPLED: u64 = 60;
    let hole = BlackHole::start();
    let s = exporting(
        kind,
        &format!("http://{}", hole.addr()),
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            // Only the test's requests are sampled (their caller says so).
            ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
        ],
    );
    assert_eq!(
        spans_dropped(&s.get("/metrics").unwrap().text(), "queue_full"),
        0.0
    );
    send_sampled(&s, SAMPLED);
    // At most one batch in the black hole and one queue full wait; the rest
    // is dropped, counted as it happens (no export has failed yet).
    let text = s.get("/metrics").unwrap().text();
    let dropped = spans_dropped(&text, "queue_full");
    assert!(
        dropped >= (SAMPLED - 2 * QUEUE) as f64 && dropped <= SAMPLED as f64,
        "{dropped} of {SAMPLED} dropped with a queue of {QUEUE}"
    );
    assert_eq!(spans_dropped(&text, "export_failed"), 0.0);
}

fn a_real_collector_receives_spans_over_grpc_and_http(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let collector = Rotel::forwarding_to("traces", &receiver.endpoint());
    // gRPC (the protocol named explicitly: rotel's port is not 4317).
    let grpc = exporting(
        kind,
        &collector.grpc_endpoint(),
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
    );
    assert_eq!(grpc.get("/users/11").unwrap().status, 200);
    let http = exporting(kind, &collector.endpoint(), &[]);
    assert_eq!(http.get("/users/12").unwrap().status, 200);
    for path in ["/users/11", "/users/12"] {
        let span = receiver
            .wait_for_span(WAIT, |s| s.attr("url.path").as_deref() == Some(path))
            .unwrap_or_else(|| {
                let paths: Vec<String> = receiver
                    .posts()
                    .into_iter()
                    .map(|p| format!("{} {:?} {}", p.path, p.headers, p.body.len()))
                    .collect();
                panic!(
                    "no span for {path} through rotel; posts {paths:?}; rotel printed:\n{}",
                    collector.output()
                )
            });
        assert_eq!(span.span.name, "GET /users/{id}");
        assert_eq!(
            span.resource_attr("service.name").as_deref(),
            Some("tracing-test")
        );
    }
    assert!(
        collector.wait_for(WAIT, &["GET /users/{id}", "http.route"]),
        "rotel printed:\n{}",
        collector.output()
    );
}

/// `n` requests whose parent asks for sampling: each is answered, and
/// sampled, with one span each (`/`: no span of the application's own).
fn send_sampled(s: &Starter, n: u64) {
    for _ in 0..n {
        let r = s
            .request("GET", "/", &[("traceparent", PARENT)], b"")
            .unwrap();
        assert_eq!(r.status, 200);
        assert!(r.header("traceresponse").unwrap().ends_with("-01"));
    }
}

/// The span named `name` in trace `trace`, waited for.
fn child(receiver: &OtlpReceiver, trace: &str, name: &str) -> ExportedSpan {
    receiver
        .wait_for_span(WAIT, |s| s.trace_id() == trace && s.span.name == name)
        .unwrap_or_else(|| panic!("no {name} span in {trace}: {:#?}", receiver.spans()))
}

/// The starters' `find_user` is `#[tracing::instrument]`ed with a nested
/// `info_span!`; an archived id logs an ERROR event inside it.
fn instrumented_functions_are_child_spans_of_the_request(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(kind, &receiver.endpoint(), &[]);
    assert_eq!(s.get("/users/7").unwrap().status, 200);
    let server = span_for(&receiver, "/users/7");
    let trace = server.trace_id();
    let find = child(&receiver, &trace, "users.find");
    let cache = child(&receiver, &trace, "users.cache");
    assert_eq!(
        find.parent_span_id(),
        server.span_id(),
        "under the server span"
    );
    assert_eq!(
        cache.parent_span_id(),
        find.span_id(),
        "under its enclosing span"
    );
    assert_ne!(find.span_id(), server.span_id());
    for span in [&find, &cache] {
        assert_eq!(span.span.kind, 1, "SPAN_KIND_INTERNAL");
        assert_eq!(span.span.status.clone().map_or(0, |s| s.code), 0, "unset");
        let (start, end) = (span.span.start_time_unix_nano, span.span.end_time_unix_nano);
        let (outer_start, outer_end) = (
            server.span.start_time_unix_nano,
            server.span.end_time_unix_nano,
        );
        assert!(
            start >= outer_start && end <= outer_end,
            "{} [{start}, {end}] outside the server span [{outer_start}, {outer_end}]",
            span.span.name
        );
        assert!(span.span.start_time_unix_nano <= span.span.end_time_unix_nano);
    }
    for (key, want) in [
        ("db.system.name", "postgresql"),
        ("db.collection.name", "users"),
        ("db.operation.name", "SELECT"),
    ] {
        assert_eq!(find.attr(key).as_deref(), Some(want), "{key}");
    }
    assert_eq!(cache.attr("cache.hit").as_deref(), Some("false"));
    assert_eq!(
        find.resource_attr("service.name").as_deref(),
        Some("tracing-test"),
        "the same resource as the server span"
    );
    // An ERROR event inside the span: Error status, and a span event.
    assert_eq!(s.get("/users/1000001").unwrap().status, 503);
    let server = span_for(&receiver, "/users/1000001");
    let find = child(&receiver, &server.trace_id(), "users.find");
    assert_eq!(find.parent_span_id(), server.span_id());
    let status = find.span.status.clone().unwrap_or_default();
    assert_eq!(status.code, 2, "STATUS_CODE_ERROR: {status:?}");
    assert_eq!(status.message, "the archive shard is unavailable");
    let event = find
        .span
        .events
        .iter()
        .find(|e| e.name == "the archive shard is unavailable")
        .unwrap_or_else(|| panic!("no event: {:?}", find.span.events));
    let event_attr = |key: &str| {
        event
            .attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| format!("{:?}", a.value))
    };
    assert!(event_attr("shard").unwrap().contains("IntValue(1)"));
    assert!(event_attr("level").unwrap().contains("ERROR"));
}

/// An unsampled request's spans cost a check and export nothing; a sampled
/// one's (the caller said so) are exported.
fn an_unsampled_request_exports_no_child_span(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(
        kind,
        &receiver.endpoint(),
        &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
    );
    let r = s.get("/users/1").unwrap();
    assert_eq!(r.status, 200);
    let unsampled = r.header("traceresponse").unwrap()[3..35].to_owned();
    let r = s
        .request("GET", "/users/2", &[("traceparent", PARENT)], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    let server = span_for(&receiver, "/users/2");
    child(&receiver, &server.trace_id(), "users.find");
    // Exported in order: the unsampled request's would have come first.
    let leaked: Vec<String> = receiver
        .spans()
        .iter()
        .filter(|s| s.trace_id() == unsampled)
        .map(|s| s.span.name.clone())
        .collect();
    assert!(leaked.is_empty(), "unsampled spans exported: {leaked:?}");
}

/// `OPSKIT_TRACE_SPANS` switches a target off: the server span still goes.
fn the_span_filter_excludes_a_target(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(
        kind,
        &receiver.endpoint(),
        &[("OPSKIT_TRACE_SPANS", "info,app::repo=off")],
    );
    assert_eq!(s.get("/users/3").unwrap().status, 200);
    let server = span_for(&receiver, "/users/3");
    // Child spans end before their request's server span: queued before it.
    let children: Vec<String> = receiver
        .spans()
        .iter()
        .filter(|c| c.trace_id() == server.trace_id() && c.span_id() != server.span_id())
        .map(|c| c.span.name.clone())
        .collect();
    assert!(children.is_empty(), "filtered spans exported: {children:?}");
}
