//! Foundation conformance: routes, start-up validation, graceful shutdown.
//! Every case runs against both starters and must give the same results.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{eventually_every, run_to_exit, Kind, Starter};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    serves_the_starter_routes,
    panics_become_problem_responses_and_the_service_keeps_serving,
    invalid_config_reports_every_variable_without_secrets,
    sigterm_lets_the_request_in_flight_finish,
    readiness_drops_at_once_during_the_shutdown_delay,
    drain_stops_at_the_shutdown_timeout,
    starts_with_no_environment_at_all,
    dotenv_is_read_and_the_process_environment_wins,
    the_builders_set_overrides_the_environment_and_dotenv,
    opskit_commit_is_shown_in_health,
    pretty_lines_are_coloured_on_a_terminal_unless_no_color,
);

fn serves_the_starter_routes(kind: Kind) {
    let s = Starter::spawn(kind, &[("APP_GREETING", "hi there")]);
    let r = s.get("/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["message"], "hi there");
    assert_eq!(r.json()["service"], kind.bin_name());

    let r = s.get("/users/7").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], 7);
    assert_eq!(r.json()["name"], "user-7");

    let r = s.get("/users/seven").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["status"], 400);

    let r = s.get("/demo/error").unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["title"], "Internal Server Error");

    let r = s.get("/demo/slow?ms=20").unwrap();
    assert_eq!((r.status, r.json()["slept_ms"].as_u64()), (200, Some(20)));
    let r = s.get("/demo/slow?ms=999999999").unwrap();
    assert_eq!(r.status, 400, "sleep beyond APP_SLOW_MAX_MS is refused");

    for probe in ["/livez", "/readyz", "/startupz"] {
        let r = s.get(probe).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "{probe}");
    }
    assert_eq!(s.get("/no/such/route").unwrap().status, 404);
}

fn panics_become_problem_responses_and_the_service_keeps_serving(kind: Kind) {
    let s = Starter::spawn(kind, &[]);
    for _ in 0..3 {
        let r = s.get("/demo/panic").unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let body = r.text();
        assert!(
            !body.contains("demo panic"),
            "panic message leaked to the client: {body}"
        );
        assert_eq!(r.json()["status"], 500);
        assert_eq!(s.get("/users/1").unwrap().status, 200);
    }
    // The panic is logged once per request as one JSON line, with its message.
    // Lines are written in order: once a later request's line is out, every
    // panic line (and any duplicate) is out too.
    s.request(
        "GET",
        "/users/1",
        &[("x-request-id", "after-the-panics")],
        b"",
    )
    .unwrap();
    assert!(
        s.wait_for_output("after-the-panics", Duration::from_secs(10)),
        "{:?}",
        s.output()
    );
    let panics: Vec<_> = s
        .output()
        .into_iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|v| v["message"] == "panicked")
        .collect();
    assert_eq!(panics.len(), 3, "{:?}", s.output());
    assert_eq!(panics[0]["level"], "ERROR");
    assert!(panics[0]["panic.message"]
        .as_str()
        .unwrap()
        .contains("demo panic"));
}

fn invalid_config_reports_every_variable_without_secrets(kind: Kind) {
    let (status, out, err) = run_to_exit(
        kind,
        &[
            ("PORT", "abc"),
            ("OPSKIT_SHUTDOWN_TIMEOUT", "forever"),
            ("APP_SECRET", "tooshort"),
            ("APP_DATABASE_URL", "notaurl"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(opskit::EXIT_CONFIG), "stderr: {err}");
    for var in [
        "PORT",
        "OPSKIT_SHUTDOWN_TIMEOUT",
        "APP_SECRET",
        "APP_DATABASE_URL",
    ] {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(&format!("{var}:"))),
            "{var} not named in: {err}"
        );
    }
    assert!(err.contains("(4 problems)"), "{err}");
    for value in ["tooshort", "notaurl", "forever"] {
        assert!(
            !err.contains(value) && !out.contains(value),
            "{value} printed: {err}{out}"
        );
    }
}

fn sigterm_lets_the_request_in_flight_finish(kind: Kind) {
    // No delay: the listener closes as soon as the signal is handled, while
    // the slow request is still running, so "refused during the drain" can
    // be observed.
    let mut s = Starter::spawn(kind, &[("OPSKIT_SHUTDOWN_DELAY", "0")]);
    // The request is on the wire before the signal (no sleep to let it
    // "reach the handler": a request the server has accepted must be
    // answered wherever it is).
    let pending = opskit_conformance::send(
        s.addr,
        b"GET /demo/slow?ms=3000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("send the slow request");
    let inflight = thread::spawn(move || pending.response());
    s.signal("TERM");
    // New connections are refused once draining has begun, while the
    // request above is still in flight.
    eventually_every(
        "new connections refused during the drain",
        Duration::from_secs(2),
        Duration::from_millis(10),
        || TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)).is_err(),
    );
    assert!(
        !inflight.is_finished(),
        "the slow request had already finished: the refusal was not seen during the drain"
    );
    let r = inflight
        .join()
        .unwrap()
        .expect("the in-flight request got a response");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["slept_ms"], 3000);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("exited after draining");
    assert_eq!(status.code(), Some(0));
}

fn readiness_drops_at_once_during_the_shutdown_delay(kind: Kind) {
    let mut s = Starter::spawn(kind, &[("OPSKIT_SHUTDOWN_DELAY", "1500ms")]);
    assert_eq!(s.get("/readyz").unwrap().status, 200);
    let signalled = Instant::now();
    s.signal("TERM");
    // Poll until readiness turns; it must be well inside the delay.
    eventually_every(
        "readiness turns 503 during the delay",
        Duration::from_millis(1000).saturating_sub(signalled.elapsed()),
        Duration::from_millis(5),
        || match s.get("/readyz").unwrap().status {
            503 => Ok(()),
            other => Err(other),
        },
    );
    // Liveness and the application still answer during the delay.
    assert_eq!(s.get("/livez").unwrap().status, 200);
    assert_eq!(s.get("/users/3").unwrap().status, 200);
    let status = s.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

fn drain_stops_at_the_shutdown_timeout(kind: Kind) {
    let mut s = Starter::spawn(kind, &[("OPSKIT_SHUTDOWN_TIMEOUT", "1s")]);
    let addr = s.addr;
    let slow = thread::spawn(move || {
        opskit_conformance::request(addr, "GET", "/demo/slow?ms=20000", &[], b"")
    });
    s.expect_in_flight(1);
    let signalled = Instant::now();
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(15)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the 20 s request held the process past a 1 s shutdown timeout"
    );
    // Not the handler's answer: opskit's, given as the handler was stopped.
    let answer = slow.join().unwrap().expect("the cut request is answered");
    assert_eq!(answer.status, 503, "{}", answer.text());
}

fn starts_with_no_environment_at_all(kind: Kind) {
    // Nothing but where to listen: every other setting takes its default.
    let mut cmd = opskit_conformance::command(kind, &[]);
    cmd.env_clear().env("PORT", "0").env("HOST", "127.0.0.1");
    // Waits for the `listening` line and an answer on /livez.
    let s = Starter::spawn_command(kind, cmd);
    let r = s.get("/").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["service"], kind.bin_name());
    assert_eq!(s.get("/users/1").unwrap().status, 200);
    for probe in ["/livez", "/readyz", "/startupz"] {
        assert_eq!(s.get(probe).unwrap().status, 200, "{probe}");
    }
}

/// The same requests to both starters get the same status, content type and body.
#[test]
fn both_starters_answer_identically() {
    let axum = Starter::spawn(Kind::Axum, &[]);
    let actix = Starter::spawn(Kind::Actix, &[]);
    for path in [
        "/users/42",
        "/users/abc",
        "/demo/error",
        "/demo/panic",
        "/demo/slow?ms=1",
        "/demo/slow?ms=x",
        "/demo/legacy",
        "/livez",
        "/readyz",
        "/startupz",
        "/nope",
    ] {
        let id = [("x-request-id", "conformance-1")];
        let a = axum.request("GET", path, &id, b"").unwrap();
        let b = actix.request("GET", path, &id, b"").unwrap();
        assert_eq!(a.status, b.status, "{path}");
        assert_eq!(a.header("content-type"), b.header("content-type"), "{path}");
        assert_eq!(a.body, b.body, "{path}: {} vs {}", a.text(), b.text());
    }
}

/// A fresh working directory for one test and starter, holding `.env` with `lines`.
fn dir_with_dotenv(test: &str, kind: Kind, lines: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "opskit-{test}-{}-{}",
        kind.bin_name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), lines).unwrap();
    dir
}

/// A `.env` in the working directory is read; a variable set in the process
/// environment wins over the file's value (an empty one counts as unset).
fn dotenv_is_read_and_the_process_environment_wins(kind: Kind) {
    let dir = dir_with_dotenv(
        "dotenv",
        kind,
        "APP_GREETING=\"from the file\"\nOPSKIT_COMMIT=file-commit\nOPSKIT_ENVIRONMENT=staging\n",
    );
    let mut cmd = opskit_conformance::command(kind, &[]);
    cmd.current_dir(&dir);
    let s = Starter::spawn_command(kind, cmd);
    assert_eq!(s.get("/").unwrap().json()["message"], "from the file");
    let h = s.get("/health").unwrap().json();
    assert_eq!(
        (h["commit"].as_str(), h["environment"].as_str()),
        (Some("file-commit"), Some("staging"))
    );
    drop(s);
    let mut cmd = opskit_conformance::command(
        kind,
        &[
            ("APP_GREETING", "from the process"),
            ("OPSKIT_COMMIT", "env-commit"),
        ],
    );
    cmd.current_dir(&dir);
    let s = Starter::spawn_command(kind, cmd);
    assert_eq!(s.get("/").unwrap().json()["message"], "from the process");
    let h = s.get("/health").unwrap().json();
    assert_eq!(h["commit"], "env-commit");
    assert_eq!(
        h["environment"], "staging",
        "the file still fills what the process leaves unset"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Builder::set` (the starter's `APP_DEMO_SET` hook passes its pairs to it)
/// wins over the process environment and over `.env`, for the library's
/// variables and the application's alike; what it does not set still comes
/// from those.
fn the_builders_set_overrides_the_environment_and_dotenv(kind: Kind) {
    let dir = dir_with_dotenv(
        "builder-set",
        kind,
        "APP_GREETING=\"from the file\"\nOTEL_SERVICE_NAME=file-name\nOPSKIT_ENVIRONMENT=staging\n",
    );
    let mut cmd = opskit_conformance::command(
        kind,
        &[
            ("APP_GREETING", "from the process"),
            ("OPSKIT_COMMIT", "env-commit"),
            (
                "APP_DEMO_SET",
                "APP_GREETING=from code;OTEL_SERVICE_NAME=code-name;OPSKIT_COMMIT=code-commit",
            ),
        ],
    );
    cmd.current_dir(&dir);
    let s = Starter::spawn_command(kind, cmd);
    let index = s.get("/").unwrap().json();
    assert_eq!(
        (index["message"].as_str(), index["service"].as_str()),
        (Some("from code"), Some("code-name")),
        "over the process environment and over .env"
    );
    let h = s.get("/health").unwrap().json();
    assert_eq!(h["commit"], "code-commit", "{h}");
    assert_eq!(h["environment"], "staging", "what code leaves unset: {h}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `OPSKIT_COMMIT` is the commit `/health` shows, over the one given in code.
fn opskit_commit_is_shown_in_health(kind: Kind) {
    let s = Starter::spawn(kind, &[("OPSKIT_COMMIT", "0123abc")]);
    let h = s.get("/health").unwrap().json();
    assert_eq!(h["commit"], "0123abc");
    let s = Starter::spawn(kind, &[]);
    let h = s.get("/health").unwrap().json();
    assert_ne!(h["commit"], "0123abc");
    assert!(h["commit"].as_str().is_some_and(|c| !c.is_empty()), "{h}");
}

/// The starter run under a pseudo-terminal (util-linux `script`), its
/// output read through the harness as usual.
fn spawn_on_a_terminal(kind: Kind, env: &[(&str, &str)]) -> Starter {
    let inner = opskit_conformance::command(kind, env);
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec"])
        .arg(kind.bin_path())
        .arg("/dev/null")
        .env("TERM", "xterm-256color")
        // Only what `env` says: not the test's own NO_COLOR.
        .env_remove("NO_COLOR");
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = inner.get_current_dir() {
        cmd.current_dir(dir);
    }
    Starter::spawn_command(kind, cmd)
}

/// `OPSKIT_LOG_FORMAT=pretty` colours its lines on a terminal, and never
/// when `NO_COLOR` is set (to any value).
fn pretty_lines_are_coloured_on_a_terminal_unless_no_color(kind: Kind) {
    let pretty = [("OPSKIT_LOG_FORMAT", "pretty"), ("RUST_LOG", "info")];
    let s = spawn_on_a_terminal(kind, &pretty);
    s.get("/users/5").unwrap();
    let line = s.expect_line("access line", Duration::from_secs(10), |l| {
        l.contains("request completed")
    });
    assert!(line.contains('\u{1b}'), "coloured on a terminal: {line:?}");
    let mut env = pretty.to_vec();
    env.push(("NO_COLOR", "1"));
    let s = spawn_on_a_terminal(kind, &env);
    s.get("/users/5").unwrap();
    let line = s.expect_line("access line", Duration::from_secs(10), |l| {
        l.contains("request completed")
    });
    assert!(!line.contains('\u{1b}'), "NO_COLOR: {line:?}");
    assert!(
        s.output().iter().all(|l| !l.contains('\u{1b}')),
        "NO_COLOR: {:#?}",
        s.output()
    );
}
