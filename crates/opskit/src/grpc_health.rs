//! `grpc.health.v1.Health` (`Check` and `Watch`) for tonic services,
//! backed by opskit's health registry (feature `grpc`).
//!
//! The service is tonic-health's: its code generated from the official
//! proto ships in that crate (no protoc at build time) and its `Watch`
//! streams are maintained upstream. opskit feeds it the registry's states:
//!
//! - service `""` answers as `/readyz` does (SERVING or NOT_SERVING);
//! - each readiness check is a service of its own name (`/readyz/{check}`);
//! - on SIGTERM (the shutdown trigger) every service flips to NOT_SERVING at
//!   once, together with `/readyz`, and `Watch` streams see the change;
//! - any other name is unknown (`Check`: NOT_FOUND; `Watch`: SERVICE_UNKNOWN).
//!
//! The states are refreshed every [`REFRESH`] (each check's own cache and
//! timeout apply) and at the shutdown trigger.
//!
//! ```no_run
//! # async fn run(ops: opskit::Ops) {
//! // Inside a Tokio runtime; add it to the tonic routes beside your own
//! // services (`tonic::service::Routes::new(health)`, examples/tonic-starter).
//! let health = ops.grpc_health();
//! # }
//! ```

use crate::health::{CheckKind, Health, Probe};
use crate::Ops;
use std::time::Duration;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

/// How often the gRPC health states are read from the registry.
pub const REFRESH: Duration = Duration::from_secs(1);

impl<C> Ops<C> {
    /// The `grpc.health.v1.Health` service, backed by this service's health
    /// registry (see the [module](crate::grpc_health)). Spawns the task that
    /// keeps it current: call it inside a Tokio runtime.
    pub fn grpc_health(&self) -> HealthServer<HealthService> {
        let reporter = HealthReporter::new();
        let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        tokio::spawn(keep_current(self.health().clone(), reporter));
        server
    }
}

/// Copies the registry's states into `reporter` until the shutdown, then
/// marks every service NOT_SERVING.
async fn keep_current(health: Health, reporter: HealthReporter) {
    let shutdown = health.shutdown().clone();
    // What each service was last set to: a Watch stream hears of changes only.
    // tonic-health starts `""` as SERVING.
    let mut last = std::collections::HashMap::from([(String::new(), ServingStatus::Serving)]);
    loop {
        let shutting_down = shutdown.is_triggered();
        let mut names = vec![String::new()];
        names.extend(health.check_names(CheckKind::Readiness));
        for name in names {
            let check = Some(name.as_str()).filter(|n| !n.is_empty());
            let serving = !shutting_down
                && health.respond(Probe::Ready, check, None, None).await.status == 200;
            let status = match serving {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            if last.get(&name) != Some(&status) {
                last.insert(name.clone(), status);
                reporter.set_service_status(name, status).await;
            }
        }
        if shutting_down {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {}
            () = shutdown.triggered() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Check;
    use crate::shutdown::Shutdown;
    use tonic_health::pb::health_server::Health as _;
    use tonic_health::pb::HealthCheckRequest;

    async fn status(service: &HealthService, name: &str) -> Result<i32, tonic::Code> {
        service
            .check(tonic::Request::new(HealthCheckRequest {
                service: name.to_owned(),
            }))
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code())
    }

    /// Named services answer as their readiness checks; `""` as `/readyz`
    /// (failed by the critical check); unknown names are NOT_FOUND; the
    /// shutdown trigger turns every service NOT_SERVING.
    #[tokio::test]
    async fn named_services_answer_as_their_checks() {
        let health = Health::new(Shutdown::new());
        health.mark_started();
        health.register(Check::new("cache", || async { Ok(()) }));
        health.register(Check::new("db", || async { Err("down".to_owned()) }));
        let reporter = HealthReporter::new();
        let service = HealthService::from_health_reporter(reporter.clone());
        let task = tokio::spawn(keep_current(health.clone(), reporter));
        let (serving, not_serving) = (
            ServingStatus::Serving as i32,
            ServingStatus::NotServing as i32,
        );
        // The first pass runs the checks (each bounded by its own timeout).
        for _ in 0..200 {
            if status(&service, "db").await == Ok(not_serving) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status(&service, "db").await, Ok(not_serving));
        assert_eq!(status(&service, "cache").await, Ok(serving));
        assert_eq!(status(&service, "").await, Ok(not_serving));
        assert_eq!(status(&service, "nosuch").await, Err(tonic::Code::NotFound));
        health.shutdown().trigger();
        task.await.unwrap();
        assert_eq!(status(&service, "cache").await, Ok(not_serving));
    }
}
