//! Decimal digits without the `fmt` machinery: status codes, durations,
//! timestamps and rate-limit header values are written on every request, and
//! `write!(w, "{n}")` costs ~150 instructions a number where a table lookup
//! costs a few dozen. Hand-written: a 3,000-byte table and two functions.

use std::fmt::{self, Write};

/// "000001002…999": three digits for every number below 1,000.
const TABLE: &str = {
    const BYTES: [u8; 3000] = {
        let mut b = [0u8; 3000];
        let mut i = 0;
        while i < 1000 {
            b[i * 3] = b'0' + (i / 100) as u8;
            b[i * 3 + 1] = b'0' + (i / 10 % 10) as u8;
            b[i * 3 + 2] = b'0' + (i % 10) as u8;
            i += 1;
        }
        b
    };
    match std::str::from_utf8(&BYTES) {
        Ok(s) => s,
        Err(_) => panic!("digits are ASCII"),
    }
};

/// `n` (below 1,000) as three digits, zero-padded.
pub(crate) fn digits3(n: u32) -> &'static str {
    let at = (n % 1000) as usize * 3;
    &TABLE[at..at + 3]
}

/// Writes `v` in decimal, as `{v}` would.
pub(crate) fn write_u64(w: &mut impl Write, v: u64) -> fmt::Result {
    if v < 1000 {
        let skip = if v >= 100 {
            0
        } else if v >= 10 {
            1
        } else {
            2
        };
        return w.write_str(&digits3(v as u32)[skip..]);
    }
    write_u64(w, v / 1000)?;
    w.write_str(digits3((v % 1000) as u32))
}

/// The number of digits of `v` in decimal.
pub(crate) fn len_u64(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut values = vec![0, 1, 9, 10, 99, 100, 999, 1000, 1001, 12_345, u64::MAX];
        values.extend((0..5000).map(|_| rng.u64(..) >> rng.u32(0..64)));
        for v in values {
            let mut out = String::new();
            write_u64(&mut out, v).unwrap();
            assert_eq!(out, v.to_string());
            assert_eq!(len_u64(v), out.len());
        }
        assert_eq!(digits3(7), "007");
        assert_eq!(digits3(999), "999");
    }
}
