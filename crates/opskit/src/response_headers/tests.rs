use super::*;
use crate::trace::TraceContext;
use http::{HeaderMap, HeaderValue};

fn apply(prepared: &Prepared<HeaderMap>, headers: &mut HeaderMap, https: bool) {
    let id = RequestId::generate();
    let trace = TraceContext::from_headers(None, None);
    prepared.apply(
        headers,
        &PerResponse {
            browser: true,
            https,
            nonce: None,
            cors: &[],
            request_id: &id,
            trace: &trace.header_bytes(),
            rate: None,
        },
    );
}

#[test]
fn the_handlers_headers_merge_with_the_policy() {
    let security = SecurityPolicy::new(&crate::security::SecuritySettings::default());
    let prepared: Prepared<HeaderMap> = Prepared::new(&Recorder::default(), security, None);
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("text/html"));
    // Overridable by default: the handler's value stays.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors *"),
    );
    // Not overridable: opskit's value wins.
    h.insert("x-frame-options", HeaderValue::from_static("ALLOWALL"));
    h.insert("server", HeaderValue::from_static("leaky/1.0"));
    h.append("set-cookie", HeaderValue::from_static("a=1"));
    h.append("set-cookie", HeaderValue::from_static("b=2"));
    apply(&prepared, &mut h, false);
    assert_eq!(h["content-type"], "text/html");
    assert_eq!(h["content-security-policy"], "frame-ancestors *");
    assert_eq!(h.get_all("content-security-policy").iter().count(), 1);
    assert_eq!(h["x-frame-options"], "SAMEORIGIN");
    assert_eq!(h.get_all("x-frame-options").iter().count(), 1);
    assert!(h.get("server").is_none());
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.contains_key("x-request-id") && h.contains_key("traceresponse"));
    assert!(
        h.get("strict-transport-security").is_none(),
        "not over HTTP"
    );
    // Over HTTPS: HSTS, and opskit's CSP when the handler sets none.
    let mut h = HeaderMap::new();
    apply(&prepared, &mut h, true);
    assert!(h.contains_key("strict-transport-security"));
    assert!(h.contains_key("content-security-policy"));
}

/// With CORS on, every response varies by Origin: one `Vary` line
/// holding the handler's tokens and ours, each once; off, none is added.
#[test]
fn with_cors_on_every_response_varies_by_origin_once() {
    let on = SecurityPolicy::new(&crate::security::SecuritySettings {
        cors: crate::security::CorsSettings {
            origins: vec!["https://app.example".to_owned()],
            ..Default::default()
        },
        ..Default::default()
    });
    let off = SecurityPolicy::new(&crate::security::SecuritySettings::default());
    let id = RequestId::generate();
    let trace = TraceContext::from_headers(None, None).header_bytes();
    let preflight = [(
        "vary",
        "origin, access-control-request-method, access-control-request-headers".to_owned(),
    )];
    let run =
        |policy: &SecurityPolicy, cors: &[(&'static str, String)], theirs: &[&'static str]| {
            let prepared: Prepared<HeaderMap> =
                Prepared::new(&Recorder::default(), policy.clone(), None);
            let mut h = HeaderMap::new();
            for v in theirs {
                h.append("vary", HeaderValue::from_static(v));
            }
            prepared.apply(
                &mut h,
                &PerResponse {
                    browser: true,
                    https: false,
                    nonce: None,
                    cors,
                    request_id: &id,
                    trace: &trace,
                    rate: None,
                },
            );
            let lines: Vec<String> = h
                .get_all("vary")
                .iter()
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .collect();
            lines
        };
    assert_eq!(run(&on, &[], &[]), ["origin"]);
    assert_eq!(
        run(&on, &[], &["Accept-Encoding"]),
        ["Accept-Encoding, origin"]
    );
    assert_eq!(run(&on, &[], &["Origin"]), ["Origin"]);
    assert_eq!(
        run(&on, &[], &["accept-encoding", "ORIGIN"]),
        ["accept-encoding, ORIGIN"]
    );
    assert_eq!(run(&on, &[], &["*"]), ["*"]);
    assert_eq!(
        run(&on, &preflight, &["Origin"]),
        ["Origin, access-control-request-method, access-control-request-headers"]
    );
    assert!(run(&off, &[], &[]).is_empty());
    assert_eq!(run(&off, &[], &["Accept-Encoding"]), ["Accept-Encoding"]);
}

/// Every header opskit's security policy sets.
#[cfg(feature = "actix")]
const SECURITY_NAMES: [&str; 15] = [
    "content-security-policy",
    "content-security-policy-report-only",
    "cross-origin-embedder-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "origin-agent-cluster",
    "permissions-policy",
    "referrer-policy",
    "strict-transport-security",
    "x-content-type-options",
    "x-dns-prefetch-control",
    "x-download-options",
    "x-frame-options",
    "x-permitted-cross-domain-policies",
    "x-xss-protection",
];

/// The two ways of applying the headers — a clone of a template
/// (`http`'s map, the tower layer) and inserting in place (Actix's
/// map) — give the same response headers, for every mix of handler
/// headers, policy, scheme and rate-limit outcome.
#[cfg(feature = "actix")]
#[test]
fn the_template_and_in_place_ways_give_the_same_headers() {
    use crate::ratelimit::{LimitSettings, Quota, RequestInfo};
    use actix_web::http::header as ax;
    fn sorted<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = pairs.map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
        all.sort();
        all
    }
    let handler_sets: [&[(&str, &str)]; 10] = [
        &[],
        &[("content-type", "text/html")],
        &[
            ("content-security-policy", "frame-ancestors *"),
            ("x-frame-options", "ALLOWALL"),
            ("server", "leaky/1.0"),
            ("x-powered-by", "php"),
        ],
        &[
            ("strict-transport-security", "max-age=1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ],
        &[
            ("referrer-policy", "unsafe-url"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-opener-policy", "unsafe-none"),
        ],
        &[
            ("content-security-policy", "a"),
            ("content-security-policy", "b"),
        ],
        // The per-response names: opskit's values win.
        &[
            ("x-request-id", "theirs"),
            ("ratelimit", "theirs"),
            ("traceresponse", "theirs"),
        ],
        // Vary: merged with the handler's.
        &[("vary", "Accept-Encoding")],
        &[("vary", "accept-encoding"), ("vary", "ORIGIN")],
        &[("vary", "*")],
    ];
    let base = crate::security::SecuritySettings::default();
    let policies = [
        base.clone(),
        crate::security::SecuritySettings {
            csp_nonce: true,
            ..base.clone()
        },
        crate::security::SecuritySettings {
            overridable: vec!["referrer-policy".into(), "strict-transport-security".into()],
            ..base.clone()
        },
        crate::security::SecuritySettings {
            csp_nonce: true,
            overridable: vec![],
            ..base.clone()
        },
        crate::security::SecuritySettings {
            hsts_max_age: std::time::Duration::ZERO,
            csp: String::new(),
            ..base.clone()
        },
        crate::security::SecuritySettings {
            enabled: false,
            ..base.clone()
        },
    ];
    let none = |_: &str| None;
    let info = RequestInfo {
        method: "GET",
        path: "/x",
        client: "192.0.2.1".parse().ok(),
        header: &none,
    };
    let id = RequestId::generate();
    let trace = TraceContext::from_headers(None, None);
    let nonce = CspNonce::generate();
    let mut compared = 0;
    for legacy in [false, true] {
        let limiter = Limiter::new(LimitSettings {
            default: Some(Quota::parse("3/1m").unwrap()),
            legacy_headers: legacy,
            ..Default::default()
        });
        for settings in &policies {
            let security = SecurityPolicy::new(settings);
            let a: Prepared<HeaderMap> = Prepared::new(
                &Recorder::default(),
                security.clone(),
                Some(limiter.clone()),
            );
            let b: Prepared<ax::HeaderMap> =
                Prepared::new(&Recorder::default(), security, Some(limiter.clone()));
            // Allowed, allowed, allowed, refused (Retry-After), and none.
            let rates: Vec<_> = (0..4).map(|_| limiter.check_memory(&info)).collect();
            for rate in rates.iter().map(Option::as_ref).chain([None]) {
                for https in [false, true] {
                    for set in handler_sets {
                        let r = PerResponse {
                            browser: true,
                            https,
                            nonce: settings.csp_nonce.then_some(&nonce),
                            cors: &[("vary", "Origin".to_owned())],
                            request_id: &id,
                            trace: &trace.header_bytes(),
                            rate,
                        };
                        let mut ha = HeaderMap::new();
                        let mut hb = ax::HeaderMap::new();
                        for (n, v) in set {
                            ha.append(*n, HeaderValue::from_static(v));
                            hb.append(
                                ax::HeaderName::from_static(n),
                                ax::HeaderValue::from_static(v),
                            );
                        }
                        a.apply(&mut ha, &r);
                        b.apply(&mut hb, &r);
                        let mut ha = sorted(ha.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
                        let mut hb = sorted(hb.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
                        // The legacy reset is a Unix time read from the clock
                        // by each `apply`: a second may tick between the two.
                        let reset = |h: &mut Vec<(String, Vec<u8>)>| -> Option<u64> {
                            let i = h.iter().position(|(n, _)| n == "x-ratelimit-reset")?;
                            std::str::from_utf8(&h.remove(i).1).ok()?.parse().ok()
                        };
                        let (ra, rb) = (reset(&mut ha), reset(&mut hb));
                        assert_eq!(ra.is_some(), legacy && rate.is_some(), "{ha:?}");
                        assert!(
                            ra.zip(rb).is_none_or(|(a, b)| a.abs_diff(b) <= 1),
                            "{ra:?} {rb:?}"
                        );
                        assert_eq!(ra.is_some(), rb.is_some());
                        assert_eq!(ha, hb, "{settings:?} https={https} {set:?} {rate:?}");
                        assert!(ha.iter().all(|(_, v)| !v.is_empty()), "{ha:?}");
                        let ids: Vec<_> = ha.iter().filter(|(n, _)| n == "x-request-id").collect();
                        assert_eq!(ids, [&("x-request-id".to_owned(), id.to_bytes().to_vec())]);
                        let limits = ha.iter().filter(|(n, _)| n == "ratelimit").count();
                        let theirs = set.iter().any(|(n, _)| *n == "ratelimit");
                        assert_eq!(limits, usize::from(rate.is_some() || theirs), "{ha:?}");
                        // Agreeing is not enough: what is turned off is absent.
                        let values = |name: &str| -> Vec<Vec<u8>> {
                            ha.iter()
                                .filter(|(n, _)| n == name)
                                .map(|(_, v)| v.clone())
                                .collect()
                        };
                        let handlers = |name: &str| -> Vec<Vec<u8>> {
                            let mut v: Vec<Vec<u8>> = set
                                .iter()
                                .filter(|(n, _)| *n == name)
                                .map(|(_, v)| v.as_bytes().to_vec())
                                .collect();
                            v.sort();
                            v
                        };
                        if !settings.enabled {
                            // opskit adds none and changes none: only the
                            // handler's. `Server` and `X-Powered-By` still go.
                            for name in SECURITY_NAMES {
                                assert_eq!(values(name), handlers(name), "{name}: {ha:?}");
                            }
                        }
                        for name in crate::security::REMOVED_HEADERS {
                            assert!(values(name).is_empty(), "{name}: {ha:?}");
                        }
                        if settings.hsts_max_age.is_zero() {
                            // Not even over HTTPS, and a handler's is removed too.
                            assert!(values("strict-transport-security").is_empty(), "{ha:?}");
                        }
                        if settings.enabled && settings.csp.is_empty() {
                            // No policy of opskit's: only the handler's own.
                            assert_eq!(
                                values("content-security-policy"),
                                handlers("content-security-policy"),
                                "{ha:?}"
                            );
                        }
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 2 * 6 * 5 * 2 * 10);
}
