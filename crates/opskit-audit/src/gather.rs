//! Sends the audit's requests and keeps the answers in [`Observations`]; the
//! checks (`checks.rs`) are pure functions over it.
//!
//! Order matters: everything that reads ordinary answers first, the metrics
//! after the 404 (so that a raw path in a label shows), then the timing, and
//! the intrusive requests last (a burst leaves the client rate-limited).

use crate::http::{Client, Exchange};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// What the user asked for (from the command line).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The page audited (`http(s)://host:port/path`).
    pub(crate) url: String,
    /// The service is reached over TLS (https:// URL, or `--https` behind a proxy).
    pub(crate) https: bool,
    pub(crate) intrusive: bool,
    /// opskit's `OPSKIT_HEALTH_PREFIX`, tried before the conventional paths.
    pub(crate) health_prefix: String,
    pub(crate) liveness: Option<String>,
    pub(crate) readiness: Option<String>,
    pub(crate) startup: Option<String>,
    pub(crate) metrics_url: Option<String>,
    pub(crate) metrics_token: Option<String>,
    pub(crate) allow_health_details: bool,
    pub(crate) request_id_header: String,
    pub(crate) oversized_body: usize,
    pub(crate) max_series: usize,
    pub(crate) burst_max: usize,
    pub(crate) timeout: Duration,
    /// `--ca-cert`: a PEM CA certificate trusted instead of the bundled roots.
    pub(crate) ca_cert: Option<Vec<u8>>,
}

/// Everything the checks read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observations {
    pub(crate) https: bool,
    pub(crate) intrusive: bool,
    pub(crate) allow_health_details: bool,
    pub(crate) max_series: usize,
    pub(crate) request_id_header: String,
    /// `GET url` with a request id, a `traceparent` and (with `https`) `X-Forwarded-Proto: https`.
    pub(crate) page: Exchange,
    pub(crate) sent_request_id: String,
    pub(crate) sent_trace_id: String,
    /// `GET url` from a foreign `Origin`.
    pub(crate) cors_simple: Exchange,
    /// `OPTIONS url` preflight from a foreign `Origin`.
    pub(crate) cors_preflight: Exchange,
    pub(crate) foreign_origin: String,
    /// `GET` of a path that cannot exist.
    pub(crate) not_found: Exchange,
    /// `DELETE url`.
    pub(crate) wrong_method: Exchange,
    /// First answering path per probe kind, or every path tried.
    pub(crate) liveness: Probe,
    pub(crate) readiness: Probe,
    pub(crate) startup: Probe,
    /// `GET <prefix>/health` without credentials.
    pub(crate) health: Exchange,
    /// `GET /metrics` on the audited origin without credentials.
    pub(crate) metrics_public: Exchange,
    /// The metrics as a scraper gets them (`--metrics-url`/`--metrics-token`),
    /// when that differs from `metrics_public`.
    pub(crate) metrics_scraped: Option<Exchange>,
    /// 10 concurrent `GET` of the liveness path.
    pub(crate) probe_storm: Vec<Exchange>,
    /// `POST url` with an oversized body (intrusive).
    pub(crate) oversized: Option<Exchange>,
    pub(crate) oversized_size: usize,
    /// The burst (intrusive): every answer, in order.
    pub(crate) burst: Vec<Exchange>,
}

/// Where a probe kind was looked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    /// The path that answered like an endpoint, with its answer.
    pub(crate) found: Option<Exchange>,
    /// Every path tried.
    pub(crate) tried: Vec<String>,
}

/// A random hex string of `n` digits (std's randomly keyed hasher: enough
/// for ids that must only not collide with a real path or trace).
fn random_hex(n: usize) -> String {
    let mut out = String::new();
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n);
    out
}

/// `scheme://host:port` and the path of `url`.
pub(crate) fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .map(|r| ("http://", r))
        .or_else(|| url.strip_prefix("https://").map(|r| ("https://", r)));
    let Some((scheme, rest)) = rest else {
        return Err(format!(
            "`{url}` is not an http:// or https:// URL (example: http://127.0.0.1:8080/)"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok((format!("{scheme}{authority}"), path.to_owned()))
}

const LIVENESS: &[&str] = &[
    "/livez",
    "/healthz",
    "/health/live",
    "/health/liveness",
    "/-/healthy",
];
const READINESS: &[&str] = &[
    "/readyz",
    "/health/ready",
    "/health/readiness",
    "/ready",
    "/-/ready",
];
const STARTUP: &[&str] = &[
    "/startupz",
    "/health/startup",
    "/health/started",
    "/startup",
];

/// Whether an answer looks like an endpoint that exists (a probe may say 503).
fn exists(e: &Exchange) -> bool {
    e.answered() && !matches!(e.status, 401 | 403 | 404 | 405 | 410 | 501) && e.status < 600
}

fn find_probe(client: &Client, given: Option<&str>, prefix: &str, conventional: &[&str]) -> Probe {
    let mut tried: Vec<String> = Vec::new();
    if let Some(p) = given {
        tried.push(p.to_owned());
    } else {
        if !prefix.is_empty() {
            tried.push(format!("{prefix}{}", conventional[0]));
        }
        tried.extend(conventional.iter().map(|p| (*p).to_owned()));
    }
    for path in &tried {
        let e = client.send("GET", path, &[], b"");
        if exists(&e) {
            return Probe {
                found: Some(e),
                tried,
            };
        }
    }
    Probe { found: None, tried }
}

/// Sends every request of the audit.
pub(crate) fn gather(opts: &Options) -> Result<Observations, String> {
    let (origin, path) = split_url(&opts.url)?;
    let client = Client::new(&origin, opts.timeout, opts.ca_cert.as_deref())?;
    let request_id = format!("opskit-audit-{}", random_hex(12));
    let trace_id = random_hex(32);
    let traceparent = format!("00-{trace_id}-{}-01", random_hex(16));
    let mut page_headers = vec![
        (opts.request_id_header.as_str(), request_id.as_str()),
        ("traceparent", traceparent.as_str()),
    ];
    if opts.https {
        page_headers.push(("x-forwarded-proto", "https"));
    }
    let page = client.send("GET", &path, &page_headers, b"");
    if !page.answered() {
        return Err(format!(
            "no answer from {}: {}",
            opts.url,
            page.error.as_deref().unwrap_or("unknown error")
        ));
    }
    let proto: &[(&str, &str)] = if opts.https {
        &[("x-forwarded-proto", "https")]
    } else {
        &[]
    };
    let foreign = format!("https://opskit-audit-{}.example", random_hex(8));
    let cors_simple = client.send(
        "GET",
        &path,
        &headers_with(proto, &[("origin", &foreign)]),
        b"",
    );
    let cors_preflight = client.send(
        "OPTIONS",
        &path,
        &headers_with(
            proto,
            &[
                ("origin", &foreign),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", "x-opskit-audit"),
            ],
        ),
        b"",
    );
    let not_found = client.send(
        "GET",
        &format!("/opskit-audit-{}/does-not-exist", random_hex(12)),
        &headers_with(proto, &[]),
        b"",
    );
    let wrong_method = client.send("DELETE", &path, &headers_with(proto, &[]), b"");
    let prefix = opts.health_prefix.trim_end_matches('/');
    let liveness = find_probe(&client, opts.liveness.as_deref(), prefix, LIVENESS);
    let readiness = find_probe(&client, opts.readiness.as_deref(), prefix, READINESS);
    let startup = find_probe(&client, opts.startup.as_deref(), prefix, STARTUP);
    let health = client.send("GET", &format!("{prefix}/health"), &[], b"");
    let metrics_public = client.send("GET", "/metrics", &[], b"");
    let metrics_scraped = match (&opts.metrics_url, &opts.metrics_token) {
        (None, None) => None,
        (url, token) => {
            let auth = token.as_ref().map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            Some(client.send("GET", url.as_deref().unwrap_or("/metrics"), &headers, b""))
        }
    };
    let probe_storm = match &liveness.found {
        Some(found) => storm(&client, &found.path, 10),
        None => Vec::new(),
    };
    let mut obs = Observations {
        https: opts.https,
        intrusive: opts.intrusive,
        allow_health_details: opts.allow_health_details,
        max_series: opts.max_series,
        request_id_header: opts.request_id_header.clone(),
        page,
        sent_request_id: request_id,
        sent_trace_id: trace_id,
        cors_simple,
        cors_preflight,
        foreign_origin: foreign,
        not_found,
        wrong_method,
        liveness,
        readiness,
        startup,
        health,
        metrics_public,
        metrics_scraped,
        probe_storm,
        oversized: None,
        oversized_size: opts.oversized_body,
        burst: Vec::new(),
    };
    if opts.intrusive {
        let body = vec![b'a'; opts.oversized_body];
        obs.oversized = Some(client.send(
            "POST",
            &path,
            &headers_with(
                proto,
                &[
                    ("content-type", "application/octet-stream"),
                    ("expect", "100-continue"),
                ],
            ),
            &body,
        ));
        let quota = obs.page.policy_quota();
        // One more than the quota the service announces (plus a margin for
        // the requests already made), else a fixed burst; never more than asked.
        let n = quota
            .map_or(100, |q| q.saturating_add(20))
            .min(opts.burst_max);
        obs.burst = burst(&client, &path, n);
    }
    Ok(obs)
}

/// `base` then `extra`.
fn headers_with<'a>(
    base: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut v = base.to_vec();
    v.extend_from_slice(extra);
    v
}

/// `n` requests of `path` released at once from `n` threads.
fn storm(client: &Client, path: &str, n: usize) -> Vec<Exchange> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (client, barrier, path) = (client.clone(), barrier.clone(), path.to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                client.send("GET", &path, &[], b"")
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect()
}

/// `n` requests of `path` from 4 threads, stopping early once a 429 came.
fn burst(client: &Client, path: &str, n: usize) -> Vec<Exchange> {
    let limited = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let per_thread = n.div_ceil(4);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (client, limited, path) = (client.clone(), limited.clone(), path.to_owned());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..per_thread {
                    if limited.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let mut e = client.send("GET", &path, &[], b"");
                    // Only the status and headers are read: up to --burst-max
                    // bodies are not kept.
                    e.body = String::new();
                    if e.status == 429 || !e.answered() {
                        limited.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    seen.push(e);
                }
                seen
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_origin_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080").unwrap(),
            ("http://127.0.0.1:8080".into(), "/".into())
        );
        assert_eq!(
            split_url("https://a.example/x?y=1").unwrap(),
            ("https://a.example".into(), "/x?y=1".into())
        );
        assert!(split_url("ftp://a").unwrap_err().contains("not an http"));
        assert!(split_url("http:///x").unwrap_err().contains("no host"));
    }

    #[test]
    fn random_ids_have_the_asked_length_and_differ() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
