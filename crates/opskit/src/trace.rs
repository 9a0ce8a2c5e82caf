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

impl TraceContext {
    /// Joins the caller's trace from its `traceparent`/`tracestate`, or
    /// starts a new sampled one; either way with a new span id.
    pub fn from_headers(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Self {
        Self::from_request(
            [traceparent, tracestate, None],
            Sampler::default(),
            Propagation::default(),
        )
    }

    /// Joins or starts the trace of a request from its `traceparent`,
    /// `tracestate` and `baggage` headers, deciding sampling with `sampler`
    /// and reading only the formats `propagation` names.
    pub fn from_request(
        headers: [Option<&[u8]>; 3],
        sampler: Sampler,
        propagation: Propagation,
    ) -> Self {
        let [traceparent, tracestate, baggage] = headers;
        let baggage = baggage
            .filter(|_| propagation.baggage)
            .and_then(parse_baggage)
            .map(std::sync::Arc::from);
        let joined = traceparent
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
                    tracestate: tracestate
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

/// A `baggage` header carried on only when it is within the W3C limits
/// (8192 bytes, 180 members) and visible ASCII; otherwise dropped whole.
fn parse_baggage(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if s.is_empty()
        || s.len() > MAX_BAGGAGE
        || s.split(',').count() > 180
        || !s.bytes().all(|b| (0x20..=0x7e).contains(&b))
        || !s.split(',').all(|m| {
            m.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .is_some_and(|(k, _)| !k.trim().is_empty())
        })
    {
        return None;
    }
    Some(s.to_owned())
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
        let from = |tp: &[u8], s| TraceContext::from_request([Some(tp), None, None], s, p);
        assert!(from(sampled, off).sampled(), "the caller's decision wins");
        assert!(!from(unsampled, on).sampled());
        assert!(!from(sampled, strict_off).sampled(), "not parent-based");
        assert!(!TraceContext::from_request([None; 3], off, p).sampled());
        assert!(TraceContext::from_request([None; 3], on, p).sampled());
        // A ratio of 1/4 samples about a quarter of new traces.
        let quarter = Sampler {
            parent_based: true,
            ratio: 0.25,
        };
        let n = (0..20_000)
            .filter(|_| TraceContext::from_request([None; 3], quarter, p).sampled())
            .count();
        assert!((4_000..6_000).contains(&n), "{n}");
        // The decision is the trace id's: the same for every service.
        let id = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
        assert_eq!(quarter.samples_root(id), quarter.samples_root(id));
    }

    #[test]
    fn propagators_choose_what_is_read() {
        let none = Propagation {
            trace_context: false,
            baggage: false,
        };
        let cx = TraceContext::from_request(
            [Some(VALID.as_bytes()), None, Some(b"userId=alice")],
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
            [
                Some(VALID.as_bytes()),
                None,
                Some(b"userId=alice,isProduction=false"),
            ],
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
        for bad in [huge.as_bytes(), b"=novalue", b"a=1,\x01"] {
            let cx = TraceContext::from_request([None, None, Some(bad)], Sampler::default(), both);
            assert!(cx.baggage().is_none());
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
