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
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

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
        let mut v = JsonVisitor::new(writer, true);
        fields.record(&mut v);
        v.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut v = JsonVisitor::new(current.as_writer(), first);
        fields.record(&mut v);
        v.result
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
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut v = JsonVisitor::new(writer.by_ref(), false);
        event.record(&mut v);
        v.result?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<FlatJsonFields>>() {
                    if !fields.is_empty() {
                        writer.write_char(',')?;
                        writer.write_str(fields)?;
                    }
                }
            }
        }
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

struct JsonVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl<'a> JsonVisitor<'a> {
    fn new(writer: Writer<'a>, first: bool) -> Self {
        Self {
            writer,
            first,
            result: Ok(()),
        }
    }

    fn key(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::replace(&mut self.first, false) {
            self.writer.write_char(',')?;
        }
        write_json_str(&mut self.writer, field.name())?;
        self.writer.write_char(':')
    }

    fn put(&mut self, field: &Field, f: impl FnOnce(&mut Writer<'a>) -> fmt::Result) {
        // `log` records carry their metadata as fields; it is in the metadata already.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = self.key(field).and_then(|()| f(&mut self.writer));
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| write_json_str(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escape(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
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
            w.write_char('"')?;
            write!(Escape(w), "{value}")?;
            w.write_char('"')
        });
    }
}

/// Writes `s` as a JSON string literal.
fn write_json_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escape(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string.
struct Escape<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &str = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if esc.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(esc)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
