//! The command line.
//!
//! Hand-written: a dozen flags and no subcommands, so a parser crate (clap
//! and its builder, or lexopt) would add compile time and a dependency for
//! about the size of this file; `--help` is the text below.

use crate::gather::Options;
use std::time::Duration;

/// `--help`.
pub(crate) const USAGE: &str = "\
opskit-audit: checks a running HTTP service (any, not only opskit's) for production readiness.

usage: opskit-audit [options] URL
       opskit-audit --manifest FILE.yaml [--manifest FILE.yaml ...]

options:
  --https                  the service is served over TLS (implied by an https:// URL); behind a
                           TLS proxy with an http:// URL, requests carry X-Forwarded-Proto: https
  --intrusive              also send a burst (expects 429 + Retry-After) and an oversized body (413)
  --format table|json      output (default table)
  --min-score N            exit 1 when the score is under N (0-100)
  --health-prefix PATH     opskit's OPSKIT_HEALTH_PREFIX, tried before the conventional probe paths
  --liveness PATH          the liveness endpoint (default: found at /livez, /healthz, ...)
  --readiness PATH         the readiness endpoint (default: found at /readyz, /health/ready, ...)
  --startup PATH           the startup endpoint (default: found at /startupz, /health/startup, ...)
  --allow-health-details   /health may show details publicly
  --metrics-url URL|PATH   where a scraper reads the metrics (default /metrics on the service)
  --metrics-token TOKEN    bearer token of the metrics (opskit's OPSKIT_METRICS_TOKEN)
  --max-series N           series above which the metrics warn (default 10000)
  --request-id-header NAME header of the request id (default x-request-id)
  --oversized-body BYTES   size of the --intrusive body (default 8388608)
  --burst-max N            most requests of the --intrusive burst (default 1000)
  --timeout SECONDS        per-request timeout (default 10)
  --ca-cert FILE.pem       trust this CA for https:// instead of the bundled Mozilla roots
  --manifest FILE.yaml     audit Kubernetes manifests instead of (or as well as) a URL
  -h, --help               this text

exit status: 0 audited (and the score reaches --min-score), 1 score under --min-score,
2 bad arguments or the service did not answer.";

/// What the command line asked for.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) options: Option<Options>,
    pub(crate) manifests: Vec<String>,
    pub(crate) json: bool,
    pub(crate) min_score: Option<u32>,
    pub(crate) help: bool,
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} expects a whole number, not `{v}`"))
}

/// Parses `argv` (without the program name).
pub(crate) fn parse(argv: &[String]) -> Result<Args, String> {
    let mut url = None;
    let mut o = Options {
        url: String::new(),
        https: false,
        intrusive: false,
        health_prefix: String::new(),
        liveness: None,
        readiness: None,
        startup: None,
        metrics_url: None,
        metrics_token: None,
        allow_health_details: false,
        request_id_header: "x-request-id".into(),
        oversized_body: 8 << 20,
        max_series: 10_000,
        burst_max: 1000,
        timeout: Duration::from_secs(10),
        ca_cert: None,
    };
    let mut args = Args {
        options: None,
        manifests: Vec::new(),
        json: false,
        min_score: None,
        help: false,
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        // `--flag=value` and `--flag value` alike.
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => args.help = true,
            "--https" => o.https = true,
            "--intrusive" => o.intrusive = true,
            "--allow-health-details" => o.allow_health_details = true,
            "--format" => match value()?.as_str() {
                "json" => args.json = true,
                "table" => args.json = false,
                other => return Err(format!("--format is table or json, not `{other}`")),
            },
            "--min-score" => {
                let n: u32 = number(flag, &value()?)?;
                if n > 100 {
                    return Err(format!("--min-score is 0 to 100, not {n}"));
                }
                args.min_score = Some(n);
            }
            "--health-prefix" => o.health_prefix = value()?,
            "--liveness" => o.liveness = Some(value()?),
            "--readiness" => o.readiness = Some(value()?),
            "--startup" => o.startup = Some(value()?),
            "--metrics-url" => o.metrics_url = Some(value()?),
            "--metrics-token" => o.metrics_token = Some(value()?),
            "--max-series" => o.max_series = number(flag, &value()?)?,
            "--request-id-header" => o.request_id_header = value()?.to_ascii_lowercase(),
            "--oversized-body" => o.oversized_body = number(flag, &value()?)?,
            "--burst-max" => o.burst_max = number(flag, &value()?)?,
            "--timeout" => o.timeout = Duration::from_secs(number(flag, &value()?)?),
            "--manifest" => args.manifests.push(value()?),
            "--ca-cert" => {
                let path = value()?;
                let pem = std::fs::read(&path)
                    .map_err(|e| format!("--ca-cert: cannot read {path}: {e}"))?;
                o.ca_cert = Some(pem);
            }
            f if f.starts_with('-') => return Err(format!("unknown option `{f}` (see --help)")),
            _ if url.is_none() => url = Some(a.clone()),
            _ => return Err(format!("one URL at a time (`{a}` is a second one)")),
        }
    }
    if let Some(u) = url {
        o.https |= u.starts_with("https://");
        o.url = u;
        crate::gather::split_url(&o.url)?;
        args.options = Some(o);
    } else if args.manifests.is_empty() && !args.help {
        return Err("give a URL to audit, or --manifest FILE.yaml (see --help)".into());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn flags_and_url() {
        let a =
            p("--intrusive --format json --min-score=90 http://127.0.0.1:8080/ --metrics-token t")
                .unwrap();
        let o = a.options.unwrap();
        assert!(o.intrusive && a.json && !o.https);
        assert_eq!(a.min_score, Some(90));
        assert_eq!(o.metrics_token.as_deref(), Some("t"));
        assert!(p("https://a.example").unwrap().options.unwrap().https);
        assert_eq!(
            p("--manifest a.yaml --manifest b.yaml")
                .unwrap()
                .manifests
                .len(),
            2
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(p("").unwrap_err().contains("give a URL"));
        assert!(p("--min-score 101 http://a")
            .unwrap_err()
            .contains("0 to 100"));
        assert!(p("--min-score x http://a")
            .unwrap_err()
            .contains("whole number"));
        assert!(p("--frobnicate http://a")
            .unwrap_err()
            .contains("unknown option `--frobnicate`"));
        assert!(p("http://a --format xml")
            .unwrap_err()
            .contains("table or json"));
        assert!(p("http://a http://b").unwrap_err().contains("one URL"));
        assert!(p("http://a --timeout")
            .unwrap_err()
            .contains("needs a value"));
        assert!(p("ftp://a").unwrap_err().contains("not an http"));
        assert!(p("--ca-cert /nonexistent/ca.pem https://a")
            .unwrap_err()
            .contains("cannot read /nonexistent/ca.pem"));
    }
}
