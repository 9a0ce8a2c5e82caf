//! What the service steers per route: quiet operational routes (no request
//! histogram series, active-request count, span or access line, but a
//! counter of their own) and routes with a body limit or timeout of their
//! own — the same in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{
    duration_series, eventually, raw_request, series_value, Kind, OtlpReceiver, Prometheus, Starter,
};
use std::time::Duration;

opskit_conformance::conformance!(
    probes_and_scrapes_are_quiet_but_counted,
    the_operational_routes_can_be_measured_again,
    an_upload_route_takes_a_body_over_the_global_limit,
    a_route_has_a_timeout_of_its_own,
);

/// The quiet paths the test calls, the excluded ones included.
const QUIET: [&str; 8] = [
    "/livez",
    "/readyz",
    "/readyz/disk",
    "/startupz",
    "/health",
    "/metrics",
    "/favicon.ico",
    "/static/app.js",
];

fn quiet_count(text: &str, route: &str, status: u16) -> Option<f64> {
    series_value(
        text,
        &format!(
            "opskit_quiet_requests_total{{http_route=\"{route}\",http_response_status_code=\"{status}\"}}"
        ),
    )
}

/// 1,000 probe, scrape and excluded requests: no histogram series, no
/// active request, no span, no access line; `opskit_quiet_requests_total`
/// counts them by pattern and status, and a real Prometheus scraping the
/// service sees the same.
fn probes_and_scrapes_are_quiet_but_counted(kind: Kind) {
    let otlp = OtlpReceiver::start();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OPSKIT_TELEMETRY_EXCLUDE", "/favicon.ico,/static/*"),
        ],
    );
    // The harness probed the starter while it started: counted from here.
    let base = s.get("/metrics").unwrap().text();
    let rounds = 1000 / QUIET.len();
    let mut scrape = String::new();
    for _ in 0..rounds {
        for path in QUIET {
            let r = s.get(path).unwrap();
            if path == "/metrics" {
                scrape = r.text();
            }
        }
    }
    // The scrape does not count itself as an active request.
    let active: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("http_server_active_requests{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(active, 0.0, "{scrape}");
    // One measured request after them: its span and access line come after
    // any the quiet ones would have made.
    let r = s
        .request("GET", "/users/7", &[("x-request-id", "after-quiet")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    otlp.wait_for_span(Duration::from_secs(15), |sp| {
        sp.attr("url.path").as_deref() == Some("/users/7")
    })
    .unwrap_or_else(|| panic!("no span for /users/7: {:#?}", otlp.spans()));
    s.expect_json_line("the access line of /users/7", Duration::from_secs(5), |l| {
        l["request_id"] == "after-quiet" && l["message"] == "request completed"
    });
    let spans: Vec<_> = otlp
        .spans()
        .into_iter()
        .filter_map(|sp| sp.attr("url.path"))
        .filter(|p| QUIET.contains(&p.as_str()))
        .collect();
    assert!(spans.is_empty(), "spans of quiet routes: {spans:?}");
    let lines: Vec<_> = s
        .json_lines()
        .into_iter()
        .filter(|l| l["message"] == "request completed")
        .filter(|l| QUIET.iter().any(|q| l["url.path"] == *q))
        .collect();
    assert!(lines.is_empty(), "access lines of quiet routes: {lines:?}");

    let text = s.get("/metrics").unwrap().text();
    let series = duration_series(&text);
    assert_eq!(series.len(), 1, "{series:#?}");
    assert!(
        series
            .iter()
            .all(|l| l.contains(r#"http_route="/users/{id}""#)),
        "{series:#?}"
    );
    let n = rounds as f64;
    let counted = |route: &str, status: u16| {
        let before = quiet_count(&base, route, status).unwrap_or(0.0);
        quiet_count(&text, route, status).map(|after| after - before)
    };
    for (route, status) in [
        ("/livez", 200),
        ("/startupz", 200),
        ("/health", 200),
        ("/favicon.ico", 404),
        ("/static/*", 404),
    ] {
        assert_eq!(counted(route, status), Some(n), "{route}\n{text}");
    }
    // `/readyz` and `/readyz/disk` under the one pattern; `/metrics` with
    // the first scrape.
    assert_eq!(counted("/readyz", 200), Some(2.0 * n), "{text}");
    assert_eq!(counted("/metrics", 200), Some(n + 1.0), "{text}");

    // A real Prometheus, scraping every few hundred ms: its scrapes are
    // quiet too, and it sees only the application's series.
    let prom = Prometheus::start(s.addr, "/metrics");
    let result = |q: &str| prom.query(q).unwrap()["data"]["result"].clone();
    eventually(
        "Prometheus scrapes the quiet counter",
        Duration::from_secs(30),
        || {
            result(r#"opskit_quiet_requests_total{http_route="/metrics"}"#)
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    );
    let histogram = result("count by (http_route) (http_server_request_duration_seconds_count)");
    let routes: Vec<_> = histogram
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["http_route"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(routes, ["/users/{id}"], "{histogram}");
}

/// `OPSKIT_TELEMETRY_OPERATIONAL=true` measures the probes like any route;
/// the application's excluded routes stay quiet.
fn the_operational_routes_can_be_measured_again(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_TELEMETRY_OPERATIONAL", "true"),
            ("OPSKIT_TELEMETRY_EXCLUDE", "/favicon.ico"),
        ],
    );
    for path in ["/readyz", "/livez", "/favicon.ico"] {
        s.get(path).unwrap();
    }
    let text = s.get("/metrics").unwrap().text();
    let series = duration_series(&text);
    for route in ["/readyz", "/livez"] {
        assert!(
            series
                .iter()
                .any(|l| l.contains(&format!("http_route=\"{route}\""))),
            "no {route} series in {series:#?}"
        );
        assert_eq!(quiet_count(&text, route, 200), None, "{text}");
    }
    assert_eq!(quiet_count(&text, "/favicon.ico", 404), Some(1.0), "{text}");
    // The scrape measures itself again.
    assert!(text
        .lines()
        .any(|l| l.starts_with("http_server_active_requests{") && l.ends_with(" 1")));
}

/// The starter's `/upload` route takes 50 MiB (its own limit, set with
/// `Builder::route_limit`) while every other route keeps the global 1 MiB;
/// `OPSKIT_ROUTE_LIMITS` comes before the builder's limits.
fn an_upload_route_takes_a_body_over_the_global_limit(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let big = vec![b'x'; 50 << 20];
    let r = s.request("POST", "/upload", &[], &big).unwrap();
    assert_eq!(
        (r.status, r.json()["bytes"].as_u64()),
        (200, Some(50 << 20)),
        "{}",
        r.text()
    );
    // Answered before the body is read, and the connection closed: the
    // client's write may fail, the answer is still there.
    let mut over = b"POST /demo/echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 2097152\r\n\r\n".to_vec();
    over.resize(over.len() + (2 << 20), b'x');
    let r = raw_request(s.addr, &over).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json()["detail"],
        "the request body is larger than 1048576 bytes"
    );

    let s = Starter::spawn(kind, &[("OPSKIT_ROUTE_LIMITS", "/upload:body=2KiB")]);
    let r = s.request("POST", "/upload", &[], &[b'x'; 4096]).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json()["detail"],
        "the request body is larger than 2048 bytes"
    );
    // Streamed without a length: cut off at the route's limit.
    let chunked = [("transfer-encoding", "chunked")];
    let r = s
        .request("POST", "/upload", &chunked, &[b'x'; 4096])
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    let r = s
        .request("POST", "/upload", &chunked, &[b'x'; 2048])
        .unwrap();
    assert_eq!((r.status, r.json()["bytes"].as_u64()), (200, Some(2048)));
}

/// A route's own timeout, shorter or longer than the global one, with the
/// global timeout's answer.
fn a_route_has_a_timeout_of_its_own(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_ROUTE_LIMITS", "/demo/slow:timeout=300ms")]);
    let r = s.get("/demo/slow?ms=5000").unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["detail"], "the request took longer than 300 ms");
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_REQUEST_TIMEOUT", "300ms"),
            (
                "OPSKIT_ROUTE_LIMITS",
                "/demo/*:timeout=10s;/users/*:body=1KiB",
            ),
        ],
    );
    let r = s.get("/demo/slow?ms=1000").unwrap();
    assert_eq!((r.status, r.json()["slept_ms"].as_u64()), (200, Some(1000)));
}
