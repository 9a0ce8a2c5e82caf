//! Security headers (helmet-grade defaults), CORS, and request limits —
//! framework-neutral policy, computed once at start-up.
//!
//! ```
//! use opskit::security::{SecurityPolicy, SecuritySettings};
//! let policy = SecurityPolicy::new(&SecuritySettings::default());
//! let names: Vec<&str> = policy.fixed_headers().iter().map(|(n, _)| *n).collect();
//! assert!(names.contains(&"x-content-type-options"));
//! // HSTS and upgrade-insecure-requests only for requests that came over HTTPS.
//! assert!(policy.hsts(false).is_none());
//! assert!(policy.csp(true, None).unwrap().1.ends_with("upgrade-insecure-requests"));
//! assert!(!policy.csp(false, None).unwrap().1.contains("upgrade-insecure-requests"));
//! ```

use std::borrow::Cow;
use std::time::Duration;

/// helmet 8's default Content-Security-Policy, without
/// `upgrade-insecure-requests` (added for HTTPS requests only).
pub const DEFAULT_CSP: &str = "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline'";

/// A Content-Security-Policy built directive by directive, for
/// [`Builder::csp`](crate::Builder::csp) (the whole service) or a handler's
/// own `Content-Security-Policy` header (one route; CSP is overridable by default).
///
/// ```
/// use opskit::security::Csp;
/// let csp = Csp::helmet()
///     .directive("img-src", ["'self'", "data:", "https://cdn.example"])
///     .directive("connect-src", ["'self'", "https://api.example"])
///     .remove("style-src");
/// let text = csp.to_string();
/// assert!(text.starts_with("default-src 'self';"));
/// assert!(text.contains(";img-src 'self' data: https://cdn.example;"));
/// assert!(text.ends_with(";connect-src 'self' https://api.example"));
/// assert!(!text.contains("style-src"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Csp {
    directives: Vec<(String, String)>,
}

impl Csp {
    /// An empty policy (allows everything until directives are added).
    pub fn new() -> Self {
        Self::default()
    }

    /// helmet's default policy ([`DEFAULT_CSP`]), to adjust.
    pub fn helmet() -> Self {
        DEFAULT_CSP.split(';').fold(Self::new(), |csp, d| {
            let (name, sources) = d.split_once(' ').unwrap_or((d, ""));
            csp.directive(name, sources.split(' ').filter(|s| !s.is_empty()))
        })
    }

    /// Sets `name` to `sources` (replacing its earlier value; in place).
    pub fn directive<I>(mut self, name: &str, sources: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let value = sources
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join(" ");
        match self.directives.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.directives.push((name.to_owned(), value)),
        }
        self
    }

    /// Removes `name`.
    pub fn remove(mut self, name: &str) -> Self {
        self.directives.retain(|(n, _)| n != name);
        self
    }
}

impl std::fmt::Display for Csp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, value)) in self.directives.iter().enumerate() {
            let sep = if i == 0 { "" } else { ";" };
            if value.is_empty() {
                write!(f, "{sep}{name}")?;
            } else {
                write!(f, "{sep}{name} {value}")?;
            }
        }
        Ok(())
    }
}

/// A deny-list Permissions-Policy (OWASP Secure Headers).
pub const DEFAULT_PERMISSIONS_POLICY: &str = "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), publickey-credentials-get=(), screen-wake-lock=(), sync-xhr=(), usb=(), xr-spatial-tracking=()";

/// Whether a response of this `Content-Type` is a document a browser
/// renders (HTML, XHTML, SVG, XML), which keeps the full header set under
/// `OPSKIT_SECURITY_HEADERS=lean`.
pub(crate) fn is_document(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    [
        &b"text/html"[..],
        b"application/xhtml+xml",
        b"image/svg+xml",
        b"text/xml",
        b"application/xml",
    ]
    .iter()
    .any(|d| essence.eq_ignore_ascii_case(d))
}

/// Response headers removed because they leak implementation details.
pub(crate) const REMOVED_HEADERS: [&str; 2] = ["server", "x-powered-by"];

/// When a request counts as HTTPS (for HSTS and `upgrade-insecure-requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpsMode {
    /// When `X-Forwarded-Proto: https` (or `Forwarded: proto=https`) says so.
    /// A spoofed value only makes browsers ignore HSTS over plain HTTP.
    Auto,
    /// Always (TLS terminated in front, headers not forwarded).
    Always,
    /// Never (local development over plain HTTP).
    Never,
}

/// Security settings (from `OPSKIT_*` variables; see the configuration reference).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SecuritySettings {
    /// Send the security headers at all.
    pub enabled: bool,
    /// Only documents (HTML, XHTML, SVG, XML) get the full set; every other
    /// response gets OWASP's REST set: `X-Content-Type-Options: nosniff`,
    /// `Content-Security-Policy: frame-ancestors 'none'` and HSTS over HTTPS
    /// (`OPSKIT_SECURITY_HEADERS=lean`).
    pub lean: bool,
    /// The CSP (without `upgrade-insecure-requests`, added over HTTPS).
    pub csp: String,
    /// `Content-Security-Policy-Report-Only` instead of enforcing.
    pub csp_report_only: bool,
    /// Where browsers send CSP violation reports.
    pub csp_report_uri: Option<String>,
    /// A per-request nonce added to `script-src` (see [`CspNonce`]).
    pub csp_nonce: bool,
    /// `X-Frame-Options: DENY` and `frame-ancestors 'none'` instead of SAMEORIGIN/'self'.
    pub frame_deny: bool,
    /// HSTS max-age; zero: no HSTS.
    pub hsts_max_age: Duration,
    /// HSTS `preload`.
    pub hsts_preload: bool,
    /// When a request counts as HTTPS.
    pub https: HttpsMode,
    /// `Cross-Origin-Embedder-Policy: require-corp` (breaks cross-origin embeds).
    pub coep: bool,
    /// The Permissions-Policy value.
    pub permissions_policy: String,
    /// Headers a handler may set itself (lower case); opskit's value wins for all others.
    pub overridable: Vec<String>,
    /// Largest accepted `Content-Length`, in bytes.
    pub body_limit: u64,
    /// Longest time a request may take; zero: no limit.
    pub request_timeout: Duration,
    /// Status answered on timeout (408, 503 or 504).
    pub timeout_status: u16,
    /// Body limits and timeouts of their own for some routes
    /// (`OPSKIT_ROUTE_LIMITS`, then the builder's), first match wins.
    pub route_limits: Vec<crate::limits::RouteLimit>,
    /// CORS.
    pub cors: CorsSettings,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            lean: false,
            csp: DEFAULT_CSP.to_owned(),
            csp_report_only: false,
            csp_report_uri: None,
            csp_nonce: false,
            frame_deny: false,
            hsts_max_age: Duration::from_secs(31_536_000),
            hsts_preload: false,
            https: HttpsMode::Auto,
            coep: false,
            permissions_policy: DEFAULT_PERMISSIONS_POLICY.to_owned(),
            overridable: vec![
                "content-security-policy".to_owned(),
                "content-security-policy-report-only".to_owned(),
            ],
            body_limit: 1 << 20,
            request_timeout: Duration::from_secs(30),
            timeout_status: 504,
            route_limits: Vec::new(),
            cors: CorsSettings::default(),
        }
    }
}

/// CORS settings. No origins: CORS is off (no headers, preflights fall through).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CorsSettings {
    /// Allowed origins (`https://app.example`), or `*`.
    pub origins: Vec<String>,
    /// Allowed methods.
    pub methods: Vec<String>,
    /// Allowed request headers (lower case).
    pub headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` (never with `*`).
    pub credentials: bool,
    /// How long browsers may cache a preflight.
    pub max_age: Duration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(str::to_owned)
                .to_vec(),
            headers: ["content-type", "authorization", "x-request-id"]
                .map(str::to_owned)
                .to_vec(),
            credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

/// The per-request CSP nonce (when `OPSKIT_CSP_NONCE=true`): put it in
/// `<script nonce="…">`. Handlers read it with the extractor (Axum) or from
/// the request extensions (Actix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CspNonce(pub(crate) String);

impl CspNonce {
    /// A fresh random nonce (128 bits, base64url).
    pub(crate) fn generate() -> Self {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut n = fastrand::u128(..);
        let s: String = (0..22)
            .map(|_| {
                let c = ALPHABET[(n & 63) as usize] as char;
                n >>= 6;
                c
            })
            .collect();
        Self(s)
    }

    /// The nonce.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CspNonce {
    type Rejection = crate::Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CspNonce>()
            .cloned()
            .ok_or_else(|| crate::Problem::new(500).detail("CSP nonces are off (OPSKIT_CSP_NONCE)"))
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for CspNonce {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<CspNonce>().cloned())
    }
}

#[cfg(feature = "actix")]
impl actix_web::FromRequest for CspNonce {
    type Error = crate::Problem;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        std::future::ready(req.extensions().get::<CspNonce>().cloned().ok_or_else(|| {
            crate::Problem::new(500).detail("CSP nonces are off (OPSKIT_CSP_NONCE)")
        }))
    }
}

/// The policy, computed once: adapters turn [`SecurityPolicy::fixed_headers`]
/// into their own header types at start-up and call the rest per request.
#[derive(Debug, Clone)]
pub struct SecurityPolicy {
    enabled: bool,
    lean: bool,
    fixed: Vec<(&'static str, String)>,
    csp_name: &'static str,
    csp_plain: Option<String>,
    csp_https: Option<String>,
    nonce: bool,
    hsts: Option<String>,
    https: HttpsMode,
    overridable: Vec<String>,
    limits: crate::limits::LimitTable,
    cors: CorsSettings,
}

/// What CORS says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsDecision {
    /// Not a CORS request, or CORS off: nothing to add.
    None,
    /// A preflight: answer 204 with these headers, without calling the handler.
    Preflight(Vec<(&'static str, String)>),
    /// An actual request from an allowed origin: add these headers to the response.
    Actual(Vec<(&'static str, String)>),
}

impl SecurityPolicy {
    /// Computes every header value from `s`.
    pub fn new(s: &SecuritySettings) -> Self {
        let frame = if s.frame_deny { "DENY" } else { "SAMEORIGIN" };
        let mut fixed = vec![
            ("cross-origin-opener-policy", "same-origin".to_owned()),
            ("cross-origin-resource-policy", "same-origin".to_owned()),
            ("origin-agent-cluster", "?1".to_owned()),
            ("permissions-policy", s.permissions_policy.clone()),
            ("referrer-policy", "no-referrer".to_owned()),
            ("x-content-type-options", "nosniff".to_owned()),
            ("x-dns-prefetch-control", "off".to_owned()),
            ("x-download-options", "noopen".to_owned()),
            ("x-frame-options", frame.to_owned()),
            ("x-permitted-cross-domain-policies", "none".to_owned()),
            ("x-xss-protection", "0".to_owned()),
        ];
        if s.coep {
            fixed.push(("cross-origin-embedder-policy", "require-corp".to_owned()));
        }
        let mut csp = s.csp.trim().trim_end_matches(';').to_owned();
        if s.frame_deny {
            csp = csp.replace("frame-ancestors 'self'", "frame-ancestors 'none'");
        }
        if let Some(uri) = &s.csp_report_uri {
            csp.push_str(&format!(";report-uri {uri};report-to csp-endpoint"));
            fixed.push(("reporting-endpoints", format!("csp-endpoint=\"{uri}\"")));
        }
        let (csp_plain, csp_https) = if csp.is_empty() {
            (None, None)
        } else {
            let https = format!("{csp};upgrade-insecure-requests");
            (Some(csp), Some(https))
        };
        let hsts = (!s.hsts_max_age.is_zero()).then(|| {
            format!(
                "max-age={}; includeSubDomains{}",
                s.hsts_max_age.as_secs(),
                if s.hsts_preload { "; preload" } else { "" }
            )
        });
        Self {
            enabled: s.enabled,
            lean: s.enabled && s.lean,
            fixed: if s.enabled { fixed } else { Vec::new() },
            csp_name: if s.csp_report_only {
                "content-security-policy-report-only"
            } else {
                "content-security-policy"
            },
            csp_plain,
            csp_https,
            nonce: s.csp_nonce,
            hsts,
            https: s.https,
            overridable: s.overridable.clone(),
            limits: crate::limits::LimitTable::new(
                crate::limits::Limits {
                    body: s.body_limit,
                    timeout: (!s.request_timeout.is_zero()).then_some(s.request_timeout),
                    timeout_status: s.timeout_status,
                },
                &s.route_limits,
            ),
            cors: s.cors.clone(),
        }
    }

    /// The policy of the responses that are not documents, when
    /// `OPSKIT_SECURITY_HEADERS=lean`: OWASP's REST Security Cheat Sheet
    /// set. `nosniff`; `frame-ancestors 'none'` as the whole CSP (nothing
    /// in an API response is rendered, so nothing else in a CSP applies,
    /// and no response of an API is meant to be framed); HSTS as
    /// configured. The rest of helmet's set only concerns documents.
    pub(crate) fn lean_policy(&self) -> Option<SecurityPolicy> {
        let frame_ancestors = "frame-ancestors 'none'".to_owned();
        self.lean.then(|| SecurityPolicy {
            enabled: true,
            lean: false,
            fixed: vec![("x-content-type-options", "nosniff".to_owned())],
            csp_name: "content-security-policy",
            csp_plain: Some(frame_ancestors.clone()),
            csp_https: Some(frame_ancestors),
            nonce: false,
            ..self.clone()
        })
    }

    /// Headers sent on every response (unless overridable and already set).
    pub fn fixed_headers(&self) -> &[(&'static str, String)] {
        &self.fixed
    }

    /// Whether a handler's own value of `name` (lower case) is kept.
    pub fn is_overridable(&self, name: &str) -> bool {
        self.overridable.iter().any(|o| o == name)
    }

    /// Whether per-request nonces are on.
    pub fn nonce_enabled(&self) -> bool {
        self.enabled && self.nonce
    }

    /// Whether the request came over HTTPS, from its forwarding headers.
    pub fn is_https(&self, forwarded_proto: Option<&[u8]>, forwarded: Option<&[u8]>) -> bool {
        match self.https {
            HttpsMode::Always => true,
            HttpsMode::Never => false,
            HttpsMode::Auto => {
                forwarded_proto.is_some_and(|p| p.eq_ignore_ascii_case(b"https"))
                    || forwarded.is_some_and(|f| {
                        String::from_utf8_lossy(f)
                            .to_ascii_lowercase()
                            .split([';', ','])
                            .any(|kv| kv.trim() == "proto=https")
                    })
            }
        }
    }

    /// The CSP header name and value for a request.
    pub fn csp(
        &self,
        https: bool,
        nonce: Option<&CspNonce>,
    ) -> Option<(&'static str, Cow<'_, str>)> {
        if !self.enabled {
            return None;
        }
        let base = if https {
            &self.csp_https
        } else {
            &self.csp_plain
        };
        let base = base.as_deref()?;
        let value = match nonce {
            None => Cow::Borrowed(base),
            Some(n) => Cow::Owned(with_nonce(base, n.as_str())),
        };
        Some((self.csp_name, value))
    }

    /// The HSTS value for a request (HTTPS only: browsers ignore it otherwise,
    /// and sending it on plain-HTTP local runs only confuses).
    pub fn hsts(&self, https: bool) -> Option<&str> {
        (self.enabled && https)
            .then_some(self.hsts.as_deref())
            .flatten()
    }

    /// The body limit of routes without one of their own, in bytes.
    pub fn body_limit(&self) -> u64 {
        self.limits.global().body
    }

    /// The problem for a request whose declared `Content-Length` is over the
    /// global limit (the pipeline checks each request against its route's).
    pub fn check_body(&self, content_length: Option<u64>) -> Option<crate::Problem> {
        self.limits.global().check_body(content_length)
    }

    /// The request timeout of routes without one of their own, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.limits.global().timeout
    }

    /// The limits of a request to `path`: its route's, or the global ones.
    pub(crate) fn limits(&self, path: &str) -> crate::limits::Limits {
        self.limits.for_path(path)
    }

    /// Whether CORS is on (`OPSKIT_CORS_ORIGINS` is set): then every
    /// response varies by `Origin`, whatever the request's origin.
    pub fn cors_enabled(&self) -> bool {
        !self.cors.origins.is_empty()
    }

    /// The CORS decision for a request.
    pub fn cors(
        &self,
        method: &str,
        origin: Option<&[u8]>,
        request_method: Option<&[u8]>,
    ) -> CorsDecision {
        let c = &self.cors;
        let Some(origin) = origin.and_then(|o| std::str::from_utf8(o).ok()) else {
            return CorsDecision::None;
        };
        if c.origins.is_empty() {
            return CorsDecision::None;
        }
        let any = c.origins.iter().any(|o| o == "*");
        let allowed = any || c.origins.iter().any(|o| o == origin);
        let preflight = method == "OPTIONS" && request_method.is_some();
        let mut headers = Vec::new();
        if allowed {
            let allow_origin = if any && !c.credentials { "*" } else { origin };
            headers.push(("access-control-allow-origin", allow_origin.to_owned()));
            if c.credentials {
                headers.push(("access-control-allow-credentials", "true".to_owned()));
            }
        }
        if preflight {
            if allowed {
                headers.push(("access-control-allow-methods", c.methods.join(",")));
                headers.push(("access-control-allow-headers", c.headers.join(",")));
                headers.push(("access-control-max-age", c.max_age.as_secs().to_string()));
            }
            headers.push((
                "vary",
                "origin, access-control-request-method, access-control-request-headers".to_owned(),
            ));
            return CorsDecision::Preflight(headers);
        }
        if !allowed {
            return CorsDecision::None;
        }
        headers.push(("access-control-expose-headers", "x-request-id".to_owned()));
        headers.push(("vary", "origin".to_owned()));
        CorsDecision::Actual(headers)
    }
}

/// `base` with `'nonce-…'` added to `script-src` (or a `script-src` added).
fn with_nonce(base: &str, nonce: &str) -> String {
    let token = format!("'nonce-{nonce}'");
    let mut found = false;
    let parts: Vec<String> = base
        .split(';')
        .map(|d| {
            let t = d.trim();
            if t.starts_with("script-src ") || t == "script-src" {
                found = true;
                format!("{t} {token}")
            } else {
                t.to_owned()
            }
        })
        .collect();
    let mut out = parts.join(";");
    if !found {
        out.push_str(&format!(";script-src 'self' {token}"));
    }
    out
}

#[cfg(test)]
mod tests;
