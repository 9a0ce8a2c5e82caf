//! The security variables: the headers of [`crate::security`], CORS, the
//! body limit and the request timeout.

use super::parse::{items, numbered, one_of, FromVar, HeaderName, List, Reader};
use super::VarSpec;
use std::time::Duration;

pub(super) const SECURITY_HEADERS: VarSpec = VarSpec::new(
    "OPSKIT_SECURITY_HEADERS",
    "true, lean or false",
    Some("true"),
    "Which security headers are sent (see docs/security.md). `true`: helmet's full set on every response. `lean`: the full set on documents (HTML, XHTML, SVG, XML), OWASP's REST set on every other response (`nosniff`, CSP `frame-ancestors 'none'`, HSTS over HTTPS). `false`: none.",
);
pub(super) const CSP: VarSpec = VarSpec::new("OPSKIT_CSP", "a Content-Security-Policy", None, "The CSP. Unset: helmet's default policy; `upgrade-insecure-requests` is added for HTTPS requests.");
pub(super) const CSP_REPORT_ONLY: VarSpec = VarSpec::new(
    "OPSKIT_CSP_REPORT_ONLY",
    "true or false",
    Some("false"),
    "Send `Content-Security-Policy-Report-Only` instead of enforcing.",
);
pub(super) const CSP_REPORT_URI: VarSpec = VarSpec::new(
    "OPSKIT_CSP_REPORT_URI",
    "a URL or path",
    None,
    "Where browsers send CSP violation reports (`report-uri`, `report-to`).",
);
pub(super) const CSP_NONCE: VarSpec = VarSpec::new(
    "OPSKIT_CSP_NONCE",
    "true or false",
    Some("false"),
    "A fresh nonce per request in `script-src`, available to handlers (`CspNonce`).",
);
pub(super) const FRAME_OPTIONS: VarSpec = VarSpec::new(
    "OPSKIT_FRAME_OPTIONS",
    "deny or sameorigin",
    Some("sameorigin"),
    "`X-Frame-Options` and CSP `frame-ancestors` (`'none'` for deny).",
);
pub(super) const HSTS_MAX_AGE: VarSpec = VarSpec::new(
    "OPSKIT_HSTS_MAX_AGE",
    "a duration such as 365d, or 0",
    Some("365d"),
    "HSTS max-age (with includeSubDomains), sent on HTTPS requests only; 0 turns HSTS off.",
);
pub(super) const HSTS_PRELOAD: VarSpec = VarSpec::new(
    "OPSKIT_HSTS_PRELOAD",
    "true or false",
    Some("false"),
    "Add `preload` to HSTS.",
);
pub(super) const HTTPS: VarSpec = VarSpec::new(
    "OPSKIT_HTTPS",
    "auto, always or never",
    Some("auto"),
    "When a request counts as HTTPS: `auto` follows `X-Forwarded-Proto`/`Forwarded`.",
);
pub(super) const COEP: VarSpec = VarSpec::new(
    "OPSKIT_COEP",
    "true or false",
    Some("false"),
    "Send `Cross-Origin-Embedder-Policy: require-corp` (breaks cross-origin embeds).",
);
pub(super) const PERMISSIONS_POLICY: VarSpec = VarSpec::new(
    "OPSKIT_PERMISSIONS_POLICY",
    "a Permissions-Policy",
    None,
    "Unset: a deny-list of powerful features (camera, microphone, geolocation, payment, usb, …).",
);
pub(super) const OVERRIDABLE: VarSpec = VarSpec::new(
    "OPSKIT_SECURITY_HEADERS_OVERRIDABLE",
    "a comma-separated list of header names",
    Some("content-security-policy,content-security-policy-report-only"),
    "Headers a handler may set itself (per-route policies); opskit's value wins for all others.",
);
pub(super) const BODY_LIMIT: VarSpec = VarSpec::new("OPSKIT_BODY_LIMIT", "a size such as 1MiB, 512KiB or 1000000", Some("1MiB"), "Largest accepted request body: a larger `Content-Length` gets 413 before the handler runs; a chunked body is cut off at the limit and gets 413.");
pub(super) const REQUEST_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_REQUEST_TIMEOUT",
    "a duration such as 30s, or 0",
    Some("30s"),
    "Longest time a request may take; 0: no limit.",
);
pub(super) const TIMEOUT_STATUS: VarSpec = VarSpec::new(
    "OPSKIT_REQUEST_TIMEOUT_STATUS",
    "408, 503 or 504",
    Some("504"),
    "Status answered when a request times out.",
);
pub(super) const ROUTE_LIMITS: VarSpec = VarSpec::new("OPSKIT_ROUTE_LIMITS", "a ;-separated list of path:body=SIZE,timeout=DURATION", None, "Body limits and timeouts of their own for some routes, first match wins; a path ending in `*` is a prefix: `/upload/*:body=100MiB,timeout=300s;/export:timeout=120s`.");
pub(super) const CORS_ORIGINS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_ORIGINS",
    "a comma-separated list of origins, or *",
    None,
    "Origins allowed to call this service from a browser. Unset: CORS off.",
);
pub(super) const CORS_METHODS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_METHODS",
    "a comma-separated list of HTTP methods, or *",
    Some("GET,HEAD,POST,PUT,PATCH,DELETE"),
    "Methods allowed in CORS preflights.",
);
pub(super) const CORS_HEADERS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_HEADERS",
    "a comma-separated list of header names, or *",
    Some("content-type,authorization,x-request-id"),
    "Request headers allowed in CORS preflights.",
);
pub(super) const CORS_CREDENTIALS: VarSpec = VarSpec::new(
    "OPSKIT_CORS_CREDENTIALS",
    "true or false",
    Some("false"),
    "Allow credentials (cookies); refused together with origin `*`.",
);
pub(super) const CORS_MAX_AGE: VarSpec = VarSpec::new(
    "OPSKIT_CORS_MAX_AGE",
    "a duration such as 10m",
    Some("10m"),
    "How long browsers may cache a preflight.",
);

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

/// `OPSKIT_ROUTE_LIMITS`: `path:body=SIZE,timeout=DURATION` entries,
/// separated by `;` (a path may hold `:`; the last one ends it).
struct RouteLimitsVar(Vec<crate::limits::RouteLimit>);

impl FromVar for RouteLimitsVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, entry) in numbered(value, ';') {
            let (path, limits) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("entry {n} is not path:limits"))?;
            let path = path.trim();
            if !path.starts_with('/') {
                return Err(format!("entry {n}: the path does not start with /"));
            }
            let mut route = crate::limits::RouteLimit::new(path);
            for limit in limits.split(',').map(str::trim) {
                match limit.split_once('=').map(|(k, v)| (k.trim(), v)) {
                    Some(("body", v)) => {
                        let size =
                            Size::from_var(v).map_err(|e| format!("entry {n}, body: {e}"))?;
                        route.body_limit = Some(size.0);
                    }
                    Some(("timeout", v)) => {
                        let t = Duration::from_var(v)
                            .map_err(|e| format!("entry {n}, timeout: {e}"))?;
                        route.timeout = Some(t);
                    }
                    _ => {
                        return Err(format!(
                            "entry {n}: a limit is not body=SIZE or timeout=DURATION"
                        ))
                    }
                }
            }
            out.push(route);
        }
        Ok(Self(out))
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
        for (n, directive) in numbered(&v, ';') {
            let name = directive.split(' ').next().unwrap_or_default();
            if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return Err(format!(
                    "directive {n} does not start with a name of lower-case letters and dashes"
                ));
            }
        }
        Ok(Self(v))
    }
}

/// `OPSKIT_SECURITY_HEADERS`: sent at all, and lean.
struct HeadersVar(bool, bool);

impl FromVar for HeadersVar {
    fn from_var(value: &str) -> Result<Self, String> {
        if value.trim().eq_ignore_ascii_case("lean") {
            return Ok(Self(true, true));
        }
        bool::from_var(value)
            .map(|on| Self(on, false))
            .map_err(|_| "the value is not true, lean or false".to_owned())
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

/// Reads every security variable through `r` (each problem is recorded
/// there, the check across two variables too), then combines them: `None`
/// when one is invalid.
pub(super) fn read(r: &mut Reader<'_>) -> Option<crate::security::SecuritySettings> {
    use crate::security::{
        CorsSettings, SecuritySettings, DEFAULT_CSP, DEFAULT_PERMISSIONS_POLICY,
    };
    let headers_var: Option<HeadersVar> = r.read(&SECURITY_HEADERS);
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
    let route_limits: Option<RouteLimitsVar> = r.read(&ROUTE_LIMITS);
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
        enabled: headers_var.as_ref()?.0,
        lean: headers_var?.1,
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
        route_limits: route_limits.map(|r| r.0).unwrap_or_default(),
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
