//! Declared labels: enrichment fields ([`RequestTelemetry::set`](crate::telemetry::RequestTelemetry::set))
//! that become labels of the HTTP request histograms, because the service
//! declared them at start-up with their allowed values or a cap
//! (`OPSKIT_METRICS_LABELS`, [`Builder::metric_label`](crate::Builder::metric_label)).
//!
//! No other field is ever a label. A value outside the allowed ones, or a
//! new value once `cap` distinct ones are kept, is recorded as `_OTHER` and
//! counted in `opskit_metrics_label_overflow_total{label}`; a declared label
//! the request did not set is absent from its series (Prometheus reads an
//! absent label as the empty value; OpenTelemetry leaves the attribute out).
//!
//! ```
//! use opskit::metrics::MetricLabel;
//! let plan = MetricLabel::new("plan").values(["free", "pro"]);
//! let tenant = MetricLabel::new("tenant").cap(20);
//! assert_eq!(plan.prometheus_name(), "plan");
//! assert_eq!(MetricLabel::new("plan.tier").cap(3).prometheus_name(), "plan_tier");
//! # let _ = tenant;
//! ```

use crate::request::Enrichment;
use metrics::{Counter, Label};
use std::collections::HashMap;
use std::sync::RwLock;

/// Most labels a service may declare (each multiplies the series).
pub(crate) const MAX_LABELS: usize = 4;
/// Largest cap of distinct values of one label.
pub(crate) const MAX_CAP: u16 = 1000;
/// Most allowed values of one label.
pub(crate) const MAX_VALUES: usize = 64;
/// Longest allowed value, in bytes.
const MAX_VALUE_LEN: usize = 64;
/// The value a folded value is recorded as (the semantic conventions'
/// overflow value for methods, here for any declared label).
pub const FOLDED: &str = "_OTHER";
/// Requests whose value of a declared label was folded into [`FOLDED`].
pub const LABEL_OVERFLOW: &str = "opskit_metrics_label_overflow_total";

/// Prometheus label names opskit writes itself (and the histogram's `le`).
const OWN: [&str; 8] = [
    "http_request_method",
    "url_scheme",
    "http_route",
    "http_response_status_code",
    "error_type",
    "otel_metric_overflow",
    "le",
    "quantile",
];

/// Which values of a declared label are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelValues {
    /// Only these; any other value is folded.
    Allowed(Vec<String>),
    /// The first this many distinct values seen; later new ones are folded.
    Cap(u16),
}

/// A label declared at start-up: an enrichment field name and the values it
/// may take.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricLabel {
    /// The field name a handler sets (`tenant`, `plan.tier`).
    pub name: String,
    /// Its allowed values or its cap.
    pub values: LabelValues,
}

impl MetricLabel {
    /// The field `name`, with no value yet: declare its values with
    /// [`Self::values`] or a cap with [`Self::cap`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            values: LabelValues::Allowed(Vec::new()),
        }
    }

    /// Only these values are labels; every other one is folded into `_OTHER`.
    #[must_use]
    pub fn values<I: IntoIterator<Item = S>, S: Into<String>>(mut self, values: I) -> Self {
        self.values = LabelValues::Allowed(values.into_iter().map(Into::into).collect());
        self
    }

    /// The first `cap` distinct values are labels; later new ones are folded
    /// into `_OTHER`.
    #[must_use]
    pub fn cap(mut self, cap: u16) -> Self {
        self.values = LabelValues::Cap(cap);
        self
    }

    /// The label's Prometheus name: the field name, dots and dashes made
    /// underscores (`plan.tier` → `plan_tier`).
    pub fn prometheus_name(&self) -> String {
        self.name.replace(['.', '-'], "_")
    }

    /// Why this declaration is refused, if it is (never quoting a value).
    pub(crate) fn problem(&self) -> Option<String> {
        if !crate::telemetry::valid_key(&self.name) {
            return Some("the name is not a field a handler can set (1 to 64 of a-z 0-9 . _ -, not one of opskit's own)".to_owned());
        }
        if self.name.starts_with("user.") {
            return Some(
                "user.* fields are personal data and unbounded: never metric labels".to_owned(),
            );
        }
        let prom = self.prometheus_name();
        if prom.starts_with(|c: char| c.is_ascii_digit())
            || prom.starts_with("__")
            || OWN.contains(&prom.as_str())
        {
            return Some(
                "the name is one of opskit's own labels or not a Prometheus label name".to_owned(),
            );
        }
        match &self.values {
            LabelValues::Cap(cap) if !(1..=MAX_CAP).contains(cap) => {
                Some(format!("the cap is not from 1 to {MAX_CAP}"))
            }
            LabelValues::Cap(_) => None,
            LabelValues::Allowed(v) if v.is_empty() || v.len() > MAX_VALUES => Some(format!(
                "a label needs its allowed values (1 to {MAX_VALUES}) or a cap"
            )),
            LabelValues::Allowed(v) => v.iter().enumerate().find_map(|(i, value)| {
                let bad = value.is_empty()
                    || value.len() > MAX_VALUE_LEN
                    || value.trim() != value
                    || value.chars().any(|c| c.is_control() || c == '|' || c == ';')
                    || value == FOLDED
                    || v[..i].contains(value);
                bad.then(|| format!("value {} is empty, longer than {MAX_VALUE_LEN} bytes, has | ; or control characters, is {FOLDED}, or is repeated", i + 1))
            }),
        }
    }
}

/// Why this set of declarations is refused, if it is: too many, or two
/// with one Prometheus name.
pub(crate) fn set_problem(labels: &[MetricLabel]) -> Option<String> {
    if labels.len() > MAX_LABELS {
        return Some(format!("more than {MAX_LABELS} labels are declared"));
    }
    let names: Vec<String> = labels.iter().map(MetricLabel::prometheus_name).collect();
    let twice = (1..names.len()).any(|i| names[..i].contains(&names[i]));
    twice.then(|| "two labels have the same Prometheus name".to_owned())
}

/// A value's code in a series key: 0 unset, `FOLDED_CODE` folded, else the
/// value's index + 1.
const FOLDED_CODE: u16 = u16::MAX;

/// The declared labels at run time: each request's values as codes, packed
/// into one `u64` of the series key (16 bits a label), so that looking a
/// series up stays free of allocation.
#[derive(Debug, Default)]
pub(super) struct Declared {
    labels: Box<[Kept]>,
}

#[derive(Debug)]
struct Kept {
    field: Box<str>,
    prom: String,
    values: Values,
    folded: Counter,
}

#[derive(Debug)]
enum Values {
    Allowed(Box<[Box<str>]>),
    Capped { cap: usize, seen: RwLock<Seen> },
}

#[derive(Debug, Default)]
struct Seen {
    codes: HashMap<Box<str>, u16, foldhash::fast::RandomState>,
    names: Vec<Box<str>>,
}

impl Declared {
    /// The valid ones of `labels` (start-up validated them; a label that is
    /// refused, or one past [`MAX_LABELS`], is left out), each folded count
    /// at 0 from start-up.
    pub(super) fn new(labels: &[MetricLabel]) -> Self {
        let mut kept: Vec<Kept> = Vec::new();
        for l in labels.iter().filter(|l| l.problem().is_none()) {
            let prom = l.prometheus_name();
            if kept.len() == MAX_LABELS || kept.iter().any(|k| k.prom == prom) {
                continue;
            }
            let folded = metrics::counter!(LABEL_OVERFLOW, "label" => prom.clone());
            folded.increment(0);
            let values = match &l.values {
                LabelValues::Allowed(v) => {
                    Values::Allowed(v.iter().map(|s| Box::from(s.as_str())).collect())
                }
                LabelValues::Cap(cap) => Values::Capped {
                    cap: usize::from(*cap),
                    seen: RwLock::default(),
                },
            };
            kept.push(Kept {
                field: Box::from(l.name.as_str()),
                prom,
                values,
                folded,
            });
        }
        Self {
            labels: kept.into_boxed_slice(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The codes of the request's values, packed (0: no declared label set).
    pub(super) fn codes(&self, e: &Enrichment) -> u64 {
        let mut packed = 0;
        for (i, label) in self.labels.iter().enumerate() {
            if let Some(value) = e.get(&label.field) {
                packed |= u64::from(label.code(value)) << (16 * i);
            }
        }
        packed
    }

    /// The labels of packed `codes`, added to `out`.
    pub(super) fn push_labels(&self, codes: u64, out: &mut Vec<Label>) {
        for (i, label) in self.labels.iter().enumerate() {
            let value = match (codes >> (16 * i)) as u16 {
                0 => continue,
                FOLDED_CODE => FOLDED.to_owned(),
                code => label.name_of(code),
            };
            out.push(Label::new(label.prom.clone(), value));
        }
    }

    /// The field name (the OpenTelemetry attribute) of a declared label's
    /// Prometheus name.
    #[cfg(otlp)]
    pub(super) fn field_of(&self, prom: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.prom == prom)
            .map(|l| &*l.field)
    }
}

impl Kept {
    /// The code of `value`: its own, or folded (and counted).
    fn code(&self, value: &str) -> u16 {
        let code = match &self.values {
            Values::Allowed(allowed) => allowed
                .iter()
                .position(|a| **a == *value)
                .map(|i| i as u16 + 1),
            Values::Capped { cap, seen } => {
                let known = seen
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .codes
                    .get(value)
                    .copied();
                known.or_else(|| Self::admit(seen, *cap, value))
            }
        };
        code.unwrap_or_else(|| {
            self.folded.increment(1);
            FOLDED_CODE
        })
    }

    /// Keeps `value` as a new label value while fewer than `cap` are kept.
    #[cold]
    fn admit(seen: &RwLock<Seen>, cap: usize, value: &str) -> Option<u16> {
        let mut seen = seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(code) = seen.codes.get(value) {
            return Some(*code);
        }
        if seen.names.len() >= cap {
            return None;
        }
        seen.names.push(Box::from(value));
        let code = seen.names.len() as u16;
        seen.codes.insert(Box::from(value), code);
        Some(code)
    }

    fn name_of(&self, code: u16) -> String {
        let i = usize::from(code) - 1;
        match &self.values {
            Values::Allowed(allowed) => allowed.get(i).map(|s| s.to_string()),
            Values::Capped { seen, .. } => seen
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .names
                .get(i)
                .map(|s| s.to_string()),
        }
        .unwrap_or_else(|| FOLDED.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrichment(fields: &[(&str, &str)]) -> Enrichment {
        Enrichment {
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            route: None,
        }
    }

    fn labels_of(d: &Declared, fields: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        d.push_labels(d.codes(&enrichment(fields)), &mut out);
        out.iter()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn allowed_values_are_kept_and_others_fold() {
        let d = Declared::new(&[MetricLabel::new("plan.tier").values(["free", "pro"])]);
        assert_eq!(
            labels_of(&d, &[("plan.tier", "pro")]),
            [pair("plan_tier", "pro")]
        );
        assert_eq!(
            labels_of(&d, &[("plan.tier", "gold")]),
            [pair("plan_tier", FOLDED)]
        );
        // Unset: no label at all (and no code: the key of an undeclared request).
        assert_eq!(d.codes(&enrichment(&[("tenant", "acme")])), 0);
        assert!(labels_of(&d, &[("tenant", "acme")]).is_empty());
    }

    #[test]
    fn past_the_cap_new_values_fold_and_kept_ones_stay() {
        let d = Declared::new(&[
            MetricLabel::new("tenant").cap(3),
            MetricLabel::new("region").values(["eu"]),
        ]);
        let mut distinct = std::collections::BTreeSet::new();
        for i in 0..200 {
            let t = format!("t{i}");
            let labels = labels_of(&d, &[("tenant", &t), ("region", "eu")]);
            assert_eq!(labels[1], pair("region", "eu"));
            distinct.insert(labels[0].1.clone());
        }
        let expected: std::collections::BTreeSet<String> =
            ["t0", "t1", "t2", FOLDED].map(str::to_owned).into();
        assert_eq!(distinct, expected);
        // A kept value keeps its label after the cap is reached.
        assert_eq!(labels_of(&d, &[("tenant", "t1")]), [pair("tenant", "t1")]);
    }

    #[cfg(feature = "prometheus")]
    #[test]
    fn folded_values_are_counted_per_label() {
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = prometheus.handle();
        metrics::with_local_recorder(&prometheus, || {
            let d = Declared::new(&[
                MetricLabel::new("tenant").cap(1),
                MetricLabel::new("plan").values(["pro"]),
            ]);
            for t in ["a", "b", "c", "a"] {
                d.codes(&enrichment(&[("tenant", t), ("plan", "pro")]));
            }
        });
        let text = handle.render();
        let count = |label: &str| {
            let series = format!("{LABEL_OVERFLOW}{{label=\"{label}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .map(str::to_owned)
        };
        assert_eq!(count("tenant").as_deref(), Some("2"), "{text}");
        assert_eq!(count("plan").as_deref(), Some("0"), "{text}");
    }

    #[test]
    fn declarations_are_checked() {
        for ok in [
            MetricLabel::new("tenant").cap(20),
            MetricLabel::new("plan").values(["free", "pro"]),
        ] {
            assert_eq!(ok.problem(), None, "{ok:?}");
        }
        for bad in [
            MetricLabel::new("tenant"),
            MetricLabel::new("tenant").cap(0),
            MetricLabel::new("tenant").cap(MAX_CAP + 1),
            MetricLabel::new("user.id").cap(3),
            MetricLabel::new("Tenant").cap(3),
            MetricLabel::new("http_route").cap(3),
            MetricLabel::new("le").cap(3),
            MetricLabel::new("1x").cap(3),
            MetricLabel::new("plan").values(["free", ""]),
            MetricLabel::new("plan").values(["free", "free"]),
            MetricLabel::new("plan").values(["a|b"]),
            MetricLabel::new("plan").values([FOLDED]),
        ] {
            assert!(bad.problem().is_some(), "{bad:?}");
        }
        let twice = [
            MetricLabel::new("plan.tier").cap(2),
            MetricLabel::new("plan_tier").cap(2),
        ];
        assert!(set_problem(&twice).is_some());
        let many: Vec<_> = (0..=MAX_LABELS)
            .map(|i| MetricLabel::new(format!("l{i}")).cap(2))
            .collect();
        assert!(set_problem(&many).is_some());
        assert!(set_problem(&many[..MAX_LABELS]).is_none());
    }
}
