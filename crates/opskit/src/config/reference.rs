//! The generated configuration reference (`docs/configuration.md`, `.env.example`).

use super::VarSpec;
use std::fmt::Write;

/// A Markdown table of `vars`: name, expected value, default, description.
pub fn markdown_reference(vars: &[VarSpec]) -> String {
    let mut out =
        String::from("| Variable | Expected | Default | Description |\n|---|---|---|---|\n");
    for v in vars {
        let default = match v.default {
            Some(d) => format!("`{d}`"),
            None => "unset".to_owned(),
        };
        let secret = if v.secret {
            " **Secret**: never printed."
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {}{} |",
            v.name,
            v.expected.replace('|', "\\|"),
            default,
            v.description.replace('|', "\\|"),
            secret
        );
    }
    out
}

/// A `.env` file listing `vars` commented out, with their defaults.
pub fn env_example(vars: &[VarSpec]) -> String {
    let mut out = String::new();
    for v in vars {
        let _ = writeln!(out, "# {} Expected: {}.", v.description, v.expected);
        let value = if v.secret {
            ""
        } else {
            v.default.unwrap_or("")
        };
        let _ = writeln!(out, "# {}={}", v.name, value);
    }
    out
}
