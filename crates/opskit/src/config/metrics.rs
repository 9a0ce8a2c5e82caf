//! The metrics variables: whether and where the HTTP server metrics are
//! served, who may scrape them, and how many series they keep.

use super::parse::{Bounded, FromVar, LongSecret, NonEmptyPath, Reader};
use super::VarSpec;
use std::net::SocketAddr;

pub(super) const METRICS: VarSpec = VarSpec::new(
    "OPSKIT_METRICS",
    "true or false",
    Some("true"),
    "Record the HTTP server metrics and serve them at `OPSKIT_METRICS_PATH` (see docs/metrics.md).",
);
pub(super) const METRICS_PATH: VarSpec = VarSpec::new(
    "OPSKIT_METRICS_PATH",
    "a path such as /metrics",
    Some("/metrics"),
    "Where Prometheus scrapes the metrics.",
);
pub(super) const METRICS_TOKEN: VarSpec = VarSpec::new("OPSKIT_METRICS_TOKEN", "a secret of at least 16 characters", None, "When set, the metrics answer only `Authorization: Bearer <token>` (Prometheus `authorization` in the scrape config).").secret();
pub(super) const METRICS_ADDR: VarSpec = VarSpec::new(
    "OPSKIT_METRICS_ADDR",
    "an address such as 0.0.0.0:9464",
    None,
    "Serve the metrics on this address (a port of their own) instead of the application's port.",
);
pub(super) const METRICS_MAX_SERIES: VarSpec = VarSpec::new("OPSKIT_METRICS_MAX_SERIES", "a whole number from 10 to 100000", Some("1000"), "Most label sets (method, route, status, error) the HTTP metrics keep; more share one overflow series and are counted.");
pub(super) const METRICS_BUCKETS: VarSpec = VarSpec::new("OPSKIT_METRICS_BUCKETS", "a comma-separated list of increasing seconds", Some("0.005,0.01,0.025,0.05,0.075,0.1,0.25,0.5,0.75,1,2.5,5,7.5,10"), "Buckets of `http_server_request_duration_seconds` (OpenTelemetry's recommendation by default).");

/// A socket address (`0.0.0.0:9464`, `[::1]:9464`).
struct Addr(SocketAddr);

impl FromVar for Addr {
    fn from_var(value: &str) -> Result<Self, String> {
        value
            .trim()
            .parse()
            .map(Self)
            .map_err(|_| "the value is not an address such as 0.0.0.0:9464".to_owned())
    }
}

/// Increasing positive seconds.
struct Buckets(Vec<f64>);

impl FromVar for Buckets {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (i, part) in value.split(',').map(str::trim).enumerate() {
            let b: f64 = part
                .parse()
                .map_err(|_| format!("item {} is not a number of seconds", i + 1))?;
            if !(b.is_finite() && b > 0.0) || out.last().is_some_and(|l| *l >= b) {
                return Err(format!(
                    "item {} is not larger than the one before (and > 0)",
                    i + 1
                ));
            }
            out.push(b);
        }
        Ok(Self(out))
    }
}

/// Reads every metrics variable through `r` (each problem is recorded
/// there), then combines them: `None` when one is invalid.
pub(super) fn read(r: &mut Reader<'_>) -> Option<crate::metrics::MetricsSettings> {
    let enabled = r.read(&METRICS);
    let path: Option<NonEmptyPath> = r.read(&METRICS_PATH);
    let token: Option<LongSecret> = r.read(&METRICS_TOKEN);
    let addr: Option<Addr> = r.read(&METRICS_ADDR);
    let max_series: Option<Bounded<10, 100_000>> = r.read(&METRICS_MAX_SERIES);
    let buckets: Option<Buckets> = r.read(&METRICS_BUCKETS);
    Some(crate::metrics::MetricsSettings {
        enabled: enabled?,
        path: path?.0,
        token: token.map(|t| t.0),
        max_series: max_series?.0 as usize,
        duration_buckets: buckets?.0,
        addr: addr.map(|a| a.0),
    })
}
