//! Request ids: accept a well-formed incoming `x-request-id`, or make one.
//!
//! ```
//! use opskit::RequestId;
//! let id = RequestId::from_incoming(Some(b"abc-123")).unwrap();
//! assert_eq!(id.as_str(), "abc-123");
//! // Too long, or characters outside [A-Za-z0-9._:@+=/-]: not accepted.
//! assert!(RequestId::from_incoming(Some(b"x\"><script>")).is_none());
//! let fresh = RequestId::generate();
//! assert_eq!(fresh.as_str().len(), 36); // a UUID v4
//! ```
//!
//! Handlers read it with the `RequestId` extractor (Axum) or from
//! `HttpRequest::extensions()` / the `RequestId` extractor (Actix).
//!
//! tower-http's `SetRequestIdLayer`/`PropagateRequestIdLayer` are not used:
//! they are tower-only (Actix needs the same policy), they accept any incoming
//! value, and the id must also enter the log span and the error reports, which
//! opskit's single per-request service does in the same pass.

use bytes::Bytes;
use std::fmt;

/// The longest incoming request id accepted.
pub const MAX_LEN: usize = 128;

/// A request's id: validated, cheap to clone, echoed on the response.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Bytes);

impl RequestId {
    /// The incoming id, if it is 1 to 128 characters of `[A-Za-z0-9._:@+=/-]`.
    pub fn from_incoming(value: Option<&[u8]>) -> Option<Self> {
        let v = value?;
        let ok = !v.is_empty()
            && v.len() <= MAX_LEN
            && v.iter().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'+' | b'=' | b'/')
            });
        // Shared from the start (`from_owner`): a `Vec`-backed `Bytes` would
        // allocate again on its first clone (into the extensions, the
        // response header).
        ok.then(|| Self(Bytes::from_owner(v.to_vec())))
    }

    /// A new random id (UUID v4, from a fast thread-local generator: request
    /// ids need to be unique, not unpredictable).
    pub fn generate() -> Self {
        let bytes = fastrand::u128(..).to_le_bytes();
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid.hyphenated().encode_lower(&mut buf);
        // One allocation holding the 36 bytes, shared by every clone.
        Self(Bytes::from_owner(buf))
    }

    /// The incoming id if acceptable, else a new one.
    pub fn from_incoming_or_generate(value: Option<&[u8]>) -> Self {
        Self::from_incoming(value).unwrap_or_else(Self::generate)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (validated or generated).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id's bytes, shared (for a header value without a copy).
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    /// The id opskit's layer gave the request (a new one if the layer is absent).
    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate))
    }
}

#[cfg(feature = "actix")]
impl actix_web::FromRequest for RequestId {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        std::future::ready(Ok(req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_safe_bounded_ids() {
        assert!(RequestId::from_incoming(Some(b"req-1:a/b@c+d=e.f_g")).is_some());
        assert!(RequestId::from_incoming(Some(&[b'a'; MAX_LEN])).is_some());
        assert!(RequestId::from_incoming(Some(&[b'a'; MAX_LEN + 1])).is_none());
        for bad in [
            &b""[..],
            b"a b",
            b"a\nb",
            b"caf\xc3\xa9",
            b"a,b",
            b"{\"x\":1}",
        ] {
            assert!(RequestId::from_incoming(Some(bad)).is_none(), "{bad:?}");
        }
        assert!(RequestId::from_incoming(None).is_none());
    }

    #[test]
    fn generated_ids_are_uuids_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }
}
