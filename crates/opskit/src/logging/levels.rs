//! The log filter changed while the service runs (`PUT /loggers`, behind
//! `OPSKIT_ADMIN_TOKEN`), through `tracing-subscriber`'s `reload` layer.
//!
//! The reload layer is installed only when the admin token is set: without
//! it the filter is the plain `EnvFilter` of `RUST_LOG`, and nothing here is
//! on any path. With it, every span and event the subscriber sees takes the
//! reload layer's read lock (an uncontended `RwLock` read: two atomic
//! operations; see docs/logging.md for the measured cost). A change takes
//! the write lock once, and `reload` rebuilds the callsites' interest so
//! that disabled events stay a single check at their call site.
//!
//! One subscriber is global, so its reload handle is too.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Longest time a change may be given before the start-up filter returns.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

static LEVELS: OnceLock<LogLevels> = OnceLock::new();

/// The global subscriber's filter, reloadable.
pub(crate) struct LogLevels {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` at start-up: what a change's ttl brings back.
    startup: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for LogLevels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLevels")
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    /// The filter in force, as it was given.
    filter: String,
    /// Counts changes: a ttl only restores the change it was given with.
    generation: u64,
    /// When the start-up filter returns, if it does by itself.
    until: Option<Instant>,
}

/// A change that was made: what the filter was, and is.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) previous: String,
    pub(crate) filter: String,
}

impl LogLevels {
    /// Makes `handle` (the reload layer's, over the filter `startup`) the
    /// global subscriber's.
    pub(super) fn install(handle: reload::Handle<EnvFilter, Registry>, startup: &str) {
        let _ = LEVELS.set(Self {
            handle,
            startup: startup.to_owned(),
            state: Mutex::new(State {
                filter: startup.to_owned(),
                generation: 0,
                until: None,
            }),
        });
    }

    /// The global subscriber's filter, when opskit installed it reloadable.
    pub(crate) fn global() -> Option<&'static Self> {
        LEVELS.get()
    }

    /// The filter in force, the start-up filter, and in how many
    /// milliseconds the start-up filter returns (`null`: not by itself).
    pub(crate) fn describe(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let left = state
            .until
            .map(|u| u.saturating_duration_since(Instant::now()).as_millis() as u64);
        serde_json::json!({
            "filter": state.filter,
            "startup_filter": self.startup,
            "reverts_in_ms": left,
        })
    }

    /// Replaces the filter with `filter` (`RUST_LOG` syntax) until the next
    /// change, or for `ttl` after which the start-up filter returns.
    /// `Err`: the filter does not parse (nothing changed).
    pub(crate) fn set(
        &'static self,
        filter: &str,
        ttl: Option<Duration>,
    ) -> Result<Change, String> {
        let new = EnvFilter::try_new(filter)
            .map_err(|_| "the filter is not valid RUST_LOG (EnvFilter) syntax".to_owned())?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.handle
            .reload(new)
            .map_err(|e| format!("the filter cannot be replaced: {e}"))?;
        state.generation += 1;
        state.until = ttl.map(|t| Instant::now() + t);
        let previous = std::mem::replace(&mut state.filter, filter.to_owned());
        if let Some(ttl) = ttl {
            let generation = state.generation;
            let restore = move || self.restore(generation);
            // A timer on the runtime that serves the request; a thread
            // where there is none.
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        tokio::time::sleep(ttl).await;
                        restore();
                    });
                }
                Err(_) => {
                    std::thread::spawn(move || {
                        std::thread::sleep(ttl);
                        restore();
                    });
                }
            }
        }
        Ok(Change {
            previous,
            filter: filter.to_owned(),
        })
    }

    /// Brings the start-up filter back (`DELETE /loggers`).
    pub(crate) fn reset(&'static self) -> Result<Change, String> {
        self.set(&self.startup, None)
    }

    /// The ttl of change `generation` ran out: the start-up filter returns,
    /// unless another change came since.
    fn restore(&self, generation: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation != generation {
            return;
        }
        let Ok(startup) = EnvFilter::try_new(&self.startup) else {
            return;
        };
        if let Err(e) = self.handle.reload(startup) {
            tracing::error!(target: "opskit::admin", error = %e, "cannot restore the start-up log filter");
            return;
        }
        let previous = std::mem::replace(&mut state.filter, self.startup.clone());
        state.until = None;
        drop(state);
        tracing::warn!(
            target: "opskit::admin",
            filter = %self.startup,
            previous = %previous,
            "log filter restored: its ttl ran out"
        );
    }
}
