//! Health: probe shapes, real dependencies going down and up, and the
//! readiness-aware shutdown — the same in both starters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{eventually, eventually_every, poll, Kind, Postgres, Redis, Starter};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    probes_have_the_documented_shapes,
    health_detail_needs_the_token_and_paths_take_a_prefix,
    a_dependency_going_down_fails_readiness_not_liveness,
    sigterm_turns_readiness_at_once_and_drops_no_accepted_request,
    an_unknown_check_gets_a_fixed_problem_body,
    a_check_refreshed_in_the_background_turns_readiness_without_probes,
);

/// Polls `path` until it answers `status` (or 10 s pass); returns the last status.
fn wait_status(s: &Starter, path: &str, status: u16) -> u16 {
    poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match s.get(path).unwrap().status {
            got if got == status => Ok(got),
            other => Err(other),
        },
    )
    .unwrap_or_else(|last| last)
}

fn probes_have_the_documented_shapes(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let r = s.get("/readyz?verbose").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "[+]disk ok\nreadyz check passed\n");
    assert_eq!(s.get("/readyz/disk").unwrap().status, 200);
    assert_eq!(s.get("/readyz/nope").unwrap().status, 404);
    assert_eq!(
        s.get("/livez?verbose").unwrap().text(),
        "livez check passed\n"
    );
    let h = s.get("/health").unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-type"), Some("application/json"));
    let v = h.json();
    assert_eq!(v["status"], "pass");
    assert_eq!(v["service"], kind.bin_name());
    assert_eq!(v["version"], "0.1.0");
    assert_eq!(v["environment"], "production");
    assert!(v["commit"].is_string());
    assert!(v["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let disk = &v["checks"]["disk"];
    assert_eq!(disk["status"], "pass");
    assert_eq!(disk["critical"], false);
    assert!(disk["duration_ms"].is_number());
    assert!(disk["last_run"].as_str().unwrap().ends_with('Z'));
}

fn health_detail_needs_the_token_and_paths_take_a_prefix(kind: Kind) {
    let token = "probe-token-0123456789";
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_HEALTH_TOKEN", token),
            ("OPSKIT_HEALTH_PREFIX", "/_ops"),
        ],
    );
    assert_eq!(s.get("/livez").unwrap().status, 404);
    assert_eq!(s.get("/_ops/livez").unwrap().status, 200);
    assert_eq!(s.get("/_ops/readyz").unwrap().status, 200);
    let anon = s.get("/_ops/health").unwrap();
    assert_eq!(
        (anon.status, anon.json()),
        (200, serde_json::json!({"status": "pass"}))
    );
    let bearer = format!("Bearer {token}");
    let authed = s
        .request("GET", "/_ops/health", &[("Authorization", &bearer)], b"")
        .unwrap();
    assert_eq!(authed.json()["checks"]["disk"]["status"], "pass");
    for line in s.output() {
        assert!(!line.contains(token), "token logged: {line}");
    }
}

fn a_dependency_going_down_fails_readiness_not_liveness(kind: Kind) {
    let pg = Postgres::start();
    let mut redis = Redis::start();
    let s = Starter::spawn(
        kind,
        &[
            ("APP_DATABASE_URL", &pg.url()),
            ("APP_REDIS_URL", &redis.url()),
        ],
    );
    assert_eq!(wait_status(&s, "/readyz", 200), 200);
    let v = s.get("/health").unwrap().json();
    assert_eq!(v["checks"]["postgres"]["status"], "pass", "{v}");
    assert_eq!(v["checks"]["redis"]["status"], "pass", "{v}");

    pg.stop();
    assert_eq!(wait_status(&s, "/readyz", 503), 503);
    assert_eq!(
        s.get("/livez").unwrap().status,
        200,
        "liveness never follows dependencies"
    );
    let h = s.get("/health").unwrap();
    assert_eq!(h.status, 503);
    let v = h.json();
    assert_eq!(v["status"], "fail");
    assert_eq!(v["checks"]["postgres"]["status"], "fail");
    assert!(v["checks"]["postgres"]["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot connect"));
    assert!(!h.text().contains(&pg.url()), "no URL in messages");
    assert_eq!(v["checks"]["redis"]["status"], "pass");
    assert_eq!(s.get("/readyz/postgres").unwrap().status, 503);
    assert_eq!(s.get("/readyz/redis").unwrap().status, 200);
    let verbose = s.get("/readyz?verbose").unwrap().text();
    assert!(
        verbose.contains("[-]postgres failed: reason withheld"),
        "{verbose}"
    );

    pg.resume();
    assert_eq!(
        wait_status(&s, "/readyz", 200),
        200,
        "recovers when PostgreSQL is back"
    );

    redis.kill();
    assert_eq!(wait_status(&s, "/readyz", 503), 503);
    assert_eq!(
        s.get("/health").unwrap().json()["checks"]["redis"]["status"],
        "fail"
    );
    redis.resume();
    assert_eq!(
        wait_status(&s, "/readyz", 200),
        200,
        "recovers when Redis is back"
    );
}

/// One request on a new connection: `Err(true)` if it was never accepted
/// (connection refused), `Err(false)` if it was accepted and then lost.
fn one_request(addr: std::net::SocketAddr, path: &str) -> Result<u16, bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|_| true)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|_| false)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|_| false)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(false)?;
    // The whole body arrived (the handler answers JSON with the user).
    if path == "/users/1" && status == 200 && !text.contains("\"name\":\"user-1\"") {
        return Err(false);
    }
    Ok(status)
}

fn sigterm_turns_readiness_at_once_and_drops_no_accepted_request(kind: Kind) {
    let mut s = Starter::spawn(kind, &[("OPSKIT_SHUTDOWN_DELAY", "1500ms")]);
    let addr = s.addr;
    // A steady request loop, as a load balancer sends until readiness fails
    // and the delay has let it notice. Every request it sends is counted in
    // exactly one of: answered 200, lost (accepted, then no complete answer),
    // refused (never accepted).
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, ok, lost, refused) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let traffic = {
        let (stop, sent, ok, lost, refused) = (
            stop.clone(),
            sent.clone(),
            ok.clone(),
            lost.clone(),
            refused.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                sent.fetch_add(1, Ordering::Relaxed);
                match one_request(addr, "/users/1") {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) | Err(false) => lost.fetch_add(1, Ordering::Relaxed),
                    Err(true) => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    // Until traffic flows (no fixed sleep).
    eventually_every(
        "a request of the loop served",
        Duration::from_secs(10),
        Duration::from_millis(5),
        || ok.load(Ordering::Relaxed) > 0,
    );
    s.signal("TERM");
    let signalled = Instant::now();
    let turned = eventually_every(
        "readiness turned 503 during the delay",
        Duration::from_secs(1),
        Duration::from_millis(2),
        || match one_request(addr, "/readyz") {
            Ok(503) => Ok(signalled.elapsed()),
            other => Err(other),
        },
    );
    assert!(
        turned < Duration::from_millis(300),
        "readiness took {turned:?}"
    );
    // Counted from the moment readiness turned: whatever is answered from
    // here on was served during the delay, after the signal.
    let at_turn = ok.load(Ordering::Relaxed);
    assert_eq!(one_request(addr, "/livez"), Ok(200));
    // Keep the load up through most of the delay (the load balancer has not
    // noticed yet) and stop well inside it, so that no connection may be
    // refused: this is the length of the load, not a wait for something.
    while signalled.elapsed() < Duration::from_millis(1000) {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    traffic.join().unwrap();
    let status = s.wait_exit(Duration::from_secs(15)).expect("exited");
    assert_eq!(status.code(), Some(0));
    let (sent, ok, lost, refused) = (
        sent.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert_eq!(sent, ok + lost + refused, "a request was counted nowhere");
    assert_eq!(
        lost, 0,
        "{lost} of {sent} sent requests got no complete answer"
    );
    assert_eq!(
        refused, 0,
        "{refused} connections were refused during the shutdown delay"
    );
    assert!(
        ok >= at_turn + 5,
        "only {} requests were served during the delay, after readiness turned",
        ok - at_turn
    );
}

/// `/{probe}/{name}` for a name no check has: a fixed RFC 9457 body that
/// does not reflect the name, whatever it holds.
fn an_unknown_check_gets_a_fixed_problem_body(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    let mut bodies = Vec::new();
    for path in [
        "/livez/SentinelName",
        "/readyz/%3Cscript%3ESentinelXss%3C%2Fscript%3E",
        "/startupz/Sentinel%0d%0aSet-Cookie:%20x=1",
    ] {
        let r = s.get(path).unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        let body = r.text();
        assert!(!body.to_lowercase().contains("sentinel"), "{path}: {body}");
        assert!(r.header("set-cookie").is_none(), "{path}");
        let v = r.json();
        assert_eq!(
            (v["status"].as_u64(), v["title"].as_str()),
            (Some(404), Some("Not Found"))
        );
        bodies.push(body);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one fixed body: {bodies:?}");
}

/// The number of `message` lines the `maintenance` check logged so far.
fn maintenance_lines(s: &Starter, message: &str) -> usize {
    s.json_lines()
        .iter()
        .filter(|v| v["check"] == "maintenance" && v["message"] == message)
        .count()
}

/// `Check::refresh_every` (the starter's `APP_DEMO_MAINTENANCE_FILE` check,
/// refreshed every second, fails while the file exists): the check runs in
/// the background, with no probe asking, so the first `/readyz` after a
/// change already answers the new state. (Without the background refresh a
/// probe would answer the last result and only start a new run.)
fn a_check_refreshed_in_the_background_turns_readiness_without_probes(kind: Kind) {
    let dir = std::env::temp_dir().join(format!(
        "opskit-refresh-{}-{}",
        kind.bin_name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("maintenance");
    let _ = std::fs::remove_file(&flag);
    let s = Starter::spawn(
        kind,
        &[("APP_DEMO_MAINTENANCE_FILE", flag.to_str().unwrap())],
    );
    // Each state change is logged once, by the run that saw it; no probe of
    // readiness is made until the log says the background run happened.
    let changes = |passes: usize, fails: usize| {
        eventually(
            &format!("{passes} pass and {fails} fail line(s) of the maintenance check"),
            Duration::from_secs(10),
            || {
                let seen = (
                    maintenance_lines(&s, "health check passes"),
                    maintenance_lines(&s, "health check fails"),
                );
                if seen == (passes, fails) {
                    Ok(())
                } else {
                    Err(seen)
                }
            },
        );
    };
    changes(1, 0);
    assert_eq!(s.get("/readyz").unwrap().status, 200);

    std::fs::write(&flag, b"").unwrap();
    changes(1, 1);
    let r = s.get("/readyz").unwrap();
    assert_eq!(
        r.status,
        503,
        "the first probe after the change: {}",
        r.text()
    );
    let v = s.get("/health").unwrap().json();
    assert_eq!(v["checks"]["maintenance"]["status"], "fail", "{v}");
    assert_eq!(
        v["checks"]["maintenance"]["message"],
        "the maintenance file is present"
    );

    std::fs::remove_file(&flag).unwrap();
    changes(2, 1);
    assert_eq!(s.get("/readyz").unwrap().status, 200);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
