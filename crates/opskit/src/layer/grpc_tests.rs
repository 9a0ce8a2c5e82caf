//! gRPC calls through the tower layer: the outcome is the gRPC status (from
//! the response headers or the trailers at the end of the body), opskit's
//! own answers are Trailers-Only, `grpc-timeout` lowers the deadline.

use super::OpsLayer;
use crate::recorder::Recorder;
use crate::security::{SecurityPolicy, SecuritySettings};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::time::Duration;
use tower::{Layer, ServiceExt};

type Stream =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A gRPC response as tonic sends it: a message, then the status in the
/// trailers.
fn streamed(code: &str, message: &str) -> Response<Stream> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", code.parse().expect("a status"));
    if !message.is_empty() {
        trailers.insert("grpc-message", message.parse().expect("a message"));
    }
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02\x08\x01"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut res = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    res
}

fn call(path: &str) -> Request<String> {
    Request::post(path)
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers")
        .body(String::new())
        .expect("a request")
}

fn layer(settings: SecuritySettings) -> OpsLayer {
    let recorder = Recorder::default()
        .with_metrics(Some(crate::metrics::HttpMetrics::new(&Default::default())));
    OpsLayer::new(recorder, SecurityPolicy::new(&settings))
}

/// Runs `f` on a current-thread runtime with a Prometheus recorder of its own.
fn with_metrics(f: impl std::future::Future<Output = ()>) -> String {
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle: PrometheusHandle = prometheus.handle();
    metrics::with_local_recorder(&prometheus, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime")
            .block_on(f)
    });
    handle.render()
}

fn series(text: &str, labels: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("rpc_server_call_duration_seconds_count{") && l.contains(labels))
}

#[test]
fn a_status_in_the_trailers_is_the_outcome_once_the_body_ends() {
    let text = with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                Ok::<_, Infallible>(streamed("13", "database%20down"))
            },
        ));
        let res = svc.oneshot(call("/users.v1.Users/Fail")).await.unwrap();
        assert_eq!(res.status(), 200);
        // Not browser responses: no security headers; the request id stays.
        assert!(!res.headers().contains_key("content-security-policy"));
        assert!(!res.headers().contains_key("x-frame-options"));
        assert!(res.headers().contains_key("x-request-id"));
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "13");
    });
    assert!(
        series(
            &text,
            r#"rpc_method="users.v1.Users/Fail",rpc_response_status_code="INTERNAL",error_type="INTERNAL"} 1"#
        ),
        "{text}"
    );
    // Counted once: as an RPC, not as an HTTP request.
    assert!(
        !text.contains("http_server_request_duration_seconds_count"),
        "{text}"
    );
}

#[test]
fn a_call_is_not_recorded_before_its_trailers() {
    let text = with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                Ok::<_, Infallible>(streamed("0", ""))
            },
        ));
        let res = svc.oneshot(call("/users.v1.Users/GetUser")).await.unwrap();
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        // Dropped after the headers and a message but before the status:
        // the client cancelled.
        drop(body);
    });
    assert!(
        series(
            &text,
            r#"rpc_method="users.v1.Users/GetUser",rpc_response_status_code="CANCELLED"} 1"#
        ),
        "{text}"
    );
    assert!(!text.contains(r#"rpc_response_status_code="OK""#), "{text}");
}

#[test]
fn a_trailers_only_answer_is_recorded_at_once() {
    let text = with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                let mut res = Response::new(Full::<Bytes>::default());
                res.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/grpc"),
                );
                res.headers_mut()
                    .insert("grpc-status", "5".parse().unwrap());
                Ok::<_, Infallible>(res)
            },
        ));
        let res = svc.oneshot(call("/users.v1.Users/GetUser")).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "5");
        assert!(res.body().is_end_stream());
    });
    assert!(
        series(
            &text,
            r#"rpc_method="users.v1.Users/GetUser",rpc_response_status_code="NOT_FOUND"} 1"#
        ),
        "{text}"
    );
}

#[test]
fn an_unknown_method_folds_into_other() {
    let text = with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                let mut res = Response::new(Full::<Bytes>::default());
                res.headers_mut()
                    .insert("grpc-status", "12".parse().unwrap());
                Ok::<_, Infallible>(res)
            },
        ));
        for n in 0..3 {
            let path = format!("/users.v1.Users/Nope{n}");
            svc.clone().oneshot(call(&path)).await.unwrap();
        }
    });
    assert!(
        series(
            &text,
            r#"rpc_method="_OTHER",rpc_response_status_code="UNIMPLEMENTED",error_type="UNIMPLEMENTED"} 3"#
        ),
        "{text}"
    );
}

#[test]
fn a_panic_is_answered_internal_trailers_only() {
    let text = with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                if true {
                    panic!("boom");
                }
                Ok::<_, Infallible>(streamed("0", ""))
            },
        ));
        let res = svc.oneshot(call("/users.v1.Users/Panic")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert_eq!(res.headers()["grpc-status"], "13");
        assert!(res.headers().contains_key("grpc-message"));
        assert!(!res.headers().contains_key("content-security-policy"));
        assert!(res.body().is_end_stream());
    });
    assert!(
        series(
            &text,
            r#"rpc_method="users.v1.Users/Panic",rpc_response_status_code="INTERNAL""#
        ),
        "{text}"
    );
}

#[test]
fn grpc_timeout_lowers_the_deadline_to_deadline_exceeded() {
    let text = with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, Infallible>(streamed("0", ""))
            },
        ));
        let mut req = call("/users.v1.Users/Sleep");
        req.headers_mut()
            .insert("grpc-timeout", "100m".parse().unwrap());
        let started = tokio::time::Instant::now();
        let res = svc.oneshot(req).await.unwrap();
        // The client's 100 ms, not the configured 30 s.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(res.headers()["grpc-status"], "4");
    });
    assert!(
        series(
            &text,
            r#"rpc_method="users.v1.Users/Sleep",rpc_response_status_code="DEADLINE_EXCEEDED""#
        ),
        "{text}"
    );
}

/// A client cancels its call when its own deadline passes, a moment before
/// the server's timer for the same deadline fires (the client's clock
/// started first): cancelled in the deadline's last tenth, the call is
/// DEADLINE_EXCEEDED; cancelled well before it, CANCELLED. Real time (the
/// request's start is a `std` instant); the bounds are wide both ways.
#[test]
fn a_cancel_at_the_clients_deadline_is_deadline_exceeded() {
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    metrics::with_local_recorder(&prometheus, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            for (path, cancel_after) in
                [("/users.v1.Users/Late", 960), ("/users.v1.Users/Early", 20)]
            {
                let svc = layer(Default::default()).layer(tower::service_fn(
                    |_req: Request<super::RequestBody<String>>| async {
                        std::future::pending::<()>().await;
                        Ok::<_, Infallible>(streamed("0", ""))
                    },
                ));
                let mut req = call(path);
                req.headers_mut()
                    .insert("grpc-timeout", "1000m".parse().unwrap());
                // The client goes away (its future is dropped).
                let cut =
                    tokio::time::timeout(Duration::from_millis(cancel_after), svc.oneshot(req));
                if let Ok(res) = cut.await {
                    // A late cancel may lose the race to the server's own
                    // timer: then the answer itself is DEADLINE_EXCEEDED.
                    assert_eq!(res.unwrap().headers()["grpc-status"], "4", "{path}");
                }
            }
        });
    });
    let text = handle.render();
    assert!(
        series(
            &text,
            r#"rpc_method="users.v1.Users/Late",rpc_response_status_code="DEADLINE_EXCEEDED""#
        ),
        "{text}"
    );
    assert!(
        series(
            &text,
            r#"rpc_method="users.v1.Users/Early",rpc_response_status_code="CANCELLED""#
        ),
        "{text}"
    );
}

#[test]
fn grpc_timeout_never_raises_the_configured_timeout() {
    with_metrics(async {
        let settings = SecuritySettings {
            request_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        let svc = layer(settings).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, Infallible>(streamed("0", ""))
            },
        ));
        let mut req = call("/users.v1.Users/Sleep");
        req.headers_mut()
            .insert("grpc-timeout", "1H".parse().unwrap());
        let started = tokio::time::Instant::now();
        let res = svc.oneshot(req).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(res.headers()["grpc-status"], "4");
    });
}

#[test]
fn a_body_over_the_limit_is_resource_exhausted() {
    with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                Ok::<_, Infallible>(streamed("0", ""))
            },
        ));
        let mut req = call("/users.v1.Users/GetUser");
        req.headers_mut()
            .insert("content-length", "999999999".parse().unwrap());
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "8");
        assert_eq!(res.headers()["content-type"], "application/grpc");
    });
}

#[test]
fn an_http_request_keeps_its_problem_answer_and_headers() {
    with_metrics(async {
        let svc = layer(Default::default()).layer(tower::service_fn(
            |_req: Request<super::RequestBody<String>>| async {
                if true {
                    panic!("boom");
                }
                Ok::<_, Infallible>(streamed("0", ""))
            },
        ));
        let req = Request::post("/x")
            .header("content-type", "application/grpc-web")
            .body(String::new())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert!(res.headers().contains_key("content-security-policy"));
    });
}
