//! Breadcrumbs: the log events of a request, kept in the request's span so
//! that a failure report can carry them. Nothing is done for a request that
//! logs nothing.

use sentry::protocol::{Breadcrumb, Level as SentryLevel, Map};
use serde_json::Value;
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The most breadcrumbs one request keeps (the oldest are dropped).
const MAX: usize = 50;

#[derive(Default)]
struct Crumbs(Vec<Breadcrumb>);

/// Records INFO, WARN and ERROR events inside a request as breadcrumbs.
#[derive(Debug, Default)]
pub(crate) struct BreadcrumbLayer;

impl<S> Layer<S> for BreadcrumbLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || meta.target() == "opskit::access" {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(root) = scope
            .from_root()
            .find(|s| s.metadata().target() == crate::logging::REQUEST_SPAN_TARGET)
        else {
            return;
        };
        let mut visitor = CrumbVisitor::default();
        event.record(&mut visitor);
        let crumb = Breadcrumb {
            ty: "log".to_owned(),
            category: Some(meta.target().to_owned()),
            level: match *meta.level() {
                Level::ERROR => SentryLevel::Error,
                Level::WARN => SentryLevel::Warning,
                _ => SentryLevel::Info,
            },
            message: visitor.message,
            data: visitor.data,
            ..Default::default()
        };
        let mut ext = root.extensions_mut();
        match ext.get_mut::<Crumbs>() {
            Some(c) => {
                if c.0.len() >= MAX {
                    c.0.remove(0);
                }
                c.0.push(crumb);
            }
            None => ext.insert(Crumbs(vec![crumb])),
        }
    }
}

#[derive(Default)]
struct CrumbVisitor {
    message: Option<String>,
    data: Map<String, Value>,
}

impl Visit for CrumbVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else if !field.name().starts_with("log.") {
            self.data
                .insert(field.name().to_owned(), Value::String(text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.data
                .insert(field.name().to_owned(), Value::String(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.data.insert(field.name().to_owned(), value.into());
    }
}

/// Removes and returns the breadcrumbs recorded in `span`.
pub(crate) fn take_breadcrumbs(span: &tracing::Span) -> Vec<Breadcrumb> {
    span.with_subscriber(|(id, dispatch)| {
        dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .and_then(|registry| registry.span(id))
            .and_then(|s| s.extensions_mut().remove::<Crumbs>())
            .map(|c| c.0)
    })
    .flatten()
    .unwrap_or_default()
}
