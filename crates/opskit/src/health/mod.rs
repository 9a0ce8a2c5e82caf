//! Liveness, readiness and startup probes with dependency checks, and the
//! detailed `/health` report — framework-neutral.
//!
//! ```
//! use opskit::health::{Check, CheckKind, Health, Probe};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let health = Health::new(opskit::Shutdown::new());
//! health.register(Check::new("cache", || async { Err("connection refused".to_owned()) }).critical(false));
//! health.register(Check::new("db", || async { Ok(()) }));
//! health.mark_started();
//! let ready = health.respond(Probe::Ready, None, None, None).await;
//! assert_eq!(ready.status, 200); // a non-critical failure only warns
//! health.shutdown().trigger();
//! assert_eq!(health.respond(Probe::Ready, None, None, None).await.status, 503);
//! assert_eq!(health.respond(Probe::Live, None, None, None).await.status, 200);
//! # }
//! ```

pub mod checks;

use crate::Shutdown;
use futures_util::future::{join_all, BoxFuture, FutureExt};
use serde_json::{json, Map, Value};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Which probe is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/livez`: the process is up. Never depends on other systems unless a
    /// check is explicitly registered as [`CheckKind::Liveness`].
    Live,
    /// `/readyz`: the process should receive traffic.
    Ready,
    /// `/startupz`: start-up work is done.
    Startup,
    /// `/health`: the detailed JSON report (status code as `/readyz`).
    Report,
}

impl Probe {
    /// Every probe, in the order the routes are listed.
    pub(crate) const ALL: [Probe; 4] = [Probe::Live, Probe::Ready, Probe::Startup, Probe::Report];

    /// Its path under `OPSKIT_HEALTH_PREFIX`, without the slash.
    pub(crate) fn path_segment(self) -> &'static str {
        match self {
            Probe::Live => "livez",
            Probe::Ready => "readyz",
            Probe::Startup => "startupz",
            Probe::Report => "health",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Probe::Live => "livez",
            Probe::Ready | Probe::Report => "readyz",
            Probe::Startup => "startupz",
        }
    }
}

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Part of `/livez` (rarely right: liveness must not follow other systems).
    Liveness,
    /// Part of `/readyz` and `/health` (the default).
    Readiness,
    /// Part of `/startupz`.
    Startup,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Healthy.
    Pass,
    /// A non-critical check failed: reported, does not fail readiness.
    Warn,
    /// A critical check failed.
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A named dependency check.
#[derive(Clone)]
pub struct Check {
    name: String,
    kind: CheckKind,
    critical: bool,
    timeout: Duration,
    cache: Duration,
    refresh: Option<Duration>,
    run: CheckFn,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("critical", &self.critical)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// A critical readiness check with a 2 s timeout and a 1 s result cache.
    ///
    /// `run` returns `Err(message)` on failure; the message is shown to
    /// authorized callers of `/health` and logged, so it must not contain secrets.
    pub fn new<F, Fut>(name: impl Into<String>, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            kind: CheckKind::Readiness,
            critical: true,
            timeout: Duration::from_secs(2),
            cache: Duration::from_secs(1),
            refresh: None,
            run: Arc::new(move || run().boxed()),
        }
    }

    /// The probe it belongs to.
    #[must_use]
    pub fn kind(mut self, kind: CheckKind) -> Self {
        self.kind = kind;
        self
    }

    /// Whether a failure fails the probe (`true`) or only warns (`false`).
    #[must_use]
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }

    /// How long one run may take before it counts as failed.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a result is reused (probe storms run the check once per period).
    #[must_use]
    pub fn cache(mut self, ttl: Duration) -> Self {
        self.cache = ttl;
        self
    }

    /// Runs the check in the background every `interval`; probes then only
    /// read the last result and never wait for the dependency.
    #[must_use]
    pub fn refresh_every(mut self, interval: Duration) -> Self {
        self.refresh = Some(interval);
        self
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    status: Status,
    message: Option<String>,
    duration: Duration,
    at: SystemTime,
    fresh_until: Instant,
}

#[derive(Debug)]
struct Entry {
    check: Check,
    /// The last result (read by every probe, written after each run).
    last: RwLock<Option<Outcome>>,
    // An async mutex around runs: a probe that has no result to answer from
    // waits for the run in progress instead of starting its own (single
    // flight); a stale result starts at most one run in the background.
    running: Arc<tokio::sync::Mutex<()>>,
    refreshing: AtomicBool,
}

impl Entry {
    async fn run_now(&self) -> Outcome {
        let started = Instant::now();
        let fut = (self.check.run)();
        let result =
            match tokio::time::timeout(self.check.timeout, AssertUnwindSafe(fut).catch_unwind())
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("the check panicked".to_owned()),
                Err(_) => Err(format!(
                    "no answer within {} ms",
                    self.check.timeout.as_millis()
                )),
            };
        let duration = started.elapsed();
        // The message reaches the log and `/health`: a URL in it keeps no credentials.
        let result = result.map_err(|m| crate::redact_urls(&m).into_owned());
        let (status, message) = match result {
            Ok(()) => (Status::Pass, None),
            Err(m) if self.check.critical => (Status::Fail, Some(m)),
            Err(m) => (Status::Warn, Some(m)),
        };
        Outcome {
            status,
            message,
            duration,
            at: SystemTime::now(),
            fresh_until: Instant::now() + self.check.cache,
        }
    }

    fn last(&self) -> Option<Outcome> {
        self.last.read().ok().and_then(|l| l.clone())
    }

    /// Runs the check and keeps its result (the caller holds `running`).
    async fn run_and_keep(&self) -> Outcome {
        let new = self.run_now().await;
        if let Ok(mut last) = self.last.write() {
            log_transition(&self.check.name, last.as_ref(), &new);
            *last = Some(new.clone());
        }
        new
    }

    /// The result a probe answers with. A fresh one as it is; a stale one
    /// too, while a new run starts in the background: a probe never waits
    /// for a slow or hung dependency once a result exists (kubelets give up
    /// after 1 s by default, and a check may take its whole timeout). Only
    /// the very first probe waits for the first run.
    async fn outcome(self: &Arc<Self>) -> Outcome {
        if let Some(o) = self.last() {
            let fresh = self.refreshing.load(Ordering::Acquire) || Instant::now() < o.fresh_until;
            if !fresh {
                if let Ok(guard) = self.running.clone().try_lock_owned() {
                    let entry = self.clone();
                    tokio::spawn(async move {
                        entry.run_and_keep().await;
                        drop(guard);
                    });
                }
            }
            return o;
        }
        let _running = self.running.lock().await;
        // A run that finished while this probe waited answers it.
        if let Some(o) = self.last() {
            return o;
        }
        self.run_and_keep().await
    }

    async fn refresh(&self) {
        let _running = self.running.lock().await;
        self.run_and_keep().await;
    }
}

/// Failure detail goes to the log (once per change), not to the probe's body.
fn log_transition(name: &str, before: Option<&Outcome>, now: &Outcome) {
    if before.map(|b| b.status) == Some(now.status) {
        return;
    }
    let message = now.message.as_deref().unwrap_or("");
    match now.status {
        Status::Pass => tracing::info!(check = name, "health check passes"),
        Status::Warn => tracing::warn!(
            check = name,
            reason = message,
            "non-critical health check fails"
        ),
        Status::Fail => tracing::warn!(check = name, reason = message, "health check fails"),
    }
}

/// A probe's answer, for an adapter to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    /// HTTP status: 200, 503, or 404 for an unknown check.
    pub status: u16,
    /// `text/plain; charset=utf-8`, `application/json`, or
    /// `application/problem+json` (the 404).
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// The `WWW-Authenticate` challenge to send with it: `Bearer` on the 401
    /// of a route behind a bearer token when the token is missing or wrong.
    pub www_authenticate: Option<&'static str>,
    /// The `Allow` header of a 405: the methods the endpoint answers.
    pub allow: Option<&'static str>,
}

impl ProbeResponse {
    /// A `text/plain` answer.
    pub(crate) fn text(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            www_authenticate: None,
            allow: None,
        }
    }

    /// The 401 of a route behind a bearer token (`/metrics`, `/loggers`),
    /// with its `Bearer` challenge (RFC 6750): the one place that rule is
    /// written.
    #[cfg(any(feature = "prometheus", feature = "axum", feature = "actix"))]
    pub(crate) fn unauthorized() -> Self {
        Self {
            www_authenticate: Some("Bearer"),
            ..Self::text(401, "a bearer token is required\n".to_owned())
        }
    }

    /// The headers the answer carries: `Content-Type`, and
    /// `WWW-Authenticate` and `Allow` when set. Every adapter sends these.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            ("content-type", Some(self.content_type)),
            ("www-authenticate", self.www_authenticate),
            ("allow", self.allow),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }

    /// The answer as an `http` response (Axum's, hyper's).
    pub fn into_http<B: From<String>>(self) -> http::Response<B> {
        let mut res = http::Response::builder().status(
            http::StatusCode::from_u16(self.status)
                .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
        );
        for (name, value) in self.headers() {
            res = res.header(name, value);
        }
        match res.body(B::from(self.body)) {
            Ok(res) => res,
            Err(_) => unreachable!("the status and headers are valid"),
        }
    }

    /// An RFC 9457 problem as the answer.
    #[cfg(any(feature = "axum", feature = "actix"))]
    pub(crate) fn problem(problem: &crate::Problem) -> Self {
        Self {
            status: problem.status(),
            content_type: crate::problem::CONTENT_TYPE,
            body: String::from_utf8(problem.to_json()).unwrap_or_default(),
            www_authenticate: None,
            allow: None,
        }
    }
}

/// Whether `authorization` (the header's value) is `Bearer <token>`, compared
/// in constant time.
pub(crate) fn bearer_matches(authorization: Option<&[u8]>, token: &crate::Secret) -> bool {
    authorization
        .and_then(|a| a.strip_prefix(b"Bearer "))
        .is_some_and(|given| constant_time_eq(given, token.expose().as_bytes()))
}

/// Service identity shown in `/health`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) commit: String,
    pub(crate) environment: String,
}

/// The health state of the process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    shutdown: Shutdown,
    started: Arc<AtomicBool>,
    checks: Arc<RwLock<Vec<Arc<Entry>>>>,
    identity: Arc<RwLock<Identity>>,
    token: Option<crate::Secret>,
    since: Instant,
}

impl Health {
    /// Health that follows `shutdown`, with no checks.
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            started: Arc::new(AtomicBool::new(false)),
            checks: Arc::new(RwLock::new(Vec::new())),
            identity: Arc::new(RwLock::new(Identity::default())),
            token: None,
            since: Instant::now(),
        }
    }

    pub(crate) fn with_identity(self, identity: Identity, token: Option<crate::Secret>) -> Self {
        if let Ok(mut i) = self.identity.write() {
            *i = identity;
        }
        Self { token, ..self }
    }

    /// Adds a check (before serving; a check with [`Check::refresh_every`]
    /// starts refreshing when the server starts).
    pub fn register(&self, check: Check) {
        let entry = Arc::new(Entry {
            check,
            last: RwLock::new(None),
            running: Arc::new(tokio::sync::Mutex::new(())),
            refreshing: AtomicBool::new(false),
        });
        if let Ok(mut checks) = self.checks.write() {
            checks.push(entry);
        }
    }

    /// Starts the background refresh of checks that asked for it (the
    /// servers call this when they start listening).
    pub fn start_refreshing(&self) {
        for entry in self.entries() {
            let Some(every) = entry.check.refresh else {
                continue;
            };
            if entry.refreshing.swap(true, Ordering::AcqRel) {
                continue;
            }
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => entry.refresh().await,
                        () = shutdown.triggered() => break,
                    }
                }
            });
        }
    }

    /// Marks start-up as done (the server serves this when it starts listening).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// The shutdown coordinator readiness follows.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The names of the registered checks of this kind.
    pub fn check_names(&self, kind: CheckKind) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|e| e.check.kind == kind)
            .map(|e| e.check.name.clone())
            .collect()
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        self.checks.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Answers a probe. `query` is the raw query string (`verbose`,
    /// `exclude=name`), `check` a single check's name (`/readyz/{check}`),
    /// `authorization` the `Authorization` header (for `/health` detail).
    pub async fn respond(
        &self,
        probe: Probe,
        check: Option<&str>,
        query: Option<&str>,
        authorization: Option<&[u8]>,
    ) -> ProbeResponse {
        let (verbose, excluded) = parse_query(query.unwrap_or(""));
        let kind = match probe {
            Probe::Live => CheckKind::Liveness,
            Probe::Ready | Probe::Report => CheckKind::Readiness,
            Probe::Startup => CheckKind::Startup,
        };
        let selected: Vec<Arc<Entry>> = self
            .entries()
            .into_iter()
            .filter(|e| e.check.kind == kind)
            .filter(|e| check.is_none_or(|c| c == e.check.name))
            .filter(|e| !excluded.iter().any(|x| *x == e.check.name))
            .collect();
        if check.is_some() && selected.is_empty() {
            return unknown_check();
        }
        let outcomes = join_all(selected.iter().map(|e| e.outcome())).await;
        let checks_ok = outcomes.iter().all(|o| o.status != Status::Fail);
        let started = self.started.load(Ordering::Acquire);
        let shutting_down = self.shutdown.is_triggered();
        let (ok, blocker) = match probe {
            Probe::Live => (checks_ok, None),
            Probe::Startup if !started => (false, Some("starting")),
            Probe::Ready | Probe::Report if shutting_down => (false, Some("shutting down")),
            Probe::Ready | Probe::Report if !started => (false, Some("starting")),
            _ => (checks_ok, None),
        };
        let status = if ok { 200 } else { 503 };
        if probe == Probe::Report {
            let authorized = self.authorized(authorization);
            return self.report(status, blocker, &selected, &outcomes, authorized);
        }
        if !verbose {
            return ProbeResponse::text(
                status,
                match (ok, blocker) {
                    (true, _) => "ok\n".to_owned(),
                    (false, Some(b)) => format!("{b}\n"),
                    (false, None) => "failed\n".to_owned(),
                },
            );
        }
        // As kube-apiserver: one line per check; reasons go to the log only.
        let mut body = String::new();
        if let Some(b) = blocker {
            body.push_str(&format!("[-]{b} failed: reason withheld\n"));
        }
        for (e, o) in selected.iter().zip(&outcomes) {
            match o.status {
                Status::Pass => body.push_str(&format!("[+]{} ok\n", e.check.name)),
                Status::Warn => body.push_str(&format!(
                    "[+]{} ok (warning: reason withheld)\n",
                    e.check.name
                )),
                Status::Fail => {
                    body.push_str(&format!("[-]{} failed: reason withheld\n", e.check.name))
                }
            }
        }
        body.push_str(&format!(
            "{} check {}\n",
            probe.name(),
            if ok { "passed" } else { "failed" }
        ));
        ProbeResponse::text(status, body)
    }

    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        self.token
            .as_ref()
            .is_none_or(|token| bearer_matches(authorization, token))
    }

    fn report(
        &self,
        status: u16,
        blocker: Option<&str>,
        entries: &[Arc<Entry>],
        outcomes: &[Outcome],
        authorized: bool,
    ) -> ProbeResponse {
        let overall = if status != 200 {
            "fail"
        } else if outcomes.iter().any(|o| o.status == Status::Warn) {
            "warn"
        } else {
            "pass"
        };
        let mut body = Map::new();
        body.insert("status".to_owned(), json!(overall));
        if authorized {
            let id = self.identity.read().map(|i| i.clone()).unwrap_or_default();
            body.insert("service".to_owned(), json!(id.service));
            body.insert("version".to_owned(), json!(id.version));
            body.insert("commit".to_owned(), json!(id.commit));
            body.insert("environment".to_owned(), json!(id.environment));
            body.insert(
                "uptime_seconds".to_owned(),
                json!((self.since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
            );
            if let Some(b) = blocker {
                body.insert("reason".to_owned(), json!(b));
            }
            let mut checks = Map::new();
            for (e, o) in entries.iter().zip(outcomes) {
                let mut c = Map::new();
                c.insert("status".to_owned(), json!(o.status.as_str()));
                c.insert("critical".to_owned(), json!(e.check.critical));
                c.insert(
                    "duration_ms".to_owned(),
                    json!((o.duration.as_secs_f64() * 1e6).round() / 1000.0),
                );
                c.insert("last_run".to_owned(), json!(rfc3339(o.at)));
                if let Some(m) = &o.message {
                    c.insert("message".to_owned(), json!(m));
                }
                checks.insert(e.check.name.clone(), Value::Object(c));
            }
            body.insert("checks".to_owned(), Value::Object(checks));
        }
        ProbeResponse {
            status,
            content_type: "application/json",
            body: Value::Object(body).to_string(),
            www_authenticate: None,
            allow: None,
        }
    }
}

/// The 404 of `/{probe}/{name}` for a name no check has: one fixed RFC 9457
/// body, which never reflects the name asked for.
fn unknown_check() -> ProbeResponse {
    let problem = crate::Problem::new(404).detail("no health check has that name");
    ProbeResponse {
        status: 404,
        content_type: crate::problem::CONTENT_TYPE,
        body: String::from_utf8(problem.to_json()).unwrap_or_default(),
        www_authenticate: None,
        allow: None,
    }
}

/// `verbose` (any value) and every `exclude=name`.
fn parse_query(query: &str) -> (bool, Vec<&str>) {
    let mut verbose = false;
    let mut excluded = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "verbose" => verbose = true,
            "exclude" => excluded.push(v),
            _ => {}
        }
    }
    (verbose, excluded)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 3339 UTC with milliseconds: the log line's timestamp cut to
/// milliseconds (truncated, as `subsec_millis`).
fn rfc3339(t: SystemTime) -> String {
    let micros = crate::time::timestamp(t);
    format!("{}Z", &micros.as_str()[..23])
}

#[cfg(test)]
mod tests;
