//! The logging variables: the filter, the format, the access log and the
//! request-id header.

use super::parse::{items, FromVar, HeaderName, List, LongSecret, Patterns, Ratio, Reader};
use super::VarSpec;

pub(super) const RUST_LOG: VarSpec = VarSpec::new(
    "RUST_LOG",
    "a tracing filter such as info or my_crate=debug,info",
    Some("info"),
    "Which log events are written (`tracing-subscriber` `EnvFilter` syntax).",
);
pub(super) const LOG_FORMAT: VarSpec = VarSpec::new(
    "OPSKIT_LOG_FORMAT",
    "json or pretty",
    Some("json"),
    "`json`: one JSON object per line (production). `pretty`: human-readable lines for development.",
);
pub(super) const ACCESS_LOG: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG",
    "true or false",
    Some("true"),
    "Whether one JSON line is written per finished request (target `opskit::access`).",
);
pub(super) const ACCESS_LOG_LEVELS: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG_LEVELS",
    "three levels (error, warn, info, debug, trace or off) for 1xx-3xx, 4xx and 5xx",
    Some("info,warn,error"),
    "Level of the access-log line by outcome: successes, client errors, server errors.",
);
pub(super) const ACCESS_LOG_SKIP_PATHS: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG_SKIP_PATHS",
    "a comma-separated list of paths",
    None,
    "Paths whose successful requests are not logged, each with the paths below it. Unset: the probes (`/livez`, `/readyz`, `/startupz` under `OPSKIT_HEALTH_PREFIX`) and `OPSKIT_METRICS_PATH`, wherever they are moved (those are quiet anyway unless `OPSKIT_TELEMETRY_OPERATIONAL` is on). Failures are always logged.",
);
pub(super) const TELEMETRY_EXCLUDE: VarSpec = VarSpec::new(
    "OPSKIT_TELEMETRY_EXCLUDE",
    "a comma-separated list of paths, a path ending in * being a prefix",
    None,
    "The application's own quiet routes (`/favicon.ico,/static/*`): like the probes and `/metrics`, no access line, request histogram, active-request count or span; counted in `opskit_quiet_requests_total` by pattern and status. Their 5xx are still logged and reported.",
);
pub(super) const TELEMETRY_OPERATIONAL: VarSpec = VarSpec::new(
    "OPSKIT_TELEMETRY_OPERATIONAL",
    "true or false",
    Some("false"),
    "Measure the operational routes (probes, `/health`, `/metrics`) like any route: request histogram series, active requests and spans (their access lines follow `OPSKIT_ACCESS_LOG_SKIP_PATHS`). Off: they are quiet.",
);
pub(super) const ACCESS_LOG_SAMPLE_RATE: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG_SAMPLE_RATE",
    "a number from 0 to 1",
    Some("1"),
    "Share of successful requests that are logged; 4xx and 5xx are always logged.",
);
pub(super) const REQUEST_ID_HEADER: VarSpec = VarSpec::new(
    "OPSKIT_REQUEST_ID_HEADER",
    "an HTTP header name",
    Some("x-request-id"),
    "Header read for an incoming request id (1-128 characters of `[A-Za-z0-9._:@+=/-]`, else a UUID is made) and echoed on the response.",
);

pub(super) const ADMIN_TOKEN: VarSpec = VarSpec::new(
    "OPSKIT_ADMIN_TOKEN",
    "a secret of at least 32 characters",
    None,
    "When set, `PUT /loggers` (under `OPSKIT_HEALTH_PREFIX`) changes the log filter while the service runs, for callers sending `Authorization: Bearer <token>`; see docs/logging.md. Unset: the endpoint does not exist (404).",
)
.secret();

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, for development.
    Pretty,
}

impl FromVar for LogFormat {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            _ => Err("the value is neither json nor pretty".to_owned()),
        }
    }
}

/// Log levels of the access-log line for successes, 4xx and 5xx (`None`: not logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLogLevels {
    /// 1xx to 3xx.
    pub success: Option<tracing::Level>,
    /// 4xx.
    pub client_error: Option<tracing::Level>,
    /// 5xx.
    pub server_error: Option<tracing::Level>,
}

impl FromVar for AccessLogLevels {
    fn from_var(value: &str) -> Result<Self, String> {
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        let [a, b, c] = parts.as_slice() else {
            return Err("there are not exactly three comma-separated levels".to_owned());
        };
        let level = |s: &str| -> Result<Option<tracing::Level>, String> {
            match s.to_ascii_lowercase().as_str() {
                "off" => Ok(None),
                other => other.parse::<tracing::Level>().map(Some).map_err(|_| {
                    "a level is not one of error, warn, info, debug, trace, off".to_owned()
                }),
            }
        };
        Ok(Self {
            success: level(a)?,
            client_error: level(b)?,
            server_error: level(c)?,
        })
    }
}

/// Access-log settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccessLogSettings {
    /// `OPSKIT_ACCESS_LOG`.
    pub enabled: bool,
    /// `OPSKIT_ACCESS_LOG_LEVELS`.
    pub levels: AccessLogLevels,
    /// `OPSKIT_ACCESS_LOG_SKIP_PATHS`: successful requests to these paths
    /// (or below them) are not logged. `None` (unset): the probes and the
    /// metrics path, wherever `OPSKIT_HEALTH_PREFIX` and
    /// `OPSKIT_METRICS_PATH` put them (resolved when opskit starts).
    pub skip_paths: Option<Vec<String>>,
    /// `OPSKIT_ACCESS_LOG_SAMPLE_RATE`.
    pub sample_rate: f64,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            levels: AccessLogLevels {
                success: Some(tracing::Level::INFO),
                client_error: Some(tracing::Level::WARN),
                server_error: Some(tracing::Level::ERROR),
            },
            skip_paths: None,
            sample_rate: 1.0,
        }
    }
}

/// A valid `EnvFilter`; the error names the first bad directive by
/// position (`EnvFilter`'s own message may quote it).
struct LogFilter(String);

impl FromVar for LogFilter {
    fn from_var(filter: &str) -> Result<Self, String> {
        if tracing_subscriber::EnvFilter::try_new(filter).is_ok() {
            return Ok(Self(filter.to_owned()));
        }
        match items(filter).find(|(_, d)| tracing_subscriber::EnvFilter::try_new(d).is_err()) {
            Some((n, _)) => Err(format!("directive {n} is not a valid filter directive")),
            None => Err("the directives are not a valid filter together".to_owned()),
        }
    }
}

/// The logging part of [`super::Settings`] (flat fields there).
pub(super) struct Logging {
    pub(super) filter: String,
    pub(super) format: LogFormat,
    pub(super) access_log: AccessLogSettings,
    pub(super) request_id_header: String,
    pub(super) telemetry_exclude: Vec<String>,
    pub(super) telemetry_operational: bool,
    pub(super) admin_token: Option<crate::Secret>,
}

/// Reads every logging variable through `r` (each problem is recorded
/// there), then combines them: `None` when one is invalid.
pub(super) fn read(r: &mut Reader<'_>) -> Option<Logging> {
    let filter: Option<LogFilter> = r.read(&RUST_LOG);
    let format = r.read(&LOG_FORMAT);
    let enabled = r.read(&ACCESS_LOG);
    let levels = r.read(&ACCESS_LOG_LEVELS);
    let skip: Option<List> = r.read(&ACCESS_LOG_SKIP_PATHS);
    let sample: Option<Ratio> = r.read(&ACCESS_LOG_SAMPLE_RATE);
    let request_id_header: Option<HeaderName> = r.read(&REQUEST_ID_HEADER);
    let exclude: Option<Patterns> = r.read(&TELEMETRY_EXCLUDE);
    let operational = r.read(&TELEMETRY_OPERATIONAL);
    let admin_token: Option<LongSecret<32>> = r.read(&ADMIN_TOKEN);
    Some(Logging {
        filter: filter?.0,
        format: format?,
        access_log: AccessLogSettings {
            enabled: enabled?,
            levels: levels?,
            // An invalid list is in the report, which refuses the settings.
            skip_paths: skip.map(|l| l.0),
            sample_rate: sample?.0,
        },
        request_id_header: request_id_header?.0,
        telemetry_exclude: exclude.map(|p| p.0).unwrap_or_default(),
        telemetry_operational: operational?,
        // An invalid token is in the report, which refuses the settings.
        admin_token: admin_token.map(|t| t.0),
    })
}
