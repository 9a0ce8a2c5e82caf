//! The HTTP side: one blocking client (ureq, with rustls for https://) and
//! [`Exchange`], the plain record of one request and its answer that every
//! check reads. Nothing here judges.

use std::time::{Duration, Instant};
use ureq::http;

/// What one request got back. `status` 0 means no answer (`error` says why).
#[derive(Debug, Clone, Default)]
pub(crate) struct Exchange {
    /// The path (or URL) requested, for messages.
    pub(crate) path: String,
    pub(crate) status: u16,
    /// Header names in lower case, in the order received; repeated names kept.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, cut at [`BODY_CAP`], lossily decoded.
    pub(crate) body: String,
    pub(crate) elapsed: Duration,
    pub(crate) error: Option<String>,
}

/// Bodies are read up to this many bytes: enough for a metrics page of a
/// few thousand series, bounded against a hostile or huge answer.
pub(crate) const BODY_CAP: u64 = 8 << 20;

impl Exchange {
    /// The first value of `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (lower case).
    pub(crate) fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The quota `q` of the first `RateLimit-Policy` item, if any.
    pub(crate) fn policy_quota(&self) -> Option<usize> {
        let v = self.header("ratelimit-policy")?;
        v.split(',').next()?.split(';').find_map(|p| {
            let (k, val) = p.trim().split_once('=')?;
            (k == "q").then(|| val.trim().parse().ok())?
        })
    }

    /// Whether any answer came.
    pub(crate) fn answered(&self) -> bool {
        self.status != 0
    }

    /// A test fixture: `status` with `headers` and `body`.
    #[cfg(test)]
    pub(crate) fn with(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Self {
            path: "/".into(),
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
            body: body.into(),
            ..Self::default()
        }
    }
}

/// A client bound to one origin (`scheme://host:port`).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
    origin: String,
}

impl Client {
    /// A client for `origin`; `ca_pem` (a PEM CA certificate) replaces the
    /// bundled Mozilla roots for https:// (a private CA, a test CA).
    pub(crate) fn new(
        origin: &str,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, String> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(pem) = ca_pem {
            let cert = ureq::tls::Certificate::from_pem(pem)
                .map_err(|e| format!("--ca-cert: no PEM certificate ({e})"))?;
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                cert,
            ])));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            // A server that never sends `100 Continue` still gets the body after this.
            .timeout_await_100(Some(Duration::from_millis(500)))
            .user_agent("opskit-audit")
            .build()
            .into();
        Ok(Self {
            agent,
            origin: origin.trim_end_matches('/').to_owned(),
        })
    }

    /// `method path` (path absolute on this origin, or a full URL) with `headers`
    /// and `body`; never fails: a transport error is an [`Exchange`] with status 0.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Exchange {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.origin)
        };
        let mut out = Exchange {
            path: path.to_owned(),
            ..Exchange::default()
        };
        let mut builder = http::Request::builder().method(method).uri(&url);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        let request = match builder.body(body.to_vec()) {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(format!("cannot build the request: {e}"));
                return out;
            }
        };
        let start = Instant::now();
        match self.agent.run(request) {
            Ok(mut response) => {
                out.status = response.status().as_u16();
                out.headers = response
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let bytes = response
                    .body_mut()
                    .with_config()
                    .limit(BODY_CAP)
                    .read_to_vec();
                match bytes {
                    Ok(b) => out.body = String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => out.error = Some(format!("reading the body: {e}")),
                }
            }
            Err(e) => out.error = Some(e.to_string()),
        }
        out.elapsed = start.elapsed();
        out
    }
}
