//! Test and demo hooks: each is off unless its `APP_DEMO_*` variable is set.
//!
//! The conformance suite (`tests/`) turns them on to prove documented
//! behaviour from outside the process; each also shows how a service uses
//! that part of opskit. A service copied from this starter can delete this
//! module, its calls in `main` and `register_checks`, the `demo_*` fields of
//! `Config` and the `/demo/*` routes. Both starters have the same hooks,
//! with the same variables.

use crate::Config;
use opskit::config::{AppConfig, Env};
use opskit::health::Check;
use std::sync::OnceLock;
use std::time::Duration;

/// Applies the hooks that act on the builder, before `init`:
///
/// - `APP_DEMO_SET="NAME=value;NAME2=value2"`: each pair goes to
///   [`Builder::set`](opskit::Builder::set), which overrides both the
///   environment and `.env`.
/// - `APP_DEMO_BEFORE_SEND=true`: a Sentry `before_send` hook that drops the
///   events of `GET /demo/error` (a failure the team expects) and tags every
///   other event `demo.before_send=edited`.
/// - `APP_DEMO_RATE_LIMIT_KEY=true`: rate limits keyed by the bearer token of
///   `Authorization` (standing in for an authenticated user id); requests
///   without one are keyed by IP.
/// - `APP_DEMO_OWN_RECORDER=true`: the application installs its own `metrics`
///   recorder before opskit's `init` (opskit then records into it and does
///   not serve `/metrics`); `/demo/own-metrics` renders it.
///
/// These act before `init`, so they read the configuration early, from the
/// same environment and `.env`; when it is invalid, none applies and `init`
/// reports every problem.
pub fn before_init(mut builder: opskit::Builder) -> opskit::Builder {
    let early = Env::from_process(Some(std::path::Path::new(".env")))
        .ok()
        .and_then(|env| Config::from_env(&env).ok());
    let Some(config) = early else {
        return builder;
    };
    let pairs = config.demo_set.as_deref().unwrap_or("").split(';');
    for (name, value) in pairs.filter_map(|p| p.split_once('=')) {
        builder = builder.set(name.trim(), value);
    }
    if config.demo_before_send {
        builder = builder.sentry_before_send(|mut event| {
            if event.transaction.as_deref() == Some("GET /demo/error") {
                return None;
            }
            event
                .tags
                .insert("demo.before_send".to_owned(), "edited".to_owned());
            Some(event)
        });
    }
    if config.demo_rate_limit_key {
        builder = builder.rate_limit_key(|req| {
            let token = (req.header)("authorization")?.strip_prefix(b"Bearer ")?;
            Some(format!("user:{}", String::from_utf8_lossy(token)))
        });
    }
    if config.demo_own_recorder {
        install_own_recorder();
    }
    builder
}

/// The application's own recorder (`APP_DEMO_OWN_RECORDER`).
static OWN_RECORDER: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();

fn install_own_recorder() {
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            let _ = OWN_RECORDER.set(handle);
        }
        // Logging is not installed yet: straight to stderr.
        Err(e) => eprintln!("cannot install the demo's own metrics recorder: {e}"),
    }
}

/// What the application's own recorder holds, in the Prometheus text
/// format; `None` unless `APP_DEMO_OWN_RECORDER` installed it.
pub fn own_metrics() -> Option<String> {
    OWN_RECORDER.get().map(|h| h.render())
}

/// `APP_DEMO_MAINTENANCE_FILE=<path>`: a readiness check that fails while
/// that file exists (an operator takes the instance out of rotation with
/// `touch`), run in the background every second, so probes never wait for
/// it and its state changes without any probe asking.
pub fn maintenance_check(config: &Config) -> Option<Check> {
    let path = config.demo_maintenance_file.clone()?;
    let check = Check::new("maintenance", move || {
        // One `stat`: quick enough to run on the runtime's thread.
        let present = path.exists();
        async move {
            if present {
                Err("the maintenance file is present".to_owned())
            } else {
                Ok(())
            }
        }
    })
    .refresh_every(Duration::from_secs(1));
    Some(check)
}
