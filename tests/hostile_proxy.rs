//! A hostile client against the rate limiter and the client address, in both
//! starters: encoded paths, forwarding headers split over several lines,
//! preflights nobody answers, and what the logs and spans say about it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{Kind, OtlpReceiver, Redis, Response, Starter};
use serde_json::Value;
use std::time::Duration;

opskit_conformance::conformance!(
    encoded_paths_meet_the_route_policy_the_router_meets,
    every_forwarded_for_line_is_one_list,
    every_forwarded_line_is_one_list,
    only_preflights_cors_answers_skip_the_limiter,
    refusals_are_logged_with_the_request_ids,
    the_access_log_names_the_client_behind_trusted_proxies,
    the_server_span_names_the_client_behind_trusted_proxies,
);

fn get(s: &Starter, path: &str, headers: &[(&str, &str)]) -> Response {
    s.request("GET", path, headers, b"").unwrap()
}

/// The first JSON line satisfying `ok`, waited for (lines arrive a moment
/// after the response).
#[track_caller]
fn wait_line(s: &Starter, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    s.expect_json_line(&format!("line {what}"), Duration::from_secs(5), ok)
}

fn encoded_paths_meet_the_route_policy_the_router_meets(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_RATE_LIMIT_ROUTES", "/users/*=2/1m")]);
    // Actix decodes `%75` to `u` before routing: this is `/users/{id}`
    // there (and no route in Axum, which routes the path as sent). Where a
    // handler answers, the route's policy counted it.
    let r = get(&s, "/%75sers/1", &[]);
    if r.status != 404 {
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some(r#""/users/*";q=2;w=60"#),
            "{kind:?}: /%75sers/1 reached the handler outside the route's policy"
        );
    }
    while get(&s, "/users/1", &[]).status == 200 {}
    // The quota is used up: no spelling of the route reaches the handler.
    for path in [
        "/users/1",
        "/%75sers/1",
        "/user%73/1",
        "/%75%73%65%72%73/1",
        "/users/%31",
        "/users%2F1",
        "/users%2f1",
        "/users/1%2F",
        "/%2Fusers/1",
        "//users/1",
        "/users//1",
        "/./users/1",
        "/users/./1",
        "/%2E/users/1",
        "/users/1/",
        "/users/1/.",
        "/x/../users/1",
    ] {
        let r = get(&s, path, &[]);
        assert!(
            r.status == 429 || r.status == 404,
            "{kind:?}: {path} answered {} past the quota",
            r.status
        );
    }
    // A refusal is logged under the route the path reaches, as its
    // admission was.
    wait_line(&s, "the last refusal", |l| l["url.path"] == "/x/../users/1");
    let lines = s.json_lines();
    let access = |path: &str, status: u64| {
        lines
            .iter()
            .find(|l| {
                l["target"] == "opskit::access"
                    && l["url.path"] == path
                    && l["http.response.status_code"] == status
            })
            .cloned()
    };
    if let Some(admitted) = access("/%75sers/1", 200) {
        let refused = access("/%75sers/1", 429).unwrap();
        assert_eq!(refused["http.route"], admitted["http.route"], "{kind:?}");
    }
}

/// Quota 2/1m behind trusted loopback proxies, and `extra`.
fn behind_proxies(kind: Kind, extra: &[(&str, &str)]) -> Starter {
    let mut env = vec![
        ("OPSKIT_RATE_LIMIT", "2/1m"),
        ("OPSKIT_TRUSTED_PROXIES", "127.0.0.0/8"),
    ];
    env.extend_from_slice(extra);
    Starter::spawn(kind, &env)
}

fn every_forwarded_for_line_is_one_list(kind: Kind) {
    let s = behind_proxies(kind, &[]);
    // The client sends its own `X-Forwarded-For`; the proxy adds a line of
    // its own instead of appending to the client's. Every request picks a
    // new first entry: only the proxy's line counts.
    let statuses: Vec<u16> = (1..=3)
        .map(|i| {
            let spoof = format!("6.6.6.{i}");
            get(
                &s,
                "/",
                &[
                    ("x-forwarded-for", &spoof),
                    ("x-forwarded-for", "203.0.113.1"),
                ],
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 429], "{kind:?}");
    // Lines are joined in order: the right-most untrusted entry of the
    // whole list is the client.
    let statuses: Vec<u16> = (1..=3)
        .map(|i| {
            let spoof = format!("6.6.7.{i}, 127.0.0.9");
            get(
                &s,
                "/",
                &[
                    ("x-forwarded-for", "203.0.113.2"),
                    ("x-forwarded-for", &spoof),
                ],
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200], "{kind:?}");
}

fn every_forwarded_line_is_one_list(kind: Kind) {
    let s = behind_proxies(kind, &[("OPSKIT_FORWARDED_HEADER", "forwarded")]);
    let statuses: Vec<u16> = (1..=3)
        .map(|i| {
            let spoof = format!("for=6.6.6.{i};proto=https");
            get(
                &s,
                "/",
                &[
                    ("forwarded", &spoof),
                    ("forwarded", "for=\"203.0.113.1:4711\";proto=http"),
                ],
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 429], "{kind:?}");
}

fn only_preflights_cors_answers_skip_the_limiter(kind: Kind) {
    let preflight = |s: &Starter, origin: Option<&str>| {
        let mut headers = vec![("access-control-request-method", "POST")];
        headers.extend(origin.map(|o| ("origin", o)));
        s.request("OPTIONS", "/demo/echo", &headers, b"")
            .unwrap()
            .status
    };
    // CORS off: nobody answers the preflight but the router; it counts.
    let s = Starter::spawn(kind, &[("OPSKIT_RATE_LIMIT", "2/1m")]);
    let statuses: Vec<u16> = (0..3).map(|_| preflight(&s, None)).collect();
    assert_eq!(statuses[2], 429, "{kind:?}: {statuses:?}");
    assert_eq!(get(&s, "/", &[]).status, 429);
    let s = Starter::spawn(kind, &[("OPSKIT_RATE_LIMIT", "2/1m")]);
    let statuses: Vec<u16> = (0..3)
        .map(|_| preflight(&s, Some("https://app.example")))
        .collect();
    assert_eq!(statuses[2], 429, "{kind:?}: {statuses:?}");
    // CORS on: preflights it answers (allowed origin or not) are free; one
    // without an `Origin` is not a preflight CORS answers, and counts.
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "2/1m"),
            ("OPSKIT_CORS_ORIGINS", "https://app.example"),
        ],
    );
    for _ in 0..3 {
        assert_eq!(preflight(&s, Some("https://app.example")), 204);
        assert_eq!(preflight(&s, Some("https://evil.example")), 204);
    }
    let statuses: Vec<u16> = (0..3).map(|_| preflight(&s, None)).collect();
    assert_eq!(statuses[2], 429, "{kind:?}: {statuses:?}");
}

fn refusals_are_logged_with_the_request_ids(kind: Kind) {
    // Decided in memory, and in Redis (another path through each adapter).
    let s = Starter::spawn(kind, &[("OPSKIT_RATE_LIMIT", "1/1m")]);
    refusal_is_logged_with_the_request_ids(kind, &s);
    let redis = Redis::start();
    let url = redis.url();
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "1/1m"),
            ("OPSKIT_RATE_LIMIT_REDIS_URL", &url),
        ],
    );
    refusal_is_logged_with_the_request_ids(kind, &s);
}

fn refusal_is_logged_with_the_request_ids(kind: Kind, s: &Starter) {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    assert_eq!(get(s, "/", &[]).status, 200);
    let r = get(
        s,
        "/",
        &[("x-request-id", "refused-1"), ("traceparent", &parent)],
    );
    assert_eq!(r.status, 429);
    // The response's `traceresponse` names the server span of the request.
    let span_id = r.header("traceresponse").unwrap()[36..52].to_owned();
    let line = wait_line(s, "rate limit exceeded", |l| {
        l["message"] == "rate limit exceeded"
    });
    assert_eq!(line["request_id"], "refused-1", "{kind:?}: {line}");
    assert_eq!(line["trace_id"], trace, "{kind:?}: {line}");
    assert_eq!(line["span_id"], span_id.as_str(), "{kind:?}: {line}");
    assert_eq!(line["level"], "WARN");
    assert!(line["rate_limit.key_hash"].is_string(), "{line}");
}

fn the_access_log_names_the_client_behind_trusted_proxies(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_TRUSTED_PROXIES", "127.0.0.0/8")]);
    let access = |rid: &str| {
        wait_line(&s, rid, |l| {
            l["request_id"] == rid && l["target"] == "opskit::access"
        })
    };
    get(
        &s,
        "/",
        &[
            ("x-request-id", "xff-1"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.1.1"),
        ],
    );
    let line = access("xff-1");
    // 10.1.1.1 is not a trusted proxy here: it is the client.
    assert_eq!(line["client.address"], "10.1.1.1", "{kind:?}: {line}");
    assert_eq!(line["network.peer.address"], "127.0.0.1", "{line}");
    get(
        &s,
        "/",
        &[
            ("x-request-id", "xff-2"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    );
    let line = access("xff-2");
    assert_eq!(line["client.address"], "203.0.113.7", "{kind:?}: {line}");
    // Without a forwarding header the peer is the client, named once.
    get(&s, "/", &[("x-request-id", "xff-3")]);
    let line = access("xff-3");
    assert_eq!(line["client.address"], "127.0.0.1", "{kind:?}: {line}");
    assert!(line.get("network.peer.address").is_none(), "{line}");
    // From a peer that is not trusted, the header is ignored.
    let s = Starter::spawn(kind, &[]);
    get(
        &s,
        "/",
        &[
            ("x-request-id", "xff-4"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    );
    let line = wait_line(&s, "xff-4", |l| {
        l["request_id"] == "xff-4" && l["target"] == "opskit::access"
    });
    assert_eq!(line["client.address"], "127.0.0.1", "{kind:?}: {line}");
}

fn the_server_span_names_the_client_behind_trusted_proxies(kind: Kind) {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OPSKIT_TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
    );
    get(
        &s,
        "/users/5",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    );
    let span = receiver
        .wait_for_span(Duration::from_secs(15), |s| {
            s.attr("url.path").as_deref() == Some("/users/5")
        })
        .unwrap_or_else(|| panic!("no span: {:#?}", receiver.spans()));
    assert_eq!(
        span.attr("client.address").as_deref(),
        Some("203.0.113.9"),
        "{kind:?}"
    );
    assert_eq!(
        span.attr("network.peer.address").as_deref(),
        Some("127.0.0.1"),
        "{kind:?}"
    );
}
