//! Built-in checks, each one line to register:
//!
//! ```no_run
//! use opskit::health::checks;
//! # fn f(ops: &opskit::Ops) {
//! ops.health().register(checks::tcp("broker", "127.0.0.1:5672"));
//! ops.health().register(checks::http("billing", "http://billing:8080/readyz", 200));
//! ops.health().register(checks::disk_free("disk", "/", 1 << 30).critical(false));
//! ops.health().register(checks::memory_rss("memory", 2 << 30).critical(false));
//! # #[cfg(feature = "postgres")]
//! ops.health().register(checks::postgres("postgres", "postgres://app@db/app"));
//! # #[cfg(feature = "redis")]
//! ops.health().register(checks::redis("redis", "redis://cache:6379"));
//! # }
//! ```
//!
//! Failure messages never repeat a URL given here (it may hold credentials):
//! they name what failed and why, and at most the host and port.

use super::Check;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Passes when a TCP connection to `addr` (`host:port`) opens.
pub fn tcp(name: &str, addr: impl Into<String>) -> Check {
    let addr = addr.into();
    Check::new(name, move || {
        let addr = addr.clone();
        async move {
            tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(drop)
                .map_err(|e| format!("cannot connect: {}", e.kind()))
        }
    })
}

/// Passes when `GET url` answers `expected_status` (plain `http://` only).
///
/// A minimal HTTP/1.1 GET written here, over tokio, rather than a client
/// crate: a probe needs the status line only, and this keeps an HTTP client
/// stack out of the default build.
pub fn http(name: &str, url: &str, expected_status: u16) -> Check {
    let parsed = url::Url::parse(url);
    Check::new(name, move || {
        let parsed = parsed.clone();
        async move {
            let url = parsed.map_err(|_| "the URL is invalid".to_owned())?;
            if url.scheme() != "http" {
                return Err("only http:// URLs are supported".to_owned());
            }
            let host = url.host_str().ok_or("the URL has no host")?.to_owned();
            let port = url.port_or_known_default().unwrap_or(80);
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("cannot connect: {}", e.kind()))?;
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: opskit-health\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(req.as_bytes())
                .await
                .map_err(|e| format!("cannot send: {}", e.kind()))?;
            let mut head = [0u8; 32];
            let n = stream
                .read(&mut head)
                .await
                .map_err(|e| format!("cannot read: {}", e.kind()))?;
            let line = std::str::from_utf8(&head[..n]).unwrap_or("");
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("the answer is not HTTP")?;
            if status == expected_status {
                Ok(())
            } else {
                Err(format!("answered {status}, expected {expected_status}"))
            }
        }
    })
}

/// Passes while the file system holding `path` has at least `min_free_bytes`
/// available to unprivileged users.
pub fn disk_free(name: &str, path: impl Into<std::path::PathBuf>, min_free_bytes: u64) -> Check {
    let path = path.into();
    Check::new(name, move || {
        let path = path.clone();
        async move {
            let stat = nix::sys::statvfs::statvfs(&path)
                .map_err(|e| format!("cannot stat the file system: {e}"))?;
            #[allow(clippy::useless_conversion)] // the field types differ between platforms
            let free = u64::from(stat.blocks_available()) * u64::from(stat.fragment_size());
            if free >= min_free_bytes {
                Ok(())
            } else {
                Err(format!("{free} bytes free, below {min_free_bytes}"))
            }
        }
    })
    .timeout(Duration::from_secs(1))
}

/// Passes while this process' resident memory stays under `max_rss_bytes`
/// (Linux: `/proc/self/statm`).
pub fn memory_rss(name: &str, max_rss_bytes: u64) -> Check {
    Check::new(name, move || async move {
        let rss = resident_bytes().ok_or("cannot read /proc/self/statm")?;
        if rss <= max_rss_bytes {
            Ok(())
        } else {
            Err(format!(
                "resident memory {rss} bytes, above {max_rss_bytes}"
            ))
        }
    })
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// Passes when PostgreSQL at `url` accepts a connection and answers `SELECT 1`
/// (feature `postgres`; a new connection per run, so credentials and
/// `pg_hba` problems show up too; results are cached like any check).
#[cfg(feature = "postgres")]
pub fn postgres(name: &str, url: &str) -> Check {
    let config = url
        .parse::<tokio_postgres::Config>()
        .map_err(|_| "the PostgreSQL URL is invalid".to_owned());
    Check::new(name, move || {
        let config = config.clone();
        async move {
            let config = config?;
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot connect: {}", pg_reason(&e)))?;
            let conn = tokio::spawn(connection);
            let result = client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| format!("SELECT 1 failed: {}", pg_reason(&e)));
            drop(client);
            let _ = conn.await;
            result
        }
    })
}

#[cfg(feature = "postgres")]
fn pg_reason(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => db.code().code().to_owned(),
        (None, Some(src)) => src.to_string(),
        (None, None) => e.to_string(),
    }
}

/// Passes when Redis at `url` answers `PING` (feature `redis`).
///
/// Connecting and `PING` each get [`REDIS_TIMEOUT`], well inside the check's
/// timeout, so that a frozen Redis (one that accepts connections and never
/// answers) fails with a reason that says so: `timed out after 1 s
/// connecting to 127.0.0.1:6379`. The reason names the host and port, never
/// the URL's credentials.
#[cfg(feature = "redis")]
pub fn redis(name: &str, url: &str) -> Check {
    let client = redis::Client::open(url);
    Check::new(name, move || {
        let client = client.clone();
        async move {
            let client = client.map_err(|_| "the Redis URL is invalid".to_owned())?;
            let target = client.get_connection_info().addr().to_string();
            let secs = REDIS_TIMEOUT.as_secs_f64();
            // opskit's own timeouts (below), so that a timeout is told apart.
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(None)
                .set_response_timeout(None);
            let mut conn = tokio::time::timeout(
                REDIS_TIMEOUT,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await
            .map_err(|_| format!("timed out after {secs} s connecting to {target}"))?
            .map_err(|e| format!("cannot connect to {target}: {}", redis_failure(&e)))?;
            let pong: String =
                tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                    .await
                    .map_err(|_| format!("no answer to PING from {target} within {secs} s"))?
                    .map_err(|e| format!("PING to {target} failed: {}", redis_failure(&e)))?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err("PING did not answer PONG".to_owned())
            }
        }
    })
}

/// How long the Redis check waits to connect, then for `PING`'s answer.
#[cfg(feature = "redis")]
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// What went wrong, in words (a Redis error's `Display` may repeat what
/// the server or the URL said).
#[cfg(feature = "redis")]
fn redis_failure(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_dropped() {
        "the connection was closed".to_owned()
    } else {
        format!("{:?} error", e.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_and_http_against_a_local_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            }
        });
        assert_eq!((tcp("t", addr.to_string()).run)().await, Ok(()));
        let url = format!("http://{addr}/readyz");
        assert_eq!((http("h", &url, 204).run)().await, Ok(()));
        let wrong = (http("h", &url, 200).run)().await.unwrap_err();
        assert_eq!(wrong, "answered 204, expected 200");
        let refused = (tcp("t", "127.0.0.1:1").run)().await.unwrap_err();
        assert!(refused.starts_with("cannot connect"), "{refused}");
        assert!(!refused.contains("127.0.0.1"));
    }

    #[tokio::test]
    async fn disk_and_memory_thresholds() {
        assert_eq!((disk_free("d", "/", 1).run)().await, Ok(()));
        assert!((disk_free("d", "/", u64::MAX).run)().await.is_err());
        assert_eq!((memory_rss("m", u64::MAX).run)().await, Ok(()));
        assert!((memory_rss("m", 1).run)().await.is_err());
    }
}
