//! [`Run`](super::Run) alone, without a framework: the timeout against a
//! handler that spends its task's whole budget, and where the handler's
//! future is dropped.

use super::scope::in_request;
use super::{Begun, BodyBound, Failure, Head, InFlight, Kept, Pipeline, Run, Stop};
use crate::recorder::Recorder;
use crate::security::{SecurityPolicy, SecuritySettings};
use std::borrow::Cow;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

struct Target;

impl Kept for Target {
    fn target(&self) -> (&str, &str) {
        ("GET", "/")
    }
    fn route(&self) -> Option<Cow<'_, str>> {
        None
    }
}

type Flight = InFlight<http::HeaderMap, Target>;

/// A request begun with this request timeout, and what to do next.
fn begin(timeout: Duration) -> (Flight, super::Next) {
    let security = SecuritySettings {
        request_timeout: timeout,
        ..SecuritySettings::default()
    };
    let pipeline = Arc::new(Pipeline::new(
        Recorder::default(),
        SecurityPolicy::new(&security),
        None,
    ));
    let headers = http::HeaderMap::new();
    let head = Head {
        method: "GET",
        path: "/",
        routed_path: "/",
        headers: &headers,
        peer: None,
        body: BodyBound::Known(Some(0)),
    };
    let Begun { flight, next, .. } = pipeline.begin(&head, Target);
    (flight, next)
}

/// Never ends, and spends its task's whole budget on every poll: each
/// `recv` is ready at once until the budget runs out.
async fn busy() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    loop {
        tx.send(()).ok();
        rx.recv().await;
    }
}

#[tokio::test]
async fn a_handler_that_spends_its_whole_budget_still_times_out() {
    let (flight, next) = begin(Duration::from_millis(50));
    let mut run = std::pin::pin!(Run::new(Box::new(flight), next, (), |()| busy()));
    let polled = poll_fn(|cx| run.as_mut().poll_run(cx, |()| busy()));
    let (ended, _flight) = tokio::time::timeout(Duration::from_secs(10), polled)
        .await
        .expect("the request's own timeout ends it, long before 10 s");
    assert!(matches!(ended, Err(Stop::Failed(Failure::TimedOut))));
}

/// Notes, when dropped, whether the thread ran request code.
struct DropProbe(Arc<AtomicBool>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.store(in_request(), Ordering::SeqCst);
    }
}

async fn waits_forever(dropped_in_request: Arc<AtomicBool>) {
    let _probe = DropProbe(dropped_in_request);
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn the_handlers_future_is_dropped_in_the_requests_scope() {
    // Dropped with the `Run`, before the end (the client went away); the
    // request's state held as Actix holds it, by a borrow.
    let seen = Arc::new(AtomicBool::new(false));
    let (mut flight, next) = begin(Duration::from_secs(30));
    let mut run = Box::pin(Run::new(&mut flight, next, (), |()| {
        waits_forever(seen.clone())
    }));
    poll_fn(|cx| {
        assert!(run.as_mut().poll_run(cx, |()| unreachable!()).is_pending());
        Poll::Ready(())
    })
    .await;
    drop(run);
    assert!(
        seen.load(Ordering::SeqCst),
        "dropped outside the request's scope"
    );

    // Dropped when it timed out, before the request's state is handed back;
    // the state held as tower holds it, boxed.
    let seen = Arc::new(AtomicBool::new(false));
    let (flight, next) = begin(Duration::from_millis(20));
    let mut run = std::pin::pin!(Run::new(Box::new(flight), next, (), |()| {
        waits_forever(seen.clone())
    }));
    let (ended, _flight) = poll_fn(|cx| run.as_mut().poll_run(cx, |()| unreachable!())).await;
    assert!(matches!(ended, Err(Stop::Failed(Failure::TimedOut))));
    assert!(
        seen.load(Ordering::SeqCst),
        "dropped outside the request's scope"
    );
}

#[tokio::test]
async fn a_panic_while_waiting_for_the_limit_is_the_requests_panic() {
    let (mut flight, _) = begin(Duration::from_secs(30));
    let check: crate::ratelimit::LimitCheck = Box::pin(async {
        let in_request = in_request();
        panic!("the limit check failed (in request code: {in_request})")
    });
    let mut run = std::pin::pin!(Run::new(
        &mut flight,
        super::Next::Limit(check),
        (),
        |()| async { unreachable!("a request whose limit check panicked is not handled") }
    ));
    let (ended, _flight) = poll_fn(|cx| run.as_mut().poll_run(cx, |()| unreachable!())).await;
    let Err(Stop::Failed(Failure::Panicked(payload))) = ended else {
        panic!("the panic is not the request's");
    };
    assert_eq!(
        super::panic_message(&*payload),
        "the limit check failed (in request code: true)"
    );
}
