//! Hostile configuration: credentials inside URL-valued settings and the
//! values of invalid variables never reach the output — the same in both
//! starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{run_to_exit, Kind, OtlpReceiver, Redis, SentryReceiver, Starter};
use std::time::Duration;

opskit_conformance::conformance!(
    credentials_in_urls_reach_no_output,
    the_config_report_names_variables_and_echoes_no_value,
);

/// The secret parts of every URL-valued setting, each distinct so that a
/// leak names its source.
const SECRETS: [&str; 11] = [
    "OtlpUserPw7",
    "MetricsPw8",
    "MetricsQueryKey9",
    "SentryPubKey3",
    "SentrySecretKey4",
    "LimiterRedisPw5",
    "DatabasePw6",
    "DatabaseQueryPw1",
    "AppRedisPw2",
    "DownstreamPw0",
    "DownstreamQueryTok",
];

fn leaked<'a>(text: &str, secrets: &[&'a str]) -> Vec<&'a str> {
    let lower = text.to_ascii_lowercase();
    secrets
        .iter()
        .copied()
        .filter(|s| lower.contains(&s.to_ascii_lowercase()))
        .collect()
}

fn credentials_in_urls_reach_no_output(kind: Kind) {
    let otlp = OtlpReceiver::start();
    let sentry = SentryReceiver::start();
    // A real Redis that refuses the credentials: the limiter's failure is logged.
    let redis = Redis::start();
    // Refuses connections for the whole test (no parallel test can take it).
    let closed_guard = opskit_conformance::closed_port();
    let closed = closed_guard.port;
    let otlp_host = otlp.endpoint().trim_start_matches("http://").to_owned();
    let sentry_host = sentry
        .dsn()
        .trim_start_matches("http://testkey@")
        .trim_end_matches("/42")
        .to_owned();
    let [otlp_pw, metrics_pw, metrics_query, sentry_key, sentry_secret, limiter_pw, db_pw, db_query, app_redis_pw, down_pw, down_query] =
        SECRETS;
    let env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://collector:{otlp_pw}@{otlp_host}"),
        ),
        // Nothing listens there: every metric export fails and is logged.
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            format!("http://m:{metrics_pw}@127.0.0.1:{closed}/v1/metrics?api_key={metrics_query}"),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        (
            "SENTRY_DSN",
            format!("http://{sentry_key}:{sentry_secret}@{sentry_host}/42"),
        ),
        ("OPSKIT_RATE_LIMIT", "1000/1m".to_owned()),
        (
            "OPSKIT_RATE_LIMIT_REDIS_URL",
            format!("redis://limiter:{limiter_pw}@127.0.0.1:{}/", redis.port),
        ),
        ("OPSKIT_RATE_LIMIT_REDIS_TIMEOUT", "500ms".to_owned()),
        (
            "APP_DATABASE_URL",
            format!("postgres://app:{db_pw}@127.0.0.1:{closed}/app?password={db_query}"),
        ),
        (
            "APP_REDIS_URL",
            format!("redis://:{app_redis_pw}@127.0.0.1:{closed}/"),
        ),
        (
            "APP_DOWNSTREAM_URL",
            format!("http://svc:{down_pw}@127.0.0.1:{closed}/x?token={down_query}"),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Starter::spawn(kind, &env);

    // Each subsystem holding a URL gets to use it (and to fail with it).
    for _ in 0..3 {
        s.get("/users/1").unwrap();
    }
    assert_eq!(s.get("/demo/error").unwrap().status, 500);
    assert_eq!(s.get("/demo/downstream").unwrap().status, 502);
    assert_eq!(s.get("/readyz").unwrap().status, 503);
    let health = s.get("/health").unwrap().text();
    let metrics = s.get("/metrics").unwrap().text();
    assert!(!sentry
        .wait_for_events(1, Duration::from_secs(10))
        .is_empty());
    assert!(
        otlp.wait_for(Duration::from_secs(10), |p| p.path == "/v1/traces")
            .is_some(),
        "no span export arrived"
    );
    s.expect_output(
        &[
            "exporting spans over OTLP",
            "OTLP export failed",
            "the rate limiter's Redis cannot decide",
            "downstream call failed",
            "health check fails",
        ],
        Duration::from_secs(10),
    );

    let output = s.output();
    for line in &output {
        let found = leaked(line, &SECRETS);
        assert!(found.is_empty(), "{found:?} printed in: {line}");
    }
    // Still useful: the endpoint's host and path are shown, its credentials hidden.
    let start = output
        .iter()
        .find(|l| l.contains("exporting spans over OTLP"))
        .unwrap();
    let start: serde_json::Value = serde_json::from_str(start).unwrap();
    assert_eq!(
        start["endpoint"],
        format!("http://[REDACTED]@{otlp_host}/v1/traces")
    );
    for (what, text) in [("/health", &health), ("/metrics", &metrics)] {
        let found = leaked(text, &SECRETS);
        assert!(found.is_empty(), "{found:?} in {what}: {text}");
    }
}

/// One invalid value per variable, each carrying a sentinel that must not
/// be repeated, and where the report should point.
const SENTINELS: &[(&str, &str, Option<&str>)] = &[
    (
        "OPSKIT_TRUSTED_PROXIES",
        "10.0.0.0/8,::1,SentinelProxy,192.168.0.0/16",
        Some("item 3"),
    ),
    (
        "OPSKIT_CSP",
        "default-src 'self'; SentinelCsp 'none'",
        Some("directive 2"),
    ),
    ("RUST_LOG", "info,SentinelLog=[[[", Some("directive 2")),
    (
        "OPSKIT_RATE_LIMIT_ROUTES",
        "/a=1/1m,/b=SentinelQuota",
        Some("item 2"),
    ),
    ("OPSKIT_RATE_LIMIT_KEY", "header:Sentinel Key", None),
    (
        "OPSKIT_METRICS_BUCKETS",
        "0.1,SentinelBucket",
        Some("item 2"),
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "ftp://user:SentinelOtlp@collector/",
        None,
    ),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "a=b,SentinelRes",
        Some("item 2"),
    ),
    (
        "OTEL_PROPAGATORS",
        "tracecontext,SentinelProp",
        Some("item 2"),
    ),
    ("OTEL_TRACES_SAMPLER", "SentinelSampler", None),
    (
        "OPSKIT_PERMISSIONS_POLICY",
        "camera=(),SentinelPerm=(\u{e9})",
        Some("character 25"),
    ),
    ("OPSKIT_REQUEST_ID_HEADER", "x SentinelRid", None),
    ("OPSKIT_TRACE_RESPONSE_HEADER", "x SentinelTrh", None),
    ("OPSKIT_HEALTH_PREFIX", "SentinelPrefix", None),
    ("OPSKIT_ACCESS_LOG_LEVELS", "info,warn,SentinelLevel", None),
    ("OPSKIT_LOG_FORMAT", "SentinelFormat", None),
    ("OPSKIT_BODY_LIMIT", "1SentinelUnit", None),
    ("OPSKIT_METRICS_ADDR", "SentinelAddr:9464", None),
    ("SENTRY_DSN", "https://SentinelDsn.example/42", None),
    (
        "OPSKIT_RATE_LIMIT_REDIS_URL",
        "http://:SentinelRedis@h/",
        None,
    ),
    ("APP_SECRET", "SentinelShortSecret", None),
    ("APP_SLOW_MAX_MS", "SentinelSlow", None),
    ("APP_DATABASE_URL", "mysql://u:SentinelDb@db/app", None),
    ("APP_DOWNSTREAM_URL", "not a url SentinelDown", None),
    ("APP_REDIS_URL", "SentinelRedisApp", None),
];

fn the_config_report_names_variables_and_echoes_no_value(kind: Kind) {
    let (status, out, err) = run_to_exit(
        kind,
        &SENTINELS
            .iter()
            .map(|(k, v, _)| (*k, *v))
            .collect::<Vec<_>>(),
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(opskit::EXIT_CONFIG), "stderr: {err}");
    assert!(
        err.contains(&format!("({} problems)", SENTINELS.len())),
        "{err}"
    );
    for (var, _, position) in SENTINELS {
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{var}:")))
            .unwrap_or_else(|| panic!("{var} not named in: {err}"));
        if let Some(position) = position {
            assert!(line.contains(position), "{var} without {position}: {line}");
        }
    }
    let values: Vec<&str> = SENTINELS.iter().map(|(_, v, _)| *v).collect();
    let sentinels: Vec<&str> = values
        .iter()
        .map(|v| {
            let at = v.find("Sentinel").unwrap();
            let end = v[at..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .map_or(v.len(), |e| at + e);
            &v[at..end]
        })
        .collect();
    let found = leaked(&format!("{out}{err}"), &sentinels);
    assert!(found.is_empty(), "{found:?} echoed in: {err}{out}");
}
