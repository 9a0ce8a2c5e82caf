//! Variables under opskit's or the application's prefix that nothing reads:
//! most often a typo (`OPSKIT_RATE_LIMT=5/1m` would otherwise start the
//! service silently without a rate limit).

use super::{field_names, AppConfig, ConfigReport, Env, VARS};

/// The library's prefix: every `OPSKIT_*` variable is one opskit reads.
const LIBRARY_PREFIX: &str = "OPSKIT_";

/// A set variable that nothing reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownVar {
    /// Its name (never its value).
    pub(crate) name: String,
    /// The known variable closest to it, if one is close enough to be the
    /// intended one.
    pub(crate) closest: Option<String>,
}

impl UnknownVar {
    /// "; did you mean `OPSKIT_RATE_LIMIT`?", or nothing.
    fn suggestion(&self) -> String {
        self.closest
            .as_ref()
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default()
    }

    /// The start-up warning: "`OPSKIT_RATE_LIMT` is not a known variable;
    /// did you mean `OPSKIT_RATE_LIMIT`?".
    pub(crate) fn warning(&self) -> String {
        format!(
            "`{}` is not a known variable{}",
            self.name,
            self.suggestion()
        )
    }
}

/// Whether `OPSKIT_STRICT_ENV` is on, read through its declaration (name,
/// parser, default). An invalid value counts as off here;
/// [`super::Settings::from_env`] reports it.
pub(crate) fn strict(env: &Env) -> bool {
    super::parse::Reader::new(env)
        .read::<bool>(&super::settings::STRICT_ENV)
        .unwrap_or(false)
}

/// The non-empty variables under `OPSKIT_`, and under the application's
/// prefix when it has a configuration struct, that neither opskit nor `C`
/// reads. An application without fields ([`super::NoAppConfig`]) may use
/// the prefix for something else: only `OPSKIT_` is checked then.
pub(crate) fn unknown_vars<C: AppConfig>(env: &Env) -> Vec<UnknownVar> {
    let library: Vec<String> = VARS
        .iter()
        .map(|v| v.name)
        .filter(|n| n.starts_with(LIBRARY_PREFIX))
        .map(str::to_owned)
        .collect();
    let fields = field_names::<C>();
    // envy reads the field names in any case (`APP_greeting` is `greeting`).
    let app: Vec<String> = C::vars()
        .iter()
        .map(|v| v.name.to_owned())
        .chain(fields.iter().map(|f| format!("{}{f}", C::PREFIX)))
        .map(|n| n.to_ascii_uppercase())
        .collect();
    let mut out = Vec::new();
    let mut check = |prefix: &str, known: &[String], any_case: bool| {
        for (rest, _) in env.with_prefix(prefix) {
            let name = format!("{prefix}{rest}");
            let is_known = if any_case {
                known.iter().any(|k| k.eq_ignore_ascii_case(&name))
            } else {
                known.contains(&name)
            };
            if !is_known {
                out.push(UnknownVar {
                    closest: closest(&name, prefix, known),
                    name,
                });
            }
        }
    };
    check(LIBRARY_PREFIX, &library, false);
    if !fields.is_empty() && C::PREFIX != LIBRARY_PREFIX {
        check(C::PREFIX, &app, true);
    }
    out
}

/// In strict mode, one problem per unknown variable. Names only, by
/// construction: the value-withholding net would mistake a suggested name
/// that shares a word with the value (`OPSKIT_METRICS_PTH=/metrics`) for an
/// echo, and drop the suggestion.
pub(crate) fn strict_report(unknown: &[UnknownVar]) -> ConfigReport {
    let mut report = ConfigReport::default();
    for u in unknown {
        report.push(
            u.name.clone(),
            "a variable that opskit or the application reads (OPSKIT_STRICT_ENV is on)",
            format!("nothing reads this variable{}", u.suggestion()),
        );
    }
    report
}

/// The known name closest to `name` by edit distance, when the part after
/// the prefix differs in at most a third of its letters (and at most 3).
fn closest(name: &str, prefix: &str, known: &[String]) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    let rest = upper.len().saturating_sub(prefix.len());
    let limit = (rest / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (levenshtein(&upper, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// The Levenshtein distance between two strings, in characters.
///
/// Written here (a dozen lines) rather than taken from `strsim`, which is
/// not in the dependency tree: this is its only use, on a few dozen short
/// names once at start-up.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct App {
        greeting: Option<String>,
        slow_max_ms: Option<u64>,
    }

    impl AppConfig for App {}

    #[test]
    fn distances() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("RATE_LIMT", "RATE_LIMIT"), 1);
        assert_eq!(levenshtein("abc", ""), 3);
    }

    #[test]
    fn typos_are_found_with_the_closest_name() {
        let env = Env::from_pairs([
            ("OPSKIT_RATE_LIMT", "5/1m"),
            ("OPSKIT_RATE_LIMIT", "5/1m"),
            ("OPSKIT_ZZZZZZZZZZZZ", "x"),
            ("OPSKIT_EMPTY", ""),
            ("APP_GREETNG", "hi"),
            ("APP_greeting", "hi"),
            ("APP_SLOW_MAX_MS", "5"),
            ("OTHER_THING", "x"),
        ]);
        let found = unknown_vars::<App>(&env);
        let pairs: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|u| (u.name.as_str(), u.closest.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("OPSKIT_RATE_LIMT", Some("OPSKIT_RATE_LIMIT")),
                ("OPSKIT_ZZZZZZZZZZZZ", None),
                ("APP_GREETNG", Some("APP_GREETING")),
            ]
        );
        assert_eq!(
            found[0].warning(),
            "`OPSKIT_RATE_LIMT` is not a known variable; did you mean `OPSKIT_RATE_LIMIT`?"
        );
    }

    #[test]
    fn without_an_app_config_only_opskit_is_checked() {
        let env = Env::from_pairs([("APP_ANYTHING", "x"), ("OPSKIT_NOPE", "x")]);
        let found = unknown_vars::<super::super::NoAppConfig>(&env);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "OPSKIT_NOPE");
    }

    #[test]
    fn strict_problems_name_no_value() {
        let env = Env::from_pairs([("OPSKIT_RATE_LIMT", "SentinelLimit")]);
        let r = strict_report(&unknown_vars::<App>(&env));
        assert_eq!(r.problems.len(), 1);
        assert!(!r.to_string().contains("Sentinel"), "{r}");
        assert!(r.to_string().contains("did you mean `OPSKIT_RATE_LIMIT`?"));
        // A value that shares a word with the suggested name keeps the suggestion.
        let env = Env::from_pairs([("OPSKIT_METRICS_PTH", "/metrics")]);
        let r = strict_report(&unknown_vars::<App>(&env));
        assert!(
            r.to_string()
                .contains("did you mean `OPSKIT_METRICS_PATH`?"),
            "{r}"
        );
        assert!(strict(&Env::from_pairs([("OPSKIT_STRICT_ENV", "TRUE")])));
        assert!(!strict(&Env::from_pairs([("OPSKIT_STRICT_ENV", "maybe")])));
    }
}
