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

/// Which propagation formats are read and written: `OTEL_PROPAGATORS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagation {
    /// W3C `traceparent`/`tracestate` (`tracecontext`, the default).
    pub trace_context: bool,
    /// W3C `baggage` carried on unchanged (`baggage`).
    pub baggage: bool,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            trace_context: true,
            baggage: false,
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
}

impl TraceContext {
    /// Joins the caller's trace from its `traceparent`/`tracestate`, or
    /// starts a new sampled one; either way with a new span id.
    pub fn from_headers(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Self {
        Self::from_request(
            &TraceHeaders {
                traceparent: traceparent.into(),
                tracestate: tracestate.into(),
                baggage: HeaderLines::default(),
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
    #[cfg(otlp)]
    pub(crate) fn raw(&self) -> (u128, u64, Option<u64>) {
        (self.trace_id, self.span_id, self.parent_span_id)
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

/// Adds `traceparent` (and `tracestate`, and `baggage` when propagated)
/// for the current request to the headers of an outgoing HTTP call; does
/// nothing outside a request.
pub fn inject(headers: &mut http::HeaderMap) {
    for (name, value) in outgoing_headers() {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// The headers an outgoing call made inside the current request carries,
/// for any HTTP client (`ureq`, `reqwest`, `awc`…): `traceparent`, and
/// `tracestate`/`baggage` when the request brought them. Empty outside a
/// request. Read it on the request's task: a `spawn_blocking` closure or a
/// spawned task does not see the request (capture the headers first).
///
/// ```
/// let headers = opskit::trace::outgoing_headers();
/// assert!(headers.is_empty(), "outside a request");
/// ```
pub fn outgoing_headers() -> Vec<(&'static str, String)> {
    let Some(cx) = current() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(3);
    if cx.propagate {
        out.push(("traceparent", cx.traceparent()));
        if let Some(ts) = cx.tracestate() {
            out.push(("tracestate", ts.to_owned()));
        }
    }
    if let Some(b) = cx.baggage() {
        out.push(("baggage", b.to_owned()));
    }
    out
}

/// A tower layer for HTTP clients (hyper-util's `Client`, `reqwest`
/// through `tower` adapters, tonic channels): every request sent from
/// inside a request carries its trace context on ([`inject`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateLayer;

impl<S> tower_layer::Layer<S> for PropagateLayer {
    type Service = Propagate<S>;
    fn layer(&self, inner: S) -> Propagate<S> {
        Propagate { inner }
    }
}

/// The service of [`PropagateLayer`].
#[derive(Debug, Clone)]
pub struct Propagate<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for Propagate<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        inject(req.headers_mut());
        self.inner.call(req)
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
                    baggage: None,
                    propagate: true,
                };
                assert_eq!(cx.traceparent(), format!("00-{t:032x}-{p:016x}-{f:02x}"));
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
    fn sampling_follows_the_parent_or_the_trace_id_ratio() {
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let sampled = VALID.as_bytes();
        let on = Sampler::default();
        let off = Sampler {
            parent_based: true,
            ratio: 0.0,
        };
        let strict_off = Sampler {
            parent_based: false,
            ratio: 0.0,
        };
        let p = Propagation::default();
        let from = |tp: &[u8], s| TraceContext::from_request(&lines(&[tp], &[], &[]), s, p);
        assert!(from(sampled, off).sampled(), "the caller's decision wins");
        assert!(!from(unsampled, on).sampled());
        assert!(!from(sampled, strict_off).sampled(), "not parent-based");
        assert!(!TraceContext::from_request(&TraceHeaders::default(), off, p).sampled());
        assert!(TraceContext::from_request(&TraceHeaders::default(), on, p).sampled());
        // A ratio of 1/4 samples about a quarter of new traces.
        let quarter = Sampler {
            parent_based: true,
            ratio: 0.25,
        };
        let n = (0..20_000)
            .filter(|_| TraceContext::from_request(&TraceHeaders::default(), quarter, p).sampled())
            .count();
        assert!((4_000..6_000).contains(&n), "{n}");
        // The decision is the trace id's, as OpenTelemetry's TraceIdRatioBased
        // makes it (so every service decides alike): its low 64 bits, shifted
        // right once, below ratio * 2^63. For 1/4 the bound is 2^61, reached
        // at a low half of 2^62; the high 64 bits play no part.
        let high = 0x4bf9_2f35_77b3_4da6_u128 << 64;
        for (low, sampled) in [
            (0u64, true),
            ((1 << 62) - 2, true),
            ((1 << 62) - 1, true),
            (1 << 62, false),
            (0xa3ce_929d_0e0e_4736, false),
            (0x1fff_ffff_ffff_ffff, true),
            (u64::MAX, false),
        ] {
            for id in [u128::from(low), high | u128::from(low)] {
                assert_eq!(quarter.samples_root(id), sampled, "{id:032x}");
            }
        }
        let half = Sampler {
            parent_based: true,
            ratio: 0.5,
        };
        assert!(half.samples_root(0x7fff_ffff_ffff_ffff));
        assert!(!half.samples_root(0x8000_0000_0000_0000));
        assert!(on.samples_root(u128::MAX) && !off.samples_root(0));
    }

    #[test]
    fn propagators_choose_what_is_read() {
        let none = Propagation {
            trace_context: false,
            baggage: false,
        };
        let cx = TraceContext::from_request(
            &lines(&[VALID.as_bytes()], &[], &[b"userId=alice"]),
            Sampler::default(),
            none,
        );
        assert!(cx.parent_span_id_hex().is_none(), "traceparent not read");
        assert!(cx.baggage().is_none());
        let both = Propagation {
            trace_context: true,
            baggage: true,
        };
        let cx = TraceContext::from_request(
            &lines(
                &[VALID.as_bytes()],
                &[],
                &[b"userId=alice,isProduction=false"],
            ),
            Sampler::default(),
            both,
        );
        assert_eq!(cx.baggage(), Some("userId=alice,isProduction=false"));
        let mut h = http::HeaderMap::new();
        {
            let _entered = Entered::enter(&cx);
            inject(&mut h);
        }
        assert_eq!(h["baggage"], "userId=alice,isProduction=false");
        let huge = format!("k={}", "v".repeat(9000));
        let many: Vec<String> = (0..181).map(|i| format!("k{i}=v")).collect();
        let many = many.join(",");
        for bad in [
            huge.as_bytes(),
            many.as_bytes(),
            b"=novalue",
            b"\x01=1",
            b"a b=1",
            b",,",
        ] {
            let cx = TraceContext::from_request(&lines(&[], &[], &[bad]), Sampler::default(), both);
            assert!(cx.baggage().is_none(), "{bad:?}");
        }
    }

    /// The headers of a request with these lines of each name.
    fn lines<'a>(tp: &[&'a [u8]], ts: &[&'a [u8]], bg: &[&'a [u8]]) -> TraceHeaders<'a> {
        TraceHeaders {
            traceparent: tp.iter().copied().collect(),
            tracestate: ts.iter().copied().collect(),
            baggage: bg.iter().copied().collect(),
        }
    }

    #[test]
    fn header_lines_join_and_count() {
        let none = HeaderLines::default();
        assert_eq!((none.value(), none.single(), none.count()), (None, None, 0));
        let one: HeaderLines<'_> = Some(&b"a=1"[..]).into();
        assert_eq!(
            (one.value(), one.single()),
            (Some(&b"a=1"[..]), Some(&b"a=1"[..]))
        );
        let three: HeaderLines<'_> = [&b"a=1"[..], b"", b"b=2"].into_iter().collect();
        assert_eq!(three.value(), Some(&b"a=1,,b=2"[..]));
        assert_eq!((three.single(), three.count()), (None, 3));
    }

    /// The W3C Trace Context test suite's cases (test/test.py), on the parser.
    #[test]
    fn repeated_and_invalid_trace_headers_follow_the_w3c_suite() {
        let both = Propagation {
            trace_context: true,
            baggage: true,
        };
        let cx = |h: TraceHeaders<'_>| TraceContext::from_request(&h, Sampler::default(), both);
        let other = b"00-12345678901234567890123456789011-1234567890123456-01";
        // Two traceparent lines, even equal ones: a new trace, no tracestate.
        for second in [&other[..], VALID.as_bytes()] {
            let c = cx(lines(&[VALID.as_bytes(), second], &[b"foo=1"], &[]));
            assert!(c.parent_span_id_hex().is_none());
            assert_ne!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert!(c.tracestate().is_none());
        }
        let state = |ts: &[&[u8]]| cx(lines(&[VALID.as_bytes()], ts, &[])).tracestate;
        // Several lines are one list, in order; empty lines and members add nothing.
        assert_eq!(
            state(&[b"foo=1,bar=2", b"rojo=1,congo=2", b"", b"baz=3"]).as_deref(),
            Some("foo=1,bar=2,rojo=1,congo=2,baz=3")
        );
        assert_eq!(
            state(&[b"foo=1 \t , \t bar=2, \t baz=3"]).as_deref(),
            Some("foo=1,bar=2,baz=3")
        );
        assert!(state(&[b""]).is_none());
        let key = |n: usize| format!("{}=1", "z".repeat(n));
        let tenant = |t: usize, v: usize| format!("{}@{}=1", "t".repeat(t), "v".repeat(v));
        let members = |n: usize| -> String {
            (0..n)
                .map(|i| format!("bar{i:02}={i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let all_chars = {
            let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
            let value: String = (0x20u8..=0x7e)
                .filter(|b| *b != b',' && *b != b'=')
                .map(char::from)
                .collect();
            format!("{key}={value}")
        };
        for kept in [
            key(256),
            tenant(241, 14),
            members(32),
            all_chars,
            "1abc=x".to_owned(),
            "foo= leading space".to_owned(),
        ] {
            assert_eq!(state(&[kept.as_bytes()]).as_deref(), Some(kept.as_str()));
        }
        for dropped in [
            "foo=1,foo=2".to_owned(),
            "foo=1,foo=1".to_owned(),
            "foo@=1,bar=2".to_owned(),
            "@foo=1,bar=2".to_owned(),
            "foo@@bar=1,bar=2".to_owned(),
            "foo@bar@baz=1,bar=2".to_owned(),
            "foo@1bar=1".to_owned(),
            "FOO=1".to_owned(),
            "foo.bar=1".to_owned(),
            "foo =1".to_owned(),
            "_foo=1".to_owned(),
            "foo=bar=baz".to_owned(),
            "foo=,bar=3".to_owned(),
            "foo".to_owned(),
            format!("foo={}", "v".repeat(257)),
            "foo=caf\u{e9}".to_owned(),
            key(257),
            tenant(242, 1),
            tenant(1, 15),
            members(33),
        ] {
            assert!(state(&[b"ok=1", dropped.as_bytes()]).is_none(), "{dropped}");
        }
        // Duplicates across lines too.
        assert!(state(&[b"foo=1", b"foo=2"]).is_none());
        // Baggage: an invalid member goes alone; the rest, normalized, stays.
        let bag = |bg: &[&[u8]]| cx(lines(&[], &[], bg)).baggage;
        assert_eq!(bag(&[b"a b=1,c=2"]).as_deref(), Some("c=2"));
        assert_eq!(bag(&[b"c=2", b"a b=1"]).as_deref(), Some("c=2"));
        assert_eq!(
            bag(&[b"k = v ; p ; q = 1", b"x=%20y"]).as_deref(),
            Some("k=v;p;q=1,x=%20y")
        );
        assert_eq!(bag(&[b"k=v;bad prop=1,c=2"]).as_deref(), Some("c=2"));
        assert_eq!(
            bag(&[b"k=a b,c=2"]).as_deref(),
            Some("c=2"),
            "space in a value"
        );
        assert_eq!(bag(&[b"k=,c=2"]).as_deref(), Some("k=,c=2"), "empty value");
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
