//! The `reqwest-middleware` middleware (feature `reqwest`): [`TraceMiddleware`].

use super::{Call, Target};

/// A [`reqwest_middleware::Middleware`] giving every call the trace
/// context, a CLIENT span inside sampled requests and a
/// `http.client.request.duration` observation (see the [module
/// docs](super)).
///
/// ```
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(opskit::client::TraceMiddleware)
///     .build();
/// # let _ = client;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceMiddleware;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for TraceMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = req.url();
        let mut call = Call::start(Target {
            method: req.method().as_str(),
            scheme: url.scheme(),
            host: url.host_str().unwrap_or(""),
            port: url.port(),
            url,
        });
        call.inject(req.headers_mut());
        let result = next.run(req, extensions).await;
        match &result {
            Ok(response) => call.finish(Some(response.status().as_u16()), None),
            Err(reqwest_middleware::Error::Reqwest(e)) => {
                call.finish(None, Some((error_class(e), &e.to_string())));
            }
            Err(e) => call.finish(None, Some(("_OTHER", &e.to_string()))),
        }
        result
    }
}

/// `error.type` of a `reqwest` error: `timeout`, `connect`, or the class of
/// the I/O error it wraps.
fn error_class(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        super::error_class(e)
    }
}
