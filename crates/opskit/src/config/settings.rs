//! The library's own settings, composed of each subsystem's: every
//! subsystem's file in this folder declares its variables (the [`VarSpec`]s
//! of the reference), their parsers and a `read` that combines them.
//!
//! | file | variables | settings |
//! |---|---|---|
//! | `server.rs` | `HOST`, `PORT`, `OTEL_SERVICE_NAME`, `OPSKIT_ENVIRONMENT`, `OPSKIT_SHUTDOWN_*`, `OPSKIT_*_TIMEOUT` of connections | flat fields of [`Settings`] |
//! | `logging.rs` | `RUST_LOG`, `OPSKIT_LOG_FORMAT`, `OPSKIT_ACCESS_LOG*`, `OPSKIT_REQUEST_ID_HEADER`, `OPSKIT_ADMIN_TOKEN` | [`LogFormat`](super::LogFormat), [`AccessLogSettings`](super::AccessLogSettings) |
//! | `sentry.rs` | `SENTRY_*`, `OPSKIT_SENTRY_*` | [`SentrySettings`](super::SentrySettings) |
//! | `health.rs` | `OPSKIT_HEALTH_*`, `OPSKIT_COMMIT` | flat fields of [`Settings`] |
//! | `security.rs` | security headers, CORS, body limit, request timeout | [`SecuritySettings`](crate::security::SecuritySettings) |
//! | `metrics.rs` | `OPSKIT_METRICS*` | [`MetricsSettings`](crate::metrics::MetricsSettings) |
//! | `otel.rs` | `OTEL_*`, `OPSKIT_TRACE_RESPONSE_HEADER`, `OPSKIT_TRACE_UNTRUSTED`, `OPSKIT_TRACE_SPANS` | [`OtelSettings`](crate::otel::OtelSettings) |
//! | `ratelimit.rs` | `OPSKIT_RATE_LIMIT*`, `OPSKIT_TRUSTED_PROXIES`, `OPSKIT_FORWARDED_HEADER` | [`LimitSettings`](crate::ratelimit::LimitSettings) |
//!
//! Value parsers shared by several subsystems, and the [`Reader`] that
//! collects every problem, are in `parse.rs`.
//!
//! A new variable is declared in its subsystem's file, read in that file's
//! `read` (before anything is combined), and listed in [`VARS`] where the
//! reference should show it. A variable read but not listed (or listed
//! twice) fails `every_variable_read_is_in_the_reference_once` below; one
//! without an invalid value fails tests/config_every_problem.rs; the
//! generated docs/configuration.md and .env.example are checked by
//! tests/config_reference.rs.

use super::parse::Reader;
use super::{health, logging, metrics, otel, ratelimit, security, sentry, server};
use super::{AccessLogSettings, ConfigReport, Env, LogFormat, SentrySettings, VarSpec};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub(crate) const STRICT_ENV: VarSpec = VarSpec::new(
    "OPSKIT_STRICT_ENV",
    "true or false",
    Some("false"),
    "A set `OPSKIT_*` variable (or one under the application's prefix) that nothing reads is a configuration error instead of a start-up warning; either way the closest known name is suggested.",
);

/// Every variable of [`Settings`], in the order of the reference.
pub static VARS: &[VarSpec] = &[
    server::HOST,
    server::PORT,
    server::SERVICE_NAME,
    server::ENVIRONMENT,
    logging::RUST_LOG,
    logging::LOG_FORMAT,
    server::SHUTDOWN_TIMEOUT,
    server::SHUTDOWN_DELAY,
    server::HEADER_READ_TIMEOUT,
    server::KEEP_ALIVE_TIMEOUT,
    logging::ACCESS_LOG,
    logging::ACCESS_LOG_LEVELS,
    logging::ACCESS_LOG_SKIP_PATHS,
    logging::ACCESS_LOG_SAMPLE_RATE,
    logging::TELEMETRY_EXCLUDE,
    logging::TELEMETRY_OPERATIONAL,
    logging::REQUEST_ID_HEADER,
    logging::ADMIN_TOKEN,
    sentry::SENTRY_DSN,
    sentry::SENTRY_ENVIRONMENT,
    sentry::SENTRY_RELEASE,
    sentry::SENTRY_SAMPLE_RATE,
    sentry::SENTRY_TRACES_SAMPLE_RATE,
    sentry::SENTRY_SEND_PII,
    sentry::SENTRY_TIMEOUT,
    health::HEALTH_PREFIX,
    health::HEALTH_TOKEN,
    metrics::METRICS,
    metrics::METRICS_PATH,
    metrics::METRICS_TOKEN,
    metrics::METRICS_ADDR,
    metrics::METRICS_MAX_SERIES,
    metrics::METRICS_BUCKETS,
    metrics::METRICS_LABELS,
    otel::OTEL_SDK_DISABLED,
    otel::OTLP_ENDPOINT,
    otel::OTLP_METRICS_ENDPOINT,
    otel::OTLP_TRACES_ENDPOINT,
    otel::OTLP_PROTOCOL,
    otel::OTLP_TRACES_PROTOCOL,
    otel::OTLP_HEADERS,
    otel::OTLP_TRACES_HEADERS,
    otel::OTLP_TIMEOUT,
    otel::OTLP_TRACES_TIMEOUT,
    otel::METRIC_EXPORT_INTERVAL,
    otel::RESOURCE_ATTRIBUTES,
    otel::TRACES_SAMPLER,
    otel::TRACES_SAMPLER_ARG,
    otel::PROPAGATORS,
    otel::BSP_SCHEDULE_DELAY,
    otel::BSP_MAX_QUEUE_SIZE,
    otel::BSP_MAX_EXPORT_BATCH_SIZE,
    otel::TRACE_RESPONSE_HEADER,
    otel::TRACE_UNTRUSTED,
    otel::TRACE_SPANS,
    ratelimit::RATE_LIMIT,
    ratelimit::RATE_LIMIT_BURST,
    ratelimit::RATE_LIMIT_ROUTES,
    ratelimit::RATE_LIMIT_KEY,
    ratelimit::TRUSTED_PROXIES,
    ratelimit::FORWARDED_HEADER,
    ratelimit::RATE_LIMIT_IPV6_PREFIX,
    ratelimit::RATE_LIMIT_LEGACY_HEADERS,
    ratelimit::RATE_LIMIT_CAPACITY,
    ratelimit::RATE_LIMIT_REDIS_URL,
    ratelimit::RATE_LIMIT_REDIS_TIMEOUT,
    ratelimit::RATE_LIMIT_FAILURE,
    health::COMMIT,
    security::SECURITY_HEADERS,
    security::CSP,
    security::CSP_REPORT_ONLY,
    security::CSP_REPORT_URI,
    security::CSP_NONCE,
    security::FRAME_OPTIONS,
    security::HSTS_MAX_AGE,
    security::HSTS_PRELOAD,
    security::HTTPS,
    security::COEP,
    security::PERMISSIONS_POLICY,
    security::OVERRIDABLE,
    security::BODY_LIMIT,
    security::REQUEST_TIMEOUT,
    security::TIMEOUT_STATUS,
    security::ROUTE_LIMITS,
    security::CORS_ORIGINS,
    security::CORS_METHODS,
    security::CORS_HEADERS,
    security::CORS_CREDENTIALS,
    security::CORS_MAX_AGE,
    STRICT_ENV,
];

/// The library's own settings, read from [`VARS`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// `HOST`.
    pub host: IpAddr,
    /// `PORT`.
    pub port: u16,
    /// `OTEL_SERVICE_NAME`, if set.
    pub service_name: Option<String>,
    /// `OPSKIT_ENVIRONMENT`.
    pub environment: String,
    /// `RUST_LOG`.
    pub log_filter: String,
    /// `OPSKIT_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `OPSKIT_SHUTDOWN_TIMEOUT`.
    pub shutdown_timeout: Duration,
    /// `OPSKIT_SHUTDOWN_DELAY`.
    pub shutdown_delay: Duration,
    /// `OPSKIT_HEADER_READ_TIMEOUT`.
    pub header_read_timeout: Duration,
    /// `OPSKIT_KEEP_ALIVE_TIMEOUT` (zero: no keep-alive).
    pub keep_alive_timeout: Duration,
    /// `OPSKIT_ACCESS_LOG*`.
    pub access_log: AccessLogSettings,
    /// `OPSKIT_REQUEST_ID_HEADER` (lower case).
    pub request_id_header: String,
    /// `OPSKIT_TELEMETRY_EXCLUDE`: the application's quiet route patterns.
    pub telemetry_exclude: Vec<String>,
    /// `OPSKIT_TELEMETRY_OPERATIONAL`: the operational routes are measured.
    pub telemetry_operational: bool,
    /// `OPSKIT_ADMIN_TOKEN`: `/loggers` exists only when it is set.
    pub admin_token: Option<crate::Secret>,
    /// `SENTRY_*`.
    pub sentry: SentrySettings,
    /// `OPSKIT_HEALTH_PREFIX` (no trailing slash).
    pub health_prefix: String,
    /// `OPSKIT_HEALTH_TOKEN`.
    pub health_token: Option<crate::Secret>,
    /// `OPSKIT_COMMIT`.
    pub commit: Option<String>,
    /// Security headers, CORS and limits.
    pub security: crate::security::SecuritySettings,
    /// `OPSKIT_METRICS*`.
    pub metrics: crate::metrics::MetricsSettings,
    /// `OTEL_*` (export).
    pub otel: crate::otel::OtelSettings,
    /// `OPSKIT_RATE_LIMIT*`, `OPSKIT_TRUSTED_PROXIES`.
    pub rate_limit: crate::ratelimit::LimitSettings,
    /// `OPSKIT_TRACE_RESPONSE_HEADER` (`None`: off).
    pub trace_response_header: Option<String>,
    /// `OPSKIT_STRICT_ENV`: unknown variables are errors, not warnings.
    pub strict_env: bool,
}

impl Settings {
    /// Reads and validates every library variable, reporting all problems at once.
    pub fn from_env(env: &Env) -> Result<Self, ConfigReport> {
        let mut r = Reader::new(env);
        match Self::read(&mut r) {
            Some(settings) if r.report.is_empty() => Ok(settings),
            _ => {
                let mut report = r.report;
                // In the order of the reference, whichever subsystem read
                // them first (a check across variables counts as the
                // variable it names).
                report.problems.sort_by_key(|p| {
                    VARS.iter()
                        .position(|v| v.name == p.var)
                        .unwrap_or(VARS.len())
                });
                report.withhold_values(env);
                Err(report)
            }
        }
    }

    /// Each subsystem reads all of its variables through `r`, which records
    /// every problem; `None` says that one of them was invalid.
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let server = server::read(r);
        let logging = logging::read(r);
        let sentry = sentry::read(r);
        let health = health::read(r);
        let security = security::read(r);
        let metrics = metrics::read(r);
        let otel = otel::read(r);
        let rate_limit = ratelimit::read(r);
        let strict_env: Option<bool> = r.read(&STRICT_ENV);
        // Everything is read: combining may stop at the first `None`.
        let (server, logging, health, otel) = (server?, logging?, health?, otel?);
        Some(Self {
            host: server.host,
            port: server.port,
            service_name: server.service_name,
            environment: server.environment,
            log_filter: logging.filter,
            log_format: logging.format,
            shutdown_timeout: server.shutdown_timeout,
            shutdown_delay: server.shutdown_delay,
            header_read_timeout: server.header_read_timeout,
            keep_alive_timeout: server.keep_alive_timeout,
            access_log: logging.access_log,
            request_id_header: logging.request_id_header,
            telemetry_exclude: logging.telemetry_exclude,
            telemetry_operational: logging.telemetry_operational,
            admin_token: logging.admin_token,
            sentry: sentry?,
            health_prefix: health.prefix,
            health_token: health.token,
            commit: health.commit,
            security: security?,
            metrics: metrics?,
            otel: otel.export,
            rate_limit: rate_limit?,
            trace_response_header: otel.trace_response_header,
            strict_env: strict_env?,
        })
    }

    /// `HOST:PORT`.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let s = Settings::from_env(&Env::default()).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.shutdown_delay, Duration::from_secs(5));
        assert_eq!(s.header_read_timeout, Duration::from_secs(5));
        assert_eq!(s.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.listen_addr().to_string(), "0.0.0.0:8080");
        let d = AccessLogSettings::default();
        assert_eq!(s.access_log.levels, d.levels);
        assert_eq!(s.access_log.skip_paths, d.skip_paths);
        assert_eq!(s.request_id_header, "x-request-id");
    }

    #[test]
    fn every_problem_at_once() {
        let env = Env::from_pairs([
            ("PORT", "abc"),
            ("HOST", "nowhere"),
            ("OPSKIT_SHUTDOWN_TIMEOUT", "forever"),
            ("OPSKIT_LOG_FORMAT", "xml"),
            ("RUST_LOG", "info,[[["),
            ("OPSKIT_ACCESS_LOG_LEVELS", "info,warn"),
            ("OPSKIT_ACCESS_LOG_SAMPLE_RATE", "2"),
            ("OPSKIT_REQUEST_ID_HEADER", "bad header"),
            ("SENTRY_DSN", "https://sentry.example/42"),
        ]);
        let report = Settings::from_env(&env).unwrap_err();
        let vars: Vec<_> = report.problems.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "HOST",
                "PORT",
                "RUST_LOG",
                "OPSKIT_LOG_FORMAT",
                "OPSKIT_SHUTDOWN_TIMEOUT",
                "OPSKIT_ACCESS_LOG_LEVELS",
                "OPSKIT_ACCESS_LOG_SAMPLE_RATE",
                "OPSKIT_REQUEST_ID_HEADER",
                "SENTRY_DSN"
            ]
        );
    }

    #[test]
    fn range_and_enum_checks_do_not_hide_each_other() {
        let env = Env::from_pairs([
            ("OPSKIT_FORWARDED_HEADER", "bogus"),
            ("OPSKIT_RATE_LIMIT_FAILURE", "bogus"),
            ("OPSKIT_RATE_LIMIT_IPV6_PREFIX", "8"),
            ("OPSKIT_RATE_LIMIT_CAPACITY", "1"),
            ("OPSKIT_RATE_LIMIT_BURST", "0"),
            ("OPSKIT_METRICS_MAX_SERIES", "5"),
            ("OPSKIT_METRICS_PATH", "/"),
            ("OPSKIT_HEADER_READ_TIMEOUT", "0"),
        ]);
        let report = Settings::from_env(&env).unwrap_err();
        let mut vars: Vec<_> = report.problems.iter().map(|p| p.var.as_str()).collect();
        vars.sort_unstable();
        assert_eq!(
            vars,
            [
                "OPSKIT_FORWARDED_HEADER",
                "OPSKIT_HEADER_READ_TIMEOUT",
                "OPSKIT_METRICS_MAX_SERIES",
                "OPSKIT_METRICS_PATH",
                "OPSKIT_RATE_LIMIT_BURST",
                "OPSKIT_RATE_LIMIT_CAPACITY",
                "OPSKIT_RATE_LIMIT_FAILURE",
                "OPSKIT_RATE_LIMIT_IPV6_PREFIX",
            ],
            "{report}"
        );
    }

    #[test]
    fn no_problem_repeats_its_value() {
        let bad = [
            "Sentinel",
            "x Sentinel",
            "Sentinel/99",
            "1/Sentinel",
            "1Sentinel",
            "a=b,Sentinel",
            "a=%ZZSentinel",
            "http://Sentinel",
            "ftp://u:Sentinel@h/",
            "10.0.0.0/8,Sentinel",
            "10.0.0.0/Sentinel",
            "default-src 'self'; Sentinel x",
            "header:Sentinel x",
            "/p=Sentinel,/q=1/1m",
            "info,Sentinel=[[[",
            "info,warn,Sentinel",
            "Sentinel\u{e9}",
        ];
        for spec in VARS {
            for value in bad {
                let Err(report) = Settings::from_env(&Env::from_pairs([(spec.name, value)])) else {
                    continue;
                };
                let text = report.to_string();
                assert!(
                    !text.to_lowercase().contains("sentinel"),
                    "{} = {value}: {text}",
                    spec.name
                );
                // The parsers' own messages hold no value: the safety net
                // (`withhold_values`) had nothing to do.
                assert!(
                    !text.contains("value not shown)") || spec.secret,
                    "{} = {value}: {text}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn every_variable_read_is_in_the_reference_once() {
        let env = Env::default();
        let mut r = Reader::new(&env);
        assert!(Settings::read(&mut r).is_some());
        let mut read = r.names;
        read.sort_unstable();
        let mut declared: Vec<&str> = VARS.iter().map(|v| v.name).collect();
        declared.sort_unstable();
        assert_eq!(read, declared);
        let mut unique = declared.clone();
        unique.dedup();
        assert_eq!(unique, declared, "a variable in VARS twice");
    }

    #[test]
    fn empty_is_unset() {
        let env = Env::from_pairs([("PORT", ""), ("OPSKIT_SHUTDOWN_TIMEOUT", "5s")]);
        let s = Settings::from_env(&env).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    }
}
