//! Test harness: starts a starter binary on an ephemeral loopback port with a
//! clean environment, captures its output, and talks raw HTTP/1.1 to it.
//!
//! The HTTP client is written by hand (a few dozen lines over `TcpStream`) so
//! that tests control every byte: malformed or duplicated headers, spoofed
//! `X-Forwarded-For`, requests cut mid-way.
//!
//! | module | what it holds |
//! |---|---|
//! | [`starter`] | the starter processes: [`Kind`], [`Starter`], [`command`], [`run_to_exit`] |
//! | [`http`] | the raw HTTP/1.1 client: [`request`], [`raw_request`], [`send`], [`pipelined_gets`] |
//! | [`receivers`] | test-side endpoints: [`OtlpReceiver`], [`SentryReceiver`], [`BlackHole`] |
//! | [`services`] | real servers: [`Postgres`], [`Redis`], [`Prometheus`], [`Rotel`], [`Bugsink`] |
//! | [`browser`] | headless Chromium and a second origin: [`chromium_dump_dom`], [`StaticPage`] |
//! | [`wait`] | waiting for a condition: [`eventually`], [`within`] |
//! | [`grpc`] | gRPC calls made by Python's grpcio: [`grpc_call`] |
//! | [`audit`] | `opskit-audit` runs, a real [`Nginx`], the deploy-template validators |
//!
//! Everything is re-exported at the crate root (`opskit_conformance::Starter`).

pub mod audit;
pub mod browser;
pub mod grpc;
pub mod http;
pub mod receivers;
pub mod services;
pub mod starter;
pub mod wait;

pub use audit::{audit_bin, repo_root, run_audit, run_tool, venv_tool, AuditRun, Nginx};
pub use browser::{chromium_dump_dom, StaticPage};
pub use grpc::{grpc_call, grpc_spawn};
pub use http::{
    closed_port, free_port, pipelined_gets, raw_request, request, send, ClosedPort, Pending,
    Response,
};
pub use receivers::{
    decode_spans, BlackHole, Envelope, ExportedSpan, OtlpReceiver, Post, SentryReceiver,
};
pub use services::{
    duration_series, promtool_check_metrics, series_value, Bugsink, Postgres, Prometheus, Redis,
    Rotel,
};
pub use starter::{command, run_to_exit, Kind, Starter};
pub use wait::{eventually, eventually_every, poll, within, Probe};

/// Generates one `#[test]` per starter (`mod axum`, `mod actix`) for each
/// case, a function taking the [`Kind`]: the same assertions run against both.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod axum {
            $( #[test] fn $case() { super::$case($crate::Kind::Axum) } )*
        }
        mod actix {
            $( #[test] fn $case() { super::$case($crate::Kind::Actix) } )*
        }
    };
}
