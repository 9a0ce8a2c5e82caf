//! The log filter changed while the service runs: `PUT /loggers` behind
//! `OPSKIT_ADMIN_TOKEN`, for a ttl after which the start-up filter comes
//! back by itself; absent without the token.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{eventually, Kind, Starter};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    a_target_is_raised_to_debug_for_its_ttl_then_comes_back,
    a_wrong_token_gets_401_and_bad_changes_a_problem,
    without_an_admin_token_there_is_no_loggers_endpoint,
);

const TOKEN: &str = "loggers-test-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

fn admin(kind: Kind) -> Starter {
    Starter::spawn(kind, &[("OPSKIT_ADMIN_TOKEN", TOKEN)])
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// `GET /` with request id `rid`; waits for its access line, then tells
/// whether the starter's debug line (`index served`) was written for it
/// (it comes before the access line, through the same writer).
fn index_logs_debug(s: &Starter, rid: &str) -> bool {
    assert_eq!(
        s.request("GET", "/", &[("x-request-id", rid)], b"")
            .unwrap()
            .status,
        200
    );
    s.expect_json_line(&format!("access line of {rid}"), WAIT, |l| {
        l["request_id"] == rid && l["message"] == "request completed"
    });
    s.json_lines()
        .iter()
        .any(|l| l["request_id"] == rid && l["message"] == "index served")
}

fn loggers(s: &Starter) -> Value {
    let r = s
        .request("GET", "/loggers", &[("authorization", &bearer())], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

fn a_target_is_raised_to_debug_for_its_ttl_then_comes_back(kind: Kind) {
    let s = admin(kind);
    let target = kind.bin_name().replace('-', "_");
    assert!(
        !index_logs_debug(&s, "before-1"),
        "debug is off at start-up"
    );
    assert_eq!(
        loggers(&s),
        json!({"filter": "info", "startup_filter": "info", "reverts_in_ms": null})
    );
    let filter = format!("info,{target}=debug");
    let body = json!({"filter": filter, "ttl": "2s"}).to_string();
    let sent = Instant::now();
    let r = s
        .request(
            "PUT",
            "/loggers",
            &[
                ("authorization", &bearer()),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let shown = r.json();
    assert_eq!(shown["filter"], filter.as_str());
    let left = shown["reverts_in_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 2000, "{shown}");
    // The change is logged with who made it and what it was.
    let change = s.expect_json_line("the change's log line", WAIT, |l| {
        l["message"] == "log filter changed"
    });
    assert_eq!(change["target"], "opskit::admin");
    assert_eq!(change["client.address"], "127.0.0.1");
    assert_eq!(change["filter"], filter.as_str());
    assert_eq!(change["previous"], "info");
    assert_eq!(change["ttl_ms"], 2000);
    assert!(
        !change.to_string().contains(TOKEN),
        "token logged: {change}"
    );
    // The raised target's debug line is written; others' debug stays off.
    assert!(index_logs_debug(&s, "during-1"), "debug is on for {target}");
    // When the ttl runs out, the start-up filter comes back by itself.
    eventually("the start-up filter is back", WAIT, || {
        let now = loggers(&s);
        (now["filter"] == "info").then_some(()).ok_or(now)
    });
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "restored before the ttl ran out"
    );
    let restored = s.expect_json_line("the restore's log line", WAIT, |l| {
        l["message"] == "log filter restored: its ttl ran out"
    });
    assert_eq!(restored["previous"], filter.as_str());
    assert!(!index_logs_debug(&s, "after-1"), "debug is off again");
    assert_eq!(loggers(&s)["reverts_in_ms"], Value::Null);
    // Without a ttl the change stays; DELETE brings the start-up filter back.
    let body = json!({"filter": filter}).to_string();
    let auth = [("authorization", bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = s
        .request("PUT", "/loggers", &auth, body.as_bytes())
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["reverts_in_ms"], Value::Null);
    assert!(index_logs_debug(&s, "kept-1"));
    assert_eq!(
        s.request("DELETE", "/loggers", &auth, b"").unwrap().status,
        200
    );
    assert_eq!(loggers(&s)["filter"], "info");
    assert!(!index_logs_debug(&s, "reset-1"));
}

fn a_wrong_token_gets_401_and_bad_changes_a_problem(kind: Kind) {
    let s = admin(kind);
    let body = br#"{"filter": "debug", "ttl": "2s"}"#;
    for auth in [
        vec![],
        vec![("authorization", "Bearer not-the-token-0123456789abcdef")],
        vec![("authorization", TOKEN)],
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let r = s.request(method, "/loggers", &auth, body).unwrap();
            assert_eq!(r.status, 401, "{method} {auth:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    s.expect_json_line("a refusal's log line", WAIT, |l| {
        l["message"] == "log filter request refused: missing or wrong bearer token"
            && l["client.address"] == "127.0.0.1"
    });
    assert_eq!(loggers(&s)["filter"], "info", "nothing changed");
    let auth = bearer();
    let auth = [("authorization", auth.as_str())];
    for (body, status) in [
        (&br#"{"filter": "info,[[["}"#[..], 400),
        (br#"{"filter": "debug", "ttl": "forever"}"#, 400),
        (br#"{"filter": "debug", "ttl": "25h"}"#, 400),
        (br#"{"ttl": "2s"}"#, 400),
        (b"debug", 400),
        (&[b' '; 5000][..], 413),
    ] {
        let r = s.request("PUT", "/loggers", &auth, body).unwrap();
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(body));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["status"], status);
    }
    assert_eq!(loggers(&s)["filter"], "info", "nothing changed");
    // Methods are the core's, the same in both frameworks: 405 with Allow.
    let r = s.request("POST", "/loggers", &auth, b"{}").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    let r = s.request("POST", "/livez", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(s.request("HEAD", "/livez", &[], b"").unwrap().status, 200);
}

fn without_an_admin_token_there_is_no_loggers_endpoint(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let auth = [(
        "authorization",
        "Bearer loggers-test-token-0123456789abcdef",
    )];
    for method in ["GET", "PUT", "DELETE"] {
        let r = s
            .request(method, "/loggers", &auth, br#"{"filter":"debug"}"#)
            .unwrap();
        assert_eq!(r.status, 404, "{method}");
    }
    // A token shorter than 32 characters is a configuration problem,
    // reported with the others, its value not shown.
    let (status, _, err) = opskit_conformance::run_to_exit(
        kind,
        &[
            ("OPSKIT_ADMIN_TOKEN", "short-Sentinel-token"),
            ("PORT", "x"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(opskit::EXIT_CONFIG), "{err}");
    assert!(
        err.contains("OPSKIT_ADMIN_TOKEN: expected a secret of at least 32 characters"),
        "{err}"
    );
    assert!(err.contains("PORT"), "{err}");
    assert!(!err.contains("Sentinel"), "{err}");
}
