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
    baggage: Option<std::sync::Arc<str>>,
    /// `traceparent`/`tracestate` go on to outgoing calls (`OTEL_PROPAGATORS`).
    propagate: bool,
    /// The caller's context, when it was only linked (`OPSKIT_TRACE_UNTRUSTED`):
    /// `(trace id, span id, flags)`.
    linked: Option<(u128, u64, u8)>,
}

/// How requests are sampled: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
///
/// A parent-based sampler follows the caller's `sampled` flag when the
/// request joins a trace; a root (or any request, when not parent-based) is
/// sampled when its trace id falls under `ratio` — the same rule as
/// OpenTelemetry's `TraceIdRatioBased`, so every service of a trace agrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Follow the caller's decision when there is one.
    pub parent_based: bool,
    /// Share of root traces sampled, 0 to 1 (`always_on` is 1, `always_off` 0).
    pub ratio: f64,
}

impl Default for Sampler {
    /// `parentbased_always_on`, the OpenTelemetry default.
    fn default() -> Self {
        Self {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

impl Sampler {
    /// Whether a trace with this id is sampled as a root.
    pub fn samples_root(&self, trace_id: u128) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        if self.ratio <= 0.0 {
            return false;
        }
        // As opentelemetry_sdk's TraceIdRatioBased: the low 64 bits, shifted
        // right once, against ratio * 2^63.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bound = (self.ratio * (1u64 << 63) as f64) as u64;
        ((trace_id as u64) >> 1) < bound
    }
}

/// Which propagation formats are read and written (`OTEL_PROPAGATORS`),
/// and whose incoming trace context is joined (`OPSKIT_TRACE_UNTRUSTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagation {
    /// W3C `traceparent`/`tracestate` (`tracecontext`, the default).
    pub trace_context: bool,
    /// W3C `baggage` carried on unchanged (`baggage`).
    pub baggage: bool,
    /// Whose `traceparent` is joined; the others' is only linked.
    pub incoming: IncomingTrace,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            trace_context: true,
            baggage: false,
            incoming: IncomingTrace::Join,
        }
    }
}

/// Whose incoming `traceparent` a request joins: `OPSKIT_TRACE_UNTRUSTED`.
///
/// A joined context is the parent and, with a parent-based sampler, decides
/// the sampling. A *linked* one does neither (`otelhttp.WithPublicEndpoint`):
/// the request starts its own trace, sampled by the ratio alone, and its span
/// links to the caller's context; an internet client cannot force sampling.
///
/// ```
/// use opskit::trace::{IncomingTrace, Propagation, Sampler, TraceContext, TraceHeaders};
/// let headers = TraceHeaders {
///     traceparent: Some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..]).into(),
///     ..Default::default()
/// };
/// let never = Sampler { parent_based: true, ratio: 0.0 };
/// let link = Propagation { incoming: IncomingTrace::Link, ..Default::default() };
/// let cx = TraceContext::from_request(&headers, never, link);
/// assert_ne!(cx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(!cx.sampled() && cx.parent_span_id_hex().is_none());
/// assert_eq!(
///     cx.linked_traceparent().as_deref(),
///     Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
/// );
/// // From a trusted proxy, `Link` joins.
/// let proxied = TraceHeaders { trusted: true, ..headers };
/// let cx = TraceContext::from_request(&proxied, never, link);
/// assert_eq!(cx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(cx.sampled() && cx.linked_traceparent().is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncomingTrace {
    /// Every caller's `traceparent` is joined (`join`, the default).
    #[default]
    Join,
    /// Joined from a trusted proxy (`OPSKIT_TRUSTED_PROXIES`), linked from
    /// anyone else (`link`).
    Link,
    /// Linked whoever sent it, trusted proxies included (`link-all`: a
    /// proxy that forwards its clients' headers as they came).
    LinkAll,
}

impl IncomingTrace {
    /// Whether a context from a peer that is (or is not) a trusted proxy is joined.
    pub fn joins(self, trusted: bool) -> bool {
        match self {
            Self::Join => true,
            Self::Link => trusted,
            Self::LinkAll => false,
        }
    }
}

/// Longest `baggage` carried on (the W3C Baggage limit).
const MAX_BAGGAGE: usize = 8192;

/// The field lines of one request header, in order, as an adapter finds
/// them. Several lines of a list header are one comma-joined list (RFC 9110
/// §5.3): the first line is borrowed, and only a second one costs a copy.
///
/// ```
/// use opskit::trace::HeaderLines;
/// let lines: HeaderLines<'_> = [&b"a=1"[..], b"b=2"].into_iter().collect();
/// assert_eq!(lines.value(), Some(&b"a=1,b=2"[..]));
/// assert_eq!(lines.count(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderLines<'a> {
    first: Option<&'a [u8]>,
    joined: Option<Vec<u8>>,
    count: usize,
}

impl<'a> HeaderLines<'a> {
    /// Adds the next line.
    pub fn push(&mut self, line: &'a [u8]) {
        self.count += 1;
        match (&mut self.joined, self.first) {
            (Some(joined), _) => {
                joined.push(b',');
                joined.extend_from_slice(line);
            }
            (None, Some(first)) => {
                let mut joined = Vec::with_capacity(first.len() + 1 + line.len());
                joined.extend_from_slice(first);
                joined.push(b',');
                joined.extend_from_slice(line);
                self.joined = Some(joined);
            }
            (None, None) => self.first = Some(line),
        }
    }

    /// How many lines there were.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The lines as one comma-joined value; `None` without any line.
    pub fn value(&self) -> Option<&[u8]> {
        self.joined.as_deref().or(self.first)
    }

    /// The value when there was exactly one line (a header that is not a
    /// list, such as `traceparent`, is invalid when repeated).
    pub fn single(&self) -> Option<&'a [u8]> {
        self.first.filter(|_| self.count == 1)
    }
}

impl<'a> From<Option<&'a [u8]>> for HeaderLines<'a> {
    fn from(line: Option<&'a [u8]>) -> Self {
        line.into_iter().collect()
    }
}

impl<'a> FromIterator<&'a [u8]> for HeaderLines<'a> {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(lines: I) -> Self {
        let mut out = Self::default();
        for line in lines {
            out.push(line);
        }
        out
    }
}

/// The W3C Trace Context and Baggage headers of a request: every line of
/// `traceparent`, `tracestate` and `baggage`, for [`TraceContext::from_request`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders<'a> {
    /// `traceparent` lines (valid only when there is exactly one).
    pub traceparent: HeaderLines<'a>,
    /// `tracestate` lines (one list).
    pub tracestate: HeaderLines<'a>,
    /// `baggage` lines (one list).
    pub baggage: HeaderLines<'a>,
    /// The request came from a trusted proxy (`OPSKIT_TRUSTED_PROXIES`):
    /// [`IncomingTrace::Link`] joins its context.
    pub trusted: bool,
}

impl TraceContext {
    /// Joins the caller's trace from its `traceparent`/`tracestate`, or
    /// starts a new sampled one; either way with a new span id.
    pub fn from_headers(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Self {
        Self::from_request(
            &TraceHeaders {
                traceparent: traceparent.into(),
                tracestate: tracestate.into(),
                ..TraceHeaders::default()
            },
            Sampler::default(),
            Propagation::default(),
        )
    }

    /// Joins or starts the trace of a request from its `traceparent`,
    /// `tracestate` and `baggage` lines, deciding sampling with `sampler`
    /// and reading only the formats `propagation` names. More than one
    /// `traceparent` line is invalid (a new trace starts); several
    /// `tracestate` or `baggage` lines are one list.
    pub fn from_request(
        headers: &TraceHeaders<'_>,
        sampler: Sampler,
        propagation: Propagation,
    ) -> Self {
        let baggage = headers
            .baggage
            .value()
            .filter(|_| propagation.baggage)
            .and_then(parse_baggage)
            .map(std::sync::Arc::from);
        let joined = headers
            .traceparent
            .single()
            .filter(|_| propagation.trace_context)
            .and_then(parse_traceparent);
        // A context that is not joined is kept as a link: the request
        // starts a trace of its own below.
        let (joined, linked) = match joined {
            Some(caller) if !propagation.incoming.joins(headers.trusted) => (None, Some(caller)),
            joined => (joined, None),
        };
        match joined {
            Some((trace_id, parent, flags)) => {
                let sampled = if sampler.parent_based {
                    flags & 1 == 1
                } else {
                    sampler.samples_root(trace_id)
                };
                Self {
                    trace_id,
                    span_id: new_span_id(),
                    parent_span_id: Some(parent),
                    flags: (flags & !1) | u8::from(sampled),
                    tracestate: headers
                        .tracestate
                        .value()
                        .and_then(parse_tracestate)
                        .map(std::sync::Arc::from),
                    baggage,
                    propagate: true,
                    linked: None,
                }
            }
            None => {
                let trace_id = new_trace_id();
                Self {
                    trace_id,
                    span_id: new_span_id(),
                    parent_span_id: None,
                    flags: u8::from(sampler.samples_root(trace_id)),
                    tracestate: None,
                    baggage,
                    propagate: propagation.trace_context,
                    linked,
                }
            }
        }
    }

    /// The `baggage` carried on, when `OTEL_PROPAGATORS` includes `baggage`.
    pub fn baggage(&self) -> Option<&str> {
        self.baggage.as_deref()
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

    /// The caller's context, as its `traceparent`, when the request only
    /// linked it ([`IncomingTrace`]) instead of joining it.
    pub fn linked_traceparent(&self) -> Option<String> {
        let (trace_id, span_id, flags) = self.linked?;
        Some(format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}"))
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
        String::from_utf8_lossy(&self.header_bytes()).into_owned()
    }

    /// `traceparent`/`traceresponse` as bytes on the stack. The trace id's
    /// and span id's digits are at `TRACE_ID_DIGITS` and `SPAN_ID_DIGITS`.
    pub(crate) fn header_bytes(&self) -> [u8; 55] {
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id.to_be_bytes(), &mut b[TRACE_ID_DIGITS]);
        hex_into(&self.span_id.to_be_bytes(), &mut b[SPAN_ID_DIGITS]);
        hex_into(&[self.flags], &mut b[53..55]);
        b
    }
}

/// Where [`TraceContext::header_bytes`] puts the trace id's digits.
pub(crate) const TRACE_ID_DIGITS: std::ops::Range<usize> = 3..35;
/// Where it puts the span id's digits.
pub(crate) const SPAN_ID_DIGITS: std::ops::Range<usize> = 36..52;

/// Writes `bytes` as lower-case hex digits into `out` (twice as long), a
/// byte (two digits) per table lookup: by hand, as `{:032x}` through `fmt`
/// cost ~700 instructions per id, and a nibble at a time on a `u128` ~280.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        t
    };
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(*b)]);
    }
}

impl TraceContext {
    /// `(trace id, span id, caller's span id)` as numbers.
    #[cfg(any(otlp, feature = "sentry"))]
    pub(crate) fn raw(&self) -> (u128, u64, Option<u64>) {
        (self.trace_id, self.span_id, self.parent_span_id)
    }

    /// The linked caller's `(trace id, span id, flags)`, if any.
    #[cfg(otlp)]
    pub(crate) fn raw_link(&self) -> Option<(u128, u64, u8)> {
        self.linked
    }

    /// This request's span as the parent of spans a handler starts with an
    /// OpenTelemetry tracer (for example from [`crate::Ops::tracer_provider`]):
    /// `tracer.start_with_context("query", &cx.otel_context())`.
    #[cfg(otlp)]
    pub fn otel_context(&self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let state = self
            .tracestate
            .as_deref()
            .and_then(|t| t.parse::<TraceState>().ok())
            .unwrap_or_default();
        let sc = SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            TraceFlags::new(self.flags),
            false,
            state,
        );
        opentelemetry::Context::new().with_remote_span_context(sc)
    }
}

/// Optional white space around list separators (RFC 9110 §5.6.3).
fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = s.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(a), Some(b)) => &s[a..=b],
        _ => &[],
    }
}

/// An RFC 9110 token (a W3C Baggage key).
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// A W3C Baggage value: `baggage-octet`s (visible ASCII but `"`, `,`, `;`
/// and a backslash).
fn is_baggage_value(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

/// One baggage list member (`key=value`, then `;property` parts) in its
/// canonical form, without white space; `None` when malformed.
fn baggage_member(m: &[u8]) -> Option<String> {
    let mut parts = m.split(|&b| b == b';');
    let (key, value) = split_eq(parts.next()?)?;
    if !is_token(key) || !is_baggage_value(value) {
        return None;
    }
    let mut out = String::with_capacity(m.len());
    out.push_str(std::str::from_utf8(key).ok()?);
    out.push('=');
    out.push_str(std::str::from_utf8(value).ok()?);
    for property in parts {
        let property = trim_ows(property);
        let (key, value) = match split_eq(property) {
            Some((k, v)) => (k, Some(v)),
            None => (property, None),
        };
        if !is_token(key) || !value.is_none_or(is_baggage_value) {
            return None;
        }
        out.push(';');
        out.push_str(std::str::from_utf8(key).ok()?);
        if let Some(v) = value {
            out.push('=');
            out.push_str(std::str::from_utf8(v).ok()?);
        }
    }
    Some(out)
}

/// `key OWS "=" OWS value`, split and trimmed.
fn split_eq(kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = kv.iter().position(|&b| b == b'=')?;
    Some((trim_ows(&kv[..at]), trim_ows(&kv[at + 1..])))
}

/// The `baggage` carried on: its well-formed members, each as it came
/// (white space removed). A malformed member (`a b=1`, no `=`) is dropped
/// alone, as a W3C Baggage receiver may; a list over the W3C limits
/// (8192 bytes, 180 members) is dropped whole.
fn parse_baggage(v: &[u8]) -> Option<String> {
    if v.len() > MAX_BAGGAGE {
        return None;
    }
    let mut out = String::new();
    let mut members = 0;
    for m in v.split(|&b| b == b',').map(trim_ows) {
        if m.is_empty() {
            continue;
        }
        let Some(member) = baggage_member(m) else {
            continue;
        };
        members += 1;
        if members > 180 {
            return None;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&member);
    }
    (!out.is_empty()).then_some(out)
}

pub(crate) fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

pub(crate) fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

/// Lower-case hex only, as the spec requires (a table lookup per digit).
fn hex(s: &[u8]) -> Option<u128> {
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    // Sixteen digits at a time into a `u64`: shifting a `u128` per digit
    // costs twice as much.
    let mut bad = 0u8;
    let mut half = |s: &[u8]| {
        let mut v: u64 = 0;
        for &c in s {
            let d = TABLE[usize::from(c)];
            bad |= d;
            v = (v << 4) | u64::from(d & 0x0f);
        }
        v
    };
    let split = s.len().saturating_sub(16);
    let (high, low) = s.split_at(split);
    let v = (u128::from(half(high)) << 64) | u128::from(half(low));
    (bad & 0x80 == 0 && high.len() <= 16).then_some(v)
}

/// `version-traceid-parentid-flags`; `None` for anything the spec says to
/// ignore.
pub(crate) fn parse_traceparent(v: &[u8]) -> Option<(u128, u64, u8)> {
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

/// A `tracestate` list-member key: `simple-key` (a lower-case letter or a
/// digit, then up to 255 of `a-z0-9_-*/`) or `tenant@system` (up to 241
/// and 14 characters, the system starting with a letter).
fn tracestate_key(k: &[u8]) -> bool {
    let rest = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(b))
    };
    let starts = |s: &[u8], digit_ok: bool| {
        s.first()
            .is_some_and(|b| b.is_ascii_lowercase() || (digit_ok && b.is_ascii_digit()))
    };
    match k.iter().position(|&b| b == b'@') {
        None => k.len() <= 256 && starts(k, true) && rest(k),
        Some(at) => {
            let (tenant, system) = (&k[..at], &k[at + 1..]);
            tenant.len() <= 241
                && system.len() <= 14
                && starts(tenant, true)
                && starts(system, false)
                && rest(tenant)
                && rest(system)
        }
    }
}

/// A `tracestate` value: 1 to 256 printable characters, no `,` or `=`, not
/// ending in a space.
fn tracestate_value(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.last() != Some(&b' ')
        && v.iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

/// The `tracestate` carried on, only when it is small and well-formed: at
/// most 32 members and 512 bytes, every key and value valid, no key twice.
/// Otherwise it is dropped whole (as the spec allows), never half-kept.
fn parse_tracestate(v: &[u8]) -> Option<String> {
    let mut members: Vec<(&[u8], &[u8])> = Vec::new();
    for m in v.split(|&b| b == b',').map(trim_ows) {
        if m.is_empty() {
            continue;
        }
        let at = m.iter().position(|&b| b == b'=')?;
        let (key, value) = (&m[..at], &m[at + 1..]);
        if members.len() == 32
            || !tracestate_key(key)
            || !tracestate_value(value)
            || members.iter().any(|(k, _)| *k == key)
        {
            return None;
        }
        members.push((key, value));
    }
    let mut out = String::new();
    for (key, value) in members {
        if !out.is_empty() {
            out.push(',');
        }
        // Checked above: ASCII.
        out.push_str(std::str::from_utf8(key).ok()?);
        out.push('=');
        out.push_str(std::str::from_utf8(value).ok()?);
    }
    (!out.is_empty() && out.len() <= MAX_TRACESTATE).then_some(out)
}

mod propagate;
pub(crate) use propagate::with_current;
#[allow(deprecated)]
pub use propagate::{current, inject, outgoing_headers, Propagate, PropagateLayer};
pub(crate) use propagate::{inject_context, Entered};

#[cfg(test)]
mod tests;
