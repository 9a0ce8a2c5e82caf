//! Request enrichment: a handler (or an inner middleware) puts its own
//! facts on its request's telemetry, `user.id` and `tenant` say, with
//! [`RequestTelemetry`], an extractor for Axum and Actix.
//!
//! A field lands on the request's access-log line (and every later line of
//! the request, in the JSON format), on its server span as an attribute, and
//! on its Sentry event as a tag; `user.id` becomes the Sentry event's user
//! only with `OPSKIT_SENTRY_SEND_PII` (and is then left out of the tags),
//! never otherwise. A field becomes a metric label only when the service
//! declared it at start-up with its allowed values or a cap
//! ([`MetricLabel`](crate::metrics::MetricLabel), `OPSKIT_METRICS_LABELS`;
//! past them its value is `_OTHER`). A handler behind a
//! fallback can name its route for the metrics, span and log
//! ([`RequestTelemetry::set_route`]).
//!
//! Bounded: at most 16 fields a request, names of 1 to 64 bytes of
//! `a-z 0-9 . _ -` that opskit does not write itself, values cut at 256
//! bytes. Enrichment is kept with the request's span in the `tracing`
//! registry: where opskit's logging is not installed over a
//! `tracing_subscriber::Registry`, it is a no-op (and [`RequestTelemetry::set`]
//! says so). A request that is not enriched pays one flag check.
//!
//! PII: whatever a handler puts here is written to the log and exported with
//! the span; put personal data (names, e-mail addresses) nowhere in it, and
//! an opaque id only where the log and trace stores may hold it.
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use opskit::telemetry::RequestTelemetry;
//! async fn handler(telemetry: RequestTelemetry) -> &'static str {
//!     let _ = telemetry.set("user.id", 42);
//!     let _ = telemetry.set("tenant", "acme");
//!     "ok"
//! }
//! let _app: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
//! # }
//! ```

use crate::request::{Enrichment, MAX_FIELDS, MAX_KEY, MAX_VALUE};
use tracing_subscriber::registry::LookupSpan;

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

/// Why a field was not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrichError {
    /// The name is empty, too long, has characters other than `a-z 0-9 . _ -`,
    /// or is one opskit writes itself.
    #[error("the field name is not allowed (1 to 64 of a-z 0-9 . _ -, not one of opskit's own)")]
    InvalidName,
    /// The request already has 16 fields.
    #[error("the request already has the most fields allowed")]
    TooManyFields,
    /// Not inside a request run by opskit, or its logging is not installed
    /// over a `tracing_subscriber::Registry`.
    #[error("no request of opskit's is running here")]
    NoRequest,
}

/// The current request's telemetry, for a handler to enrich: an extractor in
/// Axum (`FromRequestParts`) and Actix (`FromRequest`), or
/// [`RequestTelemetry::current`] anywhere inside the request's code.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTelemetry {
    _private: (),
}

impl RequestTelemetry {
    /// The telemetry of the request running here.
    pub fn current() -> Self {
        Self { _private: () }
    }

    /// Sets `key` to `value` on the request's access line, span and error
    /// report (replacing an earlier value of `key`).
    pub fn set(&self, key: &str, value: impl std::fmt::Display) -> Result<(), EnrichError> {
        if !valid_key(key) {
            return Err(EnrichError::InvalidName);
        }
        let mut value = value.to_string();
        let cut = crate::request::truncate(&value, MAX_VALUE).len();
        value.truncate(cut);
        with_enrichment(|e| {
            let full = e.fields.len() >= MAX_FIELDS;
            match e.fields.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None if full => return Err(EnrichError::TooManyFields),
                None => e.fields.push((key.to_owned(), value)),
            }
            Ok(true)
        })
    }

    /// Names the request's route template (`/files/{name}`), for a handler
    /// that the router reached without one (a fallback): the metrics' and
    /// span's `http.route` and the access line's. Keep it a template: the
    /// metrics' series cap still bounds what it costs.
    pub fn set_route(&self, route: &str) -> Result<(), EnrichError> {
        let route = crate::request::truncate(route, crate::request::MAX_PATH).to_owned();
        with_enrichment(|e| {
            e.route = Some(route);
            Ok(false)
        })
    }
}

pub(crate) fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !RESERVED.contains(&key)
        && !RESERVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Runs `f` on the enrichment of the request whose span is current here (the
/// request span itself or one inside it); when `f` says the fields changed,
/// rewrites the request span's formatted JSON fields so that the log lines
/// carry them. No copy of the enrichment is made: its JSON text is kept
/// beside it and spliced after the span's own fields.
fn with_enrichment(
    f: impl FnOnce(&mut Enrichment) -> Result<bool, EnrichError>,
) -> Result<(), EnrichError> {
    let done = tracing::Span::current().with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        let request = span
            .scope()
            .find(|s| s.metadata().target() == crate::logging::REQUEST_SPAN_TARGET)?;
        let mut ext = request.extensions_mut();
        if ext.get_mut::<Enriched>().is_none() {
            let base = ext
                .get_mut::<crate::logging::JsonSpanFields>()
                .map(|f| f.fields.len());
            ext.insert(Enriched {
                enrichment: Enrichment {
                    fields: Vec::with_capacity(4),
                    route: None,
                },
                base,
                text: String::new(),
            });
        }
        let enriched = ext.get_mut::<Enriched>()?;
        let changed = match f(&mut enriched.enrichment) {
            Ok(changed) => changed,
            Err(e) => return Some(Err(e)),
        };
        let Some(base) = enriched.base.filter(|_| changed) else {
            return Some(Ok(()));
        };
        crate::logging::write_enrichment(&mut enriched.text, &enriched.enrichment);
        let text = std::mem::take(&mut enriched.text);
        if let Some(fields) = ext.get_mut::<crate::logging::JsonSpanFields>() {
            fields.fields.truncate(base);
            fields.fields.push_str(&text);
        }
        if let Some(enriched) = ext.get_mut::<Enriched>() {
            enriched.text = text;
        }
        Some(Ok(()))
    });
    let result = done.flatten().unwrap_or(Err(EnrichError::NoRequest));
    if result.is_ok() {
        crate::request::mark_enriched();
    }
    result
}

/// The enrichment kept with a request's span: the fields, the length of the
/// span's own formatted JSON fields (`None`: not in opskit's JSON format)
/// and the fields' JSON text written after them.
struct Enriched {
    enrichment: Enrichment,
    base: Option<usize>,
    text: String,
}

/// The enrichment of the request whose span is `span`, taken (once, at the
/// request's end, when the request scope saw it enriched: the log lines
/// keep their text).
pub(crate) fn enrichment_of(span: &tracing::Span) -> Option<Enrichment> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        let mut ext = span.extensions_mut();
        ext.remove::<Enriched>().map(|e| e.enrichment)
    })
    .flatten()
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestTelemetry {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        _parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::current())
    }
}

#[cfg(feature = "actix")]
impl actix_web::FromRequest for RequestTelemetry {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(
        _req: &actix_web::HttpRequest,
        _payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        std::future::ready(Ok(Self::current()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["user.id", "tenant", "plan-tier", "a_1"] {
            assert!(valid_key(ok), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "User",
            "user id",
            "request_id",
            "http.route",
            "url.x",
            &long,
        ] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    /// Through the tower layer, with a registry: the handler's route names
    /// the request's series, and its fields are kept, bounded.
    #[cfg(feature = "prometheus")]
    #[test]
    fn a_handler_names_its_route_and_its_fields_are_bounded() {
        use tower::{Layer, ServiceExt};
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = prometheus.handle();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let in_handler = seen.clone();
        metrics::with_local_recorder(&prometheus, || {
            let recorder = crate::recorder::Recorder::default()
                .with_metrics(Some(crate::metrics::HttpMetrics::new(&Default::default())));
            let layer = crate::layer::OpsLayer::new(
                recorder,
                crate::security::SecurityPolicy::new(&Default::default()),
            );
            let svc = tower::service_fn(
                move |_req: http::Request<crate::layer::RequestBody<String>>| {
                    let t = RequestTelemetry::current();
                    let mut results = vec![t.set_route("/files/{name}")];
                    for i in 0..=MAX_FIELDS {
                        results.push(t.set(&format!("f{i}"), "x".repeat(300)));
                    }
                    results.push(t.set("f0", "again"));
                    in_handler.lock().unwrap().extend(results);
                    async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
                },
            );
            let subscriber = tracing_subscriber::Registry::default();
            tracing::subscriber::with_default(subscriber, || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let req = http::Request::builder()
                    .uri("/files/a.txt")
                    .body(String::new())
                    .unwrap();
                rt.block_on(layer.layer(svc).oneshot(req)).unwrap();
            });
        });
        let seen = seen.lock().unwrap().clone();
        let too_many = seen
            .iter()
            .filter(|r| **r == Err(EnrichError::TooManyFields));
        assert_eq!(too_many.count(), 1, "{seen:?}");
        assert_eq!(seen.iter().filter(|r| r.is_ok()).count(), MAX_FIELDS + 2);
        let text = handle.render();
        assert!(text.contains(r#"http_route="/files/{name}""#), "{text}");
    }

    #[test]
    fn outside_a_request_nothing_is_set() {
        assert_eq!(
            RequestTelemetry::current().set("tenant", "acme"),
            Err(EnrichError::NoRequest)
        );
    }
}
