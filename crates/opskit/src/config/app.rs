//! The application's own configuration struct, read with `envy`.

use super::{ConfigReport, Env, VarSpec};
use crate::Secret;
use serde::de::{self, DeserializeOwned, Visitor};
use std::collections::BTreeSet;
use std::fmt;

/// The application's configuration: a `#[derive(Deserialize)]` struct read from
/// variables named `PREFIX` + the field name in upper case.
///
/// ```
/// use opskit::config::{AppConfig, Env, Validator, VarSpec};
/// use opskit::Secret;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Config {
///     secret: Option<Secret>,
///     #[serde(default = "default_workers")]
///     workers: u16,
/// }
/// fn default_workers() -> u16 { 4 }
///
/// // A `const` item, so that `.secret()` (a `const fn`) can be used in it.
/// const VARS: &[VarSpec] = &[
///     VarSpec::new("APP_SECRET", "a secret of at least 32 characters", None, "Signing key.").secret(),
///     VarSpec::new("APP_WORKERS", "a number from 1 to 64", Some("4"), "Worker count."),
/// ];
///
/// impl AppConfig for Config {
///     fn vars() -> &'static [VarSpec] {
///         VARS
///     }
///     fn validate(&self, v: &mut Validator<'_>) {
///         v.secret_min_len("secret", self.secret.as_ref(), 32);
///         v.range("workers", self.workers, 1..=64);
///     }
/// }
///
/// let env = Env::from_pairs([("APP_SECRET", "tooshort"), ("APP_WORKERS", "lots")]);
/// let report = Config::from_env(&env).unwrap_err();
/// let text = report.to_string();
/// assert!(text.contains("APP_SECRET: expected a secret of at least 32 characters"));
/// assert!(text.contains("APP_WORKERS: expected a number from 1 to 64"));
/// assert!(!text.contains("tooshort") && !text.contains("lots"));
/// ```
pub trait AppConfig: DeserializeOwned + Send + Sync + 'static {
    /// The prefix of the application's variables.
    const PREFIX: &'static str = "APP_";

    /// The documented variables, for the configuration reference and error messages.
    fn vars() -> &'static [VarSpec] {
        &[]
    }

    /// Semantic checks after parsing (ranges, secret lengths, URL schemes).
    fn validate(&self, _v: &mut Validator<'_>) {}

    /// Reads the struct from `env`, reporting every invalid, missing and
    /// unacceptable variable at once.
    fn from_env(env: &Env) -> Result<Self, ConfigReport> {
        load::<Self>(env)
    }
}

/// The configuration of an application that has none of its own.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct NoAppConfig {}

impl AppConfig for NoAppConfig {}

/// Collects the semantic problems of an application's configuration.
#[derive(Debug)]
pub struct Validator<'a> {
    prefix: &'static str,
    specs: &'static [VarSpec],
    report: &'a mut ConfigReport,
}

impl Validator<'_> {
    fn var(&self, field: &str) -> String {
        format!("{}{}", self.prefix, field.to_ascii_uppercase())
    }

    fn expected(&self, var: &str, fallback: String) -> String {
        self.specs
            .iter()
            .find(|s| s.name == var)
            .map(|s| s.expected.to_owned())
            .unwrap_or(fallback)
    }

    /// Records a problem with `field`'s variable.
    pub fn problem(&mut self, field: &str, expected: &str, problem: impl Into<String>) {
        let var = self.var(field);
        let expected = self.expected(&var, expected.to_owned());
        self.report.push(var, expected, problem);
    }

    /// A set secret must have at least `min` characters. Its value is never shown.
    pub fn secret_min_len(&mut self, field: &str, secret: Option<&Secret>, min: usize) {
        if let Some(s) = secret {
            if s.char_len() < min {
                self.problem(
                    field,
                    &format!("a secret of at least {min} characters"),
                    "the value is too short (value not shown)",
                );
            }
        }
    }

    /// `value` must lie in `range`.
    pub fn range<T: PartialOrd + fmt::Display>(
        &mut self,
        field: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) {
        if !range.contains(&value) {
            self.problem(
                field,
                &format!("a value from {} to {}", range.start(), range.end()),
                "the value is out of range",
            );
        }
    }

    /// A set URL must use one of `schemes`.
    pub fn url_scheme(&mut self, field: &str, url: Option<&url::Url>, schemes: &[&str]) {
        if let Some(u) = url {
            if !schemes.contains(&u.scheme()) {
                self.problem(
                    field,
                    &format!("a URL with scheme {}", schemes.join(" or ")),
                    "the URL has another scheme",
                );
            }
        }
    }
}

/// Values tried in place of a missing required field so that parsing can go on
/// and find the next missing one (envy stops at the first).
const PLACEHOLDERS: &[&str] = &["0", "false", "placeholder", "http://placeholder.invalid/"];

fn load<C: AppConfig>(env: &Env) -> Result<C, ConfigReport> {
    let prefix = C::PREFIX;
    let specs = C::vars();
    let expected_for = |var: &str| {
        specs
            .iter()
            .find(|s| s.name == var)
            .map_or("a valid value", |s| s.expected)
            .to_owned()
    };
    let mut report = ConfigReport::default();
    // The variables whose problem is already reported: validation must not
    // report them again (they hold placeholders or defaults).
    let mut reported: BTreeSet<String> = BTreeSet::new();

    // 1. Each variable alone: envy stops at the first bad value, so probing one
    // variable at a time finds every bad value. A lone variable parses into
    // `Ok` or "missing <another field>"; any other error is its own.
    let mut good: Vec<(String, String)> = Vec::new();
    for (key, value) in env.with_prefix(prefix) {
        let pair = (key.to_ascii_lowercase(), value.to_owned());
        match envy::from_iter::<_, C>([pair.clone()]) {
            Ok(_) | Err(envy::Error::MissingValue(_)) => good.push(pair),
            Err(envy::Error::Custom(msg)) => {
                let var = format!("{prefix}{key}");
                report.push(var.clone(), expected_for(&var), scrub(&msg, value));
                reported.insert(var);
            }
        }
    }

    // 2. All good variables together: any "missing" error names a required
    // variable; fill it with a placeholder to look for the next one.
    let mut fields_filled: BTreeSet<&'static str> = BTreeSet::new();
    let parsed = loop {
        match envy::from_iter::<_, C>(good.clone()) {
            Ok(c) => break Some(c),
            Err(envy::Error::MissingValue(field)) => {
                let var = format!("{prefix}{}", field.to_ascii_uppercase());
                if fields_filled.insert(field) && !reported.contains(&var) {
                    report.push(
                        var.clone(),
                        expected_for(&var),
                        "the variable is required but not set",
                    );
                    reported.insert(var);
                }
                let filler = PLACEHOLDERS.iter().find(|p| {
                    !matches!(
                        envy::from_iter::<_, C>([(field.to_owned(), (**p).to_owned())]),
                        Err(envy::Error::Custom(_))
                    )
                });
                match filler {
                    Some(p) if !good.iter().any(|(k, _)| k == field) => {
                        good.push((field.to_owned(), (*p).to_owned()))
                    }
                    _ => break None,
                }
            }
            Err(envy::Error::Custom(msg)) => {
                // Only combinations of variables can fail here (a custom
                // cross-field Deserialize); no single variable is to blame.
                report.push(
                    format!("{prefix}*"),
                    "a consistent set of variables",
                    scrub_all(&msg, env, prefix),
                );
                break None;
            }
        }
    };

    // 3. Semantic checks, even when parsing failed elsewhere, so that every
    // problem is reported in one go.
    if let Some(config) = &parsed {
        let mut semantic = ConfigReport::default();
        config.validate(&mut Validator {
            prefix,
            specs,
            report: &mut semantic,
        });
        for p in semantic.problems {
            if !reported.contains(&p.var) {
                report.problems.push(p);
            }
        }
    }
    match parsed {
        Some(config) if report.is_empty() => Ok(config),
        _ => {
            report.withhold_values(env);
            Err(report)
        }
    }
}

/// The error message without the value: envy appends
/// "while parsing value '<value>' provided by <VAR>", and serde's own messages
/// may quote it.
fn scrub(msg: &str, value: &str) -> String {
    let msg = msg.split(" while parsing value '").next().unwrap_or(msg);
    let msg = if value.chars().count() >= 2 {
        msg.replace(value, "<value>")
    } else {
        msg.to_owned()
    };
    format!("the value is invalid: {msg}")
}

fn scrub_all(msg: &str, env: &Env, prefix: &str) -> String {
    env.with_prefix(prefix).fold(scrub(msg, ""), |m, (_, v)| {
        if v.chars().count() >= 2 {
            m.replace(v, "<value>")
        } else {
            m
        }
    })
}

/// The field names of a struct as serde sees them (after renames).
///
/// Used by tests that check every field of an [`AppConfig`] is documented.
pub fn field_names<C: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Stop
        }
    }
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = C::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Strict {
        name: String,
        port: u16,
        url: url::Url,
        token: Option<Secret>,
        #[serde(default)]
        verbose: bool,
    }

    impl AppConfig for Strict {
        fn validate(&self, v: &mut Validator<'_>) {
            v.secret_min_len("token", self.token.as_ref(), 16);
            v.range("port", self.port, 1024..=65535);
        }
    }

    fn vars(r: &ConfigReport) -> Vec<&str> {
        r.problems.iter().map(|p| p.var.as_str()).collect()
    }

    #[test]
    fn reports_bad_missing_and_semantic_problems_together() {
        let env = Env::from_pairs([
            ("APP_PORT", "http"),
            ("APP_VERBOSE", "perhaps"),
            ("APP_TOKEN", "short-s3cr3t"),
        ]);
        let r = Strict::from_env(&env).unwrap_err();
        assert_eq!(
            vars(&r),
            [
                "APP_PORT",
                "APP_VERBOSE",
                "APP_NAME",
                "APP_URL",
                "APP_TOKEN"
            ],
            "{r}"
        );
        let text = r.to_string();
        assert!(!text.contains("short-s3cr3t"));
        assert!(!text.contains("perhaps"), "{text}");
    }

    #[test]
    fn valid_config_parses() {
        let env = Env::from_pairs([
            ("APP_NAME", "svc"),
            ("APP_PORT", "8443"),
            ("APP_URL", "postgres://u:p@db/app"),
            ("OTHER", "ignored"),
        ]);
        let c = Strict::from_env(&env).unwrap();
        assert_eq!(c.port, 8443);
        assert!(!c.verbose);
    }

    #[test]
    fn semantic_problem_alone() {
        let env = Env::from_pairs([
            ("APP_NAME", "svc"),
            ("APP_PORT", "80"),
            ("APP_URL", "https://x.example/"),
        ]);
        assert_eq!(vars(&Strict::from_env(&env).unwrap_err()), ["APP_PORT"]);
    }

    #[test]
    fn bad_url_never_echoed() {
        let env = Env::from_pairs([
            ("APP_NAME", "svc"),
            ("APP_PORT", "8443"),
            ("APP_URL", "not a url with password hunter2"),
        ]);
        let r = Strict::from_env(&env).unwrap_err();
        assert_eq!(vars(&r), ["APP_URL"]);
        assert!(!r.to_string().contains("hunter2"));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Loose {
        mode: Option<Mode>,
        ports: Option<Vec<u16>>,
        flag: Option<bool>,
        name: Option<String>,
    }

    impl AppConfig for Loose {
        fn validate(&self, v: &mut Validator<'_>) {
            if let Some(name) = &self.name {
                // A careless check that quotes the value.
                v.problem("name", "a short name", format!("`{name}` is too long"));
            }
        }
    }

    #[test]
    fn no_problem_repeats_its_value() {
        let env = Env::from_pairs([
            ("APP_MODE", "SentinelMode"),
            ("APP_PORTS", "80,SentinelPort"),
            ("APP_FLAG", "SentinelFlag"),
            ("APP_NAME", "SentinelName"),
        ]);
        let r = Loose::from_env(&env).unwrap_err();
        assert_eq!(
            vars(&r),
            ["APP_FLAG", "APP_MODE", "APP_PORTS", "APP_NAME"],
            "{r}"
        );
        let text = r.to_string();
        assert!(!text.to_lowercase().contains("sentinel"), "{text}");
        // What serde says without the value is kept.
        assert!(text.contains("expected `fast`"), "{text}");
        assert!(text.contains("APP_NAME: expected a short name"), "{text}");
    }

    #[test]
    fn field_names_are_found() {
        assert_eq!(
            field_names::<Strict>(),
            ["name", "port", "url", "token", "verbose"]
        );
        assert!(field_names::<NoAppConfig>().is_empty());
    }
}
