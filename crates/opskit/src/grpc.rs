//! gRPC over the pipeline: which requests are gRPC calls, their status codes
//! and which of them are errors, the `grpc-timeout` header, the method's
//! name for telemetry, and opskit's own answers as Trailers-Only responses.
//! Framework-neutral: the pipeline calls it, adapters never do.
//!
//! Status codes and the server-error set follow the OpenTelemetry semantic
//! conventions for gRPC (v1.40, `rpc.response.status_code`); the HTTP/2
//! framing follows gRPC's PROTOCOL-HTTP2.md.

use std::time::Duration;

/// The gRPC status codes, by number (0–16).
pub(crate) const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `CANCELLED`: the client went away before the call ended.
pub(crate) const CANCELLED: u8 = 1;

/// Whether a call its client cancelled `elapsed` into a `deadline` it sent
/// (`grpc-timeout`) ended by that deadline: a client cancels its call when
/// its deadline passes, and that cancel races the server's own timer for
/// the same deadline (the client's clock started first, by the request's
/// transit), so a cancel in the deadline's last tenth is the deadline's.
pub(crate) fn cancelled_by_deadline(
    elapsed: std::time::Duration,
    deadline: std::time::Duration,
) -> bool {
    elapsed >= deadline - deadline / 10
}
/// `UNKNOWN`: also a status outside 0–16, or none at all.
pub(crate) const UNKNOWN: u8 = 2;
pub(crate) const DEADLINE_EXCEEDED: u8 = 4;
pub(crate) const RESOURCE_EXHAUSTED: u8 = 8;
pub(crate) const UNIMPLEMENTED: u8 = 12;
pub(crate) const INTERNAL: u8 = 13;
pub(crate) const UNAVAILABLE: u8 = 14;

/// A status code's name (`UNKNOWN` for a number outside 0–16).
pub(crate) fn code_name(code: u8) -> &'static str {
    CODES.get(usize::from(code)).copied().unwrap_or("UNKNOWN")
}

/// Whether a server's span has status Error for this code (OpenTelemetry
/// gRPC server spans: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS); the access line is logged at the server-error
/// level for these.
pub(crate) fn is_server_error(code: u8) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Whether the call is reported to Sentry: the codes that mean the server
/// is broken (INTERNAL, UNKNOWN, DATA_LOSS), not that it declined.
pub(crate) fn is_reported(code: u8) -> bool {
    matches!(code, 2 | 13 | 15)
}

/// Whether a `Content-Type` is gRPC's: `application/grpc`, alone or with a
/// `+proto`/`+json` (any) suffix or parameters.
pub(crate) fn is_grpc(content_type: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    content_type.len() >= PREFIX.len()
        && content_type[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && matches!(content_type.get(PREFIX.len()), None | Some(b'+' | b';'))
}

/// The `grpc-status` value as a code: `UNKNOWN` when it is not a number in
/// 0–16 (gRPC's own rule for a status the client cannot read).
pub(crate) fn parse_status(value: &[u8]) -> u8 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|c| usize::from(*c) < CODES.len())
        .unwrap_or(UNKNOWN)
}

/// The `grpc-timeout` header (1–8 ASCII digits and a unit: `H`, `M`, `S`,
/// `m`, `u`, `n`); `None` when malformed.
pub(crate) fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Longest `package.Service/Method` kept as a label; longer is `_OTHER`.
const MAX_METHOD: usize = 256;

/// The call's method as telemetry names it (`rpc.method`, the span name):
/// `package.Service/Method` from the path `/package.Service/Method`;
/// `_OTHER` for a path of another shape and for a method the server did not
/// know (UNIMPLEMENTED), so that unknown methods fold into one series.
pub(crate) fn method_name(path: &str, code: Option<u8>) -> &str {
    let name = path.strip_prefix('/').unwrap_or("");
    let well_formed = name.len() <= MAX_METHOD
        && name.split_once('/').is_some_and(|(service, method)| {
            !service.is_empty()
                && !method.is_empty()
                && !method.contains('/')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/'))
        });
    if well_formed && code != Some(UNIMPLEMENTED) {
        name
    } else {
        "_OTHER"
    }
}

/// The status of opskit's own answer to a gRPC call, from the HTTP status
/// of the problem it answers an HTTP request with: the body limit and the
/// rate limit are RESOURCE_EXHAUSTED, a timeout DEADLINE_EXCEEDED, a panic
/// INTERNAL, shutting down UNAVAILABLE, no such method UNIMPLEMENTED; a
/// request opskit refuses as malformed is INTERNAL, as gRPC maps HTTP 400.
pub(crate) fn code_for_status(status: u16) -> u8 {
    match status {
        413 | 429 => RESOURCE_EXHAUSTED,
        408 | 504 => DEADLINE_EXCEEDED,
        501 | 404 | 405 => UNIMPLEMENTED,
        503 => UNAVAILABLE,
        _ => {
            if status >= 500 || status == 400 {
                INTERNAL
            } else {
                UNKNOWN
            }
        }
    }
}

/// The status a gRPC client gives a response without `grpc-status`, from
/// its HTTP status (gRPC's http-grpc-status-mapping.md).
pub(crate) fn code_for_http(status: u16) -> u8 {
    match status {
        400 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// The characters `grpc-message` percent-encodes: everything outside
/// printable ASCII, and `%` itself (PROTOCOL-HTTP2.md).
const MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// A `grpc-message` value: `message` percent-encoded.
pub(crate) fn encode_message(message: &str) -> String {
    percent_encoding::utf8_percent_encode(message, MESSAGE).to_string()
}

/// A `grpc-message` value as text (percent-decoded; invalid UTF-8 is
/// replaced), for the log and the span.
pub(crate) fn decode_message(value: &[u8]) -> String {
    percent_encoding::percent_decode(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// A Trailers-Only response (HTTP 200, `content-type: application/grpc`,
/// the status in the headers, no body): how opskit answers a gRPC call it
/// ends itself.
pub(crate) fn trailers_only<B: From<Vec<u8>>>(code: u8, message: &str) -> http::Response<B> {
    let mut res = http::Response::new(B::from(Vec::new()));
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", http::HeaderValue::from(u16::from(code)));
    if let Ok(v) = http::HeaderValue::try_from(encode_message(message)) {
        h.insert("grpc-message", v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        assert!(is_grpc(b"application/grpc"));
        assert!(is_grpc(b"application/grpc+proto"));
        assert!(is_grpc(b"Application/GRPC+json"));
        assert!(is_grpc(b"application/grpc;charset=utf-8"));
        assert!(!is_grpc(b"application/grpc-web"));
        assert!(!is_grpc(b"application/json"));
        assert!(!is_grpc(b"application/grp"));
    }

    #[test]
    fn timeouts_parse_with_every_unit_and_refuse_the_malformed() {
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            &b""[..],
            b"S",
            b"123456789S",
            b"10x",
            b"-1S",
            b"1.5S",
            b" 1S",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_outside_the_table_are_unknown() {
        assert_eq!(parse_status(b"0"), 0);
        assert_eq!(parse_status(b"16"), 16);
        assert_eq!(parse_status(b"17"), UNKNOWN);
        assert_eq!(parse_status(b"x"), UNKNOWN);
        assert_eq!(code_name(13), "INTERNAL");
        assert_eq!(code_name(200), "UNKNOWN");
    }

    #[test]
    fn error_sets_follow_the_semantic_conventions() {
        let errors: Vec<_> = (0..17)
            .filter(|c| is_server_error(*c))
            .map(code_name)
            .collect();
        assert_eq!(
            errors,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        let reported: Vec<_> = (0..17).filter(|c| is_reported(*c)).map(code_name).collect();
        assert_eq!(reported, ["UNKNOWN", "INTERNAL", "DATA_LOSS"]);
    }

    #[test]
    fn methods_are_named_from_the_path_and_unknown_ones_fold() {
        assert_eq!(
            method_name("/users.v1.Users/GetUser", Some(0)),
            "users.v1.Users/GetUser"
        );
        assert_eq!(
            method_name("/users.v1.Users/GetUser", None),
            "users.v1.Users/GetUser"
        );
        assert_eq!(
            method_name("/users.v1.Users/Nope", Some(UNIMPLEMENTED)),
            "_OTHER"
        );
        assert_eq!(method_name("/a/b/c", Some(0)), "_OTHER");
        assert_eq!(method_name("/nomethod", Some(0)), "_OTHER");
        assert_eq!(method_name("/a b/c", Some(0)), "_OTHER");
        assert_eq!(
            method_name(&format!("/s/{}", "m".repeat(300)), Some(0)),
            "_OTHER"
        );
    }

    #[test]
    fn messages_round_trip_through_percent_encoding() {
        let m = "100% sure: naïve\r\n";
        let e = encode_message(m);
        assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
        assert_eq!(decode_message(e.as_bytes()), m);
    }

    #[test]
    fn opskit_answers_map_to_grpc_codes() {
        assert_eq!(code_name(code_for_status(413)), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(code_for_status(429)), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(code_for_status(504)), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(code_for_status(500)), "INTERNAL");
        assert_eq!(code_name(code_for_status(503)), "UNAVAILABLE");
        let res = trailers_only::<Vec<u8>>(INTERNAL, "boom 100%");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "13");
        assert_eq!(res.headers()["grpc-message"], "boom 100%25");
        assert_eq!(res.headers()["content-type"], "application/grpc");
    }
}
