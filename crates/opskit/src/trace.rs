//! W3C Trace Context: every request joins its caller's trace (`traceparent`,
//! `tracestate`) or starts one, gets a span id of its own, carries both on
//! every log line (`trace_id`, `span_id`) and answers them in `traceresponse`
//! so users can quote the trace id in bug reports. Outgoing calls made while
//! handling the request carry the context on with [`inject`].
//!
//! Parsing follows Trace Context Level 1 strictly: a malformed, all-zero,
//! upper-case or `ff`-versioned `traceparent` is ignored and a new trace
//! starts — never an error. Written here (a few dozen lines) rather than
//! through an OpenTelemetry propagator so that it costs no allocation on
//! the way in and works without an exporter.
//!
//! ```
//! use opskit::trace::TraceContext;
//! let cx = TraceContext::from_headers(
//!     Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
//!     Some(b"congo=t61rcWkgMzE"),
//! );
//! assert_eq!(cx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(cx.parent_span_id_hex().as_deref(), Some("00f067aa0ba902b7"));
//! assert!(cx.sampled());
//! // A malformed header starts a new trace.
//! let fresh = TraceContext::from_headers(Some(b"00-XYZ"), None);
//! assert_ne!(fresh.trace_id_hex(), cx.trace_id_hex());
//! assert!(fresh.parent_span_id_hex().is_none());
//! ```

use std::fmt::Write;

/// Longest `tracestate` carried on (the spec's minimum to propagate).
const MAX_TRACESTATE: usize = 512;

/// A request's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    flags: u8,
    tracestate: Option<std::sync::Arc<str>>,
}

impl TraceContext {
    /// Joins the caller's trace from its `traceparent`/`tracestate`, or
    /// starts a new sampled one; either way with a new span id.
    pub fn from_headers(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                span_id: new_span_id(),
                parent_span_id: Some(parent),
                flags,
                tracestate: tracestate
                    .and_then(parse_tracestate)
                    .map(std::sync::Arc::from),
            },
            None => Self {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                parent_span_id: None,
                flags: 1,
                tracestate: None,
            },
        }
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// This request's span id, 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The caller's span id, when the request came with a valid `traceparent`.
    pub fn parent_span_id_hex(&self) -> Option<String> {
        self.parent_span_id.map(|p| format!("{p:016x}"))
    }

    /// Whether the trace is sampled (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The `tracestate` carried on, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The `traceparent` for an outgoing call made while handling this
    /// request (this request's span is the caller).
    pub fn traceparent(&self) -> String {
        self.with_version()
    }

    /// The `traceresponse` answer (W3C Trace Context Level 2 draft): the
    /// same shape as `traceparent`, naming this request's span.
    pub fn traceresponse(&self) -> String {
        self.with_version()
    }

    fn with_version(&self) -> String {
        let mut s = String::with_capacity(55);
        let _ = write!(
            s,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        );
        s
    }
}

/// Hex digits of an id, formatted where they are written (no allocation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceIdHex(pub(crate) u128);

impl std::fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Hex digits of a span id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanIdHex(pub(crate) u64);

impl std::fmt::Display for SpanIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl TraceContext {
    pub(crate) fn ids(&self) -> (TraceIdHex, SpanIdHex) {
        (TraceIdHex(self.trace_id), SpanIdHex(self.span_id))
    }
}

fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

/// Lower-case hex only, as the spec requires.
fn hex(s: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// `version-traceid-parentid-flags`; `None` for anything the spec says to
/// ignore.
pub fn parse_traceparent(v: &[u8]) -> Option<(u128, u64, u8)> {
    let v = v.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex(&v[..2])?;
    // Version 00 is exactly 55 characters; a later version may add fields
    // after a dash; `ff` is forbidden.
    match version {
        0xff => return None,
        0 if v.len() != 55 => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex(&v[3..35])?;
    let parent = u64::try_from(hex(&v[36..52])?).ok()?;
    let flags = u8::try_from(hex(&v[53..55])?).ok()?;
    if trace_id == 0 || parent == 0 {
        return None;
    }
    Some((trace_id, parent, flags))
}

/// A `tracestate` carried on only when it is small and well-formed: at most
/// 32 `key=value` members and 512 bytes of visible ASCII; otherwise dropped
/// whole (as the spec allows), never half-kept.
fn parse_tracestate(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if s.is_empty() || s.len() > MAX_TRACESTATE {
        return None;
    }
    let members: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > 32 {
        return None;
    }
    let well_formed = members.iter().all(|m| {
        m.split_once('=').is_some_and(|(k, val)| {
            !k.is_empty()
                && k.len() <= 256
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b))
                && !val.is_empty()
                && val
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        })
    });
    well_formed.then(|| members.join(","))
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<TraceContext>> = const { std::cell::RefCell::new(None) };
}

/// Makes `cx` the current trace context of this thread until dropped
/// (adapters hold one around every poll of a request's future, so code in
/// the handler sees its request's context; tasks it spawns do not).
pub(crate) struct Entered(Option<TraceContext>);

impl Entered {
    pub(crate) fn enter(cx: &TraceContext) -> Self {
        Self(CURRENT.with(|c| c.replace(Some(cx.clone()))))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The current request's trace context, inside a request.
pub fn current() -> Option<TraceContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Adds `traceparent` (and `tracestate`) for the current request to the
/// headers of an outgoing HTTP call; does nothing outside a request.
pub fn inject(headers: &mut http::HeaderMap) {
    let Some(cx) = current() else { return };
    if let Ok(v) = http::HeaderValue::from_str(&cx.traceparent()) {
        headers.insert("traceparent", v);
    }
    if let Some(ts) = cx
        .tracestate()
        .and_then(|t| http::HeaderValue::from_str(t).ok())
    {
        headers.insert("tracestate", ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn hostile_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(parse_traceparent(VALID.as_bytes()).is_some());
        // A later version may append fields after a dash.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(parse_traceparent(v1.as_bytes()).is_some());
    }

    /// Property test (seeded, 200,000 cases): arbitrary bytes and random
    /// mutations of a valid header never panic; whatever parses has non-zero
    /// ids and round-trips through the header we send.
    #[test]
    fn parsing_random_input_never_panics_and_round_trips() {
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..200_000 {
            let input: Vec<u8> = if i % 2 == 0 {
                let len = rng.usize(..80);
                (0..len).map(|_| rng.u8(..)).collect()
            } else {
                let mut v = VALID.as_bytes().to_vec();
                for _ in 0..rng.usize(1..4) {
                    match rng.u8(..3) {
                        0 => {
                            let at = rng.usize(..v.len());
                            v[at] = b"0123456789abcdefABCDEF-xz \x00\xff"[rng.usize(..27)];
                        }
                        1 if v.len() > 1 => {
                            v.remove(rng.usize(..v.len()));
                        }
                        _ => {
                            let at = rng.usize(..=v.len());
                            v.insert(at, rng.u8(..));
                        }
                    }
                }
                v
            };
            if let Some((t, p, f)) = parse_traceparent(&input) {
                assert!(t != 0 && p != 0);
                let cx = TraceContext {
                    trace_id: t,
                    span_id: p,
                    parent_span_id: None,
                    flags: f,
                    tracestate: None,
                };
                assert_eq!(
                    parse_traceparent(cx.traceparent().as_bytes()),
                    Some((t, p, f))
                );
            }
            let cx = TraceContext::from_headers(Some(&input), Some(&input));
            assert_eq!(cx.trace_id_hex().len(), 32);
            assert!(cx.tracestate().is_none_or(|s| s.len() <= MAX_TRACESTATE));
        }
    }

    #[test]
    fn inject_carries_the_current_request_on() {
        let mut h = http::HeaderMap::new();
        inject(&mut h);
        assert!(h.is_empty(), "outside a request: nothing");
        let cx = TraceContext::from_headers(Some(VALID.as_bytes()), Some(b"rojo=1"));
        {
            let _entered = Entered::enter(&cx);
            inject(&mut h);
        }
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(
            parse_traceparent(tp.as_bytes()).map(|p| p.0),
            Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736)
        );
        assert_eq!(tp, cx.traceparent());
        assert_eq!(h["tracestate"], "rojo=1");
        assert!(current().is_none(), "left again");
    }

    #[test]
    fn tracestate_is_kept_only_when_well_formed() {
        let parent = Some(VALID.as_bytes());
        let keep =
            TraceContext::from_headers(parent, Some(b"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"));
        assert_eq!(
            keep.tracestate(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        let big = "a=".to_owned() + &"x".repeat(600);
        assert!(TraceContext::from_headers(parent, Some(big.as_bytes()))
            .tracestate()
            .is_none());
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(
            TraceContext::from_headers(parent, Some(many.join(",").as_bytes()))
                .tracestate()
                .is_none()
        );
        assert!(TraceContext::from_headers(parent, Some(b"novalue"))
            .tracestate()
            .is_none());
        // Without a valid traceparent, tracestate is dropped too.
        assert!(TraceContext::from_headers(None, Some(b"rojo=1"))
            .tracestate()
            .is_none());
    }
}
