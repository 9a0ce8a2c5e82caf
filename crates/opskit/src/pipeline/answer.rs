//! [`Answer`]: what opskit answers without the handler (a problem, a
//! preflight, a gRPC status as a Trailers-Only response), and [`Rpc`], a
//! gRPC call's status as the pipeline read it.

use super::scan::Names;
use crate::grpc;
use crate::response_headers::HeaderMapLike;
use crate::Problem;

/// An answer given without the handler.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A CORS preflight: 204, headers only.
    NoContent,
    Problem(Problem),
    /// A gRPC call ended by opskit: a Trailers-Only response with this
    /// status code and `grpc-message`.
    Grpc {
        code: u8,
        message: String,
    },
}

impl Answer {
    /// The answer as an `http` response (the tower adapter's type).
    pub(crate) fn to_response<B: From<Vec<u8>>>(&self) -> http::Response<B> {
        match self {
            Answer::Problem(p) => p.to_response(),
            Answer::Grpc { code, message } => grpc::trailers_only(*code, message),
            Answer::NoContent => {
                let mut res = http::Response::new(B::from(Vec::new()));
                *res.status_mut() = http::StatusCode::NO_CONTENT;
                res
            }
        }
    }
}

impl Answer {
    /// The answer to a gRPC call: a problem becomes the gRPC status the
    /// client can read (`code`, when the pipeline knows the reason better
    /// than the HTTP status says).
    pub(super) fn for_grpc(self, code: Option<u8>) -> Answer {
        match self {
            Answer::Problem(p) => Answer::Grpc {
                code: code.unwrap_or_else(|| grpc::code_for_status(p.status())),
                message: p.message().to_owned(),
            },
            other => other,
        }
    }
}

/// The answer as Actix's error: it renders the response (the handler, if
/// any, has the request).
#[cfg(feature = "actix")]
impl actix_web::ResponseError for Answer {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            Answer::Problem(p) => actix_web::ResponseError::status_code(p),
            Answer::NoContent => actix_web::http::StatusCode::NO_CONTENT,
            Answer::Grpc { .. } => actix_web::http::StatusCode::OK,
        }
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        match self {
            Answer::Problem(p) => actix_web::ResponseError::error_response(p),
            Answer::NoContent => actix_web::HttpResponse::NoContent().finish(),
            Answer::Grpc { .. } => {
                let res = self.to_response::<Vec<u8>>();
                let mut out = actix_web::HttpResponse::Ok();
                for (name, value) in res.headers() {
                    out.insert_header((name.as_str(), value.as_bytes()));
                }
                out.finish()
            }
        }
    }
}

#[cfg(feature = "actix")]
impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Problem(p) => std::fmt::Display::fmt(p, f),
            Answer::NoContent => f.write_str("204 No Content"),
            Answer::Grpc { code, message } => {
                write!(f, "gRPC {}: {message}", grpc::code_name(*code))
            }
        }
    }
}

/// A gRPC call's status as the pipeline read it.
pub(super) struct Rpc {
    pub(super) code: u8,
    pub(super) message: Option<Box<str>>,
}

impl Rpc {
    pub(super) fn new(code: u8, message: Option<Box<str>>) -> Self {
        Self { code, message }
    }

    /// The status `code` and the `grpc-message` of `headers` (a response's
    /// headers, or its trailers).
    pub(super) fn from_headers<M: HeaderMapLike>(
        code: &[u8],
        headers: &M,
        names: &Names<M>,
    ) -> Self {
        let message = headers
            .lines(&names.grpc_message)
            .next()
            .map(|m| grpc::decode_message(m).into_boxed_str())
            .filter(|m| !m.is_empty());
        Self::new(grpc::parse_status(code), message)
    }
}
