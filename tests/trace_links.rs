//! Telemetry linked across signals and across trust boundaries: a failed
//! request's Sentry event carries the trace and span ids of its exported
//! span and access line; in public-endpoint mode (`OPSKIT_TRACE_UNTRUSTED`)
//! a caller's `traceparent` is only a span link.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{ExportedSpan, Kind, OtlpReceiver, SentryReceiver, Starter};
use serde_json::Value;
use std::time::Duration;

opskit_conformance::conformance!(
    a_failure_event_carries_the_trace_of_its_span_and_access_line,
    a_public_endpoint_links_the_callers_context_instead_of_joining_it,
);

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const WAIT: Duration = Duration::from_secs(15);

fn traceparent(flags: &str) -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}")
}

fn span_for(receiver: &OtlpReceiver, path: &str) -> ExportedSpan {
    receiver
        .wait_for_span(WAIT, |s| s.attr("url.path").as_deref() == Some(path))
        .unwrap_or_else(|| panic!("no span for {path}: {:#?}", receiver.spans()))
}

fn access_line(s: &Starter, rid: &str) -> Value {
    s.expect_json_line(&format!("access line of {rid}"), WAIT, |l| {
        l["request_id"] == rid && l["message"] == "request completed"
    })
}

fn a_failure_event_carries_the_trace_of_its_span_and_access_line(kind: Kind) {
    let sentry = SentryReceiver::start();
    let otlp = OtlpReceiver::start();
    let s = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &sentry.dsn()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let caller = traceparent("01");
    let failures = [
        ("/demo/error", "linked-error", None),
        ("/demo/panic", "linked-panic", None),
        ("/demo/error?joined", "linked-joined", Some(caller.as_str())),
    ];
    for (path, rid, parent) in failures {
        let mut headers = vec![("x-request-id", rid)];
        headers.extend(parent.map(|p| ("traceparent", p)));
        assert_eq!(s.request("GET", path, &headers, b"").unwrap().status, 500);
    }
    let events = sentry.wait_for_events(failures.len(), WAIT);
    for (path, rid, parent) in failures {
        let event = events
            .iter()
            .find(|e| e["tags"]["request_id"] == rid)
            .unwrap_or_else(|| panic!("no event for {rid}: {events:#?}"));
        let trace = &event["contexts"]["trace"];
        let access = access_line(&s, rid);
        // The same trace id (and span id) in the three places.
        let span = otlp
            .wait_for_span(WAIT, |sp| {
                sp.attr("url.path").as_deref() == Some(path.split('?').next().unwrap())
                    && sp.trace_id() == access["trace_id"].as_str().unwrap_or_default()
            })
            .unwrap_or_else(|| panic!("no span for {rid}: {:#?}", otlp.spans()));
        assert_eq!(
            trace["trace_id"],
            span.trace_id().as_str(),
            "{rid}: {event}"
        );
        assert_eq!(trace["span_id"], span.span_id().as_str(), "{rid}");
        assert_eq!(access["trace_id"], span.trace_id().as_str(), "{rid}");
        assert_eq!(access["span_id"], span.span_id().as_str(), "{rid}");
        assert_eq!(trace["op"], "http.server");
        assert_eq!(trace["status"], "internal_error");
        match parent {
            Some(_) => {
                assert_eq!(span.trace_id(), CALLER_TRACE);
                assert_eq!(trace["parent_span_id"], CALLER_SPAN);
            }
            None => assert!(trace.get("parent_span_id").is_none(), "{trace}"),
        }
    }
}

fn a_public_endpoint_links_the_callers_context_instead_of_joining_it(kind: Kind) {
    let otlp = OtlpReceiver::start();
    let endpoint = otlp.endpoint();
    let public = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OPSKIT_TRACE_UNTRUSTED", "link"),
        ];
        env.extend_from_slice(extra);
        Starter::spawn(kind, &env)
    };
    // Ratio 0: a caller's sampled traceparent does not make the request sampled.
    let mut s = public(&[("OTEL_TRACES_SAMPLER_ARG", "0")]);
    let sampled = traceparent("01");
    let r = s
        .request(
            "GET",
            "/users/1",
            &[("traceparent", &sampled), ("x-request-id", "public-0")],
            b"",
        )
        .unwrap();
    let tr = r.header("traceresponse").unwrap().to_owned();
    assert!(tr.ends_with("-00"), "not sampled: {tr}");
    let own_trace = tr[3..35].to_owned();
    assert_ne!(own_trace, CALLER_TRACE, "a trace of its own");
    assert_eq!(access_line(&s, "public-0")["trace_id"], own_trace.as_str());
    s.signal("TERM"); // exports whatever was queued
    assert_eq!(s.wait_exit(WAIT).unwrap().code(), Some(0));
    // Ratio 1: the span is its own root, with a link to the caller's
    // context (an unsampled caller cannot suppress it either).
    let s = public(&[]);
    let unsampled = traceparent("00");
    let r = s
        .request("GET", "/users/2", &[("traceparent", &unsampled)], b"")
        .unwrap();
    assert!(r.header("traceresponse").unwrap().ends_with("-01"));
    let span = span_for(&otlp, "/users/2");
    assert_ne!(span.trace_id(), CALLER_TRACE);
    assert_eq!(span.parent_span_id(), "", "a root span");
    assert_eq!(span.span.links.len(), 1, "{:#?}", span.span);
    let link = &span.span.links[0];
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(&link.trace_id), CALLER_TRACE);
    assert_eq!(hex(&link.span_id), CALLER_SPAN);
    drop(s);
    // A trusted proxy's context is still joined.
    let s = public(&[("OPSKIT_TRUSTED_PROXIES", "127.0.0.1/32")]);
    s.request("GET", "/users/3", &[("traceparent", &unsampled)], b"")
        .unwrap();
    let r = s
        .request("GET", "/users/4", &[("traceparent", &sampled)], b"")
        .unwrap();
    assert_eq!(
        r.header("traceresponse").unwrap()[..35],
        format!("00-{CALLER_TRACE}")
    );
    let joined = span_for(&otlp, "/users/4");
    assert_eq!(joined.trace_id(), CALLER_TRACE);
    assert_eq!(joined.parent_span_id(), CALLER_SPAN);
    assert!(joined.span.links.is_empty());
    // The unsampled caller decided for /users/3 (spans are exported in
    // order: it would have come before /users/4's), and nothing of the
    // ratio-0 service was ever exported.
    for span in otlp.spans() {
        assert_ne!(span.attr("url.path").as_deref(), Some("/users/3"));
        assert_ne!(span.trace_id(), own_trace, "an unsampled span was exported");
    }
}
