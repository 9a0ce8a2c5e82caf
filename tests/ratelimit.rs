//! Rate limiting: quotas, headers, client keys through proxies, Redis shared
//! by replicas and its outages — the same in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{eventually_every, Kind, Redis, Response, Starter};
use std::time::Duration;

opskit_conformance::conformance!(
    five_per_minute_admits_five_then_answers_429,
    spoofed_forwarded_for_does_not_change_the_key,
    route_policies_exemptions_and_legacy_headers,
    burst_sets_how_many_pass_at_once,
    header_keys_give_each_value_its_own_quota,
    the_builders_custom_key_gives_each_user_its_own_quota,
    forwarded_header_names_the_client,
    replicas_share_one_quota_in_redis,
    a_redis_outage_follows_the_failure_policy,
);

fn get(s: &Starter, path: &str, headers: &[(&str, &str)]) -> Response {
    s.request("GET", path, headers, b"").unwrap()
}

fn five_per_minute_admits_five_then_answers_429(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "5/1m"),
            ("OPSKIT_CORS_ORIGINS", "https://app.example"),
        ],
    );
    // A CORS preflight never counts against the quota.
    let pre = s
        .request(
            "OPTIONS",
            "/",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
            b"",
        )
        .unwrap();
    assert_eq!(pre.status, 204);
    for remaining in (0..5).rev() {
        let r = get(&s, "/", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy"), Some(r#""default";q=5;w=60"#));
        let rl = r.header("ratelimit").unwrap();
        assert!(
            rl.starts_with(&format!(r#""default";r={remaining};t="#)),
            "{rl}"
        );
    }
    let r = get(&s, "/", &[("origin", "https://app.example")]);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(body["violated-policies"][0], "default");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert!(r
        .header("ratelimit")
        .unwrap()
        .starts_with(r#""default";r=0;t="#));
    // The 429 carries CORS and security headers, so browser code can read it.
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // Probes are never limited, and the rejection was logged with a hashed key.
    assert_eq!(get(&s, "/livez", &[]).status, 200);
    assert!(s.wait_for_output("rate limit exceeded", Duration::from_secs(5)));
    let out = s.output().join("\n");
    assert!(
        out.contains("rate limit exceeded") && out.contains("rate_limit.key_hash"),
        "{out}"
    );
    assert!(!out.contains("ip:127.0.0.1"));
    let metrics = get(&s, "/metrics", &[]).text();
    assert!(
        metrics.contains(
            r#"opskit_rate_limit_decisions_total{policy="default",decision="rejected"} 1"#
        ),
        "{metrics}"
    );
}

fn spoofed_forwarded_for_does_not_change_the_key(kind: Kind) {
    // The peer (127.0.0.1) is not a trusted proxy: headers are ignored.
    let s = Starter::spawn(kind, &[("OPSKIT_RATE_LIMIT", "2/1m")]);
    let statuses: Vec<u16> = ["1.1.1.1", "2.2.2.2", "3.3.3.3"]
        .iter()
        .map(|ip| get(&s, "/", &[("x-forwarded-for", ip)]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    // Through a trusted proxy, the right-most untrusted entry is the client.
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "2/1m"),
            ("OPSKIT_TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8"),
        ],
    );
    let xff = |v: &str| get(&s, "/", &[("x-forwarded-for", v)]).status;
    assert_eq!(xff("203.0.113.1"), 200);
    assert_eq!(xff("203.0.113.1, 10.0.0.7"), 200);
    // A client prepending a fake address is still itself.
    assert_eq!(xff("6.6.6.6, 203.0.113.1"), 429);
    assert_eq!(xff("203.0.113.2"), 200);
    // IPv6 clients share a quota per /64.
    assert_eq!(xff("2001:db8:1:2::1"), 200);
    assert_eq!(xff("2001:db8:1:2::ffff"), 200);
    assert_eq!(xff("2001:db8:1:2:3::9"), 429);
    assert_eq!(xff("2001:db8:1:3::1"), 200);
}

fn route_policies_exemptions_and_legacy_headers(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "100/1m"),
            ("OPSKIT_RATE_LIMIT_ROUTES", "/users/*=1/1m,/demo/*=off"),
            ("OPSKIT_RATE_LIMIT_LEGACY_HEADERS", "true"),
        ],
    );
    let r = get(&s, "/users/1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), Some(r#""/users/*";q=1;w=60"#));
    assert_eq!(r.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        r.header("x-ratelimit-reset")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1_700_000_000
    );
    assert_eq!(get(&s, "/users/2", &[]).status, 429);
    // Another policy, another bucket; exempt routes carry no headers.
    assert_eq!(get(&s, "/", &[]).status, 200);
    let r = get(&s, "/demo/slow?ms=1", &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit").is_none());
    // Off by default.
    let s = Starter::spawn(kind, &[]);
    assert!(get(&s, "/", &[]).header("ratelimit").is_none());
}

/// `OPSKIT_RATE_LIMIT_BURST` is how many requests pass at once, below or
/// above the quota; the policy header still states the quota.
fn burst_sets_how_many_pass_at_once(kind: Kind) {
    // One request per 6 minutes on average: none is refilled during the test.
    for (burst, admitted) in [("3", 3), ("5", 5)] {
        let quota = if burst == "3" { "10/1h" } else { "2/1h" };
        let s = Starter::spawn(
            kind,
            &[
                ("OPSKIT_RATE_LIMIT", quota),
                ("OPSKIT_RATE_LIMIT_BURST", burst),
            ],
        );
        let first = get(&s, "/", &[]);
        let q = quota.split('/').next().unwrap();
        assert_eq!(
            first.header("ratelimit-policy"),
            Some(format!(r#""default";q={q};w=3600"#).as_str())
        );
        let rl = first.header("ratelimit").unwrap();
        assert!(
            rl.starts_with(&format!(r#""default";r={};t="#, admitted - 1)),
            "burst {burst}: {rl}"
        );
        let statuses: Vec<u16> = std::iter::once(first.status)
            .chain((0..admitted).map(|_| get(&s, "/", &[]).status))
            .collect();
        let mut expected = vec![200; admitted];
        expected.push(429);
        assert_eq!(statuses, expected, "quota {quota}, burst {burst}");
    }
}

/// `OPSKIT_RATE_LIMIT_KEY=header:x-api-key`: each value of the header has its
/// own quota, whatever the address; requests without it are keyed by IP.
fn header_keys_give_each_value_its_own_quota(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "1/1m"),
            ("OPSKIT_RATE_LIMIT_KEY", "header:x-api-key"),
        ],
    );
    let key = |k: &str| get(&s, "/", &[("x-api-key", k)]).status;
    assert_eq!(key("team-a"), 200);
    assert_eq!(key("team-a"), 429);
    assert_eq!(key("team-b"), 200, "another value, another quota");
    assert_eq!(key("team-b"), 429);
    // Without the header: the IP's own quota, not shared with any key.
    assert_eq!(get(&s, "/", &[]).status, 200);
    assert_eq!(get(&s, "/", &[]).status, 429);
    assert_eq!(key("team-c"), 200);
}

/// `Builder::rate_limit_key` (the starter's `APP_DEMO_RATE_LIMIT_KEY` hook
/// keys by the `Authorization` bearer token): each user has its own quota,
/// all from one address and whatever `OPSKIT_RATE_LIMIT_KEY` says; requests
/// for which the key gives `None` (no token) are keyed by IP.
fn the_builders_custom_key_gives_each_user_its_own_quota(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "1/1m"),
            ("APP_DEMO_RATE_LIMIT_KEY", "true"),
            // The key set in code replaces the configured one.
            ("OPSKIT_RATE_LIMIT_KEY", "header:x-api-key"),
        ],
    );
    let user = |token: &str| {
        let auth = format!("Bearer {token}");
        get(
            &s,
            "/",
            &[("authorization", &auth), ("x-api-key", "shared")],
        )
        .status
    };
    assert_eq!(user("alice"), 200);
    assert_eq!(user("alice"), 429);
    assert_eq!(user("bob"), 200, "another user, another quota");
    assert_eq!(user("bob"), 429);
    // Without a token: the IP's own quota, shared with no user.
    assert_eq!(get(&s, "/", &[]).status, 200);
    assert_eq!(get(&s, "/", &[]).status, 429);
    assert_eq!(user("carol"), 200);
    // The rejection is logged with the key hashed, never the token.
    s.expect_line("the rejection", Duration::from_secs(5), |l| {
        l.contains("rate limit exceeded")
    });
    assert!(
        !s.output().iter().any(|l| l.contains("alice")),
        "a key reached the log"
    );
}

/// `OPSKIT_FORWARDED_HEADER=forwarded`: through a trusted proxy the client is
/// the right-most untrusted `for=` of RFC 7239 `Forwarded` (quoted IPv6 with
/// a port included); `X-Forwarded-For` is then ignored.
fn forwarded_header_names_the_client(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "2/1m"),
            ("OPSKIT_TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8"),
            ("OPSKIT_FORWARDED_HEADER", "forwarded"),
        ],
    );
    let fwd = |v: &str| get(&s, "/", &[("forwarded", v)]).status;
    assert_eq!(fwd("for=203.0.113.1;proto=https"), 200);
    assert_eq!(
        fwd("for=6.6.6.6, for=203.0.113.1;proto=http, for=10.0.0.7"),
        200
    );
    assert_eq!(fwd("for=\"203.0.113.1:4711\""), 429);
    assert_eq!(fwd(r#"for="[2001:db8:1:2::1]:4711""#), 200);
    assert_eq!(fwd("for=\"[2001:db8:1:2::ffff]\""), 200);
    assert_eq!(fwd(r#"for="[2001:db8:1:2::9]""#), 429, "one quota per /64");
    // X-Forwarded-For is not read: both requests are the peer's.
    let xff = |v: &str| get(&s, "/", &[("x-forwarded-for", v)]).status;
    assert_eq!((xff("198.51.100.1"), xff("198.51.100.2")), (200, 200));
    assert_eq!(xff("198.51.100.3"), 429);
    // The access log names the same client.
    let r = s
        .request(
            "GET",
            "/users/1",
            &[("forwarded", "for=192.0.2.60"), ("x-request-id", "fwd-log")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let line = s.expect_json_line("access line of fwd-log", Duration::from_secs(10), |v| {
        v["target"] == "opskit::access" && v["request_id"] == "fwd-log"
    });
    assert_eq!(line["client.address"], "192.0.2.60");
    assert_eq!(line["network.peer.address"], "127.0.0.1");
}

fn redis_env(redis: &Redis, quota: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OPSKIT_RATE_LIMIT", quota.to_owned()),
        ("OPSKIT_RATE_LIMIT_REDIS_URL", redis.url()),
        ("OPSKIT_RATE_LIMIT_REDIS_TIMEOUT", "200ms".to_owned()),
    ]
}

fn spawn_with(kind: Kind, env: &[(&'static str, String)], extra: &[(&str, &str)]) -> Starter {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    Starter::spawn(kind, &all)
}

fn replicas_share_one_quota_in_redis(kind: Kind) {
    let redis = Redis::start();
    let env = redis_env(&redis, "10/1m");
    let a = spawn_with(kind, &env, &[]);
    let b = spawn_with(kind, &env, &[]);
    let mut admitted = 0;
    for i in 0..30 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = get(s, "/", &[]);
        match r.status {
            200 => admitted += 1,
            429 => assert!(r.header("retry-after").is_some()),
            other => panic!("status {other}"),
        }
    }
    assert_eq!(admitted, 10, "two replicas, one quota of 10");
}

fn a_redis_outage_follows_the_failure_policy(kind: Kind) {
    let mut redis = Redis::start();
    let env = redis_env(&redis, "3/1m");
    let open = spawn_with(kind, &env, &[]);
    let closed = spawn_with(kind, &env, &[("OPSKIT_RATE_LIMIT_FAILURE", "closed")]);
    let statuses: Vec<u16> = (0..4).map(|_| get(&open, "/", &[]).status).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // A hung Redis: each decision gives up after the 200 ms timeout.
    redis.freeze(true);
    let t = std::time::Instant::now();
    assert_eq!(get(&open, "/", &[]).status, 200);
    assert_eq!(get(&closed, "/", &[]).status, 503);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    redis.freeze(false);
    redis.kill();
    // Fail-open admits, fail-closed refuses with 503; neither hangs.
    let t = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(get(&open, "/", &[]).status, 200);
        assert_eq!(get(&closed, "/", &[]).status, 503);
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(get(&open, "/livez", &[]).status, 200);
    let metrics = get(&open, "/metrics", &[]).text();
    assert!(
        metrics.contains(r#"decision="allowed_store_failed"} 6"#),
        "{metrics}"
    );
    assert!(open.wait_for_output("Redis cannot decide", Duration::from_secs(5)));
    // Fail-closed counts each refusal: the frozen one and the five above.
    let metrics = get(&closed, "/metrics", &[]).text();
    assert!(
        metrics.contains(
            r#"opskit_rate_limit_decisions_total{policy="default",decision="rejected_store_failed"} 6"#
        ),
        "{metrics}"
    );
    // Redis back (empty): limits apply again — fail-open only ever admits,
    // so a 429 proves Redis decides once more.
    redis.resume();
    eventually_every(
        "limits come back after Redis restarted (a 429)",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match get(&open, "/users/1", &[]).status {
            429 => Ok(()),
            other => Err(other),
        },
    );
}
