//! The library's own settings.

use super::parse::{one_of, Bounded, FromVar, NonZeroDuration};
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
    Some("5s"),
    "After SIGTERM/SIGINT, how long to keep accepting requests while readiness reports 503 and every response carries `Connection: close`, so load balancers and kube-proxy stop routing here first (see docs/health.md).",
);
const HEADER_READ_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_HEADER_READ_TIMEOUT",
    "a duration such as 5s (not 0)",
    Some("5s"),
    "How long a client may take to send a request's head (request line and headers) before the connection is closed (Actix answers 408 first): slow-header clients cannot hold connections. Actix's `client_request_timeout`; on Axum hyper's `header_read_timeout`, which also runs while a keep-alive connection waits for its next request.",
);
const KEEP_ALIVE_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_KEEP_ALIVE_TIMEOUT",
    "a duration such as 5s, or 0 for no keep-alive",
    Some("5s"),
    "How long an idle keep-alive connection is kept open between requests (Actix's `keep_alive`). Behind a load balancer that reuses connections, set it above the balancer's idle timeout (and on Axum `OPSKIT_HEADER_READ_TIMEOUT` at least as high).",
);

const ACCESS_LOG: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG",
    "true or false",
    Some("true"),
    "Whether one JSON line is written per finished request (target `opskit::access`).",
);
const ACCESS_LOG_LEVELS: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG_LEVELS",
    "three levels (error, warn, info, debug, trace or off) for 1xx-3xx, 4xx and 5xx",
    Some("info,warn,error"),
    "Level of the access-log line by outcome: successes, client errors, server errors.",
);
const ACCESS_LOG_SKIP_PATHS: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG_SKIP_PATHS",
    "a comma-separated list of paths",
    Some("/livez,/readyz,/startupz,/metrics"),
    "Paths whose successful requests are not logged (probes, scrapes). Failures are always logged.",
);
const ACCESS_LOG_SAMPLE_RATE: VarSpec = VarSpec::new(
    "OPSKIT_ACCESS_LOG_SAMPLE_RATE",
    "a number from 0 to 1",
    Some("1"),
    "Share of successful requests that are logged; 4xx and 5xx are always logged.",
);
const REQUEST_ID_HEADER: VarSpec = VarSpec::new(
    "OPSKIT_REQUEST_ID_HEADER",
    "an HTTP header name",
    Some("x-request-id"),
    "Header read for an incoming request id (1-128 characters of `[A-Za-z0-9._:@+=/-]`, else a UUID is made) and echoed on the response.",
);

const SENTRY_DSN: VarSpec = VarSpec::new(
    "SENTRY_DSN",
    "a Sentry DSN (https://<key>@<host>/<project>)",
    None,
    "Where error events go (feature `sentry`). Unset: error reporting is off.",
)
.secret();
const SENTRY_ENVIRONMENT: VarSpec = VarSpec::new(
    "SENTRY_ENVIRONMENT",
    "an environment name",
    None,
    "Environment of Sentry events. Unset: `OPSKIT_ENVIRONMENT`.",
);
const SENTRY_RELEASE: VarSpec = VarSpec::new(
    "SENTRY_RELEASE",
    "a release name",
    None,
    "Release of Sentry events. Unset: `<service>@<version>`.",
);
const SENTRY_SAMPLE_RATE: VarSpec = VarSpec::new(
    "SENTRY_SAMPLE_RATE",
    "a number from 0 to 1",
    Some("1"),
    "Share of error events sent.",
);
const SENTRY_TRACES_SAMPLE_RATE: VarSpec = VarSpec::new(
    "SENTRY_TRACES_SAMPLE_RATE",
    "a number from 0 to 1",
    Some("0"),
    "Share of requests sent to Sentry as performance transactions.",
);
const SENTRY_SEND_PII: VarSpec = VarSpec::new(
    "OPSKIT_SENTRY_SEND_PII",
    "true or false",
    Some("false"),
    "Whether Sentry events carry the client IP address. Cookies and authorization headers are never sent.",
);
const SENTRY_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_SENTRY_TIMEOUT",
    "a duration such as 5s",
    Some("5s"),
    "Longest time one delivery to Sentry may take (in the background; requests never wait for it); also how long shutdown waits for queued events (at least 2s).",
);

const HEALTH_PREFIX: VarSpec = VarSpec::new(
    "OPSKIT_HEALTH_PREFIX",
    "a path prefix such as /_ops, or empty",
    None,
    "Prefix of the probe paths (`/livez`, `/readyz`, `/startupz`, `/health`).",
);
const HEALTH_TOKEN: VarSpec = VarSpec::new(
    "OPSKIT_HEALTH_TOKEN",
    "a secret of at least 16 characters",
    None,
    "When set, `/health` shows service details and check messages only to `Authorization: Bearer <token>`; status codes stay public.",
)
.secret();
const COMMIT: VarSpec = VarSpec::new(
    "OPSKIT_COMMIT",
    "a version-control commit id",
    None,
    "Commit shown in `/health`. Unset: the one given in code, else `unknown`.",
);

const SECURITY_HEADERS: VarSpec = VarSpec::new(
    "OPSKIT_SECURITY_HEADERS",
    "true or false",
    Some("true"),
    "Whether the security headers are sent (see docs/security.md).",
);
const CSP: VarSpec = VarSpec::new("OPSKIT_CSP", "a Content-Security-Policy", None, "The CSP. Unset: helmet's default policy; `upgrade-insecure-requests` is added for HTTPS requests.");
const CSP_REPORT_ONLY: VarSpec = VarSpec::new(
    "OPSKIT_CSP_REPORT_ONLY",
    "true or false",
    Some("false"),
    "Send `Content-Security-Policy-Report-Only` instead of enforcing.",
);
const CSP_REPORT_URI: VarSpec = VarSpec::new(
    "OPSKIT_CSP_REPORT_URI",
    "a URL or path",
    None,
    "Where browsers send CSP violation reports (`report-uri`, `report-to`).",
);
const CSP_NONCE: VarSpec = VarSpec::new(
    "OPSKIT_CSP_NONCE",
    "true or false",
    Some("false"),
    "A fresh nonce per request in `script-src`, available to handlers (`CspNonce`).",
);
const FRAME_OPTIONS: VarSpec = VarSpec::new(
    "OPSKIT_FRAME_OPTIONS",
    "deny or sameorigin",
    Some("sameorigin"),
    "`X-Frame-Options` and CSP `frame-ancestors` (`'none'` for deny).",
);
const HSTS_MAX_AGE: VarSpec = VarSpec::new(
    "OPSKIT_HSTS_MAX_AGE",
    "a duration such as 365d, or 0",
    Some("365d"),
    "HSTS max-age (with includeSubDomains), sent on HTTPS requests only; 0 turns HSTS off.",
);
const HSTS_PRELOAD: VarSpec = VarSpec::new(
    "OPSKIT_HSTS_PRELOAD",
    "true or false",
    Some("false"),
    "Add `preload` to HSTS.",
);
const HTTPS: VarSpec = VarSpec::new(
    "OPSKIT_HTTPS",
    "auto, always or never",
    Some("auto"),
    "When a request counts as HTTPS: `auto` follows `X-Forwarded-Proto`/`Forwarded`.",
);
const COEP: VarSpec = VarSpec::new(
    "OPSKIT_COEP",
    "true or false",
    Some("false"),
    "Send `Cross-Origin-Embedder-Policy: require-corp` (breaks cross-origin embeds).",
);
const PERMISSIONS_POLICY: VarSpec = VarSpec::new(
    "OPSKIT_PERMISSIONS_POLICY",
    "a Permissions-Policy",
    None,
    "Unset: a deny-list of powerful features (camera, microphone, geolocation, payment, usb, …).",
);
const OVERRIDABLE: VarSpec = VarSpec::new(
    "OPSKIT_SECURITY_HEADERS_OVERRIDABLE",
    "a comma-separated list of header names",
    Some("content-security-policy,content-security-policy-report-only"),
    "Headers a handler may set itself (per-route policies); opskit's value wins for all others.",
);
const BODY_LIMIT: VarSpec = VarSpec::new("OPSKIT_BODY_LIMIT", "a size such as 1MiB, 512KiB or 1000000", Some("1MiB"), "Largest accepted request body: a larger `Content-Length` gets 413 before the handler runs; a chunked body is cut off at the limit and gets 413.");
const REQUEST_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_REQUEST_TIMEOUT",
    "a duration such as 30s, or 0",
    Some("30s"),
    "Longest time a request may take; 0: no limit.",
);
const TIMEOUT_STATUS: VarSpec = VarSpec::new(
    "OPSKIT_REQUEST_TIMEOUT_STATUS",
    "408, 503 or 504",
    Some("504"),
    "Status answered when a request times out.",
);
const CORS_ORIGINS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_ORIGINS",
    "a comma-separated list of origins, or *",
    None,
    "Origins allowed to call this service from a browser. Unset: CORS off.",
);
const CORS_METHODS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_METHODS",
    "a comma-separated list of HTTP methods, or *",
    Some("GET,HEAD,POST,PUT,PATCH,DELETE"),
    "Methods allowed in CORS preflights.",
);
const CORS_HEADERS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_HEADERS",
    "a comma-separated list of header names, or *",
    Some("content-type,authorization,x-request-id"),
    "Request headers allowed in CORS preflights.",
);
const CORS_CREDENTIALS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_CREDENTIALS",
    "true or false",
    Some("false"),
    "Allow credentials (cookies); refused together with origin `*`.",
);
const CORS_MAX_AGE: VarSpec = VarSpec::new(
    "OPSKIT_CORS_MAX_AGE",
    "a duration such as 10m",
    Some("10m"),
    "How long browsers may cache a preflight.",
);

const METRICS: VarSpec = VarSpec::new(
    "OPSKIT_METRICS",
    "true or false",
    Some("true"),
    "Record the HTTP server metrics and serve them at `OPSKIT_METRICS_PATH` (see docs/metrics.md).",
);
const METRICS_PATH: VarSpec = VarSpec::new(
    "OPSKIT_METRICS_PATH",
    "a path such as /metrics",
    Some("/metrics"),
    "Where Prometheus scrapes the metrics.",
);
const METRICS_TOKEN: VarSpec = VarSpec::new("OPSKIT_METRICS_TOKEN", "a secret of at least 16 characters", None, "When set, the metrics answer only `Authorization: Bearer <token>` (Prometheus `authorization` in the scrape config).").secret();
const METRICS_ADDR: VarSpec = VarSpec::new(
    "OPSKIT_METRICS_ADDR",
    "an address such as 0.0.0.0:9464",
    None,
    "Serve the metrics on this address (a port of their own) instead of the application's port.",
);
const METRICS_MAX_SERIES: VarSpec = VarSpec::new("OPSKIT_METRICS_MAX_SERIES", "a whole number from 10 to 100000", Some("1000"), "Most label sets (method, route, status, error) the HTTP metrics keep; more share one overflow series and are counted.");
const METRICS_BUCKETS: VarSpec = VarSpec::new("OPSKIT_METRICS_BUCKETS", "a comma-separated list of increasing seconds", Some("0.005,0.01,0.025,0.05,0.075,0.1,0.25,0.5,0.75,1,2.5,5,7.5,10"), "Buckets of `http_server_request_duration_seconds` (OpenTelemetry's recommendation by default).");

const OTEL_SDK_DISABLED: VarSpec = VarSpec::new(
    "OTEL_SDK_DISABLED",
    "true or false",
    Some("false"),
    "Turn OpenTelemetry export off whatever else is set.",
);
const OTLP_ENDPOINT: VarSpec = VarSpec::new("OTEL_EXPORTER_OTLP_ENDPOINT", "an http(s) URL such as http://collector:4318", None, "Where OTLP data goes (over HTTP `/v1/traces` and `/v1/metrics` are appended). Unset: no OTLP export (features `otlp-http`, `otlp-grpc`).");
const OTLP_METRICS_ENDPOINT: VarSpec = VarSpec::new("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "an http(s) URL", None, "The metrics endpoint, used as is (overrides the one derived from `OTEL_EXPORTER_OTLP_ENDPOINT`).");
const OTLP_TRACES_ENDPOINT: VarSpec = VarSpec::new("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "an http(s) URL", None, "The traces endpoint, used as is (overrides the one derived from `OTEL_EXPORTER_OTLP_ENDPOINT`).");
const OTLP_PROTOCOL: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "grpc, http/protobuf or http/json",
    None,
    "The OTLP transport. Unset: `grpc` when the endpoint's port is 4317, else `http/protobuf`.",
);
const OTLP_TRACES_PROTOCOL: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "grpc, http/protobuf or http/json",
    None,
    "The transport of spans (overrides `OTEL_EXPORTER_OTLP_PROTOCOL`).",
);
const OTLP_TRACES_HEADERS: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "a comma-separated list of key=value",
    None,
    "Headers sent with span exports, instead of `OTEL_EXPORTER_OTLP_HEADERS` (treated as a secret).",
)
.secret();
const OTLP_TRACES_TIMEOUT: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "milliseconds",
    None,
    "Longest time one span export may take (overrides `OTEL_EXPORTER_OTLP_TIMEOUT`).",
);
const TRACES_SAMPLER: VarSpec = VarSpec::new(
    "OTEL_TRACES_SAMPLER",
    "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
    Some("parentbased_traceidratio"),
    "Which requests get an exported span: parent-based samplers follow the caller's `traceparent` flag.",
);
const TRACES_SAMPLER_ARG: VarSpec = VarSpec::new(
    "OTEL_TRACES_SAMPLER_ARG",
    "a number from 0 to 1",
    Some("1"),
    "The ratio of the `traceidratio` samplers (share of new traces sampled).",
);
const PROPAGATORS: VarSpec = VarSpec::new(
    "OTEL_PROPAGATORS",
    "a comma-separated list of tracecontext, baggage, none",
    Some("tracecontext"),
    "Context read from and written to HTTP headers: W3C `traceparent`/`tracestate`, W3C `baggage`.",
);
const BSP_SCHEDULE_DELAY: VarSpec = VarSpec::new(
    "OTEL_BSP_SCHEDULE_DELAY",
    "milliseconds",
    Some("5000"),
    "Time between two span exports.",
);
const BSP_MAX_QUEUE_SIZE: VarSpec = VarSpec::new(
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "a whole number from 1 to 1000000",
    Some("2048"),
    "Spans waiting for export at most; more are dropped and counted (`opskit_otlp_spans_dropped_total`).",
);
const BSP_MAX_EXPORT_BATCH_SIZE: VarSpec = VarSpec::new(
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "a whole number from 1 to 1000000",
    Some("512"),
    "Spans in one export at most.",
);
const OTLP_HEADERS: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_HEADERS",
    "a comma-separated list of key=value",
    None,
    "Headers sent with every export (API keys: treated as a secret).",
)
.secret();
const OTLP_TIMEOUT: VarSpec = VarSpec::new(
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "milliseconds",
    Some("10000"),
    "Longest time one export may take.",
);
const METRIC_EXPORT_INTERVAL: VarSpec = VarSpec::new(
    "OTEL_METRIC_EXPORT_INTERVAL",
    "milliseconds",
    Some("60000"),
    "Time between two metric exports.",
);
const RESOURCE_ATTRIBUTES: VarSpec = VarSpec::new("OTEL_RESOURCE_ATTRIBUTES", "a comma-separated list of key=value (percent-encoded)", None, "Extra resource attributes (`team=payments,region=eu`); `OTEL_SERVICE_NAME` wins for `service.name`.");

const RATE_LIMIT: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT",
    "a quota such as 100/1m, or off",
    Some("off"),
    "Requests per client per period for routes no policy names (see docs/rate-limiting.md).",
);
const RATE_LIMIT_BURST: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_BURST",
    "a whole number above 0",
    None,
    "Requests a client may make at once. Unset: the whole quota.",
);
const RATE_LIMIT_ROUTES: VarSpec = VarSpec::new("OPSKIT_RATE_LIMIT_ROUTES", "a comma-separated list of path=quota or path=off", None, "Per-route policies, first match wins; a path ending in `*` is a prefix: `/auth/*=5/1m,/public/*=off`.");
const RATE_LIMIT_KEY: VarSpec = VarSpec::new("OPSKIT_RATE_LIMIT_KEY", "ip, or header:<name>", Some("ip"), "What identifies a client: its IP (IPv6 by prefix), or a header such as `header:x-api-key` (IP when absent).");
const TRUSTED_PROXIES: VarSpec = VarSpec::new("OPSKIT_TRUSTED_PROXIES", "a comma-separated list of CIDRs", None, "Proxies whose forwarding header is believed for the client IP. Unset: the socket peer is the client.");
const FORWARDED_HEADER: VarSpec = VarSpec::new(
    "OPSKIT_FORWARDED_HEADER",
    "x-forwarded-for or forwarded",
    Some("x-forwarded-for"),
    "Which header trusted proxies set.",
);
const RATE_LIMIT_IPV6_PREFIX: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_IPV6_PREFIX",
    "a prefix length from 32 to 128",
    Some("64"),
    "IPv6 clients share a quota per prefix of this length.",
);
const RATE_LIMIT_LEGACY_HEADERS: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_LEGACY_HEADERS",
    "true or false",
    Some("false"),
    "Also send `X-RateLimit-Limit`, `-Remaining`, `-Reset`.",
);
const RATE_LIMIT_CAPACITY: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_CAPACITY",
    "a whole number from 64 to 100000000",
    Some("100000"),
    "Most client keys kept in memory (about 40 bytes each).",
);
const RATE_LIMIT_REDIS_URL: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_REDIS_URL",
    "a redis:// URL",
    None,
    "Keep the quotas in Redis, shared by every replica (feature `redis`).",
)
.secret();
const RATE_LIMIT_REDIS_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_REDIS_TIMEOUT",
    "a duration such as 100ms",
    Some("100ms"),
    "Longest wait for Redis per decision.",
);
const RATE_LIMIT_FAILURE: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_FAILURE",
    "open or closed",
    Some("open"),
    "When Redis cannot decide: admit (`open`) or refuse with 503 (`closed`).",
);

pub(crate) const STRICT_ENV: VarSpec = VarSpec::new(
    "OPSKIT_STRICT_ENV",
    "true or false",
    Some("false"),
    "A set `OPSKIT_*` variable (or one under the application's prefix) that nothing reads is a configuration error instead of a start-up warning; either way the closest known name is suggested.",
);

const TRACE_RESPONSE_HEADER: VarSpec = VarSpec::new("OPSKIT_TRACE_RESPONSE_HEADER", "a header name, or off", Some("traceresponse"), "The response header carrying the request's W3C trace context (`00-<trace id>-<span id>-<flags>`), for users to quote in bug reports.");

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
    HEADER_READ_TIMEOUT,
    KEEP_ALIVE_TIMEOUT,
    ACCESS_LOG,
    ACCESS_LOG_LEVELS,
    ACCESS_LOG_SKIP_PATHS,
    ACCESS_LOG_SAMPLE_RATE,
    REQUEST_ID_HEADER,
    SENTRY_DSN,
    SENTRY_ENVIRONMENT,
    SENTRY_RELEASE,
    SENTRY_SAMPLE_RATE,
    SENTRY_TRACES_SAMPLE_RATE,
    SENTRY_SEND_PII,
    SENTRY_TIMEOUT,
    HEALTH_PREFIX,
    HEALTH_TOKEN,
    METRICS,
    METRICS_PATH,
    METRICS_TOKEN,
    METRICS_ADDR,
    METRICS_MAX_SERIES,
    METRICS_BUCKETS,
    OTEL_SDK_DISABLED,
    OTLP_ENDPOINT,
    OTLP_METRICS_ENDPOINT,
    OTLP_TRACES_ENDPOINT,
    OTLP_PROTOCOL,
    OTLP_TRACES_PROTOCOL,
    OTLP_HEADERS,
    OTLP_TRACES_HEADERS,
    OTLP_TIMEOUT,
    OTLP_TRACES_TIMEOUT,
    METRIC_EXPORT_INTERVAL,
    RESOURCE_ATTRIBUTES,
    TRACES_SAMPLER,
    TRACES_SAMPLER_ARG,
    PROPAGATORS,
    BSP_SCHEDULE_DELAY,
    BSP_MAX_QUEUE_SIZE,
    BSP_MAX_EXPORT_BATCH_SIZE,
    TRACE_RESPONSE_HEADER,
    RATE_LIMIT,
    RATE_LIMIT_BURST,
    RATE_LIMIT_ROUTES,
    RATE_LIMIT_KEY,
    TRUSTED_PROXIES,
    FORWARDED_HEADER,
    RATE_LIMIT_IPV6_PREFIX,
    RATE_LIMIT_LEGACY_HEADERS,
    RATE_LIMIT_CAPACITY,
    RATE_LIMIT_REDIS_URL,
    RATE_LIMIT_REDIS_TIMEOUT,
    RATE_LIMIT_FAILURE,
    COMMIT,
    SECURITY_HEADERS,
    CSP,
    CSP_REPORT_ONLY,
    CSP_REPORT_URI,
    CSP_NONCE,
    FRAME_OPTIONS,
    HSTS_MAX_AGE,
    HSTS_PRELOAD,
    HTTPS,
    COEP,
    PERMISSIONS_POLICY,
    OVERRIDABLE,
    BODY_LIMIT,
    REQUEST_TIMEOUT,
    TIMEOUT_STATUS,
    CORS_ORIGINS,
    CORS_METHODS,
    CORS_HEADERS,
    CORS_CREDENTIALS,
    CORS_MAX_AGE,
    STRICT_ENV,
];

/// A byte size: a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB).
struct Size(u64);

impl FromVar for Size {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let (num, unit) = v.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| "the value does not start with a number".to_owned())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" => 1 << 10,
            "mb" => 1_000_000,
            "mib" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return Err("the unit is not one of B, KB, KiB, MB, MiB, GB, GiB".to_owned()),
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| "the size is too large".to_owned())
    }
}

struct HttpsVar(crate::security::HttpsMode);

impl FromVar for HttpsVar {
    fn from_var(value: &str) -> Result<Self, String> {
        use crate::security::HttpsMode;
        one_of(
            value,
            &[
                ("auto", HttpsMode::Auto),
                ("always", HttpsMode::Always),
                ("never", HttpsMode::Never),
            ],
        )
        .map(Self)
    }
}

struct FrameVar(bool);

impl FromVar for FrameVar {
    fn from_var(value: &str) -> Result<Self, String> {
        one_of(value, &[("deny", true), ("sameorigin", false)]).map(Self)
    }
}

/// A header value: visible ASCII and spaces only (anything else would make
/// the header impossible to send, and it would silently go missing).
struct HeaderText(String);

impl FromVar for HeaderText {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if v.is_empty() {
            return Err("the value is empty".to_owned());
        }
        match v
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_graphic() || *c == ' '))
        {
            Some((i, _)) => Err(format!(
                "character {} is not visible ASCII (a header value cannot carry it)",
                i + 1
            )),
            None => Ok(Self(v.to_owned())),
        }
    }
}

/// A Content-Security-Policy: [`HeaderText`] whose directives are named
/// like CSP directives (`default-src 'self';img-src 'self' data:`).
struct CspText(String);

impl FromVar for CspText {
    fn from_var(value: &str) -> Result<Self, String> {
        let HeaderText(v) = HeaderText::from_var(value)?;
        for (n, directive) in v
            .split(';')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .enumerate()
        {
            let name = directive.split(' ').next().unwrap_or_default();
            if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return Err(format!(
                    "directive {} does not start with a name of lower-case letters and dashes",
                    n + 1
                ));
            }
        }
        Ok(Self(v))
    }
}

struct TimeoutStatus(u16);

impl FromVar for TimeoutStatus {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim() {
            "408" => Ok(Self(408)),
            "503" => Ok(Self(503)),
            "504" => Ok(Self(504)),
            _ => Err("the value is not 408, 503 or 504".to_owned()),
        }
    }
}

/// A comma-separated list of HTTP methods, or `*` (CORS preflights).
struct Methods(Vec<String>);

impl FromVar for Methods {
    fn from_var(value: &str) -> Result<Self, String> {
        items(value)
            .map(|(n, item)| match item {
                "*" => Ok(item.to_owned()),
                m if http::Method::from_bytes(m.as_bytes()).is_ok() => Ok(m.to_owned()),
                _ => Err(format!("item {n} is not an HTTP method")),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A comma-separated list of header names; `*` too when `WILDCARD`.
struct HeaderNames<const WILDCARD: bool>(Vec<String>);

impl<const WILDCARD: bool> FromVar for HeaderNames<WILDCARD> {
    fn from_var(value: &str) -> Result<Self, String> {
        items(value)
            .map(|(n, item)| match item {
                "*" if WILDCARD => Ok(item.to_owned()),
                h => HeaderName::from_var(h)
                    .map(|_| h.to_owned())
                    .map_err(|_| format!("item {n} is not a header name")),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A duration that also accepts days (`365d`), for HSTS.
struct LongDuration(Duration);

impl FromVar for LongDuration {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if let Some(days) = v.strip_suffix('d') {
            let d: u64 = days
                .parse()
                .map_err(|_| "the value is not a number of days".to_owned())?;
            return d
                .checked_mul(86_400)
                .map(|s| Self(Duration::from_secs(s)))
                .ok_or_else(|| "the duration is too large".to_owned());
        }
        Duration::from_var(v).map(Self)
    }
}

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

/// An OTLP/HTTP endpoint.
struct HttpUrl(String);

impl FromVar for HttpUrl {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        let u = url::Url::parse(v).map_err(|_| "the value is not a URL".to_owned())?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err("the value is not an http(s) URL with a host".to_owned());
        }
        Ok(Self(v.trim_end_matches('/').to_owned()))
    }
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
struct ProtocolVar(crate::otel::Protocol);

impl FromVar for ProtocolVar {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim() {
            "http/protobuf" => Ok(Self(crate::otel::Protocol::HttpProtobuf)),
            "http/json" => Ok(Self(crate::otel::Protocol::HttpJson)),
            "grpc" => Ok(Self(crate::otel::Protocol::Grpc)),
            _ => Err("the value is not grpc, http/protobuf or http/json".to_owned()),
        }
    }
}

/// `OTEL_TRACES_SAMPLER`: (parent-based?, ratio from the argument?).
struct SamplerVar(bool, Option<f64>);

impl FromVar for SamplerVar {
    fn from_var(value: &str) -> Result<Self, String> {
        Ok(match value.trim() {
            "always_on" => Self(false, Some(1.0)),
            "always_off" => Self(false, Some(0.0)),
            "traceidratio" => Self(false, None),
            "parentbased_always_on" => Self(true, Some(1.0)),
            "parentbased_always_off" => Self(true, Some(0.0)),
            "parentbased_traceidratio" => Self(true, None),
            "jaeger_remote" | "parentbased_jaeger_remote" | "xray" => {
                return Err("this sampler is not supported".to_owned())
            }
            _ => return Err("the value is not one of the listed samplers".to_owned()),
        })
    }
}

/// `OTEL_PROPAGATORS`.
struct PropagatorsVar(crate::trace::Propagation);

impl FromVar for PropagatorsVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut p = crate::trace::Propagation {
            trace_context: false,
            baggage: false,
        };
        for (n, item) in items(value) {
            match item {
                "tracecontext" => p.trace_context = true,
                "baggage" => p.baggage = true,
                "none" => {}
                "b3" | "b3multi" | "jaeger" | "xray" | "ottrace" => {
                    return Err(format!("item {n} is a propagator opskit does not support"))
                }
                _ => return Err(format!("item {n} is not tracecontext, baggage or none")),
            }
        }
        Ok(Self(p))
    }
}

/// A whole number from 1 to 1,000,000 (queue and batch sizes).
type Count = Bounded<1, 1_000_000>;

/// `key=value,key2=value2`, values percent-decoded (W3C baggage-like, as the
/// OpenTelemetry spec says for headers and resource attributes).
struct KeyValues(Vec<(String, String)>);

impl FromVar for KeyValues {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, item) in items(value) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(format!("item {n} has no `=`"));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("item {n} has an empty key"));
            }
            let v = percent_decode(v.trim())
                .ok_or_else(|| format!("item {n} is not valid percent-encoding"))?;
            out.push((k.to_owned(), v));
        }
        Ok(Self(out))
    }
}

/// The non-empty items of a comma-separated list, numbered from 1.
fn items(value: &str) -> impl Iterator<Item = (usize, &str)> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, item)| (i + 1, item))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `100/1m` or `off`.
struct QuotaVar(Option<crate::ratelimit::Quota>);

impl FromVar for QuotaVar {
    fn from_var(value: &str) -> Result<Self, String> {
        if value.trim().eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        crate::ratelimit::Quota::parse(value).map(|q| Self(Some(q)))
    }
}

struct RoutesVar(Vec<crate::ratelimit::RoutePolicy>);

impl FromVar for RoutesVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, item) in items(value) {
            let (path, quota) = item
                .rsplit_once('=')
                .ok_or_else(|| format!("item {n} is not path=quota"))?;
            if !path.starts_with('/') {
                return Err(format!("item {n}: the path does not start with /"));
            }
            let quota = QuotaVar::from_var(quota)
                .map_err(|e| format!("item {n}: {e}"))?
                .0;
            out.push(crate::ratelimit::RoutePolicy {
                pattern: path.trim().to_owned(),
                quota,
            });
        }
        Ok(Self(out))
    }
}

struct KeyVar(crate::ratelimit::KeyBy);

impl FromVar for KeyVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("ip") {
            return Ok(Self(crate::ratelimit::KeyBy::Ip));
        }
        match v.split_once(':') {
            Some((kind, h)) if kind.eq_ignore_ascii_case("header") && !h.trim().is_empty() => {
                let HeaderName(h) = HeaderName::from_var(h)
                    .map_err(|_| "the part after header: is not a valid header name".to_owned())?;
                Ok(Self(crate::ratelimit::KeyBy::Header(h)))
            }
            _ => Err("the value is not ip or header:<name>".to_owned()),
        }
    }
}

/// A `redis://` or `rediss://` URL (a secret: it may carry a password).
struct RedisUrl(crate::Secret);

impl FromVar for RedisUrl {
    fn from_var(value: &str) -> Result<Self, String> {
        let url = url::Url::parse(value.trim())
            .map_err(|_| "the value is not a URL (value not shown)".to_owned())?;
        if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none() {
            return Err(
                "the value is not a redis:// or rediss:// URL with a host (value not shown)"
                    .to_owned(),
            );
        }
        Ok(Self(crate::Secret::new(value.trim())))
    }
}

/// `OPSKIT_FORWARDED_HEADER`.
struct ForwardedVar(crate::ratelimit::ForwardedHeader);

impl FromVar for ForwardedVar {
    fn from_var(value: &str) -> Result<Self, String> {
        use crate::ratelimit::ForwardedHeader;
        one_of(
            value,
            &[
                ("x-forwarded-for", ForwardedHeader::XForwardedFor),
                ("forwarded", ForwardedHeader::Forwarded),
            ],
        )
        .map(Self)
    }
}

/// `OPSKIT_RATE_LIMIT_FAILURE`.
struct FailureVar(crate::ratelimit::FailurePolicy);

impl FromVar for FailureVar {
    fn from_var(value: &str) -> Result<Self, String> {
        use crate::ratelimit::FailurePolicy;
        one_of(
            value,
            &[
                ("open", FailurePolicy::Open),
                ("closed", FailurePolicy::Closed),
            ],
        )
        .map(Self)
    }
}

struct Cidrs(Vec<crate::ratelimit::Cidr>);

impl FromVar for Cidrs {
    fn from_var(value: &str) -> Result<Self, String> {
        items(value)
            .map(|(n, item)| {
                crate::ratelimit::Cidr::parse(item).map_err(|e| format!("item {n}: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

fn read_rate_limit(r: &mut Reader<'_>) -> Option<crate::ratelimit::LimitSettings> {
    use crate::ratelimit::LimitSettings;
    // Every check is part of a parser read through `r`: each invalid
    // variable is reported, none hides the next.
    let quota: Option<QuotaVar> = r.read(&RATE_LIMIT);
    let burst: Option<Bounded<1, { u32::MAX as u64 }>> = r.read(&RATE_LIMIT_BURST);
    let routes: Option<RoutesVar> = r.read(&RATE_LIMIT_ROUTES);
    let key: Option<KeyVar> = r.read(&RATE_LIMIT_KEY);
    let trusted: Option<Cidrs> = r.read(&TRUSTED_PROXIES);
    let forwarded_header: Option<ForwardedVar> = r.read(&FORWARDED_HEADER);
    let prefix: Option<Bounded<32, 128>> = r.read(&RATE_LIMIT_IPV6_PREFIX);
    let legacy = r.read(&RATE_LIMIT_LEGACY_HEADERS);
    let capacity: Option<Bounded<64, 100_000_000>> = r.read(&RATE_LIMIT_CAPACITY);
    let redis: Option<RedisUrl> = r.read(&RATE_LIMIT_REDIS_URL);
    let timeout = r.read(&RATE_LIMIT_REDIS_TIMEOUT);
    let failure: Option<FailureVar> = r.read(&RATE_LIMIT_FAILURE);
    // An invalid burst is in the report, which refuses the settings.
    let burst = burst.map(|b| b.0 as u32);
    let with_burst = |q: crate::ratelimit::Quota| match burst {
        Some(b) => q.with_burst(b),
        None => q,
    };
    let mut routes = routes.map(|r| r.0).unwrap_or_default();
    for route in &mut routes {
        route.quota = route.quota.map(with_burst);
    }
    Some(LimitSettings {
        default: quota?.0.map(with_burst),
        routes,
        exempt: Vec::new(),
        key_by: key?.0,
        trusted_proxies: trusted.map(|t| t.0).unwrap_or_default(),
        forwarded_header: forwarded_header?.0,
        ipv6_prefix: prefix?.0 as u8,
        legacy_headers: legacy?,
        capacity: capacity?.0 as usize,
        redis_url: redis.map(|d| d.0),
        redis_timeout: timeout?,
        failure: failure?.0,
    })
}

fn read_otel(r: &mut Reader<'_>) -> Option<crate::otel::OtelSettings> {
    let disabled = r.read(&OTEL_SDK_DISABLED);
    let endpoint: Option<HttpUrl> = r.read(&OTLP_ENDPOINT);
    let metrics_endpoint: Option<HttpUrl> = r.read(&OTLP_METRICS_ENDPOINT);
    let protocol: Option<ProtocolVar> = r.read(&OTLP_PROTOCOL);
    let headers: Option<KeyValues> = r.read(&OTLP_HEADERS);
    let timeout: Option<u64> = r.read(&OTLP_TIMEOUT);
    let interval: Option<u64> = r.read(&METRIC_EXPORT_INTERVAL);
    let resource: Option<KeyValues> = r.read(&RESOURCE_ATTRIBUTES);
    let traces_endpoint: Option<HttpUrl> = r.read(&OTLP_TRACES_ENDPOINT);
    let traces_protocol: Option<ProtocolVar> = r.read(&OTLP_TRACES_PROTOCOL);
    let traces_headers: Option<KeyValues> = r.read(&OTLP_TRACES_HEADERS);
    let traces_timeout: Option<u64> = r.read(&OTLP_TRACES_TIMEOUT);
    let sampler: Option<SamplerVar> = r.read(&TRACES_SAMPLER);
    let arg: Option<Ratio> = r.read(&TRACES_SAMPLER_ARG);
    let propagators: Option<PropagatorsVar> = r.read(&PROPAGATORS);
    let delay: Option<u64> = r.read(&BSP_SCHEDULE_DELAY);
    let queue: Option<Count> = r.read(&BSP_MAX_QUEUE_SIZE);
    let batch: Option<Count> = r.read(&BSP_MAX_EXPORT_BATCH_SIZE);
    // Each `?` below comes after every variable was read, so every problem
    // is reported.
    let sampler = sampler?;
    Some(crate::otel::OtelSettings {
        disabled: disabled?,
        endpoint: endpoint.map(|e| e.0),
        metrics_endpoint: metrics_endpoint.map(|e| e.0),
        traces_endpoint: traces_endpoint.map(|e| e.0),
        protocol: protocol.map(|p| p.0),
        traces_protocol: traces_protocol.map(|p| p.0),
        headers: headers.map(|h| h.0).unwrap_or_default(),
        traces_headers: traces_headers.map(|h| h.0),
        timeout: Duration::from_millis(timeout?),
        traces_timeout: traces_timeout.map(Duration::from_millis),
        metric_export_interval: Duration::from_millis(interval?.max(100)),
        resource_attributes: resource.map(|h| h.0).unwrap_or_default(),
        sampler: crate::trace::Sampler {
            parent_based: sampler.0,
            ratio: sampler.1.unwrap_or(arg?.0),
        },
        propagation: propagators?.0,
        batch: crate::otel::BatchSettings {
            schedule_delay: Duration::from_millis(delay?.max(1)),
            max_queue_size: queue?.0 as usize,
            max_export_batch_size: batch?.0 as usize,
        },
    })
}

fn read_metrics(r: &mut Reader<'_>) -> Option<crate::metrics::MetricsSettings> {
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

fn read_security(r: &mut Reader<'_>) -> Option<crate::security::SecuritySettings> {
    use crate::security::{
        CorsSettings, SecuritySettings, DEFAULT_CSP, DEFAULT_PERMISSIONS_POLICY,
    };
    let enabled = r.read(&SECURITY_HEADERS);
    let csp: Option<CspText> = r.read(&CSP);
    let report_only = r.read(&CSP_REPORT_ONLY);
    let report_uri: Option<HeaderText> = r.read(&CSP_REPORT_URI);
    let nonce = r.read(&CSP_NONCE);
    let frame: Option<FrameVar> = r.read(&FRAME_OPTIONS);
    let hsts: Option<LongDuration> = r.read(&HSTS_MAX_AGE);
    let preload = r.read(&HSTS_PRELOAD);
    let https: Option<HttpsVar> = r.read(&HTTPS);
    let coep = r.read(&COEP);
    let permissions: Option<HeaderText> = r.read(&PERMISSIONS_POLICY);
    let overridable: Option<HeaderNames<false>> = r.read(&OVERRIDABLE);
    let body: Option<Size> = r.read(&BODY_LIMIT);
    let timeout = r.read(&REQUEST_TIMEOUT);
    let status: Option<TimeoutStatus> = r.read(&TIMEOUT_STATUS);
    let origins: Option<List> = r.read(&CORS_ORIGINS);
    let methods: Option<Methods> = r.read(&CORS_METHODS);
    let headers: Option<HeaderNames<true>> = r.read(&CORS_HEADERS);
    let credentials: Option<bool> = r.read(&CORS_CREDENTIALS);
    let max_age = r.read(&CORS_MAX_AGE);
    let origins = origins.unwrap_or_default().0;
    // A check across two variables, after both were read: reported with
    // the rest (the settings are refused when the report is not empty).
    if credentials == Some(true) && origins.iter().any(|o| o == "*") {
        r.report.push(
            CORS_CREDENTIALS.name,
            "false when OPSKIT_CORS_ORIGINS is *",
            "browsers refuse credentials with a wildcard origin; list the origins instead",
        );
    }
    Some(SecuritySettings {
        enabled: enabled?,
        csp: csp.map_or_else(|| DEFAULT_CSP.to_owned(), |c| c.0),
        csp_report_only: report_only?,
        csp_report_uri: report_uri.map(|u| u.0),
        csp_nonce: nonce?,
        frame_deny: frame?.0,
        hsts_max_age: hsts?.0,
        hsts_preload: preload?,
        https: https?.0,
        coep: coep?,
        permissions_policy: permissions
            .map_or_else(|| DEFAULT_PERMISSIONS_POLICY.to_owned(), |p| p.0),
        overridable: overridable?
            .0
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        body_limit: body?.0,
        request_timeout: timeout?,
        timeout_status: status?.0,
        cors: CorsSettings {
            origins,
            methods: methods?.0,
            headers: headers?
                .0
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            credentials: credentials?,
            max_age: max_age?,
        },
    })
}

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

/// A ratio from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio(pub f64);

impl FromVar for Ratio {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(Self(r)),
            Ok(_) => Err("the number is not between 0 and 1".to_owned()),
            Err(_) => Err("the value is not a number".to_owned()),
        }
    }
}

/// A comma-separated list; empty items are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List(pub Vec<String>);

impl FromVar for List {
    fn from_var(value: &str) -> Result<Self, String> {
        Ok(Self(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

/// A lower-case HTTP header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(pub String);

impl FromVar for HeaderName {
    fn from_var(value: &str) -> Result<Self, String> {
        http::HeaderName::from_bytes(value.trim().as_bytes())
            .map(|h| Self(h.as_str().to_owned()))
            .map_err(|_| "the value is not a valid header name".to_owned())
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
    /// `OPSKIT_ACCESS_LOG_SKIP_PATHS`.
    pub skip_paths: Vec<String>,
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
            skip_paths: ["/livez", "/readyz", "/startupz", "/metrics"]
                .map(str::to_owned)
                .to_vec(),
            sample_rate: 1.0,
        }
    }
}

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
    /// `OPSKIT_HEADER_READ_TIMEOUT`.
    pub header_read_timeout: Duration,
    /// `OPSKIT_KEEP_ALIVE_TIMEOUT` (zero: no keep-alive).
    pub keep_alive_timeout: Duration,
    /// `OPSKIT_ACCESS_LOG*`.
    pub access_log: AccessLogSettings,
    /// `OPSKIT_REQUEST_ID_HEADER` (lower case).
    pub request_id_header: String,
    /// `SENTRY_*`.
    pub sentry: SentrySettings,
    /// `OPSKIT_HEALTH_PREFIX` (no trailing slash).
    pub health_prefix: String,
    /// `OPSKIT_HEALTH_TOKEN`.
    pub health_token: Option<crate::Secret>,
    /// `OPSKIT_COMMIT`.
    pub commit: Option<String>,
    /// Security headers, CORS and limits.
    pub security: crate::security::SecuritySettings,
    /// `OPSKIT_METRICS*`.
    pub metrics: crate::metrics::MetricsSettings,
    /// `OTEL_*` (export).
    pub otel: crate::otel::OtelSettings,
    /// `OPSKIT_RATE_LIMIT*`, `OPSKIT_TRUSTED_PROXIES`.
    pub rate_limit: crate::ratelimit::LimitSettings,
    /// `OPSKIT_TRACE_RESPONSE_HEADER` (`None`: off).
    pub trace_response_header: Option<String>,
    /// `OPSKIT_STRICT_ENV`: unknown variables are errors, not warnings.
    pub strict_env: bool,
}

/// A header name, or `off` (`None`).
struct HeaderOrOff(Option<String>);

impl FromVar for HeaderOrOff {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim() {
            v if v.eq_ignore_ascii_case("off") || v.is_empty() => Ok(Self(None)),
            v => HeaderName::from_var(v).map(|h| Self(Some(h.0))),
        }
    }
}

/// A path prefix: empty, or `/` followed by path characters, no trailing `/`.
struct PathPrefix(String);

impl FromVar for PathPrefix {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim().trim_end_matches('/');
        let ok = v.is_empty()
            || (v.starts_with('/')
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)));
        if ok {
            Ok(Self(v.to_owned()))
        } else {
            Err("the value is not a path such as /_ops".to_owned())
        }
    }
}

/// A [`PathPrefix`] that is not empty (`/metrics`).
struct NonEmptyPath(String);

impl FromVar for NonEmptyPath {
    fn from_var(value: &str) -> Result<Self, String> {
        match PathPrefix::from_var(value)?.0 {
            p if p.is_empty() => Err("the path is empty".to_owned()),
            p => Ok(Self(p)),
        }
    }
}

/// A secret of at least 16 characters.
struct LongSecret(crate::Secret);

impl FromVar for LongSecret {
    fn from_var(value: &str) -> Result<Self, String> {
        if value.chars().count() >= 16 {
            Ok(Self(crate::Secret::new(value)))
        } else {
            Err("the value is too short (value not shown)".to_owned())
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
        let log_filter: Option<LogFilter> = r.read(&RUST_LOG);
        let log_format = r.read(&LOG_FORMAT);
        let shutdown_timeout = r.read(&SHUTDOWN_TIMEOUT);
        let shutdown_delay = r.read(&SHUTDOWN_DELAY);
        let header_read_timeout: Option<NonZeroDuration> = r.read(&HEADER_READ_TIMEOUT);
        let keep_alive_timeout = r.read(&KEEP_ALIVE_TIMEOUT);
        let access_enabled = r.read(&ACCESS_LOG);
        let access_levels = r.read(&ACCESS_LOG_LEVELS);
        let skip: Option<List> = r.read(&ACCESS_LOG_SKIP_PATHS);
        let sample: Option<Ratio> = r.read(&ACCESS_LOG_SAMPLE_RATE);
        let request_id_header: Option<HeaderName> = r.read(&REQUEST_ID_HEADER);
        let dsn: Option<DsnVar> = r.read(&SENTRY_DSN);
        let sentry_environment = r.read(&SENTRY_ENVIRONMENT);
        let sentry_release = r.read(&SENTRY_RELEASE);
        let sentry_rates: (Option<Ratio>, Option<Ratio>) = (
            r.read(&SENTRY_SAMPLE_RATE),
            r.read(&SENTRY_TRACES_SAMPLE_RATE),
        );
        let send_pii = r.read(&SENTRY_SEND_PII);
        let sentry_timeout = r.read(&SENTRY_TIMEOUT);
        let sentry = match (sentry_rates, send_pii, sentry_timeout) {
            ((Some(sample), Some(traces)), Some(send_pii), Some(timeout)) => Some(SentrySettings {
                dsn: dsn.map(|d| d.0),
                environment: sentry_environment,
                release: sentry_release,
                sample_rate: sample.0,
                traces_sample_rate: traces.0,
                send_pii,
                timeout,
            }),
            _ => None,
        };
        let health_prefix: Option<PathPrefix> = r.read(&HEALTH_PREFIX);
        let health_token: Option<LongSecret> = r.read(&HEALTH_TOKEN);
        let commit = r.read(&COMMIT);
        let security = read_security(&mut r);
        let metrics = read_metrics(&mut r);
        let otel = read_otel(&mut r);
        let rate_limit = read_rate_limit(&mut r);
        let trace_response_header: Option<HeaderOrOff> = r.read(&TRACE_RESPONSE_HEADER);
        let strict_env: Option<bool> = r.read(&STRICT_ENV);
        let access_log = match (access_enabled, access_levels, skip, sample) {
            (Some(enabled), Some(levels), Some(skip), Some(sample)) => Some(AccessLogSettings {
                enabled,
                levels,
                skip_paths: skip.0,
                sample_rate: sample.0,
            }),
            _ => None,
        };
        match (
            host,
            port,
            environment,
            log_filter,
            log_format,
            shutdown_timeout,
            shutdown_delay,
            access_log,
            request_id_header,
            sentry,
            security,
            metrics,
            otel,
            rate_limit,
        ) {
            (
                Some(host),
                Some(port),
                Some(environment),
                Some(log_filter),
                Some(log_format),
                Some(shutdown_timeout),
                Some(shutdown_delay),
                Some(access_log),
                Some(request_id_header),
                Some(sentry),
                Some(security),
                Some(metrics),
                Some(otel),
                Some(rate_limit),
            ) if r.report.is_empty() => Ok(Self {
                host,
                port,
                service_name,
                environment,
                log_filter: log_filter.0,
                log_format,
                shutdown_timeout,
                shutdown_delay,
                // Read above; the guard ensures they were valid.
                header_read_timeout: header_read_timeout.map(|t| t.0).unwrap_or_default(),
                keep_alive_timeout: keep_alive_timeout.unwrap_or_default(),
                access_log,
                request_id_header: request_id_header.0,
                sentry,
                health_prefix: health_prefix.map(|p| p.0).unwrap_or_default(),
                health_token: health_token.map(|t| t.0),
                commit,
                security,
                metrics,
                otel,
                rate_limit,
                trace_response_header: trace_response_header.and_then(|h| h.0),
                strict_env: strict_env.unwrap_or_default(),
            }),
            _ => {
                let mut report = r.report;
                report.withhold_values(env);
                Err(report)
            }
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
        assert_eq!(s.shutdown_delay, Duration::from_secs(5));
        assert_eq!(s.header_read_timeout, Duration::from_secs(5));
        assert_eq!(s.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.listen_addr().to_string(), "0.0.0.0:8080");
        let d = AccessLogSettings::default();
        assert_eq!(s.access_log.levels, d.levels);
        assert_eq!(s.access_log.skip_paths, d.skip_paths);
        assert_eq!(s.request_id_header, "x-request-id");
    }

    #[test]
    fn every_problem_at_once() {
        let env = Env::from_pairs([
            ("PORT", "abc"),
            ("HOST", "nowhere"),
            ("OPSKIT_SHUTDOWN_TIMEOUT", "forever"),
            ("OPSKIT_LOG_FORMAT", "xml"),
            ("RUST_LOG", "info,[[["),
            ("OPSKIT_ACCESS_LOG_LEVELS", "info,warn"),
            ("OPSKIT_ACCESS_LOG_SAMPLE_RATE", "2"),
            ("OPSKIT_REQUEST_ID_HEADER", "bad header"),
            ("SENTRY_DSN", "https://sentry.example/42"),
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
                "OPSKIT_SHUTDOWN_TIMEOUT",
                "OPSKIT_ACCESS_LOG_LEVELS",
                "OPSKIT_ACCESS_LOG_SAMPLE_RATE",
                "OPSKIT_REQUEST_ID_HEADER",
                "SENTRY_DSN"
            ]
        );
    }

    #[test]
    fn range_and_enum_checks_do_not_hide_each_other() {
        let env = Env::from_pairs([
            ("OPSKIT_FORWARDED_HEADER", "bogus"),
            ("OPSKIT_RATE_LIMIT_FAILURE", "bogus"),
            ("OPSKIT_RATE_LIMIT_IPV6_PREFIX", "8"),
            ("OPSKIT_RATE_LIMIT_CAPACITY", "1"),
            ("OPSKIT_RATE_LIMIT_BURST", "0"),
            ("OPSKIT_METRICS_MAX_SERIES", "5"),
            ("OPSKIT_METRICS_PATH", "/"),
            ("OPSKIT_HEADER_READ_TIMEOUT", "0"),
        ]);
        let report = Settings::from_env(&env).unwrap_err();
        let mut vars: Vec<_> = report.problems.iter().map(|p| p.var.as_str()).collect();
        vars.sort_unstable();
        assert_eq!(
            vars,
            [
                "OPSKIT_FORWARDED_HEADER",
                "OPSKIT_HEADER_READ_TIMEOUT",
                "OPSKIT_METRICS_MAX_SERIES",
                "OPSKIT_METRICS_PATH",
                "OPSKIT_RATE_LIMIT_BURST",
                "OPSKIT_RATE_LIMIT_CAPACITY",
                "OPSKIT_RATE_LIMIT_FAILURE",
                "OPSKIT_RATE_LIMIT_IPV6_PREFIX",
            ],
            "{report}"
        );
    }

    #[test]
    fn no_problem_repeats_its_value() {
        let bad = [
            "Sentinel",
            "x Sentinel",
            "Sentinel/99",
            "1/Sentinel",
            "1Sentinel",
            "a=b,Sentinel",
            "a=%ZZSentinel",
            "http://Sentinel",
            "ftp://u:Sentinel@h/",
            "10.0.0.0/8,Sentinel",
            "10.0.0.0/Sentinel",
            "default-src 'self'; Sentinel x",
            "header:Sentinel x",
            "/p=Sentinel,/q=1/1m",
            "info,Sentinel=[[[",
            "info,warn,Sentinel",
            "Sentinel\u{e9}",
        ];
        for spec in VARS {
            for value in bad {
                let Err(report) = Settings::from_env(&Env::from_pairs([(spec.name, value)])) else {
                    continue;
                };
                let text = report.to_string();
                assert!(
                    !text.to_lowercase().contains("sentinel"),
                    "{} = {value}: {text}",
                    spec.name
                );
                // The parsers' own messages hold no value: the safety net
                // (`withhold_values`) had nothing to do.
                assert!(
                    !text.contains("value not shown)") || spec.secret,
                    "{} = {value}: {text}",
                    spec.name
                );
            }
        }
    }

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

    #[test]
    fn empty_is_unset() {
        let env = Env::from_pairs([("PORT", ""), ("OPSKIT_SHUTDOWN_TIMEOUT", "5s")]);
        let s = Settings::from_env(&env).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    }
}
