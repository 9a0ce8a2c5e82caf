//! Typed, validated configuration from the environment.
//!
//! Two sets of variables are read at start-up, from the process environment
//! and an optional `.env` file (the real environment wins):
//!
//! * the library's own [`Settings`], using standard names where they exist
//!   (`OTEL_*`, `RUST_LOG`, `PORT`, `HOST`) and `OPSKIT_*` otherwise — every
//!   one is listed in [`VARS`];
//! * the application's own `#[derive(Deserialize)]` struct, read with `envy`
//!   under a prefix (`APP_` by default) — see [`AppConfig`].
//!
//! Every problem of both is collected into one [`ConfigReport`], one line per
//! variable, naming the variable, what was expected and what was wrong. Values
//! are never echoed, so a secret cannot leak through the report.
//!
//! A set variable under `OPSKIT_` (or under the application's prefix, when it
//! has a configuration struct) that nothing reads is most likely a typo: it
//! gets a start-up warning naming the closest known variable, or a problem in
//! the report when `OPSKIT_STRICT_ENV` is on.
//!
//! ```
//! use opskit::config::{Env, Settings};
//! let env = Env::from_pairs([("PORT", "abc"), ("OPSKIT_SHUTDOWN_TIMEOUT", "forever")]);
//! let report = Settings::from_env(&env).unwrap_err();
//! let text = report.to_string();
//! assert!(text.contains("PORT: expected a TCP port"));
//! assert!(text.contains("OPSKIT_SHUTDOWN_TIMEOUT: expected a duration"));
//! assert!(!text.contains("forever"));
//! ```

mod app;
mod health;
mod logging;
mod metrics;
mod otel;
mod parse;
mod ratelimit;
mod reference;
mod security;
mod sentry;
mod server;
mod settings;
mod unknown;

pub use app::{field_names, AppConfig, NoAppConfig, Validator};
pub use logging::{AccessLogLevels, AccessLogSettings, LogFormat};
pub use parse::{FromVar, HeaderName, List, Ratio};
pub use reference::{env_example, markdown_reference};
pub use sentry::SentrySettings;
pub use settings::{Settings, VARS};
pub(crate) use unknown::{strict, strict_report, unknown_vars};

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A snapshot of the environment variables opskit reads.
///
/// Empty values count as unset, as the OpenTelemetry specification asks.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment, over the variables of a `.env` file at `dotenv`
    /// if that file exists (the process environment wins).
    pub fn from_process(dotenv: Option<&Path>) -> Result<Self, ConfigReport> {
        let mut vars = BTreeMap::new();
        if let Some(path) = dotenv.filter(|p| p.exists()) {
            match dotenvy::from_path_iter(path) {
                Ok(iter) => {
                    for (i, item) in iter.enumerate() {
                        match item {
                            Ok((k, v)) => {
                                vars.insert(k, v);
                            }
                            Err(_) => {
                                return Err(ConfigReport::single(
                                    path.display().to_string(),
                                    "a .env file of KEY=value lines",
                                    format!("line {} cannot be parsed", i + 1),
                                ))
                            }
                        }
                    }
                }
                Err(e) => {
                    return Err(ConfigReport::single(
                        path.display().to_string(),
                        "a readable .env file",
                        e.to_string(),
                    ))
                }
            }
        }
        for (k, v) in std::env::vars_os() {
            if let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) {
                vars.insert(k, v);
            }
        }
        Ok(Self { vars })
    }

    /// An environment made of the given pairs only (for tests and embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets a variable (settings in code override the environment).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }

    /// The value of `name`, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Non-empty variables whose name starts with `prefix`, with the prefix removed.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.vars
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| !v.is_empty())
            .map(move |(k, v)| (&k[prefix.len()..], v.as_str()))
    }
}

/// One documented environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarSpec {
    /// The variable's name, e.g. `OPSKIT_SHUTDOWN_TIMEOUT`.
    pub name: &'static str,
    /// What a valid value looks like, e.g. `a duration such as 30s or 500ms`.
    pub expected: &'static str,
    /// The default, as it would be written in the environment; `None` when unset means off or absent.
    pub default: Option<&'static str>,
    /// What it does.
    pub description: &'static str,
    /// Whether the value is a secret (never printed, masked in `.env.example`).
    pub secret: bool,
}

impl VarSpec {
    /// A non-secret variable.
    pub const fn new(
        name: &'static str,
        expected: &'static str,
        default: Option<&'static str>,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            expected,
            default,
            description,
            secret: false,
        }
    }

    /// Marks the variable as a secret.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

/// One invalid variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The variable's name.
    pub var: String,
    /// What a valid value looks like.
    pub expected: String,
    /// What is wrong with the value given (never the value itself).
    pub problem: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}; {}",
            self.var, self.expected, self.problem
        )
    }
}

/// Every configuration problem found at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigReport {
    /// The problems: the library's in the order of the reference
    /// ([`VARS`]), then the application's in the order found.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigReport {
    fn single(
        var: impl Into<String>,
        expected: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        let mut r = Self::default();
        r.push(var, expected, problem);
        r
    }

    /// Adds a problem.
    pub fn push(
        &mut self,
        var: impl Into<String>,
        expected: impl Into<String>,
        problem: impl Into<String>,
    ) {
        // Problems never quote values; a URL that slips into one anyway
        // (a library's message) keeps no credentials.
        let problem = problem.into();
        self.problems.push(ConfigProblem {
            var: var.into(),
            expected: expected.into(),
            problem: crate::redact_urls(&problem).into_owned(),
        });
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Moves the problems of `other` into this report.
    pub fn merge(&mut self, other: ConfigReport) {
        self.problems.extend(other.problems);
    }

    /// A safety net under the parsers, whose messages never quote values on
    /// purpose: a problem that repeats part of its variable's value in `env`
    /// (see [`echoes`]) is replaced by a fixed sentence. A variable named
    /// `PREFIX*` (a cross-field problem) is checked against every value
    /// under the prefix.
    pub(crate) fn withhold_values(&mut self, env: &Env) {
        for p in &mut self.problems {
            let values: Vec<&str> = match p.var.strip_suffix('*') {
                Some(prefix) => env.with_prefix(prefix).map(|(_, v)| v).collect(),
                None => env.get(&p.var).into_iter().collect(),
            };
            if values.iter().any(|v| echoes(&p.problem, v, &p.expected)) {
                p.problem = WITHHELD.to_owned();
            }
        }
    }
}

/// What a problem that would repeat its value says instead.
const WITHHELD: &str = "the value is invalid (value not shown)";

/// Whether `text` repeats a word of `value` (a run of four or more letters
/// or digits, case-insensitive), or ten characters in a row of a longer
/// one (a cut-off quote), that `vocabulary` does not contain: words of the
/// value that are also the expected form's (`info`, `tracecontext`) are
/// not the value's own.
fn echoes(text: &str, value: &str, vocabulary: &str) -> bool {
    const CUT: usize = 10;
    let text = text.to_lowercase();
    let vocabulary = vocabulary.to_lowercase();
    let value = value.to_lowercase();
    let repeated = |part: &str| text.contains(part) && !vocabulary.contains(part);
    value
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 4)
        .any(|word| {
            let chars: Vec<char> = word.chars().collect();
            repeated(word)
                || chars
                    .windows(CUT)
                    .any(|w| repeated(&w.iter().collect::<String>()))
        })
}

impl fmt::Display for ConfigReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "configuration is invalid ({n} problem{}); fix these environment variables and start again:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigReport {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_that_repeats_its_value_is_withheld() {
        let env = Env::from_pairs([
            ("A", "SentinelValue"),
            ("B", "info,verbose"),
            ("APP_X", "hunter2hunter2"),
        ]);
        let mut r = ConfigReport::default();
        r.push("A", "a number", "`sentinelvalue` is not a number");
        r.push("A", "a number", "`SentinelVal…` is not a number");
        r.push("A", "a number", "the value is not a number");
        r.push(
            "B",
            "levels: error, warn, info",
            "level 2 is not one of error, warn, info",
        );
        r.push("B", "levels: error, warn, info", "`verbose` is not a level");
        r.push("APP_*", "a consistent set", "hunter2hunter2 conflicts");
        r.push("UNSET", "anything", "the variable is required but not set");
        r.withhold_values(&env);
        let problems: Vec<&str> = r.problems.iter().map(|p| p.problem.as_str()).collect();
        assert_eq!(
            problems,
            [
                WITHHELD,
                WITHHELD,
                "the value is not a number",
                "level 2 is not one of error, warn, info",
                WITHHELD,
                WITHHELD,
                "the variable is required but not set",
            ]
        );
    }

    #[test]
    fn credentials_in_a_problem_are_redacted() {
        let mut r = ConfigReport::default();
        r.push("X", "a URL", "cannot use http://u:hunter2@h/");
        assert_eq!(r.problems[0].problem, "cannot use http://[REDACTED]@h/");
    }
}
