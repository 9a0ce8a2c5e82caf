//! [`Builder`]: start-up options, and `init`, which reads the configuration
//! and starts every part.

#[cfg(otlp)]
use super::Otlp;
use super::{unknown_service, InitError, Inner, Ops};
use crate::config::{AppConfig, ConfigReport, Env, Settings};
use crate::health::Health;
use crate::service::ServiceInfo;
use crate::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;

/// Start-up options; ends in [`Builder::init`].
///
/// ```
/// use opskit::config::{Env, NoAppConfig};
/// let ops = opskit::Builder::new()
///     .service("billing", "1.4.2")
///     .env(Env::from_pairs([("PORT", "9000")]))
///     .install_logging(false)
///     .init::<NoAppConfig>()
///     .unwrap();
/// assert_eq!(ops.settings().port, 9000);
/// assert_eq!(ops.service().name, "billing");
/// ```
#[derive(Default)]
#[must_use]
pub struct Builder {
    env: Option<Env>,
    overrides: Vec<(String, String)>,
    dotenv: Option<PathBuf>,
    name: Option<String>,
    version: Option<String>,
    commit: Option<String>,
    csp: Option<String>,
    rate_limit_routes: Vec<crate::ratelimit::RoutePolicy>,
    route_limits: Vec<crate::limits::RouteLimit>,
    metric_labels: Vec<crate::metrics::MetricLabel>,
    rate_limit_key: Option<crate::ratelimit::KeyFn>,
    no_logging: bool,
    #[cfg(feature = "sentry")]
    before_send: Option<crate::report::BeforeSend>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Defaults: the process environment over `./.env` if it exists, logging installed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The service's name and version (usually `env!("CARGO_PKG_NAME")`,
    /// `env!("CARGO_PKG_VERSION")`). `OTEL_SERVICE_NAME` still wins for the name.
    pub fn service(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self.version = Some(version.into());
        self
    }

    /// The commit shown in `/health` (e.g. `option_env!("GIT_COMMIT")` at build
    /// time); `OPSKIT_COMMIT` wins.
    pub fn commit(mut self, commit: impl Into<String>) -> Self {
        self.commit = Some(commit.into());
        self
    }

    /// Reads this environment instead of the process's (tests, embedding).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Sets a variable in code; it overrides the environment.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.push((name.into(), value.into()));
        self
    }

    /// The Content-Security-Policy (as `OPSKIT_CSP`; the environment still wins,
    /// so operators can tighten or relax it without a rebuild).
    pub fn csp(mut self, csp: &crate::security::Csp) -> Self {
        self.csp = Some(csp.to_string());
        self
    }

    /// A rate-limit policy for paths matching `pattern` (exact, or a prefix
    /// ending in `*`): `quota`, or `None` to exempt them. Policies from
    /// `OPSKIT_RATE_LIMIT_ROUTES` come first (operators win).
    pub fn rate_limit_route(
        mut self,
        pattern: &str,
        quota: Option<crate::ratelimit::Quota>,
    ) -> Self {
        self.rate_limit_routes.push(crate::ratelimit::RoutePolicy {
            pattern: pattern.to_owned(),
            quota,
        });
        self
    }

    /// A body limit or timeout of its own for the routes `limit.pattern`
    /// matches (exact, or a prefix ending in `*`): an upload route that takes
    /// 100 MiB, an export that takes minutes. Limits from
    /// `OPSKIT_ROUTE_LIMITS` come first (operators win).
    ///
    /// ```
    /// use opskit::limits::RouteLimit;
    /// let ops = opskit::Builder::new()
    ///     .env(opskit::config::Env::from_pairs([("OPSKIT_ROUTE_LIMITS", "/export:timeout=2m")]))
    ///     .route_limit(RouteLimit::new("/upload").body_limit(100 << 20))
    ///     .install_logging(false)
    ///     .init::<opskit::config::NoAppConfig>()
    ///     .unwrap();
    /// let limits = &ops.settings().security.route_limits;
    /// assert_eq!((limits[0].pattern.as_str(), limits[1].pattern.as_str()), ("/export", "/upload"));
    /// ```
    pub fn route_limit(mut self, limit: crate::limits::RouteLimit) -> Self {
        self.route_limits.push(limit);
        self
    }

    /// Declares an enrichment field a label of the HTTP request histograms,
    /// with its allowed values or a cap of distinct values (beyond them a
    /// value is `_OTHER`); no undeclared field is ever a label. Labels from
    /// `OPSKIT_METRICS_LABELS` come first and win over one of the same name
    /// (operators win); a refused declaration is a configuration problem of
    /// `init`. Never declare a user id or other personal data.
    ///
    /// ```
    /// use opskit::metrics::MetricLabel;
    /// let ops = opskit::Builder::new()
    ///     .env(opskit::config::Env::from_pairs([("OPSKIT_METRICS_LABELS", "region:cap=5")]))
    ///     .metric_label(MetricLabel::new("plan").values(["free", "pro"]))
    ///     .metric_label(MetricLabel::new("region").cap(20))
    ///     .install_logging(false)
    ///     .init::<opskit::config::NoAppConfig>()
    ///     .unwrap();
    /// let labels = &ops.settings().metrics.labels;
    /// assert_eq!(labels[..], [MetricLabel::new("region").cap(5), MetricLabel::new("plan").values(["free", "pro"])]);
    /// ```
    pub fn metric_label(mut self, label: crate::metrics::MetricLabel) -> Self {
        self.metric_labels.push(label);
        self
    }

    /// Keys rate limits by `key` (an authenticated user id, say); requests
    /// for which it returns `None` are keyed by client IP.
    pub fn rate_limit_key(
        mut self,
        key: impl Fn(&crate::ratelimit::RequestInfo<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.rate_limit_key = Some(Arc::new(key));
        self
    }

    /// The `.env` file read under the process environment (default `./.env`).
    pub fn dotenv(mut self, path: impl Into<PathBuf>) -> Self {
        self.dotenv = Some(path.into());
        self
    }

    /// A hook that may change or drop each Sentry event before it is sent.
    #[cfg(feature = "sentry")]
    pub fn sentry_before_send(
        mut self,
        f: impl Fn(sentry::protocol::Event<'static>) -> Option<sentry::protocol::Event<'static>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.before_send = Some(Arc::new(f));
        self
    }

    /// Whether to install the global log subscriber (default true).
    pub fn install_logging(mut self, install: bool) -> Self {
        self.no_logging = !install;
        self
    }

    /// Reads and validates the library's and the application's variables,
    /// reporting every problem at once, then installs the global parts.
    pub fn init<C: AppConfig>(self) -> Result<Ops<C>, InitError> {
        let mut env = match self.env {
            Some(env) => env,
            None => {
                let dotenv = self.dotenv.unwrap_or_else(|| PathBuf::from(".env"));
                Env::from_process(Some(&dotenv)).map_err(InitError::Config)?
            }
        };
        for (k, v) in self.overrides {
            env.set(k, v);
        }
        if let Some(csp) = self.csp {
            if env.get("OPSKIT_CSP").is_none() {
                env.set("OPSKIT_CSP", csp);
            }
        }
        let settings = Settings::from_env(&env);
        let app = C::from_env(&env);
        // Variables nothing reads (typos): warnings once logging is on, or
        // problems reported with the rest under OPSKIT_STRICT_ENV.
        let unknown = crate::config::unknown_vars::<C>(&env);
        let strict = crate::config::strict(&env);
        let settings = settings.and_then(|mut s| {
            declare_labels(&mut s.metrics.labels, self.metric_labels)?;
            Ok(s)
        });
        let (settings, app) = match (settings, app) {
            (Ok(mut s), Ok(a)) if !strict || unknown.is_empty() => {
                s.security.route_limits.extend(self.route_limits);
                (s, a)
            }
            (s, a) => {
                let mut report = ConfigReport::default();
                if let Err(r) = s {
                    report.merge(r);
                }
                if let Err(r) = a {
                    report.merge(r);
                }
                if strict {
                    report.merge(crate::config::strict_report(&unknown));
                }
                return Err(InitError::Config(report));
            }
        };
        let service = ServiceInfo {
            name: settings
                .service_name
                .clone()
                .or(self.name)
                .unwrap_or_else(unknown_service),
            version: self.version.unwrap_or_else(|| "unknown".to_owned()),
            environment: settings.environment.clone(),
        };
        #[cfg(feature = "sentry")]
        let reporter = crate::report::Reporter::new(&settings.sentry, &service, self.before_send);
        // With error reports on, the log events inside a request become
        // the breadcrumbs of its report.
        #[cfg(feature = "sentry")]
        let breadcrumbs = reporter.as_ref().map(|_| crate::report::BreadcrumbLayer);
        #[cfg(not(feature = "sentry"))]
        let breadcrumbs = None::<tracing_subscriber::layer::Identity>;
        let log_guard = if self.no_logging {
            None
        } else {
            let installed =
                crate::logging::install(&settings, breadcrumbs).map_err(InitError::Logging)?;
            crate::pipeline::install_panic_hook();
            Some(installed)
        };
        for u in &unknown {
            tracing::warn!(target: "opskit::config", variable = %u.name, closest = u.closest.as_deref(), "{}", u.warning());
        }
        let (log_guard, dropped_log_lines) = match log_guard {
            Some((guard, counter)) => (Some(guard), Some(counter)),
            None => (None, None),
        };
        let shutdown = Shutdown::new();
        // Probes and scrapes: never rate limited, never error reports.
        let operational: Vec<String> = crate::health::Probe::ALL
            .iter()
            .map(|p| format!("{}/{}", settings.health_prefix, p.path_segment()))
            .chain([settings.metrics.path.clone()])
            .collect();
        // Unset, the access log's skip list is the probes and the scrape
        // where they are served (not `/health`: a report people read).
        let mut access_log = settings.access_log.clone();
        if access_log.skip_paths.is_none() {
            access_log.skip_paths = Some(
                [
                    crate::health::Probe::Live,
                    crate::health::Probe::Ready,
                    crate::health::Probe::Startup,
                ]
                .iter()
                .map(|p| format!("{}/{}", settings.health_prefix, p.path_segment()))
                .chain([settings.metrics.path.clone()])
                .collect(),
            );
        }
        let recorder = crate::recorder::Recorder::new(access_log, &settings.request_id_header)
            .with_trace_response_header(settings.trace_response_header.clone())
            .with_trace_context(settings.otel.sampler, settings.otel.propagation)
            .with_shutdown(shutdown.clone())
            .with_operational_paths(operational.clone())
            .with_quiet_routes(
                &operational,
                settings.telemetry_operational,
                &settings.telemetry_exclude,
            );
        #[cfg(feature = "sentry")]
        let recorder = {
            if let Some(r) = &reporter {
                crate::report::set_global(r);
                tracing::info!("error reporting to Sentry is on");
            }
            recorder.with_reporter(reporter.clone())
        };
        let metrics_on = settings.metrics.enabled;
        #[cfg(feature = "prometheus")]
        let exporter = metrics_on
            .then(|| crate::metrics::Exporter::install(&settings.metrics))
            .flatten();
        #[cfg(otlp)]
        let mut transport = crate::otel::Transport::default();
        #[cfg(otlp)]
        let (otlp, otel_instruments) = metrics_on
            .then(|| {
                let bounds = crate::otel::HistogramBounds {
                    duration: &settings.metrics.duration_buckets,
                    body_size: &crate::metrics::BODY_SIZE_BUCKETS,
                };
                crate::otel::MetricsPipeline::start(
                    &settings.otel,
                    &service,
                    bounds,
                    &mut transport,
                )
            })
            .flatten()
            .unzip();
        #[cfg(otlp)]
        let traces = crate::otel::TracesPipeline::start(&settings.otel, &service, &mut transport);
        #[cfg(otlp)]
        let recorder = recorder.with_spans(traces.as_ref().map(crate::otel::TracesPipeline::sink));
        #[cfg(not(otlp))]
        if settings.otel.traces_target().is_some() {
            tracing::warn!("OTEL_EXPORTER_OTLP_ENDPOINT is set but opskit was built without the `otlp-http` or `otlp-grpc` feature; nothing is exported over OTLP");
        }
        #[cfg(otlp)]
        let http_metrics = |m: &crate::metrics::MetricsSettings| {
            crate::metrics::HttpMetrics::with_otel(m, otel_instruments.clone())
        };
        #[cfg(not(otlp))]
        let http_metrics = crate::metrics::HttpMetrics::new;
        crate::metrics::configure_client(
            metrics_on,
            #[cfg(otlp)]
            otel_instruments.as_ref().map(|o| o.client_duration.clone()),
        );
        let recorder = recorder.with_metrics(metrics_on.then(|| http_metrics(&settings.metrics)));
        #[cfg(not(feature = "sentry"))]
        if settings.sentry.dsn.is_some() {
            tracing::warn!("SENTRY_DSN is set but opskit was built without the `sentry` feature; errors are not reported");
        }
        let limiter = {
            let mut l = settings.rate_limit.clone();
            l.routes.extend(self.rate_limit_routes);
            // Probes and scrapes come from a few addresses many times a
            // minute: never limited.
            l.exempt = operational;
            if let Some(f) = self.rate_limit_key {
                l.key_by = crate::ratelimit::KeyBy::Custom(f);
            }
            if l.redis_url.is_some() && cfg!(not(feature = "redis")) {
                tracing::warn!("OPSKIT_RATE_LIMIT_REDIS_URL is set but opskit was built without the `redis` feature; quotas stay in memory, per process");
            }
            crate::ratelimit::Limiter::new(l)
        };
        let commit = settings
            .commit
            .clone()
            .or(self.commit)
            .unwrap_or_else(|| "unknown".to_owned());
        let health = Health::new(shutdown.clone()).with_identity(
            crate::health::Identity {
                service: service.name.clone(),
                version: service.version.clone(),
                commit: commit.clone(),
                environment: service.environment.clone(),
            },
            settings.health_token.clone(),
        );
        if metrics_on {
            metrics::gauge!(
                "opskit_build_info",
                "service_name" => service.name.clone(),
                "service_version" => service.version.clone(),
                "commit" => commit.clone(),
                "opskit_version" => env!("CARGO_PKG_VERSION"),
            )
            .set(1.0);
        }
        #[cfg(feature = "prometheus")]
        let metrics_endpoint = exporter.map(|exporter| {
            let dropped = dropped_log_lines.clone();
            #[cfg(feature = "sentry")]
            let reporter = reporter.clone();
            crate::metrics::Endpoint::new(
                exporter,
                settings.metrics.token.clone(),
                Arc::new(move || {
                    if let Some(d) = &dropped {
                        metrics::counter!("opskit_log_lines_dropped_total")
                            .absolute(d.dropped_lines());
                    }
                    #[cfg(feature = "sentry")]
                    if let Some(r) = &reporter {
                        use std::sync::atomic::Ordering::Relaxed;
                        let s = r.stats();
                        for (outcome, n) in [
                            ("sent", &s.sent),
                            ("failed", &s.failed),
                            ("dropped", &s.dropped),
                        ] {
                            metrics::counter!("opskit_error_reports_total", "outcome" => outcome)
                                .absolute(n.load(Relaxed));
                        }
                    }
                }),
            )
        });
        // On its own port, the endpoint is not in `routes()`.
        #[cfg(feature = "prometheus")]
        let metrics_endpoint = match (metrics_endpoint, settings.metrics.addr) {
            (Some(endpoint), Some(addr)) => {
                crate::metrics::listen(addr, settings.metrics.path.clone(), endpoint)
                    .map_err(|source| InitError::MetricsListener { addr, source })?;
                None
            }
            (endpoint, _) => endpoint,
        };
        Ok(Ops {
            inner: Arc::new(Inner {
                local_addr: std::sync::OnceLock::new(),
                #[cfg(otlp)]
                otlp: std::sync::Mutex::new(Otlp {
                    metrics: otlp,
                    traces,
                    transport: Some(transport),
                }),
                #[cfg(feature = "prometheus")]
                metrics_endpoint,
                health,
                shutdown,
                layer: crate::layer::OpsLayer::with_rate_limiter(
                    recorder.clone(),
                    crate::security::SecurityPolicy::new(&settings.security),
                    Some(limiter.clone()),
                ),
                limiter,
                recorder,
                dropped_log_lines,
                #[cfg(feature = "sentry")]
                reporter,
                settings,
                service,
                log_guard: std::sync::Mutex::new(log_guard),
            }),
            app: Arc::new(app),
        })
    }
}

/// Adds the builder's metric labels after the environment's (a label the
/// environment declares under the same Prometheus name wins); a refused
/// declaration, or too many in all, is a configuration problem.
fn declare_labels(
    labels: &mut Vec<crate::metrics::MetricLabel>,
    declared: Vec<crate::metrics::MetricLabel>,
) -> Result<(), ConfigReport> {
    const EXPECTED: &str = "labels with allowed values or a cap (docs/metrics.md)";
    let mut report = ConfigReport::default();
    for (n, label) in declared.into_iter().enumerate() {
        if let Some(problem) = label.problem() {
            report.push(
                "Builder::metric_label",
                EXPECTED,
                format!("label {}: {problem}", n + 1),
            );
        } else if !labels
            .iter()
            .any(|l| l.prometheus_name() == label.prometheus_name())
        {
            labels.push(label);
        }
    }
    if let Some(problem) = crate::metrics::labels_problem(labels) {
        report.push(
            "OPSKIT_METRICS_LABELS",
            EXPECTED,
            format!("with the service's Builder::metric_label: {problem}"),
        );
    }
    match report.is_empty() {
        true => Ok(()),
        false => Err(report),
    }
}
