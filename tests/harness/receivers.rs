//! Test-side endpoints the starters send to: an OTLP/HTTP receiver, a
//! Sentry ingest endpoint, and a black hole that never answers.

use crate::wait::{poll, within};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        within(timeout, || {
            let events = self.events();
            if events.len() >= n {
                Ok(events)
            } else {
                Err(events)
            }
        })
        .unwrap_or_else(|fewer| fewer)
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
fn read_post(stream: TcpStream) -> Option<Post> {
    let (post, mut stream, answer) = read_request(stream)?;
    let _ = stream.write_all(answer);
    Some(post)
}

/// Reads one request as [`read_post`] does and keeps it at once, but
/// answers only [`OtlpReceiver::SLOW`] later: a collector under load.
fn read_post_late(stream: TcpStream) -> Option<Post> {
    let (post, mut stream, answer) = read_request(stream)?;
    std::thread::spawn(move || {
        std::thread::sleep(OtlpReceiver::SLOW);
        let _ = stream.write_all(answer);
    });
    Some(post)
}

/// Reads one request with a `Content-Length` body; the answer it wants.
fn read_request(mut stream: TcpStream) -> Option<(Post, TcpStream, &'static [u8])> {
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
    let post = Post {
        path,
        headers,
        body,
    };
    Some((post, stream, answer))
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

    /// How long [`OtlpReceiver::start_slow`]'s receiver takes to answer.
    pub const SLOW: Duration = Duration::from_secs(8);

    /// A receiver that keeps each POST as it arrives but answers it only
    /// [`OtlpReceiver::SLOW`] later.
    pub fn start_slow() -> Self {
        let (addr, received) = receive(read_post_late);
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
        poll(timeout, Duration::from_millis(50), || {
            self.spans().into_iter().find(|s| ok(s))
        })
        .ok()
    }

    /// Waits until a POST satisfies `ok`, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, ok: impl Fn(&Post) -> bool) -> Option<Post> {
        poll(timeout, Duration::from_millis(50), || {
            self.posts().into_iter().find(|p| ok(p))
        })
        .ok()
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
