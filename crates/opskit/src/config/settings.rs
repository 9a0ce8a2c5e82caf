//! The library's own settings.

use super::parse::FromVar;
use super::{ConfigReport, Env, VarSpec};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const HOST: VarSpec = VarSpec::new(
    "HOST",
    "an IP address to listen on (or localhost)",
    Some("0.0.0.0"),
    "Address the server binds. `0.0.0.0` accepts connections on every interface, as containers need.",
);
const PORT: VarSpec = VarSpec::new(
    "PORT",
    "a TCP port number (0-65535)",
    Some("8080"),
    "Port the server binds; `0` picks a free port (the bound address is logged).",
);
const SERVICE_NAME: VarSpec = VarSpec::new(
    "OTEL_SERVICE_NAME",
    "a service name",
    None,
    "Name of the service in logs, traces and health output. Unset: the name given in code, else `unknown_service:<executable>`.",
);
const ENVIRONMENT: VarSpec = VarSpec::new(
    "OPSKIT_ENVIRONMENT",
    "a deployment environment name",
    Some("production"),
    "Deployment environment (`deployment.environment.name`), shown in logs and health output.",
);
const RUST_LOG: VarSpec = VarSpec::new(
    "RUST_LOG",
    "a tracing filter such as info or my_crate=debug,info",
    Some("info"),
    "Which log events are written (`tracing-subscriber` `EnvFilter` syntax).",
);
const LOG_FORMAT: VarSpec = VarSpec::new(
    "OPSKIT_LOG_FORMAT",
    "json or pretty",
    Some("json"),
    "`json`: one JSON object per line (production). `pretty`: human-readable lines for development.",
);
const SHUTDOWN_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_SHUTDOWN_TIMEOUT",
    "a duration such as 30s, 500ms or 2m",
    Some("30s"),
    "After SIGTERM/SIGINT, how long in-flight requests may take to finish before the server exits anyway.",
);
const SHUTDOWN_DELAY: VarSpec = VarSpec::new(
    "OPSKIT_SHUTDOWN_DELAY",
    "a duration such as 5s, or 0",
    Some("0"),
    "After SIGTERM/SIGINT, how long to keep accepting requests while readiness reports 503, so load balancers stop routing here first.",
);

/// Every variable of [`Settings`], in the order of the reference.
pub static VARS: &[VarSpec] = &[
    HOST,
    PORT,
    SERVICE_NAME,
    ENVIRONMENT,
    RUST_LOG,
    LOG_FORMAT,
    SHUTDOWN_TIMEOUT,
    SHUTDOWN_DELAY,
];

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
}

/// Reads variables and collects every problem.
pub(crate) struct Reader<'a> {
    env: &'a Env,
    pub(crate) report: ConfigReport,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(env: &'a Env) -> Self {
        Self {
            env,
            report: ConfigReport::default(),
        }
    }

    /// The parsed value, the parsed default when unset, or `None` (problem recorded
    /// when the value is invalid).
    pub(crate) fn read<T: FromVar>(&mut self, spec: &VarSpec) -> Option<T> {
        let raw = self.env.get(spec.name).or(spec.default)?;
        match T::from_var(raw) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.report.push(spec.name, spec.expected, problem);
                None
            }
        }
    }
}

impl Settings {
    /// Reads and validates every library variable, reporting all problems at once.
    pub fn from_env(env: &Env) -> Result<Self, ConfigReport> {
        let mut r = Reader::new(env);
        let host = r.read(&HOST);
        let port = r.read(&PORT);
        let service_name = r.read(&SERVICE_NAME);
        let environment = r.read(&ENVIRONMENT);
        let log_filter: Option<String> = r.read(&RUST_LOG);
        if let Some(filter) = &log_filter {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
                r.report.push(
                    RUST_LOG.name,
                    RUST_LOG.expected,
                    format!("the filter is invalid: {e}"),
                );
            }
        }
        let log_format = r.read(&LOG_FORMAT);
        let shutdown_timeout = r.read(&SHUTDOWN_TIMEOUT);
        let shutdown_delay = r.read(&SHUTDOWN_DELAY);
        match (
            host,
            port,
            environment,
            log_filter,
            log_format,
            shutdown_timeout,
            shutdown_delay,
        ) {
            (
                Some(host),
                Some(port),
                Some(environment),
                Some(log_filter),
                Some(log_format),
                Some(shutdown_timeout),
                Some(shutdown_delay),
            ) if r.report.is_empty() => Ok(Self {
                host,
                port,
                service_name,
                environment,
                log_filter,
                log_format,
                shutdown_timeout,
                shutdown_delay,
            }),
            _ => Err(r.report),
        }
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
        assert_eq!(s.shutdown_delay, Duration::ZERO);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.listen_addr().to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn every_problem_at_once() {
        let env = Env::from_pairs([
            ("PORT", "abc"),
            ("HOST", "nowhere"),
            ("OPSKIT_SHUTDOWN_TIMEOUT", "forever"),
            ("OPSKIT_LOG_FORMAT", "xml"),
            ("RUST_LOG", "info,[[["),
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
                "OPSKIT_SHUTDOWN_TIMEOUT"
            ]
        );
    }

    #[test]
    fn empty_is_unset() {
        let env = Env::from_pairs([("PORT", ""), ("OPSKIT_SHUTDOWN_TIMEOUT", "5s")]);
        let s = Settings::from_env(&env).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    }
}
