//! Logging conformance: request ids, one access-log line per request, secrets
//! never logged, panics logged with the request id — the same in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{Kind, OtlpReceiver, Starter};
use serde_json::Value;
use std::time::Duration;

opskit_conformance::conformance!(
    access_log_line_carries_the_request_id_route_and_status,
    malformed_request_ids_are_replaced,
    exactly_one_line_per_request_at_the_level_of_its_outcome,
    secrets_never_reach_the_log,
    panic_is_logged_with_its_request_id,
    refused_and_timed_out_requests_keep_their_route,
    successful_probes_are_not_logged,
    moved_operational_paths_stay_quiet,
    access_log_off_writes_no_access_lines,
    access_log_levels_follow_the_setting,
    sampling_drops_only_successes,
    pretty_format_for_development,
    a_utf8_user_agent_is_kept_and_cut_at_a_character_boundary,
);

/// The JSON lines the starter wrote, once the access line of request
/// `request_id` is among them (waited for up to 10 s: a slow CI machine).
#[track_caller]
fn lines_once_logged(s: &Starter, request_id: &str) -> Vec<Value> {
    s.expect_json_line(
        &format!("access line of {request_id}"),
        Duration::from_secs(10),
        |v| v["target"] == "opskit::access" && v["request_id"] == request_id,
    );
    s.json_lines()
}

fn access_lines_for(lines: &[Value], request_id: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["target"] == "opskit::access" && v["request_id"] == request_id)
        .cloned()
        .collect()
}

fn access_log_line_carries_the_request_id_route_and_status(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let r = s
        .request(
            "GET",
            "/users/7",
            &[("x-request-id", "abc-123"), ("user-agent", "conformance/1")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(
        r.json()["request_id"],
        "abc-123",
        "handlers see the request id"
    );
    let lines = lines_once_logged(&s, "abc-123");
    let access = access_lines_for(&lines, "abc-123");
    assert_eq!(access.len(), 1, "{access:?}");
    let a = &access[0];
    assert_eq!(a["message"], "request completed");
    assert_eq!(a["level"], "INFO");
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/users/7");
    assert_eq!(a["http.route"], "/users/{id}");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(a["user_agent.original"], "conformance/1");
    assert!(a["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(a["timestamp"].as_str().unwrap().ends_with('Z'));
    // A line the handler wrote inside the request carries the same id.
    let handler_line = lines
        .iter()
        .find(|v| v["message"] == "user looked up")
        .expect("the handler's own log line");
    assert_eq!(handler_line["request_id"], "abc-123");
    // And the field the handler set on its request (`RequestTelemetry`).
    assert_eq!(handler_line["user.id"], "7");
}

fn malformed_request_ids_are_replaced(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let long = "a".repeat(129);
    for bad in [
        "<script>alert(1)</script>",
        long.as_str(),
        "has space",
        "quote\"d",
    ] {
        let r = s
            .request("GET", "/users/1", &[("x-request-id", bad)], b"")
            .unwrap();
        assert_eq!(r.status, 200);
        let echoed = r.header("x-request-id").unwrap();
        assert_ne!(echoed, bad);
        assert_eq!(echoed.len(), 36, "a fresh UUID: {echoed}");
    }
    // Without one, a fresh id is made and echoed.
    let r = s.get("/users/1").unwrap();
    assert_eq!(r.header("x-request-id").unwrap().len(), 36);
}

fn exactly_one_line_per_request_at_the_level_of_its_outcome(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let cases = [
        ("/users/1", "lvl-info", "INFO", 200),
        ("/users/x", "lvl-warn", "WARN", 400),
        ("/no/such/route", "lvl-404", "WARN", 404),
        ("/demo/error", "lvl-error", "ERROR", 500),
    ];
    for (path, id, _, status) in cases {
        let r = s
            .request("GET", path, &[("x-request-id", id)], b"")
            .unwrap();
        assert_eq!(r.status, status, "{path}");
    }
    let lines = lines_once_logged(&s, "lvl-error");
    for (path, id, level, status) in cases {
        let access = access_lines_for(&lines, id);
        assert_eq!(access.len(), 1, "{path}: {access:?}");
        assert_eq!(access[0]["level"], level, "{path}");
        assert_eq!(access[0]["http.response.status_code"], status);
    }
    // Unmatched routes have no route key (the raw path never becomes a route).
    assert!(access_lines_for(&lines, "lvl-404")[0]
        .get("http.route")
        .is_none());
}

fn secrets_never_reach_the_log(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let r = s
        .request(
            "GET",
            "/users/9?token=s3cr3t&api_key=s3cr3t",
            &[
                ("Authorization", "Bearer s3cr3t"),
                ("Cookie", "sid=s3cr3t"),
                ("Proxy-Authorization", "Basic s3cr3t"),
                ("x-request-id", "secret-check"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let lines = lines_once_logged(&s, "secret-check");
    let a = &access_lines_for(&lines, "secret-check")[0];
    assert_eq!(a["url.path"], "/users/9", "no query string");
    for line in s.output() {
        assert!(!line.contains("s3cr3t"), "secret logged: {line}");
    }
}

fn panic_is_logged_with_its_request_id(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let r = s
        .request("GET", "/demo/panic", &[("x-request-id", "panic-1")], b"")
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-request-id"), Some("panic-1"));
    let lines = lines_once_logged(&s, "panic-1");
    let panic = lines
        .iter()
        .find(|v| v["message"] == "panicked")
        .expect("a panic line");
    assert_eq!(panic["level"], "ERROR");
    assert_eq!(panic["request_id"], "panic-1");
    assert!(panic["panic.message"]
        .as_str()
        .unwrap()
        .contains("demo panic"));
    let access = access_lines_for(&lines, "panic-1");
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["http.response.status_code"], 500);
    assert_eq!(access[0]["http.route"], "/demo/panic");
    assert_eq!(s.get("/users/2").unwrap().status, 200, "still serving");
}

/// Requests answered without the handler's response (a 429 before the
/// handler, a timeout that drops it) are still labelled with their route:
/// Actix matches them against its resource map, as it cannot ask the router.
fn refused_and_timed_out_requests_keep_their_route(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "1/1m"),
            ("OPSKIT_REQUEST_TIMEOUT", "200ms"),
        ],
    );
    let s2 = Starter::spawn(kind, &[("OPSKIT_REQUEST_TIMEOUT", "200ms")]);
    let get = |s: &Starter, path: &str, id: &str| {
        s.request("GET", path, &[("x-request-id", id)], b"")
            .unwrap()
            .status
    };
    assert_eq!(get(&s, "/users/1", "first-1"), 200);
    assert_eq!(get(&s, "/users/2", "refused-1"), 429);
    assert_eq!(get(&s2, "/demo/slow?ms=2000", "slow-1"), 504);
    for (starter, id, route, status) in [
        (&s, "first-1", "/users/{id}", 200),
        (&s, "refused-1", "/users/{id}", 429),
        (&s2, "slow-1", "/demo/slow", 504),
    ] {
        let lines = lines_once_logged(starter, id);
        let access = access_lines_for(&lines, id);
        assert_eq!(access.len(), 1, "{id}: {lines:?}");
        assert_eq!(access[0]["http.route"], route, "{id}");
        assert_eq!(access[0]["http.response.status_code"], status, "{id}");
    }
}

fn successful_probes_are_not_logged(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    for p in ["/livez", "/readyz", "/startupz"] {
        s.request("GET", p, &[("x-request-id", "probe")], b"")
            .unwrap();
    }
    s.request("GET", "/users/1", &[("x-request-id", "after-probes")], b"")
        .unwrap();
    let lines = lines_once_logged(&s, "after-probes");
    assert!(access_lines_for(&lines, "probe").is_empty());
    // Configurable: with the operational routes measured and no skip list,
    // probes are logged.
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_TELEMETRY_OPERATIONAL", "true"),
            ("OPSKIT_ACCESS_LOG_SKIP_PATHS", ","),
        ],
    );
    s.request("GET", "/livez", &[("x-request-id", "probe")], b"")
        .unwrap();
    let lines = lines_once_logged(&s, "probe");
    assert_eq!(access_lines_for(&lines, "probe").len(), 1);
}

/// Sends a request that the starter's handler logs ("user looked up") and
/// waits for that line: every access line of an earlier request, written
/// through the same ordered writer before its response was complete, is in
/// the output by then. Returns all JSON lines.
#[track_caller]
fn lines_after_marker(s: &Starter, marker: &str) -> Vec<Value> {
    s.request("GET", "/users/99", &[("x-request-id", marker)], b"")
        .unwrap();
    s.expect_json_line(
        &format!("handler line of {marker}"),
        Duration::from_secs(10),
        |v| v["message"] == "user looked up" && v["request_id"] == marker,
    );
    s.json_lines()
}

/// With the probes under `OPSKIT_HEALTH_PREFIX` and the scrape at another
/// `OPSKIT_METRICS_PATH`, their successful answers are still not logged
/// (the default skip list follows the routes); a failure there is.
fn moved_operational_paths_stay_quiet(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_HEALTH_PREFIX", "/_ops"),
            ("OPSKIT_METRICS_PATH", "/_ops/prom"),
        ],
    );
    for (i, p) in [
        "/_ops/livez",
        "/_ops/readyz",
        "/_ops/readyz/disk",
        "/_ops/startupz",
        "/_ops/prom",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("moved-{i}");
        let r = s.request("GET", p, &[("x-request-id", &id)], b"").unwrap();
        assert_eq!(r.status, 200, "{p}");
    }
    // The old paths are now ordinary 404s: logged like any failure.
    let r = s
        .request("GET", "/livez", &[("x-request-id", "old-livez")], b"")
        .unwrap();
    assert_eq!(r.status, 404);
    lines_after_marker(&s, "after-moved");
    // The marker's own access line follows its handler's line: wait for it.
    let lines = lines_once_logged(&s, "after-moved");
    let logged: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            v["target"] == "opskit::access"
                && v["request_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("moved-"))
        })
        .collect();
    assert!(logged.is_empty(), "moved probes logged: {logged:#?}");
    assert_eq!(access_lines_for(&lines, "old-livez").len(), 1);
    assert_eq!(access_lines_for(&lines, "after-moved").len(), 1);
}

/// `OPSKIT_ACCESS_LOG=false` writes no access line for any outcome, while
/// the application's own lines are still written.
/// `RUST_LOG=info,opskit::access=off` silences it the same way.
fn access_log_off_writes_no_access_lines(kind: Kind) {
    for env in [
        ("OPSKIT_ACCESS_LOG", "false"),
        ("RUST_LOG", "info,opskit::access=off"),
    ] {
        let s = Starter::spawn(kind, &[env]);
        for (path, id) in [
            ("/users/1", "off-200"),
            ("/nope", "off-404"),
            ("/demo/error", "off-500"),
        ] {
            s.request("GET", path, &[("x-request-id", id)], b"")
                .unwrap();
        }
        let lines = lines_after_marker(&s, "off-marker");
        let access: Vec<&Value> = lines
            .iter()
            .filter(|v| v["target"] == "opskit::access")
            .collect();
        assert!(access.is_empty(), "{env:?}: {access:#?}");
    }
}

/// `OPSKIT_ACCESS_LOG_LEVELS` sets the level per outcome; `off` drops that
/// outcome's lines; a level below `RUST_LOG` is filtered out.
fn access_log_levels_follow_the_setting(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_ACCESS_LOG_LEVELS", "warn,off,info")]);
    for (path, id) in [
        ("/users/1", "lv-200"),
        ("/nope", "lv-404"),
        ("/demo/error", "lv-500"),
    ] {
        s.request("GET", path, &[("x-request-id", id)], b"")
            .unwrap();
    }
    let lines = lines_after_marker(&s, "lv-marker");
    let level = |id: &str| -> Vec<Value> {
        access_lines_for(&lines, id)
            .iter()
            .map(|v| v["level"].clone())
            .collect()
    };
    assert_eq!(level("lv-200"), ["WARN"]);
    assert_eq!(level("lv-404"), Vec::<Value>::new());
    assert_eq!(level("lv-500"), ["INFO"]);
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_ACCESS_LOG_LEVELS", "debug,warn,error"),
            ("RUST_LOG", "info"),
        ],
    );
    s.request("GET", "/users/1", &[("x-request-id", "dbg-200")], b"")
        .unwrap();
    let lines = lines_after_marker(&s, "dbg-marker");
    assert!(access_lines_for(&lines, "dbg-200").is_empty());
}

/// `OPSKIT_ACCESS_LOG_SAMPLE_RATE` keeps that share of the successful
/// requests' lines; client and server errors are always logged.
fn sampling_drops_only_successes(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_ACCESS_LOG_SAMPLE_RATE", "0")]);
    for (path, id) in [
        ("/users/1", "s0-200"),
        ("/nope", "s0-404"),
        ("/demo/error", "s0-500"),
    ] {
        s.request("GET", path, &[("x-request-id", id)], b"")
            .unwrap();
    }
    // The marker itself is a success: not logged either, its handler line is.
    let lines = lines_after_marker(&s, "s0-marker");
    assert!(access_lines_for(&lines, "s0-200").is_empty());
    assert!(access_lines_for(&lines, "s0-marker").is_empty());
    assert_eq!(access_lines_for(&lines, "s0-404").len(), 1);
    assert_eq!(access_lines_for(&lines, "s0-500").len(), 1);
    // Half of 200 successes: outside 50..=150 has a chance of about 1e-12.
    let s = Starter::spawn(kind, &[("OPSKIT_ACCESS_LOG_SAMPLE_RATE", "0.5")]);
    for i in 0..200 {
        let id = format!("half-{i}");
        let r = s
            .request("GET", "/", &[("x-request-id", &id)], b"")
            .unwrap();
        assert_eq!(r.status, 200);
        s.request(
            "GET",
            "/nope",
            &[("x-request-id", &format!("miss-{i}"))],
            b"",
        )
        .unwrap();
    }
    let lines = lines_after_marker(&s, "half-marker");
    let count = |prefix: &str| {
        lines
            .iter()
            .filter(|v| {
                v["target"] == "opskit::access"
                    && v["request_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(prefix))
            })
            .count()
    };
    let kept = count("half-");
    assert!((50..=150).contains(&kept), "{kept} of 200 successes logged");
    assert_eq!(count("miss-"), 200, "every 404 is logged");
}

fn pretty_format_for_development(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[("OPSKIT_LOG_FORMAT", "pretty"), ("RUST_LOG", "info")],
    );
    // The harness finds the address in JSON; in pretty mode it cannot, so it
    // falls back on the `address=` field: see `Starter::spawn`.
    s.get("/users/5").unwrap();
    let line = s.expect_line("access line", Duration::from_secs(10), |l| {
        l.contains("request completed")
    });
    assert!(
        serde_json::from_str::<Value>(&line).is_err(),
        "not JSON: {line}"
    );
    assert!(
        line.contains("INFO") && line.contains("/users/{id}"),
        "{line}"
    );
}

/// The access-log line of the same request has the same keys and values in
/// both starters (timing, timestamps and thread-dependent values aside).
#[test]
fn access_log_lines_are_identical_between_frameworks() {
    let mut lines = Vec::new();
    for kind in Kind::ALL {
        let s = Starter::spawn(kind, &[]);
        for (path, id) in [
            ("/users/3", "same-1"),
            ("/users/x", "same-2"),
            ("/demo/panic", "same-3"),
            ("/nope", "same-4"),
        ] {
            s.request(
                "GET",
                path,
                &[("x-request-id", id), ("user-agent", "same/1")],
                b"",
            )
            .unwrap();
        }
        let all = lines_once_logged(&s, "same-4");
        let mut mine = Vec::new();
        for id in ["same-1", "same-2", "same-3", "same-4"] {
            let mut v = access_lines_for(&all, id).pop().unwrap();
            let o = v.as_object_mut().unwrap();
            assert!(o.remove("duration_ms").is_some());
            assert!(o.remove("timestamp").is_some());
            // Fresh for every request: only their shape can match.
            for id in ["trace_id", "span_id"] {
                let value = o.remove(id).unwrap();
                assert!(value.as_str().is_some_and(|s| s.len() >= 16), "{value}");
            }
            mine.push(v);
        }
        lines.push(mine);
    }
    assert_eq!(lines[0], lines[1]);
}

/// `log` records of dependencies are captured into the JSON log (actix-server
/// logs through the `log` crate).
#[test]
fn log_crate_records_are_captured() {
    let s = Starter::spawn(Kind::Actix, &[]);
    s.expect_json_line(
        "INFO line of actix_server::builder",
        Duration::from_secs(10),
        |v| v["target"] == "actix_server::builder" && v["level"] == "INFO",
    );
}

/// A User-Agent with UTF-8 (RFC 9110 allows obs-text; browsers and bots send
/// it) is logged, and one past the 512-byte limit is cut at a character
/// boundary — on the access line and on the span alike.
fn a_utf8_user_agent_is_kept_and_cut_at_a_character_boundary(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let utf8 = "Mozilla/5.0 (X11; Linux) Gecko Firefox/120.0 Ünïcødé 漢字 ✓";
    // Byte 512 falls inside the first `é` (bytes 511 and 512).
    let long = format!("{}{}", "a".repeat(511), "é".repeat(50));
    for (id, ua, logged) in [
        ("ua-utf8", utf8.to_owned(), utf8.to_owned()),
        ("ua-long", long, "a".repeat(511)),
    ] {
        let r = s
            .request(
                "GET",
                "/users/7",
                &[("x-request-id", id), ("user-agent", &ua)],
                b"",
            )
            .unwrap();
        assert_eq!(r.status, 200);
        let lines = lines_once_logged(&s, id);
        let access = access_lines_for(&lines, id);
        assert_eq!(access.len(), 1, "{access:?}");
        assert_eq!(access[0]["user_agent.original"], logged.as_str(), "{id}");
        let trace_id = access[0]["trace_id"].as_str().unwrap();
        let span = receiver
            // The server span (kind SERVER), not the handler's child spans.
            .wait_for_span(Duration::from_secs(10), |sp| {
                sp.trace_id() == trace_id && sp.span.kind == 2
            })
            .unwrap_or_else(|| panic!("no span for {id}"));
        assert_eq!(
            span.attr("user_agent.original").as_deref(),
            Some(logged.as_str()),
            "{id}"
        );
    }
}
