use super::*;
use std::sync::{Arc, Mutex};
use tower::{Layer, ServiceExt};

/// What the fake downstream saw: the `traceparent` of each call, by path.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A body-less GET of `url`.
fn get(url: &str) -> http::Request<()> {
    http::Request::get(url).body(()).unwrap()
}

/// A tower "HTTP client" answering by path: `/ok` 200, `/fail` 503,
/// `/refused` a connection-refused I/O error.
fn downstream(
    seen: Seen,
) -> impl tower_service::Service<
    http::Request<()>,
    Response = http::Response<()>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |req: http::Request<()>| {
        let tp = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.lock().unwrap().push((req.uri().path().to_owned(), tp));
        let path = req.uri().path().to_owned();
        async move {
            match path.as_str() {
                "/refused" => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                "/fail" => Ok(http::Response::builder().status(503).body(()).unwrap()),
                _ => Ok(http::Response::new(())),
            }
        }
    })
}

/// Without an exporter (this test runs in a process of its own under
/// nextest, where nothing starts the trace pipeline): the layer carries the
/// request's context on unchanged, and measures every call.
#[test]
#[cfg(feature = "prometheus")]
fn without_spans_the_layer_propagates_and_measures() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let seen = Seen::default();
    let cx = crate::trace::TraceContext::from_headers(
        Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        let _request = crate::trace::Entered::enter(&cx);
        rt.block_on(async {
            let svc = ClientLayer.layer(downstream(seen.clone()));
            let ok = svc
                .clone()
                .oneshot(get("http://users.internal:8080/ok"))
                .await;
            assert_eq!(ok.unwrap().status(), 200);
            let fail = svc
                .clone()
                .oneshot(get("http://users.internal:8080/fail"))
                .await;
            assert_eq!(fail.unwrap().status(), 503);
            let refused = svc.oneshot(get("http://users.internal:8080/refused")).await;
            assert!(refused.is_err());
        });
    });
    let seen = seen.lock().unwrap();
    for (path, tp) in seen.iter() {
        assert_eq!(tp.as_deref(), Some(cx.traceparent().as_str()), "{path}");
    }
    let text = handle.render();
    for series in [
        r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="users.internal",server_port="8080",http_response_status_code="200"} 1"#,
        r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="users.internal",server_port="8080",http_response_status_code="503",error_type="503"} 1"#,
        r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="users.internal",server_port="8080",error_type="connect"} 1"#,
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
}

#[cfg(otlp)]
mod spans {
    use super::*;
    use crate::otel::testing::{attr, Collect};
    use opentelemetry::trace::{SpanKind, Status};
    use opentelemetry_sdk::trace::SpanData;
    use tracing_subscriber::layer::SubscriberExt;

    /// A sampled request: each call gets a CLIENT span under the
    /// enclosing exported `tracing` span (or the server span), the callee
    /// sees the CLIENT span as its parent, the attributes and the status
    /// follow the HTTP client conventions. An unsampled request: no span,
    /// its own context carried on.
    #[test]
    fn the_layer_records_client_spans_where_they_belong() {
        let collect = Collect::default();
        let sink = crate::otel::SpanSink::new(
            collect.clone(),
            crate::otel::BatchSettings::default(),
            &opentelemetry_sdk::Resource::builder_empty().build(),
        );
        let layer = crate::otel::SpanLayer::new(
            &sink,
            crate::otel::SpanFilter::default(),
            crate::trace::Sampler::default(),
        );
        let subscriber = tracing_subscriber::registry().with(layer);
        let sampled = crate::trace::TraceContext::from_headers(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None,
        );
        let unsampled = crate::trace::TraceContext::from_headers(
            Some(b"00-11111111111111111111111111111111-00f067aa0ba902b7-00"),
            None,
        );
        let seen = Seen::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let svc = ClientLayer.layer(downstream(seen.clone()));
            {
                let _request = crate::trace::Entered::enter(&sampled);
                rt.block_on(async {
                    let call = tracing::info_span!("downstream.call");
                    let ok = tracing::Instrument::instrument(
                        svc.clone()
                            .oneshot(get("http://user:pw@users.internal:8080/ok?token=s3cret")),
                        call,
                    )
                    .await;
                    assert_eq!(ok.unwrap().status(), 200);
                    let fail = svc.clone().oneshot(get("http://users.internal/fail")).await;
                    assert_eq!(fail.unwrap().status(), 503);
                    let refused = svc
                        .clone()
                        .oneshot(get("https://users.internal/refused"))
                        .await;
                    assert!(refused.is_err());
                });
            }
            let _request = crate::trace::Entered::enter(&unsampled);
            rt.block_on(async {
                let _span = tracing::info_span!("unsampled.call").entered();
                let r = svc
                    .clone()
                    .oneshot(get("http://users.internal/unsampled"))
                    .await;
                assert!(r.is_ok());
            });
        });
        sink.shutdown().unwrap();
        let spans = collect.0.lock().unwrap().clone();
        let clients: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.span_kind == SpanKind::Client)
            .collect();
        assert_eq!(clients.len(), 3, "one per sampled call: {spans:#?}");
        let by_path = |p: &str| {
            *clients
                .iter()
                .find(|s| attr(s, "url.full").is_some_and(|u| u.contains(p)))
                .unwrap_or_else(|| panic!("no span for {p}: {clients:#?}"))
        };
        let seen = seen.lock().unwrap();
        let traceparent = |p: &str| {
            seen.iter()
                .find(|(path, _)| path == p)
                .and_then(|(_, tp)| tp.clone())
                .unwrap_or_else(|| panic!("{p} not called"))
        };
        let server = opentelemetry::trace::SpanId::from(sampled.raw().1);
        let call = spans
            .iter()
            .find(|s| s.name == "downstream.call")
            .expect("downstream.call");
        assert_eq!(call.parent_span_id, server);

        let ok = by_path("/ok");
        assert_eq!(ok.name, "GET");
        assert_eq!(
            ok.parent_span_id,
            call.span_context.span_id(),
            "under the instrumented span"
        );
        assert_eq!(ok.span_context.trace_id(), call.span_context.trace_id());
        assert_eq!(
            traceparent("/ok"),
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                ok.span_context.span_id()
            ),
            "the callee's parent is the CLIENT span"
        );
        assert_eq!(attr(ok, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            attr(ok, "server.address").as_deref(),
            Some("users.internal")
        );
        assert_eq!(attr(ok, "server.port").as_deref(), Some("8080"));
        assert_eq!(
            attr(ok, "url.full").as_deref(),
            Some("http://[REDACTED]@users.internal:8080/ok?[REDACTED]")
        );
        assert_eq!(
            attr(ok, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(attr(ok, "error.type"), None);
        assert_eq!(ok.status, Status::Unset);

        let fail = by_path("/fail");
        assert_eq!(
            fail.parent_span_id, server,
            "no enclosing span: under the server span"
        );
        assert_eq!(attr(fail, "server.port").as_deref(), Some("80"));
        assert_eq!(attr(fail, "error.type").as_deref(), Some("503"));
        assert!(matches!(fail.status, Status::Error { .. }));

        let refused = by_path("/refused");
        assert_eq!(attr(refused, "server.port").as_deref(), Some("443"));
        assert_eq!(attr(refused, "error.type").as_deref(), Some("connect"));
        assert_eq!(attr(refused, "http.response.status_code"), None);
        assert!(matches!(refused.status, Status::Error { .. }));

        // Unsampled: the request's own context, no span of any kind.
        assert_eq!(traceparent("/unsampled"), unsampled.traceparent());
        assert!(!spans.iter().any(|s| s.name == "unsampled.call"));
    }
}

/// Host names are kept in place up to 62 bytes, on the heap beyond.
#[test]
fn host_names_short_and_long_are_kept_whole() {
    for host in [
        "",
        "users.internal",
        &"h".repeat(62),
        &"x".repeat(63),
        &"é".repeat(200),
    ] {
        let kept = Host::new(host);
        assert_eq!(kept.as_str(), host);
        assert_eq!(
            matches!(kept, Host::Inline { .. }),
            host.len() <= 62,
            "{}",
            host.len()
        );
    }
}
