//! Rate limiting: GCRA quotas per key and per route, IETF `RateLimit`
//! headers, 429 problems; in memory (sharded, bounded) or in Redis (shared by
//! every replica).
//!
//! Written here rather than on `governor`: governor's keyed limiter grows
//! without bound until `retain_recent` is called and has no Redis backend,
//! while the same GCRA step must run in memory and, atomically, in Redis;
//! the step itself is a dozen lines (`gcra::decide`).
//!
//! ```
//! use opskit::ratelimit::{Limiter, LimitSettings, Quota, RequestInfo};
//! let mut settings = LimitSettings::default();
//! settings.default = Some(Quota::parse("2/1m").unwrap());
//! let limiter = Limiter::new(settings);
//! let client = "203.0.113.9".parse().ok();
//! let info = RequestInfo { method: "GET", path: "/", client, header: &|_| None };
//! assert!(limiter.check_memory(&info).unwrap().decision.allowed);
//! assert!(limiter.check_memory(&info).unwrap().decision.allowed);
//! assert!(!limiter.check_memory(&info).unwrap().decision.allowed);
//! ```

mod gcra;
mod ip;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;

pub use gcra::{Decision, Quota};
pub use ip::{Cidr, TrustedProxies};
use memory::Memory;

use crate::decimal;
use bytes::Bytes;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which header carries the client address behind trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (default).
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

/// A function from a request to its client key.
pub type KeyFn = Arc<dyn Fn(&RequestInfo<'_>) -> Option<String> + Send + Sync>;

/// What identifies a client.
#[derive(Clone)]
pub enum KeyBy {
    /// The client IP (IPv6 by prefix), through trusted proxies only.
    Ip,
    /// A request header (an API key); requests without it are keyed by IP.
    Header(String),
    /// A function of the request (an authenticated user id, say); `None`
    /// falls back to the IP.
    Custom(KeyFn),
}

impl std::fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip => f.write_str("Ip"),
            Self::Header(h) => write!(f, "Header({h})"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// When the store (Redis) cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Admit the request (default): an outage of the limiter is not an outage of the service.
    Open,
    /// Refuse it with 503: for quotas that protect something costly.
    Closed,
}

/// A route policy: requests whose path matches `pattern` (exact, or a prefix
/// when it ends with `*`) use `quota`; `None` exempts them.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    /// `/auth/*`, `/login`.
    pub pattern: String,
    /// The quota, or `None` for no limit.
    pub quota: Option<Quota>,
}

/// Rate-limit settings (`OPSKIT_RATE_LIMIT*`, `OPSKIT_TRUSTED_PROXIES`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LimitSettings {
    /// The quota of routes no policy names; `None`: off.
    pub default: Option<Quota>,
    /// Route policies, first match wins.
    pub routes: Vec<RoutePolicy>,
    /// Paths never limited: the probes and `/metrics` (filled in by `init`).
    pub exempt: Vec<String>,
    /// What a key is.
    pub key_by: KeyBy,
    /// Proxies whose forwarding headers are believed (see [`TrustedProxies`]).
    pub trusted_proxies: Vec<Cidr>,
    /// Which forwarding header they set.
    pub forwarded_header: ForwardedHeader,
    /// IPv6 clients share a bucket per prefix of this length.
    pub ipv6_prefix: u8,
    /// Also send `X-RateLimit-Limit/Remaining/Reset`.
    pub legacy_headers: bool,
    /// Most keys kept in memory.
    pub capacity: usize,
    /// Redis URL for a quota shared by every replica.
    pub redis_url: Option<crate::Secret>,
    /// Longest wait for Redis per decision.
    pub redis_timeout: Duration,
    /// What to do when Redis cannot answer.
    pub failure: FailurePolicy,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            default: None,
            routes: Vec::new(),
            exempt: Vec::new(),
            key_by: KeyBy::Ip,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            ipv6_prefix: 64,
            legacy_headers: false,
            capacity: 100_000,
            redis_url: None,
            redis_timeout: Duration::from_millis(100),
            failure: FailurePolicy::Open,
        }
    }
}

/// What the limiter reads from a request (framework-neutral).
pub struct RequestInfo<'a> {
    /// The method.
    pub method: &'a str,
    /// The path as the framework's router matches it, without the query:
    /// route policies must meet the route the request reaches, whatever its
    /// spelling. Axum (matchit) matches the path as sent; Actix first decodes
    /// every percent-escape except `%2F`, `%25` and `%2B` (its
    /// `match_info().as_str()`), so `/%75sers/1` is `/users/1` there.
    pub path: &'a str,
    /// The client address: the socket peer, or, behind trusted proxies, the
    /// address they forwarded ([`TrustedProxies::client`]).
    pub client: Option<IpAddr>,
    /// Header lookup by lower-case name.
    pub header: &'a (dyn Fn(&str) -> Option<&'a [u8]> + Sync),
}

impl std::fmt::Debug for RequestInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestInfo")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// A Redis decision under way: a future that owns what it needs, so an
/// adapter can hold it across the await before calling the handler.
pub(crate) type LimitCheck =
    std::pin::Pin<Box<dyn std::future::Future<Output = Checked> + Send + 'static>>;

/// The names of the fields [`Checked::headers`] may answer.
pub(crate) const FIELD_NAMES: [&str; 6] = [
    "ratelimit-policy",
    "ratelimit",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

/// A decision with what the response needs.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The decision.
    pub decision: Decision,
    /// The policy's name (its pattern, or `default`).
    pub policy: Arc<str>,
    /// Its quota.
    pub quota: Quota,
    /// The store could not answer: the failure policy decided.
    pub store_failed: bool,
    /// The policy's `RateLimit-Policy` value and `RateLimit` prefix (`"name";r=`).
    fields: (Bytes, Arc<str>),
}

/// Whether `path` is `prefix` or below it (`/readyz`, `/readyz/db`; not
/// `/readyzz`): how exempt paths and the operational routes are matched.
pub(crate) fn path_is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The limiter: policies, key extraction, the store. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    settings: LimitSettings,
    /// Who the client is, from `settings`' proxies.
    proxies: TrustedProxies,
    /// Whether any policy has a quota.
    active: bool,
    /// Policy names: `default`, then each route's pattern.
    names: Vec<Arc<str>>,
    /// Their header fields, made once (see [`Checked::headers`]).
    fields: Vec<(Bytes, Arc<str>)>,
    /// `opskit_rate_limit_decisions_total` per policy: allowed, rejected,
    /// allowed_store_failed, rejected_store_failed.
    counters: Vec<[metrics::Counter; 4]>,
    hasher: std::collections::hash_map::RandomState,
    memory: Memory,
    epoch: Instant,
    #[cfg(feature = "redis")]
    redis: Option<Arc<redis_store::RedisStore>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter with these settings (Redis connects lazily, on first use).
    pub fn new(settings: LimitSettings) -> Self {
        let active =
            settings.default.is_some() || settings.routes.iter().any(|r| r.quota.is_some());
        let names: Vec<Arc<str>> = std::iter::once(Arc::from("default"))
            .chain(
                settings
                    .routes
                    .iter()
                    .map(|r| Arc::from(r.pattern.as_str())),
            )
            .collect();
        #[cfg(feature = "redis")]
        let redis = settings
            .redis_url
            .as_ref()
            .and_then(|u| redis_store::RedisStore::new(u.expose(), settings.redis_timeout))
            .map(Arc::new);
        Self {
            inner: Arc::new(Inner {
                // Registered (as 0) only when something is limited.
                counters: names
                    .iter()
                    .map(|n| {
                        if !active {
                            return std::array::from_fn(|_| metrics::Counter::noop());
                        }
                        [
                            "allowed",
                            "rejected",
                            "allowed_store_failed",
                            "rejected_store_failed",
                        ]
                        .map(|d| {
                            metrics::counter!(
                                "opskit_rate_limit_decisions_total",
                                "policy" => n.to_string(),
                                "decision" => d
                            )
                        })
                    })
                    .collect(),
                fields: names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let quota = if i == 0 {
                            settings.default
                        } else {
                            settings.routes[i - 1].quota
                        };
                        let (q, w) = quota.map_or((0, 0), |q| (q.count, q.period.as_secs().max(1)));
                        let name = sf_string(n);
                        (
                            Bytes::from(format!("{name};q={q};w={w}")),
                            Arc::from(format!("{name};r=")),
                        )
                    })
                    .collect(),
                names,
                active,
                hasher: std::collections::hash_map::RandomState::new(),
                memory: Memory::new(settings.capacity),
                epoch: Instant::now(),
                #[cfg(feature = "redis")]
                redis,
                proxies: TrustedProxies::new(
                    settings.trusted_proxies.clone(),
                    settings.forwarded_header,
                ),
                settings,
            }),
        }
    }

    /// Whether any request can be limited at all.
    pub fn is_active(&self) -> bool {
        self.inner.active
    }

    /// Whether decisions go to Redis.
    pub fn uses_redis(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.inner.redis.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// Also send the legacy `X-RateLimit-*` headers.
    pub fn legacy_headers(&self) -> bool {
        self.inner.settings.legacy_headers
    }

    /// Who the client of a request is: the proxies of these settings. The
    /// adapters resolve it once per request, for the limiter and the logs.
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.inner.proxies
    }

    /// Keys held in memory now.
    pub fn keys_in_memory(&self) -> usize {
        self.inner.memory.len()
    }

    /// The policy for a path: its name and quota; `None` when not limited.
    #[cfg(test)]
    pub(crate) fn policy(&self, path: &str) -> Option<(Arc<str>, Quota)> {
        self.policy_index(path)
            .map(|(i, q)| (self.inner.names[i].clone(), q))
    }

    /// Index into `names`/`counters` (0: default) and quota.
    fn policy_index(&self, path: &str) -> Option<(usize, Quota)> {
        let s = &self.inner.settings;
        if s.exempt.iter().any(|e| path_is_under(path, e)) {
            return None;
        }
        for (i, r) in s.routes.iter().enumerate() {
            if crate::limits::pattern_matches(&r.pattern, path) {
                return r.quota.map(|q| (i + 1, q));
            }
        }
        s.default.map(|q| (0, q))
    }

    /// The client key of a request (never logged raw: only hashed).
    fn client_key<'a>(&self, info: &RequestInfo<'a>) -> ClientKey<'a> {
        let s = &self.inner.settings;
        let custom = match &s.key_by {
            KeyBy::Ip => None,
            KeyBy::Header(h) => (info.header)(h).map(ClientKey::Header),
            KeyBy::Custom(f) => f(info).map(ClientKey::Custom),
        };
        custom.unwrap_or_else(|| match info.client {
            Some(ip) => ClientKey::Ip(ip::masked(ip, s.ipv6_prefix)),
            None => ClientKey::Unknown,
        })
    }

    fn now_us(&self) -> u64 {
        self.inner.epoch.elapsed().as_micros() as u64 + 1
    }

    /// The policy (index and quota) and client key a request is decided by;
    /// `None` when it is not limited (exempt). A CORS preflight that opskit's
    /// CORS answers never gets here (the adapters answer it first); any other
    /// `OPTIONS` reaches a handler and counts like every request.
    fn target<'a>(&self, info: &RequestInfo<'a>) -> Option<(usize, Quota, ClientKey<'a>)> {
        let (index, quota) = self.policy_index(info.path)?;
        Some((index, quota, self.client_key(info)))
    }

    /// Decides in memory (Redis is not consulted). `None`: not limited.
    pub fn check_memory(&self, info: &RequestInfo<'_>) -> Option<Checked> {
        self.check_memory_for(info, None)
    }

    /// [`check_memory`](Self::check_memory) for a request whose log span
    /// (`request_id`, `trace_id`, `span_id`) is not entered yet: a refusal
    /// is logged under `request`, without entering it for every decision.
    pub(crate) fn check_memory_for(
        &self,
        info: &RequestInfo<'_>,
        request: Option<&tracing::Span>,
    ) -> Option<Checked> {
        let (index, quota, key) = self.target(info)?;
        let hash = key.memory_hash(index, &self.inner.hasher);
        let decision = self.inner.memory.decide(hash, &quota, self.now_us());
        let checked = Checked {
            decision,
            policy: self.inner.names[index].clone(),
            quota,
            store_failed: false,
            fields: self.inner.fields[index].clone(),
        };
        self.record(
            index,
            &checked,
            || self.inner.hasher.hash_one(&key),
            request,
        );
        Some(checked)
    }

    /// Decides in Redis when configured, else in memory. `None`: not limited.
    pub async fn check(&self, info: &RequestInfo<'_>) -> Option<Checked> {
        if self.uses_redis() {
            return match self.check_later(info) {
                Some(check) => Some(check.await),
                None => None,
            };
        }
        self.check_memory(info)
    }

    /// The Redis decision for a request, as a future that owns all it needs
    /// (the key is derived now, from the borrowed request): the adapter
    /// awaits it before calling the handler. `None`: the request is not
    /// limited, or no Redis is configured ([`Self::uses_redis`]).
    pub(crate) fn check_later(&self, info: &RequestInfo<'_>) -> Option<LimitCheck> {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.inner.redis {
            let redis = redis.clone();
            let (index, quota, key) = self.target(info)?;
            let policy = self.inner.names[index].clone();
            let redis_key = format!("opskit:rl:{policy}:{:016x}", key.stable_hash());
            let key_hash = self.inner.hasher.hash_one(&key);
            let this = self.clone();
            return Some(Box::pin(async move {
                let checked = match redis.decide(&redis_key, &quota).await {
                    Ok(decision) => Checked {
                        decision,
                        policy,
                        quota,
                        store_failed: false,
                        fields: this.inner.fields[index].clone(),
                    },
                    Err(reason) => {
                        let allowed = this.inner.settings.failure == FailurePolicy::Open;
                        redis_store::warn_failure(&reason, allowed);
                        Checked {
                            decision: Decision {
                                allowed,
                                remaining: 0,
                                reset_us: 1_000_000,
                            },
                            policy,
                            quota,
                            store_failed: true,
                            fields: this.inner.fields[index].clone(),
                        }
                    }
                };
                this.record(index, &checked, || key_hash, None);
                checked
            }));
        }
        let _ = info;
        None
    }

    /// Counts the decision; logs a refusal under `request`, else under the
    /// current span.
    fn record(
        &self,
        index: usize,
        c: &Checked,
        key_hash: impl FnOnce() -> u64,
        request: Option<&tracing::Span>,
    ) {
        let slot = match (c.decision.allowed, c.store_failed) {
            (true, false) => 0,
            (false, false) => 1,
            (true, true) => 2,
            (false, true) => 3,
        };
        self.inner.counters[index][slot].increment(1);
        if !c.decision.allowed && !c.store_failed {
            let parent = request.map_or_else(|| tracing::Span::current().id(), tracing::Span::id);
            tracing::warn!(
                parent: parent,
                rate_limit.policy = &*c.policy,
                rate_limit.key_hash = format!("{:016x}", key_hash()),
                retry_after_ms = c.decision.reset_us / 1000,
                "rate limit exceeded"
            );
        }
    }
}

/// What identifies a client, borrowed from the request where it can be.
#[derive(Hash)]
enum ClientKey<'a> {
    Ip(IpAddr),
    Header(&'a [u8]),
    Custom(String),
    Unknown,
}

impl ClientKey<'_> {
    /// The in-memory store's key for this client under policy `index`:
    /// keyed SipHash (the random key keeps attackers from choosing clients
    /// that collide) over one tagged buffer, fed in one `write` (the derived
    /// `Hash` fed it in five, ~200 instructions more per request).
    fn memory_hash(&self, index: usize, hasher: &std::collections::hash_map::RandomState) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = hasher.build_hasher();
        let head = |tag: u8| {
            let mut b = [0u8; 25];
            b[0] = tag;
            b[1..9].copy_from_slice(&(index as u64).to_le_bytes());
            b
        };
        match self {
            Self::Ip(IpAddr::V4(a)) => {
                let mut b = head(b'4');
                b[9..13].copy_from_slice(&a.octets());
                h.write(&b[..13]);
            }
            Self::Ip(IpAddr::V6(a)) => {
                let mut b = head(b'6');
                b[9..25].copy_from_slice(&a.octets());
                h.write(&b);
            }
            // Tag and index are fixed-size, so what follows is unambiguous.
            Self::Header(v) => {
                h.write(&head(b'h')[..9]);
                h.write(v);
            }
            Self::Custom(v) => {
                h.write(&head(b'c')[..9]);
                h.write(v.as_bytes());
            }
            Self::Unknown => h.write(&head(b'u')[..9]),
        }
        h.finish()
    }

    /// FNV-1a 64 over a tagged encoding: every replica computes the same
    /// Redis key (the raw key never leaves the process). Hand-written: a
    /// stable hash is a dozen lines, not a dependency.
    #[cfg(feature = "redis")]
    fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        match self {
            Self::Ip(IpAddr::V4(a)) => {
                eat(b"4");
                eat(&a.octets());
            }
            Self::Ip(IpAddr::V6(a)) => {
                eat(b"6");
                eat(&a.octets());
            }
            Self::Header(v) => {
                eat(b"h");
                eat(v);
            }
            Self::Custom(s) => {
                eat(b"c");
                eat(s.as_bytes());
            }
            Self::Unknown => eat(b"u"),
        }
        h
    }
}

impl Checked {
    /// The response headers: `RateLimit-Policy` and `RateLimit` (draft-10
    /// syntax), `Retry-After` when refused, and the legacy `X-RateLimit-*`
    /// when asked for.
    ///
    /// The policy's field is made once per policy; per request one small
    /// value is written (`RateLimit`), two more when refused or legacy.
    pub fn headers(&self, legacy: bool) -> [Option<(&'static str, Bytes)>; 6] {
        let t = self.decision.reset_us.div_ceil(1_000_000);
        let remaining = u64::from(self.decision.remaining);
        // Sized exactly, so `Bytes` takes the allocation over instead of
        // adding a second one; digits by hand (`write!` cost ~400
        // instructions per request here).
        let mut rl = String::with_capacity(
            self.fields.1.len() + decimal::len_u64(remaining) + 3 + decimal::len_u64(t),
        );
        rl.push_str(&self.fields.1);
        let _ = decimal::write_u64(&mut rl, remaining);
        rl.push_str(";t=");
        let _ = decimal::write_u64(&mut rl, t);
        let mut h: [Option<(&'static str, Bytes)>; 6] = Default::default();
        h[0] = Some(("ratelimit-policy", self.fields.0.clone()));
        h[1] = Some(("ratelimit", Bytes::from(rl.into_bytes())));
        if !self.decision.allowed {
            h[2] = Some(("retry-after", decimal(t.max(1))));
        }
        if legacy {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                + t;
            h[3] = Some(("x-ratelimit-limit", decimal(u64::from(self.quota.count))));
            h[4] = Some(("x-ratelimit-remaining", decimal(remaining)));
            h[5] = Some(("x-ratelimit-reset", decimal(reset)));
        }
        h
    }

    /// The answer to a refused request: 429 (or 503 when the store failed
    /// closed) as an RFC 9457 problem.
    pub fn problem(&self) -> crate::Problem {
        if self.store_failed {
            return crate::Problem::new(503)
                .detail("the rate limiter cannot decide right now; try again shortly");
        }
        crate::Problem::new(429)
            .with_type("https://iana.org/assignments/http-problem-types#quota-exceeded")
            .title("Too Many Requests")
            .detail(format!(
                "the quota of {} requests per {} s is used up; retry in {} s",
                self.quota.count,
                self.quota.period.as_secs().max(1),
                self.decision.reset_us.div_ceil(1_000_000).max(1)
            ))
            .extension("violated-policies", vec![self.policy.to_string()])
    }
}

/// A Structured-Field string: quoted, `"` and `\` escaped, printable ASCII only.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `v` in decimal, in an exactly sized buffer (`Bytes` takes it over).
fn decimal(v: u64) -> Bytes {
    let mut buf = String::with_capacity(decimal::len_u64(v));
    let _ = decimal::write_u64(&mut buf, v);
    Bytes::from(buf.into_bytes())
}

#[cfg(test)]
mod tests;
