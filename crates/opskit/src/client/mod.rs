//! Outbound HTTP calls: one framework-neutral core (`Call`, internal) behind the
//! tower layer [`ClientLayer`] (hyper-util's `Client`, tonic channels) and,
//! with feature `reqwest`, the `reqwest-middleware` middleware
//! [`TraceMiddleware`].
//!
//! For every call made while a request is handled:
//! - **propagation**: `traceparent`/`tracestate`/`baggage` go out. When the
//!   request is sampled and spans are exported, `traceparent` names the
//!   call's CLIENT span, so the callee's server span is its child;
//!   otherwise it names the request's span (or the enclosing exported
//!   `tracing` span), as [`crate::trace::inject`] does.
//! - **span** (sampled requests, spans exported): a CLIENT span named
//!   `{method}`, child of the innermost exported `tracing` span entered
//!   (an `#[instrument]`ed function making the call) or of the request's
//!   server span, with `http.request.method`, `server.address`,
//!   `server.port`, `url.full` (userinfo and query redacted, as
//!   [`crate::redact_urls`] does), `http.response.status_code` and
//!   `error.type`; status Error for transport errors and for responses
//!   from 400 on. It goes through the same queue and exporter as the
//!   server span.
//! - **metric**: `http.client.request.duration`
//!   (`http_client_request_duration_seconds`), see [`crate::metrics`].
//!
//! An unsampled call costs the propagation headers, a clock read and a
//! histogram observation: no span is built.
//!
//! ```
//! use tower::{Layer, ServiceExt};
//! # async fn demo() {
//! let svc = tower::service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::io::Error>(http::Response::new(()))
//! });
//! let client = opskit::client::ClientLayer.layer(svc);
//! let req = http::Request::get("http://users.internal/users/1").body(()).unwrap();
//! let response = client.oneshot(req).await.unwrap();
//! # let _ = response;
//! # }
//! ```

use std::time::Instant;

mod layer;
pub use self::layer::{Client, ClientFuture, ClientLayer};

#[cfg(feature = "reqwest")]
mod middleware;
#[cfg(feature = "reqwest")]
pub use self::middleware::TraceMiddleware;

/// What a call is made to.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The method as sent.
    pub(crate) method: &'a str,
    /// `http` or `https`.
    pub(crate) scheme: &'a str,
    /// The host (`server.address`).
    pub(crate) host: &'a str,
    /// The port, when the URL names one.
    pub(crate) port: Option<u16>,
    /// The URL as sent (written out and redacted only for a span).
    #[cfg_attr(not(otlp), allow(dead_code))]
    pub(crate) url: &'a dyn std::fmt::Display,
}

/// One outbound call from its start to its end: the context it carries on,
/// its CLIENT span when sampled, and its duration. Ends with
/// [`Call::finish`]; dropped unfinished (the caller gave up on the call), it
/// is recorded as failed with `error.type` `_OTHER`.
#[derive(Debug)]
pub(crate) struct Call {
    method: &'static str,
    address: Host,
    port: Option<u16>,
    started: Instant,
    /// The trace context the call carries on.
    carry: Option<crate::trace::TraceContext>,
    #[cfg(otlp)]
    span: Option<crate::otel::ClientSpan>,
    done: bool,
}

impl Call {
    /// Starts a call to `target` from the current request (or exported
    /// `tracing` span); write its headers with [`Call::inject`].
    pub(crate) fn start(target: Target<'_>) -> Self {
        let method = crate::request::known_method(target.method).unwrap_or("_OTHER");
        let port = target.port.or(match target.scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        let mut call = Self {
            method,
            address: Host::new(target.host),
            port,
            started: Instant::now(),
            carry: None,
            #[cfg(otlp)]
            span: None,
            done: false,
        };
        crate::trace::with_current(|cx| {
            match cx {
                // Unsampled: carry the request's context on, nothing more.
                Some(cx) if !cx.sampled() => call.carry = Some(cx.clone()),
                _ => {
                    #[cfg(otlp)]
                    if call.start_span(cx, target) {
                        return;
                    }
                    call.carry = cx.cloned();
                }
            }
        });
        call
    }

    /// Starts the CLIENT span when the call belongs to a sampled trace and
    /// spans are exported; `true` when it did (the call then carries the
    /// span's context).
    #[cfg(otlp)]
    fn start_span(
        &mut self,
        request: Option<&crate::trace::TraceContext>,
        target: Target<'_>,
    ) -> bool {
        use crate::otel::SpanParent;
        if !crate::otel::exporting() {
            return false;
        }
        let (trace_id, parent, state) = match (crate::otel::current_span_parent(), request) {
            (SpanParent::Span(t, p, s), _) => (t, p, s),
            (SpanParent::Unsampled, _) | (SpanParent::None, None) => return false,
            (SpanParent::None, Some(cx)) => {
                let (t, p, _) = cx.raw();
                let state = cx
                    .tracestate()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default();
                (t, p, state)
            }
        };
        let start = crate::otel::ClientStart {
            method: self.method,
            method_original: target.method,
            address: target.host,
            port: self.port,
            url: redacted(target.url.to_string()),
        };
        let Some(span) = crate::otel::ClientSpan::start(trace_id, parent, state, start) else {
            return false;
        };
        self.carry = Some(match request {
            Some(cx) => cx.child(span.span_id()),
            None => crate::trace::TraceContext::background(trace_id, span.span_id(), None),
        });
        self.span = Some(span);
        true
    }

    /// Writes `traceparent`/`tracestate`/`baggage` into the call's headers.
    pub(crate) fn inject(&self, headers: &mut http::HeaderMap) {
        if let Some(cx) = &self.carry {
            crate::trace::inject_context(cx, headers);
        }
    }

    /// Ends the call with its response status, or with its transport
    /// error's class (`connect`, `timeout`, `_OTHER`) and message.
    pub(crate) fn finish(&mut self, status: Option<u16>, error: Option<(&'static str, &str)>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        crate::metrics::record_client(&crate::metrics::ClientCall {
            method: self.method,
            address: self.address.as_str(),
            port: self.port,
            status,
            error: error.map(|e| e.0),
            duration: self.started.elapsed(),
        });
        #[cfg(otlp)]
        if let Some(span) = self.span.take() {
            span.finish(status, error);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            self.finish(
                None,
                Some(("_OTHER", "the call was dropped before it finished")),
            );
        }
    }
}

/// `url` with its credentials and query redacted, copied only when
/// something was.
#[cfg(otlp)]
fn redacted(url: String) -> String {
    let hidden = match crate::redact_urls(&url) {
        std::borrow::Cow::Owned(hidden) => Some(hidden),
        std::borrow::Cow::Borrowed(_) => None,
    };
    hidden.unwrap_or(url)
}

/// A host name kept until the call ends (for the metric), in place when it
/// is short: no allocation per call for the usual names.
#[derive(Debug)]
enum Host {
    Inline { len: u8, bytes: [u8; 62] },
    Heap(Box<str>),
}

impl Host {
    fn new(host: &str) -> Self {
        match u8::try_from(host.len()) {
            Ok(len) if host.len() <= 62 => {
                let mut bytes = [0; 62];
                bytes[..host.len()].copy_from_slice(host.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(host.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `str`: always UTF-8.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Self::Heap(host) => host,
        }
    }
}

/// `error.type` of a transport error: `timeout` or `connect` when the
/// error, or one it wraps, is an I/O error of that kind; `_OTHER` otherwise.
pub(crate) fn error_class(error: &(dyn std::error::Error + 'static)) -> &'static str {
    use std::io::ErrorKind;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::TimedOut => return "timeout",
                ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::NotConnected
                | ErrorKind::AddrNotAvailable
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable => return "connect",
                _ => {}
            }
        }
        next = e.source();
    }
    "_OTHER"
}

#[cfg(test)]
mod tests;
