//! The headers opskit puts on every response, prepared once at start-up and
//! applied by both adapters — each on its own header-map type (the tower
//! layer on `http` 1, Actix on its `http` 0.2 types), through one policy.

use crate::ratelimit::{Checked, Limiter};
use crate::recorder::Recorder;
use crate::security::{CspNonce, SecurityPolicy};
use crate::trace::TraceContext;
use crate::RequestId;
use bytes::Bytes;

/// A framework's response header map.
pub(crate) trait HeaderMapLike {
    type Name: Clone;
    type Value: Clone;
    /// A name known to be valid (lower case, static).
    fn static_name(name: &'static str) -> Self::Name;
    /// A name from configuration; `None` when invalid.
    fn name(name: &str) -> Option<Self::Name>;
    /// A value, without copying `bytes`; `None` when not a valid value.
    fn value(bytes: Bytes) -> Option<Self::Value>;
    fn contains(&self, name: &Self::Name) -> bool;
    fn insert(&mut self, name: Self::Name, value: Self::Value);
    fn append(&mut self, name: Self::Name, value: Self::Value);
    fn remove(&mut self, name: &Self::Name);
    fn reserve(&mut self, additional: usize);
}

/// What one response adds to the prepared headers.
pub(crate) struct PerResponse<'a> {
    pub(crate) https: bool,
    pub(crate) nonce: Option<&'a CspNonce>,
    pub(crate) cors: &'a [(&'static str, String)],
    pub(crate) request_id: &'a RequestId,
    pub(crate) trace: &'a TraceContext,
    pub(crate) rate: Option<&'a Checked>,
}

/// The security policy, the rate limiter and every header value that does
/// not change per request, parsed once.
pub(crate) struct Prepared<M: HeaderMapLike> {
    pub(crate) security: SecurityPolicy,
    pub(crate) limiter: Option<Limiter>,
    pub(crate) request_id_header: M::Name,
    trace_response_header: Option<M::Name>,
    /// Name, value, and whether a handler's own value is kept.
    fixed: Vec<(M::Name, M::Value, bool)>,
    csp_name: M::Name,
    csp_overridable: bool,
    removed: Vec<M::Name>,
    hsts_name: M::Name,
    /// The names of the rate-limit fields, parsed once (`from_static`
    /// validates its argument on every call).
    rate_names: Vec<(&'static str, M::Name)>,
    csp_plain: Option<M::Value>,
    csp_https: Option<M::Value>,
    hsts: Option<M::Value>,
}

impl<M: HeaderMapLike> std::fmt::Debug for Prepared<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("security", &self.security)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

fn value_of<M: HeaderMapLike>(s: &str) -> Option<M::Value> {
    M::value(Bytes::copy_from_slice(s.as_bytes()))
}

impl<M: HeaderMapLike> Prepared<M> {
    /// Parses every fixed value of `security`, and the header names of `recorder`.
    pub(crate) fn new(
        recorder: &Recorder,
        security: SecurityPolicy,
        limiter: Option<Limiter>,
    ) -> Self {
        let csp = |https| {
            security
                .csp(https, None)
                .and_then(|(_, v)| value_of::<M>(&v))
        };
        let csp_name = security
            .csp(false, None)
            .map_or("content-security-policy", |(n, _)| n);
        Self {
            request_id_header: M::name(recorder.request_id_header())
                .unwrap_or_else(|| M::static_name("x-request-id")),
            trace_response_header: recorder.trace_response_header().and_then(M::name),
            fixed: security
                .fixed_headers()
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        M::static_name(n),
                        value_of::<M>(v)?,
                        security.is_overridable(n),
                    ))
                })
                .collect(),
            csp_name: M::static_name(csp_name),
            csp_overridable: security.is_overridable(csp_name),
            removed: crate::security::REMOVED_HEADERS
                .iter()
                .map(|n| M::static_name(n))
                .collect(),
            hsts_name: M::static_name("strict-transport-security"),
            rate_names: crate::ratelimit::FIELD_NAMES
                .iter()
                .map(|n| (*n, M::static_name(n)))
                .collect(),
            csp_plain: csp(false),
            csp_https: csp(true),
            hsts: security.hsts(true).and_then(value_of::<M>),
            limiter: limiter.filter(Limiter::is_active),
            security,
        }
    }

    /// Security headers (a handler's own value kept only where overridable),
    /// no `Server`/`X-Powered-By`, CORS, the request id, `traceresponse` and
    /// the rate-limit fields.
    pub(crate) fn apply(&self, headers: &mut M, r: &PerResponse<'_>) {
        // One growth of the map instead of several as the headers go in.
        headers.reserve(self.fixed.len() + 8 + r.cors.len());
        for (name, value, overridable) in &self.fixed {
            if !(*overridable && headers.contains(name)) {
                headers.insert(name.clone(), value.clone());
            }
        }
        if !(self.csp_overridable && headers.contains(&self.csp_name)) {
            let value = match r.nonce {
                None if r.https => self.csp_https.clone(),
                None => self.csp_plain.clone(),
                Some(n) => self
                    .security
                    .csp(r.https, Some(n))
                    .and_then(|(_, v)| M::value(Bytes::from(v.into_owned()))),
            };
            if let Some(v) = value {
                headers.insert(self.csp_name.clone(), v);
            }
        }
        if let (true, Some(h)) = (r.https, &self.hsts) {
            headers.insert(self.hsts_name.clone(), h.clone());
        }
        for name in &self.removed {
            headers.remove(name);
        }
        for (name, value) in r.cors {
            if let Some(v) = value_of::<M>(value) {
                headers.append(M::static_name(name), v);
            }
        }
        if let Some(v) = M::value(r.request_id.to_bytes()) {
            headers.insert(self.request_id_header.clone(), v);
        }
        if let Some(name) = &self.trace_response_header {
            if let Some(v) = M::value(Bytes::copy_from_slice(&r.trace.header_bytes())) {
                headers.insert(name.clone(), v);
            }
        }
        if let (Some(rate), Some(limiter)) = (r.rate, &self.limiter) {
            for (name, value) in rate.headers(limiter.legacy_headers()).into_iter().flatten() {
                let name = self
                    .rate_names
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or_else(|| M::static_name(name), |(_, n)| n.clone());
                if let Some(v) = M::value(value) {
                    headers.insert(name, v);
                }
            }
        }
    }
}

impl HeaderMapLike for http::HeaderMap {
    type Name = http::HeaderName;
    type Value = http::HeaderValue;
    fn static_name(name: &'static str) -> Self::Name {
        http::HeaderName::from_static(name)
    }
    fn name(name: &str) -> Option<Self::Name> {
        http::HeaderName::from_bytes(name.as_bytes()).ok()
    }
    fn value(bytes: Bytes) -> Option<Self::Value> {
        http::HeaderValue::from_maybe_shared(bytes).ok()
    }
    fn contains(&self, name: &Self::Name) -> bool {
        self.contains_key(name)
    }
    fn insert(&mut self, name: Self::Name, value: Self::Value) {
        http::HeaderMap::insert(self, name, value);
    }
    fn append(&mut self, name: Self::Name, value: Self::Value) {
        http::HeaderMap::append(self, name, value);
    }
    fn remove(&mut self, name: &Self::Name) {
        http::HeaderMap::remove(self, name);
    }
    fn reserve(&mut self, additional: usize) {
        http::HeaderMap::reserve(self, additional);
    }
}

#[cfg(feature = "actix")]
impl HeaderMapLike for actix_web::http::header::HeaderMap {
    type Name = actix_web::http::header::HeaderName;
    type Value = actix_web::http::header::HeaderValue;
    fn static_name(name: &'static str) -> Self::Name {
        actix_web::http::header::HeaderName::from_static(name)
    }
    fn name(name: &str) -> Option<Self::Name> {
        actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).ok()
    }
    fn value(bytes: Bytes) -> Option<Self::Value> {
        actix_web::http::header::HeaderValue::from_maybe_shared(bytes).ok()
    }
    fn contains(&self, name: &Self::Name) -> bool {
        self.contains_key(name)
    }
    fn insert(&mut self, name: Self::Name, value: Self::Value) {
        actix_web::http::header::HeaderMap::insert(self, name, value);
    }
    fn append(&mut self, name: Self::Name, value: Self::Value) {
        actix_web::http::header::HeaderMap::append(self, name, value);
    }
    fn remove(&mut self, name: &Self::Name) {
        actix_web::http::header::HeaderMap::remove(self, name);
    }
    fn reserve(&mut self, additional: usize) {
        actix_web::http::header::HeaderMap::reserve(self, additional);
    }
}
