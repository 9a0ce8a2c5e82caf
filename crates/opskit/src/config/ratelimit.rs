//! The rate-limit variables: quotas, client keys, trusted proxies and the
//! Redis store.

use super::parse::{items, one_of, Bounded, FromVar, HeaderName, Reader};
use super::VarSpec;

pub(super) const RATE_LIMIT: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT",
    "a quota such as 100/1m, or off",
    Some("off"),
    "Requests per client per period for routes no policy names (see docs/rate-limiting.md).",
);
pub(super) const RATE_LIMIT_BURST: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_BURST",
    "a whole number above 0",
    None,
    "Requests a client may make at once. Unset: the whole quota.",
);
pub(super) const RATE_LIMIT_ROUTES: VarSpec = VarSpec::new("OPSKIT_RATE_LIMIT_ROUTES", "a comma-separated list of path=quota or path=off", None, "Per-route policies, first match wins; a path ending in `*` is a prefix: `/auth/*=5/1m,/public/*=off`.");
pub(super) const RATE_LIMIT_KEY: VarSpec = VarSpec::new("OPSKIT_RATE_LIMIT_KEY", "ip, or header:<name>", Some("ip"), "What identifies a client: its IP (IPv6 by prefix), or a header such as `header:x-api-key` (IP when absent).");
pub(super) const TRUSTED_PROXIES: VarSpec = VarSpec::new("OPSKIT_TRUSTED_PROXIES", "a comma-separated list of CIDRs", None, "Proxies whose forwarding header is believed for the client IP. Unset: the socket peer is the client.");
pub(super) const FORWARDED_HEADER: VarSpec = VarSpec::new(
    "OPSKIT_FORWARDED_HEADER",
    "x-forwarded-for or forwarded",
    Some("x-forwarded-for"),
    "Which header trusted proxies set.",
);
pub(super) const RATE_LIMIT_IPV6_PREFIX: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_IPV6_PREFIX",
    "a prefix length from 32 to 128",
    Some("64"),
    "IPv6 clients share a quota per prefix of this length.",
);
pub(super) const RATE_LIMIT_LEGACY_HEADERS: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_LEGACY_HEADERS",
    "true or false",
    Some("false"),
    "Also send `X-RateLimit-Limit`, `-Remaining`, `-Reset`.",
);
pub(super) const RATE_LIMIT_CAPACITY: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_CAPACITY",
    "a whole number from 64 to 100000000",
    Some("100000"),
    "Most client keys kept in memory (about 40 bytes each).",
);
pub(super) const RATE_LIMIT_REDIS_URL: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_REDIS_URL",
    "a redis:// URL",
    None,
    "Keep the quotas in Redis, shared by every replica (feature `redis`).",
)
.secret();
pub(super) const RATE_LIMIT_REDIS_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_REDIS_TIMEOUT",
    "a duration such as 100ms",
    Some("100ms"),
    "Longest wait for Redis per decision.",
);
pub(super) const RATE_LIMIT_FAILURE: VarSpec = VarSpec::new(
    "OPSKIT_RATE_LIMIT_FAILURE",
    "open or closed",
    Some("open"),
    "When Redis cannot decide: admit (`open`) or refuse with 503 (`closed`).",
);

/// `100/1m` or `off`.
struct QuotaVar(Option<crate::ratelimit::Quota>);

impl FromVar for QuotaVar {
    fn from_var(value: &str) -> Result<Self, String> {
        if value.trim().eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        crate::ratelimit::Quota::parse(value).map(|q| Self(Some(q)))
    }
}

struct RoutesVar(Vec<crate::ratelimit::RoutePolicy>);

impl FromVar for RoutesVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, item) in items(value) {
            let (path, quota) = item
                .rsplit_once('=')
                .ok_or_else(|| format!("item {n} is not path=quota"))?;
            if !path.starts_with('/') {
                return Err(format!("item {n}: the path does not start with /"));
            }
            let quota = QuotaVar::from_var(quota)
                .map_err(|e| format!("item {n}: {e}"))?
                .0;
            out.push(crate::ratelimit::RoutePolicy {
                pattern: path.trim().to_owned(),
                quota,
            });
        }
        Ok(Self(out))
    }
}

struct KeyVar(crate::ratelimit::KeyBy);

impl FromVar for KeyVar {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("ip") {
            return Ok(Self(crate::ratelimit::KeyBy::Ip));
        }
        match v.split_once(':') {
            Some((kind, h)) if kind.eq_ignore_ascii_case("header") && !h.trim().is_empty() => {
                let HeaderName(h) = HeaderName::from_var(h)
                    .map_err(|_| "the part after header: is not a valid header name".to_owned())?;
                Ok(Self(crate::ratelimit::KeyBy::Header(h)))
            }
            _ => Err("the value is not ip or header:<name>".to_owned()),
        }
    }
}

/// A `redis://` or `rediss://` URL (a secret: it may carry a password).
struct RedisUrl(crate::Secret);

impl FromVar for RedisUrl {
    fn from_var(value: &str) -> Result<Self, String> {
        let url = url::Url::parse(value.trim())
            .map_err(|_| "the value is not a URL (value not shown)".to_owned())?;
        if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none() {
            return Err(
                "the value is not a redis:// or rediss:// URL with a host (value not shown)"
                    .to_owned(),
            );
        }
        Ok(Self(crate::Secret::new(value.trim())))
    }
}

/// `OPSKIT_FORWARDED_HEADER`.
struct ForwardedVar(crate::ratelimit::ForwardedHeader);

impl FromVar for ForwardedVar {
    fn from_var(value: &str) -> Result<Self, String> {
        use crate::ratelimit::ForwardedHeader;
        one_of(
            value,
            &[
                ("x-forwarded-for", ForwardedHeader::XForwardedFor),
                ("forwarded", ForwardedHeader::Forwarded),
            ],
        )
        .map(Self)
    }
}

/// `OPSKIT_RATE_LIMIT_FAILURE`.
struct FailureVar(crate::ratelimit::FailurePolicy);

impl FromVar for FailureVar {
    fn from_var(value: &str) -> Result<Self, String> {
        use crate::ratelimit::FailurePolicy;
        one_of(
            value,
            &[
                ("open", FailurePolicy::Open),
                ("closed", FailurePolicy::Closed),
            ],
        )
        .map(Self)
    }
}

struct Cidrs(Vec<crate::ratelimit::Cidr>);

impl FromVar for Cidrs {
    fn from_var(value: &str) -> Result<Self, String> {
        items(value)
            .map(|(n, item)| {
                crate::ratelimit::Cidr::parse(item).map_err(|e| format!("item {n}: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Reads every rate-limit variable through `r` (each problem is recorded
/// there), then combines them: `None` when one is invalid.
pub(super) fn read(r: &mut Reader<'_>) -> Option<crate::ratelimit::LimitSettings> {
    use crate::ratelimit::LimitSettings;
    // Every check is part of a parser read through `r`: each invalid
    // variable is reported, none hides the next.
    let quota: Option<QuotaVar> = r.read(&RATE_LIMIT);
    let burst: Option<Bounded<1, { u32::MAX as u64 }>> = r.read(&RATE_LIMIT_BURST);
    let routes: Option<RoutesVar> = r.read(&RATE_LIMIT_ROUTES);
    let key: Option<KeyVar> = r.read(&RATE_LIMIT_KEY);
    let trusted: Option<Cidrs> = r.read(&TRUSTED_PROXIES);
    let forwarded_header: Option<ForwardedVar> = r.read(&FORWARDED_HEADER);
    let prefix: Option<Bounded<32, 128>> = r.read(&RATE_LIMIT_IPV6_PREFIX);
    let legacy = r.read(&RATE_LIMIT_LEGACY_HEADERS);
    let capacity: Option<Bounded<64, 100_000_000>> = r.read(&RATE_LIMIT_CAPACITY);
    let redis: Option<RedisUrl> = r.read(&RATE_LIMIT_REDIS_URL);
    let timeout = r.read(&RATE_LIMIT_REDIS_TIMEOUT);
    let failure: Option<FailureVar> = r.read(&RATE_LIMIT_FAILURE);
    // An invalid burst is in the report, which refuses the settings.
    let burst = burst.map(|b| b.0 as u32);
    let with_burst = |q: crate::ratelimit::Quota| match burst {
        Some(b) => q.with_burst(b),
        None => q,
    };
    let mut routes = routes.map(|r| r.0).unwrap_or_default();
    for route in &mut routes {
        route.quota = route.quota.map(with_burst);
    }
    Some(LimitSettings {
        default: quota?.0.map(with_burst),
        routes,
        exempt: Vec::new(),
        key_by: key?.0,
        trusted_proxies: trusted.map(|t| t.0).unwrap_or_default(),
        forwarded_header: forwarded_header?.0,
        ipv6_prefix: prefix?.0 as u8,
        legacy_headers: legacy?,
        capacity: capacity?.0 as usize,
        redis_url: redis.map(|d| d.0),
        redis_timeout: timeout?,
        failure: failure?.0,
    })
}
