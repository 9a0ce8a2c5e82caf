//! Liveness, readiness and startup probes, framework-neutral.
//!
//! ```
//! use opskit::health::{Health, Probe};
//! let health = Health::new(opskit::Shutdown::new());
//! assert_eq!(health.probe(Probe::Live).status, 200);
//! assert_eq!(health.probe(Probe::Startup).status, 503); // not started yet
//! health.mark_started();
//! assert_eq!(health.probe(Probe::Ready).status, 200);
//! health.shutdown().trigger();
//! assert_eq!(health.probe(Probe::Ready).status, 503);
//! assert_eq!(health.probe(Probe::Live).status, 200); // liveness never follows shutdown
//! ```

use crate::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which probe is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/livez`: the process is up. Never depends on other systems.
    Live,
    /// `/readyz`: the process should receive traffic.
    Ready,
    /// `/startupz`: start-up work is done.
    Startup,
}

/// A probe's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeResponse {
    /// HTTP status: 200 or 503.
    pub status: u16,
    /// Plain-text body.
    pub body: &'static str,
}

impl ProbeResponse {
    const OK: Self = Self {
        status: 200,
        body: "ok\n",
    };
}

/// The health state of the process.
#[derive(Debug, Clone)]
pub struct Health {
    shutdown: Shutdown,
    started: Arc<AtomicBool>,
}

impl Health {
    /// Health that follows `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            started: Arc::new(AtomicBool::new(false)),
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

    /// Answers a probe.
    pub fn probe(&self, probe: Probe) -> ProbeResponse {
        let started = self.started.load(Ordering::Acquire);
        match probe {
            Probe::Live => ProbeResponse::OK,
            Probe::Startup if started => ProbeResponse::OK,
            Probe::Ready if started && !self.shutdown.is_triggered() => ProbeResponse::OK,
            Probe::Ready if self.shutdown.is_triggered() => ProbeResponse {
                status: 503,
                body: "shutting down\n",
            },
            Probe::Ready | Probe::Startup => ProbeResponse {
                status: 503,
                body: "starting\n",
            },
        }
    }
}
