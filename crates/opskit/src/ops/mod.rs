//! Start-up: [`init`], [`Builder`] and the [`Ops`] handle.

mod builder;

pub use builder::Builder;

use crate::config::{AppConfig, ConfigReport, NoAppConfig, Settings};
use crate::health::Health;
use crate::service::ServiceInfo;
use crate::Shutdown;
use std::sync::Arc;

/// Exit code for an invalid configuration (`EX_CONFIG` from `sysexits.h`).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code for any other start-up failure (`EX_SOFTWARE`).
pub const EXIT_SOFTWARE: i32 = 70;

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// One or more variables are invalid; every one is listed.
    #[error("{0}")]
    Config(ConfigReport),
    /// The log subscriber could not be installed (another one is already global).
    #[error("cannot install the log subscriber: {0}; call Builder::install_logging(false) if the application installs its own")]
    Logging(String),
    /// The separate metrics listener (`OPSKIT_METRICS_ADDR`) could not bind.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListener {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl InitError {
    /// The documented exit code: [`EXIT_CONFIG`] (78) for configuration problems,
    /// [`EXIT_SOFTWARE`] (70) otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => EXIT_CONFIG,
            Self::Logging(_) | Self::MetricsListener { .. } => EXIT_SOFTWARE,
        }
    }

    /// Prints the error to stderr and exits with [`InitError::exit_code`].
    pub fn exit(self) -> ! {
        eprintln!("opskit: {self}");
        std::process::exit(self.exit_code())
    }
}

/// Reads config from the environment, validates it, installs logging and
/// returns the [`Ops`] handle. Same as `Builder::new().init()`.
///
/// On an invalid configuration the error lists every problem; most `main`s
/// end start-up with `.unwrap_or_else(|e| e.exit())`.
pub fn init<C: AppConfig>() -> Result<Ops<C>, InitError> {
    Builder::new().init()
}

fn unknown_service() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    format!("unknown_service:{exe}")
}

/// The OTLP pipelines, taken (exporting what is pending) by `finish_telemetry`.
#[cfg(otlp)]
#[derive(Debug)]
struct Otlp {
    metrics: Option<crate::otel::MetricsPipeline>,
    traces: Option<crate::otel::TracesPipeline>,
    transport: Option<crate::otel::Transport>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    local_addr: std::sync::OnceLock<std::net::SocketAddr>,
    service: ServiceInfo,
    shutdown: Shutdown,
    health: Health,
    recorder: crate::recorder::Recorder,
    layer: crate::layer::OpsLayer,
    dropped_log_lines: Option<crate::logging::DroppedLines>,
    #[cfg(feature = "prometheus")]
    metrics_endpoint: Option<crate::metrics::Endpoint>,
    limiter: crate::ratelimit::Limiter,
    /// Taken (exporting what is pending) by `finish_telemetry`.
    #[cfg(otlp)]
    otlp: std::sync::Mutex<Otlp>,
    #[cfg(feature = "sentry")]
    reporter: Option<crate::report::Reporter>,
    // Taken (flushing buffered log lines) by `finish_telemetry`, at the end of
    // `serve`, or when the final `Ops` clone goes.
    log_guard: std::sync::Mutex<Option<crate::logging::WriterGuard>>,
}

impl Inner {
    /// Flushes and closes error reporting, then flushes the log. Idempotent.
    fn finish_telemetry(&self) {
        #[cfg(otlp)]
        if let Ok(mut o) = self.otlp.lock() {
            if let Some(t) = o.traces.take() {
                t.shutdown();
            }
            if let Some(m) = o.metrics.take() {
                m.shutdown();
            }
            if let Some(t) = o.transport.take() {
                t.stop();
            }
        }
        #[cfg(feature = "sentry")]
        if let Some(r) = &self.reporter {
            r.close();
        }
        if let Ok(mut guard) = self.log_guard.lock() {
            drop(guard.take());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.finish_telemetry();
    }
}

/// The handle returned by [`init`]: owns every guard, hands out the layers,
/// the operational routes and the graceful server. Cheap to clone.
#[derive(Debug)]
pub struct Ops<C = NoAppConfig> {
    inner: Arc<Inner>,
    app: Arc<C>,
}

impl<C> Clone for Ops<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            app: self.app.clone(),
        }
    }
}

impl<C> Ops<C> {
    /// The application's validated configuration.
    pub fn app(&self) -> &C {
        &self.app
    }

    /// The library's validated settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The service's identity.
    pub fn service(&self) -> &ServiceInfo {
        &self.inner.service
    }

    /// The shutdown coordinator (trigger it to shut down from code).
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// The health state behind the probe routes.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// The `/metrics` endpoint (`None` when metrics are off or another
    /// recorder was installed first). Adapters route to it.
    #[cfg(feature = "prometheus")]
    pub fn metrics_endpoint(&self) -> Option<&crate::metrics::Endpoint> {
        self.inner.metrics_endpoint.as_ref()
    }

    /// The tower layer with the whole per-request stack, in the right order.
    pub fn layer(&self) -> crate::layer::OpsLayer {
        self.inner.layer.clone()
    }

    /// The framework-neutral request recorder behind the layer and the middleware.
    pub fn recorder(&self) -> &crate::recorder::Recorder {
        &self.inner.recorder
    }

    /// The OpenTelemetry tracer provider exporting over OTLP (also installed
    /// as the global one), for spans the application starts itself; `None`
    /// when spans are not exported. Parent them on the request's span with
    /// [`TraceContext::otel_context`](crate::trace::TraceContext::otel_context).
    #[cfg(otlp)]
    pub fn tracer_provider(&self) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
        self.inner
            .otlp
            .lock()
            .ok()
            .and_then(|o| o.traces.as_ref().map(|t| t.provider().clone()))
    }

    /// The rate limiter (in both adapters when it limits anything).
    pub fn rate_limiter(&self) -> &crate::ratelimit::Limiter {
        &self.inner.limiter
    }

    /// The Sentry reporter, when `SENTRY_DSN` is set.
    #[cfg(feature = "sentry")]
    pub fn reporter(&self) -> Option<&crate::report::Reporter> {
        self.inner.reporter.as_ref()
    }

    /// Waits (up to `OPSKIT_SENTRY_TIMEOUT`, at least 2 s) for queued error
    /// events to be delivered.
    pub fn flush(&self) {
        #[cfg(feature = "sentry")]
        if let Some(r) = &self.inner.reporter {
            r.flush(r.drain_timeout());
        }
    }

    /// The end of a server's life: flushes and closes error reporting (its
    /// delivery counters are logged), then flushes buffered log lines.
    /// `serve` and `serve_actix` call it before they return; log lines written
    /// after it may be lost.
    pub fn finish_telemetry(&self) {
        self.inner.finish_telemetry();
    }

    /// Log lines dropped so far because stdout could not keep up (the writer
    /// never blocks a request; it drops and counts instead).
    pub fn dropped_log_lines(&self) -> u64 {
        self.inner
            .dropped_log_lines
            .as_ref()
            .map_or(0, |c| c.dropped_lines())
    }

    /// Binds `HOST:PORT` (a tokio listener, for [`Ops::serve`]).
    pub async fn bind(&self) -> std::io::Result<tokio::net::TcpListener> {
        let l = tokio::net::TcpListener::bind(self.settings().listen_addr()).await?;
        if let Ok(a) = l.local_addr() {
            let _ = self.inner.local_addr.set(a);
        }
        Ok(l)
    }

    /// Binds `HOST:PORT` (a std listener, for Actix).
    pub fn bind_std(&self) -> std::io::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(self.settings().listen_addr())?;
        if let Ok(a) = l.local_addr() {
            let _ = self.inner.local_addr.set(a);
        }
        Ok(l)
    }

    /// The address [`bind`](Self::bind) or [`bind_std`](Self::bind_std)
    /// listens on (the real port when `PORT=0`); `HOST:PORT` before that.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.inner
            .local_addr
            .get()
            .copied()
            .unwrap_or_else(|| self.settings().listen_addr())
    }

    #[cfg(any(feature = "axum", feature = "actix"))]
    /// The drain sequence shared by both servers: wait for the shutdown,
    /// keep serving for `OPSKIT_SHUTDOWN_DELAY`, then let the caller stop accepting.
    pub(crate) async fn stop_accepting(&self) {
        self.shutdown().triggered().await;
        let delay = self.settings().shutdown_delay;
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "shutdown delay: still serving while load balancers notice"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!(
            timeout_ms = self.settings().shutdown_timeout.as_millis() as u64,
            "no longer accepting connections; draining in-flight requests"
        );
    }

    #[cfg(any(feature = "axum", feature = "actix"))]
    /// Logs that the server listens and marks start-up as done.
    pub(crate) fn announce(&self, addr: Option<std::net::SocketAddr>, framework: &'static str) {
        self.health().mark_started();
        self.health().start_refreshing();
        tracing::info!(
            address = addr.map(|a| a.to_string()).unwrap_or_default(),
            service = %self.service().name,
            version = %self.service().version,
            environment = %self.service().environment,
            framework,
            "listening"
        );
    }
}
