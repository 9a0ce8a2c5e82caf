//! Real servers started for a test on loopback ports and stopped on drop:
//! Bugsink (Sentry protocol), PostgreSQL, Redis, Prometheus (and promtool),
//! and the rotel OpenTelemetry collector.

use crate::http::{free_port, invalid, request};
use crate::wait::{eventually, eventually_every, poll};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real Sentry-protocol server (Bugsink, from PyPI) on a loopback port,
/// run by `tests/support/bugsink-test-server.sh`; stopped on drop.
#[derive(Debug)]
pub struct Bugsink {
    workdir: PathBuf,
    /// The project's DSN.
    pub dsn: String,
}

impl Bugsink {
    /// The venv `scripts/test` installs Bugsink into.
    fn venv() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/venv")
    }

    fn script(args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("support/bugsink-test-server.sh"));
        cmd.args(args);
        let venv = Self::venv();
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("BUGSINK_PYTHON", venv.join("bin/python"));
        cmd
    }

    /// Starts a fresh Bugsink.
    pub fn start() -> Self {
        assert!(
            Self::venv().join("bin/bugsink-manage").exists(),
            "Bugsink is not installed in {}: run scripts/test, which installs it",
            Self::venv().display()
        );
        let workdir = std::env::temp_dir().join(format!(
            "opskit-bugsink-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&workdir).expect("workdir");
        let port = free_port().to_string();
        let out = Self::script(&["start", workdir.to_str().expect("utf-8 path"), &port])
            .output()
            .expect("run bugsink-test-server.sh");
        assert!(
            out.status.success(),
            "bugsink did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dsn = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { workdir, dsn }
    }

    /// The events Bugsink stored, as JSON (`data` holds the event).
    pub fn events(&self) -> Vec<serde_json::Value> {
        let out = Self::script(&["dump", self.workdir.to_str().expect("utf-8 path")])
            .output()
            .expect("dump");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits up to `timeout` for the stored event whose tags hold `tag` (a
    /// request id, say) and returns it.
    #[track_caller]
    pub fn wait_for_tagged(&self, tag: &str, timeout: Duration) -> serde_json::Value {
        eventually_every(
            &format!("Bugsink stores the event tagged {tag}"),
            timeout,
            Duration::from_millis(200),
            || {
                let stored = self.events();
                let count = stored.len();
                stored
                    .into_iter()
                    .find(|e| e["data"]["tags"].to_string().contains(tag))
                    .ok_or(count)
            },
        )
    }
}

impl Drop for Bugsink {
    fn drop(&mut self) {
        let _ = Self::script(&["stop", self.workdir.to_str().unwrap_or("")])
            .env("BUGSINK_PURGE", "1")
            .output();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

fn as_postgres_user(program: &str) -> Command {
    let bin = Path::new("/usr/lib/postgresql/15/bin").join(program);
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if is_root {
        // initdb and postgres refuse to run as root.
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

/// A throw-away PostgreSQL 15 cluster on a loopback port; stopped on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: PathBuf,
    /// Its port.
    pub port: u16,
}

impl Postgres {
    /// `initdb` a new cluster in a temporary directory and start it.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("opskit-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let out = as_postgres_user("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            dir,
            port: free_port(),
        };
        pg.resume();
        pg
    }

    /// Starts the (stopped) server again.
    pub fn resume(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let out = as_postgres_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &opts, "-w", "-l"])
            .arg(self.dir.join("log"))
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        let _ = as_postgres_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }

    /// A connection URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throw-away Redis server on a loopback port (no persistence); killed on drop.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts `redis-server` and waits until it answers.
    pub fn start() -> Self {
        let mut r = Self {
            child: None,
            port: free_port(),
        };
        r.resume();
        r
    }

    /// Starts it again on the same port after [`Redis::kill`].
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        eventually(
            "redis-server accepts connections",
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", self.port)),
        );
    }

    /// Kills the server.
    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay
    /// open and nothing answers, as with a hung or overloaded Redis.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let sig = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// Kills the server (`SIGKILL`); [`Self::resume`] starts it again.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A connection URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The distinct label sets of the request-duration histogram in a
/// Prometheus exposition text.
pub fn duration_series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
        .map(|l| {
            l.rsplit_once(' ')
                .expect("a series line has a value")
                .0
                .to_owned()
        })
        .collect()
}

/// The value of the series `series` (name and labels as rendered) in a
/// Prometheus exposition text, if present.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `promtool check metrics` on an exposition text: `Ok` when clean,
/// `Err` with promtool's output otherwise.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (scripts/test installs Debian's prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A real Prometheus server (Debian's `prometheus`) on a loopback port,
/// scraping one target every second; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` at `metrics_path`, and waits until
    /// the target is up.
    pub fn start(target: SocketAddr, metrics_path: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("opskit-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: starter\n    metrics_path: {metrics_path}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run prometheus (scripts/test installs Debian's prometheus)");
        let p = Self { child, dir, addr };
        eventually_every(
            "prometheus sees the target up",
            Duration::from_secs(30),
            Duration::from_millis(250),
            || {
                let up = p.query("up").map_err(|e| e.to_string())?;
                match up["data"]["result"][0]["value"][1].as_str() {
                    Some("1") => Ok(()),
                    _ => Err(up.to_string()),
                }
            },
        );
        p
    }

    /// Runs an instant PromQL query through the HTTP API.
    pub fn query(&self, promql: &str) -> std::io::Result<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let r = request(
            self.addr,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
            &[],
            b"",
        )?;
        serde_json::from_slice(&r.body).map_err(|_| invalid("query answer is not JSON"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real OpenTelemetry collector (rotel, from PyPI, installed by
/// `scripts/test` into the test venv) on loopback ports, printing what it
/// receives; killed on drop.
#[derive(Debug)]
pub struct Rotel {
    child: Child,
    dir: PathBuf,
    /// Its OTLP/HTTP address.
    pub http: SocketAddr,
    /// Its OTLP/gRPC address.
    pub grpc: SocketAddr,
}

impl Rotel {
    /// Starts rotel with its debug log of `signal` (`metrics`, `traces`) on,
    /// and waits until its OTLP/HTTP port accepts connections.
    pub fn start(signal: &str) -> Self {
        Self::start_with(signal, &["--exporter", "blackhole"])
    }

    /// Starts rotel forwarding everything it receives (over gRPC or HTTP)
    /// to `endpoint` over OTLP/HTTP protobuf, its debug log of `signal` on.
    pub fn forwarding_to(signal: &str, endpoint: &str) -> Self {
        Self::start_with(
            signal,
            &[
                "--exporter",
                "otlp",
                "--otlp-exporter-protocol",
                "http",
                "--otlp-exporter-endpoint",
                endpoint,
                "--batch-timeout",
                "100ms",
            ],
        )
    }

    /// Its OTLP/gRPC endpoint.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn start_with(signal: &str, exporter: &[&str]) -> Self {
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/venv/bin/rotel-agent");
        let (grpc, http) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("opskit-rotel-{}-{http}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("rotel dir");
        let out = std::fs::File::create(dir.join("out.log")).expect("rotel log");
        let child = Command::new(&bin)
            .arg("start")
            .args(exporter)
            .args(["--debug-log", signal])
            .args(["--debug-log-verbosity", "detailed"])
            .arg(format!("--otlp-grpc-endpoint=127.0.0.1:{grpc}"))
            .arg(format!("--otlp-http-endpoint=127.0.0.1:{http}"))
            .arg(format!("--pid-file={}", dir.join("rotel.pid").display()))
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("run {} (scripts/test installs rotel): {e}", bin.display()));
        let http: SocketAddr = format!("127.0.0.1:{http}").parse().expect("addr");
        let grpc: SocketAddr = format!("127.0.0.1:{grpc}").parse().expect("addr");
        eventually_every(
            "rotel listens on OTLP/HTTP and OTLP/gRPC",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let connect = |a| TcpStream::connect_timeout(a, Duration::from_millis(200));
                connect(&http)
                    .map_err(|e| format!("OTLP/HTTP: {e}"))
                    .and(connect(&grpc).map_err(|e| format!("OTLP/gRPC: {e}")))
            },
        );
        Self {
            child,
            dir,
            http,
            grpc,
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default()
    }

    /// Waits until its output contains every one of `needles`.
    pub fn wait_for(&self, timeout: Duration, needles: &[&str]) -> bool {
        poll(timeout, Duration::from_millis(100), || {
            let out = self.output();
            needles.iter().all(|n| out.contains(n))
        })
        .is_ok()
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
