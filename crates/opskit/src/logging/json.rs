//! A flat JSON line format: `{"timestamp":…,"level":…,"message":…,<event fields>,<span fields>,"target":…}`.
//!
//! Written by hand rather than `fmt::layer().json()` because that format nests
//! span fields under `"span"`/`"spans"` (the issue asks for flat keys such as
//! `request_id` on every line inside a request) and re-parses stored span
//! fields with `serde_json` on every event, which costs tens of thousands of
//! instructions per line. Here span fields are formatted once, when the span
//! is created, as a JSON object's inner text, and spliced into each line.

use std::fmt::{self, Write};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

pub(crate) use crate::request::REQUEST_SPAN_TARGET;

/// Whether a [`Preformat`] layer was built (so the request span's fields
/// are worth formatting up front).
static PREFORMAT_IN_USE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    /// The request span's fields, formatted by [`request_span`] just
    /// before the span is created on this thread and taken by [`Preformat`]
    /// when it sees that span: the same text the span's fields would format
    /// to, without visiting them one by one through `tracing`'s `Visit`
    /// (~1,100 instructions a request for the three ids).
    static REQUEST_SPAN_FIELDS: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

/// opskit's per-request span, whose only job is to put these three ids on
/// every line inside it: ERROR level, so that it exists under any filter but
/// `off`. Where opskit's JSON layer is built, the ids are formatted here,
/// once, and handed to [`Preformat`]; other subscribers visit them as usual.
/// Field names and their formatted keys live side by side, here only.
pub(crate) fn request_span(request_id: &str, trace_id: &str, span_id: &str) -> tracing::Span {
    if !PREFORMAT_IN_USE.load(std::sync::atomic::Ordering::Relaxed) {
        return visited_request_span(request_id, trace_id, span_id);
    }
    let mut fields = String::with_capacity(46 + request_id.len() + trace_id.len() + span_id.len());
    fields.push_str("\"request_id\":");
    let _ = write_json_str(&mut fields, request_id);
    fields.push_str(",\"trace_id\":");
    let _ = write_json_str(&mut fields, trace_id);
    fields.push_str(",\"span_id\":");
    let _ = write_json_str(&mut fields, span_id);
    REQUEST_SPAN_FIELDS.with(|f| f.set(Some(fields)));
    let span = visited_request_span(request_id, trace_id, span_id);
    // Not taken (no `Preformat` in this thread's subscriber, or the span
    // was filtered out): dropped here rather than left for another span.
    REQUEST_SPAN_FIELDS.with(|f| f.take());
    span
}

/// The request span alone: a `Preformat` without prepared text formats its
/// fields through the visitor.
fn visited_request_span(request_id: &str, trace_id: &str, span_id: &str) -> tracing::Span {
    tracing::error_span!(
        target: REQUEST_SPAN_TARGET,
        "request",
        request_id,
        trace_id,
        span_id
    )
}

/// A span's fields as this format writes them (the enrichment of a request
/// is written after the span's own).
pub(crate) type JsonSpanFields = FormattedFields<FlatJsonFields>;

/// Writes `enrichment`'s fields into `text` as members of a JSON object, each
/// after a comma: what follows a request span's own formatted fields.
pub(crate) fn write_enrichment(text: &mut String, enrichment: &crate::request::Enrichment) {
    text.clear();
    for (key, value) in enrichment.fields() {
        // Names are checked (`a-z 0-9 . _ -`): no escaping needed.
        text.push_str(",\"");
        text.push_str(key);
        text.push_str("\":");
        let _ = write_json_str(text, value);
    }
}

fn take_request_span_fields() -> Option<String> {
    REQUEST_SPAN_FIELDS.with(std::cell::Cell::take)
}

/// Formats span and event fields as `"key":value` pairs separated by commas.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJsonFields;

/// Formats one event per line as a flat JSON object.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<'w> FormatFields<'w> for FlatJsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        write_fields(writer, true, fields)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        // Into the `String` itself: through `Writer` every push is a dynamic call.
        write_fields(&mut current.fields, first, fields)
    }
}

/// Writes `fields` as members of a JSON object into `w` (`first`: without a
/// leading comma).
fn write_fields<W: Write>(
    w: W,
    first: bool,
    fields: impl tracing_subscriber::field::RecordFields,
) -> fmt::Result {
    let mut v = JsonVisitor::new(w, first);
    fields.record(&mut v);
    v.result
}

/// Formats a new span's fields into a buffer sized for them up front, before
/// the `fmt` layer would (it starts from an empty `String`, which grew five
/// times for a request span's three fields). The `fmt` layer then finds them
/// formatted and keeps them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Preformat;

impl Preformat {
    pub(crate) fn new() -> Self {
        PREFORMAT_IN_USE.store(true, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

impl<S> tracing_subscriber::Layer<S> for Preformat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if ext.get_mut::<FormattedFields<FlatJsonFields>>().is_some() {
            return;
        }
        if attrs.metadata().target() == REQUEST_SPAN_TARGET {
            if let Some(fields) = take_request_span_fields() {
                ext.insert(FormattedFields::<FlatJsonFields>::new(fields));
                return;
            }
        }
        let mut fields = FormattedFields::<FlatJsonFields>::new(String::with_capacity(
            32 + 48 * attrs.fields().len(),
        ));
        // Straight into the `String` (monomorphic, inlined pushes) rather
        // than through `format_fields`' `Writer`, where each push is a
        // dynamic call: about half the cost of a request span's fields.
        if write_fields(&mut fields.fields, true, attrs).is_ok() {
            ext.insert(fields);
        }
    }
}

impl<S> FormatEvent<S, FlatJsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, FlatJsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        // The line is built in a buffer of our own, with direct (inlined)
        // pushes, and handed to `writer` in one write: each write through
        // `writer` is a dynamic call. Taken out of the cell, so an event
        // logged while formatting (there should be none) gets a fresh one.
        let mut line = LINE.with(|l| {
            l.try_borrow_mut()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default()
        });
        line.clear();
        let result = format_line(ctx, &mut line, event).and_then(|()| writer.write_str(&line));
        if line.capacity() <= 64 << 10 {
            LINE.with(|l| {
                if let Ok(mut l) = l.try_borrow_mut() {
                    *l = line;
                }
            });
        }
        result
    }
}

fn format_line<S>(
    ctx: &FmtContext<'_, S, FlatJsonFields>,
    line: &mut String,
    event: &Event<'_>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    line.push_str("{\"timestamp\":\"");
    crate::time::push_timestamp(line, std::time::SystemTime::now());
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push('"');
    write_fields(&mut *line, false, event)?;
    let push_fields = |line: &mut String, span: tracing_subscriber::registry::SpanRef<'_, S>| {
        let ext = span.extensions();
        if let Some(fields) = ext.get::<FormattedFields<FlatJsonFields>>() {
            if !fields.is_empty() {
                line.push(',');
                line.push_str(fields);
            }
        }
    };
    if let Some(mut scope) = ctx.event_scope() {
        // Most lines have one span (the request's): written without
        // collecting the scope root-first (~200 instructions).
        match (scope.next(), scope.next()) {
            (Some(only), None) => push_fields(line, only),
            (Some(_), Some(_)) => {
                for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
                    push_fields(line, span);
                }
            }
            (None, _) => {}
        }
    }
    line.push_str(",\"target\":");
    write_json_str(line, meta.target())?;
    line.push_str("}\n");
    Ok(())
}

struct JsonVisitor<W: Write> {
    writer: W,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> JsonVisitor<W> {
    fn new(writer: W, first: bool) -> Self {
        Self {
            writer,
            first,
            result: Ok(()),
        }
    }

    fn key(&mut self, field: &Field) -> fmt::Result {
        let name = field.name();
        let first = std::mem::replace(&mut self.first, false);
        self.writer.write_str(if first { "\"" } else { ",\"" })?;
        if plain_name(name) {
            self.writer.write_str(name)?;
        } else {
            Escape(&mut self.writer).write_str(name)?;
        }
        self.writer.write_str("\":")
    }

    fn put(&mut self, field: &Field, f: impl FnOnce(&mut W) -> fmt::Result) {
        // `log` records carry their metadata as fields; it is in the metadata already.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = self.key(field).and_then(|()| f(&mut self.writer));
    }
}

impl<W: Write> Visit for JsonVisitor<W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| write_json_str(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| {
            w.write_str("\"")?;
            write!(Escape(w), "{value:?}")?;
            w.write_str("\"")
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            crate::decimal::write_u64(w, value.unsigned_abs())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        // Status codes and sizes: by hand, as `{value}` goes through the
        // `fmt` machinery (~160 instructions for a three-digit number).
        self.put(field, |w| crate::decimal::write_u64(w, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if let Some(milli) = thousandths(value) {
            // Durations in ms rounded to µs: written by hand, as float
            // formatting cost ~900 instructions per line.
            self.put(field, |w| write_thousandths(w, milli));
        } else if value.is_finite() {
            self.put(field, |w| write!(w, "{value}"));
        } else {
            self.put(field, |w| write!(w, "\"{value}\""));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |w| {
            w.write_str("\"")?;
            write!(Escape(w), "{value}")?;
            w.write_str("\"")
        });
    }
}

/// `value` × 1000 when that is a whole number below 10^15 (a value with at
/// most three decimals, as the access log's `duration_ms`).
fn thousandths(value: f64) -> Option<i64> {
    let scaled = value * 1000.0;
    let in_range = scaled.abs() < 1e15; // false for NaN and infinities too
    if !in_range || scaled.fract() != 0.0 || (value == 0.0 && value.is_sign_negative()) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    let milli = scaled as i64;
    // Only when the decimal reading is exactly the value (then it is also
    // the shortest one, which `{value}` would print).
    (milli as f64 / 1000.0 == value).then_some(milli)
}

/// Writes `milli / 1000` in decimal without trailing zeros: what `{value}`
/// prints for such values (`0.688`, `1.5`, `2`).
fn write_thousandths(w: &mut impl Write, milli: i64) -> fmt::Result {
    if milli < 0 {
        w.write_char('-')?;
    }
    let v = milli.unsigned_abs();
    crate::decimal::write_u64(w, v / 1000)?;
    let frac = (v % 1000) as u32;
    if frac == 0 {
        return Ok(());
    }
    let digits = crate::decimal::digits3(frac);
    w.write_char('.')?;
    w.write_str(digits.trim_end_matches('0'))
}

/// Writes `s` as a JSON string literal.
fn write_json_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_str("\"")?;
    Escape(w).write_str(s)?;
    w.write_str("\"")
}

/// Escapes what passes through it for the inside of a JSON string.
struct Escape<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        loop {
            let i = start + first_special(&bytes[start..]);
            // Special bytes are ASCII: `i` is a char boundary.
            self.0.write_str(&s[start..i])?;
            let Some(&b) = bytes.get(i) else {
                return Ok(());
            };
            match b {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                _ => write!(self.0, "\\u{b:04x}")?,
            }
            start = i + 1;
        }
    }
}

/// Whether the field name `name` needs no escaping. Field names are
/// `&'static str`s from a few hundred call sites, plain almost always, and the
/// same few recur on every line: the answer for plain ones is remembered in a
/// small direct-mapped table keyed by the name's address and length, so a
/// known name costs a load and a compare instead of a scan (scanning every key
/// of the access line was ~1,500 instructions of it). Hand-written: no crate
/// caches per-`&'static str` facts; a collision only evicts, so the table
/// stays 2 KiB whatever the names.
fn plain_name(name: &'static str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    const SLOTS: usize = 256;
    static KNOWN: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
    // Unique per (address, length) for user-space addresses (below 2^47)
    // and names shorter than 2^16 bytes; other names are always scanned.
    let addr = name.as_ptr() as usize as u64;
    if name.len() >= 1 << 16 || addr >= 1 << 47 {
        return first_special(name.as_bytes()) == name.len();
    }
    let key = addr | ((name.len() as u64) << 48);
    let slot = &KNOWN[((addr >> 3) ^ (addr >> 11)) as usize % SLOTS];
    if slot.load(Ordering::Relaxed) == key {
        return true;
    }
    let plain = first_special(name.as_bytes()) == name.len();
    if plain {
        slot.store(key, Ordering::Relaxed);
    }
    plain
}

/// Whether `b` must be escaped inside a JSON string (`"`, `\`, control
/// characters; DEL too, so that log viewers show it).
fn special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// The index of the first byte of `bytes` to escape, or its length. Eight
/// bytes at a time (SWAR): almost all log text has nothing to escape, and a
/// byte-at-a-time scan was the largest single cost of a log line (~7,000
/// instructions per access line under callgrind).
fn first_special(bytes: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // Any byte below 0x20 (exact for bytes below 0x80, and those above
        // are never special), or equal to `"`, `\` or DEL.
        let candidates = (w.wrapping_sub(LO * 0x20) & !w & HI)
            | has_zero(w ^ (LO * u64::from(b'"')))
            | has_zero(w ^ (LO * u64::from(b'\\')))
            | has_zero(w ^ (LO * 0x7f));
        if candidates != 0 {
            if let Some(j) = chunk.iter().position(|&b| special(b)) {
                return i + j;
            }
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| special(b))
        .map_or(bytes.len(), |j| i + j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_decimals_print_as_display_does() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut values: Vec<f64> = vec![
            0.0,
            -0.0,
            0.688,
            1.5,
            2.0,
            1234.567,
            -3.25,
            0.001,
            1e-9,
            0.1 + 0.2,
        ];
        values.extend((0..100_000).map(|_| rng.i64(-10_000_000..10_000_000) as f64 / 1000.0));
        values.extend((0..10_000).map(|_| rng.f64() * 100.0));
        for v in values {
            let mut fast = String::new();
            match thousandths(v) {
                Some(m) => write_thousandths(&mut fast, m).unwrap(),
                None => write!(fast, "{v}").unwrap(),
            }
            assert_eq!(fast, format!("{v}"), "{v:e}");
        }
    }

    /// The word-at-a-time scan agrees with a byte-at-a-time one on every
    /// byte value at every position, and escaping round-trips through serde_json.
    #[test]
    fn escaping_finds_every_special_byte() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    let want = v.iter().position(|&c| special(c)).unwrap_or(len);
                    assert_eq!(first_special(&v), want, "len {len} at {at} byte {b}");
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20_000 {
            let s: String = (0..rng.usize(..40))
                .map(|_| match rng.u8(..6) {
                    0 => char::from(rng.u8(..0x20)),
                    1 => '"',
                    2 => '\\',
                    3 => 'é',
                    4 => '\u{7f}',
                    _ => char::from(rng.u8(0x20..0x7f)),
                })
                .collect();
            let mut out = String::new();
            write_json_str(&mut out, &s).unwrap();
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
        }
    }
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(FlatJsonFields)
                .event_format(FlatJson)
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn flat_fields_with_span_context_and_escaping() {
        let lines = capture(|| {
            let span = tracing::info_span!("request", request_id = "abc-123");
            let _g = span.enter();
            tracing::warn!(
                http.route = "/users/{id}",
                status = 404u64,
                ratio = 0.5,
                ok = false,
                nasty = "quote\" backslash\\ newline\n nul\u{0} é",
                "user {} not found",
                7
            );
        });
        let v = &lines[0];
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "user 7 not found");
        assert_eq!(v["http.route"], "/users/{id}");
        assert_eq!(v["status"], 404);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["ok"], false);
        assert_eq!(v["nasty"], "quote\" backslash\\ newline\n nul\u{0} é");
        assert_eq!(v["request_id"], "abc-123");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(v["target"].as_str().unwrap().contains("json"));
    }

    #[test]
    fn fields_recorded_later_and_nested_spans() {
        let lines = capture(|| {
            let outer = tracing::info_span!("outer", a = 1u64, late = tracing::field::Empty);
            outer.record("late", "yes");
            let _g = outer.enter();
            let inner = tracing::info_span!("inner", b = 2u64);
            let _h = inner.enter();
            tracing::info!("hello");
        });
        assert_eq!(lines[0]["a"], 1);
        assert_eq!(lines[0]["late"], "yes");
        assert_eq!(lines[0]["b"], 2);
    }

    /// The request span's fields formatted up front read exactly as those
    /// the visitor formats, escaping included; without `Preformat` in the
    /// subscriber nothing is left behind for a later span.
    #[test]
    fn request_span_fields_formatted_up_front_match_the_visitor() {
        let lines = |up_front: bool| {
            let buf = Buf::default();
            let out = buf.clone();
            let sub = tracing_subscriber::registry()
                .with(crate::logging::json_layer(move || out.clone()));
            tracing::subscriber::with_default(sub, || {
                for id in ["4f1c-id", "quote\"back\\slash\u{1}", ""] {
                    let (trace_id, span_id) =
                        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
                    let span = if up_front {
                        request_span(id, trace_id, span_id)
                    } else {
                        visited_request_span(id, trace_id, span_id)
                    };
                    span.in_scope(|| tracing::info!(n = 1, "inside"));
                }
            });
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| {
                    // The line as written, less its timestamp.
                    serde_json::from_str::<serde_json::Value>(l).unwrap();
                    let at = l.find("\",\"level\"").unwrap();
                    l[at..].to_owned()
                })
                .collect::<Vec<_>>()
        };
        let (fast, slow) = (lines(true), lines(false));
        assert_eq!(fast.len(), 3);
        assert_eq!(fast, slow);
        assert!(
            fast[1].contains(r#""request_id":"quote\"back\\slash\u0001""#),
            "{}",
            fast[1]
        );
        // A subscriber without `Preformat`: the prepared text is dropped, and
        // the span's fields come from the visitor.
        let lines = capture(|| {
            let span = request_span("x", "t", "s");
            span.in_scope(|| tracing::info!("a"));
            tracing::error_span!("other", k = 1).in_scope(|| tracing::info!("b"));
        });
        assert_eq!(lines[0]["request_id"], "x");
        assert_eq!(lines[1]["k"], 1);
        assert!(lines[1].get("request_id").is_none());
        assert!(take_request_span_fields().is_none());
    }
}
