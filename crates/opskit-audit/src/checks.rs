//! Every check of a running service: a small pure function from the
//! [`Observations`] to one [`Finding`]. docs/audit.md lists them.
//!
//! Header grading follows Mozilla Observatory's tests and score modifiers
//! (CSP −25 when missing, −20 with `'unsafe-inline'` scripts; framing −20;
//! nosniff −5; HSTS −20; Referrer-Policy +5 when private; cookies −20/−40).

use crate::gather::{Observations, Probe};
use crate::http::Exchange;
use crate::prom;
use crate::report::Finding;
#[cfg(test)]
use crate::report::Status;

const H: &str = "headers";

/// Every check, in report order.
pub(crate) fn run_all(o: &Observations) -> Vec<Finding> {
    vec![
        csp(&o.page),
        nosniff(&o.page),
        framing(&o.page),
        referrer_policy(&o.page),
        permissions_policy(&o.page),
        cross_origin_isolation(&o.page),
        server_banner(&o.page),
        hsts(&o.page, o.https),
        cookies(&[&o.page, &o.not_found, &o.cors_simple], o.https),
        cors_origin(&o.cors_simple, &o.foreign_origin),
        cors_preflight(&o.cors_preflight, &o.foreign_origin),
        not_found(&o.not_found),
        method_not_allowed(&o.wrong_method),
        problem_json(&o.not_found),
        request_id(&o.page, &o.request_id_header, &o.sent_request_id),
        trace_context(&o.page, &o.sent_trace_id),
        probe("liveness", &o.liveness, &o.not_found),
        probe("readiness", &o.readiness, &o.not_found),
        probe("startup", &o.startup, &o.not_found),
        health_details(&o.health, o.allow_health_details),
        metrics_exposure(&o.metrics_public, o.metrics_scraped.is_some()),
        metrics_format(o.metrics_scraped.as_ref().unwrap_or(&o.metrics_public)),
        metrics_semconv(o.metrics_scraped.as_ref().unwrap_or(&o.metrics_public)),
        metrics_cardinality(
            o.metrics_scraped.as_ref().unwrap_or(&o.metrics_public),
            o.max_series,
            &o.not_found.path,
        ),
        ratelimit_headers(&o.page),
        probe_timing(&o.probe_storm),
        body_limit(o.oversized.as_ref(), o.oversized_size, o.intrusive),
        burst(&o.burst, o.intrusive),
    ]
}

/// The directives of a CSP: `(name, sources)`.
fn directives(csp: &str) -> Vec<(String, Vec<String>)> {
    csp.split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_ascii_lowercase).collect()))
        })
        .collect()
}

pub(crate) fn csp(page: &Exchange) -> Finding {
    let fix = "send a strict Content-Security-Policy (opskit: on by default; OPSKIT_CSP to tailor it, OPSKIT_CSP_NONCE for inline scripts)";
    let Some(value) = page.header("content-security-policy") else {
        let why = if page.header("content-security-policy-report-only").is_some() {
            "CSP is report-only: nothing is enforced"
        } else {
            "no Content-Security-Policy header"
        };
        return Finding::fail("csp", H, why, fix).observatory(-25);
    };
    let d = directives(value);
    let get = |name: &str| d.iter().find(|(n, _)| n == name).map(|(_, s)| s);
    let script = get("script-src").or_else(|| get("default-src"));
    let Some(script) = script else {
        return Finding::fail(
            "csp",
            H,
            "CSP restricts no scripts (neither script-src nor default-src)",
            fix,
        )
        .observatory(-20);
    };
    // A nonce or hash makes browsers ignore 'unsafe-inline' (CSP level 2+).
    let guarded = script
        .iter()
        .any(|s| s.starts_with("'nonce-") || s.starts_with("'sha") || s == "'strict-dynamic'");
    if script.iter().any(|s| s == "'unsafe-inline'") && !guarded {
        return Finding::fail("csp", H, "CSP allows 'unsafe-inline' scripts", fix).observatory(-20);
    }
    if script
        .iter()
        .any(|s| s == "*" || s == "http:" || s == "https:" || s == "data:")
    {
        return Finding::fail("csp", H, "CSP allows scripts from any host", fix).observatory(-20);
    }
    let mut gaps = Vec::new();
    if script.iter().any(|s| s == "'unsafe-eval'") {
        gaps.push("'unsafe-eval' scripts");
    }
    let object_none = get("object-src")
        .or_else(|| get("default-src"))
        .is_some_and(|s| s.len() == 1 && s[0] == "'none'");
    if !object_none {
        gaps.push("no object-src 'none'");
    }
    if get("frame-ancestors").is_none() {
        gaps.push("no frame-ancestors");
    }
    if gaps.is_empty() {
        Finding::pass(
            "csp",
            H,
            "CSP: no unsafe-inline scripts, object-src 'none', frame-ancestors set",
        )
    } else {
        let modifier = if gaps.contains(&"'unsafe-eval' scripts") {
            -10
        } else {
            0
        };
        Finding::warn("csp", H, format!("CSP: {}", gaps.join(", ")), fix).observatory(modifier)
    }
}

pub(crate) fn nosniff(page: &Exchange) -> Finding {
    match page.header("x-content-type-options") {
        Some(v) if v.trim().eq_ignore_ascii_case("nosniff") => {
            Finding::pass("nosniff", H, "X-Content-Type-Options: nosniff")
        }
        other => Finding::fail(
            "nosniff",
            H,
            match other {
                Some(v) => format!("X-Content-Type-Options is `{v}`, not nosniff"),
                None => "no X-Content-Type-Options: browsers may sniff types".into(),
            },
            "send X-Content-Type-Options: nosniff (opskit: OPSKIT_SECURITY_HEADERS=true)",
        )
        .observatory(-5),
    }
}

pub(crate) fn framing(page: &Exchange) -> Finding {
    let fix =
        "send frame-ancestors and X-Frame-Options (opskit: OPSKIT_FRAME_OPTIONS=deny|sameorigin)";
    let ancestors = page
        .header("content-security-policy")
        .map(directives)
        .and_then(|d| d.into_iter().find(|(n, _)| n == "frame-ancestors"));
    if let Some((_, sources)) = ancestors {
        if sources.iter().any(|s| s == "*") {
            return Finding::fail("framing", H, "CSP frame-ancestors allows any site", fix)
                .observatory(-20);
        }
        return Finding::pass(
            "framing",
            H,
            format!("CSP frame-ancestors {}", sources.join(" ")),
        )
        .observatory(5);
    }
    match page.header("x-frame-options").map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("deny") || v.eq_ignore_ascii_case("sameorigin") => {
            Finding::pass("framing", H, format!("X-Frame-Options: {v}"))
        }
        Some(v) => Finding::fail(
            "framing",
            H,
            format!("X-Frame-Options `{v}` is not DENY or SAMEORIGIN"),
            fix,
        )
        .observatory(-20),
        None => Finding::fail(
            "framing",
            H,
            "no X-Frame-Options or frame-ancestors: pages can be framed (clickjacking)",
            fix,
        )
        .observatory(-20),
    }
}

pub(crate) fn referrer_policy(page: &Exchange) -> Finding {
    let fix = "send Referrer-Policy: no-referrer or strict-origin-when-cross-origin (opskit: OPSKIT_SECURITY_HEADERS=true)";
    let Some(v) = page.header("referrer-policy") else {
        return Finding::warn(
            "referrer-policy",
            H,
            "no Referrer-Policy: the browser default applies",
            fix,
        );
    };
    // The last policy a browser understands wins.
    let last = v
        .split(',')
        .map(str::trim)
        .next_back()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match last.as_str() {
        "no-referrer" | "same-origin" | "strict-origin" | "strict-origin-when-cross-origin" => {
            Finding::pass("referrer-policy", H, format!("Referrer-Policy: {last}")).observatory(5)
        }
        "origin" | "origin-when-cross-origin" | "unsafe-url" | "no-referrer-when-downgrade" => {
            Finding::fail(
                "referrer-policy",
                H,
                format!("Referrer-Policy `{last}` leaks URLs or origins to other sites"),
                fix,
            )
            .observatory(-5)
        }
        _ => Finding::warn(
            "referrer-policy",
            H,
            format!("Referrer-Policy `{v}` is not a known policy"),
            fix,
        ),
    }
}

pub(crate) fn permissions_policy(page: &Exchange) -> Finding {
    match page.header("permissions-policy") {
        Some(v) if !v.trim().is_empty() => Finding::pass(
            "permissions-policy",
            H,
            format!("Permissions-Policy restricts {} features", v.split(',').count()),
        ),
        _ => Finding::warn(
            "permissions-policy",
            H,
            "no Permissions-Policy: camera, microphone, geolocation… stay available to embedded content",
            "send a Permissions-Policy deny-list (opskit: on by default; OPSKIT_PERMISSIONS_POLICY)",
        ),
    }
}

pub(crate) fn cross_origin_isolation(page: &Exchange) -> Finding {
    let coop = page.header("cross-origin-opener-policy").map(str::trim);
    let corp = page.header("cross-origin-resource-policy").map(str::trim);
    let fix = "send Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Resource-Policy: same-origin (opskit: OPSKIT_SECURITY_HEADERS=true)";
    match (coop, corp) {
        (Some(a), Some(b)) if a.starts_with("same-origin") && b != "cross-origin" => {
            Finding::pass("coop-corp", H, format!("COOP {a}, CORP {b}"))
        }
        (a, b) => Finding::warn(
            "coop-corp",
            H,
            format!(
                "COOP {}, CORP {}",
                a.unwrap_or("missing"),
                b.unwrap_or("missing")
            ),
            fix,
        ),
    }
}

fn has_version(v: &str) -> bool {
    v.chars().any(|c| c.is_ascii_digit())
}

pub(crate) fn server_banner(page: &Exchange) -> Finding {
    let fix = "remove Server versions and X-Powered-By (nginx: server_tokens off; opskit services send neither)";
    let mut leaks = Vec::new();
    for name in [
        "x-powered-by",
        "x-aspnet-version",
        "x-aspnetmvc-version",
        "x-generator",
    ] {
        if let Some(v) = page.header(name) {
            leaks.push(format!("{name}: {v}"));
        }
    }
    let server = page.header("server");
    if let Some(v) = server.filter(|v| has_version(v)) {
        leaks.push(format!("server: {v}"));
    }
    if !leaks.is_empty() {
        return Finding::fail(
            "server-banner",
            H,
            format!("version banner: {}", leaks.join(", ")),
            fix,
        );
    }
    match server {
        Some(v) => Finding::warn(
            "server-banner",
            H,
            format!("Server names the software (`{v}`), no version"),
            fix,
        ),
        None => Finding::pass("server-banner", H, "no Server or X-Powered-By banner"),
    }
}

/// `max-age` of an HSTS value.
fn hsts_max_age(v: &str) -> Option<u64> {
    v.split(';').find_map(|d| {
        let (k, val) = d.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("max-age"))
            .then(|| val.trim().trim_matches('"').parse().ok())?
    })
}

pub(crate) fn hsts(page: &Exchange, https: bool) -> Finding {
    if !https {
        return Finding::skip(
            "hsts",
            H,
            "plain HTTP: HSTS only counts over HTTPS (https:// URL, or --https behind a TLS proxy)",
        );
    }
    let fix = "send Strict-Transport-Security: max-age=31536000; includeSubDomains on HTTPS (opskit: OPSKIT_HSTS_MAX_AGE; behind a proxy OPSKIT_TRUSTED_PROXIES so X-Forwarded-Proto is believed)";
    match page.header("strict-transport-security") {
        None => Finding::fail("hsts", H, "no Strict-Transport-Security over HTTPS", fix)
            .observatory(-20),
        Some(v) => match hsts_max_age(v) {
            // Observatory's bar: six months.
            Some(age) if age >= 15_552_000 => {
                let bonus = if v.to_ascii_lowercase().contains("preload") {
                    5
                } else {
                    0
                };
                Finding::pass("hsts", H, format!("HSTS max-age {age} s")).observatory(bonus)
            }
            Some(age) => Finding::warn(
                "hsts",
                H,
                format!("HSTS max-age {age} s is under six months"),
                fix,
            )
            .observatory(-10),
            None => Finding::fail("hsts", H, format!("HSTS `{v}` has no valid max-age"), fix)
                .observatory(-20),
        },
    }
}

pub(crate) fn cookies(answers: &[&Exchange], https: bool) -> Finding {
    let fix = "set cookies with Secure; HttpOnly; SameSite=Lax (or Strict)";
    let all: Vec<&str> = answers
        .iter()
        .flat_map(|e| e.headers_named("set-cookie"))
        .collect();
    if all.is_empty() {
        return Finding::skip("cookies", H, "no Set-Cookie seen");
    }
    let (mut no_secure, mut no_httponly, mut no_samesite) = (Vec::new(), Vec::new(), Vec::new());
    for c in &all {
        let name = c.split('=').next().unwrap_or_default().trim().to_owned();
        let attrs: Vec<String> = c
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        let has = |a: &str| {
            attrs
                .iter()
                .any(|x| x == a || x.starts_with(&format!("{a}=")))
        };
        // __Host-/__Secure- cookies cannot exist without Secure.
        if !has("secure") {
            no_secure.push(name.clone());
        }
        if !has("httponly") {
            no_httponly.push(name.clone());
        }
        if !has("samesite") {
            no_samesite.push(name);
        }
    }
    if !no_secure.is_empty() && https {
        return Finding::fail(
            "cookies",
            H,
            format!("cookies without Secure: {}", no_secure.join(", ")),
            fix,
        )
        .observatory(-20);
    }
    if !no_httponly.is_empty() || !no_samesite.is_empty() || !no_secure.is_empty() {
        let mut gaps = Vec::new();
        if !no_secure.is_empty() {
            gaps.push(format!("no Secure: {}", no_secure.join(", ")));
        }
        if !no_httponly.is_empty() {
            gaps.push(format!("no HttpOnly: {}", no_httponly.join(", ")));
        }
        if !no_samesite.is_empty() {
            gaps.push(format!("no SameSite: {}", no_samesite.join(", ")));
        }
        return Finding::warn("cookies", H, gaps.join("; "), fix);
    }
    Finding::pass(
        "cookies",
        H,
        format!("{} cookie(s) with Secure, HttpOnly and SameSite", all.len()),
    )
}

pub(crate) fn cors_origin(simple: &Exchange, foreign: &str) -> Finding {
    const A: &str = "cors";
    let fix = "allow only the origins you trust (opskit: OPSKIT_CORS_ORIGINS=https://app.example, never *)";
    let allow = simple.header("access-control-allow-origin").map(str::trim);
    let credentials = simple
        .header("access-control-allow-credentials")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    match allow {
        None => Finding::pass(
            "cors-origin",
            A,
            "an unknown Origin gets no Access-Control-Allow-Origin",
        ),
        Some(a) if a == foreign => Finding::fail(
            "cors-origin",
            A,
            if credentials {
                "reflects any Origin, with credentials: any site can read users' data"
            } else {
                "reflects any Origin in Access-Control-Allow-Origin"
            },
            fix,
        )
        .observatory(-50),
        Some("*") if credentials => Finding::fail(
            "cors-origin",
            A,
            "Access-Control-Allow-Origin: * with credentials",
            fix,
        )
        .observatory(-50),
        // Observatory's "universal access": fine only for public, unauthenticated data.
        Some("*") => Finding::fail(
            "cors-origin",
            A,
            "Access-Control-Allow-Origin: *: any site can read the answers",
            fix,
        )
        .observatory(-50),
        Some(a) => Finding::pass(
            "cors-origin",
            A,
            format!("an unknown Origin is not allowed (allows `{a}`)"),
        ),
    }
}

pub(crate) fn cors_preflight(preflight: &Exchange, foreign: &str) -> Finding {
    const A: &str = "cors";
    let fix = "answer preflights only for listed origins (opskit: OPSKIT_CORS_ORIGINS, OPSKIT_CORS_METHODS)";
    if preflight.status >= 500 || !preflight.answered() {
        return Finding::fail(
            "cors-preflight",
            A,
            format!("OPTIONS preflight answered {}", status_text(preflight)),
            fix,
        );
    }
    let allow = preflight
        .header("access-control-allow-origin")
        .map(str::trim);
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or_default();
    match allow {
        Some(a) if a == foreign || a == "*" => Finding::fail(
            "cors-preflight",
            A,
            format!("a preflight from an unknown Origin is allowed (`{a}`, methods `{methods}`)"),
            fix,
        ),
        _ => Finding::pass(
            "cors-preflight",
            A,
            format!(
                "a preflight from an unknown Origin is refused ({})",
                preflight.status
            ),
        ),
    }
}

fn status_text(e: &Exchange) -> String {
    if e.answered() {
        e.status.to_string()
    } else {
        format!("nothing ({})", e.error.as_deref().unwrap_or("no answer"))
    }
}

/// Traces of a stack trace or a framework's default error page in a body.
pub(crate) fn leak_in(body: &str) -> Option<&'static str> {
    const SIGNS: &[(&str, &str)] = &[
        ("panicked at", "a Rust panic message"),
        ("stack backtrace", "a Rust backtrace"),
        ("Traceback (most recent call last)", "a Python traceback"),
        ("Exception in thread", "a Java stack trace"),
        ("\tat java.", "a Java stack trace"),
        ("    at ", "a stack trace"),
        ("node_modules/", "a Node.js stack trace"),
        ("Whitelabel Error Page", "Spring Boot's default error page"),
        ("Werkzeug", "Werkzeug's debugger"),
        ("DEBUG = True", "Django's debug page"),
        ("<address>Apache/", "Apache's version banner"),
        ("<center>nginx/", "nginx's version banner"),
        ("<center>openresty/", "OpenResty's version banner"),
        ("Microsoft-IIS/", "IIS's version banner"),
        ("X-Powered-By", "a framework banner"),
    ];
    SIGNS
        .iter()
        .find(|(s, _)| body.contains(s))
        .map(|(_, what)| *what)
}

fn error_page(id: &'static str, e: &Exchange, expected: &[u16], what: &str) -> Finding {
    const A: &str = "errors";
    let fix = "answer errors with a short body, no stack trace or server banner (application/problem+json); opskit's answers are RFC 9457 problems";
    if !e.answered() {
        return Finding::fail(
            id,
            A,
            format!("{what}: no answer ({})", status_text(e)),
            fix,
        );
    }
    if let Some(leak) = leak_in(&e.body) {
        return Finding::fail(
            id,
            A,
            format!("{what} answered {} with {leak} in the body", e.status),
            fix,
        );
    }
    if e.status >= 500 {
        return Finding::fail(
            id,
            A,
            format!("{what} answered {}: a server error", e.status),
            fix,
        );
    }
    if !expected.contains(&e.status) {
        return Finding::warn(
            id,
            A,
            format!("{what} answered {} (expected {})", e.status, join(expected)),
            "answer the HTTP status that says what happened",
        );
    }
    if e.status == 405 && e.header("allow").is_none() {
        return Finding::warn(
            id,
            A,
            format!("{what}: 405 without the Allow header RFC 9110 requires"),
            "list the allowed methods in Allow",
        );
    }
    Finding::pass(
        id,
        A,
        format!("{what}: {} without stack trace or banner", e.status),
    )
}

fn join(codes: &[u16]) -> String {
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

pub(crate) fn not_found(e: &Exchange) -> Finding {
    error_page("not-found", e, &[404], "an unknown path")
}

pub(crate) fn method_not_allowed(e: &Exchange) -> Finding {
    error_page(
        "method-not-allowed",
        e,
        &[405, 404, 501],
        "DELETE on the page",
    )
}

/// A plus, not a requirement: a pass when the 404 is a well-formed RFC 9457
/// problem, a warn when it claims to be one and is not, else not scored.
pub(crate) fn problem_json(e: &Exchange) -> Finding {
    let ct = e.header("content-type").unwrap_or_default();
    if ct.starts_with("application/problem+json") {
        let ok = serde_json::from_str::<serde_json::Value>(&e.body)
            .is_ok_and(|v| v["status"].as_u64() == Some(u64::from(e.status)));
        if ok {
            return Finding::pass(
                "problem-json",
                "errors",
                "errors are RFC 9457 application/problem+json",
            );
        }
        return Finding::warn(
            "problem-json",
            "errors",
            "problem+json whose status member differs from the status",
            "make `status` equal the response status",
        );
    }
    let what = match (ct.is_empty(), e.body.is_empty()) {
        (_, true) => "an empty body".to_owned(),
        (true, false) => "an untyped body".to_owned(),
        (false, false) => format!("`{ct}`"),
    };
    Finding::skip(
        "problem-json",
        "errors",
        format!(
            "the 404 is {what}: application/problem+json (RFC 9457) would be a plus, not scored"
        ),
    )
    .fix("answer errors as RFC 9457 problem details (opskit's own answers are)")
}

pub(crate) fn request_id(page: &Exchange, header: &str, sent: &str) -> Finding {
    const A: &str = "tracing";
    let fix =
        "echo the caller's request id (opskit: OPSKIT_REQUEST_ID_HEADER, default x-request-id)";
    match page.header(header) {
        Some(v) if v == sent => Finding::pass("request-id", A, format!("{header} echoed")),
        Some(v) => Finding::warn(
            "request-id",
            A,
            format!("{header} answered with its own id `{v}`, not the caller's"),
            fix,
        ),
        None => Finding::fail(
            "request-id",
            A,
            format!("no {header} on the answer: logs and reports cannot be matched"),
            fix,
        ),
    }
}

pub(crate) fn trace_context(page: &Exchange, sent_trace_id: &str) -> Finding {
    const A: &str = "tracing";
    let fix = "continue the caller's W3C traceparent and return traceresponse (opskit: OPSKIT_TRACE_RESPONSE_HEADER, OTEL_PROPAGATORS)";
    let Some(v) = page.header("traceresponse") else {
        return Finding::warn(
            "traceparent",
            A,
            "no traceresponse: cannot see whether the caller's trace is continued",
            fix,
        );
    };
    let parts: Vec<&str> = v.trim().split('-').collect();
    match parts.as_slice() {
        [_, trace, span, _] if *trace == sent_trace_id && span.len() == 16 => Finding::pass(
            "traceparent",
            A,
            "traceparent continued (traceresponse has the caller's trace id)",
        ),
        [_, trace, _, _] => Finding::fail(
            "traceparent",
            A,
            format!(
                "traceresponse starts a new trace ({trace}) instead of continuing the caller's"
            ),
            fix,
        ),
        _ => Finding::fail(
            "traceparent",
            A,
            format!("traceresponse `{v}` is malformed"),
            fix,
        ),
    }
}

pub(crate) fn probe(kind: &'static str, p: &Probe, not_found: &Exchange) -> Finding {
    let id = match kind {
        "liveness" => "probe-liveness",
        "readiness" => "probe-readiness",
        _ => "probe-startup",
    };
    const A: &str = "probes";
    let fix = match kind {
        "liveness" => "serve a liveness endpoint that checks only the process (opskit: /livez, under OPSKIT_HEALTH_PREFIX; or --liveness PATH)",
        "readiness" => "serve a readiness endpoint that fails while dependencies are down or shutting down (opskit: /readyz; or --readiness PATH)",
        _ => "serve a startup endpoint for slow starts (opskit: /startupz; or --startup PATH)",
    };
    if not_found.status == 200 {
        return Finding::fail(
            id,
            A,
            "any path answers 200 (soft 404): probes cannot be told apart",
            fix,
        );
    }
    match &p.found {
        Some(e) => Finding::pass(id, A, format!("{} answers {}", e.path, e.status)),
        None if kind == "startup" => Finding::warn(
            id,
            A,
            format!("no startup endpoint (tried {})", p.tried.join(" ")),
            fix,
        ),
        None => Finding::fail(
            id,
            A,
            format!("no {kind} endpoint (tried {})", p.tried.join(" ")),
            fix,
        ),
    }
}

pub(crate) fn health_details(health: &Exchange, allowed: bool) -> Finding {
    const A: &str = "probes";
    let fix = "show health details only to operators (opskit: OPSKIT_HEALTH_TOKEN), or pass --allow-health-details if public on purpose";
    if !health.answered() || matches!(health.status, 401 | 403 | 404 | 405) {
        return Finding::pass(
            "health-details",
            A,
            format!(
                "{} answers {}: no public details",
                health.path,
                status_text(health)
            ),
        );
    }
    let details: Vec<String> = match serde_json::from_str::<serde_json::Value>(&health.body) {
        Ok(serde_json::Value::Object(map)) => {
            map.keys().filter(|k| *k != "status").cloned().collect()
        }
        _ if health.body.len() > 64 => vec!["a text report".into()],
        _ => Vec::new(),
    };
    if details.is_empty() {
        return Finding::pass(
            "health-details",
            A,
            format!("{} shows only a status", health.path),
        );
    }
    let why = format!("{} shows {} to anyone", health.path, details.join(", "));
    if allowed {
        Finding::pass(
            "health-details",
            A,
            format!("{why} (allowed with --allow-health-details)"),
        )
    } else {
        Finding::fail("health-details", A, why, fix)
    }
}

fn looks_like_metrics(e: &Exchange) -> bool {
    e.status == 200 && prom::parse(&e.body).is_ok_and(|p| !p.samples.is_empty())
}

pub(crate) fn metrics_exposure(public: &Exchange, scraped_elsewhere: bool) -> Finding {
    const A: &str = "metrics";
    if looks_like_metrics(public) {
        return Finding::warn(
            "metrics-exposure",
            A,
            "/metrics is served to anyone on the service's port",
            "serve metrics on their own port or behind a token (opskit: OPSKIT_METRICS_ADDR, OPSKIT_METRICS_TOKEN)",
        );
    }
    let how = if scraped_elsewhere {
        "; scraped where --metrics-url/--metrics-token say"
    } else {
        ""
    };
    Finding::pass(
        "metrics-exposure",
        A,
        format!(
            "/metrics answers {} without credentials{how}",
            status_text(public)
        ),
    )
}

pub(crate) fn metrics_format(e: &Exchange) -> Finding {
    const A: &str = "metrics";
    let fix = "expose Prometheus metrics (opskit: OPSKIT_METRICS=true; --metrics-url/--metrics-token to reach them)";
    if e.status != 200 {
        return Finding::fail(
            "metrics-format",
            A,
            format!("{} answers {}", e.path, status_text(e)),
            fix,
        );
    }
    match prom::parse(&e.body) {
        Ok(p) if p.samples.is_empty() => Finding::fail(
            "metrics-format",
            A,
            format!("{} has no samples", e.path),
            fix,
        ),
        Ok(p) => Finding::pass(
            "metrics-format",
            A,
            format!(
                "{} parses as Prometheus text ({} samples)",
                e.path,
                p.samples.len()
            ),
        ),
        Err(err) => Finding::fail(
            "metrics-format",
            A,
            format!("{} is not Prometheus text: {err}", e.path),
            fix,
        ),
    }
}

pub(crate) fn metrics_semconv(e: &Exchange) -> Finding {
    const A: &str = "metrics";
    let fix = "record http.server.request.duration (OTel semconv: http_server_request_duration_seconds with http_request_method, http_response_status_code, http_route); opskit does by default";
    let Ok(page) = prom::parse(&e.body) else {
        return Finding::skip("metrics-semconv", A, "no metrics to read");
    };
    if e.status != 200 || page.samples.is_empty() {
        return Finding::skip("metrics-semconv", A, "no metrics to read");
    }
    let buckets: Vec<&prom::Sample> = page
        .samples
        .iter()
        .filter(|s| s.name == "http_server_request_duration_seconds_bucket")
        .collect();
    if buckets.is_empty() {
        let other: Vec<&str> = page
            .samples
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| n.contains("http") && (n.contains("request") || n.contains("duration")))
            .collect();
        return match other.first() {
            Some(n) => Finding::warn(
                "metrics-semconv",
                A,
                format!("HTTP metrics under a non-standard name (`{n}`)"),
                fix,
            ),
            None => Finding::fail("metrics-semconv", A, "no HTTP server request metrics", fix),
        };
    }
    let required = ["http_request_method", "http_response_status_code"];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|l| !buckets.iter().any(|s| s.labels.iter().any(|(n, _)| n == l)))
        .collect();
    if !missing.is_empty() {
        return Finding::warn(
            "metrics-semconv",
            A,
            format!(
                "http_server_request_duration_seconds lacks {}",
                missing.join(", ")
            ),
            fix,
        );
    }
    Finding::pass(
        "metrics-semconv",
        A,
        "http_server_request_duration_seconds with OTel semconv labels",
    )
}

pub(crate) fn metrics_cardinality(e: &Exchange, max_series: usize, probe_path: &str) -> Finding {
    const A: &str = "metrics";
    let Ok(page) = prom::parse(&e.body) else {
        return Finding::skip("metrics-cardinality", A, "no metrics to read");
    };
    if e.status != 200 || page.samples.is_empty() {
        return Finding::skip("metrics-cardinality", A, "no metrics to read");
    }
    // The audit's own unknown path must not become a label value.
    let raw = page.samples.iter().find(|s| {
        s.labels
            .iter()
            .any(|(_, v)| v.contains(probe_path.trim_end_matches("/does-not-exist")))
    });
    if let Some(s) = raw {
        return Finding::fail(
            "metrics-cardinality",
            A,
            format!("the raw path of a 404 became a label of `{}`: series grow without bound", s.name),
            "label by route template and collapse unknown paths (opskit does; OPSKIT_METRICS_MAX_SERIES caps the rest)",
        );
    }
    let n = page.samples.len();
    if n > max_series {
        return Finding::warn(
            "metrics-cardinality",
            A,
            format!("{n} series, over the bound of {max_series} (--max-series)"),
            "drop high-cardinality labels (opskit: OPSKIT_METRICS_MAX_SERIES)",
        );
    }
    Finding::pass(
        "metrics-cardinality",
        A,
        format!("{n} series (bound {max_series}); unknown paths not labelled"),
    )
}

pub(crate) fn ratelimit_headers(page: &Exchange) -> Finding {
    const A: &str = "rate limit";
    let fix = "rate-limit clients and announce it (opskit: OPSKIT_RATE_LIMIT=100/1m)";
    match (page.header("ratelimit"), page.header("ratelimit-policy")) {
        (Some(r), Some(p)) => Finding::pass(
            "ratelimit-headers",
            A,
            format!("RateLimit: {r}; RateLimit-Policy: {p}"),
        ),
        _ if page.header("x-ratelimit-limit").is_some() => Finding::warn(
            "ratelimit-headers",
            A,
            "only the legacy X-RateLimit-* headers",
            "send the IETF RateLimit and RateLimit-Policy headers (opskit does)",
        ),
        _ => Finding::fail(
            "ratelimit-headers",
            A,
            "no RateLimit/RateLimit-Policy headers: no sign of a rate limit",
            fix,
        ),
    }
}

pub(crate) fn probe_timing(storm: &[Exchange]) -> Finding {
    const A: &str = "probes";
    if storm.is_empty() {
        return Finding::skip("probe-timing", A, "no liveness endpoint to time");
    }
    let failed = storm
        .iter()
        .filter(|e| !(200..400).contains(&e.status))
        .count();
    let mut times: Vec<f64> = storm
        .iter()
        .map(|e| e.elapsed.as_secs_f64() * 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
    let why = format!(
        "{} concurrent {}: median {median:.1} ms, slowest {max:.1} ms",
        storm.len(),
        storm[0].path
    );
    let fix =
        "keep liveness free of I/O and cached (opskit: health checks are cached and single-flight)";
    if failed > 0 {
        return Finding::fail(
            "probe-timing",
            A,
            format!("{why}; {failed} did not answer 2xx/3xx"),
            fix,
        );
    }
    // A kubelet gives up after timeoutSeconds, 1 s by default.
    if max >= 1000.0 {
        Finding::fail("probe-timing", A, why, fix)
    } else if max >= 250.0 {
        Finding::warn("probe-timing", A, why, fix)
    } else {
        Finding::pass("probe-timing", A, why)
    }
}

pub(crate) fn body_limit(e: Option<&Exchange>, size: usize, intrusive: bool) -> Finding {
    const A: &str = "limits";
    let Some(e) = e.filter(|_| intrusive) else {
        return Finding::skip(
            "body-limit",
            A,
            "not checked (--intrusive sends an oversized body)",
        );
    };
    let fix = "refuse oversized bodies with 413 before reading them (opskit: OPSKIT_BODY_LIMIT)";
    match e.status {
        413 => Finding::pass(
            "body-limit",
            A,
            format!("a {} MiB body got 413", size >> 20),
        ),
        0 => Finding::warn(
            "body-limit",
            A,
            format!(
                "a {} MiB body: connection dropped without an answer ({})",
                size >> 20,
                e.error.as_deref().unwrap_or("?")
            ),
            fix,
        ),
        // Refused for its method or path: the limit itself was not reached.
        s @ (404 | 405 | 501) => Finding::warn(
            "body-limit",
            A,
            format!("a {} MiB POST got {s}: the route refuses POST, so the body limit was not seen", size >> 20),
            "audit a URL that accepts POST to see the limit (opskit: OPSKIT_BODY_LIMIT applies before routing)",
        ),
        s => Finding::fail(
            "body-limit",
            A,
            format!("a {} MiB body got {s}, not 413", size >> 20),
            fix,
        ),
    }
}

pub(crate) fn burst(answers: &[Exchange], intrusive: bool) -> Finding {
    const A: &str = "rate limit";
    if !intrusive {
        return Finding::skip(
            "ratelimit-burst",
            A,
            "not checked (--intrusive sends a burst)",
        );
    }
    let fix = "answer a burst with 429 and Retry-After (opskit: OPSKIT_RATE_LIMIT, OPSKIT_RATE_LIMIT_BURST)";
    match answers.iter().find(|e| e.status == 429) {
        None => Finding::fail(
            "ratelimit-burst",
            A,
            format!("{} requests, no 429", answers.len()),
            fix,
        ),
        Some(e) => match e.header("retry-after") {
            Some(r) => Finding::pass(
                "ratelimit-burst",
                A,
                format!(
                    "{} of a burst of {} got 429, Retry-After: {r}",
                    answers.iter().filter(|x| x.status == 429).count(),
                    answers.len()
                ),
            ),
            None => Finding::warn(
                "ratelimit-burst",
                A,
                "429 without Retry-After: clients cannot tell when to retry",
                fix,
            ),
        },
    }
}

/// Whether a finding list has any fail (for tests and the exit code).
#[cfg(test)]
fn status_of(f: &Finding) -> Status {
    f.status
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    fn page(headers: &[(&str, &str)]) -> Exchange {
        Exchange::with(200, headers, "")
    }

    const HELMET_CSP: &str = "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests";

    #[test]
    fn csp_grades() {
        assert_eq!(
            status_of(&csp(&page(&[("content-security-policy", HELMET_CSP)]))),
            Pass
        );
        let missing = csp(&page(&[]));
        assert_eq!((missing.status, missing.observatory), (Fail, -25));
        let inline = csp(&page(&[(
            "content-security-policy",
            "script-src 'self' 'unsafe-inline'",
        )]));
        assert_eq!((inline.status, inline.observatory), (Fail, -20));
        // A nonce neutralises 'unsafe-inline'.
        let nonce = csp(&page(&[(
            "content-security-policy",
            "script-src 'nonce-abc' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'",
        )]));
        assert_eq!(nonce.status, Pass);
        let weak = csp(&page(&[("content-security-policy", "default-src 'self'")]));
        assert_eq!(weak.status, Warn);
        assert!(
            weak.why.contains("object-src") && weak.why.contains("frame-ancestors"),
            "{}",
            weak.why
        );
        assert_eq!(
            csp(&page(&[(
                "content-security-policy-report-only",
                HELMET_CSP
            )]))
            .status,
            Fail
        );
        assert_eq!(
            csp(&page(&[("content-security-policy", "script-src https:")])).status,
            Fail
        );
    }

    #[test]
    fn simple_headers() {
        assert_eq!(
            nosniff(&page(&[("x-content-type-options", "nosniff")])).status,
            Pass
        );
        assert_eq!(nosniff(&page(&[])).status, Fail);
        assert_eq!(
            framing(&page(&[("x-frame-options", "SAMEORIGIN")])).status,
            Pass
        );
        assert_eq!(
            framing(&page(&[(
                "content-security-policy",
                "frame-ancestors 'none'"
            )]))
            .status,
            Pass
        );
        assert_eq!(
            framing(&page(&[("content-security-policy", "frame-ancestors *")])).status,
            Fail
        );
        assert_eq!(
            framing(&page(&[("x-frame-options", "ALLOW-FROM x")])).status,
            Fail
        );
        assert_eq!(framing(&page(&[])).status, Fail);
        assert_eq!(
            referrer_policy(&page(&[("referrer-policy", "no-referrer")])).status,
            Pass
        );
        assert_eq!(
            referrer_policy(&page(&[("referrer-policy", "unsafe-url")])).status,
            Fail
        );
        assert_eq!(referrer_policy(&page(&[])).status, Warn);
        assert_eq!(
            permissions_policy(&page(&[("permissions-policy", "camera=()")])).status,
            Pass
        );
        assert_eq!(permissions_policy(&page(&[])).status, Warn);
        let both = [
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
        ];
        assert_eq!(cross_origin_isolation(&page(&both)).status, Pass);
        assert_eq!(cross_origin_isolation(&page(&both[..1])).status, Warn);
    }

    #[test]
    fn server_banners() {
        assert_eq!(
            server_banner(&page(&[("server", "nginx/1.22.1")])).status,
            Fail
        );
        assert_eq!(
            server_banner(&page(&[("x-powered-by", "Express")])).status,
            Fail
        );
        assert_eq!(server_banner(&page(&[("server", "nginx")])).status, Warn);
        assert_eq!(server_banner(&page(&[])).status, Pass);
    }

    #[test]
    fn hsts_only_over_https() {
        assert_eq!(hsts(&page(&[]), false).status, Skip);
        assert_eq!(hsts(&page(&[]), true).status, Fail);
        let good = [(
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        )];
        assert_eq!(hsts(&page(&good), true).status, Pass);
        assert_eq!(
            hsts(&page(&[("strict-transport-security", "max-age=300")]), true).status,
            Warn
        );
        assert_eq!(
            hsts(
                &page(&[("strict-transport-security", "includeSubDomains")]),
                true
            )
            .status,
            Fail
        );
    }

    #[test]
    fn cookie_flags() {
        assert_eq!(cookies(&[&page(&[])], true).status, Skip);
        let good = page(&[(
            "set-cookie",
            "sid=1; Path=/; Secure; HttpOnly; SameSite=Lax",
        )]);
        assert_eq!(cookies(&[&good], true).status, Pass);
        let bare = page(&[("set-cookie", "sid=1; Path=/")]);
        assert_eq!(cookies(&[&bare], true).status, Fail);
        let plain = cookies(&[&bare], false);
        assert_eq!(plain.status, Warn);
        assert!(plain.why.contains("no HttpOnly: sid"), "{}", plain.why);
    }

    #[test]
    fn cors() {
        let f = "https://evil.example";
        assert_eq!(cors_origin(&page(&[]), f).status, Pass);
        assert_eq!(
            cors_origin(&page(&[("access-control-allow-origin", f)]), f).status,
            Fail
        );
        assert_eq!(
            cors_origin(&page(&[("access-control-allow-origin", "*")]), f).status,
            Fail
        );
        assert_eq!(
            cors_origin(
                &page(&[("access-control-allow-origin", "https://app.example")]),
                f
            )
            .status,
            Pass
        );
        assert_eq!(
            cors_preflight(&Exchange::with(204, &[], ""), f).status,
            Pass
        );
        assert_eq!(
            cors_preflight(
                &Exchange::with(204, &[("access-control-allow-origin", "*")], ""),
                f
            )
            .status,
            Fail
        );
        assert_eq!(
            cors_preflight(&Exchange::with(500, &[], ""), f).status,
            Fail
        );
    }

    #[test]
    fn error_pages() {
        let problem = Exchange::with(
            404,
            &[("content-type", "application/problem+json")],
            r#"{"type":"about:blank","title":"Not Found","status":404}"#,
        );
        assert_eq!(not_found(&problem).status, Pass);
        assert_eq!(problem_json(&problem).status, Pass);
        let nginx = Exchange::with(
            404,
            &[("content-type", "text/html")],
            "<hr><center>nginx/1.22.1</center>",
        );
        assert_eq!(not_found(&nginx).status, Fail);
        assert_eq!(problem_json(&nginx).status, Skip);
        let claims = Exchange::with(404, &[("content-type", "application/problem+json")], "{}");
        assert_eq!(problem_json(&claims).status, Warn);
        let trace = Exchange::with(404, &[], "thread 'main' panicked at src/main.rs:3:5");
        assert!(not_found(&trace).why.contains("panic"));
        assert_eq!(not_found(&Exchange::with(200, &[], "")).status, Warn);
        assert_eq!(
            method_not_allowed(&Exchange::with(405, &[("allow", "GET")], "")).status,
            Pass
        );
        assert_eq!(
            method_not_allowed(&Exchange::with(405, &[], "")).status,
            Warn
        );
        assert_eq!(
            method_not_allowed(&Exchange::with(500, &[], "")).status,
            Fail
        );
    }

    #[test]
    fn ids_and_traces() {
        let echoed = page(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&echoed, "x-request-id", "abc").status, Pass);
        assert_eq!(request_id(&echoed, "x-request-id", "other").status, Warn);
        assert_eq!(request_id(&page(&[]), "x-request-id", "abc").status, Fail);
        let t = "0af7651916cd43dd8448eb211c80319c";
        let cont = page(&[("traceresponse", &format!("00-{t}-b7ad6b7169203331-01"))]);
        assert_eq!(trace_context(&cont, t).status, Pass);
        assert_eq!(
            trace_context(&cont, "1af7651916cd43dd8448eb211c80319c").status,
            Fail
        );
        assert_eq!(trace_context(&page(&[]), t).status, Warn);
    }

    #[test]
    fn probes_and_health() {
        let nf = Exchange::with(404, &[], "");
        let mut found = Exchange::with(200, &[], "ok");
        found.path = "/livez".into();
        let p = Probe {
            found: Some(found),
            tried: vec!["/livez".into()],
        };
        assert_eq!(probe("liveness", &p, &nf).status, Pass);
        let none = Probe {
            found: None,
            tried: vec!["/livez".into()],
        };
        assert_eq!(probe("liveness", &none, &nf).status, Fail);
        assert_eq!(probe("startup", &none, &nf).status, Warn);
        // A server that answers 200 everywhere has no meaningful probes.
        assert_eq!(
            probe("liveness", &p, &Exchange::with(200, &[], "")).status,
            Fail
        );
        let detailed = Exchange::with(200, &[], r#"{"status":"pass","version":"1","checks":{}}"#);
        assert_eq!(health_details(&detailed, false).status, Fail);
        assert_eq!(health_details(&detailed, true).status, Pass);
        assert_eq!(
            health_details(&Exchange::with(200, &[], r#"{"status":"pass"}"#), false).status,
            Pass
        );
        assert_eq!(
            health_details(&Exchange::with(404, &[], ""), false).status,
            Pass
        );
    }

    const METRICS: &str = "# TYPE http_server_request_duration_seconds histogram\nhttp_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/\",le=\"+Inf\"} 1\nup 1\n";

    #[test]
    fn metrics_checks() {
        let m = Exchange::with(200, &[], METRICS);
        assert_eq!(metrics_exposure(&m, false).status, Warn);
        assert_eq!(
            metrics_exposure(&Exchange::with(404, &[], ""), true).status,
            Pass
        );
        assert_eq!(metrics_format(&m).status, Pass);
        assert_eq!(
            metrics_format(&Exchange::with(200, &[], "<html>")).status,
            Fail
        );
        assert_eq!(metrics_format(&Exchange::with(404, &[], "")).status, Fail);
        assert_eq!(metrics_semconv(&m).status, Pass);
        assert_eq!(
            metrics_semconv(&Exchange::with(200, &[], "http_requests_total 3\n")).status,
            Warn
        );
        assert_eq!(
            metrics_semconv(&Exchange::with(200, &[], "up 1\n")).status,
            Fail
        );
        assert_eq!(
            metrics_cardinality(&m, 10, "/opskit-audit-x/does-not-exist").status,
            Pass
        );
        assert_eq!(
            metrics_cardinality(&m, 1, "/opskit-audit-x/does-not-exist").status,
            Warn
        );
        let raw = Exchange::with(
            200,
            &[],
            "hits{path=\"/opskit-audit-x/does-not-exist\"} 1\n",
        );
        assert_eq!(
            metrics_cardinality(&raw, 10, "/opskit-audit-x/does-not-exist").status,
            Fail
        );
    }

    #[test]
    fn rate_limits() {
        let rl = page(&[
            ("ratelimit", "\"default\";r=9;t=60"),
            ("ratelimit-policy", "\"default\";q=10;w=60"),
        ]);
        assert_eq!(ratelimit_headers(&rl).status, Pass);
        assert_eq!(rl.policy_quota(), Some(10));
        assert_eq!(
            ratelimit_headers(&page(&[("x-ratelimit-limit", "10")])).status,
            Warn
        );
        assert_eq!(ratelimit_headers(&page(&[])).status, Fail);
        let ok = Exchange::with(200, &[], "");
        let limited = Exchange::with(429, &[("retry-after", "60")], "");
        assert_eq!(burst(&[ok.clone(), limited], true).status, Pass);
        assert_eq!(
            burst(&[ok.clone(), Exchange::with(429, &[], "")], true).status,
            Warn
        );
        assert_eq!(burst(std::slice::from_ref(&ok), true).status, Fail);
        assert_eq!(burst(&[], false).status, Skip);
        assert_eq!(
            body_limit(Some(&Exchange::with(413, &[], "")), 8 << 20, true).status,
            Pass
        );
        assert_eq!(body_limit(Some(&ok), 8 << 20, true).status, Fail);
        assert_eq!(
            body_limit(Some(&Exchange::with(405, &[], "")), 8 << 20, true).status,
            Warn
        );
        assert_eq!(body_limit(None, 8 << 20, false).status, Skip);
    }

    #[test]
    fn timing() {
        let fast = |ms| {
            let mut e = Exchange::with(200, &[], "ok");
            e.elapsed = std::time::Duration::from_millis(ms);
            e
        };
        assert_eq!(probe_timing(&[fast(3), fast(5)]).status, Pass);
        assert_eq!(probe_timing(&[fast(3), fast(400)]).status, Warn);
        assert_eq!(probe_timing(&[fast(3), fast(1500)]).status, Fail);
        assert_eq!(probe_timing(&[Exchange::with(503, &[], "")]).status, Fail);
        assert_eq!(probe_timing(&[]).status, Skip);
    }

    #[test]
    fn every_check_is_documented() {
        let doc = include_str!("../../../docs/audit.md");
        let findings = run_all(&Observations::default());
        assert_eq!(findings.len(), 28);
        for f in findings {
            assert!(
                doc.contains(&format!("| `{}` |", f.id)),
                "{} is not in docs/audit.md",
                f.id
            );
        }
    }
}
