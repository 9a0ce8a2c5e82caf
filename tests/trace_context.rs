//! W3C trace context in and out, and trace ids on every log line — the same
//! in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{eventually_every, Kind, OtlpReceiver, Post, Starter};
use std::time::Duration;

opskit_conformance::conformance!(
    a_traceparent_is_joined_and_answered,
    hostile_traceparents_start_a_new_trace,
    the_response_header_is_configurable,
    two_traceparent_lines_start_a_new_trace,
    several_tracestate_and_baggage_lines_are_one_list,
    an_invalid_tracestate_is_dropped_whole,
    an_invalid_baggage_member_is_dropped_alone,
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
#[track_caller]
fn access_line(s: &Starter, rid: &str) -> serde_json::Value {
    s.expect_json_line(
        &format!("access line of {rid}"),
        Duration::from_secs(5),
        |l| l["request_id"] == rid && l["message"] == "request completed",
    )
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

/// A starter whose `/demo/downstream` calls `rx` and which exports its spans
/// there too, reading both W3C formats.
fn with_downstream(kind: Kind, rx: &OtlpReceiver) -> Starter {
    let downstream = format!("{}/downstream", rx.endpoint());
    Starter::spawn(
        kind,
        &[
            ("APP_DOWNSTREAM_URL", &downstream),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_PROPAGATORS", "tracecontext,baggage"),
        ],
    )
}

/// `GET /demo/downstream` with `headers` (repeated names are sent as
/// separate lines): the `traceresponse` parts and what the call it made
/// carried on. The call's `traceparent` names its CLIENT span (a child of
/// the starter's `downstream.call` span, itself a child of this request's
/// span): the call is found by that ancestry among the exported spans.
fn through(
    s: &Starter,
    rx: &OtlpReceiver,
    headers: &[(&str, &str)],
) -> ((String, String, String), Post) {
    let r = s.request("GET", "/demo/downstream", headers, b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (trace, span, flags) = parts(r.header("traceresponse").unwrap());
    let call = eventually_every(
        "the downstream call of this request, under its CLIENT span",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            let spans = rx.spans();
            let parent_of = |id: &str| {
                spans
                    .iter()
                    .find(|x| x.span_id() == id)
                    .map(|x| x.parent_span_id())
            };
            let posts = rx.posts();
            posts
                .iter()
                .find(|p| {
                    p.path == "/downstream"
                        && p.header("traceparent").is_some_and(|tp| {
                            let (t, client, f) = parts(tp);
                            t == trace
                                && f == flags
                                && parent_of(&client).and_then(|call| parent_of(&call))
                                    == Some(span.clone())
                        })
                })
                .cloned()
                .ok_or_else(|| format!("{} posts, {} spans", posts.len(), spans.len()))
        },
    );
    ((trace, span, flags), call)
}

/// The exported span of this request's span id.
fn exported(rx: &OtlpReceiver, span: &str) -> opskit_conformance::ExportedSpan {
    rx.wait_for_span(Duration::from_secs(15), |s| s.span_id() == span)
        .unwrap_or_else(|| panic!("no span {span} exported"))
}

const OTHER: &str = "00-12345678901234567890123456789011-1234567890123456-01";

fn two_traceparent_lines_start_a_new_trace(kind: Kind) {
    let rx = OtlpReceiver::start();
    let s = with_downstream(kind, &rx);
    for second in [OTHER, PARENT] {
        let ((trace, span, _), call) = through(
            &s,
            &rx,
            &[
                ("traceparent", PARENT),
                ("traceparent", second),
                ("tracestate", "foo=1"),
            ],
        );
        for joined in [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "12345678901234567890123456789011",
        ] {
            assert_ne!(trace, joined, "two traceparent lines joined a trace");
        }
        // The new trace goes on, without the caller's tracestate.
        assert!(call.header("tracestate").is_none(), "{:?}", call.headers);
        let span = exported(&rx, &span);
        assert_eq!(span.trace_id(), trace);
        assert_eq!(span.parent_span_id(), "", "a root span");
        assert_eq!(span.span.trace_state, "");
    }
}

fn several_tracestate_and_baggage_lines_are_one_list(kind: Kind) {
    let rx = OtlpReceiver::start();
    let s = with_downstream(kind, &rx);
    let ((trace, span, _), call) = through(
        &s,
        &rx,
        &[
            ("traceparent", PARENT),
            ("tracestate", "foo=1,bar=2"),
            ("baggage", "userId=alice"),
            ("tracestate", "rojo=1,congo=2"),
            ("baggage", "isProduction=false;p=1"),
            ("tracestate", "baz=3"),
            // An empty line adds nothing.
            ("tracestate", ""),
        ],
    );
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        call.header("tracestate"),
        Some("foo=1,bar=2,rojo=1,congo=2,baz=3")
    );
    assert_eq!(
        call.header("baggage"),
        Some("userId=alice,isProduction=false;p=1")
    );
    let span = exported(&rx, &span);
    assert_eq!(span.parent_span_id(), "00f067aa0ba902b7");
    assert_eq!(span.span.trace_state, "foo=1,bar=2,rojo=1,congo=2,baz=3");
}

fn an_invalid_tracestate_is_dropped_whole(kind: Kind) {
    let rx = OtlpReceiver::start();
    let s = with_downstream(kind, &rx);
    let long_key = format!("{}=1", "z".repeat(257));
    let long_tenant = format!("{}@v=1", "t".repeat(242));
    let long_system = format!("t@{}=1", "v".repeat(15));
    let ten = |from: usize| -> String {
        (from..from + 10)
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (l1, l2, l3) = (ten(1), ten(11), ten(21));
    let dropped: Vec<Vec<&str>> = vec![
        vec!["foo=1,foo=2"],
        vec!["foo=1,foo=1"],
        vec!["foo=1", "foo=2"],
        vec!["foo@=1,bar=2"],
        vec!["@foo=1,bar=2"],
        vec!["foo@@bar=1,bar=2"],
        vec!["foo@bar@baz=1,bar=2"],
        vec!["FOO=1,bar=2"],
        vec!["foo.bar=1,bar=2"],
        vec!["foo =1,bar=2"],
        vec!["foo=1", &long_key],
        vec!["foo=1", &long_tenant],
        vec!["foo=1", &long_system],
        vec!["foo=bar=baz"],
        vec!["foo=,bar=3"],
        // 33 members over four lines.
        vec![&l1, &l2, &l3, "bar31=31,bar32=32,bar33=33"],
    ];
    for lines in &dropped {
        let mut headers = vec![("traceparent", PARENT)];
        headers.extend(lines.iter().map(|l| ("tracestate", *l)));
        let ((trace, span, _), call) = through(&s, &rx, &headers);
        assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{lines:?}");
        assert!(
            call.header("tracestate").is_none(),
            "{lines:?} was passed on as {:?}",
            call.header("tracestate")
        );
        assert_eq!(exported(&rx, &span).span.trace_state, "", "{lines:?}");
    }
    // The limits themselves are fine: a 256-character key, a 241@14 tenant
    // key, 32 members.
    let max_key = format!("{}=1", "z".repeat(256));
    let max_tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let kept: Vec<Vec<&str>> = vec![
        vec!["foo=1", &max_key],
        vec!["foo=1", &max_tenant],
        vec![&l1, &l2, &l3, "bar31=31,bar32=32"],
    ];
    for lines in &kept {
        let mut headers = vec![("traceparent", PARENT)];
        headers.extend(lines.iter().map(|l| ("tracestate", *l)));
        let (_, call) = through(&s, &rx, &headers);
        assert_eq!(
            call.header("tracestate"),
            Some(lines.join(",").as_str()),
            "{lines:?}"
        );
    }
}

fn an_invalid_baggage_member_is_dropped_alone(kind: Kind) {
    let rx = OtlpReceiver::start();
    let s = with_downstream(kind, &rx);
    for (lines, want) in [
        (vec!["a b=1,c=2"], Some("c=2")),
        (vec!["c=2", "a b=1"], Some("c=2")),
        (vec!["=1,c=2;prop"], Some("c=2;prop")),
        (vec!["novalue,c=2"], Some("c=2")),
        (vec!["c=2 , d = 3"], Some("c=2,d=3")),
        (vec!["a\"b=1"], None),
    ] {
        let mut headers = vec![("traceparent", PARENT)];
        headers.extend(lines.iter().map(|l| ("baggage", *l)));
        let (_, call) = through(&s, &rx, &headers);
        assert_eq!(call.header("baggage"), want, "{lines:?}");
    }
}
