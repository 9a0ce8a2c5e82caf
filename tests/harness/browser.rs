//! The browser checks: headless Chromium, and a second origin to load pages from.

use crate::http::free_port;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

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
