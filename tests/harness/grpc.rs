//! gRPC calls made by a client no one here wrote: Python's grpcio (and
//! grpcio-health-checking), from the venv scripts/test fills, driven by
//! tests/support/grpc_client.py. Each call prints one JSON line.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn command(addr: SocketAddr, args: &[&str]) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../target/test-tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs grpcio into it",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(root.join("support/grpc_client.py"))
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs one client command against `addr` (`get-user 7`, `fail`, `panic`,
/// `sleep MILLIS [DEADLINE_S]`, `cancel-stream`, `health-check [SERVICE]`,
/// …) and returns its JSON lines (`code`, `details`, …).
pub fn grpc_call(addr: SocketAddr, args: &[&str]) -> Vec<serde_json::Value> {
    let out = command(addr, args).output().expect("run grpc_client.py");
    assert!(
        out.status.success(),
        "grpc_client.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Starts a client command in the background (a `health-watch`), its
/// output piped.
pub fn grpc_spawn(addr: SocketAddr, args: &[&str]) -> Child {
    command(addr, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grpc_client.py")
}
