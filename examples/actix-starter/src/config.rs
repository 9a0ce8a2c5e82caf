//! The starter's own settings, read from `APP_*` variables.

use opskit::config::{AppConfig, Validator, VarSpec};
use opskit::{Secret, Url};
use serde::Deserialize;

/// Everything is optional or defaulted, so the service starts with no environment.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// `APP_SECRET`: signing key; at least 32 characters when set.
    pub secret: Option<Secret>,
    /// `APP_DATABASE_URL`: PostgreSQL URL.
    pub database_url: Option<Url>,
    /// `APP_REDIS_URL`: Redis URL.
    pub redis_url: Option<Url>,
    /// `APP_GREETING`: what `GET /` says.
    #[serde(default = "default_greeting")]
    pub greeting: String,
    /// `APP_SLOW_MAX_MS`: the largest sleep `/demo/slow` accepts.
    #[serde(default = "default_slow_max_ms")]
    pub slow_max_ms: u64,
    /// `APP_DOWNSTREAM_URL`: what `/demo/downstream` calls (default: this
    /// service's own `/users/42`, standing in for another service).
    pub downstream_url: Option<Url>,
    // The test and demo hooks (`crate::demo`), all off by default.
    /// `APP_DEMO_SET`: `NAME=value` pairs for `Builder::set`.
    pub demo_set: Option<String>,
    /// `APP_DEMO_BEFORE_SEND`: a Sentry `before_send` hook.
    #[serde(default)]
    pub demo_before_send: bool,
    /// `APP_DEMO_RATE_LIMIT_KEY`: rate limits keyed by the bearer token.
    #[serde(default)]
    pub demo_rate_limit_key: bool,
    /// `APP_DEMO_OWN_RECORDER`: the application's own metrics recorder.
    #[serde(default)]
    pub demo_own_recorder: bool,
    /// `APP_DEMO_MAINTENANCE_FILE`: a check that fails while this file exists.
    pub demo_maintenance_file: Option<std::path::PathBuf>,
}

impl Config {
    /// What `/demo/downstream` calls: `APP_DOWNSTREAM_URL`, or this
    /// service's own `/users/42` at `own` (its listening address).
    pub fn downstream_url(&self, own: std::net::SocketAddr) -> String {
        match &self.downstream_url {
            Some(u) => u.to_string(),
            None => {
                let ip = match own.ip() {
                    ip if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
                    ip => ip,
                };
                format!(
                    "http://{}/users/42",
                    std::net::SocketAddr::new(ip, own.port())
                )
            }
        }
    }
}

fn default_greeting() -> String {
    "hello from opskit".to_owned()
}

fn default_slow_max_ms() -> u64 {
    60_000
}

/// The documented `APP_*` variables.
const VARS: &[VarSpec] = &[
    VarSpec::new(
        "APP_SECRET",
        "a secret of at least 32 characters",
        None,
        "Signing key of the starter (unused by the demo routes).",
    )
    .secret(),
    VarSpec::new(
        "APP_DATABASE_URL",
        "a postgres:// URL",
        None,
        "PostgreSQL the starter depends on (a readiness check).",
    ),
    VarSpec::new(
        "APP_REDIS_URL",
        "a redis:// URL",
        None,
        "Redis the starter depends on (a readiness check).",
    ),
    VarSpec::new(
        "APP_GREETING",
        "any text",
        Some("hello from opskit"),
        "What `GET /` answers.",
    ),
    VarSpec::new(
        "APP_SLOW_MAX_MS",
        "a number of milliseconds from 0 to 600000",
        Some("60000"),
        "Largest `ms` that `/demo/slow` accepts.",
    ),
    VarSpec::new(
        "APP_DOWNSTREAM_URL",
        "an http(s) URL",
        None,
        "What `/demo/downstream` calls, carrying the trace context on. Unset: this service's own `/users/42`.",
    ),
    // The test and demo hooks (src/demo.rs).
    VarSpec::new(
        "APP_DEMO_SET",
        "NAME=value pairs separated by ;",
        None,
        "Demo hook: each pair is given to `Builder::set`, which overrides the environment and `.env`.",
    ),
    VarSpec::new(
        "APP_DEMO_BEFORE_SEND",
        "true or false",
        Some("false"),
        "Demo hook: a Sentry `before_send` that drops the events of `GET /demo/error` and tags the others `demo.before_send=edited`.",
    ),
    VarSpec::new(
        "APP_DEMO_RATE_LIMIT_KEY",
        "true or false",
        Some("false"),
        "Demo hook: rate limits keyed by the `Authorization` bearer token (`Builder::rate_limit_key`); IP without one.",
    ),
    VarSpec::new(
        "APP_DEMO_OWN_RECORDER",
        "true or false",
        Some("false"),
        "Demo hook: the application installs its own `metrics` recorder before `init` (served at `/demo/own-metrics`; opskit serves no `/metrics`).",
    ),
    VarSpec::new(
        "APP_DEMO_MAINTENANCE_FILE",
        "a file path",
        None,
        "Demo hook: a readiness check, refreshed in the background every second, that fails while this file exists.",
    ),
];

impl AppConfig for Config {
    fn vars() -> &'static [VarSpec] {
        VARS
    }

    fn validate(&self, v: &mut Validator<'_>) {
        v.secret_min_len("secret", self.secret.as_ref(), 32);
        v.url_scheme(
            "database_url",
            self.database_url.as_ref(),
            &["postgres", "postgresql"],
        );
        v.url_scheme("redis_url", self.redis_url.as_ref(), &["redis", "rediss"]);
        v.range("slow_max_ms", self.slow_max_ms, 0..=600_000);
        v.url_scheme(
            "downstream_url",
            self.downstream_url.as_ref(),
            &["http", "https"],
        );
        let pairs = self.demo_set.as_deref().unwrap_or("").split(';');
        for (i, pair) in pairs.enumerate().filter(|(_, p)| !p.is_empty()) {
            let name = pair.split_once('=').map(|(name, _)| name.trim());
            if name.is_none_or(str::is_empty) {
                let problem = format!("pair {} has no NAME= before its value", i + 1);
                v.problem("demo_set", "NAME=value pairs separated by ;", problem);
            }
        }
    }
}
