//! Outbound HTTP calls through `opskit::client` (the starters'
//! `/demo/downstream`: async reqwest with `TraceMiddleware`): one trace
//! from the caller's server span through its `#[instrument]`ed
//! `downstream.call`, the CLIENT span, to the callee's server span and its
//! own `#[instrument]`ed lookup — through a real collector (rotel) into the
//! proto receiver; `http_client_request_duration_seconds` checked by
//! promtool; a failing downstream as an error CLIENT span and a Sentry
//! event at a real Bugsink carrying the trace id; nothing exported at
//! sampler ratio 0.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{
    closed_port, promtool_check_metrics, series_value, Bugsink, ExportedSpan, Kind, OtlpReceiver,
    Rotel, Starter,
};
use std::time::Duration;

opskit_conformance::conformance!(
    one_request_is_one_trace_through_the_client_span,
    a_refused_downstream_is_an_error_client_span_and_a_reported_502,
    a_503_downstream_is_an_error_client_span_under_the_callee,
    at_ratio_zero_no_span_of_any_kind_is_exported,
);

const WAIT: Duration = Duration::from_secs(20);
const SPAN_KIND_INTERNAL: i32 = 1;
const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;
const STATUS_CODE_ERROR: i32 = 2;

/// A starter exporting its spans to `endpoint` every 100 ms.
fn exporting(kind: Kind, endpoint: &str, extra: &[(&str, &str)]) -> Starter {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "outbound-test"),
    ];
    env.extend_from_slice(extra);
    Starter::spawn(kind, &env)
}

/// The span of trace `trace` that `ok` picks, waited for.
fn span_in(
    receiver: &OtlpReceiver,
    trace: &str,
    what: &str,
    ok: impl Fn(&ExportedSpan) -> bool,
) -> ExportedSpan {
    receiver
        .wait_for_span(WAIT, |s| s.trace_id() == trace && ok(s))
        .unwrap_or_else(|| panic!("no {what} in trace {trace}: {:#?}", receiver.spans()))
}

fn server_span(receiver: &OtlpReceiver, trace: &str, path: &str) -> ExportedSpan {
    span_in(receiver, trace, &format!("server span of {path}"), |s| {
        s.span.kind == SPAN_KIND_SERVER && s.attr("url.path").as_deref() == Some(path)
    })
}

fn client_span(receiver: &OtlpReceiver, trace: &str) -> ExportedSpan {
    span_in(receiver, trace, "CLIENT span", |s| {
        s.span.kind == SPAN_KIND_CLIENT
    })
}

/// The trace id of a response, from its `traceresponse`.
fn trace_of(r: &opskit_conformance::Response) -> String {
    r.header("traceresponse").unwrap()[3..35].to_owned()
}

/// The trace tree of one starter request, through rotel: server →
/// `downstream.call` (INTERNAL) → CLIENT → the callee's server span →
/// its `users.find`; ids, kinds and the HTTP client attributes; the
/// client histogram on `/metrics`, clean for promtool.
fn one_request_is_one_trace_through_the_client_span(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let collector = Rotel::forwarding_to("traces", &receiver.endpoint());
    let s = exporting(kind, &collector.endpoint(), &[]);
    let r = s.get("/demo/downstream").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["downstream_status"], 200);
    let trace = trace_of(&r);

    let caller = server_span(&receiver, &trace, "/demo/downstream");
    assert_eq!(caller.parent_span_id(), "", "the caller started the trace");
    let call = span_in(&receiver, &trace, "downstream.call", |s| {
        s.span.name == "downstream.call"
    });
    assert_eq!(call.span.kind, SPAN_KIND_INTERNAL);
    assert_eq!(call.parent_span_id(), caller.span_id());
    let client = client_span(&receiver, &trace);
    assert_eq!(
        client.parent_span_id(),
        call.span_id(),
        "under downstream.call"
    );
    let callee = server_span(&receiver, &trace, "/users/42");
    assert_eq!(
        callee.parent_span_id(),
        client.span_id(),
        "called by the CLIENT span"
    );
    let find = span_in(&receiver, &trace, "users.find", |s| {
        s.span.name == "users.find"
    });
    assert_eq!(find.parent_span_id(), callee.span_id());
    assert_eq!(find.span.kind, SPAN_KIND_INTERNAL);

    let port = s.addr.port().to_string();
    assert_eq!(client.span.name, "GET");
    for (key, want) in [
        ("http.request.method", "GET"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(client.attr(key).as_deref(), Some(want), "{key}");
    }
    assert_eq!(
        client.attr("url.full"),
        Some(format!("http://127.0.0.1:{port}/users/42"))
    );
    assert!(client.attr("error.type").is_none());
    assert_ne!(
        client.span.status.clone().map_or(0, |s| s.code),
        STATUS_CODE_ERROR
    );
    // The CLIENT span lies inside downstream.call, and the callee inside it.
    let within = |inner: &ExportedSpan, outer: &ExportedSpan| {
        inner.span.start_time_unix_nano >= outer.span.start_time_unix_nano
            && inner.span.end_time_unix_nano <= outer.span.end_time_unix_nano
    };
    assert!(
        within(&client, &call),
        "CLIENT span outside downstream.call"
    );
    assert_eq!(
        client.resource_attr("service.name").as_deref(),
        Some("outbound-test")
    );
    assert!(
        collector.wait_for(WAIT, &["downstream.call", "url.full"]),
        "rotel printed:\n{}",
        collector.output()
    );

    let metrics = s.get("/metrics").unwrap().text();
    let series = format!(
        r#"http_client_request_duration_seconds_count{{http_request_method="GET",server_address="127.0.0.1",server_port="{port}",http_response_status_code="200"}}"#
    );
    assert_eq!(series_value(&metrics, &series), Some(1.0), "{metrics}");
    assert!(metrics.contains("# HELP http_client_request_duration_seconds"));
    assert!(metrics.contains(
        r#"http_client_request_duration_seconds_bucket{http_request_method="GET",server_address="127.0.0.1""#
    ));
    promtool_check_metrics(&metrics).unwrap();
}

/// The 502 problem, its Sentry event at Bugsink (the trace id of the
/// request), and the CLIENT span of the failed call.
fn reported_502(kind: Kind, downstream: &str, rid: &str) -> (String, OtlpReceiver) {
    let bugsink = Bugsink::start();
    let receiver = OtlpReceiver::start();
    let s = exporting(
        kind,
        &receiver.endpoint(),
        &[
            ("APP_DOWNSTREAM_URL", downstream),
            ("SENTRY_DSN", &bugsink.dsn),
            ("OPSKIT_SENTRY_TIMEOUT", "30s"),
        ],
    );
    let r = s
        .request("GET", "/demo/downstream", &[("x-request-id", rid)], b"")
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("downstream"), "{}", r.text());
    let trace = trace_of(&r);
    let event = bugsink.wait_for_tagged(rid, Duration::from_secs(60));
    assert_eq!(
        event["data"]["contexts"]["trace"]["trace_id"], trace,
        "{event}"
    );
    (trace, receiver)
}

/// Connection refused: a CLIENT span with Error status and `error.type`
/// `connect`, no status code; the caller answers (and reports) a 502.
fn a_refused_downstream_is_an_error_client_span_and_a_reported_502(kind: Kind) {
    let closed = closed_port();
    let url = format!("http://127.0.0.1:{}/users/1?token=s3cret", closed.port);
    let rid = format!("refused-{}", kind.bin_name());
    let (trace, receiver) = reported_502(kind, &url, &rid);
    let client = client_span(&receiver, &trace);
    assert_eq!(client.attr("error.type").as_deref(), Some("connect"));
    assert!(client.attr("http.response.status_code").is_none());
    assert_eq!(client.span.status.clone().unwrap().code, STATUS_CODE_ERROR);
    assert_eq!(
        client.attr("url.full"),
        Some(format!(
            "http://127.0.0.1:{}/users/1?[REDACTED]",
            closed.port
        )),
        "the query is redacted"
    );
    let call = span_in(&receiver, &trace, "downstream.call", |s| {
        s.span.name == "downstream.call"
    });
    assert_eq!(client.parent_span_id(), call.span_id());
}

/// A 503 from the callee (an archived user): an Error CLIENT span with
/// `error.type` 503 and the status code, the callee's server span its
/// child; the caller answers (and reports) a 502.
fn a_503_downstream_is_an_error_client_span_under_the_callee(kind: Kind) {
    let receiver_callee = OtlpReceiver::start();
    let callee = exporting(kind, &receiver_callee.endpoint(), &[]);
    let url = format!("http://{}/users/1000000", callee.addr);
    let rid = format!("status-{}", kind.bin_name());
    let (trace, receiver) = reported_502(kind, &url, &rid);
    let client = client_span(&receiver, &trace);
    assert_eq!(client.attr("error.type").as_deref(), Some("503"));
    assert_eq!(
        client.attr("http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(client.span.status.clone().unwrap().code, STATUS_CODE_ERROR);
    let served = server_span(&receiver_callee, &trace, "/users/1000000");
    assert_eq!(served.parent_span_id(), client.span_id());
}

/// Sampler ratio 0, no sampled caller: the call carries an unsampled
/// context on, and no span of any kind (server, internal, client, the
/// callee's) reaches the receiver; the call is still measured.
fn at_ratio_zero_no_span_of_any_kind_is_exported(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = exporting(
        kind,
        &receiver.endpoint(),
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    );
    let r = s.get("/demo/downstream").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("traceresponse").unwrap().ends_with("-00"));
    // A sampled request afterwards: spans are exported in order, so once
    // its span is in, any span of the first request would be too.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = s
        .request("GET", "/users/5", &[("traceparent", parent)], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    server_span(&receiver, "4bf92f3577b34da6a3ce929d0e0e4736", "/users/5");
    let others: Vec<String> = receiver
        .spans()
        .iter()
        .filter(|s| s.trace_id() != "4bf92f3577b34da6a3ce929d0e0e4736")
        .map(|s| format!("{} kind {}", s.span.name, s.span.kind))
        .collect();
    assert!(others.is_empty(), "spans of unsampled traces: {others:?}");
    let metrics = s.get("/metrics").unwrap().text();
    assert!(
        metrics.contains(r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="127.0.0.1""#),
        "{metrics}"
    );
}
