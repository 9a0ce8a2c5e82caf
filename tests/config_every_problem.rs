//! Configuration problems are all reported in one run, and variables nothing
//! reads (typos) are caught — the same in both starters.
//!
//! The list of variables comes from the code's own declaration (the
//! `VarSpec` tables that generate docs/configuration.md and .env.example):
//! a variable added there without an invalid value (or an explicit
//! exclusion) below fails `every_variable_is_classified`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit::config::{AppConfig, VarSpec, VARS};
use opskit_conformance::{run_to_exit, Kind, Starter};
use std::collections::BTreeSet;
use std::time::Duration;

opskit_conformance::conformance!(
    every_invalid_variable_is_named_in_one_report,
    an_unknown_variable_is_warned_about_with_the_closest_name,
    strict_env_makes_unknown_variables_config_errors,
);

/// A value invalid for each validated variable's type (a range check, an
/// enum, a parser), one per variable.
const INVALID: &[(&str, &str)] = &[
    ("HOST", "nowhere"),
    ("PORT", "abc"),
    ("RUST_LOG", "info,x=[[["),
    ("OPSKIT_LOG_FORMAT", "xml"),
    ("OPSKIT_SHUTDOWN_TIMEOUT", "forever"),
    ("OPSKIT_SHUTDOWN_DELAY", "forever"),
    // A range check: 0 parses as a duration, but is refused.
    ("OPSKIT_HEADER_READ_TIMEOUT", "0"),
    ("OPSKIT_KEEP_ALIVE_TIMEOUT", "forever"),
    ("OPSKIT_ACCESS_LOG", "maybe"),
    ("OPSKIT_ACCESS_LOG_LEVELS", "info,warn"),
    ("OPSKIT_ACCESS_LOG_SAMPLE_RATE", "2"),
    ("OPSKIT_REQUEST_ID_HEADER", "bad header"),
    ("OPSKIT_TELEMETRY_EXCLUDE", "/ok,favicon.ico"),
    ("OPSKIT_TELEMETRY_OPERATIONAL", "maybe"),
    // 31 characters: one short of the admin token's minimum.
    ("OPSKIT_ADMIN_TOKEN", "0123456789012345678901234567890"),
    ("SENTRY_DSN", "https://sentry.example/42"),
    ("SENTRY_SAMPLE_RATE", "2"),
    ("SENTRY_TRACES_SAMPLE_RATE", "-1"),
    ("OPSKIT_SENTRY_SEND_PII", "maybe"),
    ("OPSKIT_SENTRY_TIMEOUT", "forever"),
    ("OPSKIT_HEALTH_PREFIX", "no-slash"),
    ("OPSKIT_HEALTH_TOKEN", "short"),
    ("OPSKIT_METRICS", "maybe"),
    // A path that is empty once its trailing slash is removed.
    ("OPSKIT_METRICS_PATH", "/"),
    ("OPSKIT_METRICS_TOKEN", "short"),
    ("OPSKIT_METRICS_ADDR", "nowhere"),
    ("OPSKIT_METRICS_MAX_SERIES", "5"),
    ("OPSKIT_METRICS_BUCKETS", "2,1"),
    ("OPSKIT_METRICS_LABELS", "tenant:cap=lots"),
    ("OTEL_SDK_DISABLED", "maybe"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector/"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "ftp://collector/"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "novalue"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
    ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
    ("OTEL_TRACES_SAMPLER", "random"),
    ("OTEL_TRACES_SAMPLER_ARG", "2"),
    ("OTEL_PROPAGATORS", "b3"),
    ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
    ("OPSKIT_TRACE_RESPONSE_HEADER", "bad header"),
    ("OPSKIT_TRACE_UNTRUSTED", "maybe"),
    ("OPSKIT_TRACE_SPANS", "info,my_app=loud"),
    ("OPSKIT_RATE_LIMIT", "lots"),
    ("OPSKIT_RATE_LIMIT_BURST", "0"),
    ("OPSKIT_RATE_LIMIT_ROUTES", "nopath"),
    ("OPSKIT_RATE_LIMIT_KEY", "cookie"),
    ("OPSKIT_TRUSTED_PROXIES", "nowhere"),
    ("OPSKIT_FORWARDED_HEADER", "bogus"),
    ("OPSKIT_RATE_LIMIT_IPV6_PREFIX", "8"),
    ("OPSKIT_RATE_LIMIT_LEGACY_HEADERS", "maybe"),
    ("OPSKIT_RATE_LIMIT_CAPACITY", "1"),
    ("OPSKIT_RATE_LIMIT_REDIS_URL", "http://cache/"),
    ("OPSKIT_RATE_LIMIT_REDIS_TIMEOUT", "forever"),
    ("OPSKIT_RATE_LIMIT_FAILURE", "bogus"),
    ("OPSKIT_SECURITY_HEADERS", "maybe"),
    ("OPSKIT_CSP", "DEFAULT-SRC 'self'"),
    ("OPSKIT_CSP_REPORT_ONLY", "maybe"),
    ("OPSKIT_CSP_REPORT_URI", "/r\u{e9}port"),
    ("OPSKIT_CSP_NONCE", "maybe"),
    ("OPSKIT_FRAME_OPTIONS", "allow"),
    ("OPSKIT_HSTS_MAX_AGE", "forever"),
    ("OPSKIT_HSTS_PRELOAD", "maybe"),
    ("OPSKIT_HTTPS", "sometimes"),
    ("OPSKIT_COEP", "maybe"),
    ("OPSKIT_PERMISSIONS_POLICY", "camera=(\u{e9})"),
    ("OPSKIT_BODY_LIMIT", "huge"),
    ("OPSKIT_REQUEST_TIMEOUT", "forever"),
    ("OPSKIT_REQUEST_TIMEOUT_STATUS", "500"),
    ("OPSKIT_ROUTE_LIMITS", "/upload:body=huge"),
    ("OPSKIT_SECURITY_HEADERS_OVERRIDABLE", "bad header"),
    ("OPSKIT_CORS_METHODS", "GET,BAD METHOD"),
    ("OPSKIT_CORS_HEADERS", "content-type,bad header"),
    ("OPSKIT_CORS_CREDENTIALS", "maybe"),
    ("OPSKIT_CORS_MAX_AGE", "forever"),
    ("OPSKIT_STRICT_ENV", "maybe"),
    // The starters' own.
    ("APP_SECRET", "short"),
    ("APP_DATABASE_URL", "mysql://db/app"),
    ("APP_REDIS_URL", "nope"),
    ("APP_SLOW_MAX_MS", "lots"),
    ("APP_DOWNSTREAM_URL", "not a url"),
    ("APP_DEMO_SET", "novalue"),
    ("APP_DEMO_BEFORE_SEND", "maybe"),
    ("APP_DEMO_RATE_LIMIT_KEY", "maybe"),
    ("APP_DEMO_OWN_RECORDER", "maybe"),
];

/// Variables that accept any text: no value is invalid for them.
const ANY_TEXT: &[(&str, &str)] = &[
    ("OTEL_SERVICE_NAME", "any service name"),
    ("OPSKIT_ENVIRONMENT", "any environment name"),
    ("SENTRY_ENVIRONMENT", "any environment name"),
    ("SENTRY_RELEASE", "any release name"),
    ("OPSKIT_COMMIT", "any commit id"),
    (
        "OPSKIT_ACCESS_LOG_SKIP_PATHS",
        "any list of paths (compared as text)",
    ),
    (
        "OPSKIT_CORS_ORIGINS",
        "any list of origins (compared as text)",
    ),
    ("APP_GREETING", "any text"),
    ("APP_DEMO_MAINTENANCE_FILE", "any file path"),
];

/// Every declared variable: the library's and the starters'.
fn declared() -> Vec<&'static VarSpec> {
    VARS.iter().chain(axum_starter::Config::vars()).collect()
}

#[test]
fn every_variable_is_classified() {
    let invalid: BTreeSet<&str> = INVALID.iter().map(|(k, _)| *k).collect();
    let any: BTreeSet<&str> = ANY_TEXT.iter().map(|(k, _)| *k).collect();
    assert_eq!(invalid.len(), INVALID.len(), "a variable listed twice");
    assert!(invalid.is_disjoint(&any));
    let declared: BTreeSet<&str> = declared().iter().map(|v| v.name).collect();
    let classified: BTreeSet<&str> = invalid.union(&any).copied().collect();
    let unclassified: Vec<_> = declared.difference(&classified).collect();
    assert!(
        unclassified.is_empty(),
        "give these an invalid value in INVALID (or list them in ANY_TEXT with a reason): {unclassified:?}"
    );
    let undeclared: Vec<_> = classified.difference(&declared).collect();
    assert!(undeclared.is_empty(), "not declared: {undeclared:?}");
}

fn every_invalid_variable_is_named_in_one_report(kind: Kind) {
    let (status, out, err) = run_to_exit(kind, INVALID, Duration::from_secs(20));
    let named: Vec<&str> = INVALID
        .iter()
        .map(|(var, _)| *var)
        .filter(|var| {
            err.lines()
                .any(|l| l.trim_start().starts_with(&format!("{var}:")))
        })
        .collect();
    let missing: Vec<&str> = INVALID
        .iter()
        .map(|(var, _)| *var)
        .filter(|var| !named.contains(var))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} invalid variables named; missing: {missing:?}\nstderr: {err}",
        named.len(),
        INVALID.len()
    );
    // Each once, nothing else.
    assert!(
        err.contains(&format!("({} problems)", INVALID.len())),
        "{err}"
    );
    assert_eq!(status.code(), Some(opskit::EXIT_CONFIG), "stderr: {err}");
    assert!(!out.contains("listening"), "{out}");
}

/// A value that must never be printed.
const SECRET_VALUE: &str = "SentinelTypoValue";

fn an_unknown_variable_is_warned_about_with_the_closest_name(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMT", "5/1m"),
            ("APP_GREETNG", SECRET_VALUE),
            ("OPSKIT_ZZZZZZZZZZZZZZZZZZZZ", SECRET_VALUE),
            // Known variables: no warning.
            ("OPSKIT_RATE_LIMIT", "1000/1m"),
            ("APP_GREETING", "hi"),
        ],
    );
    assert_eq!(s.get("/").unwrap().status, 200);
    s.expect_output(
        &[
            "`OPSKIT_RATE_LIMT` is not a known variable; did you mean `OPSKIT_RATE_LIMIT`?",
            "`APP_GREETNG` is not a known variable; did you mean `APP_GREETING`?",
            // Nothing is close: no suggestion.
            "`OPSKIT_ZZZZZZZZZZZZZZZZZZZZ` is not a known variable",
        ],
        Duration::from_secs(10),
    );
    let output = s.output();
    let warnings: Vec<&String> = output
        .iter()
        .filter(|l| l.contains("is not a known variable"))
        .collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    for w in &warnings {
        let line: serde_json::Value = serde_json::from_str(w).unwrap();
        assert_eq!(line["level"], "WARN", "{w}");
    }
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("ZZZZ") && w.contains("did you mean")),
        "{warnings:#?}"
    );
    let all = output.join("\n");
    assert!(!all.contains(SECRET_VALUE), "a value was printed: {all}");
}

fn strict_env_makes_unknown_variables_config_errors(kind: Kind) {
    let (status, out, err) = run_to_exit(
        kind,
        &[
            ("OPSKIT_STRICT_ENV", "true"),
            ("OPSKIT_RATE_LIMT", SECRET_VALUE),
            ("APP_GREETNG", SECRET_VALUE),
            // Reported with the rest.
            ("PORT", "abc"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(opskit::EXIT_CONFIG), "stderr: {err}");
    assert!(err.contains("(3 problems)"), "{err}");
    for (var, closest) in [
        ("OPSKIT_RATE_LIMT", "OPSKIT_RATE_LIMIT"),
        ("APP_GREETNG", "APP_GREETING"),
    ] {
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{var}:")))
            .unwrap_or_else(|| panic!("{var} not named in: {err}"));
        assert!(
            line.contains(&format!("did you mean `{closest}`?")),
            "{line}"
        );
    }
    assert!(
        err.lines().any(|l| l.trim_start().starts_with("PORT:")),
        "{err}"
    );
    assert!(
        !format!("{out}{err}").contains(SECRET_VALUE),
        "a value was printed: {err}"
    );
}
