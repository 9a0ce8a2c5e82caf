//! Probe latency with 10 checks of which one hangs, and what a probe storm
//! costs the dependency. Run: `cargo bench -p opskit-benches --bench health`.

use opskit::health::{Check, Health, Probe};
use opskit_benches::runtime;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    storm_report();
    divan::main();
}

/// Nine quick checks and one that never answers (timeout 100 ms); `refresh`
/// moves every check to the background.
fn health(refresh: bool, hang_cache: Duration) -> Health {
    let h = Health::new(opskit::Shutdown::new());
    for i in 0..9 {
        let mut c = Check::new(format!("dep{i}"), || async { Ok(()) });
        if refresh {
            c = c.refresh_every(Duration::from_millis(200));
        }
        h.register(c);
    }
    let mut hung = Check::new("hangs", std::future::pending)
        .timeout(Duration::from_millis(100))
        .cache(hang_cache);
    if refresh {
        hung = hung.refresh_every(Duration::from_millis(200));
    }
    h.register(hung);
    h.mark_started();
    h
}

/// One probe with a warm cache: the usual case under Kubernetes probing.
#[divan::bench]
fn readyz_10_checks_one_hung_cached(b: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let h = health(false, Duration::from_secs(3600));
    rt.block_on(h.respond(Probe::Ready, None, None, None));
    b.bench_local(|| rt.block_on(h.respond(Probe::Ready, None, Some("verbose"), None)));
}

/// Checks refreshed in the background: probes never wait, even for the hung one.
#[divan::bench]
fn readyz_10_checks_one_hung_background_refresh(b: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let h = health(true, Duration::from_secs(1));
    rt.block_on(async {
        h.start_refreshing();
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    b.bench_local(|| rt.block_on(h.respond(Probe::Ready, None, None, None)));
}

/// No cache: every probe waits for the hung check's timeout (100 ms here).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn readyz_10_checks_one_hung_uncached(b: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let h = health(false, Duration::ZERO);
    b.bench_local(|| rt.block_on(h.respond(Probe::Ready, None, None, None)));
}

/// 1,000 concurrent `/readyz` against one check with the default 1 s cache,
/// repeated for 3 s: how often the dependency is hit.
fn storm_report() {
    let rt = runtime();
    let h = Health::new(opskit::Shutdown::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    h.register(Check::new("db", move || {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await; // a round trip
            Ok(())
        }
    }));
    h.mark_started();
    let start = Instant::now();
    let mut probes = 0usize;
    let mut worst = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        rt.block_on(futures_util::future::join_all(
            (0..1000).map(|_| h.respond(Probe::Ready, None, None, None)),
        ));
        worst = worst.max(t.elapsed());
        probes += 1000;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "probe storm: {probes} probes in {secs:.1} s ({:.0}/s), dependency hit {} times ({:.2}/s), slowest wave of 1,000: {worst:?}",
        probes as f64 / secs,
        runs.load(Ordering::Relaxed),
        runs.load(Ordering::Relaxed) as f64 / secs
    );
}
