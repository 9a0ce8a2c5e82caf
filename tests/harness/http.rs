//! The raw HTTP/1.1 client: every byte the tests send is written here by
//! hand, and every answer parsed as received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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

pub(crate) fn invalid(msg: &str) -> std::io::Error {
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

/// A loopback port that refuses connections while this lives: bound but not
/// listening, so no server of a test running in parallel can take it (a
/// port from [`free_port`] can be, and then "nothing listens there" fails).
#[derive(Debug)]
pub struct ClosedPort {
    _socket: socket2::Socket,
    /// The port.
    pub port: u16,
}

/// See [`ClosedPort`].
pub fn closed_port() -> ClosedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bound");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("a port");
    ClosedPort {
        _socket: socket,
        port,
    }
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
