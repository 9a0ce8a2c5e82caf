//! The log subscriber: JSON lines (or pretty text) on stdout through a
//! bounded, non-blocking writer. [`init`](crate::init) installs it; users who
//! compose their own subscriber can use [`json_layer`].
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! let subscriber = tracing_subscriber::registry().with(opskit::logging::json_layer(std::io::stderr));
//! tracing::subscriber::with_default(subscriber, || tracing::info!(answer = 42, "hello"));
//! ```

mod json;
// Reloadable only where an adapter serves `/loggers`.
#[cfg(any(feature = "axum", feature = "actix"))]
mod levels;
pub(crate) use json::request_span;
pub(crate) use json::REQUEST_SPAN_TARGET;
pub(crate) use json::{write_enrichment, JsonSpanFields};
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) use levels::{LogLevels, MAX_TTL};
mod writer;

pub use json::{FlatJson, FlatJsonFields};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
pub use writer::{
    non_blocking, DroppedLines, LineWriter, WriterGuard, DEFAULT_LIMIT, FLUSH_AT_EXIT,
};

/// A `tracing-subscriber` layer writing opskit's flat JSON lines to `writer`.
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    json::Preformat::new().and_then(
        tracing_subscriber::fmt::layer()
            .fmt_fields(FlatJsonFields)
            .event_format(FlatJson)
            .with_writer(writer),
    )
}

use crate::config::{LogFormat, Settings};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The subscriber under the formatting layer: the registry and the level filter.
pub(crate) type Filtered = Layered<EnvFilter, Registry>;
/// The same with the filter reloadable (`OPSKIT_ADMIN_TOKEN` set: `/loggers`).
pub(crate) type Reloadable = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// Installs the global subscriber, with `extra` (another layer that sees
/// every event the filter lets through, such as the error reports'
/// breadcrumbs) under the formatting layer; the guard flushes buffered
/// lines on drop, the counter counts lines dropped because the writer fell
/// behind. With `OPSKIT_ADMIN_TOKEN` set (and an adapter feature to serve
/// `/loggers`) the filter can be changed while the service runs
/// (`LogLevels`); without it, it is the plain `EnvFilter` and costs nothing
/// more.
pub(crate) fn install<L>(
    settings: &Settings,
    extra: Option<L>,
) -> Result<(WriterGuard, DroppedLines), String>
where
    L: tracing_subscriber::Layer<Filtered>
        + tracing_subscriber::Layer<Reloadable>
        + Send
        + Sync
        + 'static,
{
    let (writer, guard) = non_blocking(std::io::stdout(), DEFAULT_LIMIT);
    let dropped = writer.dropped();
    let filter = EnvFilter::try_new(&settings.log_filter).map_err(|e| e.to_string())?;
    let format = settings.log_format;
    #[cfg(any(feature = "axum", feature = "actix"))]
    if settings.admin_token.is_some() {
        let (filter, handle) = reload::Layer::new(filter);
        let registry = tracing_subscriber::registry().with(filter).with(extra);
        init_with_format(registry, format, writer)?;
        LogLevels::install(handle, &settings.log_filter);
        return Ok((guard, dropped));
    }
    let registry = tracing_subscriber::registry().with(filter).with(extra);
    init_with_format(registry, format, writer)?;
    Ok((guard, dropped))
}

/// Adds the formatting layer and the application spans' layer to
/// `subscriber` and makes it the global one.
fn init_with_format<S>(subscriber: S, format: LogFormat, writer: LineWriter) -> Result<(), String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    // The application's spans as OpenTelemetry spans (idle until the trace
    // pipeline starts). Outermost: under it, the formatting layer's lookups
    // would cross one more layer on every line of every request.
    #[cfg(otlp)]
    let spans = Some(crate::otel::SpanLayer::idle());
    #[cfg(not(otlp))]
    let spans = None::<tracing_subscriber::layer::Identity>;
    let result = match format {
        LogFormat::Json => subscriber.with(json_layer(writer)).with(spans).try_init(),
        LogFormat::Pretty => subscriber
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour())
                    .with_writer(writer),
            )
            .with(spans)
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
