//! The Prometheus side (feature `prometheus`): the exporter installed as the
//! `metrics` recorder, the framework-neutral `/metrics` endpoint, and its
//! own listener (`OPSKIT_METRICS_ADDR`).

use super::{
    MetricsSettings, BODY_SIZE_BUCKETS, REQUEST_BODY_SIZE, REQUEST_DURATION, RESPONSE_BODY_SIZE,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus exporter: renders every metric recorded through the
/// `metrics` facade — opskit's and the application's — plus process metrics.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: &'static metrics_process::Collector,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

static INSTALLED: OnceLock<Option<Exporter>> = OnceLock::new();

impl Exporter {
    /// Installs the Prometheus recorder as the global `metrics` recorder
    /// (once per process; later calls get the same exporter). `None` when
    /// another recorder was installed first: metrics then go to that one.
    pub fn install(settings: &MetricsSettings) -> Option<Self> {
        INSTALLED
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Full(REQUEST_DURATION.to_owned()),
                        &settings.duration_buckets,
                    )
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full(super::CALL_DURATION.to_owned()),
                            &settings.duration_buckets,
                        )
                    })
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full(super::CLIENT_REQUEST_DURATION.to_owned()),
                            &settings.duration_buckets,
                        )
                    })
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full(REQUEST_BODY_SIZE.to_owned()),
                            &BODY_SIZE_BUCKETS,
                        )
                    })
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full(RESPONSE_BODY_SIZE.to_owned()),
                            &BODY_SIZE_BUCKETS,
                        )
                    });
                let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot install the Prometheus recorder (another metrics recorder is installed?); /metrics is off");
                        return None;
                    }
                };
                // Histograms are kept as raw samples until drained: drain
                // them regularly even when nobody scrapes (bounded memory).
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("opskit-metrics-upkeep".to_owned())
                    .spawn(move || loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
                }
                let process: &'static metrics_process::Collector =
                    Box::leak(Box::new(metrics_process::Collector::default()));
                process.describe();
                super::describe();
                Some(Self { handle, process })
            })
            .clone()
    }

    /// The exposition text (process metrics refreshed first).
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// The `/metrics` endpoint, framework-neutral: adapters route to it.
#[derive(Clone)]
pub struct Endpoint {
    exporter: Exporter,
    token: Option<crate::Secret>,
    /// Refreshes opskit's own counters (drops) right before rendering.
    before_render: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

impl Endpoint {
    pub(crate) fn new(
        exporter: Exporter,
        token: Option<crate::Secret>,
        before_render: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            exporter,
            token,
            before_render,
        }
    }

    /// The answer to a scrape with this `Authorization` header: 200 with the
    /// exposition text, or 401 when a token is configured and not given.
    pub fn respond(&self, authorization: Option<&[u8]>) -> crate::health::ProbeResponse {
        if let Some(token) = &self.token {
            if !crate::health::bearer_matches(authorization, token) {
                return crate::health::ProbeResponse::unauthorized();
            }
        }
        (self.before_render)();
        crate::health::ProbeResponse {
            status: 200,
            content_type: CONTENT_TYPE,
            body: self.exporter.render(),
            www_authenticate: None,
            allow: None,
        }
    }
}

/// Serves `endpoint` at `path` on `addr` from a thread of its own
/// (`OPSKIT_METRICS_ADDR`): scrapes stay off the application's port and work
/// with any framework and runtime. Hand-written rather than a hyper server
/// because it needs no async runtime at `init` time and answers one kind of
/// request: a GET from a scraper, one connection at a time, with timeouts and
/// an 8 KiB limit on the request head.
pub(crate) fn listen(
    addr: std::net::SocketAddr,
    path: String,
    endpoint: Endpoint,
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    tracing::info!(address = %listener.local_addr()?, path = %path, "serving metrics");
    std::thread::Builder::new()
        .name("opskit-metrics-listener".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer_scrape(stream, &path, &endpoint) {
                            tracing::debug!(error = %e, "metrics connection failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener cannot accept");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

fn answer_scrape(
    mut stream: std::net::TcpStream,
    path: &str,
    endpoint: &Endpoint,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request.next().unwrap_or_default(),
        request.next().unwrap_or_default(),
    );
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().as_bytes().to_vec());
    let answer = if method != "GET" {
        crate::health::ProbeResponse {
            allow: Some("GET"),
            ..crate::health::ProbeResponse::text(405, "only GET\n".to_owned())
        }
    } else if target.split('?').next() != Some(path) {
        crate::health::ProbeResponse::text(404, format!("metrics are at {path}\n"))
    } else {
        endpoint.respond(authorization.as_deref())
    };
    let reason = match answer.status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let headers: String = answer
        .headers()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        answer.status,
        answer.body.len()
    )?;
    stream.write_all(answer.body.as_bytes())?;
    stream.flush()
}
