//! `opskit-audit URL`: a production-readiness audit of a running HTTP
//! service, from the outside (any service, not only opskit's), and of its
//! Kubernetes manifests (`--manifest`). See docs/audit.md for every check.
//!
//! Each check is a pure function over the answers gathered (`checks.rs`,
//! `manifest.rs`); `gather.rs` is the only part that talks to the network.

mod args;
mod checks;
mod gather;
mod http;
mod manifest;
mod prom;
mod report;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("opskit-audit: {e}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    let mut findings = Vec::new();
    let mut target = Vec::new();
    if !args.manifests.is_empty() {
        let mut files = Vec::new();
        for path in &args.manifests {
            match std::fs::read_to_string(path) {
                Ok(text) => files.push((path.clone(), text)),
                Err(e) => {
                    eprintln!("opskit-audit: cannot read {path}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        match manifest::load(&files) {
            Ok(docs) => findings.extend(manifest::audit(&docs)),
            Err(e) => {
                eprintln!("opskit-audit: {e}");
                return ExitCode::from(2);
            }
        }
        target.push(args.manifests.join(" "));
    }
    if let Some(options) = &args.options {
        match gather::gather(options) {
            Ok(obs) => findings.extend(checks::run_all(&obs)),
            Err(e) => {
                eprintln!("opskit-audit: {e}");
                return ExitCode::from(2);
            }
        }
        target.insert(0, options.url.clone());
    }
    let target = target.join(" + ");
    if args.json {
        println!("{:#}", report::json(&target, &findings));
    } else {
        print!("{}", report::table(&target, &findings));
    }
    let score = report::score(&findings);
    match args.min_score {
        Some(min) if score < min => {
            eprintln!("opskit-audit: score {score} is under --min-score {min}");
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}
