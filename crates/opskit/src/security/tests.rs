use super::*;

#[test]
fn helmet_builder_round_trips() {
    assert_eq!(Csp::helmet().to_string(), DEFAULT_CSP);
    assert_eq!(
        Csp::new()
            .directive("upgrade-insecure-requests", [""; 0])
            .to_string(),
        "upgrade-insecure-requests"
    );
}

#[test]
fn nonce_goes_into_script_src() {
    let p = SecurityPolicy::new(&SecuritySettings {
        csp_nonce: true,
        ..Default::default()
    });
    let n = CspNonce::generate();
    assert_eq!(n.as_str().len(), 22);
    let (_, v) = p.csp(false, Some(&n)).unwrap();
    assert!(
        v.contains(&format!("script-src 'self' 'nonce-{}'", n.as_str())),
        "{v}"
    );
    assert!(
        v.contains("script-src-attr 'none'"),
        "only script-src itself: {v}"
    );
    assert_eq!(
        with_nonce("default-src 'self'", "x"),
        "default-src 'self';script-src 'self' 'nonce-x'"
    );
}

#[test]
fn https_detection_and_hsts() {
    let p = SecurityPolicy::new(&SecuritySettings::default());
    assert!(p.is_https(Some(b"HTTPS"), None));
    assert!(p.is_https(None, Some(b"for=1.2.3.4;proto=https")));
    assert!(!p.is_https(Some(b"http"), None));
    assert_eq!(p.hsts(true), Some("max-age=31536000; includeSubDomains"));
    assert_eq!(p.hsts(false), None);
}

#[test]
fn frame_deny_and_report_only() {
    let p = SecurityPolicy::new(&SecuritySettings {
        frame_deny: true,
        csp_report_only: true,
        csp_report_uri: Some("/csp-reports".to_owned()),
        ..Default::default()
    });
    let (name, v) = p.csp(false, None).unwrap();
    assert_eq!(name, "content-security-policy-report-only");
    assert!(v.contains("frame-ancestors 'none'") && v.contains("report-uri /csp-reports"));
    assert!(p
        .fixed_headers()
        .contains(&("x-frame-options", "DENY".to_owned())));
}

#[test]
fn body_limit_and_cors() {
    let p = SecurityPolicy::new(&SecuritySettings {
        body_limit: 10,
        cors: CorsSettings {
            origins: vec!["https://app.example".to_owned()],
            ..Default::default()
        },
        ..Default::default()
    });
    assert!(p.check_body(Some(11)).is_some());
    assert!(p.check_body(Some(10)).is_none());
    assert!(p.check_body(None).is_none());
    let pre = p.cors("OPTIONS", Some(b"https://app.example"), Some(b"PUT"));
    let CorsDecision::Preflight(h) = pre else {
        panic!("{pre:?}")
    };
    assert!(h.contains(&(
        "access-control-allow-origin",
        "https://app.example".to_owned()
    )));
    let denied = p.cors("OPTIONS", Some(b"https://evil.example"), Some(b"PUT"));
    let CorsDecision::Preflight(h) = denied else {
        panic!()
    };
    assert!(!h.iter().any(|(n, _)| *n == "access-control-allow-origin"));
    assert_eq!(
        p.cors("GET", Some(b"https://evil.example"), None),
        CorsDecision::None
    );
    assert!(matches!(
        p.cors("GET", Some(b"https://app.example"), None),
        CorsDecision::Actual(_)
    ));
    assert_eq!(p.cors("GET", None, None), CorsDecision::None);
}

#[test]
fn documents_are_html_xhtml_svg_and_xml_whatever_the_parameters() {
    use crate::security::is_document;
    for ct in [
        "text/html",
        "text/html; charset=utf-8",
        "TEXT/HTML;charset=UTF-8",
        " text/html ",
        "application/xhtml+xml",
        "image/svg+xml",
        "application/xml",
        "text/xml; charset=utf-8",
    ] {
        assert!(is_document(ct.as_bytes()), "{ct}");
    }
    for ct in [
        "application/json",
        "application/problem+json",
        "text/plain",
        "text/htmlx",
        "text/html-ish",
        "",
        "application/grpc",
    ] {
        assert!(!is_document(ct.as_bytes()), "{ct}");
    }
}
