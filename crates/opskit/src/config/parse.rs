//! Reading variables: the [`Reader`] that collects every problem, and the
//! value parsers shared by several subsystems (each subsystem's own are in
//! its file). Each parser returns what was wrong without echoing the value.

use super::{ConfigReport, Env, VarSpec};
use std::net::IpAddr;
use std::time::Duration;

/// A type that can be read from one environment variable.
pub trait FromVar: Sized {
    /// Parses `value`; the error says what is wrong and never contains the value.
    fn from_var(value: &str) -> Result<Self, String>;
}

impl FromVar for String {
    fn from_var(value: &str) -> Result<Self, String> {
        Ok(value.to_owned())
    }
}

impl FromVar for u16 {
    fn from_var(value: &str) -> Result<Self, String> {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| "the value is not a whole number".to_owned())
            .and_then(|n| {
                u16::try_from(n).map_err(|_| "the number is larger than 65535".to_owned())
            })
    }
}

impl FromVar for u64 {
    fn from_var(value: &str) -> Result<Self, String> {
        value
            .trim()
            .parse()
            .map_err(|_| "the value is not a whole number".to_owned())
    }
}

impl FromVar for bool {
    /// `true`/`false` in any case, as the OpenTelemetry specification reads booleans,
    /// plus `1`/`0`, `yes`/`no`, `on`/`off`.
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("the value is not true or false".to_owned()),
        }
    }
}

impl FromVar for IpAddr {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim() {
            "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
            v => v
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| "the value is not an IP address (or localhost)".to_owned()),
        }
    }
}

impl FromVar for Duration {
    /// A number with a unit: `ms`, `s`, `m`, `h` (e.g. `30s`, `500ms`, `2m`), or `0`.
    ///
    /// Written by hand (a dozen lines) rather than through `humantime` so that
    /// error messages never repeat the value and say exactly what is accepted.
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if v == "0" {
            return Ok(Duration::ZERO);
        }
        let split = v
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| "the number has no unit (ms, s, m or h)".to_owned())?;
        let (num, unit) = v.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| "the value is not a number followed by a unit".to_owned())?;
        let ms = match unit.trim() {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" | "min" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => return Err("the unit is not one of ms, s, m, h".to_owned()),
        };
        ms.map(Duration::from_millis)
            .ok_or_else(|| "the duration is too large".to_owned())
    }
}

/// The value of the word `value` names among `choices` (trimmed, any
/// case); otherwise the problem lists them: "the value is not a, b or c".
pub(crate) fn one_of<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let word = value.trim().to_ascii_lowercase();
    if let Some((_, t)) = choices.iter().find(|(w, _)| *w == word) {
        return Ok(*t);
    }
    let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
    Err(match words.split_last() {
        Some((last, [])) => format!("the value is not {last}"),
        Some((last, rest)) => format!("the value is not {} or {last}", rest.join(", ")),
        None => "the value is not allowed".to_owned(),
    })
}

/// A whole number from `MIN` to `MAX`: the range check is part of the
/// parse, so an out-of-range value is one more problem in the report (a
/// check made after reading could stop at the first failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounded<const MIN: u64, const MAX: u64>(pub(crate) u64);

impl<const MIN: u64, const MAX: u64> FromVar for Bounded<MIN, MAX> {
    fn from_var(value: &str) -> Result<Self, String> {
        match u64::from_var(value)? {
            n if (MIN..=MAX).contains(&n) => Ok(Self(n)),
            _ => Err("the number is out of range".to_owned()),
        }
    }
}

/// A duration other than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonZeroDuration(pub(crate) Duration);

impl FromVar for NonZeroDuration {
    fn from_var(value: &str) -> Result<Self, String> {
        match Duration::from_var(value)? {
            d if d.is_zero() => {
                Err("the value is 0: a client could hold a connection forever".to_owned())
            }
            d => Ok(Self(d)),
        }
    }
}

/// Reads variables and collects every problem.
///
/// Every check is part of a parser ([`FromVar`]) read through here, so each
/// invalid variable adds its problem and none hides the next. A subsystem
/// reads all of its variables first and only then combines them (with `?`
/// on the values read: `None` when one was invalid); a check across
/// variables, made after they are read, pushes onto [`Reader::report`].
pub(crate) struct Reader<'a> {
    env: &'a Env,
    pub(crate) report: ConfigReport,
    /// The names read, in order (tests compare them with `VARS`).
    #[cfg(test)]
    pub(crate) names: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(env: &'a Env) -> Self {
        Self {
            env,
            report: ConfigReport::default(),
            #[cfg(test)]
            names: Vec::new(),
        }
    }

    /// The parsed value, the parsed default when unset, or `None` (problem recorded
    /// when the value is invalid).
    pub(crate) fn read<T: FromVar>(&mut self, spec: &VarSpec) -> Option<T> {
        #[cfg(test)]
        self.names.push(spec.name);
        let raw = self.env.get(spec.name).or(spec.default)?;
        match T::from_var(raw) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.report.push(spec.name, spec.expected, problem);
                None
            }
        }
    }
}

/// A ratio from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio(pub f64);

impl FromVar for Ratio {
    fn from_var(value: &str) -> Result<Self, String> {
        match value.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(Self(r)),
            Ok(_) => Err("the number is not between 0 and 1".to_owned()),
            Err(_) => Err("the value is not a number".to_owned()),
        }
    }
}

/// A comma-separated list; empty items are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List(pub Vec<String>);

impl FromVar for List {
    fn from_var(value: &str) -> Result<Self, String> {
        Ok(Self(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

/// A lower-case HTTP header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(pub String);

impl FromVar for HeaderName {
    fn from_var(value: &str) -> Result<Self, String> {
        http::HeaderName::from_bytes(value.trim().as_bytes())
            .map(|h| Self(h.as_str().to_owned()))
            .map_err(|_| "the value is not a valid header name".to_owned())
    }
}

/// The non-empty items of a comma-separated list, numbered from 1.
pub(super) fn items(value: &str) -> impl Iterator<Item = (usize, &str)> {
    numbered(value, ',')
}

/// The non-empty, trimmed parts of `value` between `separator`s, numbered
/// from 1 (as problems name them: "item 3", "entry 2").
pub(super) fn numbered(value: &str, separator: char) -> impl Iterator<Item = (usize, &str)> {
    value
        .split(separator)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, item)| (i + 1, item))
}

/// A comma-separated list of route patterns: paths, exact or (ending in
/// `*`) prefixes, as the rate limiter's routes are written.
pub(super) struct Patterns(pub(super) Vec<String>);

impl FromVar for Patterns {
    fn from_var(value: &str) -> Result<Self, String> {
        items(value)
            .map(|(n, item)| match item.starts_with('/') {
                true => Ok(item.to_owned()),
                false => Err(format!("item {n}: the path does not start with /")),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A path prefix: empty, or `/` followed by path characters, no trailing `/`.
pub(super) struct PathPrefix(pub(super) String);

impl FromVar for PathPrefix {
    fn from_var(value: &str) -> Result<Self, String> {
        let v = value.trim().trim_end_matches('/');
        let ok = v.is_empty()
            || (v.starts_with('/')
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)));
        if ok {
            Ok(Self(v.to_owned()))
        } else {
            Err("the value is not a path such as /_ops".to_owned())
        }
    }
}

/// A [`PathPrefix`] that is not empty (`/metrics`).
pub(super) struct NonEmptyPath(pub(super) String);

impl FromVar for NonEmptyPath {
    fn from_var(value: &str) -> Result<Self, String> {
        match PathPrefix::from_var(value)?.0 {
            p if p.is_empty() => Err("the path is empty".to_owned()),
            p => Ok(Self(p)),
        }
    }
}

/// A secret of at least `MIN` characters (16 unless said otherwise).
pub(super) struct LongSecret<const MIN: usize = 16>(pub(super) crate::Secret);

impl<const MIN: usize> FromVar for LongSecret<MIN> {
    fn from_var(value: &str) -> Result<Self, String> {
        if value.chars().count() >= MIN {
            Ok(Self(crate::Secret::new(value)))
        } else {
            Err("the value is too short (value not shown)".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_reads_a_word_and_lists_the_choices() {
        let choices = [("auto", 0), ("always", 1), ("never", 2)];
        assert_eq!(one_of(" Always ", &choices), Ok(1));
        assert_eq!(
            one_of("sometimes", &choices),
            Err("the value is not auto, always or never".to_owned())
        );
        assert_eq!(
            one_of("half", &[("open", 0), ("closed", 1)]),
            Err("the value is not open or closed".to_owned())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::from_var("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(Duration::from_var("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(Duration::from_var("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(Duration::from_var("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(Duration::from_var("0"), Ok(Duration::ZERO));
        for bad in ["forever", "30", "30 years", "-1s", "99999999999999999999h"] {
            let e = Duration::from_var(bad).unwrap_err();
            assert!(!e.contains(bad), "{e} echoes {bad}");
        }
    }

    #[test]
    fn ports_and_hosts() {
        assert_eq!(u16::from_var("8080"), Ok(8080));
        assert!(u16::from_var("abc").is_err());
        assert!(u16::from_var("70000").unwrap_err().contains("65535"));
        assert_eq!(
            IpAddr::from_var("localhost"),
            Ok(IpAddr::from([127, 0, 0, 1]))
        );
        assert!(IpAddr::from_var("[::1]").is_ok());
        assert!(IpAddr::from_var("example.com").is_err());
    }

    #[test]
    fn bounded_numbers() {
        assert_eq!(Bounded::<1, 10>::from_var("10"), Ok(Bounded(10)));
        assert!(Bounded::<1, 10>::from_var("0")
            .unwrap_err()
            .contains("out of range"));
        assert!(Bounded::<1, 10>::from_var("x")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(NonZeroDuration::from_var("0").is_err());
        assert_eq!(
            NonZeroDuration::from_var("1s"),
            Ok(NonZeroDuration(Duration::from_secs(1)))
        );
    }

    #[test]
    fn booleans() {
        assert_eq!(bool::from_var("TRUE"), Ok(true));
        assert_eq!(bool::from_var("off"), Ok(false));
        assert!(bool::from_var("maybe").is_err());
    }
}
