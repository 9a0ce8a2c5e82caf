//! Error reporting: panics and 5xx each produce exactly one Sentry event with
//! the request's context and without scrubbed data; a dead Sentry endpoint
//! costs nothing but a counter. Against a test-side envelope receiver (exact
//! assertions) and a real Sentry-protocol server (Bugsink).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use opskit_conformance::{
    eventually_every, free_port, BlackHole, Bugsink, Kind, SentryReceiver, Starter,
};
use serde_json::Value;
use std::time::{Duration, Instant};

opskit_conformance::conformance!(
    one_event_per_failure_with_request_context_and_no_secrets,
    client_ip_only_with_send_pii,
    sampled_requests_become_transactions,
    a_dead_sentry_costs_nothing_but_a_counter,
    sentry_sample_rate_sends_that_share_of_events,
    a_429_with_retry_after_makes_the_transport_back_off,
    a_full_queue_drops_events_and_counts_them,
    before_send_drops_and_edits_events,
    a_background_task_panic_is_logged_and_reported_once,
);

const SECRET_HEADERS: [(&str, &str); 3] = [
    ("Authorization", "Bearer s3cr3t"),
    ("Cookie", "sid=s3cr3t"),
    ("user-agent", "errors-test/1"),
];

fn event_with_tag<'a>(events: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["tags"]["request_id"] == request_id)
        .collect()
}

fn one_event_per_failure_with_request_context_and_no_secrets(kind: Kind) {
    let rx = SentryReceiver::start();
    let mut s = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &rx.dsn()),
            ("SENTRY_ENVIRONMENT", "conformance"),
        ],
    );
    for (path, id, status) in [
        ("/demo/error?token=s3cr3t", "err-1", 500),
        ("/demo/panic", "panic-1", 500),
        ("/users/1", "ok-1", 200),
        ("/users/x", "bad-1", 400),
        ("/nope", "missing-1", 404),
    ] {
        let mut headers = SECRET_HEADERS.to_vec();
        headers.push(("x-request-id", id));
        let r = s.request("GET", path, &headers, b"").unwrap();
        assert_eq!(r.status, status, "{path}");
    }
    let events = rx.wait_for_events(2, Duration::from_secs(10));
    // Nothing more arrives: no event for 2xx/4xx, no duplicate for the panic.
    s.signal("TERM");
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let events_after = rx.events();
    assert_eq!(events_after.len(), 2, "{events_after:#?}");
    assert_eq!(events.len(), 2);

    let error = event_with_tag(&events, "err-1");
    assert_eq!(error.len(), 1);
    let e = error[0];
    assert_eq!(e["request"]["method"], "GET");
    let url = e["request"]["url"].as_str().unwrap();
    assert!(url.ends_with("/demo/error"), "URL without the query: {url}");
    assert_eq!(e["tags"]["http.route"], "/demo/error");
    assert_eq!(e["tags"]["http.response.status_code"], "500");
    assert_eq!(e["transaction"], "GET /demo/error");
    assert_eq!(e["environment"], "conformance");
    assert_eq!(e["release"], format!("{}@0.1.0", kind.bin_name()));
    assert_eq!(e["contexts"]["response"]["status_code"], 500);
    assert_eq!(e["request"]["headers"]["user-agent"], "errors-test/1");
    assert!(
        e["user"].is_null(),
        "no client IP without send_pii: {}",
        e["user"]
    );
    let crumbs = e["breadcrumbs"]["values"].as_array().expect("breadcrumbs");
    assert!(
        crumbs
            .iter()
            .any(|c| c["message"] == "payment provider unreachable" && c["level"] == "warning"),
        "{crumbs:?}"
    );

    let panic = event_with_tag(&events, "panic-1");
    assert_eq!(panic.len(), 1);
    let p = panic[0];
    assert_eq!(p["level"], "fatal");
    assert_eq!(p["exception"]["values"][0]["type"], "panic");
    assert!(p["exception"]["values"][0]["value"]
        .as_str()
        .unwrap()
        .contains("demo panic"));
    assert_eq!(p["tags"]["http.route"], "/demo/panic");

    for env in rx.envelopes() {
        assert_eq!(env.path, "/api/42/envelope/");
        assert!(env.auth.contains("sentry_key=testkey"), "{}", env.auth);
        assert!(
            !env.raw.contains("s3cr3t"),
            "a secret reached Sentry: {}",
            env.raw
        );
        assert!(
            !env.raw.to_ascii_lowercase().contains("cookie"),
            "{}",
            env.raw
        );
        assert!(
            !env.raw.to_ascii_lowercase().contains("authorization"),
            "{}",
            env.raw
        );
    }
    for line in s.output() {
        assert!(!line.contains("s3cr3t"), "secret logged: {line}");
    }
    // The shutdown line reports the delivery counters.
    assert!(
        s.output()
            .iter()
            .any(|l| l.contains("error reporting stopped") && l.contains("\"sent\":2")),
        "{:?}",
        s.output()
    );
}

fn client_ip_only_with_send_pii(kind: Kind) {
    let rx = SentryReceiver::start();
    let s = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &rx.dsn()),
            ("OPSKIT_SENTRY_SEND_PII", "true"),
        ],
    );
    s.request("GET", "/demo/error", &[("x-request-id", "pii-1")], b"")
        .unwrap();
    let events = rx.wait_for_events(1, Duration::from_secs(10));
    assert_eq!(events[0]["user"]["ip_address"], "127.0.0.1");
}

fn sampled_requests_become_transactions(kind: Kind) {
    let rx = SentryReceiver::start();
    let mut s = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &rx.dsn()),
            ("SENTRY_TRACES_SAMPLE_RATE", "1"),
        ],
    );
    s.request("GET", "/users/5", &[("x-request-id", "tx-1")], b"")
        .unwrap();
    s.signal("TERM");
    s.wait_exit(Duration::from_secs(10)).unwrap();
    let txs: Vec<Value> = rx
        .envelopes()
        .into_iter()
        .flat_map(|e| e.transactions)
        .collect();
    let tx = txs
        .iter()
        .find(|t| t["tags"]["request_id"] == "tx-1")
        .unwrap_or_else(|| panic!("no transaction for the request: {txs:?}"));
    assert_eq!(tx["transaction"], "GET /users/{id}");
    assert_eq!(tx["contexts"]["trace"]["op"], "http.server");
    assert_eq!(tx["contexts"]["trace"]["status"], "ok");
    assert!(rx.events().is_empty(), "a 200 is no error event");
}

/// Times `n` failing requests.
fn time_failures(s: &Starter, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(s.get("/demo/error").unwrap().status, 500);
    }
    t.elapsed()
}

fn a_dead_sentry_costs_nothing_but_a_counter(kind: Kind) {
    const N: usize = 100;
    // Every failing request is one event: 10 to warm up, then N timed.
    const EVENTS: u64 = 10 + N as u64;
    // Baseline: the receiver is up.
    let rx = SentryReceiver::start();
    let up = Starter::spawn(kind, &[("SENTRY_DSN", &rx.dsn())]);
    time_failures(&up, 10); // warm up
    let with_receiver = time_failures(&up, N);
    let mut up = up;
    up.signal("TERM");
    assert_eq!(
        up.wait_exit(Duration::from_secs(15)).unwrap().code(),
        Some(0)
    );
    let counts = delivery_counts(&up);
    assert_eq!(
        counts.iter().sum::<u64>(),
        EVENTS,
        "one event per failing request, each counted once: {counts:?}"
    );
    // What was sent arrived (a burst may overflow the queue: dropped).
    assert!(counts[0] >= 1, "{counts:?}");
    assert_eq!(
        rx.wait_for_events(counts[0] as usize, Duration::from_secs(10))
            .len() as u64,
        counts[0]
    );

    // Nothing listens on the port: every delivery fails fast.
    let refused = format!("http://testkey@127.0.0.1:{}/42", free_port());
    // A black hole: connections are accepted and never answered, so every
    // delivery waits for its 1 s timeout and the 64-event queue fills.
    let hole = BlackHole::start();
    let black_hole = format!("http://testkey@{}/42", hole.addr());
    for (name, dsn) in [("refused", refused), ("black hole", black_hole)] {
        let mut s = Starter::spawn(
            kind,
            &[("SENTRY_DSN", &dsn), ("OPSKIT_SENTRY_TIMEOUT", "1s")],
        );
        time_failures(&s, 10);
        let dead = time_failures(&s, N);
        // Generous: the point is that requests never wait for Sentry (a
        // blocking send to the black hole would cost 1 s per request here).
        assert!(
            dead < with_receiver * 5 + Duration::from_secs(2),
            "{name}: {N} failing requests took {dead:?} vs {with_receiver:?} with Sentry up"
        );
        assert_eq!(s.get("/users/1").unwrap().status, 200);
        // Shutdown is bounded too, and the loss is counted.
        let t = Instant::now();
        s.signal("TERM");
        assert_eq!(
            s.wait_exit(Duration::from_secs(15)).unwrap().code(),
            Some(0)
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name}: shutdown took {:?}",
            t.elapsed()
        );
        let [sent, failed, dropped] = delivery_counts(&s);
        assert_eq!(sent, 0, "{name}");
        // Every event is accounted for: none vanishes uncounted.
        assert_eq!(
            failed + dropped,
            EVENTS,
            "{name}: failed {failed}, dropped {dropped}"
        );
    }
}

/// Sends `n` failing requests, stops the starter (its queue is flushed) and
/// returns `[sent, failed, dropped]`.
fn fail_then_stop(mut s: Starter, n: usize) -> [u64; 3] {
    for _ in 0..n {
        assert_eq!(s.get("/demo/error").unwrap().status, 500);
    }
    s.signal("TERM");
    assert_eq!(
        s.wait_exit(Duration::from_secs(15)).unwrap().code(),
        Some(0)
    );
    delivery_counts(&s)
}

/// `SENTRY_SAMPLE_RATE` is the share of error events sent: none at 0, about
/// half at 0.5 (those sampled out are not counted as lost either).
fn sentry_sample_rate_sends_that_share_of_events(kind: Kind) {
    let rx = SentryReceiver::start();
    let none = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &rx.dsn()),
            ("SENTRY_SAMPLE_RATE", "0"),
            ("OPSKIT_SHUTDOWN_DELAY", "0s"),
        ],
    );
    assert_eq!(fail_then_stop(none, 20), [0, 0, 0]);
    assert!(rx.events().is_empty(), "{:?}", rx.events());
    // 60 events stay under the 64-event queue: none is dropped. Outside
    // 10..=50 of 60 has a chance of about 1e-7.
    let rx = SentryReceiver::start();
    let half = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &rx.dsn()),
            ("SENTRY_SAMPLE_RATE", "0.5"),
            ("OPSKIT_SHUTDOWN_DELAY", "0s"),
        ],
    );
    let [sent, failed, dropped] = fail_then_stop(half, 60);
    assert_eq!((failed, dropped), (0, 0));
    assert!((10..=50).contains(&sent), "{sent} of 60 events sent");
    assert_eq!(
        rx.wait_for_events(sent as usize, Duration::from_secs(10))
            .len() as u64,
        sent
    );
}

/// A Sentry endpoint that answers every envelope `429` with `Retry-After:
/// retry_after` (one request per connection); returns its DSN and the
/// count of envelopes it got.
fn rate_limited_sentry(
    retry_after: u64,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dsn = format!("http://testkey@{}/42", listener.local_addr().unwrap());
    let posts = std::sync::Arc::new(AtomicUsize::new(0));
    let count = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (dsn, posts)
}

/// A `429` makes the transport send nothing more for `Retry-After` seconds:
/// the events meanwhile are counted as dropped, none is posted. With
/// `Retry-After: 0` every event is posted (and refused: failed).
fn a_429_with_retry_after_makes_the_transport_back_off(kind: Kind) {
    use std::sync::atomic::Ordering;
    for (retry_after, posted, counts) in [(3600, 1, [0, 1, 9]), (0, 10, [0, 10, 0])] {
        let (dsn, posts) = rate_limited_sentry(retry_after);
        let s = Starter::spawn(
            kind,
            &[("SENTRY_DSN", &dsn), ("OPSKIT_SHUTDOWN_DELAY", "0s")],
        );
        // One at a time: each event is delivered (or given up) before the next.
        let mut s = s;
        for i in 0..10 {
            assert_eq!(s.get("/demo/error").unwrap().status, 500);
            if retry_after == 0 {
                eventually_every(
                    "the envelope posted",
                    Duration::from_secs(10),
                    Duration::from_millis(10),
                    || posts.load(Ordering::SeqCst) > i,
                );
            }
        }
        s.signal("TERM");
        assert_eq!(
            s.wait_exit(Duration::from_secs(15)).unwrap().code(),
            Some(0)
        );
        assert_eq!(
            (posts.load(Ordering::SeqCst), delivery_counts(&s)),
            (posted, counts),
            "Retry-After: {retry_after}"
        );
    }
}

/// `Builder::sentry_before_send` (the starter's `APP_DEMO_BEFORE_SEND` hook
/// drops the events of `GET /demo/error` and tags the others): the dropped
/// event never reaches Sentry nor any delivery counter, the edited one
/// arrives with its tag.
fn before_send_drops_and_edits_events(kind: Kind) {
    let rx = SentryReceiver::start();
    let mut s = Starter::spawn(
        kind,
        &[
            ("SENTRY_DSN", &rx.dsn()),
            ("APP_DEMO_BEFORE_SEND", "true"),
            ("OPSKIT_SHUTDOWN_DELAY", "0s"),
        ],
    );
    for (path, id) in [("/demo/error", "dropped-1"), ("/demo/panic", "kept-1")] {
        let r = s
            .request("GET", path, &[("x-request-id", id)], b"")
            .unwrap();
        assert_eq!(r.status, 500, "{path}");
    }
    rx.wait_for_events(1, Duration::from_secs(10));
    // The shutdown flushes the queue: what was not sent by now never will be.
    s.signal("TERM");
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let events = rx.events();
    let ids: Vec<Option<&str>> = events
        .iter()
        .map(|e| e["tags"]["request_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [Some("kept-1")],
        "only the event before_send kept: {events:#?}"
    );
    let e = &events[0];
    assert_eq!(e["tags"]["demo.before_send"], "edited", "{e:#}");
    assert_eq!(e["transaction"], "GET /demo/panic");
    // A dropped event is the application's choice: neither sent nor lost.
    let stopped = s.expect_json_line("the delivery counters", Duration::ZERO, |v| {
        v["message"] == "error reporting stopped"
    });
    assert_eq!(
        (&stopped["sent"], &stopped["failed"], &stopped["dropped"]),
        (&Value::from(1), &Value::from(0), &Value::from(0)),
        "{stopped}"
    );
}

/// A panic outside any request (a task the starter's `/demo/background-panic`
/// spawns) is logged once, reported to Sentry once, without a request's
/// context, counted as sent, and the service keeps serving.
fn a_background_task_panic_is_logged_and_reported_once(kind: Kind) {
    let rx = SentryReceiver::start();
    let mut s = Starter::spawn(
        kind,
        &[("SENTRY_DSN", &rx.dsn()), ("OPSKIT_SHUTDOWN_DELAY", "0s")],
    );
    let r = s.get("/demo/background-panic").unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let logged = s.expect_json_line("the panic's log line", Duration::from_secs(10), |v| {
        v["message"] == "panicked"
    });
    assert_eq!(logged["level"], "ERROR");
    assert!(
        logged["panic.message"]
            .as_str()
            .is_some_and(|m| m.contains("demo background panic")),
        "{logged}"
    );
    assert!(
        logged.get("request_id").is_none(),
        "outside any request: {logged}"
    );
    let events = rx.wait_for_events(1, Duration::from_secs(10));
    assert_eq!(events.len(), 1, "one report of the panic: {events:#?}");
    let e = &events[0];
    assert_eq!(e["level"], "fatal", "{e:#}");
    let exception = &e["exception"]["values"][0];
    assert_eq!(exception["type"], "panic");
    assert!(
        exception["value"]
            .as_str()
            .is_some_and(|m| m.contains("demo background panic")),
        "{e:#}"
    );
    assert_eq!(exception["mechanism"]["handled"], false);
    assert!(
        e["tags"]["request_id"].is_null() && e["transaction"].is_null(),
        "no request's context: {e:#}"
    );
    assert_eq!(s.get("/").unwrap().status, 200, "still serving");
    eventually_every(
        "the report counted as sent",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match report_counters(&s) {
            [1.0, 0.0, 0.0] => Ok(()),
            other => Err(other),
        },
    );
    s.signal("TERM");
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    assert_eq!(rx.events().len(), 1, "reported once: {:#?}", rx.events());
    let panicked = s
        .json_lines()
        .into_iter()
        .filter(|v| v["message"] == "panicked")
        .count();
    assert_eq!(panicked, 1, "logged once");
}

/// `opskit_error_reports_total{outcome=…}` for sent, failed, dropped.
fn report_counters(s: &Starter) -> [f64; 3] {
    let text = s.get("/metrics").unwrap().text();
    ["sent", "failed", "dropped"].map(|o| {
        let series = format!(r#"opskit_error_reports_total{{outcome="{o}"}} "#);
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    })
}

/// A Sentry that accepts and never answers holds one delivery for
/// `OPSKIT_SENTRY_TIMEOUT`; the 64-event queue fills and every event past
/// it is dropped at once and counted, while requests go on unhindered.
fn a_full_queue_drops_events_and_counts_them(kind: Kind) {
    const EVENTS: usize = 100;
    const QUEUE: usize = 64;
    let hole = BlackHole::start();
    let dsn = format!("http://testkey@{}/42", hole.addr());
    let s = Starter::spawn(
        kind,
        &[("SENTRY_DSN", &dsn), ("OPSKIT_SENTRY_TIMEOUT", "60s")],
    );
    assert_eq!(report_counters(&s), [0.0, 0.0, 0.0]);
    for _ in 0..EVENTS {
        assert_eq!(s.get("/demo/error").unwrap().status, 500);
    }
    // At most one in the black hole and a full queue wait; no delivery has
    // ended yet, so nothing is sent or failed.
    let [sent, failed, dropped] = report_counters(&s);
    assert_eq!((sent, failed), (0.0, 0.0));
    assert!(
        dropped >= (EVENTS - QUEUE - 1) as f64 && dropped <= EVENTS as f64,
        "{dropped} of {EVENTS} dropped with a queue of {QUEUE}"
    );
}

/// `[sent, failed, dropped]` from the line logged at shutdown.
fn delivery_counts(s: &Starter) -> [u64; 3] {
    let stopped = s
        .output()
        .into_iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|v| v["message"] == "error reporting stopped")
        .expect("the delivery counters are logged");
    ["sent", "failed", "dropped"].map(|k| {
        stopped[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k}: {stopped}"))
    })
}

/// A real Sentry-protocol server accepts and stores the events of both
/// starters; the error's stored trace id is its span's (at the OTLP
/// receiver) and its access line's.
#[test]
fn bugsink_stores_the_events_of_both_starters() {
    let bugsink = Bugsink::start();
    let otlp = opskit_conformance::OtlpReceiver::start();
    for kind in Kind::ALL {
        // Bugsink digests each event while the POST waits; its first ingest
        // (cold Django paths) can take seconds on a slow machine, so give the
        // deliveries, and the shutdown that waits for them, room.
        let mut s = Starter::spawn(
            kind,
            &[
                ("SENTRY_DSN", &bugsink.dsn),
                ("OPSKIT_SENTRY_TIMEOUT", "30s"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        );
        let err_id = format!("bugsink-err-{}", kind.bin_name());
        let panic_id = format!("bugsink-panic-{}", kind.bin_name());
        s.request(
            "GET",
            "/demo/error",
            &[("x-request-id", &err_id), SECRET_HEADERS[0]],
            b"",
        )
        .unwrap();
        s.request(
            "GET",
            "/demo/panic",
            &[("x-request-id", &panic_id), SECRET_HEADERS[1]],
            b"",
        )
        .unwrap();
        s.signal("TERM"); // flushes on the way out
        assert_eq!(
            s.wait_exit(Duration::from_secs(60)).unwrap().code(),
            Some(0)
        );
        assert!(
            s.output()
                .iter()
                .any(|l| l.contains("error reporting stopped") && l.contains("\"sent\":2")),
            "{:?}",
            s.output()
        );
        let stored = eventually_every(
            "Bugsink stores both events",
            Duration::from_secs(10),
            Duration::from_millis(200),
            || {
                let stored = bugsink.events();
                let tags: Vec<String> = stored
                    .iter()
                    .map(|e| e["data"]["tags"].to_string())
                    .collect();
                let has = |id: &str| tags.iter().any(|t| t.contains(id));
                if has(&err_id) && has(&panic_id) {
                    Ok(stored)
                } else {
                    Err(tags)
                }
            },
        );
        let text = serde_json::to_string(&stored).unwrap();
        assert!(text.contains(&err_id) && text.contains(&panic_id), "{text}");
        assert!(!text.contains("s3cr3t"));
        // One trace id in Bugsink, at the OTLP receiver and on the access line.
        let access = s
            .json_lines()
            .into_iter()
            .find(|l| l["request_id"] == err_id.as_str() && l["message"] == "request completed")
            .unwrap_or_else(|| panic!("no access line for {err_id}"));
        let trace_id = access["trace_id"].as_str().unwrap().to_owned();
        let event = stored
            .iter()
            .find(|e| e["data"]["tags"].to_string().contains(&err_id))
            .unwrap();
        assert_eq!(
            event["data"]["contexts"]["trace"]["trace_id"], trace_id,
            "{event}"
        );
        assert_eq!(
            event["data"]["contexts"]["trace"]["span_id"],
            access["span_id"]
        );
        let span = otlp
            .wait_for_span(Duration::from_secs(15), |sp| sp.trace_id() == trace_id)
            .unwrap_or_else(|| panic!("no span of {trace_id}: {:#?}", otlp.spans()));
        assert_eq!(access["span_id"], span.span_id().as_str());
    }
    assert_eq!(bugsink.events().len(), 4);
}
