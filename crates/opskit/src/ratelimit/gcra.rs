//! GCRA (the generic cell rate algorithm): one timestamp per key, exact
//! sliding limits with bursts, no windows to reset.
//!
//! A quota of `q` requests per period `p` admits one request every
//! `T = p / q` on average and up to `burst` at once. Per key the state is the
//! theoretical arrival time (TAT): a request at `now` is admitted when
//! `now >= max(TAT, now) + T - burst·T`, which moves TAT on by `T`.

use std::time::Duration;

/// A quota: `count` requests per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
    /// Requests admitted at once (default: `count`).
    pub burst: u32,
}

impl Quota {
    /// `count` per `period`, the whole quota usable at once.
    pub fn new(count: u32, period: Duration) -> Self {
        Self {
            count,
            period,
            burst: count,
        }
    }

    /// The same quota with another burst.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// The emission interval `T`, in microseconds.
    pub fn interval_us(&self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.count.max(1))).max(1)
    }

    /// `burst · T`, in microseconds.
    pub fn tolerance_us(&self) -> u64 {
        self.interval_us().saturating_mul(u64::from(self.burst))
    }

    /// Parses `100/1m`, `5/30s`, `1000/1h`, `10/1d`, `3/500ms`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (count, period) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| "the value is not a quota such as 100/1m".to_owned())?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| "the count is not a whole number above 0".to_owned())?;
        let period = period.trim();
        let (num, unit) = period.split_at(
            period
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(period.len()),
        );
        let num: u64 = if num.is_empty() {
            1
        } else {
            num.parse()
                .map_err(|_| "the period is not a number".to_owned())?
        };
        let period = match unit {
            "ms" => Duration::from_millis(num),
            "s" => Duration::from_secs(num),
            "m" => Duration::from_secs(num * 60),
            "h" => Duration::from_secs(num * 3600),
            "d" => Duration::from_secs(num * 86_400),
            _ => return Err("the period's unit is not ms, s, m, h or d".to_owned()),
        };
        if period.is_zero() {
            return Err("the period is zero".to_owned());
        }
        Ok(Self::new(count, period))
    }
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Admitted.
    pub allowed: bool,
    /// Requests still admitted right now after this one.
    pub remaining: u32,
    /// Allowed: until the quota is whole again; refused: until the next
    /// request is admitted. Microseconds.
    pub reset_us: u64,
}

/// One GCRA step: the decision and the new TAT (unchanged when refused).
pub(crate) fn decide(quota: &Quota, tat: Option<u64>, now: u64) -> (Decision, u64) {
    let t = quota.interval_us();
    let tau = quota.tolerance_us();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + t;
    let allow_at = new_tat.saturating_sub(tau);
    if now < allow_at {
        let d = Decision {
            allowed: false,
            remaining: 0,
            reset_us: allow_at - now,
        };
        return (d, tat);
    }
    let remaining = ((now + tau - new_tat) / t).min(u64::from(quota.burst)) as u32;
    let d = Decision {
        allowed: true,
        remaining,
        reset_us: new_tat - now,
    };
    (d, new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let q = Quota::parse("5/1m").unwrap();
        assert_eq!(q.interval_us(), 12_000_000);
        let mut tat = None;
        let mut now = 1_000_000_000;
        for expected_remaining in [4, 3, 2, 1, 0] {
            let (d, t) = decide(&q, tat, now);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = Some(t);
        }
        let (d, _) = decide(&q, tat, now);
        assert!(!d.allowed);
        assert_eq!(d.reset_us, 12_000_000, "one slot frees every 12 s");
        now += 12_000_000;
        assert!(decide(&q, tat, now).0.allowed);
    }

    #[test]
    fn quotas_parse() {
        assert_eq!(
            Quota::parse("100/1m").unwrap().period,
            Duration::from_secs(60)
        );
        assert_eq!(Quota::parse("3/500ms").unwrap().interval_us(), 166_666);
        assert_eq!(
            Quota::parse("10/h").unwrap().period,
            Duration::from_secs(3600)
        );
        assert!(Quota::parse("0/1m").is_err());
        assert!(Quota::parse("5/1w").is_err());
        assert!(Quota::parse("5").is_err());
    }
}
