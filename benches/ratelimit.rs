//! ns per rate-limit decision: opskit's in-memory GCRA beside `governor`'s
//! keyed limiter, and opskit's Redis backend on a loopback `redis-server`
//! (started here when installed; `scripts/test` installs it).
//!
//! Run: `cargo bench -p opskit-benches --bench ratelimit`.

use opskit::ratelimit::{LimitSettings, Limiter, Quota, RequestInfo};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    flood_report();
    divan::main();
}

/// Resident memory of this process, in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// 1,000,000 distinct clients through a limiter with the default capacity
/// (100,000 keys) and a strict quota (10/1h: no bucket is whole again during
/// the flood, so the cap, not expiry, bounds memory): keys kept and resident
/// memory before and after, and a second million to show it stays flat.
fn flood_report() {
    let mut s = LimitSettings::default();
    s.default = Some(Quota::parse("10/1h").expect("quota"));
    let l = Limiter::new(s);
    let before = rss_bytes();
    let flood = |offset: u32| {
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(
                (offset + i).wrapping_mul(2_654_435_761),
            ));
            divan::black_box(l.check_memory(&request_from(ip)));
        }
    };
    flood(0);
    let after_first = rss_bytes();
    let keys = l.keys_in_memory();
    flood(1_000_000);
    let after_second = rss_bytes();
    println!(
        "key flood: {keys} keys kept after 1,000,000 distinct clients (capacity 100,000, quota 10/1h); \
         RSS {:.1} MiB before, {:.1} MiB after the first million (+{:.1} MiB), {:.1} MiB after a second million",
        before as f64 / 1_048_576.0,
        after_first as f64 / 1_048_576.0,
        after_first.saturating_sub(before) as f64 / 1_048_576.0,
        after_second as f64 / 1_048_576.0,
    );
}

/// 10,000 client addresses, used round-robin.
fn clients() -> Vec<IpAddr> {
    (0..10_000u32)
        .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

fn limiter(redis: Option<String>) -> Limiter {
    let mut s = LimitSettings::default();
    s.default = Some(Quota::parse("1000000/1m").expect("quota"));
    s.redis_url = redis.map(opskit::Secret::new);
    Limiter::new(s)
}

/// opskit, in memory: policy lookup, key, sharded GCRA step, decision counter.
#[divan::bench]
fn opskit_memory(b: divan::Bencher<'_, '_>) {
    let l = limiter(None);
    let ips = clients();
    let next = AtomicUsize::new(0);
    b.bench_local(|| {
        let ip = ips[next.fetch_add(1, Ordering::Relaxed) % ips.len()];
        let info = request_from(ip);
        divan::black_box(l.check_memory(&info).map(|c| c.decision.allowed))
    });
}

/// governor's keyed limiter (what tower_governor and actix-governor use),
/// keyed by the same addresses.
#[divan::bench]
fn governor_keyed(b: divan::Bencher<'_, '_>) {
    use std::num::NonZeroU32;
    let quota = governor::Quota::per_minute(NonZeroU32::new(1_000_000).expect("non-zero"));
    let g = governor::RateLimiter::keyed(quota);
    let ips = clients();
    let next = AtomicUsize::new(0);
    b.bench_local(|| {
        let ip = ips[next.fetch_add(1, Ordering::Relaxed) % ips.len()];
        divan::black_box(g.check_key(&ip).is_ok())
    });
}

fn no_header(_: &str) -> Option<&'static [u8]> {
    None
}

/// A `GET /users/7` from `ip`, without headers.
fn request_from(ip: IpAddr) -> RequestInfo<'static> {
    RequestInfo {
        method: "GET",
        path: "/users/7",
        client: Some(ip),
        header: &no_header,
    }
}

/// A `redis-server` on a free loopback port for the Redis benches.
struct RedisServer(std::process::Child, u16);

impl RedisServer {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self(child, port));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis server, a runtime and a limiter deciding in it; `None` (the
/// bench is skipped) without `redis-server`.
fn redis_limiter() -> Option<(RedisServer, tokio::runtime::Runtime, Limiter)> {
    let Some(server) = RedisServer::start() else {
        eprintln!("redis-server is not installed: skipped");
        return None;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let l = limiter(Some(format!("redis://127.0.0.1:{}/", server.1)));
    Some((server, rt, l))
}

/// opskit with Redis: one EVALSHA round trip per decision, one at a time.
#[divan::bench(sample_count = 200)]
fn opskit_redis_sequential(b: divan::Bencher<'_, '_>) {
    let Some((_server, rt, l)) = redis_limiter() else {
        return;
    };
    let ips = clients();
    let next = AtomicUsize::new(0);
    b.bench_local(|| {
        let ip = ips[next.fetch_add(1, Ordering::Relaxed) % ips.len()];
        let info = request_from(ip);
        divan::black_box(rt.block_on(l.check(&info)).map(|c| c.decision.allowed))
    });
}

/// opskit with Redis: 100 decisions in flight on the multiplexed connection
/// (time per batch; decisions/s = 100 / time).
#[divan::bench(sample_count = 50)]
fn opskit_redis_100_concurrent(b: divan::Bencher<'_, '_>) {
    let Some((_server, rt, l)) = redis_limiter() else {
        return;
    };
    let ips = clients();
    b.bench_local(|| {
        rt.block_on(futures_util::future::join_all(ips[..100].iter().map(
            |ip| {
                let l = &l;
                async move {
                    let info = request_from(*ip);
                    l.check(&info).await.map(|c| c.decision.allowed)
                }
            },
        )))
    });
}
