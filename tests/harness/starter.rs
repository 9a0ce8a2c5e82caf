//! The starter processes: which binary, a hermetic command for it, and a
//! running [`Starter`] whose output the tests read and wait on.

use crate::http::{request, Response};
use crate::wait::{poll, within};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Which starter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `examples/axum-starter`.
    Axum,
    /// `examples/actix-starter`.
    Actix,
    /// `examples/tonic-starter` (gRPC; not in [`Kind::ALL`], which runs the
    /// HTTP assertions).
    Tonic,
}

impl Kind {
    /// Both starters.
    pub const ALL: [Kind; 2] = [Kind::Axum, Kind::Actix];

    /// The binary's name.
    pub fn bin_name(self) -> &'static str {
        match self {
            Kind::Axum => "axum-starter",
            Kind::Actix => "actix-starter",
            Kind::Tonic => "tonic-starter",
        }
    }

    /// The built binary (`cargo build --workspace --bins` makes it).
    pub fn bin_path(self) -> PathBuf {
        let dir = std::env::var_os("OPSKIT_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // target/<profile>/deps/<test-binary> → target/<profile>
                let exe = std::env::current_exe().expect("current_exe");
                exe.parent()
                    .and_then(|p| p.parent())
                    .expect("test binary lives in target/<profile>/deps")
                    .to_path_buf()
            });
        let path = dir.join(self.bin_name());
        assert!(
            path.exists(),
            "{} is missing: build the starters first (`cargo build --workspace --bins`, which scripts/test does)",
            path.display()
        );
        path
    }
}

/// Variables removed from the inherited environment so that tests are hermetic.
const SCRUBBED_PREFIXES: &[&str] = &[
    "OPSKIT_", "OTEL_", "APP_", "SENTRY_", "RUST_LOG", "PORT", "HOST",
];

/// A command for the starter with a clean environment, in an empty working
/// directory (so no `.env` is read), listening on `127.0.0.1:0`.
pub fn command(kind: Kind, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(kind.bin_path());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if SCRUBBED_PREFIXES.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(k.as_ref());
        }
    }
    let dir = std::env::temp_dir().join(format!("opskit-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    cmd.current_dir(dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the starter until it exits (for start-up failures).
pub fn run_to_exit(
    kind: Kind,
    env: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut child = command(kind, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starter");
    let Ok(status) = within(timeout, || child.try_wait().expect("try_wait")) else {
        let _ = child.kill();
        panic!("{} did not exit within {timeout:?}", kind.bin_name());
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status, out, err)
}

/// The address in the `listening` line, JSON (`"address":"…"`) or pretty (`address=…`).
fn listening_address(line: &str) -> Option<SocketAddr> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        if v["message"] == "listening" {
            return v["address"].as_str()?.parse().ok();
        }
        return None;
    }
    if !line.contains("listening") {
        return None;
    }
    // Without the ANSI colour codes a terminal-oriented format may add
    // (`address\x1b[0m\x1b[2m=\x1b[0m…` on a terminal).
    let line = strip_ansi(line);
    let rest = &line[line.find("address=")? + "address=".len()..];
    let token: String = rest
        .split_whitespace()
        .next()?
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ':' || *c == '[' || *c == ']')
        .collect();
    token.parse().ok()
}

/// `line` without its ANSI escape sequences (`ESC [ … final byte`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Parameters and intermediates up to the final byte (@ to ~).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running starter; killed on drop.
#[derive(Debug)]
pub struct Starter {
    /// Which starter.
    pub kind: Kind,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Starter {
    /// Starts `kind` with `env` and waits until it listens and `/livez` answers.
    pub fn spawn(kind: Kind, env: &[(&str, &str)]) -> Starter {
        Self::spawn_command(kind, command(kind, env))
    }

    /// Starts `cmd` (a [`command`] for `kind`, changed as the test needs)
    /// and waits until it listens and `/livez` answers.
    pub fn spawn_command(kind: Kind, mut cmd: Command) -> Starter {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn starter");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("[starter] {line}");
                    }
                    lines.lock().expect("lines").push(line.clone());
                    let _ = tx.send(line);
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_address(&line) {
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "{} did not log `listening` within 30 s; output:\n{}",
                        kind.bin_name(),
                        lines.lock().expect("lines").join("\n")
                    );
                }
            }
        };
        let starter = Starter {
            kind,
            addr,
            child,
            lines,
            readers,
        };
        // Any HTTP answer will do: probe paths may be moved under a prefix.
        if let Err(e) = within(Duration::from_secs(10), || starter.get("/livez")) {
            panic!("{} never answered HTTP: {e}", kind.bin_name());
        }
        starter
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        request(self.addr, "GET", path, &[], b"")
    }

    /// Any request.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        request(self.addr, method, path, headers, body)
    }

    /// `http_server_active_requests` from `/metrics`, summed over its
    /// series: the requests in flight (the scrape asking is quiet: not
    /// counted).
    pub fn active_requests(&self) -> Result<f64, String> {
        let text = self.get("/metrics").map_err(|e| e.to_string())?.text();
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("http_server_active_requests{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect();
        if values.is_empty() {
            return Err(format!("no http_server_active_requests in\n{text}"));
        }
        Ok(values.iter().sum())
    }

    /// Waits up to 10 s until `n` requests are in flight (counted from the
    /// moment opskit sees them, before the handler).
    #[track_caller]
    pub fn expect_in_flight(&self, n: u32) {
        crate::wait::eventually(
            &format!("{n} request(s) in flight"),
            Duration::from_secs(10),
            || match self.active_requests() {
                Ok(active) if active >= f64::from(n) => Ok(()),
                other => Err(other),
            },
        );
    }

    /// Every line the process wrote so far (stdout and stderr).
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The lines of output that are JSON (the default log format), parsed.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.output()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits up to `timeout` until a line of output satisfies `matches`
    /// (lines arrive through a non-blocking writer and a pipe, a moment
    /// after the response); returns it, or every line when none came.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String, Vec<String>> {
        within(timeout, || {
            let lines = self.output();
            match lines.iter().find(|l| matches(l)) {
                Some(l) => Ok(l.clone()),
                None => Err(lines),
            }
        })
    }

    /// Waits up to `timeout` until a line of output satisfies `matches` and
    /// returns it; fails the test naming `what`, with the whole output,
    /// when none came.
    #[track_caller]
    pub fn expect_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        match self.wait_for_line(timeout, matches) {
            Ok(line) => line,
            Err(lines) => panic!("no {what} within {timeout:?}; output: {lines:#?}"),
        }
    }

    /// [`Self::expect_line`] for the JSON lines: the first one satisfying
    /// `matches`, parsed.
    #[track_caller]
    pub fn expect_json_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let line = self.expect_line(what, timeout, |l| {
            serde_json::from_str(l).is_ok_and(|v| matches(&v))
        });
        serde_json::from_str(&line).expect("matched as JSON")
    }

    /// Waits up to `timeout` until a line of output contains `needle`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_line(timeout, |l| l.contains(needle)).is_ok()
    }

    /// Waits (up to `timeout` each) for a line containing each of
    /// `needles`, and fails the test naming the first that never came.
    #[track_caller]
    pub fn expect_output(&self, needles: &[&str], timeout: Duration) {
        for needle in needles {
            self.expect_line(&format!("`{needle}` line"), timeout, |l| l.contains(needle));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit, then for its last output lines to be read.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = &mut self.child;
        let status = poll(timeout, Duration::from_millis(10), || {
            child.try_wait().expect("try_wait")
        })
        .ok()?;
        // The pipes close at exit: the readers end once they have read everything.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Some(status)
    }
}

impl Drop for Starter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
