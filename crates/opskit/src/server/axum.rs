//! The graceful server for Axum (hyper underneath): [`Ops::serve`].

use crate::Ops;
use axum::http::header;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why [`Ops::serve`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Installing the signal handlers or serving failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

impl<C: Send + Sync + 'static> Ops<C> {
    /// Serves `app` on `listener` until SIGTERM/SIGINT (or
    /// [`Shutdown::trigger`](crate::Shutdown::trigger)), then: readiness turns
    /// 503 and every response carries `Connection: close` (HTTP/2: a GOAWAY),
    /// the server keeps serving for `OPSKIT_SHUTDOWN_DELAY`, stops
    /// accepting (serving the connections already queued), closes idle
    /// connections, lets in-flight requests finish for up to
    /// `OPSKIT_SHUTDOWN_TIMEOUT`, and returns `Ok` (the handle flushes on drop).
    ///
    /// HTTP/1.1 and HTTP/2 (prior knowledge) over hyper, with TCP_NODELAY,
    /// [`ConnectInfo`](axum::extract::ConnectInfo), upgrades, a request-head
    /// timeout (`OPSKIT_HEADER_READ_TIMEOUT`) and an idle keep-alive timeout
    /// (`OPSKIT_KEEP_ALIVE_TIMEOUT`).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        app: Router,
    ) -> Result<(), ServeError> {
        self.shutdown().listen_for_signals()?;
        let addr = listener.local_addr().ok();
        let settings = self.settings();
        let timeouts = Timeouts {
            header_read: settings.header_read_timeout,
            keep_alive: settings.keep_alive_timeout,
        };
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(timeouts.header_read)
            .keep_alive(!timeouts.keep_alive.is_zero());
        let builder = Arc::new(builder);
        // Sent once the listener is closed: every connection finishes its
        // requests in flight and closes.
        let (closing, closed) = tokio::sync::watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        let serve_one = |connections: &mut tokio::task::JoinSet<()>,
                         tcp: tokio::net::TcpStream,
                         peer: SocketAddr| {
            // As Actix sets it: without it Nagle's algorithm holds back
            // small responses until the client's (delayed) ACK arrives.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            connections.spawn(serve_connection(
                builder.clone(),
                tcp,
                peer,
                app.clone(),
                self.shutdown().clone(),
                closed.clone(),
                timeouts,
            ));
        };
        self.announce(addr, "axum");
        let stop = self.stop_accepting();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => serve_one(&mut connections, tcp, peer),
                    Err(e) => accept_failed(e).await,
                },
                // Reaps finished connections.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // Connections the kernel has already queued were accepted from the
        // client's side (it may have sent its request): serve them rather
        // than reset them by closing the listener.
        // (Asked of the kernel directly: tokio's `accept` would wait for the
        // reactor to report readiness.)
        if let Ok(listener) = listener.into_std() {
            while let Ok((tcp, peer)) = listener.accept() {
                // (An accepted socket does not inherit the listener's mode.)
                let registered = tcp
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpStream::from_std(tcp));
                match registered {
                    Ok(tcp) => serve_one(&mut connections, tcp, peer),
                    Err(e) => tracing::debug!(error = %e, "cannot register a queued connection"),
                }
            }
        }
        let _ = closing.send(true);
        let timeout = settings.shutdown_timeout;
        let answer_at = timeout.saturating_sub(crate::shutdown::ANSWER_BEFORE_CUT);
        if !drained(&mut connections, answer_at).await {
            tracing::warn!(
                "shutdown timeout reached with requests still in flight; answering them 503 and exiting"
            );
            // Handlers still running stop and their requests are answered
            // (503, gRPC UNAVAILABLE: retry elsewhere) before the connections
            // close; requests dropped from now on are logged as cut by the
            // server (their access lines are written as their futures are
            // dropped, before the log is flushed).
            self.shutdown().pass_deadline();
            if !drained(&mut connections, timeout - answer_at).await {
                connections.abort_all();
                while connections.join_next().await.is_some() {}
            }
        }
        tracing::info!("server stopped");
        self.finish_telemetry();
        Ok(())
    }
}

/// Waits up to `within` for every connection to end; whether they did.
async fn drained(connections: &mut tokio::task::JoinSet<()>, within: Duration) -> bool {
    let all = async { while connections.join_next().await.is_some() {} };
    tokio::time::timeout(within, all).await.is_ok()
}

/// The connection timeouts of [`Ops::serve`].
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    keep_alive: Duration,
}

/// As axum::serve: connection errors concern one client; others (out of
/// descriptors) are logged and retried after a pause.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// What a connection's requests tell its task: how many are in flight
/// (until their response body is done) and when the last one ended.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request (0: none yet).
    last_done_ms: AtomicU64,
    requests: AtomicU64,
    http2: AtomicBool,
}

impl Activity {
    /// When the connection counts as idle for too long: `header_read` after
    /// it opened if no request came yet, else `keep_alive` after the last
    /// request ended; `None` while a request is in flight.
    fn idle_deadline(&self, t: Timeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some(self.opened + t.header_read);
        }
        if t.keep_alive.is_zero() {
            // hyper closes the connection after each response.
            return None;
        }
        let done = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(self.opened + done + t.keep_alive)
    }
}

/// Counts a request as in flight until dropped (with the response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_done_ms.fetch_max(ms.max(1), Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The response body, holding the request's [`InFlight`] until it is sent.
    struct TrackedBody {
        #[pin]
        inner: axum::body::Body,
        in_flight: InFlight,
    }
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection: the router with the peer's
/// [`ConnectInfo`](axum::extract::ConnectInfo); `Connection: close` on every
/// HTTP/1 response from the shutdown signal on ([`Shutdown::close_connection`](crate::Shutdown::close_connection)),
/// a GOAWAY on HTTP/2; closed when idle past its timeout, or once `closed`
/// says the listener is gone (after the request in flight, if any).
async fn serve_connection(
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    shutdown: crate::Shutdown,
    mut closed: tokio::sync::watch::Receiver<bool>,
    timeouts: Timeouts,
) {
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_done_ms: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        http2: AtomicBool::new(false),
    });
    let service = {
        let (activity, shutdown) = (activity.clone(), shutdown.clone());
        hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            let in_flight = InFlight::enter(&activity);
            let http1 = req.version() < axum::http::Version::HTTP_2;
            if !http1 {
                activity.http2.store(true, Ordering::Release);
            }
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut router = app.clone();
            let shutdown = shutdown.clone();
            async move {
                // A Router is always ready.
                let res = tower_service::Service::call(&mut router, req).await;
                let mut res = match res {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
                if http1 && shutdown.close_connection(res.status().as_u16()) {
                    res.headers_mut().insert(
                        header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(res.map(|inner| TrackedBody { inner, in_flight }))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let signalled = shutdown.triggered();
    tokio::pin!(signalled);
    let (mut closing, mut goaway) = (false, false);
    // When the listener closed. An idle connection then gets a last moment
    // before it is closed: one just accepted may have its first request on
    // the way, and a keep-alive client may be sending its next one (a
    // request it sends then is answered with `Connection: close`). Actix's
    // stop comes as long after the listener closes.
    let mut listener_closed: Option<Instant> = None;
    let grace = timeouts
        .header_read
        .min(crate::shutdown::LAST_REQUEST_GRACE);
    // When to close the connection if it is still idle then.
    let close_at = |activity: &Activity, listener_closed: Option<Instant>| {
        let idle = activity.idle_deadline(timeouts)?;
        Some(listener_closed.map_or(idle, |at| idle.min(at + grace)))
    };
    loop {
        // Re-read each turn: requests move it. While a request is in
        // flight, look again a while later.
        let wake = close_at(&activity, listener_closed)
            .unwrap_or_else(|| Instant::now() + timeouts.header_read.max(Duration::from_secs(1)));
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // HTTP/2 has no `Connection: close`: a GOAWAY from the signal on
            // (streams in flight finish; the client opens a new connection).
            () = &mut signalled, if !goaway && !closing && activity.http2.load(Ordering::Acquire) => {
                goaway = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = closed.wait_for(|c| *c), if listener_closed.is_none() && !closing => {
                listener_closed = Some(Instant::now());
            }
            () = tokio::time::sleep_until(wake.into()), if !closing => {
                if close_at(&activity, listener_closed).is_some_and(|d| d <= Instant::now()) {
                    // hyper finishes a response in flight first.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
