//! Protocol edge cases a hostile client sends, answered the same by both
//! starters where opskit sees the request (problem+json, one status), and
//! pinned to what each HTTP codec answers where it decides before any
//! middleware runs (docs/security.md lists both).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{raw_request, Kind, Response, Starter};
use std::collections::BTreeMap;

opskit_conformance::conformance!(
    an_unknown_method_gets_501_problem,
    a_path_that_is_not_utf8_once_decoded_gets_400_problem,
    a_uri_over_the_codec_limit_is_refused_without_a_body,
    content_length_with_transfer_encoding_is_never_read_twice,
    a_head_over_the_servers_limit_gets_431,
);

/// Asserts a problem+json answer with `status`, and returns its body.
fn problem(r: &Response, status: u16, what: &str) -> serde_json::Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}: {:?}",
        r.headers
    );
    let body = r.json();
    assert_eq!(body["status"], status, "{what}");
    body
}

/// What is compared of an answer: status, content type, body.
type Answer = (u16, Option<String>, Vec<u8>);

/// Status, content type and body of each edge answer opskit shapes, from
/// each starter: byte for byte the same.
#[test]
fn the_shaped_answers_are_identical_between_frameworks() {
    let answers: Vec<BTreeMap<&str, Answer>> = Kind::ALL
        .iter()
        .map(|kind| {
            let s = Starter::spawn(*kind, &[]);
            let mut out = BTreeMap::new();
            let foo = raw_request(
                s.addr,
                b"FOO / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            let utf8 = s.get("/users/%ff").unwrap();
            for (case, r) in [("unknown method", foo), ("not UTF-8", utf8)] {
                out.insert(
                    case,
                    (
                        r.status,
                        r.header("content-type").map(str::to_owned),
                        r.body,
                    ),
                );
            }
            out
        })
        .collect();
    assert_eq!(answers[0], answers[1]);
}

fn an_unknown_method_gets_501_problem(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let mut bodies = Vec::new();
    // A route that exists (for GET), one that does not, an operational one.
    for path in ["/", "/nope", "/users/1", "/livez"] {
        let req = format!("FOO {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = raw_request(s.addr, req.as_bytes()).unwrap();
        bodies.push(problem(&r, 501, path));
        // The opskit headers are there, as on any answer.
        assert!(r.header("x-request-id").is_some(), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    // The same body everywhere, and the method is not echoed back.
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert!(!bodies[0].to_string().contains("FOO"));
    // Known methods are the routes' business.
    assert_eq!(s.get("/").unwrap().status, 200);
}

fn a_path_that_is_not_utf8_once_decoded_gets_400_problem(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let mut bodies = Vec::new();
    for path in ["/users/%ff", "/users/%C3%28", "/%ff/x", "/users/1%e2%82"] {
        let r = s.get(path).unwrap();
        bodies.push(problem(&r, 400, path));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    // Valid UTF-8, percent-encoded: routed as usual.
    assert_eq!(s.get("/users/%31%32").unwrap().status, 200);
    let r = s.get("/users/caf%C3%A9").unwrap();
    assert_eq!(
        problem(&r, 400, "not a number")["detail"],
        "the user id must be a whole number"
    );
}

/// Over 65,534 bytes of request target, both codecs refuse the request
/// before opskit sees it: hyper with 414, Actix with 400, each with an empty
/// body and the connection closed. (Both use `http`'s `Uri`, whose limit
/// this is; docs/security.md says so.)
fn a_uri_over_the_codec_limit_is_refused_without_a_body(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let under = format!("/{}", "a".repeat(65_000));
    assert_eq!(s.get(&under).unwrap().status, 404, "still routed");
    let path = format!("/{}", "a".repeat(64 * 1024));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = raw_request(s.addr, req.as_bytes()).unwrap();
    let want = match kind {
        Kind::Axum | Kind::Tonic => 414,
        Kind::Actix => 400,
    };
    assert_eq!(r.status, want);
    assert!(r.body.is_empty());
    assert_eq!(r.header("connection"), Some("close"));
}

/// A request with both `Content-Length` and `Transfer-Encoding` (the
/// smuggling shape): the body is never read by the length, and the
/// connection never carries a second request. hyper lets chunked win and
/// closes the connection after answering (RFC 9112 §6.3 allows this);
/// Actix refuses it with 400. Both decide in the codec.
fn content_length_with_transfer_encoding_is_never_read_twice(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    // Read by the length, the body would end after "0\r\n\r\n" and the rest
    // would be a second request.
    let smuggled = "GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let body = format!("5\r\nhello\r\n0\r\n\r\n{smuggled}");
    let req = format!(
        "POST /demo/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    );
    let r = raw_request(s.addr, req.as_bytes()).unwrap();
    match kind {
        Kind::Axum | Kind::Tonic => {
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["bytes"], 5, "the chunked body, not 4 bytes");
        }
        Kind::Actix => {
            assert_eq!(r.status, 400);
            assert!(r.body.is_empty());
        }
    }
    assert_eq!(r.header("connection"), Some("close"));
    // One answer only: the smuggled request was not served.
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!text.contains("HTTP/1.1"), "{text}");
}

/// The request-head limits docs/security.md states, measured from the
/// starters: hyper accepts a 458,016-byte head and answers 431 at 458,528;
/// Actix accepts 131,008 bytes and refuses 131,520. A head comfortably
/// under each limit is served, one comfortably over it gets 431 (from the
/// codec, before opskit runs). If a server upgrade moves a limit, this
/// fails and the table must be measured again.
fn a_head_over_the_servers_limit_gets_431(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let (under, over) = match kind {
        Kind::Axum | Kind::Tonic => (450_000, 466_000),
        Kind::Actix => (125_000, 137_000),
    };
    // One long header line pads the head to `size` bytes.
    let head = |size: usize| {
        let start = "GET /users/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ";
        let end = "\r\n\r\n";
        format!("{start}{}{end}", "a".repeat(size - start.len() - end.len()))
    };
    let r = raw_request(s.addr, head(under).as_bytes()).unwrap();
    assert_eq!(r.status, 200, "a {under}-byte head");
    let r = raw_request(s.addr, head(over).as_bytes()).unwrap();
    assert_eq!(r.status, 431, "a {over}-byte head");
}
