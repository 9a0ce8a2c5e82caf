//! The outbound-call variants of `opskit-callgrind` and `opskit-allocs`
//! (`client-*`): `N` requests through opskit's layer (request id, log span,
//! trace context, server spans into a dropping exporter: `opskit-core+spans`,
//! or `+unsampled`), whose handler makes one call to a loopback HTTP/1.1
//! responder (a fixed answer, kept alive) with:
//! - `client-plain`: a plain `reqwest::Client`;
//! - `client-middleware`: `reqwest-middleware` with no middleware (the
//!   chain's own cost, which any middleware pays);
//! - `client-opskit`: `reqwest-middleware` with `opskit::client::TraceMiddleware`
//!   (a CLIENT span per call into the same dropping sink, the headers, the
//!   histogram);
//! - `client-reqwest-tracing`: `reqwest-middleware` with `reqwest-tracing`'s
//!   `TracingMiddleware`, its span exported by `tracing-opentelemetry` into a
//!   dropping batch processor (it injects no headers: its propagation
//!   features stop at opentelemetry 0.32, one below the workspace's).
//!
//! `+unsampled` on any of them: the requests are not sampled (ratio 0).
//! Every variant runs the same subscriber (opskit's `SpanLayer`, and
//! `tracing-opentelemetry` for `reqwest_tracing`'s target only), so the
//! difference between two variants is the client's.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// The downstream's answer to every request.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

/// A loopback HTTP/1.1 responder: every request (headers up to the blank
/// line, no body) gets [`ANSWER`] on the same connection.
async fn downstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut pending = Vec::new();
                loop {
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if socket.write_all(ANSWER).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The client a variant calls with.
enum Client {
    Plain(reqwest::Client),
    Chain(reqwest_middleware::ClientWithMiddleware),
}

impl Client {
    async fn get(&self, url: &str) -> u16 {
        let response = match self {
            Self::Plain(c) => c.get(url).send().await.expect("answer"),
            Self::Chain(c) => c.get(url).send().await.expect("answer"),
        };
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        status
    }
}

/// Runs `n` requests of the `client-*` `variant` (see the module docs).
pub fn run(variant: &str, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sink = opskit_benches::dropping_span_sink();
    let parts: Vec<&str> = variant.split('+').collect();
    let unsampled = parts.contains(&"unsampled");
    let sampler = opskit::trace::Sampler {
        parent_based: !unsampled,
        ratio: if unsampled { 0.0 } else { 1.0 },
    };
    let spans = opskit::otel::SpanLayer::new(&sink, opskit::otel::SpanFilter::default(), sampler);
    let peer = opskit_benches::peer_otel_layer(!unsampled).with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_target("reqwest_tracing", tracing::Level::TRACE),
    );
    let subscriber = tracing_subscriber::registry().with(spans).with(peer);
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    let reqwest = reqwest::Client::new();
    let client = match parts[0] {
        "client-plain" => Client::Plain(reqwest),
        "client-middleware" => {
            Client::Chain(reqwest_middleware::ClientBuilder::new(reqwest).build())
        }
        "client-opskit" => Client::Chain(
            reqwest_middleware::ClientBuilder::new(reqwest)
                .with(opskit::client::TraceMiddleware)
                .build(),
        ),
        "client-reqwest-tracing" => Client::Chain(
            reqwest_middleware::ClientBuilder::new(reqwest)
                .with(reqwest_tracing::TracingMiddleware::default())
                .build(),
        ),
        other => panic!("unknown variant {other}"),
    };
    let addr = rt.block_on(downstream());
    let url: Arc<str> = format!("http://{addr}/downstream").into();
    let client = Arc::new(client);
    let router = axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(move || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let status = client.get(&url).await;
                axum::http::StatusCode::from_u16(status).expect("a status")
            }
        }),
    );
    let core = if unsampled {
        "opskit-core+unsampled"
    } else {
        "opskit-core+spans"
    };
    let (rec, security, limiter) = opskit_benches::opskit_parts(core, &sink);
    let app = router
        .layer(opskit::layer::OpsLayer::with_rate_limiter(
            rec, security, limiter,
        ))
        .with_state(());
    let mut ok = 0;
    for _ in 0..n {
        let res = rt
            .block_on(app.clone().oneshot(opskit_benches::request()))
            .expect("response");
        ok += usize::from(res.status().is_success());
    }
    assert_eq!(ok, n, "every request succeeds");
    let _ = sink.shutdown();
    let exported = opskit_benches::EXPORTED.load(std::sync::atomic::Ordering::Relaxed);
    // reqwest-tracing's spans go through the SDK's own batch processor
    // (also counted, flushed on its own schedule): at least the server spans.
    match (unsampled, parts[0]) {
        (true, _) => assert_eq!(exported, 0, "nothing exported"),
        (false, "client-opskit") => assert_eq!(exported, 2 * n, "every span exported"),
        (false, "client-reqwest-tracing") => assert!(exported >= n, "{exported}"),
        (false, _) => assert_eq!(exported, n, "every span exported"),
    }
}
