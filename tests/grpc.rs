//! gRPC through opskit, against examples/tonic-starter, with clients no one
//! here wrote: Python's grpcio for the calls and grpcio-health-checking for
//! grpc.health.v1; a real Prometheus scrapes the metrics, spans go to an
//! OTLP receiver, error reports to Bugsink.

use opskit_conformance::grpc::grpc_spawn;
use opskit_conformance::{
    eventually_every, grpc_call, Bugsink, Kind, OtlpReceiver, Prometheus, Starter,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::Duration;

fn code(out: &[Value]) -> &str {
    out.last()
        .and_then(|v| v["code"].as_str())
        .unwrap_or("none")
}

/// OK, NOT_FOUND, INTERNAL, a panic, a deadline set by the client and an
/// unknown method: the right status at the client, the right series in a
/// real Prometheus's scrape, and none of them in the HTTP histograms.
#[test]
fn calls_end_with_their_status_at_the_client_and_in_prometheus() {
    let s = Starter::spawn(Kind::Tonic, &[]);
    let prom = Prometheus::start(s.addr, "/metrics");
    let calls: [(&[&str], &str); 6] = [
        (&["get-user", "7"], "OK"),
        (&["get-user", "9"], "NOT_FOUND"),
        (&["fail"], "INTERNAL"),
        (&["panic"], "INTERNAL"),
        (&["sleep", "5000", "0.5"], "DEADLINE_EXCEEDED"),
        (&["nope"], "UNIMPLEMENTED"),
    ];
    for (args, want) in calls {
        let out = grpc_call(s.addr, args);
        assert_eq!(code(&out), want, "{args:?}: {out:?}");
    }
    // The panic's detail stays in the logs; the client gets opskit's message.
    let panic = grpc_call(s.addr, &["panic"]);
    assert!(
        !panic[0]["details"]
            .as_str()
            .unwrap_or("")
            .contains("was called"),
        "{panic:?}"
    );
    let want: BTreeSet<(String, String)> = [
        ("users.v1.Users/GetUser", "OK"),
        ("users.v1.Users/GetUser", "NOT_FOUND"),
        ("users.v1.Users/Fail", "INTERNAL"),
        ("users.v1.Users/Panic", "INTERNAL"),
        ("users.v1.Users/Sleep", "DEADLINE_EXCEEDED"),
        ("_OTHER", "UNIMPLEMENTED"),
    ]
    .iter()
    .map(|(m, c)| (m.to_string(), c.to_string()))
    .collect();
    let q = r#"sum by (rpc_method, rpc_response_status_code) (rpc_server_call_duration_seconds_count{rpc_system_name="grpc", rpc_method!~"grpc.health.*"})"#;
    let seen = eventually_every(
        "Prometheus scrapes every call's series",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let v = prom.query(q).map_err(|e| e.to_string())?;
            let seen: BTreeSet<(String, String)> = v["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let m = &r["metric"];
                    (
                        m["rpc_method"].as_str().unwrap_or("").to_owned(),
                        m["rpc_response_status_code"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                    )
                })
                .collect();
            if seen == want {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    assert_eq!(seen, want);
    // Server errors carry error_type; a NOT_FOUND does not.
    let errors = prom
        .query(r#"count(rpc_server_call_duration_seconds_count{error_type!=""})"#)
        .unwrap();
    assert_eq!(errors["data"]["result"][0]["value"][1], "4", "{errors}");
    // Counted once: gRPC calls are not HTTP requests in the histograms.
    let http = prom
        .query(r#"http_server_request_duration_seconds_count{http_route=~"/users.v1.*|/grpc.*"}"#)
        .unwrap();
    assert_eq!(http["data"]["result"], Value::Array(vec![]), "{http}");
    // The access line of a failed call names its gRPC status.
    let line = s.expect_json_line("the Fail call's access line", Duration::from_secs(5), |v| {
        v["rpc.method"] == "users.v1.Users/Fail"
    });
    assert_eq!(line["rpc.grpc.status_code"], 13);
    assert_eq!(line["rpc.response.status_code"], "INTERNAL");
    assert_eq!(
        line["rpc.grpc.status_message"],
        "the users database is unreachable"
    );
    assert_eq!(line["level"], "ERROR");
}

/// A rate-limited call is RESOURCE_EXHAUSTED, Trailers-Only, with the
/// RateLimit fields kept as metadata.
#[test]
fn a_rate_limited_call_is_resource_exhausted_with_its_ratelimit_fields() {
    let s = Starter::spawn(Kind::Tonic, &[("OPSKIT_RATE_LIMIT", "2/1m")]);
    let codes: Vec<String> = (0..3)
        .map(|_| {
            let out = grpc_call(s.addr, &["get-user", "7"]);
            if code(&out) != "OK" {
                let md = &out[0]["metadata"];
                assert!(md["ratelimit-policy"].is_string(), "{out:?}");
                assert!(md["retry-after"].is_string(), "{out:?}");
            }
            code(&out).to_owned()
        })
        .collect();
    assert_eq!(codes, ["OK", "OK", "RESOURCE_EXHAUSTED"]);
    let metrics = s.get("/metrics").unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            r#"rpc_method="users.v1.Users/GetUser",rpc_response_status_code="RESOURCE_EXHAUSTED"}"#
        ),
        "{text}"
    );
}

/// A call the client cancels mid-stream is CANCELLED, and the service
/// answers the next call.
#[test]
fn a_call_cancelled_mid_stream_is_cancelled_and_the_service_stays_healthy() {
    let s = Starter::spawn(Kind::Tonic, &[]);
    let out = grpc_call(s.addr, &["cancel-stream"]);
    assert_eq!(code(&out), "CANCELLED", "{out:?}");
    assert!(
        !out[0]["reply"].as_str().unwrap_or("").is_empty(),
        "one user came first"
    );
    let line = s.expect_json_line("the stream's access line", Duration::from_secs(5), |v| {
        v["rpc.method"] == "users.v1.Users/ListUsers"
    });
    assert_eq!(line["rpc.response.status_code"], "CANCELLED", "{line}");
    assert_eq!(line["message"], "call cancelled by the client");
    assert_eq!(code(&grpc_call(s.addr, &["get-user", "42"])), "OK");
    assert_eq!(s.get("/readyz").unwrap().status, 200);
}

/// Spans arrive with the rpc attributes, named package.Service/Method, with
/// status Error for INTERNAL and unset for NOT_FOUND.
#[test]
fn spans_carry_the_rpc_attributes_and_status() {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let s = Starter::spawn(
        Kind::Tonic,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert_eq!(code(&grpc_call(s.addr, &["fail"])), "INTERNAL");
    assert_eq!(code(&grpc_call(s.addr, &["get-user", "9"])), "NOT_FOUND");
    let fail = receiver
        .wait_for_span(Duration::from_secs(10), |sp| {
            sp.span.name == "users.v1.Users/Fail"
        })
        .expect("the Fail span");
    assert_eq!(fail.attr("rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(
        fail.attr("rpc.method").as_deref(),
        Some("users.v1.Users/Fail")
    );
    assert_eq!(
        fail.attr("rpc.response.status_code").as_deref(),
        Some("INTERNAL")
    );
    assert_eq!(fail.attr("error.type").as_deref(), Some("INTERNAL"));
    let status = fail.span.status.clone().expect("a status");
    assert_eq!(status.code, 2, "Error: {status:?}");
    assert_eq!(status.message, "the users database is unreachable");
    let not_found = receiver
        .wait_for_span(Duration::from_secs(10), |sp| {
            sp.span.name == "users.v1.Users/GetUser"
        })
        .expect("the GetUser span");
    assert_eq!(
        not_found.attr("rpc.response.status_code").as_deref(),
        Some("NOT_FOUND")
    );
    assert_eq!(not_found.attr("error.type"), None);
    assert_ne!(
        not_found.span.status.map(|s| s.code),
        Some(2),
        "NOT_FOUND is not a server error"
    );
}

/// INTERNAL and a panic are reported to Bugsink; NOT_FOUND is not.
#[test]
fn internal_and_panics_reach_bugsink_and_not_found_does_not() {
    let bugsink = Bugsink::start();
    let mut s = Starter::spawn(
        Kind::Tonic,
        &[
            ("SENTRY_DSN", &bugsink.dsn),
            ("OPSKIT_SENTRY_TIMEOUT", "30s"),
        ],
    );
    assert_eq!(code(&grpc_call(s.addr, &["get-user", "9"])), "NOT_FOUND");
    assert_eq!(code(&grpc_call(s.addr, &["fail"])), "INTERNAL");
    assert_eq!(code(&grpc_call(s.addr, &["panic"])), "INTERNAL");
    s.signal("TERM"); // flushes on the way out
    assert_eq!(
        s.wait_exit(Duration::from_secs(60)).unwrap().code(),
        Some(0)
    );
    let stored = eventually_every(
        "Bugsink stores both events",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let stored = bugsink.events();
            match stored.len() {
                2.. => Ok(stored),
                _ => Err(stored.len()),
            }
        },
    );
    let text = serde_json::to_string(&stored).unwrap();
    assert!(text.contains("users.v1.Users/Fail"), "{text}");
    assert!(text.contains("users.v1.Users/Panic was called"), "{text}");
    assert!(!text.contains("users.v1.Users/GetUser"), "{text}");
    assert_eq!(stored.len(), 2, "{text}");
}

/// grpc.health.v1: Check is SERVING, NOT_SERVING after SIGTERM while an
/// in-flight call still finishes, and Watch sees the change.
#[test]
fn health_flips_to_not_serving_on_sigterm_and_watch_sees_it() {
    let mut s = Starter::spawn(Kind::Tonic, &[("OPSKIT_SHUTDOWN_DELAY", "2s")]);
    // Ready once the server has started (the states follow /readyz within
    // opskit::grpc_health::REFRESH).
    eventually_every(
        "Check says SERVING",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || match grpc_call(s.addr, &["health-check"]).remove(0) {
            v if v["status"] == "SERVING" => Ok(()),
            v => Err(v),
        },
    );
    let unknown = grpc_call(s.addr, &["health-check", "nosuch"]);
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown:?}");
    let mut watch = grpc_spawn(s.addr, &["health-watch", "20"]);
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first: Value = serde_json::from_str(&lines.next().expect("a status").unwrap()).unwrap();
    assert_eq!(first["status"], "SERVING");
    // A call in flight across the signal.
    let slow = std::thread::spawn({
        let addr = s.addr;
        move || grpc_call(addr, &["sleep", "1500"])
    });
    // The watch stream and the slow call.
    s.expect_in_flight(2);
    s.signal("TERM");
    let next: Value = serde_json::from_str(&lines.next().expect("a change").unwrap()).unwrap();
    assert_eq!(next["status"], "NOT_SERVING", "{next}");
    let check = grpc_call(s.addr, &["health-check"]);
    assert_eq!(check[0]["status"], "NOT_SERVING", "{check:?}");
    assert_eq!(s.get("/readyz").unwrap().status, 503);
    assert_eq!(
        code(&slow.join().unwrap()),
        "OK",
        "the in-flight call finished"
    );
    let _ = watch.wait();
    assert_eq!(
        s.wait_exit(Duration::from_secs(30)).unwrap().code(),
        Some(0)
    );
}

/// A call still running at the shutdown deadline is answered UNAVAILABLE
/// (retryable: the client tries another instance) before the connection
/// closes, and logged as cut by the server.
#[test]
fn a_call_still_running_at_the_shutdown_deadline_is_unavailable() {
    let mut s = Starter::spawn(
        Kind::Tonic,
        &[
            ("OPSKIT_SHUTDOWN_DELAY", "0"),
            ("OPSKIT_SHUTDOWN_TIMEOUT", "1s"),
        ],
    );
    let slow = std::thread::spawn({
        let addr = s.addr;
        move || grpc_call(addr, &["sleep", "8000"])
    });
    s.expect_in_flight(1);
    s.signal("TERM");
    let out = slow.join().unwrap();
    assert_eq!(code(&out), "UNAVAILABLE", "{out:?}");
    assert_eq!(
        out.last().unwrap()["details"],
        "the service is shutting down; retry the request"
    );
    assert_eq!(
        s.wait_exit(Duration::from_secs(15)).unwrap().code(),
        Some(0)
    );
    let line = s.expect_json_line("the cut call's access line", Duration::from_secs(1), |v| {
        v["rpc.method"] == "users.v1.Users/Sleep"
    });
    assert_eq!(line["message"], "request cut at the shutdown deadline");
    assert_eq!(line["rpc.grpc.status_code"], 14);
    assert_eq!(line["error.type"], "shutdown");
}
