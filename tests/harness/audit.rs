//! `opskit-audit` run as a process, a real nginx (Debian's `nginx-light`)
//! serving a default-like static site, and the deploy-template validators
//! that `scripts/test` installs into the test venv.

use crate::http::{free_port, request};
use crate::starter::Kind;
use crate::wait::within;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The built `opskit-audit` binary (`cargo build --workspace --bins` makes it).
pub fn audit_bin() -> PathBuf {
    let path = Kind::Axum.bin_path().with_file_name("opskit-audit");
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (scripts/test does)",
        path.display()
    );
    path
}

/// What one `opskit-audit` run gave.
#[derive(Debug)]
pub struct AuditRun {
    /// Its exit code.
    pub code: Option<i32>,
    /// Standard output (the report).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl AuditRun {
    /// The report of a `--format json` run.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", self.stdout, self.stderr))
    }

    /// `id → status` of a `--format json` run.
    pub fn statuses(&self) -> Vec<(String, String)> {
        self.json()["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_owned(),
                    c["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The status of check `id` (panics when absent).
    #[track_caller]
    pub fn status(&self, id: &str) -> String {
        self.statuses()
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no check `{id}` in:\n{}", self.stdout))
    }

    /// The `why` of check `id`.
    #[track_caller]
    pub fn why(&self, id: &str) -> String {
        let j = self.json();
        j["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["id"] == id)
            .and_then(|c| c["why"].as_str())
            .unwrap_or_else(|| panic!("no check `{id}` in:\n{}", self.stdout))
            .to_owned()
    }
}

/// Runs `opskit-audit args…` to its end (at most 2 minutes).
pub fn run_audit(args: &[&str]) -> AuditRun {
    let mut child = Command::new(audit_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opskit-audit");
    if within(Duration::from_secs(120), || {
        child.try_wait().expect("try_wait")
    })
    .is_err()
    {
        let _ = child.kill();
        panic!("opskit-audit {args:?} did not finish within 2 minutes");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("opskit-audit output");
    AuditRun {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A real nginx (Debian's `nginx-light`) on a loopback port, serving a static
/// site the way Debian's default site does (its `index.nginx-debian.html`,
/// `try_files … =404`, every other setting nginx's default), in the
/// foreground (`daemon off;`) with every path under a temp dir; killed on drop.
/// One process (`master_process off;`): killing it leaves no orphaned worker
/// holding the port (what HTTP clients see is the same).
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx over plain HTTP and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts nginx over TLS with a certificate for `127.0.0.1` issued by a
    /// fresh test CA (made with `openssl`), and waits until it listens;
    /// [`Nginx::ca_pem`] is the CA's certificate.
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    /// The test CA's certificate (PEM) of a [`Nginx::start_tls`] server.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn start_with(tls: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("opskit-nginx-{}-{port}", std::process::id()));
        let www = dir.join("www");
        std::fs::create_dir_all(&www).expect("nginx dir");
        let page = std::fs::read("/var/www/html/index.nginx-debian.html")
            .unwrap_or_else(|_| b"<!DOCTYPE html><title>Welcome to nginx!</title>".to_vec());
        std::fs::write(www.join("index.html"), page).expect("index.html");
        let d = dir.display();
        let listen = if tls {
            make_test_certificates(&dir);
            format!("{port} ssl;\n    ssl_certificate {d}/server.pem;\n    ssl_certificate_key {d}/server.key")
        } else {
            port.to_string()
        };
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n\
             access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             sendfile on;\n  keepalive_timeout 65;\n\
             server {{\n    listen 127.0.0.1:{listen};\n    root {d}/www;\n    index index.html;\n\
             server_name _;\n    location / {{ try_files $uri $uri/ =404; }}\n  }}\n}}\n"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nginx (scripts/test installs Debian's nginx-light)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let n = Self { child, dir, addr };
        // Over TLS, a TCP connection is the sign of life (the raw client speaks plain HTTP).
        let up = within(Duration::from_secs(10), || {
            if tls {
                std::net::TcpStream::connect(addr).map(|_| ())
            } else {
                request(addr, "GET", "/", &[], b"").map(|_| ())
            }
        });
        if let Err(e) = up {
            let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
            panic!("nginx never answered: {e}\n{log}");
        }
        n
    }
}

/// A test CA (`ca.pem`) and a server certificate for IP 127.0.0.1 signed by
/// it (`server.pem`, `server.key`) in `dir`, made with the `openssl` CLI.
fn make_test_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=opskit test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("server.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tool `scripts/test` installs into the test venv (`kubernetes-validate`,
/// `hadolint`, `check-jsonschema`).
pub fn venv_tool(name: &str) -> PathBuf {
    let path = repo_root().join("target/test-tools/venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs it",
        path.display()
    );
    path
}

/// Runs `program args…`; `Ok(stdout)` on exit 0, else `Err(stdout + stderr)`.
pub fn run_tool(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
