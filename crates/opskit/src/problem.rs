//! RFC 9457 problem details: the body of every error response opskit makes.
//!
//! ```
//! use opskit::Problem;
//! let p = Problem::new(404).detail("no user with that id");
//! assert_eq!(p.status(), 404);
//! let body = String::from_utf8(p.to_json()).unwrap();
//! assert_eq!(body, r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no user with that id"}"#);
//! ```
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

/// The media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem (`application/problem+json`).
///
/// `detail` is for the client: never put a stack trace, a panic message or a
/// secret in it.
///
/// Boxed inside, so that `Result<T, Problem>` stays one pointer wide.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<Body>);

#[derive(Debug, Clone, Serialize)]
struct Body {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(flatten)]
    extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of type `about:blank` whose title is the status' reason phrase.
    pub fn new(status: u16) -> Self {
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_owned();
        Self(Box::new(Body {
            kind: "about:blank".to_owned(),
            title,
            status,
            detail: None,
            instance: None,
            extensions: Map::new(),
        }))
    }

    /// Sets the `type` URI.
    #[must_use]
    pub fn with_type(mut self, uri: impl Into<String>) -> Self {
        self.0.kind = uri.into();
        self
    }

    /// Sets the `title`.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.0.title = title.into();
        self
    }

    /// Sets the `detail` shown to the client.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    /// Sets the `instance` URI.
    #[must_use]
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.0.instance = Some(instance.into());
        self
    }

    /// Adds an extension member.
    #[must_use]
    pub fn extension(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0.extensions.insert(key.into(), value.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// What a client that cannot read the body is told: the detail, or
    /// the title (a gRPC call's `grpc-message`).
    pub(crate) fn message(&self) -> &str {
        self.0.detail.as_deref().unwrap_or(&self.0.title)
    }

    /// The serialized body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The body as an `http::Response`, with the problem content type.
    pub fn to_response<B: From<Vec<u8>>>(&self) -> http::Response<B> {
        let mut res = http::Response::new(B::from(self.to_json()));
        *res.status_mut() =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        res
    }
}

/// The answer to a request whose path is not UTF-8 once percent-decoded
/// (`/users/%ff`), given before routing: Axum's `Path` extractor would
/// refuse it in text/plain, Actix would hand the handler the escapes
/// undecoded. Both adapters call this, so both answer the same.
pub(crate) fn refuse_path(path: &str) -> Option<Problem> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_err()
        .then(|| {
            Problem::new(400).detail("the request path is not valid UTF-8 once percent-decoded")
        })
}

/// What replaces the framework's own answer when nothing handles the
/// request's method: a method outside RFC 9110's and PATCH that got the
/// router's empty 404 or 405 is answered 501 Not Implemented (RFC 9110
/// §9.1), identically in every framework (Axum's router says 405, Actix's
/// 404). A route that does handle such a method answers as it likes. The
/// method is not echoed back.
pub(crate) fn replace_unrouted(method: &str, status: u16, empty_body: bool) -> Option<Problem> {
    (empty_body && matches!(status, 404 | 405) && crate::request::known_method(method).is_none())
        .then(|| Problem::new(501).detail("this service does not implement the request method"))
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        self.to_response::<axum::body::Body>()
    }
}

#[cfg(feature = "actix")]
impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(self.0.status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        actix_web::HttpResponse::build(self.status_code())
            .content_type(CONTENT_TYPE)
            .body(self.to_json())
    }
}

#[cfg(feature = "actix")]
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.status, self.0.title)
    }
}

#[cfg(feature = "actix")]
impl actix_web::Responder for Problem {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _req: &actix_web::HttpRequest) -> actix_web::HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_answers() {
        for bad in ["/users/%ff", "/%C3%28", "/a/%e2%82", "/%80"] {
            assert_eq!(refuse_path(bad).map(|p| p.status()), Some(400), "{bad}");
        }
        for ok in [
            "/",
            "/users/caf%C3%A9",
            "/%31",
            "/100%",
            "/%zz",
            "/caf\u{e9}",
        ] {
            assert!(refuse_path(ok).is_none(), "{ok}");
        }
        assert_eq!(
            replace_unrouted("FOO", 405, true).map(|p| p.status()),
            Some(501)
        );
        assert_eq!(
            replace_unrouted("PROPFIND", 404, true).map(|p| p.status()),
            Some(501)
        );
        assert!(
            replace_unrouted("FOO", 404, false).is_none(),
            "the route's own 404"
        );
        assert!(replace_unrouted("FOO", 200, true).is_none());
        assert!(
            replace_unrouted("POST", 405, true).is_none(),
            "a known method"
        );
        assert!(
            replace_unrouted("get", 404, true).is_some(),
            "methods are case-sensitive"
        );
    }

    #[test]
    fn extensions_are_flattened_and_status_matches() {
        let p = Problem::new(429)
            .with_type("https://iana.org/assignments/http-problem-types#quota-exceeded")
            .extension("violated-policies", serde_json::json!(["default"]));
        let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["status"], 429);
        assert_eq!(v["title"], "Too Many Requests");
        assert_eq!(v["violated-policies"][0], "default");
        let res: http::Response<Vec<u8>> = p.to_response();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
