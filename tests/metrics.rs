//! Request metrics: names, labels, bounded series, `/metrics` checked by
//! promtool and scraped by a real Prometheus — identical in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{
    duration_series, eventually_every, free_port, pipelined_gets, promtool_check_metrics, request,
    series_value, Kind, OtlpReceiver, Prometheus, Redis, SentryReceiver, Starter,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    metrics_are_named_labelled_and_lint_clean,
    a_flood_of_unknown_paths_and_methods_adds_no_series,
    the_token_protects_metrics,
    metrics_can_have_a_port_of_their_own,
    a_real_prometheus_computes_p95_and_the_error_rate,
    every_opskit_counter_is_described_and_present_from_start_up,
    custom_duration_buckets_replace_the_default_ones,
    a_timed_out_request_has_error_type_timeout,
    a_request_the_client_left_is_aborted_499,
    an_application_recorder_installed_first_gets_the_metrics,
);

fn metrics_are_named_labelled_and_lint_clean(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    for path in [
        "/users/1",
        "/users/2",
        "/users/x",
        "/demo/error",
        "/demo/panic",
        "/nowhere",
    ] {
        s.get(path).unwrap();
    }
    s.request("BREW", "/users/1", &[], b"").unwrap();
    let r = s.get("/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let series = duration_series(&text);
    let expect = [
        r#"http_request_method="GET",url_scheme="http",http_route="/users/{id}",http_response_status_code="200""#,
        r#"http_request_method="GET",url_scheme="http",http_route="/users/{id}",http_response_status_code="400""#,
        r#"http_route="/demo/error",http_response_status_code="500",error_type="500""#,
        r#"http_route="/demo/panic",http_response_status_code="500",error_type="panic""#,
        r#"http_request_method="GET",url_scheme="http",http_response_status_code="404"}"#,
        r#"http_request_method="_OTHER""#,
    ];
    for e in expect {
        assert!(
            series.iter().any(|s| s.contains(e)),
            "no series with {e} in {series:#?}"
        );
    }
    // The buckets are OpenTelemetry's.
    assert!(
        text.contains(r#"http_route="/users/{id}",http_response_status_code="200",le="0.005"}"#)
    );
    assert!(text.contains(r#"le="10"}"#));
    for name in [
        "http_server_active_requests{",
        "http_server_response_body_size_bytes_bucket{",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "process_threads ",
        "opskit_build_info{",
        "opskit_log_lines_dropped_total ",
        "app_users_looked_up_total 2",
    ] {
        assert!(text.contains(name), "no {name} in\n{text}");
    }
}

/// The process's resident memory (`VmRSS` in `/proc/<pid>/status`), in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib * 1024
}

/// Growth allowed over the flood: generous (about 0.5 MiB is measured;
/// allocator arenas and buffers settle in the first megabytes), far below
/// what keeping anything per request or per path would cost (100,000
/// paths: 10 MB at 100 bytes each).
const FLOOD_RSS_BOUND: u64 = 8 << 20;

/// The series cap in the flood test: low, so that the test can pass it.
const MAX_SERIES: usize = 10;

fn a_flood_of_unknown_paths_and_methods_adds_no_series(kind: Kind) {
    // Access log off: this test is about metrics, and 100,000 warn lines
    // through the harness's pipes would only slow it down.
    let cap = MAX_SERIES.to_string();
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_ACCESS_LOG", "false"),
            ("OPSKIT_METRICS_MAX_SERIES", cap.as_str()),
        ],
    );
    s.get("/nowhere").unwrap();
    s.request("BREW", "/users/1", &[], b"").unwrap();
    s.get("/metrics").unwrap(); // the scrape's own series exists from here on
    let before = duration_series(&s.get("/metrics").unwrap().text());
    assert!(before.len() < MAX_SERIES, "{before:#?}");
    let rss_before = resident_bytes(s.pid());
    let t = Instant::now();
    let paths: Vec<String> = (0..100_000)
        .map(|i| format!("/random/{i}/{}", i * 7919))
        .collect();
    let statuses = pipelined_gets(s.addr, "GET", &paths).unwrap();
    assert_eq!(statuses.len(), 100_000);
    assert!(statuses.iter().all(|&st| st == 404));
    for i in 0..200 {
        s.request(&format!("X-ODD-{i}"), "/users/1", &[], b"")
            .unwrap();
    }
    let took = t.elapsed();
    let rss_after = resident_bytes(s.pid());
    let text = s.get("/metrics").unwrap().text();
    let after = duration_series(&text);
    let added: Vec<_> = after.difference(&before).collect();
    eprintln!(
        "{kind:?}: 100,000 unknown paths + 200 odd methods in {took:?}: {} series before, {} after, RSS {:.1} → {:.1} MiB",
        before.len(),
        after.len(),
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );
    assert!(
        rss_after.saturating_sub(rss_before) < FLOOD_RSS_BOUND,
        "resident memory grew by {} KiB over the flood",
        rss_after.saturating_sub(rss_before) >> 10
    );
    assert!(added.is_empty(), "the flood added series: {added:#?}");
    assert_eq!(
        series_value(&text, "opskit_metrics_overflow_total"),
        Some(0.0)
    );

    // Past the cap: requests of new label sets (method, route, status,
    // error) beyond it share the overflow series and are counted.
    let new_sets: [(&str, &str); 13] = [
        ("GET", "/"),
        ("GET", "/users/1"),
        ("GET", "/users/x"),
        ("GET", "/demo/error"),
        ("GET", "/demo/page"),
        ("GET", "/demo/embed"),
        ("GET", "/demo/legacy"),
        ("GET", "/demo/slow?ms=1"),
        ("POST", "/demo/echo"),
        ("PUT", "/nowhere"),
        ("DELETE", "/nowhere"),
        ("PATCH", "/nowhere"),
        ("POST", "/nowhere"),
    ];
    for (method, path) in new_sets {
        s.request(method, path, &[], b"").unwrap();
    }
    let overflowed = (before.len() + new_sets.len() - MAX_SERIES) as f64;
    let text = s.get("/metrics").unwrap().text();
    let after = duration_series(&text);
    let (overflow, kept): (Vec<_>, Vec<_>) = after
        .iter()
        .partition(|l| l.contains(r#"otel_metric_overflow="true""#));
    assert_eq!(kept.len(), MAX_SERIES, "{after:#?}");
    assert_eq!(overflow.len(), 1, "{after:#?}");
    assert_eq!(
        series_value(&text, overflow[0]),
        Some(overflowed),
        "requests in the overflow series:\n{text}"
    );
    assert_eq!(
        series_value(&text, "opskit_metrics_overflow_total"),
        Some(overflowed),
        "{text}"
    );
}

fn the_token_protects_metrics(kind: Kind) {
    let token = "scrape-token-0123456789";
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_METRICS_TOKEN", token),
            ("OPSKIT_METRICS_PATH", "/internal/metrics"),
        ],
    );
    let denied = s.get("/internal/metrics").unwrap();
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    let wrong = s
        .request(
            "GET",
            "/internal/metrics",
            &[("authorization", "Bearer nope")],
            b"",
        )
        .unwrap();
    assert_eq!(wrong.status, 401);
    // Scrapes are quiet: one application request makes the histogram.
    assert_eq!(s.get("/users/1").unwrap().status, 200);
    let ok = s
        .request(
            "GET",
            "/internal/metrics",
            &[("authorization", &format!("Bearer {token}"))],
            b"",
        )
        .unwrap();
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("http_server_request_duration_seconds"));
    assert_eq!(s.get("/metrics").unwrap().status, 404);
    // Metrics off: no endpoint.
    let s = Starter::spawn(kind, &[("OPSKIT_METRICS", "false")]);
    assert_eq!(s.get("/metrics").unwrap().status, 404);
}

fn metrics_can_have_a_port_of_their_own(kind: Kind) {
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let token = "scrape-token-0123456789";
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_METRICS_ADDR", &addr.to_string()),
            ("OPSKIT_METRICS_TOKEN", token),
        ],
    );
    s.get("/users/1").unwrap();
    // Not on the application's port any more ...
    assert_eq!(s.get("/metrics").unwrap().status, 404);
    // ... but on its own, with the same token rule and challenge.
    let denied = request(addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    let auth = format!("Bearer {token}");
    let r = request(addr, "GET", "/metrics", &[("authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(r.text().contains(r#"http_route="/users/{id}""#));
    promtool_check_metrics(&r.text()).unwrap();
    assert_eq!(
        request(addr, "GET", "/other", &[("authorization", &auth)], b"")
            .unwrap()
            .status,
        404
    );
    // RFC 9110 §15.5.6: a 405 names the methods that are allowed.
    let post = request(addr, "POST", "/metrics", &[], b"").unwrap();
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
    // A port that is taken: a clear error and exit 70.
    let (status, _, err) = opskit_conformance::run_to_exit(
        kind,
        &[("OPSKIT_METRICS_ADDR", &s.addr.to_string())],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(opskit::EXIT_SOFTWARE), "{err}");
    assert!(err.contains("cannot listen for metrics on"), "{err}");
}

fn a_real_prometheus_computes_p95_and_the_error_rate(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let prom = Prometheus::start(s.addr, "/metrics");
    let traffic = |slow: usize, fast: usize, errors: usize| {
        std::thread::scope(|scope| {
            for _ in 0..slow {
                scope.spawn(|| assert_eq!(s.get("/demo/slow?ms=300").unwrap().status, 200));
            }
            for i in 0..fast {
                assert_eq!(s.get(&format!("/users/{i}")).unwrap().status, 200);
            }
            for _ in 0..errors {
                assert_eq!(s.get("/demo/error").unwrap().status, 500);
            }
        });
    };
    let value = |q: &str| -> f64 {
        let v = prom.query(q).unwrap();
        let result = &v["data"]["result"];
        assert_eq!(result.as_array().map(Vec::len), Some(1), "{q}: {v}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    // Waits until Prometheus has scraped `n` requests of the routes.
    let scraped = |n: f64| {
        let q =
            r#"sum(http_server_request_duration_seconds_count{http_route=~"/demo/.*|/users/.*"})"#;
        eventually_every(
            &format!("Prometheus scrapes {n} requests"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let v = prom.query(q).unwrap();
                let seen = v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|x| x.parse::<f64>().ok());
                if seen.is_some_and(|seen| seen >= n) {
                    Ok(())
                } else {
                    Err(v)
                }
            },
        );
    };
    // First the series appear and get scraped, then the measured traffic:
    // rate() sees only increases between two scrapes.
    traffic(1, 1, 1);
    scraped(3.0);
    traffic(20, 60, 20);
    scraped(103.0);
    let p95 = |route: &str| {
        value(&format!(
            r#"histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{{http_route="{route}"}}[1m])))"#
        ))
    };
    let slow = p95("/demo/slow");
    assert!((0.25..=0.5).contains(&slow), "p95 of /demo/slow: {slow}");
    let fast = p95("/users/{id}");
    assert!(fast < 0.1, "p95 of /users/{{id}}: {fast}");
    let error_rate = value(
        r#"sum(rate(http_server_request_duration_seconds_count{http_response_status_code=~"5.."}[1m])) / sum(rate(http_server_request_duration_seconds_count{http_route=~"/demo/.*|/users/.*"}[1m]))"#,
    );
    // 20 errors out of 100 requests.
    assert!(
        (0.1..=0.3).contains(&error_rate),
        "error rate: {error_rate}"
    );
    // Every query of the Grafana dashboard is valid PromQL and, but for the
    // rate limiter's (its metric comes with rate limiting), finds data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/grafana/opskit-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let q = expr.replace("$__rate_interval", "1m").replace("$job", ".*");
            let v = prom.query(&q).unwrap();
            assert_eq!(v["status"], "success", "{expr}: {v}");
            let found = v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            assert!(
                found || expr.contains("opskit_rate_limit") || expr.contains("overflow"),
                "no data for {expr}"
            );
        }
    }
}

/// The alert rules load and behave as their unit tests say.
#[test]
fn alert_rules_pass_promtool() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run promtool (scripts/test installs Debian's prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `le` values of the request-duration histogram of `route`.
fn duration_buckets(text: &str, route: &str) -> Vec<String> {
    let needle = format!(r#"http_route="{route}""#);
    text.lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_bucket{"))
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let le = l.split(r#"le=""#).nth(1)?;
            Some(le.split('"').next()?.to_owned())
        })
        .collect()
}

/// `OPSKIT_METRICS_BUCKETS` replaces OpenTelemetry's buckets of the duration
/// histogram with exactly the listed ones (and `+Inf`).
fn custom_duration_buckets_replace_the_default_ones(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_METRICS_BUCKETS", "0.1,0.25,2")]);
    assert_eq!(s.get("/demo/slow?ms=300").unwrap().status, 200);
    let text = s.get("/metrics").unwrap().text();
    assert_eq!(
        duration_buckets(&text, "/demo/slow"),
        ["0.1", "0.25", "2", "+Inf"],
        "{text}"
    );
    // It slept 300 ms: not in the buckets below that.
    let below = |le: &str| {
        series_value(
            &text,
            &format!(
                r#"http_server_request_duration_seconds_bucket{{http_request_method="GET",url_scheme="http",http_route="/demo/slow",http_response_status_code="200",le="{le}"}}"#
            ),
        )
    };
    assert_eq!(
        (below("0.1"), below("0.25")),
        (Some(0.0), Some(0.0)),
        "{text}"
    );
    assert_eq!(below("+Inf"), Some(1.0), "{text}");
    // The body-size histograms keep their own buckets.
    assert!(
        text.contains(r#"http_server_response_body_size_bytes_bucket{"#)
            && text.contains(r#"le="64"}"#)
    );
}

/// A request cut off by `OPSKIT_REQUEST_TIMEOUT` is recorded with its route,
/// the timeout status and `error_type="timeout"`.
fn a_timed_out_request_has_error_type_timeout(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_REQUEST_TIMEOUT", "200ms")]);
    assert_eq!(s.get("/demo/slow?ms=5000").unwrap().status, 504);
    let text = s.get("/metrics").unwrap().text();
    let series = duration_series(&text);
    let want = r#"{http_request_method="GET",url_scheme="http",http_route="/demo/slow",http_response_status_code="504",error_type="timeout"}"#;
    assert!(
        series.contains(&format!("http_server_request_duration_seconds_count{want}")),
        "{series:#?}"
    );
}

/// A client that leaves before the answer: the request is recorded with
/// `error_type="aborted"` and no status label, and logged once with 499.
fn a_request_the_client_left_is_aborted_499(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let pending = opskit_conformance::send(
        s.addr,
        b"GET /demo/slow?ms=30000 HTTP/1.1\r\nHost: x\r\nx-request-id: gone-1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    s.expect_in_flight(1);
    drop(pending);
    let want = r#"http_server_request_duration_seconds_count{http_request_method="GET",url_scheme="http",http_route="/demo/slow",error_type="aborted"}"#;
    eventually_every(
        "an aborted request in the metrics",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let text = s.get("/metrics").unwrap().text();
            if series_value(&text, want) == Some(1.0) {
                Ok(())
            } else {
                Err(duration_series(&text))
            }
        },
    );
    let line = s.expect_json_line("access line of gone-1", Duration::from_secs(10), |v| {
        v["target"] == "opskit::access" && v["request_id"] == "gone-1"
    });
    assert_eq!(line["message"], "request aborted by the client");
    assert_eq!(line["http.response.status_code"], 499);
    assert_eq!(line["http.route"], "/demo/slow");
    assert_eq!(
        s.json_lines()
            .iter()
            .filter(|v| v["target"] == "opskit::access" && v["request_id"] == "gone-1")
            .count(),
        1
    );
}

/// An application that installed its own `metrics` recorder before `init`
/// (the starter's `APP_DEMO_OWN_RECORDER` hook, rendered at
/// `/demo/own-metrics`): opskit logs a warning, records its metrics into
/// that recorder, and serves no `/metrics`.
fn an_application_recorder_installed_first_gets_the_metrics(kind: Kind) {
    let s = Starter::spawn(kind, &[("APP_DEMO_OWN_RECORDER", "true")]);
    let warning = s.expect_json_line("the warning", Duration::from_secs(5), |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cannot install the Prometheus recorder"))
    });
    assert_eq!(warning["level"], "WARN", "{warning}");
    let r = s.get("/metrics").unwrap();
    assert_eq!(r.status, 404, "opskit serves no /metrics: {}", r.text());
    assert_eq!(s.get("/users/7").unwrap().status, 200);
    // The request is recorded when its response is sent: wait for it.
    let own = eventually_every(
        "the request in the application's recorder",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let text = s.get("/demo/own-metrics").unwrap().text();
            let recorded = text.lines().any(|l| {
                l.starts_with("http_server_request_duration_seconds_count{")
                    && l.contains(r#"http_route="/users/{id}""#)
                    && l.ends_with(" 1")
            });
            if recorded {
                Ok(text)
            } else {
                Err(text)
            }
        },
    );
    assert_eq!(
        series_value(&own, "app_users_looked_up_total"),
        Some(1.0),
        "{own}"
    );
    assert!(
        own.lines().any(|l| l.starts_with("opskit_build_info{")),
        "{own}"
    );
    // The control: without the hook, opskit's exporter is the recorder.
    let plain = Starter::spawn(kind, &[]);
    assert_eq!(plain.get("/demo/own-metrics").unwrap().status, 404);
    assert_eq!(plain.get("/metrics").unwrap().status, 200);
}

/// With every optional part on (OTLP export, Sentry, a Redis-backed rate
/// limit), `/metrics` passes `promtool check metrics` from the first scrape
/// on and after traffic; every opskit family has HELP and TYPE lines; every
/// opskit counter is there at start-up, at 0 where nothing happened yet.
fn every_opskit_counter_is_described_and_present_from_start_up(kind: Kind) {
    let otlp = OtlpReceiver::start();
    let sentry = SentryReceiver::start();
    let redis = Redis::start();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("SENTRY_DSN", &sentry.dsn()),
            ("OPSKIT_RATE_LIMIT", "1000/1m"),
            ("OPSKIT_RATE_LIMIT_ROUTES", "/users/*=500/1m"),
            ("OPSKIT_RATE_LIMIT_REDIS_URL", &redis.url()),
        ],
    );
    let first = s.get("/metrics").unwrap().text();
    promtool_check_metrics(&first).unwrap_or_else(|e| panic!("promtool: {e}\n{first}"));
    let zero = [
        "opskit_otlp_spans_dropped_total{reason=\"queue_full\"}",
        "opskit_otlp_spans_dropped_total{reason=\"export_failed\"}",
        "opskit_otlp_exports_total{signal=\"traces\",outcome=\"failed\"}",
        "opskit_otlp_exports_total{signal=\"metrics\",outcome=\"failed\"}",
        "opskit_error_reports_total{outcome=\"sent\"}",
        "opskit_error_reports_total{outcome=\"failed\"}",
        "opskit_error_reports_total{outcome=\"dropped\"}",
        "opskit_log_lines_dropped_total",
        "opskit_metrics_overflow_total",
        "opskit_rate_limit_decisions_total{policy=\"default\",decision=\"rejected\"}",
        "opskit_rate_limit_decisions_total{policy=\"/users/*\",decision=\"rejected\"}",
        "opskit_rate_limit_decisions_total{policy=\"/users/*\",decision=\"allowed_store_failed\"}",
    ];
    // Counted as they happen (an export may already have run): present is enough.
    let present = [
        "opskit_otlp_spans_exported_total",
        "opskit_otlp_exports_total{signal=\"traces\",outcome=\"sent\"}",
        "opskit_otlp_exports_total{signal=\"metrics\",outcome=\"sent\"}",
        "opskit_rate_limit_decisions_total{policy=\"/users/*\",decision=\"allowed\"}",
    ];
    for series in zero {
        assert_eq!(
            series_value(&first, series),
            Some(0.0),
            "{series} in\n{first}"
        );
    }
    for series in present {
        assert!(
            series_value(&first, series).is_some(),
            "no {series} in\n{first}"
        );
    }

    // Traffic, an error report and span exports: still lint-clean, and
    // every opskit family (and the HTTP ones) is described.
    for path in ["/users/1", "/users/2", "/demo/error", "/nowhere"] {
        s.get(path).unwrap();
    }
    assert!(!sentry
        .wait_for_events(1, Duration::from_secs(10))
        .is_empty());
    assert!(otlp
        .wait_for(Duration::from_secs(10), |p| p.path == "/v1/traces")
        .is_some());
    let text = eventually_every(
        "an exported span counted",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let text = s.get("/metrics").unwrap().text();
            match series_value(&text, "opskit_otlp_spans_exported_total") {
                Some(n) if n > 0.0 => Ok(text),
                _ => Err(text),
            }
        },
    );
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let families: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| n.starts_with("opskit_") || n.starts_with("http_server_"))
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
        })
        .collect();
    assert!(
        families.contains("opskit_otlp_spans_exported_total"),
        "{text}"
    );
    for family in families {
        for kind in ["HELP", "TYPE"] {
            assert!(
                text.contains(&format!("# {kind} {family} ")),
                "no {kind} for {family} in\n{text}"
            );
        }
    }
}
