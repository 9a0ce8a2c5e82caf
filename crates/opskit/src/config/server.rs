//! The server's variables: where it listens, what it is called, and how
//! long connections and shutdown may take.

use super::parse::{NonZeroDuration, Reader};
use super::VarSpec;
use std::net::IpAddr;
use std::time::Duration;

pub(super) const HOST: VarSpec = VarSpec::new(
    "HOST",
    "an IP address to listen on (or localhost)",
    Some("0.0.0.0"),
    "Address the server binds. `0.0.0.0` accepts connections on every interface, as containers need.",
);
pub(super) const PORT: VarSpec = VarSpec::new(
    "PORT",
    "a TCP port number (0-65535)",
    Some("8080"),
    "Port the server binds; `0` picks a free port (the bound address is logged).",
);
pub(super) const SERVICE_NAME: VarSpec = VarSpec::new(
    "OTEL_SERVICE_NAME",
    "a service name",
    None,
    "Name of the service in logs, traces and health output. Unset: the name given in code, else `unknown_service:<executable>`.",
);
pub(super) const ENVIRONMENT: VarSpec = VarSpec::new(
    "OPSKIT_ENVIRONMENT",
    "a deployment environment name",
    Some("production"),
    "Deployment environment (`deployment.environment.name`), shown in logs and health output.",
);
pub(super) const SHUTDOWN_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_SHUTDOWN_TIMEOUT",
    "a duration such as 30s, 500ms or 2m",
    Some("30s"),
    "After SIGTERM/SIGINT, how long in-flight requests may take to finish before the server exits anyway.",
);
pub(super) const SHUTDOWN_DELAY: VarSpec = VarSpec::new(
    "OPSKIT_SHUTDOWN_DELAY",
    "a duration such as 5s, or 0",
    Some("5s"),
    "After SIGTERM/SIGINT, how long to keep accepting requests while readiness reports 503 and every response carries `Connection: close`, so load balancers and kube-proxy stop routing here first (see docs/health.md).",
);
pub(super) const HEADER_READ_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_HEADER_READ_TIMEOUT",
    "a duration such as 5s (not 0)",
    Some("5s"),
    "How long a client may take to send a request's head (request line and headers) before the connection is closed (Actix answers 408 first): slow-header clients cannot hold connections. Actix's `client_request_timeout`; on Axum hyper's `header_read_timeout`, which also runs while a keep-alive connection waits for its next request.",
);
pub(super) const KEEP_ALIVE_TIMEOUT: VarSpec = VarSpec::new(
    "OPSKIT_KEEP_ALIVE_TIMEOUT",
    "a duration such as 5s, or 0 for no keep-alive",
    Some("5s"),
    "How long an idle keep-alive connection is kept open between requests (Actix's `keep_alive`). Behind a load balancer that reuses connections, set it above the balancer's idle timeout (and on Axum `OPSKIT_HEADER_READ_TIMEOUT` at least as high).",
);

/// The server's part of [`super::Settings`] (flat fields there).
pub(super) struct Server {
    pub(super) host: IpAddr,
    pub(super) port: u16,
    pub(super) service_name: Option<String>,
    pub(super) environment: String,
    pub(super) shutdown_timeout: Duration,
    pub(super) shutdown_delay: Duration,
    pub(super) header_read_timeout: Duration,
    pub(super) keep_alive_timeout: Duration,
}

/// Reads every server variable through `r` (each problem is recorded there),
/// then combines them: `None` when one is invalid.
pub(super) fn read(r: &mut Reader<'_>) -> Option<Server> {
    let host = r.read(&HOST);
    let port = r.read(&PORT);
    let service_name = r.read(&SERVICE_NAME);
    let environment = r.read(&ENVIRONMENT);
    let shutdown_timeout = r.read(&SHUTDOWN_TIMEOUT);
    let shutdown_delay = r.read(&SHUTDOWN_DELAY);
    let header_read_timeout: Option<NonZeroDuration> = r.read(&HEADER_READ_TIMEOUT);
    let keep_alive_timeout = r.read(&KEEP_ALIVE_TIMEOUT);
    Some(Server {
        host: host?,
        port: port?,
        service_name,
        environment: environment?,
        shutdown_timeout: shutdown_timeout?,
        shutdown_delay: shutdown_delay?,
        header_read_timeout: header_read_timeout?.0,
        keep_alive_timeout: keep_alive_timeout?,
    })
}
