use super::*;

#[test]
fn methods_and_errors_are_bounded() {
    assert_eq!(method_name(method_code("PATCH")), "PATCH");
    assert_eq!(method_name(method_code("BREW")), "_OTHER");
    assert_eq!(status_text(503), "503");
    assert_eq!(status_text(599), "5xx");
}

#[cfg(feature = "prometheus")]
#[test]
fn series_are_capped() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let finish = |m: &HttpMetrics, status: u16| {
        m.finish(&Request {
            status: Some(status),
            ..Request::new("GET")
        });
    };
    metrics::with_local_recorder(&recorder, || {
        let m = HttpMetrics::new(&MetricsSettings {
            max_series: 10,
            ..Default::default()
        });
        // 60 label sets: the first 10 are kept, the other 50 overflow.
        for status in 200..260 {
            finish(&m, status);
        }
        assert_eq!(m.series(), 10);
        // A kept label set again: found, not added, not overflowing.
        finish(&m, 200);
        // An overflowed one again: still the overflow series.
        finish(&m, 259);
        assert_eq!(m.series(), 10);
    });
    let text = handle.render();
    let counts: Vec<(&str, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("http_server_request_duration_seconds_count{"))
        .filter_map(|l| {
            let (labels, n) = l.rsplit_once(' ')?;
            Some((labels, n.parse().ok()?))
        })
        .collect();
    assert_eq!(counts.len(), 11, "10 kept and the overflow series:\n{text}");
    let overflow: Vec<_> = counts
        .iter()
        .filter(|(labels, _)| labels.contains(r#"otel_metric_overflow="true""#))
        .collect();
    assert_eq!(overflow.len(), 1, "{text}");
    assert_eq!(overflow[0].1, 51.0, "{text}");
    assert!(
        !overflow[0].0.contains("http_response_status_code"),
        "the overflow series has no other labels: {text}"
    );
    let kept: f64 = counts.iter().map(|(_, n)| n).sum::<f64>() - overflow[0].1;
    assert_eq!(kept, 11.0, "{text}");
    assert!(
        text.contains(r#"http_response_status_code="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_response_status_code="209""#),
        "{text}"
    );
    assert!(
        !text.contains(r#"http_response_status_code="210""#),
        "{text}"
    );
    assert!(text.contains(&format!("\n{OVERFLOW} 51\n")), "{text}");
}

/// A declared label names the series by its value, up to its cap (then
/// `_OTHER`); an undeclared field never does; a request that set nothing
/// keeps the series it had without declarations.
#[cfg(feature = "prometheus")]
#[test]
fn declared_labels_name_series_and_fold_past_the_cap() {
    use crate::request::Enrichment;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let enriched = |tenant: &str| Enrichment {
        fields: vec![
            ("tenant".to_owned(), tenant.to_owned()),
            ("user.id".to_owned(), "7".to_owned()),
        ],
        route: None,
    };
    metrics::with_local_recorder(&recorder, || {
        let m = HttpMetrics::new(&MetricsSettings {
            labels: vec![crate::metrics::MetricLabel::new("tenant").cap(2)],
            ..Default::default()
        });
        for tenant in ["a", "b", "c", "d", "a", "e"] {
            let e = enriched(tenant);
            m.finish(&Request {
                route: Some("/x"),
                status: Some(200),
                enrichment: Some(&e),
                ..Request::new("GET")
            });
        }
        m.finish(&Request {
            route: Some("/x"),
            status: Some(200),
            ..Request::new("GET")
        });
        // a, b, _OTHER, and the request that set nothing.
        assert_eq!(m.series(), 4);
    });
    let text = handle.render();
    let count = |tenant: Option<&str>| {
        let label = tenant.map_or(String::new(), |t| format!(",tenant=\"{t}\""));
        let series = format!(
            "http_server_request_duration_seconds_count{{http_request_method=\"GET\",url_scheme=\"http\",http_route=\"/x\",http_response_status_code=\"200\"{label}}}"
        );
        value(&text, &series)
    };
    assert_eq!(count(Some("a")), Some(2.0), "{text}");
    assert_eq!(count(Some("b")), Some(1.0), "{text}");
    assert_eq!(count(Some("_OTHER")), Some(3.0), "{text}");
    assert_eq!(count(None), Some(1.0), "{text}");
    assert!(!text.contains("user_id"), "{text}");
    assert_eq!(
        value(
            &text,
            "opskit_metrics_label_overflow_total{label=\"tenant\"}"
        ),
        Some(3.0),
        "{text}"
    );
}

#[cfg(feature = "prometheus")]
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
