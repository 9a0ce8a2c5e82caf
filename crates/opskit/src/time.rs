//! RFC 3339 timestamps without a date crate: the log line's (microseconds)
//! and the health report's (milliseconds) share one calendar conversion.

/// RFC 3339 UTC with microseconds (`2026-11-23T13:28:16.348659Z`), the
/// format of tracing-subscriber's `SystemTime`, written without `fmt`
/// machinery (which cost ~2,000 instructions per line).
pub(crate) struct Timestamp([u8; 27]);

impl Timestamp {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000000Z")
    }
}

pub(crate) fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(since.subsec_micros()));
    Timestamp(b)
}

/// Appends `t` as [`timestamp`] writes it. The text up to the seconds is
/// kept per thread and rebuilt once a second; only the microseconds are
/// written per call (a whole timestamp, with its UTF-8 check, was ~400
/// instructions of every log line).
pub(crate) fn push_timestamp(line: &mut String, t: std::time::SystemTime) {
    thread_local! {
        // (seconds since the epoch, "YYYY-MM-DDTHH:MM:SS.")
        static PREFIX: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Nothing below logs, so the cell is never borrowed twice.
    PREFIX.with_borrow_mut(|(at, prefix)| {
        if *at != secs {
            prefix.clear();
            prefix.push_str(&timestamp(t).as_str()[..20]);
            *at = secs;
        }
        line.push_str(prefix);
    });
    let micros = since.subsec_micros();
    line.push_str(crate::decimal::digits3(micros / 1000));
    line.push_str(crate::decimal::digits3(micros % 1000));
    line.push('Z');
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for dates from 1970 on).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread prefix is rebuilt when the second changes, not only
    /// the first time.
    #[test]
    fn pushed_timestamps_are_whole_timestamps() {
        for (s, us) in [
            (1_795_440_496, 348_659),
            (1_795_440_496, 7),
            (1_795_440_497, 999_999),
            (0, 0),
        ] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(s * 1_000_000 + us);
            let mut line = String::from("x");
            push_timestamp(&mut line, t);
            assert_eq!(line[1..], *timestamp(t).as_str());
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |s: u64, us: u64| {
            timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_micros(s * 1_000_000 + us))
                .as_str()
                .to_owned()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_795_440_496, 348_659), "2026-11-23T13:28:16.348659Z");
        assert_eq!(at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        // Every day of 400 years, against the day count the other way round.
        let mut days = 0;
        for y in 1970..2370u64 {
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            for (m, len) in [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ]
            .into_iter()
            .enumerate()
            {
                for d in 1..=len {
                    assert_eq!(civil_from_days(days), (y, m as u64 + 1, d));
                    days += 1;
                }
            }
        }
    }
}
