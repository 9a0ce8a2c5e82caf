//! Error reporting to Sentry (feature `sentry`): one event per 5xx response
//! and one per panic, with the request's context and breadcrumbs, PII
//! scrubbed; never blocking a request.
//!
//! Built on the `sentry` crate's client and protocol types, without
//! `sentry::init`: no global hub, no environment side effects, and no
//! `sentry-panic` hook (opskit catches panics itself and reports each one
//! exactly once). The transport is opskit's own (see [`DeliveryStats`]) so that
//! deliveries have timeouts and failures are counted.
//!
//! `init` builds the reporter from `SENTRY_*`; by hand it is one call, and
//! every envelope ends up counted as sent, failed or dropped:
//!
//! ```
//! use opskit::config::SentrySettings;
//! use opskit::report::Reporter;
//! use std::sync::atomic::Ordering::Relaxed;
//! use std::time::Duration;
//!
//! let service = opskit::ServiceInfo {
//!     name: "billing".into(),
//!     version: "1.4.2".into(),
//!     environment: "test".into(),
//! };
//! // A DSN whose server is down: the report is counted as failed.
//! let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
//! let mut settings = SentrySettings::with_dsn(opskit::Secret::new(format!("http://public@{closed}/1")));
//! let reporter = Reporter::from_settings(&settings, &service).unwrap();
//! reporter.report_panic("the worker panicked", "src/worker.rs:12");
//! reporter.flush(Duration::from_secs(5));
//! assert_eq!(reporter.stats().failed.load(Relaxed), 1);
//! // Hand it to the recorder: every 5xx and panic of a request is reported.
//! let recorder = opskit::recorder::Recorder::default().with_reporter(Some(reporter));
//! # let _ = recorder;
//!
//! // No DSN (`SENTRY_DSN` unset): no reporter, nothing is sent.
//! settings.dsn = None;
//! assert!(Reporter::from_settings(&settings, &service).is_none());
//! ```

mod breadcrumbs;
pub(crate) mod transport;

pub(crate) use breadcrumbs::{take_breadcrumbs, BreadcrumbLayer};

use crate::config::SentrySettings;
use crate::request::{known_method, Outcome};
use crate::trace::TraceContext;
use crate::{RequestId, ServiceInfo};
use sentry::protocol::{
    Breadcrumb, Context, Event, Exception, IpAddress, Level, Map, Mechanism, Request,
    ResponseContext, User,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
pub use transport::DeliveryStats;

static GLOBAL: std::sync::OnceLock<Reporter> = std::sync::OnceLock::new();

/// The reporter the panic hook uses for panics outside requests.
pub(crate) fn global() -> Option<&'static Reporter> {
    GLOBAL.get()
}

/// Makes `reporter` the one the panic hook uses (the first one set stays).
pub(crate) fn set_global(reporter: &Reporter) {
    let _ = GLOBAL.set(reporter.clone());
}

/// The `trace` context of a request's event or transaction, as Sentry's
/// tracing integrations send it: the request's trace id, its server span's
/// id (the one exported over OTLP and logged as `span_id`), the caller's
/// span as parent, operation `http.server`, and the status.
fn trace_context(trace: &TraceContext, outcome: &Outcome<'_>) -> Context {
    let (trace_id, span_id, parent) = trace.raw();
    Context::Trace(Box::new(sentry::protocol::TraceContext {
        trace_id: trace_id.to_be_bytes().into(),
        span_id: span_id.to_be_bytes().into(),
        parent_span_id: parent.map(|p| p.to_be_bytes().into()),
        op: Some("http.server".to_owned()),
        status: Some(if outcome.status >= 500 || outcome.panic.is_some() {
            sentry::protocol::SpanStatus::InternalError
        } else {
            sentry::protocol::SpanStatus::Ok
        }),
        ..Default::default()
    }))
}

/// A hook that may change or drop an event before it is sent.
pub type BeforeSend = Arc<dyn Fn(Event<'static>) -> Option<Event<'static>> + Send + Sync>;

/// Sends error events. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    client: Arc<sentry::Client>,
    stats: Arc<DeliveryStats>,
    send_pii: bool,
    traces_sample_rate: f64,
    release: Arc<str>,
    environment: Arc<str>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    // How long a flush or the final close waits for queued events: the
    // delivery timeout (`OPSKIT_SENTRY_TIMEOUT`), at least 2 s (the SDK's
    // default), so a slow but healthy Sentry still gets the last events.
    drain: Duration,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("send_pii", &self.send_pii)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter for `settings` (give it to
    /// [`Recorder::with_reporter`](crate::recorder::Recorder::with_reporter)),
    /// or `None` when there is no valid DSN. `init` builds one from `SENTRY_*`.
    pub fn from_settings(settings: &SentrySettings, service: &ServiceInfo) -> Option<Self> {
        Self::new(settings, service, None)
    }

    /// A reporter for `settings`, or `None` when `SENTRY_DSN` is unset.
    pub(crate) fn new(
        settings: &SentrySettings,
        service: &ServiceInfo,
        before_send: Option<BeforeSend>,
    ) -> Option<Self> {
        let dsn: sentry::types::Dsn = settings.dsn.as_ref()?.expose().parse().ok()?;
        let stats = Arc::new(DeliveryStats::default());
        let transport = Arc::new(transport::HttpTransport::new(
            &dsn,
            settings.timeout,
            stats.clone(),
        ));
        let release = settings
            .release
            .clone()
            .unwrap_or_else(|| format!("{}@{}", service.name, service.version));
        let environment = settings
            .environment
            .clone()
            .unwrap_or_else(|| service.environment.clone());
        let drain = settings.timeout.max(Duration::from_secs(2));
        let mut options = sentry::ClientOptions::new()
            .release(release.clone())
            .environment(environment.clone())
            .sample_rate(settings.sample_rate as f32)
            .send_default_pii(settings.send_pii)
            .shutdown_timeout(drain)
            .transport(transport);
        if settings.traces_sample_rate > 0.0 {
            options = options.traces_sample_rate(settings.traces_sample_rate as f32);
        }
        options.before_send = before_send;
        options.dsn = Some(dsn);
        Some(Self {
            client: Arc::new(sentry::Client::with_options(options)),
            stats,
            send_pii: settings.send_pii,
            traces_sample_rate: settings.traces_sample_rate,
            release: release.into(),
            environment: environment.into(),
            closed: Arc::default(),
            drain,
        })
    }

    /// Sends an `http.server` transaction for a share
    /// (`SENTRY_TRACES_SAMPLE_RATE`) of requests.
    pub fn maybe_send_transaction(
        &self,
        outcome: &Outcome<'_>,
        request_id: &RequestId,
        trace: &TraceContext,
        took: Duration,
    ) {
        if self.traces_sample_rate <= 0.0 || fastrand::f64() >= self.traces_sample_rate {
            return;
        }
        let method = known_method(outcome.method).unwrap_or("_OTHER");
        let end = std::time::SystemTime::now();
        let mut contexts = Map::new();
        contexts.insert("trace".to_owned(), trace_context(trace, outcome));
        let mut tags = Map::new();
        tags.insert("request_id".to_owned(), request_id.as_str().to_owned());
        tags.insert(
            "http.response.status_code".to_owned(),
            outcome.status.to_string(),
        );
        let transaction = sentry::protocol::Transaction {
            name: Some(format!(
                "{method} {}",
                outcome.route.unwrap_or(outcome.path)
            )),
            release: Some(self.release.to_string().into()),
            environment: Some(self.environment.to_string().into()),
            tags,
            start_timestamp: end.checked_sub(took).unwrap_or(end),
            timestamp: Some(end),
            contexts,
            ..Default::default()
        };
        self.client.send_envelope(transaction.into());
    }

    /// Delivery counters: sent, failed, dropped.
    pub fn stats(&self) -> &DeliveryStats {
        &self.stats
    }

    /// Reports a failed request (status 500 and above, or a panic).
    /// The event's `trace` context holds the request's trace and span ids,
    /// so Sentry links it to the trace (and finds it by trace id).
    pub fn report_request(
        &self,
        outcome: &Outcome<'_>,
        request_id: &RequestId,
        trace: &TraceContext,
        breadcrumbs: Vec<Breadcrumb>,
    ) {
        let method = known_method(outcome.method).unwrap_or("_OTHER");
        let route = outcome.route.unwrap_or(outcome.path);
        let transaction = format!("{method} {route}");
        let mut tags = Map::new();
        tags.insert("request_id".to_owned(), request_id.as_str().to_owned());
        if let Some(r) = outcome.route {
            tags.insert("http.route".to_owned(), r.to_owned());
        }
        tags.insert("http.request.method".to_owned(), method.to_owned());
        tags.insert(
            "http.response.status_code".to_owned(),
            outcome.status.to_string(),
        );
        // The handler's fields: tags, but `user.id` only as the user, and
        // only with `send_pii`.
        let mut user_id = None;
        for (key, value) in outcome.enrichment.iter().flat_map(|e| e.fields()) {
            match key {
                "user.id" => user_id = self.send_pii.then(|| value.to_owned()),
                _ => {
                    tags.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        let mut headers = Map::new();
        // An allow-list: cookies, authorization and every other header that
        // could carry a credential or personal data are never read.
        for (k, v) in [
            ("host", outcome.host),
            ("user-agent", outcome.user_agent),
            ("accept", outcome.accept),
            ("content-type", outcome.content_type),
        ] {
            if let Some(v) = v {
                headers.insert(k.to_owned(), v.to_owned());
            }
        }
        let host = outcome
            .host
            .filter(|h| !h.is_empty() && h.len() < 256)
            .unwrap_or("localhost");
        let url = format!("http://{host}{}", outcome.path).parse().ok();
        let mut contexts = Map::new();
        contexts.insert("trace".to_owned(), trace_context(trace, outcome));
        contexts.insert(
            "response".to_owned(),
            Context::from(ResponseContext {
                status_code: Some(u64::from(outcome.status)),
                ..Default::default()
            }),
        );
        let (level, message, exception) = match outcome.panic {
            Some(msg) => (
                Level::Fatal,
                None,
                vec![Exception {
                    ty: "panic".to_owned(),
                    value: Some(msg.to_owned()),
                    mechanism: Some(Mechanism {
                        ty: "panic".to_owned(),
                        handled: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            ),
            None => (
                Level::Error,
                Some(format!("{transaction} answered {}", outcome.status)),
                Vec::new(),
            ),
        };
        let ip_address = outcome
            .client
            .filter(|_| self.send_pii)
            .map(IpAddress::Exact);
        let user = (ip_address.is_some() || user_id.is_some()).then(|| User {
            id: user_id,
            ip_address,
            ..Default::default()
        });
        let event = Event {
            level,
            message,
            exception: exception.into(),
            transaction: Some(transaction),
            logger: Some("opskit".to_owned()),
            request: Some(Request {
                method: Some(outcome.method.to_owned()),
                url,
                headers,
                ..Default::default()
            }),
            tags,
            contexts,
            user,
            breadcrumbs: breadcrumbs.into(),
            ..Default::default()
        };
        self.client.capture_event(event, None);
    }

    /// Reports a panic outside any request (a background task or thread).
    pub fn report_panic(&self, message: &str, location: &str) {
        let event = Event {
            level: Level::Fatal,
            exception: vec![Exception {
                ty: "panic".to_owned(),
                value: Some(message.to_owned()),
                module: Some(location.to_owned()),
                mechanism: Some(Mechanism {
                    ty: "panic".to_owned(),
                    handled: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }]
            .into(),
            logger: Some("opskit".to_owned()),
            ..Default::default()
        };
        self.client.capture_event(event, None);
    }

    /// Waits up to `timeout` for queued events to be delivered.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.client.flush(Some(timeout))
    }

    /// How long the final close (and [`Ops::flush`](crate::Ops::flush))
    /// wait for queued events: `OPSKIT_SENTRY_TIMEOUT`, at least 2 s.
    pub fn drain_timeout(&self) -> Duration {
        self.drain
    }

    /// Flushes (waiting up to [`Reporter::drain_timeout`]) and stops the
    /// transport; logs the delivery counters.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.client.close(Some(self.drain));
        // What is still queued (or in flight) now will not be delivered.
        let (sent, failed, dropped) = self.stats.close();
        tracing::info!(sent, failed, dropped, "error reporting stopped");
    }
}
