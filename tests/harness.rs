//! Test harness: starts a starter binary on an ephemeral loopback port with a
//! clean environment, captures its output, and talks raw HTTP/1.1 to it.
//!
//! The HTTP client is written by hand (a few dozen lines over `TcpStream`) so
//! that tests control every byte: malformed or duplicated headers, spoofed
//! `X-Forwarded-For`, requests cut mid-way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Which starter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `examples/axum-starter`.
    Axum,
    /// `examples/actix-starter`.
    Actix,
}

impl Kind {
    /// Both starters.
    pub const ALL: [Kind; 2] = [Kind::Axum, Kind::Actix];

    /// The binary's name.
    pub fn bin_name(self) -> &'static str {
        match self {
            Kind::Axum => "axum-starter",
            Kind::Actix => "actix-starter",
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
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not exit within {timeout:?}", kind.bin_name());
        }
        std::thread::sleep(Duration::from_millis(20));
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
    let rest = &line[line.find("address=")? + "address=".len()..];
    // Strip ANSI colour codes a terminal-oriented format may add.
    let token: String = rest
        .split_whitespace()
        .next()?
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ':' || *c == '[' || *c == ']')
        .collect();
    token.parse().ok()
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
        let ready = Instant::now() + Duration::from_secs(10);
        while Instant::now() < ready {
            // Any HTTP answer will do: probe paths may be moved under a prefix.
            if starter.get("/livez").is_ok() {
                return starter;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} never answered HTTP", kind.bin_name());
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

    /// Every line the process wrote so far (stdout and stderr).
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits until a line of output contains `needle` (lines arrive through
    /// a non-blocking writer and a pipe, a moment after the response).
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to `timeout` each) for a line containing each of
    /// `needles`, and fails the test naming the first that never came.
    pub fn expect_output(&self, needles: &[&str], timeout: Duration) {
        for needle in needles {
            assert!(
                self.wait_for_output(needle, timeout),
                "no `{needle}` line: {:#?}",
                self.output()
            );
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
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // The pipes close at exit: the readers end once they have read everything.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Starter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response as received.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the
/// whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if !chunked && (!body.is_empty() || method == "POST" || method == "PUT") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    if chunked {
        // 256-byte chunks, then the last (empty) one. A server may answer
        // and stop reading early: a failed write is not the test's failure.
        let mut encoded = Vec::new();
        for chunk in body.chunks(256) {
            encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            encoded.extend_from_slice(chunk);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded.extend_from_slice(b"0\r\n\r\n");
        let _ = stream.write_all(&encoded);
    } else {
        stream.write_all(body)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Writes `bytes` as they are (a request the client above cannot make: a
/// bad request line, conflicting framing headers) on a new connection and
/// reads the answer until the server closes it. The bytes should ask for
/// `Connection: close`, or be a request the server closes after answering.
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // A server may answer and close before reading everything: a failed
    // write is not the test's failure, a missing answer is.
    let _ = stream.write_all(bytes);
    read_until_closed(&mut stream)
}

/// A request written on its own connection, its answer not read yet (see [`send`]).
#[derive(Debug)]
pub struct Pending {
    stream: TcpStream,
}

/// Writes `bytes` on a new connection now and returns without reading: the
/// request is on the wire before whatever the test does next (a signal, say).
/// The bytes should ask for `Connection: close`.
pub fn send(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Pending> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(bytes)?;
    Ok(Pending { stream })
}

impl Pending {
    /// Reads the answer until the server closes the connection.
    pub fn response(mut self) -> std::io::Result<Response> {
        read_until_closed(&mut self.stream)
    }
}

/// Reads an answer until the server closes the connection.
fn read_until_closed(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // Reset after the answer (unread request bytes): keep what came.
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&raw)
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers (connection closed early?)"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| invalid("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("bad chunk size line"))?;
        let size_hex = std::str::from_utf8(&data[..eol]).map_err(|_| invalid("chunk size"))?;
        let size = usize::from_str_radix(size_hex.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A free loopback port (bound and released; fine for tests that start a
/// server on it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A loopback endpoint that accepts every connection and never answers:
/// what a hung collector or a firewall that drops replies looks like. It
/// reads (and discards) what it is sent, so senders never block on a full
/// socket buffer, and holds each connection open for as long as the test
/// process lives.
#[derive(Debug)]
pub struct BlackHole {
    addr: SocketAddr,
}

impl BlackHole {
    /// Starts it on an ephemeral loopback port.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut sink = [0u8; 8192];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    // The peer gave up: keep nothing, answer nothing.
                });
            }
        });
        Self { addr }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and its address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One POST the Sentry receiver got.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The request path (`/api/<project>/envelope/`).
    pub path: String,
    /// The `X-Sentry-Auth` header.
    pub auth: String,
    /// The raw body, for "this secret appears nowhere" checks.
    pub raw: String,
    /// The `event` items, parsed.
    pub events: Vec<serde_json::Value>,
    /// The `transaction` items, parsed.
    pub transactions: Vec<serde_json::Value>,
}

/// Listens on an ephemeral loopback port (for as long as the test process
/// lives) and keeps what `read` makes of each connection.
fn receive<T: Send + 'static>(
    read: fn(TcpStream) -> Option<T>,
) -> (SocketAddr, Arc<Mutex<Vec<T>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let store = store.clone();
            std::thread::spawn(move || {
                if let Some(item) = read(stream) {
                    store.lock().expect("store").push(item);
                }
            });
        }
    });
    (addr, received)
}

/// A test-side Sentry ingest endpoint: parses envelopes exactly as the SDK
/// sends them (newline-delimited: envelope header, then item header and
/// payload pairs) and answers 200.
#[derive(Debug)]
pub struct SentryReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Envelope>>>,
}

impl SentryReceiver {
    /// Starts the receiver on an ephemeral loopback port (it lives as long as the test process).
    pub fn start() -> Self {
        let (addr, received) = receive(read_envelope);
        Self { addr, received }
    }

    /// A DSN pointing here, with public key `testkey` and project 42.
    pub fn dsn(&self) -> String {
        format!("http://testkey@{}/42", self.addr)
    }

    /// Every envelope received so far.
    pub fn envelopes(&self) -> Vec<Envelope> {
        self.received.lock().expect("store").clone()
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.envelopes()
            .into_iter()
            .flat_map(|e| e.events)
            .collect()
    }

    /// Waits up to `timeout` until at least `n` events arrived.
    pub fn wait_for_events(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_envelope(stream: TcpStream) -> Option<Envelope> {
    let post = read_post(stream)?;
    let path = post.path;
    let auth = post
        .headers
        .iter()
        .find(|(k, _)| k == "x-sentry-auth")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let body = post.body;
    let raw = String::from_utf8_lossy(&body).into_owned();
    let mut events = Vec::new();
    let mut transactions = Vec::new();
    let mut items = raw.lines().skip(1); // the envelope header
    while let Some(item_header) = items.next() {
        let header: serde_json::Value = serde_json::from_str(item_header).ok()?;
        let payload = items.next().unwrap_or("");
        if header["type"] == "event" {
            events.push(serde_json::from_str(payload).ok()?);
        } else if header["type"] == "transaction" {
            transactions.push(serde_json::from_str(payload).ok()?);
        }
    }
    Some(Envelope {
        path,
        auth,
        raw,
        events,
        transactions,
    })
}

/// One request a test-side receiver got.
#[derive(Debug, Clone)]
pub struct Post {
    /// The request target.
    pub path: String,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Post {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request with a `Content-Length` body and answers `200 {}`.
fn read_post(mut stream: TcpStream) -> Option<Post> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    // An empty Export*ServiceResponse, in the request's encoding.
    let protobuf = headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.contains("protobuf"));
    let answer: &[u8] = if protobuf {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    };
    let _ = stream.write_all(answer);
    Some(Post {
        path,
        headers,
        body,
    })
}

/// A test-side OTLP/HTTP receiver: keeps every POST (protobuf or JSON) and
/// answers 200, as a collector does.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Post>>>,
}

impl OtlpReceiver {
    /// Starts the receiver on an ephemeral loopback port.
    pub fn start() -> Self {
        let (addr, received) = receive(read_post);
        Self { addr, received }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What arrived so far.
    pub fn posts(&self) -> Vec<Post> {
        self.received.lock().expect("store").clone()
    }

    /// Every span received so far (OTLP/HTTP protobuf).
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.posts().iter().flat_map(decode_spans).collect()
    }

    /// Waits until a received span satisfies `ok`, up to `timeout`.
    pub fn wait_for_span(
        &self,
        timeout: Duration,
        ok: impl Fn(&ExportedSpan) -> bool,
    ) -> Option<ExportedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| ok(s)) {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until a POST satisfies `ok`, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, ok: impl Fn(&Post) -> bool) -> Option<Post> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.posts().into_iter().find(|p| ok(p)) {
                return Some(p);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One exported span, decoded with the official `opentelemetry-proto`
/// messages, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    /// The span.
    pub span: opentelemetry_proto::tonic::trace::v1::Span,
    /// Its resource's attributes.
    pub resource: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
}

fn any_value(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn find_attr(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| any_value(a.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ExportedSpan {
    /// An attribute of the span, as text (integers in decimal).
    pub fn attr(&self, key: &str) -> Option<String> {
        find_attr(&self.span.attributes, key)
    }

    /// An attribute of the resource, as text.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find_attr(&self.resource, key)
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span id, 16 hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent span id, 16 hex digits, or empty for a root span.
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

/// The spans of an OTLP/HTTP protobuf trace export.
pub fn decode_spans(post: &Post) -> Vec<ExportedSpan> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    if !post.path.ends_with("/v1/traces") {
        return Vec::new();
    }
    let mut body = post.body.clone();
    if post.header("content-encoding") == Some("gzip") {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut out)
            .is_err()
        {
            return Vec::new();
        }
        body = out;
    }
    let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(ExportedSpan {
                    span,
                    resource: resource.clone(),
                });
            }
        }
    }
    out
}

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
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start");
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

/// A loopback server answering every request with one fixed HTML page: a
/// second origin (another port) for the browser tests.
#[derive(Debug)]
pub struct StaticPage {
    addr: SocketAddr,
}

impl StaticPage {
    /// Serves `html` on an ephemeral loopback port for as long as the test process lives.
    pub fn start(html: String) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let html = Arc::new(html);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let html = html.clone();
                std::thread::spawn(move || {
                    // Read the request head; the answer is the same whatever it asks.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        html.len(),
                        html
                    );
                    let _ = stream.write_all(answer.as_bytes());
                });
            }
        });
        Self { addr }
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// Loads `url` in headless Chromium (Debian's `chromium`, which
/// `scripts/test` installs) and returns the DOM after `budget_ms` of virtual
/// time, so that scripts and frames have run.
pub fn chromium_dump_dom(url: &str, budget_ms: u32) -> String {
    let profile = std::env::temp_dir().join(format!("opskit-chromium-{}", free_port()));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium (scripts/test installs Debian's chromium)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends `paths` as GET requests on one keep-alive connection, pipelined in
/// batches of 100, and returns the statuses: many requests in little time.
pub fn pipelined_gets(
    addr: SocketAddr,
    method: &str,
    paths: &[String],
) -> std::io::Result<Vec<u16>> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut statuses = Vec::with_capacity(paths.len());
    for batch in paths.chunks(100) {
        let mut out = String::new();
        for p in batch {
            out.push_str(&format!("{method} {p} HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
        }
        writer.write_all(out.as_bytes())?;
        for _ in batch {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid("bad status line"))?;
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h)?;
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().map_err(|_| invalid("content-length"))?;
                    }
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body)?;
            statuses.push(status);
        }
    }
    Ok(statuses)
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = p.query("up").ok().and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(|s| s == "1")
            });
            if up == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never saw the target up"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "rotel never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        let grpc: SocketAddr = format!("127.0.0.1:{grpc}").parse().expect("addr");
        while TcpStream::connect_timeout(&grpc, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "rotel never listened on gRPC");
            std::thread::sleep(Duration::from_millis(100));
        }
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
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if needles.iter().all(|n| out.contains(n)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
