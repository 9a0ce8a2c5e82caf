//! Request enrichment: a handler puts `user.id` and its own fields on its
//! request's access line, span and error report (`RequestTelemetry`) — the
//! same in both starters, through a real OTLP receiver and a real
//! Sentry-protocol server (Bugsink).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{eventually_every, Bugsink, Kind, OtlpReceiver, Starter};
use std::time::Duration;

opskit_conformance::conformance!(a_handler_enriches_its_access_line_and_span);

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
            let event = eventually_every(
                "Bugsink stores the event",
                Duration::from_secs(10),
                Duration::from_millis(200),
                || {
                    let stored = bugsink.events();
                    stored
                        .into_iter()
                        .find(|e| e["data"]["tags"].to_string().contains(&rid))
                        .ok_or(rid.clone())
                },
            );
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
