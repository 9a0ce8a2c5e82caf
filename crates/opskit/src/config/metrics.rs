//! The metrics variables: whether and where the HTTP server metrics are
//! served, who may scrape them, and how many series they keep.

use super::parse::{numbered, Bounded, FromVar, LongSecret, NonEmptyPath, Reader};
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
pub(super) const METRICS_LABELS: VarSpec = VarSpec::new("OPSKIT_METRICS_LABELS", "labels separated by ;, each field:value|value|… or field:cap=N, such as tenant:free|pro;region:cap=20", None, "Enrichment fields (`RequestTelemetry::set`) that become labels of the HTTP histograms: at most 4, each with its allowed values (at most 64) or a cap of distinct values (1 to 1000); other values are `_OTHER` and counted in `opskit_metrics_label_overflow_total`. Never `user.*` (see docs/metrics.md).");
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

/// `OPSKIT_METRICS_LABELS`: `field:v1|v2` or `field:cap=N` entries,
/// separated by `;`.
struct LabelsVar(Vec<crate::metrics::MetricLabel>);

impl FromVar for LabelsVar {
    fn from_var(value: &str) -> Result<Self, String> {
        use crate::metrics::MetricLabel;
        let mut out = Vec::new();
        for (n, entry) in numbered(value, ';') {
            let (name, values) = entry
                .split_once(':')
                .ok_or_else(|| format!("entry {n} is not field:values or field:cap=N"))?;
            let label = MetricLabel::new(name.trim());
            let label = match values.trim().strip_prefix("cap=") {
                Some(cap) => label.cap(cap.trim().parse().map_err(|_| {
                    format!(
                        "entry {n}: the cap is not a whole number from 1 to {}",
                        crate::metrics::MAX_CAP
                    )
                })?),
                None => label.values(values.split('|').map(str::trim)),
            };
            if let Some(problem) = label.problem() {
                return Err(format!("entry {n}: {problem}"));
            }
            out.push(label);
        }
        match crate::metrics::labels_problem(&out) {
            Some(problem) => Err(problem),
            None => Ok(Self(out)),
        }
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
    let labels: Option<LabelsVar> = r.read(&METRICS_LABELS);
    Some(crate::metrics::MetricsSettings {
        enabled: enabled?,
        path: path?.0,
        token: token.map(|t| t.0),
        max_series: max_series?.0 as usize,
        duration_buckets: buckets?.0,
        addr: addr.map(|a| a.0),
        labels: labels.map(|l| l.0).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{LabelValues, MetricLabel};

    #[test]
    fn labels_are_parsed_and_checked() {
        let LabelsVar(labels) =
            LabelsVar::from_var(" tenant:free | pro ; plan.tier:cap=20;").unwrap();
        assert_eq!(
            labels,
            [
                MetricLabel::new("tenant").values(["free", "pro"]),
                MetricLabel::new("plan.tier").cap(20),
            ]
        );
        assert_eq!(labels[1].values, LabelValues::Cap(20));
        for bad in [
            "tenant",
            "tenant:",
            "tenant:cap=0",
            "tenant:cap=lots",
            "tenant:a||b",
            "user.id:cap=3",
            "Tenant:a",
            "a:x;b:x;c:x;d:x;e:x",
            "a.b:x;a_b:y",
        ] {
            assert!(LabelsVar::from_var(bad).is_err(), "{bad}");
        }
    }
}
