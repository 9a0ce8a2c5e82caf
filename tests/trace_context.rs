//! W3C trace context in and out, and trace ids on every log line — the same
//! in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{Kind, Starter};
use std::time::Duration;

opskit_conformance::conformance!(
    a_traceparent_is_joined_and_answered,
    hostile_traceparents_start_a_new_trace,
    the_response_header_is_configurable,
);

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `(trace id, span id, flags)` of a `traceresponse`, checking its shape.
fn parts(v: &str) -> (String, String, String) {
    let p: Vec<&str> = v.split('-').collect();
    assert_eq!(p.len(), 4, "{v}");
    assert_eq!(p[0], "00");
    assert!(
        p[1].len() == 32 && p[2].len() == 16 && p[3].len() == 2,
        "{v}"
    );
    assert!(
        v[3..]
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{v}"
    );
    assert!(p[1] != "0".repeat(32) && p[2] != "0".repeat(16));
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

/// The access-log line of the request with id `rid`, waited for: the
/// handler's own line (which carries the id too) is written first, and lines
/// reach the pipe through a non-blocking writer a moment after the response.
fn access_line(s: &Starter, rid: &str) -> serde_json::Value {
    let find = || {
        s.output()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["request_id"] == rid && l["message"] == "request completed")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = find() {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line for {rid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn a_traceparent_is_joined_and_answered(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let r = s
        .request(
            "GET",
            "/users/7",
            &[("traceparent", PARENT), ("x-request-id", "tp-1")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let (trace, span, flags) = parts(r.header("traceresponse").unwrap());
    assert_eq!(
        trace, "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace is joined"
    );
    assert_ne!(
        span, "00f067aa0ba902b7",
        "the request has a span of its own"
    );
    assert_eq!(flags, "01");
    // Every line of the request carries the same ids: the handler's own line too.
    let line = access_line(&s, "tp-1");
    assert_eq!(line["trace_id"], trace.as_str());
    assert_eq!(line["span_id"], span.as_str());
    let handler_line = s
        .output()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["request_id"] == "tp-1" && l["message"] == "user looked up")
        .unwrap();
    assert_eq!(handler_line["trace_id"], trace.as_str());
    // Without a traceparent: a new trace per request.
    let a = parts(s.get("/users/1").unwrap().header("traceresponse").unwrap()).0;
    let b = parts(s.get("/users/1").unwrap().header("traceresponse").unwrap()).0;
    assert_ne!(a, b);
}

fn hostile_traceparents_start_a_new_trace(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let long = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(5000));
    let hostile = [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "garbage",
        long.as_str(),
    ];
    for (i, h) in hostile.iter().enumerate() {
        let rid = format!("hostile-{i}");
        let r = s
            .request(
                "GET",
                "/",
                &[
                    ("traceparent", h),
                    ("tracestate", "a=b"),
                    ("x-request-id", &rid),
                ],
                b"",
            )
            .unwrap();
        assert_eq!(r.status, 200, "{h}");
        let (trace, _, _) = parts(r.header("traceresponse").unwrap());
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{h}");
        assert_eq!(access_line(&s, &rid)["trace_id"], trace.as_str());
    }
}

fn the_response_header_is_configurable(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_TRACE_RESPONSE_HEADER", "x-trace-id")]);
    let r = s
        .request("GET", "/", &[("traceparent", PARENT)], b"")
        .unwrap();
    assert!(r.header("traceresponse").is_none());
    assert_eq!(
        parts(r.header("x-trace-id").unwrap()).0,
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let s = Starter::spawn(kind, &[("OPSKIT_TRACE_RESPONSE_HEADER", "off")]);
    let r = s.get("/").unwrap();
    assert!(r.header("traceresponse").is_none() && r.header("x-trace-id").is_none());
}
