//! The application's own `tracing` spans (`#[tracing::instrument]`,
//! `info_span!`) as OpenTelemetry spans of the request's trace: a
//! `tracing-subscriber` layer that keeps one small record per exported span
//! in the span's extensions and, when the span closes, hands one `SpanData`
//! to the same [`SpanSink`] as opskit's server spans (one queue, one export
//! thread, the same drop counters). See docs/adr/0004 for why this is not
//! `tracing-opentelemetry`.
//!
//! Which spans: those the `OPSKIT_TRACE_SPANS` filter lets through
//! ([`SpanFilter`](super::SpanFilter)), opened while a **sampled** request
//! runs on the thread (or under a span exported already). The outermost
//! one's parent is the request's server span; a span opened outside any
//! request starts a trace of its own only when the filter says
//! `+background` (and the root sampler samples it).
//!
//! Costs, in order of the checks: a span in an unsampled request reads the
//! thread's trace context and stops; a request that opens no span pays one
//! relaxed atomic load when its own log span closes (no span of this layer
//! is alive) or a registry lookup (some are, elsewhere).

use super::SpanSink;
use opentelemetry::trace::{Event, SpanKind, Status, TraceState};
use opentelemetry::KeyValue;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TracingEvent, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Attributes kept per span at most; more are counted as dropped.
pub(crate) const MAX_ATTRIBUTES: usize = 32;
/// Events kept per span at most; more are counted as dropped.
pub(crate) const MAX_EVENTS: usize = 16;
/// Longest string attribute or event message kept, in bytes.
const MAX_VALUE: usize = 1024;

/// Where exported spans go, set once the trace pipeline has started.
struct Export {
    sink: SpanSink,
    filter: super::SpanFilter,
    sampler: crate::trace::Sampler,
}

static EXPORT: OnceLock<Export> = OnceLock::new();

/// The sink spans are exported into, once the trace pipeline has started.
pub(super) fn sink() -> Option<&'static SpanSink> {
    EXPORT.get().map(|e| &e.sink)
}

/// Spans of this layer alive right now (any thread): zero lets every
/// event and every closing span skip the registry lookup.
pub(super) static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Starts exporting the application's spans into `sink` (once per process,
/// like the global subscriber; later calls are ignored).
pub(crate) fn activate(sink: SpanSink, filter: super::SpanFilter, sampler: crate::trace::Sampler) {
    let _ = EXPORT.set(Export {
        sink,
        filter,
        sampler,
    });
}

/// A `tracing-subscriber` layer exporting the application's `tracing`
/// spans as OpenTelemetry spans of the request's trace, into opskit's
/// [`SpanSink`] (see the [module docs](super) and docs/tracing.md).
/// [`init`](crate::init) installs it; build one with [`SpanLayer::new`]
/// for a subscriber composed by hand, over opskit's request layer.
#[derive(Debug, Clone, Copy)]
pub struct SpanLayer(());

impl SpanLayer {
    /// The layer, exporting into `sink` the spans `filter` lets through,
    /// background traces sampled by `sampler`. The export target is set
    /// once per process (like the global subscriber): the first layer
    /// built, or `init`'s, wins.
    pub fn new(sink: &SpanSink, filter: super::SpanFilter, sampler: crate::trace::Sampler) -> Self {
        activate(sink.clone(), filter, sampler);
        Self(())
    }

    /// The layer `init` installs before the trace pipeline starts: idle
    /// until [`activate`].
    pub(crate) fn idle() -> Self {
        Self(())
    }
}

/// An exported span while it is open, in its registry extensions.
pub(super) struct Live {
    pub(super) trace_id: u128,
    pub(super) span_id: u64,
    parent: u64,
    pub(super) state: TraceState,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    events: Vec<Event>,
    dropped_events: u32,
    status: Status,
}

/// A span that is not exported (its trace is not sampled): its children
/// are not either, and do not start traces of their own.
pub(super) struct NotSampled;

/// Where a new span belongs.
enum Place {
    /// Under `parent` in this trace.
    Child(u128, u64, TraceState),
    /// Not exported, and marked so for its children.
    Unsampled,
    /// Not exported.
    Skip,
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(export) = EXPORT.get() else { return };
        let meta = attrs.metadata();
        if meta.target() == crate::request::REQUEST_SPAN_TARGET {
            return;
        }
        // The request running on this thread: an unsampled one ends here.
        let request = crate::trace::with_current(|cx| {
            cx.map(|cx| {
                let (trace_id, span_id, _) = cx.raw();
                (cx.sampled(), trace_id, span_id, cx.tracestate().is_some())
            })
        });
        if let Some((false, ..)) = request {
            return;
        }
        if !export.filter.enabled(meta.target(), meta.level()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            attrs.parent().and_then(|p| ctx.span(p))
        };
        let mut place = Place::Skip;
        if let Some(parent) = parent {
            let ext = parent.extensions();
            if let Some(p) = ext.get::<Live>() {
                place = Place::Child(p.trace_id, p.span_id, p.state.clone());
            } else if ext.get::<NotSampled>().is_some() {
                place = Place::Unsampled;
            }
        }
        if matches!(place, Place::Skip) {
            place = match request {
                Some((_, trace_id, span_id, has_state)) => {
                    let state = if has_state {
                        crate::trace::with_current(|cx| {
                            cx.and_then(|cx| cx.tracestate()?.parse().ok())
                        })
                        .unwrap_or_default()
                    } else {
                        TraceState::default()
                    };
                    Place::Child(trace_id, span_id, state)
                }
                None if export.filter.background() => {
                    let trace_id = crate::trace::new_trace_id();
                    if export.sampler.samples_root(trace_id) {
                        Place::Child(trace_id, 0, TraceState::default())
                    } else {
                        Place::Unsampled
                    }
                }
                None => Place::Skip,
            };
        }
        let (trace_id, parent, state) = match place {
            Place::Child(t, p, s) => (t, p, s),
            Place::Unsampled => {
                span.extensions_mut().insert(NotSampled);
                return;
            }
            Place::Skip => return,
        };
        let mut live = Live {
            trace_id,
            span_id: crate::trace::new_span_id(),
            parent,
            state,
            name: Cow::Borrowed(meta.name()),
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            attributes: Vec::with_capacity(meta.fields().len()),
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
            status: Status::Unset,
        };
        attrs.record(&mut SpanFields(&mut live));
        LIVE.fetch_add(1, Ordering::Relaxed);
        span.extensions_mut().insert(live);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if LIVE.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(live) = ext.get_mut::<Live>() {
            values.record(&mut SpanFields(live));
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        if LIVE.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(live) = ext.get_mut::<Live>() else {
            return;
        };
        let meta = event.metadata();
        let error = *meta.level() == tracing::Level::ERROR;
        let full = live.events.len() >= MAX_EVENTS;
        if full {
            live.dropped_events += 1;
            // Past the bound only an error's message is still read (for
            // the status).
            if !error || matches!(live.status, Status::Error { .. }) {
                return;
            }
        }
        let mut fields = EventFields {
            message: None,
            attributes: Vec::with_capacity(meta.fields().len() + 1),
        };
        fields
            .attributes
            .push(KeyValue::new("level", meta.level().as_str()));
        event.record(&mut fields);
        let message: Cow<'static, str> = match fields.message {
            Some(m) => m.into(),
            None => meta.name().into(),
        };
        if error && !matches!(live.status, Status::Error { .. }) {
            live.status = Status::error(message.clone());
        }
        if full {
            return;
        }
        live.events
            .push(Event::new(message, SystemTime::now(), fields.attributes, 0));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if LIVE.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(span) = ctx.span(&id) else { return };
        let Some(live) = span.extensions_mut().remove::<Live>() else {
            return;
        };
        LIVE.fetch_sub(1, Ordering::Relaxed);
        if let Some(export) = EXPORT.get() {
            export.sink.send(span_data(live, &export.sink));
        }
    }
}

/// The finished span, for the sink.
fn span_data(live: Live, sink: &SpanSink) -> opentelemetry_sdk::trace::SpanData {
    use opentelemetry::trace::SpanId;
    opentelemetry_sdk::trace::SpanData {
        span_context: super::span::exported_context(live.trace_id, live.span_id, live.state),
        parent_span_id: SpanId::from(live.parent),
        parent_span_is_remote: false,
        span_kind: live.kind,
        name: live.name,
        start_time: live.start,
        end_time: SystemTime::now(),
        attributes: live.attributes,
        dropped_attributes_count: live.dropped_attributes,
        events: {
            let mut e = opentelemetry_sdk::trace::SpanEvents::default();
            e.events = live.events;
            e.dropped_count = live.dropped_events;
            e
        },
        links: opentelemetry_sdk::trace::SpanLinks::default(),
        status: live.status,
        instrumentation_scope: sink.scope().clone(),
    }
}

/// A string value cut to [`MAX_VALUE`] bytes (at a character boundary).
fn bounded(mut s: String) -> String {
    if s.len() > MAX_VALUE {
        let cut = crate::request::truncate(&s, MAX_VALUE).len();
        s.truncate(cut);
    }
    s
}

/// Records a span's fields: `otel.name`, `otel.kind`, `otel.status_code`
/// and `error` steer the span; the others become attributes.
struct SpanFields<'a>(&'a mut Live);

impl SpanFields<'_> {
    fn special(&mut self, field: &Field, value: &str) -> bool {
        match field.name() {
            "otel.name" => self.0.name = bounded(value.to_owned()).into(),
            "otel.kind" => {
                self.0.kind = match value.to_ascii_lowercase().as_str() {
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    _ => SpanKind::Internal,
                }
            }
            "otel.status_code" => {
                if value.eq_ignore_ascii_case("error") {
                    self.0.status = Status::error("");
                } else if value.eq_ignore_ascii_case("ok") {
                    self.0.status = Status::Ok;
                }
            }
            "error" => self.0.status = Status::error(bounded(value.to_owned())),
            _ => return false,
        }
        true
    }

    fn push(&mut self, field: &Field, value: opentelemetry::Value) {
        let live = &mut *self.0;
        if let Some(kv) = live
            .attributes
            .iter_mut()
            .find(|kv| kv.key.as_str() == field.name())
        {
            kv.value = value;
        } else if live.attributes.len() < MAX_ATTRIBUTES {
            live.attributes.push(KeyValue::new(field.name(), value));
        } else {
            live.dropped_attributes += 1;
        }
    }
}

/// The `Visit` methods both visitors share: `Debug` values as their text,
/// numbers as attribute values (through the visitor's `push`; a `u64` past
/// `i64` as its decimal text).
macro_rules! typed_fields {
    () => {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.record_str(field, &format!("{value:?}"));
        }

        fn record_i64(&mut self, field: &Field, value: i64) {
            self.push(field, value.into());
        }

        fn record_u64(&mut self, field: &Field, value: u64) {
            match i64::try_from(value) {
                Ok(v) => self.push(field, v.into()),
                Err(_) => self.push(field, value.to_string().into()),
            }
        }

        fn record_f64(&mut self, field: &Field, value: f64) {
            self.push(field, value.into());
        }
    };
}

impl Visit for SpanFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.special(field, value) {
            self.push(field, bounded(value.to_owned()).into());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }

    typed_fields!();

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "error" {
            if value {
                self.0.status = Status::error("");
            }
            return;
        }
        self.push(field, value.into());
    }
}

/// Records an event's fields: `message` names the span event, the others
/// become its attributes (bounded like a span's).
struct EventFields {
    message: Option<String>,
    attributes: Vec<KeyValue>,
}

impl EventFields {
    fn push(&mut self, field: &Field, value: opentelemetry::Value) {
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push(KeyValue::new(field.name(), value));
        }
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(bounded(value.to_owned()));
        } else {
            self.push(field, bounded(value.to_owned()).into());
        }
    }

    typed_fields!();

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otel::testing::{attr, Collect};
    use tracing_subscriber::layer::SubscriberExt;

    /// One test (the export target is set once per process): in a
    /// sampled request, outside any (`+background`), in an unsampled
    /// request, and a filtered-out target; names, kinds, parents,
    /// attributes, status and the bounds on attributes and events.
    #[test]
    fn spans_become_child_spans_with_their_fields_and_bounds() {
        let collect = Collect::default();
        let sink = SpanSink::new(
            collect.clone(),
            super::super::BatchSettings::default(),
            &opentelemetry_sdk::Resource::builder_empty().build(),
        );
        let filter: super::super::SpanFilter = "info,noisy=off,+background".parse().unwrap();
        let layer = SpanLayer::new(&sink, filter, crate::trace::Sampler::default());
        let subscriber = tracing_subscriber::registry().with(layer);
        let sampled = crate::trace::TraceContext::from_headers(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None,
        );
        let unsampled = crate::trace::TraceContext::from_headers(
            Some(b"00-11111111111111111111111111111111-00f067aa0ba902b7-00"),
            None,
        );
        tracing::subscriber::with_default(subscriber, || {
            {
                let _request = crate::trace::Entered::enter(&sampled);
                let outer = tracing::info_span!(
                    "outer",
                    db.system.name = "postgresql",
                    later = tracing::field::Empty
                );
                let _o = outer.enter();
                outer.record("later", 7);
                {
                    let _inner = tracing::info_span!(
                        "inner",
                        otel.name = "SELECT users",
                        otel.kind = "client",
                        error = "timed out"
                    )
                    .entered();
                }
                for i in 0..MAX_EVENTS + 3 {
                    tracing::info!(i, "step");
                }
                tracing::error!("failed");
                let _many = tracing::info_span!(
                    "many",
                    a0 = 0,
                    a1 = 1,
                    a2 = 2,
                    a3 = 3,
                    a4 = 4,
                    a5 = 5,
                    a6 = 6,
                    a7 = 7,
                    a8 = 8,
                    a9 = 9,
                    b0 = 0,
                    b1 = 1,
                    b2 = 2,
                    b3 = 3,
                    b4 = 4,
                    b5 = 5,
                    b6 = 6,
                    b7 = 7,
                    b8 = 8,
                    b9 = 9,
                    c0 = 0,
                    c1 = 1,
                    c2 = 2,
                    c3 = 3,
                    c4 = 4,
                    c5 = 5,
                    c6 = 6,
                    c7 = 7,
                    c8 = 8,
                    c9 = 9,
                    d0 = 0,
                    d1 = 1
                )
                .entered();
                let _quiet = tracing::info_span!(target: "noisy", "quiet").entered();
                let _debug = tracing::debug_span!("debug").entered();
            }
            {
                let _request = crate::trace::Entered::enter(&unsampled);
                let _s = tracing::info_span!("unsampled").entered();
                let _t = tracing::info_span!("unsampled.child").entered();
            }
            let _job = tracing::info_span!("job").entered();
            let _step = tracing::info_span!("job.step").entered();
        });
        sink.shutdown().unwrap();
        let spans = collect.0.lock().unwrap().clone();
        let by_name = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("no {n} in {spans:#?}"))
        };
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        for absent in ["unsampled", "unsampled.child", "quiet", "debug"] {
            assert!(!names.contains(&absent), "{absent} exported: {names:?}");
        }
        let server = opentelemetry::trace::SpanId::from(sampled.raw().1);
        let outer = by_name("outer");
        assert_eq!(outer.parent_span_id, server);
        assert_eq!(
            outer.span_context.trace_id(),
            opentelemetry::trace::TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128)
        );
        assert_eq!(outer.span_kind, SpanKind::Internal);
        assert_eq!(attr(outer, "db.system.name").as_deref(), Some("postgresql"));
        assert_eq!(attr(outer, "later").as_deref(), Some("7"), "recorded later");
        assert_eq!(outer.events.len(), MAX_EVENTS);
        assert_eq!(outer.events.dropped_count, 4, "3 steps and the error");
        assert_eq!(outer.status, Status::error("failed"));
        let inner = by_name("SELECT users");
        assert_eq!(inner.parent_span_id, outer.span_context.span_id());
        assert_eq!(inner.span_kind, SpanKind::Client);
        assert_eq!(inner.status, Status::error("timed out"));
        assert!(attr(inner, "otel.name").is_none());
        let many = by_name("many");
        assert_eq!(many.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(many.dropped_attributes_count, 0, "32 fields fit");
        // Outside any request (`+background`): a trace of its own.
        let job = by_name("job");
        assert_eq!(job.parent_span_id, opentelemetry::trace::SpanId::INVALID);
        assert_ne!(job.span_context.trace_id(), outer.span_context.trace_id());
        let step = by_name("job.step");
        assert_eq!(step.parent_span_id, job.span_context.span_id());
        assert_eq!(step.span_context.trace_id(), job.span_context.trace_id());
        assert_eq!(LIVE.load(Ordering::Relaxed), 0, "every live record closed");
    }
}
