//! Waiting for a condition instead of sleeping for a fixed time: the test
//! goes on as soon as the condition holds, and fails with what it last saw
//! when it never does.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a condition is checked unless the caller says otherwise.
pub const POLL: Duration = Duration::from_millis(20);

/// What one check of a condition gives: the value waited for, or what was
/// seen instead (shown when the wait fails).
pub trait Probe {
    /// The value waited for.
    type Value;
    /// What was seen when the condition did not hold.
    type Seen: Debug;
    /// `Ok` when the condition holds.
    fn check(self) -> Result<Self::Value, Self::Seen>;
}

/// `Some` holds; `None` was seen.
impl<T> Probe for Option<T> {
    type Value = T;
    type Seen = NotYet;
    fn check(self) -> Result<T, NotYet> {
        self.ok_or(NotYet)
    }
}

/// `Ok` holds; the `Err` is what was seen.
impl<T, E: Debug> Probe for Result<T, E> {
    type Value = T;
    type Seen = E;
    fn check(self) -> Result<T, E> {
        self
    }
}

/// `true` holds.
impl Probe for bool {
    type Value = ();
    type Seen = bool;
    fn check(self) -> Result<(), bool> {
        if self {
            Ok(())
        } else {
            Err(false)
        }
    }
}

/// What a probe returning `None` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotYet;

/// Checks `probe` every `every` until it holds or `timeout` has passed since
/// the call; returns its value, or what the last check saw. The probe runs
/// at least once, and once more at the deadline.
pub fn poll<P: Probe>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> P,
) -> Result<P::Value, P::Seen> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe().check() {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(seen);
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// [`poll`] every [`POLL`].
pub fn within<P: Probe>(timeout: Duration, probe: impl FnMut() -> P) -> Result<P::Value, P::Seen> {
    poll(timeout, POLL, probe)
}

/// Waits (checking every [`POLL`]) until `probe` holds and returns its
/// value; fails the test after `timeout`, naming `what` and showing what the
/// last check saw.
#[track_caller]
pub fn eventually<P: Probe>(what: &str, timeout: Duration, probe: impl FnMut() -> P) -> P::Value {
    eventually_every(what, timeout, POLL, probe)
}

/// [`eventually`], checking every `every` (a probe that is costly, or a
/// condition whose moment the test measures).
#[track_caller]
pub fn eventually_every<P: Probe>(
    what: &str,
    timeout: Duration,
    every: Duration,
    probe: impl FnMut() -> P,
) -> P::Value {
    match poll(timeout, every, probe) {
        Ok(v) => v,
        Err(seen) => {
            // One line when it fits, pretty-printed when it does not.
            let mut shown = format!("{seen:?}");
            if shown.len() > 120 {
                shown = format!("{seen:#?}");
            }
            panic!("{what}: not within {timeout:?}; last seen: {shown}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_probe_holds() {
        let mut n = 0;
        let got = eventually("n reaches 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(n)
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    fn gives_back_what_the_last_check_saw() {
        let mut n = 0;
        let seen = poll(Duration::from_millis(50), Duration::from_millis(5), || {
            n += 1;
            Err::<(), _>(n)
        });
        assert_eq!(seen, Err(n));
        assert!(n >= 2, "checked again at the deadline: {n}");
    }

    #[test]
    #[should_panic(expected = "the answer: not within 30ms; last seen: 41")]
    fn fails_naming_the_condition_and_the_last_value() {
        eventually("the answer", Duration::from_millis(30), || Err::<(), _>(41));
    }

    #[test]
    fn options_and_bools_are_probes() {
        assert_eq!(within(Duration::ZERO, || None::<u8>), Err(NotYet));
        assert_eq!(within(Duration::ZERO, || Some(1)), Ok(1));
        assert_eq!(within(Duration::ZERO, || false), Err(false));
        assert_eq!(within(Duration::ZERO, || true), Ok(()));
    }
}
