//! The Sentry variables (error reporting, feature `sentry`). The settings
//! are read whether or not the feature is on, so that a deployment's
//! variables are checked the same way in every build.

use super::parse::{FromVar, Ratio, Reader};
use super::VarSpec;
use std::time::Duration;

pub(super) const SENTRY_DSN: VarSpec = VarSpec::new(
    "SENTRY_DSN",
    "a Sentry DSN (https://<key>@<host>/<project>)",
    None,
    "Where error events go (feature `sentry`). Unset: error reporting is off.",
)
.secret();
pub(super) const SENTRY_ENVIRONMENT: VarSpec = VarSpec::new(
    "SENTRY_ENVIRONMENT",
    "an environment name",
    None,
    "Environment of Sentry events. Unset: `OPSKIT_ENVIRONMENT`.",
);
pub(super) const SENTRY_RELEASE: VarSpec = VarSpec::new(
    "SENTRY_RELEASE",
    "a release name",
    None,
    "Release of Sentry events. Unset: `<service>@<version>`.",
);
pub(super) const SENTRY_SAMPLE_RATE: VarSpec = VarSpec::new(
    "SENTRY_SAMPLE_RATE",
    "a number from 0 to 1",
    Some("1"),
    "Share of error events sent.",
);
pub(super) const SENTRY_TRACES_SAMPLE_RATE: VarSpec = VarSpec::new(
    "SENTRY_TRACES_SAMPLE_RATE",
    "a number from 0 to 1",
    Some("0"),
    "Share of requests sent to Sentry as performance transactions.",
);
pub(super) const SENTRY_SEND_PII: VarSpec = VarSpec::new(
    "OPSKIT_SENTRY_SEND_PII",
    "true or false",
    Some("false"),
    "Whether Sentry events carry the client IP address. Cookies and authorization headers are never sent.",
);
pub(super) const SENTRY_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_SENTRY_TIMEOUT",
    "a duration such as 5s",
    Some("5s"),
    "Longest time one delivery to Sentry may take (in the background; requests never wait for it); also how long shutdown waits for queued events (at least 2s).",
);

/// Sentry settings (used with the `sentry` feature).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SentrySettings {
    /// `SENTRY_DSN`; `None`: error reporting off.
    pub dsn: Option<crate::Secret>,
    /// `SENTRY_ENVIRONMENT`.
    pub environment: Option<String>,
    /// `SENTRY_RELEASE`.
    pub release: Option<String>,
    /// `SENTRY_SAMPLE_RATE`.
    pub sample_rate: f64,
    /// `SENTRY_TRACES_SAMPLE_RATE`.
    pub traces_sample_rate: f64,
    /// `OPSKIT_SENTRY_SEND_PII`.
    pub send_pii: bool,
    /// `OPSKIT_SENTRY_TIMEOUT`.
    pub timeout: Duration,
}

impl SentrySettings {
    /// The defaults of the `SENTRY_*` variables with this DSN (tests, benches,
    /// reporters built by hand).
    pub fn with_dsn(dsn: crate::Secret) -> Self {
        Self {
            dsn: Some(dsn),
            environment: None,
            release: None,
            sample_rate: 1.0,
            traces_sample_rate: 0.0,
            send_pii: false,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A Sentry DSN, checked for its shape (`<scheme>://<key>@<host>/<project>`).
struct DsnVar(crate::Secret);

impl FromVar for DsnVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let url = url::Url::parse(value.trim()).map_err(|_| "the value is not a URL".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the scheme is not http or https".to_owned());
        }
        if url.username().is_empty() {
            return Err("the URL has no public key (the part before @)".to_owned());
        }
        let project = url
            .path()
            .trim_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        if project.is_empty() || !project.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the URL does not end in a numeric project id".to_owned());
        }
        Ok(Self(crate::Secret::new(value.trim())))
    }
}

/// Reads every Sentry variable through `r` (each problem is recorded
/// there), then combines them: `None` when one is invalid.
pub(super) fn read(r: &mut Reader<'_>) -> Option<SentrySettings> {
    let dsn: Option<DsnVar> = r.read(&SENTRY_DSN);
    let environment = r.read(&SENTRY_ENVIRONMENT);
    let release = r.read(&SENTRY_RELEASE);
    let sample_rate: Option<Ratio> = r.read(&SENTRY_SAMPLE_RATE);
    let traces_sample_rate: Option<Ratio> = r.read(&SENTRY_TRACES_SAMPLE_RATE);
    let send_pii = r.read(&SENTRY_SEND_PII);
    let timeout = r.read(&SENTRY_TIMEOUT);
    Some(SentrySettings {
        dsn: dsn.map(|d| d.0),
        environment,
        release,
        sample_rate: sample_rate?.0,
        traces_sample_rate: traces_sample_rate?.0,
        send_pii: send_pii?,
        timeout: timeout?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentry_dsn_shapes() {
        for good in [
            "https://k@o1.ingest.sentry.io/42",
            "http://key@127.0.0.1:9000/7",
        ] {
            assert!(DsnVar::from_var(good).is_ok(), "{good}");
        }
        for bad in [
            "nope",
            "ftp://k@h/1",
            "https://h/1",
            "https://k@h/",
            "https://k@h/abc",
        ] {
            let e = DsnVar::from_var(bad).err().unwrap();
            assert!(!e.contains(bad), "{e}");
        }
    }
}
