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
    }
}
