//! Hostile clients and rolling deploys (issue 15, group B): slow-header
//! connections under a descriptor limit, keep-alive clients across a
//! SIGTERM, a request cut at the shutdown deadline, probe answers kept out
//! of Sentry, and readiness with a frozen Redis — the same in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{eventually, eventually_every, Kind, Redis, SentryReceiver, Starter};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    slow_header_connections_do_not_starve_new_clients,
    idle_and_slow_connections_close_after_their_timeouts,
    a_rolling_deploy_with_a_delay_loses_no_request,
    a_rolling_deploy_without_a_delay_is_measured,
    a_request_cut_at_the_shutdown_deadline_is_answered_503_and_logged_as_shutdown,
    probe_answers_are_never_reported_to_sentry,
    a_frozen_redis_does_not_hold_readiness_answers,
);

/// Sends `GET path` on a new connection and returns the time to the first
/// byte of the answer, or `None` if nothing came within `bound`.
fn time_to_first_byte(addr: SocketAddr, path: &str, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, bound).ok()?;
    s.set_read_timeout(Some(bound)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(1) => Some(started.elapsed()),
        _ => None,
    }
}

fn slow_header_connections_do_not_starve_new_clients(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    // 256 descriptors for the server, as a small container might have.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &s.pid().to_string(), "--nofile=256:256"])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(limited.success());
    // 300 clients that send part of a request head, then nothing.
    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(mut c) = TcpStream::connect_timeout(&s.addr, Duration::from_secs(2)) else {
            continue;
        };
        if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").is_ok() {
            held.push(c);
        }
    }
    assert!(
        held.len() > 256,
        "only {} slow connections opened",
        held.len()
    );
    // Until the server has accepted all it can: every descriptor in use.
    let fds = format!("/proc/{}/fd", s.pid());
    eventually(
        "the server uses all 256 descriptors",
        Duration::from_secs(10),
        || match std::fs::read_dir(&fds).map(Iterator::count) {
            Ok(n) if n >= 256 => Ok(()),
            other => Err(other),
        },
    );
    let ttfb = time_to_first_byte(s.addr, "/livez", Duration::from_secs(40));
    eprintln!(
        "{}: time to first byte for a new client with {} slow-header connections held: {ttfb:?}",
        kind.bin_name(),
        held.len()
    );
    assert!(
        ttfb.is_some(),
        "a new client got no answer while slow-header connections were held"
    );
    drop(held);
}

/// Waits (up to `bound`) for the server to close `c`; the bytes it sent first.
fn closed_by_server(c: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    c.set_read_timeout(Some(bound)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => return None, // still open at the bound
        }
    }
}

fn idle_and_slow_connections_close_after_their_timeouts(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_KEEP_ALIVE_TIMEOUT", "1s"),
            ("OPSKIT_HEADER_READ_TIMEOUT", "1s"),
        ],
    );
    // Keep-alive works, and an idle connection is closed after its timeout.
    let mut c = TcpStream::connect(s.addr).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for _ in 0..2 {
        c.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut r).unwrap(), (200, false));
    }
    let idle = closed_by_server(&mut c, Duration::from_secs(4));
    assert_eq!(idle, Some(Vec::new()), "the idle connection was closed");
    // A request head that never ends: the connection is closed (Actix
    // answers 408 first).
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let answer = closed_by_server(&mut slow, Duration::from_secs(4))
        .expect("the slow-header connection was closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

/// What one keep-alive client saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicUsize,
    /// Requests written (or being written) that got no complete response.
    failed: AtomicUsize,
    /// New connections refused (the listener is closed): not failures.
    refused: AtomicUsize,
    /// Responses that carried `Connection: close`.
    closed_by_server: AtomicUsize,
    /// Clients that got their first answer.
    serving: AtomicUsize,
}

/// Reads one response (status line, headers, `Content-Length` body);
/// returns the status and whether it asked to close the connection.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("closed before a response"));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(bad("closed in the head"));
        }
        if h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().map_err(|_| bad("content-length"))?;
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok((status, close))
}

/// One client of the pool: its own keep-alive connection, one request at a
/// time, a new connection when the server asks to close; ends when a new
/// connection is refused after `signalled`, or at `stop`.
fn keep_alive_client(
    addr: SocketAddr,
    path: String,
    tally: Arc<Tally>,
    signalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut fresh_flag = false;
    let mut first = true;
    while !stop.load(Ordering::Acquire) {
        if conn.is_none() {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    s.set_nodelay(true).unwrap();
                    let r = BufReader::new(s.try_clone().unwrap());
                    conn = Some((s, r));
                    fresh_flag = true;
                }
                Err(_) if signalled.load(Ordering::Acquire) => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => panic!("cannot connect before the signal: {e}"),
            }
        }
        let fresh = fresh_flag;
        fresh_flag = false;
        let (w, r) = conn.as_mut().unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let answered = w.write_all(req.as_bytes()).and_then(|()| read_response(r));
        match answered {
            Ok((200, close)) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut first) {
                    tally.serving.fetch_add(1, Ordering::Release);
                }
                if close {
                    tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                }
            }
            Ok((status, _)) => panic!("{path} answered {status}"),
            Err(e) => {
                eprintln!("request lost (first on its connection: {fresh}): {e}");
                tally.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Drives `clients` keep-alive clients at steady load, sends SIGTERM, and
/// returns the tally, whether `/readyz` answered 503 after the signal (on
/// new connections, as a kubelet probes), and the exit code.
fn rolling_deploy(kind: Kind, delay: &str, clients: usize) -> (Arc<Tally>, bool, Option<i32>) {
    let mut s = Starter::spawn(kind, &[("OPSKIT_SHUTDOWN_DELAY", delay)]);
    let addr = s.addr;
    let tally = Arc::new(Tally::default());
    let signalled = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pool: Vec<_> = (0..clients)
        .map(|i| {
            // Half quick requests, half with 30 ms in the handler, so that
            // requests are in flight when the signal comes.
            let path = if i % 2 == 0 {
                "/users/1".to_owned()
            } else {
                "/demo/slow?ms=30".to_owned()
            };
            let (t, sig, st) = (tally.clone(), signalled.clone(), stop.clone());
            thread::spawn(move || keep_alive_client(addr, path, t, sig, st))
        })
        .collect();
    eventually(
        "every client of the pool served",
        Duration::from_secs(10),
        || match tally.serving.load(Ordering::Acquire) {
            n if n == clients => Ok(()),
            n => Err(n),
        },
    );
    s.signal("TERM");
    signalled.store(true, Ordering::Release);
    // Probe on new connections until the listener is closed.
    let mut saw_503 = false;
    eventually(
        "the listener closes",
        Duration::from_secs(20),
        || match opskit_conformance::request(addr, "GET", "/readyz", &[], b"") {
            Ok(r) => {
                saw_503 |= r.status == 503;
                Err(r.status)
            }
            Err(_) => Ok(()),
        },
    );
    let code = s.wait_exit(Duration::from_secs(40)).map(|st| st.code());
    stop.store(true, Ordering::Release);
    for c in pool {
        c.join().unwrap();
    }
    eprintln!(
        "{} delay {delay}: {clients} keep-alive clients: ok {}, failed {}, refused after close {}, responses with Connection: close {}, /readyz 503 seen: {saw_503}",
        kind.bin_name(),
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.closed_by_server.load(Ordering::Relaxed),
    );
    (tally, saw_503, code.flatten())
}

fn a_rolling_deploy_with_a_delay_loses_no_request(kind: Kind) {
    let (tally, saw_503, code) = rolling_deploy(kind, "2s", 8);
    assert_eq!(code, Some(0), "exit code");
    assert!(saw_503, "/readyz answered 503 during the delay");
    assert!(
        tally.closed_by_server.load(Ordering::Relaxed) > 0,
        "responses after the signal carry Connection: close"
    );
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "a request written by a keep-alive client got no response"
    );
}

fn a_rolling_deploy_without_a_delay_is_measured(kind: Kind) {
    // A request already on the wire toward an idle connection being closed
    // is a race inherent to HTTP/1.1: reported, not asserted.
    let (_tally, _saw_503, code) = rolling_deploy(kind, "0", 8);
    assert_eq!(code, Some(0), "exit code");
}

/// The access-log lines (JSON) whose `url.path` is `path`.
fn access_lines(s: &Starter, path: &str) -> Vec<serde_json::Value> {
    s.output()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["url.path"] == path)
        .collect()
}

fn a_request_cut_at_the_shutdown_deadline_is_answered_503_and_logged_as_shutdown(kind: Kind) {
    let mut s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_SHUTDOWN_DELAY", "0"),
            ("OPSKIT_SHUTDOWN_TIMEOUT", "1s"),
        ],
    );
    let addr = s.addr;
    let slow = thread::spawn(move || {
        opskit_conformance::request(addr, "GET", "/demo/slow?ms=20000", &[], b"")
    });
    // The request is in flight before the signal.
    s.expect_in_flight(1);
    s.signal("TERM");
    let code = s.wait_exit(Duration::from_secs(15)).expect("exited").code();
    assert_eq!(code, Some(0));
    // Answered before the connection closes: the client can retry
    // elsewhere instead of seeing a reset.
    let answer = slow.join().unwrap().expect("the cut request is answered");
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.header("connection"), Some("close"));
    let lines = access_lines(&s, "/demo/slow");
    assert_eq!(lines.len(), 1, "one access line: {lines:#?}");
    let line = &lines[0];
    assert_eq!(line["message"], "request cut at the shutdown deadline");
    assert_eq!(line["http.response.status_code"], 503);
    assert_eq!(line["error.type"], "shutdown");
    assert_eq!(line["http.route"], "/demo/slow");
}

fn probe_answers_are_never_reported_to_sentry(kind: Kind) {
    let rx = SentryReceiver::start();
    // A Redis nobody listens on: readiness fails with 503.
    let closed = opskit_conformance::closed_port();
    let redis = format!("redis://127.0.0.1:{}/", closed.port);
    let mut s = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &rx.dsn()),
            ("APP_REDIS_URL", &redis),
            ("OPSKIT_SHUTDOWN_DELAY", "1s"),
        ],
    );
    for path in ["/readyz", "/readyz/redis", "/health", "/readyz?verbose"] {
        assert_eq!(s.get(path).unwrap().status, 503, "{path}");
    }
    // An application error is still reported: the receiver works.
    let r = s
        .request("GET", "/demo/error", &[("x-request-id", "app-err-1")], b"")
        .unwrap();
    assert_eq!(r.status, 500);
    // Every "shutting down" answer during the delay.
    s.signal("TERM");
    let signalled = Instant::now();
    while signalled.elapsed() < Duration::from_millis(700) {
        let _ = s.get("/readyz");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        s.wait_exit(Duration::from_secs(15)).unwrap().code(),
        Some(0)
    );
    let events = rx.events();
    let probes: Vec<_> = events
        .iter()
        .filter(|e| e["tags"]["request_id"] != "app-err-1")
        .collect();
    assert!(probes.is_empty(), "probe answers reported: {probes:#?}");
    assert_eq!(events.len(), 1, "the application error is reported once");
}

fn a_frozen_redis_does_not_hold_readiness_answers(kind: Kind) {
    let redis = Redis::start();
    let s = Starter::spawn(kind, &[("APP_REDIS_URL", &redis.url())]);
    eventually_every(
        "ready with Redis up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match s.get("/readyz").unwrap().status {
            200 => Ok(()),
            other => Err(other),
        },
    );
    redis.freeze(true);
    // Probe as a kubelet would, for a few check periods: each answer must
    // come inside Kubernetes' default probe timeout (1 s).
    let mut slowest = Duration::ZERO;
    let mut saw_503 = false;
    let probing = Instant::now();
    while probing.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let r = s.get("/readyz").unwrap();
        slowest = slowest.max(t.elapsed());
        saw_503 |= r.status == 503;
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{}: slowest /readyz with a frozen Redis: {slowest:?}",
        kind.bin_name()
    );
    assert!(saw_503, "readiness failed while Redis was frozen");
    assert!(
        slowest < Duration::from_millis(900),
        "a probe waited {slowest:?} for the frozen Redis (kubelet gives up at 1 s)"
    );
    let needle = format!("127.0.0.1:{}", redis.port);
    assert!(
        s.wait_for_output("health check fails", Duration::from_secs(5)),
        "the failure is logged"
    );
    let reason = s
        .output()
        .into_iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find(|v| v["message"] == "health check fails" && v["check"] == "redis")
        .map(|v| v["reason"].as_str().unwrap_or_default().to_owned())
        .expect("a redis failure line");
    assert!(
        reason.contains("timed out after") && reason.contains(&needle),
        "the reason says what happened: {reason}"
    );
    redis.freeze(false);
}
