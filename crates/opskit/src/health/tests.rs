use super::*;
use std::sync::atomic::AtomicUsize;

fn ready_health() -> Health {
    let h = Health::new(Shutdown::new());
    h.mark_started();
    h
}

#[test]
fn rfc3339_dates() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_425_600_123);
    assert_eq!(rfc3339(t), "2026-11-23T09:20:00.123Z");
    assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn hung_and_panicking_checks_fail_without_crashing() {
    let h = ready_health();
    h.register(Check::new("hangs", std::future::pending).timeout(Duration::from_millis(50)));
    h.register(Check::new("panics", || async { panic!("boom") }));
    h.register(Check::new("fine", || async { Ok(()) }));
    // The hung check is cut at its 50 ms timeout: the probe answers. The
    // bound only catches a probe that hangs with it (no speed is asserted).
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        h.respond(Probe::Ready, None, Some("verbose"), None),
    )
    .await
    .expect("the probe answers although a check hangs");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "[-]hangs failed: reason withheld\n[-]panics failed: reason withheld\n[+]fine ok\nreadyz check failed\n"
    );
    let excluded = h
        .respond(
            Probe::Ready,
            None,
            Some("exclude=hangs&exclude=panics"),
            None,
        )
        .await;
    assert_eq!(excluded.status, 200);
    assert_eq!(
        h.respond(Probe::Ready, Some("fine"), None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        h.respond(Probe::Ready, Some("hangs"), None, None)
            .await
            .status,
        503
    );
    let unknown = h.respond(Probe::Ready, Some("nope<b>"), None, None).await;
    assert_eq!(
        (unknown.status, unknown.content_type),
        (404, "application/problem+json")
    );
    assert_eq!(
        unknown.body,
        r#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no health check has that name"}"#
    );
    assert_eq!(h.respond(Probe::Live, None, None, None).await.status, 200);
}

#[tokio::test]
async fn a_probe_storm_runs_a_check_once_per_cache_period() {
    let h = ready_health();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    h.register(Check::new("db", move || {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        }
    }));
    let probes = (0..1000).map(|_| h.respond(Probe::Ready, None, None, None));
    let answers = join_all(probes).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A stale result answers at once while the check runs again in the
/// background (a frozen dependency never holds a probe); the new
/// result answers the probes after it.
#[tokio::test(start_paused = true)]
async fn a_stale_result_answers_while_the_check_runs_again() {
    let h = ready_health();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    h.register(
        Check::new("cache", move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Err("frozen".to_owned())
            }
        })
        .cache(Duration::ZERO)
        .timeout(Duration::from_secs(10)),
    );
    assert_eq!(h.respond(Probe::Ready, None, None, None).await.status, 200);
    let asked = tokio::time::Instant::now();
    let stale = h.respond(Probe::Ready, None, None, None).await;
    assert_eq!(stale.status, 200, "the last result, while the run hangs");
    assert_eq!(asked.elapsed(), Duration::ZERO, "no wait for the run");
    // Probes during the run neither wait nor start another run.
    tokio::task::yield_now().await;
    assert_eq!(h.respond(Probe::Ready, None, None, None).await.status, 200);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one run in the background");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.respond(Probe::Ready, None, None, None).await.status, 503);
}

#[tokio::test]
async fn report_detail_needs_the_token_when_one_is_set() {
    let h = ready_health().with_identity(
        Identity {
            service: "svc".into(),
            version: "1.0".into(),
            commit: "abc".into(),
            environment: "test".into(),
        },
        Some(crate::Secret::new("t0ken-t0ken-t0ken")),
    );
    h.register(Check::new("db", || async { Err("refused".to_owned()) }).critical(false));
    let anon = h.respond(Probe::Report, None, None, None).await;
    assert_eq!(anon.status, 200);
    assert_eq!(anon.body, r#"{"status":"warn"}"#);
    let authed = h
        .respond(Probe::Report, None, None, Some(b"Bearer t0ken-t0ken-t0ken"))
        .await;
    let v: Value = serde_json::from_str(&authed.body).unwrap();
    assert_eq!(v["service"], "svc");
    assert_eq!(v["checks"]["db"]["status"], "warn");
    assert_eq!(v["checks"]["db"]["message"], "refused");
    let wrong = h
        .respond(Probe::Report, None, None, Some(b"Bearer nope"))
        .await;
    assert_eq!(wrong.body, r#"{"status":"warn"}"#);
}

#[tokio::test]
async fn a_url_in_a_check_message_keeps_no_credentials() {
    let h = ready_health();
    h.register(Check::new("api", || async {
        Err("cannot reach http://svc:hunter2@api.internal/ping?token=t0k".to_owned())
    }));
    let report = h.respond(Probe::Report, None, None, None).await;
    let v: Value = serde_json::from_str(&report.body).unwrap();
    assert_eq!(
        v["checks"]["api"]["message"],
        "cannot reach http://[REDACTED]@api.internal/ping?[REDACTED]"
    );
}
