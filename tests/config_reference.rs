//! `docs/configuration.md` and `.env.example` are generated from the code;
//! this test fails when they drift. `OPSKIT_BLESS=1` rewrites them.

use opskit::config::{env_example, field_names, markdown_reference, AppConfig, VarSpec, VARS};
use std::path::{Path, PathBuf};

const BEGIN: &str = "<!-- BEGIN GENERATED: do not edit; `OPSKIT_BLESS=1 cargo test -p opskit-conformance --test config_reference` rewrites it -->\n";
const END: &str = "<!-- END GENERATED -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn expected_reference() -> String {
    format!(
        "{BEGIN}\n## Library variables\n\n{}\n## Starter variables (`APP_*`)\n\nRead by both starters' `Config` struct.\n\n{}{END}",
        markdown_reference(VARS),
        markdown_reference(axum_starter::Config::vars()),
    )
}

fn expected_env_example() -> String {
    format!(
        "# Every variable opskit and the starters read, with its default.\n# Generated from the code (tests/config_reference.rs); copy to .env and uncomment what you change.\n\n# --- opskit ---\n{}\n# --- starters (APP_*) ---\n{}",
        env_example(VARS),
        env_example(axum_starter::Config::vars()),
    )
}

fn check(path: &Path, current: &str, expected: &str, write: impl FnOnce() -> String) {
    if current != expected {
        if std::env::var_os("OPSKIT_BLESS").is_some() {
            std::fs::write(path, write()).expect("write");
        } else {
            panic!(
                "{} is out of date with the code; run `OPSKIT_BLESS=1 cargo test -p opskit-conformance --test config_reference` and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn configuration_md_matches_the_code() {
    let path = root().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
    let start = doc.find(BEGIN).unwrap_or(doc.len());
    let end = doc.find(END).map_or(doc.len(), |i| i + END.len());
    let expected = expected_reference();
    let current = doc.get(start..end).unwrap_or("");
    check(&path, current, &expected, || {
        let (head, tail) = if start < doc.len() {
            (&doc[..start], &doc[end..])
        } else {
            (doc.as_str(), "\n")
        };
        format!("{head}{expected}{tail}")
    });
}

#[test]
fn env_example_matches_the_code() {
    let path = root().join(".env.example");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let expected = expected_env_example();
    check(&path, &current, &expected, || expected.clone());
}

fn names(vars: &[VarSpec]) -> Vec<&'static str> {
    vars.iter().map(|v| v.name).collect()
}

#[test]
fn every_starter_field_is_documented_and_both_starters_agree() {
    assert_eq!(axum_starter::Config::vars(), actix_starter::Config::vars());
    let documented = names(axum_starter::Config::vars());
    for field in field_names::<axum_starter::Config>() {
        let var = format!(
            "{}{}",
            axum_starter::Config::PREFIX,
            field.to_ascii_uppercase()
        );
        assert!(documented.contains(&var.as_str()), "{var} has no VarSpec");
    }
    assert_eq!(
        field_names::<axum_starter::Config>(),
        field_names::<actix_starter::Config>()
    );
}

#[test]
fn library_variables_are_unique_and_defaults_are_valid() {
    let mut seen = std::collections::BTreeSet::new();
    for v in VARS {
        assert!(seen.insert(v.name), "{} listed twice", v.name);
    }
    // Every default, written into the environment, is accepted.
    let env =
        opskit::config::Env::from_pairs(VARS.iter().filter_map(|v| v.default.map(|d| (v.name, d))));
    opskit::config::Settings::from_env(&env).expect("defaults are valid");
}
