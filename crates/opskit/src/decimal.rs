//! Decimal digits without the `fmt` machinery: status codes, durations,
//! timestamps and rate-limit header values are written on every request, and
//! `write!(w, "{n}")` costs ~150 instructions a number where a table lookup
//! costs a few dozen. Hand-written: a 3,000-byte table and two functions.

use std::fmt::{self, Write};
use std::net::IpAddr;

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

/// An IP address as text on the stack: IPv4 written from the digit table
/// (the common case; `Display` costs several hundred instructions), IPv6 by
/// `Display`.
pub(crate) struct IpText {
    buf: [u8; 46],
    len: usize,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> Self {
        use std::fmt::Write as _;
        let mut t = Self {
            buf: [0; 46],
            len: 0,
        };
        // 46 bytes hold the longest address text: writes cannot fail.
        let _ = match ip {
            IpAddr::V4(v4) => v4
                .octets()
                .into_iter()
                .enumerate()
                .try_for_each(|(i, octet)| {
                    if i > 0 {
                        t.write_str(".")?;
                    }
                    write_u64(&mut t, u64::from(octet))
                }),
            IpAddr::V6(v6) => write!(t, "{v6}"),
        };
        t
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
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

    #[test]
    fn ip_text_matches_display() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..10_000 {
            let v4 = IpAddr::from(rng.u32(..).to_be_bytes());
            assert_eq!(IpText::new(v4).as_str(), v4.to_string());
        }
        for s in [
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }
}
