//! Request enrichment: a handler puts `user.id` and its own fields on its
//! request's access line, span and error report (`RequestTelemetry`) — the
//! same in both starters, through a real OTLP receiver and a real
//! Sentry-protocol server (Bugsink). Declared fields become metric labels,
//! bounded, checked through promtool and a real Prometheus; a fallback
//! handler names its route.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{
    duration_series, eventually_every, promtool_check_metrics, series_value, Bugsink, Kind,
    OtlpReceiver, Prometheus, Starter,
};
use std::time::Duration;

opskit_conformance::conformance!(
    a_handler_enriches_its_access_line_and_span,
    declared_fields_are_bounded_labels_and_no_other_field_is,
    a_fallback_handler_names_its_route,
);

/// `/users/{id}` sets `user.id`: on the access line and the handler's own
/// later line, as an attribute of the exported span; each request its own.
fn a_handler_enriches_its_access_line_and_span(kind: Kind) {
    let otlp = OtlpReceiver::start();
    let s = Starter::spawn(
        kind,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    for (rid, id) in [("enrich-7", "7"), ("enrich-8", "8")] {
        let r = s
            .request(
                "GET",
                &format!("/users/{id}"),
                &[("x-request-id", rid)],
                b"",
            )
            .unwrap();
        assert_eq!(r.status, 200);
        let access = s.expect_json_line("the access line", Duration::from_secs(5), |l| {
            l["request_id"] == rid && l["message"] == "request completed"
        });
        assert_eq!(access["user.id"], id, "{access}");
        let handler = s.expect_json_line("the handler's line", Duration::from_secs(5), |l| {
            l["request_id"] == rid && l["message"] == "user looked up"
        });
        assert_eq!(handler["user.id"], id, "{handler}");
        let span = otlp
            .wait_for_span(Duration::from_secs(15), |sp| {
                sp.attr("url.path").as_deref() == Some(&format!("/users/{id}"))
            })
            .unwrap_or_else(|| panic!("no span for /users/{id}: {:#?}", otlp.spans()));
        assert_eq!(span.attr("user.id").as_deref(), Some(id));
    }
    // A request that sets nothing carries nothing.
    s.request("GET", "/", &[("x-request-id", "plain-1")], b"")
        .unwrap();
    let plain = s.expect_json_line("the plain line", Duration::from_secs(5), |l| {
        l["request_id"] == "plain-1" && l["message"] == "request completed"
    });
    assert!(plain.get("user.id").is_none(), "{plain}");
}

/// `/demo/error` sets `user.id` and `tenant`: the event Bugsink stores has
/// the tenant as a tag, and the user id as its user only with
/// `OPSKIT_SENTRY_SEND_PII` (nowhere otherwise).
#[test]
fn the_user_id_reaches_sentry_only_with_send_pii() {
    let bugsink = Bugsink::start();
    for kind in Kind::ALL {
        for pii in [false, true] {
            let mut s = Starter::spawn(
                kind,
                &[
                    ("SENTRY_DSN", &bugsink.dsn),
                    ("OPSKIT_SENTRY_TIMEOUT", "30s"),
                    ("OPSKIT_SENTRY_SEND_PII", if pii { "true" } else { "false" }),
                ],
            );
            let rid = format!("enriched-{}-{pii}", kind.bin_name());
            let r = s
                .request("GET", "/demo/error", &[("x-request-id", &rid)], b"")
                .unwrap();
            assert_eq!(r.status, 500);
            s.signal("TERM"); // flushes on the way out
            assert_eq!(
                s.wait_exit(Duration::from_secs(60)).unwrap().code(),
                Some(0)
            );
            let event = bugsink.wait_for_tagged(&rid, Duration::from_secs(10));
            let data = &event["data"];
            assert!(data["tags"].to_string().contains("acme"), "{data}");
            if pii {
                assert_eq!(data["user"]["id"], "42", "{data}");
            } else {
                assert!(data["user"].get("id").is_none(), "{data}");
                assert!(!data["tags"].to_string().contains("42"), "{data}");
            }
        }
    }
}

/// `OPSKIT_METRICS_LABELS` declares `tenant` (allowed: acme, globex) and
/// `page` (capped at 3): `/demo/error` sets `tenant=acme` and `user.id`,
/// the `/pages/{slug}` fallback sets `page`. The tenant is a label; 200
/// distinct pages make at most 4 series (3 kept, `_OTHER`), the folded ones
/// counted; `user.id`, set but not declared, is never a label; a request
/// that set no declared field has none.
fn declared_fields_are_bounded_labels_and_no_other_field_is(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[("OPSKIT_METRICS_LABELS", "tenant:acme|globex;page:cap=3")],
    );
    assert_eq!(s.get("/demo/error").unwrap().status, 500);
    assert_eq!(s.get("/users/7").unwrap().status, 200);
    for i in 0..200 {
        assert_eq!(s.get(&format!("/pages/p{i}")).unwrap().status, 200);
    }
    let text = s.get("/metrics").unwrap().text();
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let series = duration_series(&text);
    let error = r#"http_route="/demo/error",http_response_status_code="500",error_type="500",tenant="acme"}"#;
    assert!(series.iter().any(|s| s.ends_with(error)), "{series:#?}");
    let pages: Vec<&String> = series
        .iter()
        .filter(|s| s.contains(r#"http_route="/pages/{slug}""#))
        .collect();
    assert_eq!(pages.len(), 4, "{pages:#?}");
    let page = |value: &str| {
        let line = pages
            .iter()
            .find(|s| s.ends_with(&format!(r#"page="{value}"}}"#)))
            .unwrap_or_else(|| panic!("no page={value} in {pages:#?}"));
        series_value(&text, line).unwrap()
    };
    assert_eq!(
        [page("p0"), page("p1"), page("p2"), page("_OTHER")],
        [1.0, 1.0, 1.0, 197.0]
    );
    let folded = |label: &str| {
        series_value(
            &text,
            &format!(r#"opskit_metrics_label_overflow_total{{label="{label}"}}"#),
        )
    };
    assert_eq!((folded("page"), folded("tenant")), (Some(197.0), Some(0.0)));
    // The only labels are the declared ones: no user id anywhere, and the
    // users route (which sets none of them) has neither.
    assert!(
        !text.contains("user_id") && !text.contains("user.id"),
        "{text}"
    );
    let users: Vec<&String> = series
        .iter()
        .filter(|s| s.contains(r#"http_route="/users/{id}""#))
        .collect();
    assert_eq!(users.len(), 1, "{users:#?}");
    assert!(
        users[0].ends_with(r#"http_response_status_code="200"}"#),
        "{users:#?}"
    );
    // A real Prometheus stores the same: 4 page series, 197 folded.
    let prom = Prometheus::start(s.addr, "/metrics");
    let value = |q: &str| {
        let v = prom.query(q).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
            .ok_or(v)
    };
    eventually_every(
        "Prometheus stores 4 page series and 197 folded requests",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let n = value(
                r#"count(http_server_request_duration_seconds_count{http_route="/pages/{slug}"})"#,
            )?;
            let other = value(r#"sum(http_server_request_duration_seconds_count{page="_OTHER"})"#)?;
            let tenant =
                value(r#"sum(http_server_request_duration_seconds_count{tenant="acme"})"#)?;
            match (n, other, tenant) {
                (4.0, 197.0, 1.0) => Ok(()),
                seen => Err(serde_json::json!(format!("{seen:?}"))),
            }
        },
    );
    let undeclared = prom
        .query(r#"{__name__=~"http_server_.*",user_id!=""}"#)
        .unwrap();
    assert_eq!(
        undeclared["data"]["result"],
        serde_json::json!([]),
        "{undeclared}"
    );
}

/// A path no route matches reaches the fallback, which serves
/// `/pages/{slug}` and names that route (`RequestTelemetry::set_route`):
/// the access line's `http.route` and the metrics' `http_route` carry the
/// template; any other unmatched path keeps no route. Without a declaration
/// the page it sets is no label.
fn a_fallback_handler_names_its_route(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let r = s
        .request("GET", "/pages/about", &[("x-request-id", "page-1")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["page"], "about");
    let access = s.expect_json_line("the page's access line", Duration::from_secs(5), |l| {
        l["request_id"] == "page-1" && l["message"] == "request completed"
    });
    assert_eq!(access["http.route"], "/pages/{slug}", "{access}");
    assert_eq!(access["page"], "about", "{access}");
    let r = s
        .request("GET", "/nope/about", &[("x-request-id", "nope-1")], b"")
        .unwrap();
    assert_eq!(r.status, 404);
    let access = s.expect_json_line("the 404's access line", Duration::from_secs(5), |l| {
        l["request_id"] == "nope-1" && l["message"] == "request completed"
    });
    assert!(access.get("http.route").is_none(), "{access}");
    let text = s.get("/metrics").unwrap().text();
    let series = duration_series(&text);
    let page = r#"http_request_method="GET",url_scheme="http",http_route="/pages/{slug}",http_response_status_code="200"}"#;
    assert!(series.iter().any(|s| s.ends_with(page)), "{series:#?}");
    assert!(!text.contains("page=\""), "{text}");
}
