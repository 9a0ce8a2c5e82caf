//! OTLP/HTTP metric export from both starters, to a test-side receiver.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{
    eventually_every, free_port, BlackHole, Kind, OtlpReceiver, Post, Rotel, Starter,
};
use serde_json::Value;
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    metrics_are_pushed_as_otlp_json_with_the_resource,
    metrics_are_pushed_as_otlp_protobuf_by_default,
    a_dead_collector_does_not_slow_requests,
    a_real_collector_receives_the_metrics,
    the_last_span_export_gets_the_export_timeout,
);

/// A string attribute of an OTLP/JSON attribute list.
fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

/// The data points of metric `name` in an OTLP/JSON export.
fn points(post: &Post, name: &str) -> Vec<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(&post.body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
        for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                if m["name"] == name {
                    for kind in ["histogram", "sum", "gauge"] {
                        out.extend(
                            m[kind]["dataPoints"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .cloned(),
                        );
                    }
                }
            }
        }
    }
    out
}

fn count(p: &Value) -> u64 {
    match &p["count"] {
        Value::String(s) => s.parse().unwrap_or(0),
        v => v.as_u64().unwrap_or(0),
    }
}

fn metrics_are_pushed_as_otlp_json_with_the_resource(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_SERVICE_NAME", "otlp-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=payments,note=a%2Cb"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k123"),
        ],
    );
    for i in 0..5 {
        assert_eq!(s.get(&format!("/users/{i}")).unwrap().status, 200);
    }
    assert_eq!(s.get("/demo/error").unwrap().status, 500);
    let route_points = |p: &Post| -> Vec<Value> {
        points(p, "http.server.request.duration")
            .into_iter()
            .filter(|d| {
                attr(&d["attributes"], "http.route").map(|v| &v["stringValue"])
                    == Some(&Value::from("/users/{id}"))
            })
            .collect()
    };
    let post = receiver
        .wait_for(Duration::from_secs(15), |p| {
            route_points(p).iter().any(|d| count(d) >= 5)
        })
        .unwrap_or_else(|| {
            panic!(
                "no export with 5 requests to /users/{{id}}: {:?}",
                receiver.posts().len()
            )
        });
    assert_eq!(post.path, "/v1/metrics");
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(post.header("x-api-key"), Some("k123"));
    let d = &route_points(&post)[0];
    let a = &d["attributes"];
    assert_eq!(
        attr(a, "http.request.method").unwrap()["stringValue"],
        "GET"
    );
    assert_eq!(attr(a, "url.scheme").unwrap()["stringValue"], "http");
    let status = &attr(a, "http.response.status_code").unwrap()["intValue"];
    assert!(status == "200" || status == 200, "{status}");
    // The 5xx carries error.type; the resource names the service.
    let errors = points(&post, "http.server.request.duration")
        .into_iter()
        .filter(|d| attr(&d["attributes"], "error.type").is_some())
        .count();
    assert_eq!(errors, 1);
    let body: Value = serde_json::from_slice(&post.body).unwrap();
    let resource = &body["resourceMetrics"][0]["resource"]["attributes"];
    assert_eq!(
        attr(resource, "service.name").unwrap()["stringValue"],
        "otlp-test"
    );
    assert_eq!(attr(resource, "team").unwrap()["stringValue"], "payments");
    assert_eq!(attr(resource, "note").unwrap()["stringValue"], "a,b");
    assert!(
        attr(resource, "service.version").is_some()
            && attr(resource, "deployment.environment.name").is_some()
    );
    assert!(!points(&post, "http.server.active_requests").is_empty());
}

fn metrics_are_pushed_as_otlp_protobuf_by_default(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let mut s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Long interval: what arrives is the export made at shutdown.
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        ],
    );
    assert_eq!(s.get("/users/1").unwrap().status, 200);
    s.signal("TERM");
    assert!(s
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|st| st.success()));
    let post = receiver
        .wait_for(Duration::from_secs(5), |p| p.path == "/v1/metrics")
        .expect("the final export at shutdown");
    assert_eq!(post.header("content-type"), Some("application/x-protobuf"));
    let has = |needle: &[u8]| post.body.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"http.server.request.duration") && has(b"/users/{id}"));
}

/// Export timeout of the dead-collector cases: what one request would wait
/// if it waited for an export to a collector that never answers.
const EXPORT_TIMEOUT_MS: u64 = 6000;

/// Half the export timeout: far above a request's few milliseconds (even on
/// a loaded machine), far below what waiting for one export costs.
const REQUEST_BOUND: Duration = Duration::from_millis(EXPORT_TIMEOUT_MS / 2);

/// Starts `kind` exporting metrics and spans to `endpoint` every 100 ms and
/// sends 200 requests, each of which must finish within [`REQUEST_BOUND`].
/// Each export to a black hole takes the whole export timeout: a request
/// that waited for one would take that long.
fn two_hundred_prompt_requests(kind: Kind, endpoint: &str, name: &str) -> Starter {
    let timeout = EXPORT_TIMEOUT_MS.to_string();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", timeout.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    for i in 0..200 {
        let t = Instant::now();
        assert_eq!(s.get(&format!("/users/{i}")).unwrap().status, 200);
        let took = t.elapsed();
        assert!(
            took < REQUEST_BOUND,
            "{name}: request {i} took {took:?}: it waited for an export"
        );
    }
    assert_eq!(s.get("/livez").unwrap().status, 200);
    s
}

fn a_dead_collector_does_not_slow_requests(kind: Kind) {
    // Accepts, never answers: every export waits for its timeout.
    let hole = BlackHole::start();
    let mut s = two_hundred_prompt_requests(kind, &hole.url(), "black hole");
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(60));
    assert!(status.is_some_and(|st| st.success()), "{status:?}");

    // Nothing listens there: every export fails (connection refused).
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut s = two_hundred_prompt_requests(kind, &dead, "refused");
    // The failures are counted and logged (once, not per export).
    let failed = || -> f64 {
        let text = s.get("/metrics").unwrap().text();
        text.lines()
            .find(|l| {
                l.starts_with("opskit_otlp_exports_total{") && l.contains(r#"outcome="failed""#)
            })
            .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or(0.0)
    };
    eventually_every(
        "three failed exports counted",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let n = failed();
            if n >= 3.0 {
                Ok(())
            } else {
                Err(n)
            }
        },
    );
    let warnings = s
        .output()
        .iter()
        .filter(|l| l.contains("OTLP export failed") && l.contains(r#""signal":"metrics""#))
        .count();
    assert_eq!(warnings, 1, "{:#?}", s.output());
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(status.is_some_and(|st| st.success()), "{status:?}");
}

fn a_real_collector_receives_the_metrics(kind: Kind) {
    let collector = Rotel::start("metrics");
    let endpoint = collector.endpoint();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_SERVICE_NAME", "rotel-test"),
        ],
    );
    assert_eq!(s.get("/users/42").unwrap().status, 200);
    let seen = collector.wait_for(
        Duration::from_secs(15),
        &[
            "Name: http.server.request.duration",
            "http.route: Str(/users/{id})",
            "Name: http.server.active_requests",
            "service.name: Str(rotel-test)",
        ],
    );
    assert!(seen, "rotel printed:\n{}", collector.output());
}

/// The last span export at shutdown waits for the configured export timeout
/// (as docs/health.md's shutdown budget says), not the SDK's fixed 5 s: a
/// collector that holds each export for 8 s, with a 15 s timeout, gets the
/// spans of the last moments, and none is logged as lost. (The SDK's metric
/// reader waits 5 s whatever it is told; the budget counts that.)
fn the_last_span_export_gets_the_export_timeout(kind: Kind) {
    let slow = OtlpReceiver::start_slow();
    let endpoint = slow.endpoint();
    let mut s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "15000"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OPSKIT_SHUTDOWN_DELAY", "0"),
        ],
    );
    assert_eq!(s.get("/users/1").unwrap().status, 200);
    // The span's export is under way: the collector holds it for 8 s, so
    // the last export at shutdown waits behind it.
    let traces = slow.wait_for(Duration::from_secs(10), |p| p.path == "/v1/traces");
    assert!(traces.is_some(), "no span export began");
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(60));
    assert!(status.is_some_and(|st| st.success()), "{status:?}");
    let lost: Vec<String> = s
        .output()
        .into_iter()
        .filter(|l| l.contains("the last OTLP span export failed"))
        .collect();
    assert!(
        lost.is_empty(),
        "the last span export was cut short: {lost:?}"
    );
}
