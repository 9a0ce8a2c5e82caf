//! The facts about one request that every part of opskit reads: the
//! [`Outcome`] an adapter builds once the response is decided, the HTTP
//! method table, and the bounds on what a log line or span carries from the
//! request. A leaf: it imports nothing of the crate's, so the recorder, the
//! metrics, the error reports and the OTel spans all depend on it and not on
//! one another.

/// The target of opskit's per-request log span (see `Recorder::start`).
pub(crate) const REQUEST_SPAN_TARGET: &str = "opskit::request";

use std::net::IpAddr;

/// Bounds on what one access-log line or span may carry from the request.
pub(crate) const MAX_PATH: usize = 2048;
pub(crate) const MAX_USER_AGENT: usize = 512;

/// The methods of RFC 9110 and PATCH, in the order of their codes: every
/// other method is `_OTHER`, as the OpenTelemetry semantic conventions ask
/// (bounded label values and keys).
pub(crate) const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `error.type` of an outbound call (`opskit::client`): the transport
/// error's class (`connect`, `timeout`, `_OTHER`), or the status code from
/// 400 on (a client counts 4xx as failed calls, as the semantic conventions
/// say for CLIENT spans).
pub(crate) fn client_error_type(
    status: Option<u16>,
    error: Option<&'static str>,
) -> Option<std::borrow::Cow<'static, str>> {
    match (error, status) {
        (Some(e), _) => Some(e.into()),
        (None, Some(s)) if s >= 400 => Some(s.to_string().into()),
        _ => None,
    }
}

/// `method`'s index in [`METHODS`], `None` for `_OTHER`.
pub(crate) fn method_index(method: &str) -> Option<usize> {
    METHODS.iter().position(|m| *m == method)
}

/// `method` as a static string when it is one of [`METHODS`] (anything else
/// is `_OTHER`).
pub(crate) fn known_method(method: &str) -> Option<&'static str> {
    method_index(method).map(|i| METHODS[i])
}

/// What an adapter knows once the response is decided.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The request method as received.
    pub method: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The route template that matched (`/users/{id}`), if any.
    pub route: Option<&'a str>,
    /// The response status (499 when the client went away first).
    pub status: u16,
    /// The client's address: the socket peer, or, behind trusted proxies,
    /// the address they forwarded (`client.address`).
    pub client: Option<IpAddr>,
    /// The socket peer (`network.peer.address`): a proxy's address when the
    /// client is behind one.
    pub peer: Option<IpAddr>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// The client closed the connection before the response was ready.
    pub aborted: bool,
    /// The `Host` header (error reports).
    pub host: Option<&'a str>,
    /// The `Accept` header (error reports).
    pub accept: Option<&'a str>,
    /// The `Content-Type` header (error reports).
    pub content_type: Option<&'a str>,
    /// The panic message, when the handler panicked (error reports only;
    /// never sent to the client).
    pub panic: Option<&'a str>,
    /// The request came over HTTPS (metrics' `url_scheme`).
    pub https: bool,
    /// Why it failed when the status does not say: `timeout` (metrics' `error_type`).
    pub error: Option<&'static str>,
    /// The declared request body size.
    pub request_size: Option<u64>,
    /// The response body size, when known before sending.
    pub response_size: Option<u64>,
    /// What the handler added to its request's telemetry
    /// ([`RequestTelemetry`](crate::telemetry::RequestTelemetry)).
    pub enrichment: Option<&'a Enrichment>,
    /// For a gRPC call, how it ended: its outcome is this status, not the
    /// HTTP status (which is 200 for every call that reached the server).
    pub rpc: Option<Rpc<'a>>,
}

/// How a gRPC call ended.
#[derive(Debug, Clone, Copy)]
pub struct Rpc<'a> {
    /// `package.Service/Method` (`rpc.method`), or `_OTHER` for a method the
    /// server does not have.
    pub method: &'a str,
    /// The gRPC status code (0 OK … 16 UNAUTHENTICATED).
    pub code: u8,
    /// The status message (`grpc-message`, decoded), when there is one.
    pub message: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    /// An outcome with status 200 and nothing else known.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            route: None,
            status: 200,
            client: None,
            peer: None,
            user_agent: None,
            aborted: false,
            host: None,
            accept: None,
            content_type: None,
            panic: None,
            https: false,
            error: None,
            request_size: None,
            response_size: None,
            enrichment: None,
            rpc: None,
        }
    }
}

/// Most fields a handler adds to one request's telemetry.
pub(crate) const MAX_FIELDS: usize = 16;
/// Longest field name, in bytes.
pub(crate) const MAX_KEY: usize = 64;
/// Longest field value, in bytes (longer ones are cut at a character boundary).
pub(crate) const MAX_VALUE: usize = 256;

/// The fields a handler added to its request's telemetry (`user.id`,
/// `tenant`, …) and the route it named, bounded: at most 16 fields, names of
/// at most 64 bytes, values of at most 256.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrichment {
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) route: Option<String>,
}

impl Enrichment {
    /// The fields, in the order they were first set.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The route template the handler named (behind a fallback, say).
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }
}

thread_local! {
    /// Set when request code on this thread added to its request's
    /// telemetry: the request scope moves it to the request (so a request
    /// without enrichment pays one flag check at its end, nothing more).
    static ENRICHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes that the request running on this thread was enriched.
pub(crate) fn mark_enriched() {
    ENRICHED.with(|e| e.set(true));
}

/// Swaps this thread's enrichment mark for `mark`, returning the old one.
pub(crate) fn swap_enriched(mark: bool) -> bool {
    ENRICHED.with(|e| e.replace(mark))
}

/// A header value as text for the log and the span: its valid UTF-8 (RFC
/// 9110 lets a value carry bytes beyond ASCII, and clients send UTF-8 in
/// `User-Agent`), up to the first byte that is not; `None` when that leaves
/// nothing. `HeaderValue::to_str` refuses anything beyond visible ASCII.
pub(crate) fn header_text(value: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(value) {
        Ok(text) => text,
        // The prefix up to `valid_up_to` is valid UTF-8 by definition.
        Err(e) => std::str::from_utf8(&value[..e.valid_up_to()]).unwrap_or_default(),
    };
    Some(text).filter(|t| !t.is_empty())
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Field names opskit writes itself: a handler cannot set them.
const RESERVED: [&str; 8] = [
    "request_id",
    "trace_id",
    "span_id",
    "message",
    "level",
    "timestamp",
    "target",
    "duration_ms",
];

/// Prefixes of opskit's own attribute names (OpenTelemetry's semantic
/// conventions): a handler cannot set them either (`user.` is the handler's).
const RESERVED_PREFIXES: [&str; 8] = [
    "http.",
    "url.",
    "client.",
    "server.",
    "network.",
    "user_agent.",
    "error.",
    "otel.",
];

/// Whether `key` may name an enrichment field (and so a declared label):
/// 1 to [`MAX_KEY`] bytes of `a-z 0-9 . _ -`, none of opskit's own names.
pub(crate) fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !RESERVED.contains(&key)
        && !RESERVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_keeps_utf8_and_stops_at_a_bad_byte() {
        assert_eq!(header_text(b"curl/8"), Some("curl/8"));
        assert_eq!(header_text("Ünïcødé 漢字".as_bytes()), Some("Ünïcødé 漢字"));
        assert_eq!(header_text(b"caf\xe9 au lait"), Some("caf"));
        assert_eq!(header_text(b"\xff"), None);
        assert_eq!(header_text(b""), None);
        let long = format!("{}{}", "a".repeat(511), "é".repeat(50));
        assert_eq!(truncate(&long, MAX_USER_AGENT), "a".repeat(511));
    }

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        assert_eq!(known_method("GET"), Some("GET"));
        assert_eq!(known_method("PATCH"), Some("PATCH"));
        assert_eq!(known_method("get"), None);
        assert_eq!(known_method("PROPFIND"), None);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
