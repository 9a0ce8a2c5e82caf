//! The headers opskit puts on every response, prepared once at start-up and
//! applied by the pipeline — on each adapter's own header-map type (the
//! tower layer's `http` 1, Actix's `http` 0.2 types), through one policy.

use crate::ratelimit::{Checked, Limiter};
use crate::recorder::Recorder;
use crate::security::{CspNonce, SecurityPolicy};
use crate::RequestId;
use bytes::Bytes;

/// A framework's header map (its requests' and its responses').
pub(crate) trait HeaderMapLike: Clone + Default + Sync {
    type Name: Clone + PartialEq;
    type Value: Clone;
    /// Whether a response starts from a clone of the prepared security
    /// headers (cheap for `http`'s map: two flat vectors) rather than having
    /// them inserted one by one (cheaper for Actix's, a hash map of small
    /// vectors whose clone copies and hashes every entry).
    const FROM_TEMPLATE: bool;
    /// A name known to be valid (lower case, static).
    fn static_name(name: &'static str) -> Self::Name;
    /// A name from configuration; `None` when invalid.
    fn name(name: &str) -> Option<Self::Name>;
    /// A value, without copying `bytes`; `None` when not a valid value.
    fn value(bytes: Bytes) -> Option<Self::Value>;
    fn insert(&mut self, name: Self::Name, value: Self::Value);
    fn append(&mut self, name: Self::Name, value: Self::Value);
    fn remove(&mut self, name: &Self::Name);
    fn contains(&self, name: &Self::Name) -> bool;
    /// Calls `f` with each name in the map (once per name).
    fn each_name(&self, f: impl FnMut(&Self::Name));
    fn reserve(&mut self, additional: usize);
    /// Calls `f` with each value of `name`, in order.
    fn each_value(&self, name: &Self::Name, f: impl FnMut(&[u8]));
    /// Empties the map, handing each value to `f` with its name — `None`
    /// for a further value of the name before (multi-valued headers).
    fn drain_each(&mut self, f: impl FnMut(Option<Self::Name>, Self::Value));
    /// Every name and value, in order.
    fn entries(&self) -> impl Iterator<Item = (&Self::Name, &Self::Value)>;
    /// A value's bytes.
    fn bytes(value: &Self::Value) -> &[u8];
    /// A value as text, when it is visible ASCII (`HeaderValue::to_str`).
    fn text(value: &Self::Value) -> Option<&str>;
    /// Every value of `name`, in order.
    fn lines<'a>(&'a self, name: &Self::Name) -> impl DoubleEndedIterator<Item = &'a [u8]>;
    /// The first value of a header named at run time (lower case).
    fn get_str(&self, name: &str) -> Option<&[u8]>;
}

/// What one response adds to the prepared headers.
pub(crate) struct PerResponse<'a> {
    /// The response may go to a browser: the security headers apply (not
    /// to a gRPC call's).
    pub(crate) browser: bool,
    pub(crate) https: bool,
    pub(crate) nonce: Option<&'a CspNonce>,
    pub(crate) cors: &'a [(&'static str, String)],
    pub(crate) request_id: &'a RequestId,
    /// The `traceresponse` value ([`TraceContext::header_bytes`]).
    pub(crate) trace: &'a [u8; 55],
    pub(crate) rate: Option<&'a Checked>,
}

/// The security policy, the rate limiter and every header value that does
/// not change per request, parsed once.
pub(crate) struct Prepared<M: HeaderMapLike> {
    pub(crate) security: SecurityPolicy,
    pub(crate) limiter: Option<Limiter>,
    /// Who the client is (the limiter's proxies, also when it limits nothing).
    pub(crate) proxies: crate::ratelimit::TrustedProxies,
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
    /// `Vary: origin`, parsed once, when CORS is on (every response carries it).
    vary_origin: Option<M::Value>,
    /// Every fixed security header (and the CSP when it has no nonce, and
    /// HSTS over HTTPS) in a map of its own, over HTTP and over HTTPS: a
    /// response starts from a clone and only the handler's few headers are
    /// inserted, instead of inserting a dozen into the handler's map (each
    /// insert hashes its name). `None` when the policy sets no header, and
    /// for maps that take the headers in place (`FROM_TEMPLATE` false, or a
    /// short list: the lean profile's).
    template_plain: Option<M>,
    template_https: Option<M>,
    /// The names of the per-response headers (request id, `traceresponse`,
    /// rate-limit fields): when a handler set none of them, as is usual,
    /// they are appended to vacant entries of Actix's map.
    per_response: Vec<M::Name>,
    /// The security headers of the responses that are not documents, under
    /// `OPSKIT_SECURITY_HEADERS=lean` ([`SecurityPolicy::lean_policy`]).
    lean: Option<Box<Prepared<M>>>,
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
            vary_origin: security
                .cors_enabled()
                .then(|| value_of::<M>("origin"))
                .flatten(),
            proxies: limiter
                .as_ref()
                .map(|l| l.trusted_proxies().clone())
                .unwrap_or_default(),
            limiter: limiter.filter(Limiter::is_active),
            template_plain: None,
            template_https: None,
            per_response: Vec::new(),
            lean: security
                .lean_policy()
                .map(|lean| Box::new(Prepared::new(recorder, lean, None))),
            security,
        }
        .with_templates()
    }

    fn with_templates(mut self) -> Self {
        self.per_response.push(self.request_id_header.clone());
        self.per_response.extend(self.trace_response_header.clone());
        self.per_response
            .extend(self.rate_names.iter().map(|(_, n)| n.clone()));
        let nonce = self.security.nonce_enabled();
        let build = |https: bool| {
            let mut t = M::default();
            t.reserve(self.fixed.len() + 16);
            for (name, value, _) in &self.fixed {
                t.insert(name.clone(), value.clone());
            }
            let csp = if https {
                &self.csp_https
            } else {
                &self.csp_plain
            };
            if let (false, Some(v)) = (nonce, csp) {
                t.insert(self.csp_name.clone(), v.clone());
            }
            if let (true, Some(h)) = (https, &self.hsts) {
                t.insert(self.hsts_name.clone(), h.clone());
            }
            t
        };
        // A short list (the lean profile's) goes in place: a clone of a
        // small template has room for nothing more (a clone's capacity is
        // its length), and the handler's and per-response headers would
        // grow it several times; inserting two or three is cheaper.
        if M::FROM_TEMPLATE && self.sets_security_headers() && self.fixed.len() > 4 {
            self.template_plain = Some(build(false));
            self.template_https = Some(build(true));
        }
        self
    }

    /// Whether the policy sets any security header at all.
    fn sets_security_headers(&self) -> bool {
        !self.fixed.is_empty()
            || self.csp_plain.is_some()
            || self.csp_https.is_some()
            || self.hsts.is_some()
    }

    /// Whether `name` is one of the security headers, and if so whether a
    /// handler's own value is kept.
    fn ours(&self, name: &M::Name) -> Option<bool> {
        if *name == self.csp_name {
            return Some(self.csp_overridable);
        }
        if *name == self.hsts_name {
            return Some(false);
        }
        self.fixed
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, overridable)| *overridable)
    }

    /// Moves the handler's headers onto a clone of `template`: its own value
    /// of a security header stays only where overridable, `Server` and
    /// `X-Powered-By` go. Returns whether it set the CSP itself.
    fn merge_onto_template(&self, headers: &mut M, template: &M) -> bool {
        let mut theirs = std::mem::replace(headers, template.clone());
        let mut handler_csp = false;
        // The name whose further values (`None` names) are kept, if any.
        let mut current: Option<M::Name> = None;
        theirs.drain_each(|name, value| {
            let Some(name) = name else {
                if let Some(name) = &current {
                    headers.append(name.clone(), value);
                }
                return;
            };
            current = None;
            if self.removed.contains(&name) {
                return;
            }
            match self.ours(&name) {
                // Ours wins.
                Some(false) => {}
                // Theirs wins: replaces ours.
                Some(true) => {
                    handler_csp |= name == self.csp_name;
                    headers.insert(name.clone(), value);
                    current = Some(name);
                }
                None => {
                    headers.append(name.clone(), value);
                    current = Some(name);
                }
            }
        });
        handler_csp
    }

    /// The same as [`Prepared::merge_onto_template`], adding the security
    /// headers to the handler's map instead. One pass over the handler's few
    /// names finds which of ours it set; every other header of ours is then
    /// appended to a vacant entry, which for Actix's map is about half the
    /// cost of an `insert` (no old value to move out and drop).
    /// Returns whether the handler's CSP stays, and whether it set one of
    /// the per-response names.
    fn merge_in_place(&self, headers: &mut M, https: bool) -> (bool, bool) {
        // Bit `i`: the handler set `fixed[i]` (for `i < 64`; beyond, asked).
        let mut theirs = 0u64;
        let (mut removed, mut csp, mut hsts, mut theirs_per_response) =
            (false, false, false, false);
        headers.each_name(|name| {
            if self.per_response.contains(name) {
                theirs_per_response = true;
            } else if *name == self.csp_name {
                csp = true;
            } else if *name == self.hsts_name {
                hsts = true;
            } else if let Some(i) = self.fixed.iter().position(|(n, _, _)| n == name) {
                theirs |= 1u64.checked_shl(i as u32).unwrap_or(0);
            } else {
                removed |= self.removed.contains(name);
            }
        });
        headers.reserve(self.fixed.len() + 8);
        if removed {
            for name in &self.removed {
                headers.remove(name);
            }
        }
        for (i, (name, value, overridable)) in self.fixed.iter().enumerate() {
            let set = match 1u64.checked_shl(i as u32) {
                Some(bit) => theirs & bit != 0,
                None => headers.contains(name),
            };
            match (set, overridable) {
                (true, true) => {}
                (true, false) => headers.insert(name.clone(), value.clone()),
                (false, _) => headers.append(name.clone(), value.clone()),
            }
        }
        let handler_csp = csp && self.csp_overridable;
        let ours = if https {
            &self.csp_https
        } else {
            &self.csp_plain
        };
        match (self.security.nonce_enabled(), ours) {
            (false, Some(v)) if !handler_csp => headers.insert(self.csp_name.clone(), v.clone()),
            _ if csp && !self.csp_overridable => headers.remove(&self.csp_name),
            _ => {}
        }
        match (https, &self.hsts) {
            (true, Some(h)) if hsts => headers.insert(self.hsts_name.clone(), h.clone()),
            (true, Some(h)) => headers.append(self.hsts_name.clone(), h.clone()),
            _ if hsts => headers.remove(&self.hsts_name),
            _ => {}
        }
        (handler_csp, theirs_per_response)
    }

    /// The security headers of [`Self::apply`] (and no `Server`,
    /// `X-Powered-By`); whether the per-response headers may be appended.
    fn apply_security(&self, headers: &mut M, r: &PerResponse<'_>) -> bool {
        let template = if r.https {
            &self.template_https
        } else {
            &self.template_plain
        };
        let mut append = false;
        // Templates exist only where responses start from them (`http`).
        let handler_csp = match template.as_ref().filter(|_| r.browser) {
            Some(template) => Some(self.merge_onto_template(headers, template)),
            None if r.browser && self.sets_security_headers() => {
                let (csp, theirs) = self.merge_in_place(headers, r.https);
                append = !theirs;
                Some(csp)
            }
            None => None,
        };
        if let Some(handler_csp) = handler_csp {
            if let Some(n) = r.nonce.filter(|_| self.security.nonce_enabled()) {
                if !(self.csp_overridable && handler_csp) {
                    if let Some(v) = self
                        .security
                        .csp(r.https, Some(n))
                        .and_then(|(_, v)| M::value(Bytes::from(v.into_owned())))
                    {
                        headers.insert(self.csp_name.clone(), v);
                    }
                }
            }
        } else {
            headers.reserve(8 + r.cors.len());
            for name in &self.removed {
                headers.remove(name);
            }
        }
        append
    }

    /// Security headers (a handler's own value kept only where overridable),
    /// no `Server`/`X-Powered-By`, CORS, the request id, `traceresponse` and
    /// the rate-limit fields.
    pub(crate) fn apply(&self, headers: &mut M, r: &PerResponse<'_>) {
        // Lean: only documents get the full set (one header lookup).
        let security = match &self.lean {
            Some(lean)
                if !headers
                    .get_str("content-type")
                    .is_some_and(crate::security::is_document) =>
            {
                lean
            }
            _ => self,
        };
        // Whether the per-response headers below may be appended: known
        // absent, as the handler set none of them.
        let append = security.apply_security(headers, r);
        // With CORS on, every response varies by Origin (a cache must not
        // give one origin's answer to another), a preflight by more.
        let mut vary = self.security.cors_enabled().then_some("origin");
        for (name, value) in r.cors {
            if *name == "vary" {
                vary = Some(value);
            } else if let Some(v) = value_of::<M>(value) {
                headers.append(M::static_name(name), v);
            }
        }
        if let Some(tokens) = vary {
            let parsed = self.vary_origin.as_ref().filter(|_| tokens == "origin");
            merge_vary(headers, tokens, parsed);
        }
        let mut put = |name: M::Name, v: M::Value| {
            if append {
                headers.append(name, v);
            } else {
                headers.insert(name, v);
            }
        };
        if let Some(v) = M::value(r.request_id.to_bytes()) {
            put(self.request_id_header.clone(), v);
        }
        if let Some(name) = &self.trace_response_header {
            if let Some(v) = M::value(Bytes::copy_from_slice(r.trace)) {
                put(name.clone(), v);
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
                    put(name, v);
                }
            }
        }
    }
}

/// Adds the comma-separated `tokens` to the response's `Vary`, each once
/// (compared case-insensitively), as one line after the handler's own
/// tokens; nothing when the handler said `Vary: *`. `parsed`: `tokens` as
/// a value already, for the usual case of a handler that set no Vary.
fn merge_vary<M: HeaderMapLike>(headers: &mut M, tokens: &str, parsed: Option<&M::Value>) {
    let name = M::static_name("vary");
    let mut theirs: Vec<String> = Vec::new();
    let mut lines = 0;
    headers.each_value(&name, |v| {
        lines += 1;
        theirs.extend(
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    });
    if lines == 0 {
        // The usual case: the handler set no Vary.
        if let Some(v) = parsed.cloned().or_else(|| value_of::<M>(tokens)) {
            headers.insert(name, v);
        }
        return;
    }
    if theirs.iter().any(|t| t == "*") {
        return;
    }
    let missing: Vec<&str> = tokens
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && !theirs.iter().any(|o| o.eq_ignore_ascii_case(t)))
        .collect();
    if missing.is_empty() && lines <= 1 {
        return;
    }
    let mut all: Vec<&str> = theirs.iter().map(String::as_str).collect();
    all.extend(missing);
    if let Some(v) = value_of::<M>(&all.join(", ")) {
        headers.insert(name, v);
    }
}

/// [`HeaderMapLike`] for a version of `http`'s types (Axum's `http` 1,
/// Actix's `http` 0.2): the same body over both, by name.
macro_rules! header_map_like {
    ($map:ty, $name:ty, $value:ty, from_template: $from_template:expr) => {
        impl HeaderMapLike for $map {
            type Name = $name;
            type Value = $value;
            const FROM_TEMPLATE: bool = $from_template;
            fn static_name(name: &'static str) -> Self::Name {
                <$name>::from_static(name)
            }
            fn name(name: &str) -> Option<Self::Name> {
                <$name>::from_bytes(name.as_bytes()).ok()
            }
            fn value(bytes: Bytes) -> Option<Self::Value> {
                <$value>::from_maybe_shared(bytes).ok()
            }
            fn insert(&mut self, name: Self::Name, value: Self::Value) {
                <$map>::insert(self, name, value);
            }
            fn append(&mut self, name: Self::Name, value: Self::Value) {
                <$map>::append(self, name, value);
            }
            fn remove(&mut self, name: &Self::Name) {
                <$map>::remove(self, name);
            }
            fn contains(&self, name: &Self::Name) -> bool {
                <$map>::contains_key(self, name)
            }
            fn each_name(&self, f: impl FnMut(&Self::Name)) {
                self.keys().for_each(f);
            }
            fn reserve(&mut self, additional: usize) {
                <$map>::reserve(self, additional);
            }
            fn each_value(&self, name: &Self::Name, mut f: impl FnMut(&[u8])) {
                for v in self.get_all(name) {
                    f(v.as_bytes());
                }
            }
            fn drain_each(&mut self, mut f: impl FnMut(Option<Self::Name>, Self::Value)) {
                for (name, value) in self.drain() {
                    f(name, value);
                }
            }
            fn entries(&self) -> impl Iterator<Item = (&Self::Name, &Self::Value)> {
                self.iter()
            }
            fn bytes(value: &Self::Value) -> &[u8] {
                value.as_bytes()
            }
            fn text(value: &Self::Value) -> Option<&str> {
                value.to_str().ok()
            }
            // `http` 1's `get_all` is an `IntoIterator`, `http` 0.2's (Actix's) an iterator.
            #[allow(clippy::useless_conversion)]
            fn lines<'a>(&'a self, name: &Self::Name) -> impl DoubleEndedIterator<Item = &'a [u8]> {
                self.get_all(name).into_iter().map(<$value>::as_bytes)
            }
            fn get_str(&self, name: &str) -> Option<&[u8]> {
                self.get(name).map(<$value>::as_bytes)
            }
        }
    };
}

header_map_like!(http::HeaderMap, http::HeaderName, http::HeaderValue, from_template: true);
#[cfg(feature = "actix")]
header_map_like!(
    actix_web::http::header::HeaderMap,
    actix_web::http::header::HeaderName,
    actix_web::http::header::HeaderValue,
    from_template: false
);

#[cfg(test)]
mod tests;
