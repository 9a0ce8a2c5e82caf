//! The per-request pipeline: the order of opskit's per-request steps,
//! written once for every adapter (the tower layer for Axum, hyper and
//! tonic; the Actix middleware). An adapter translates its request into a
//! [`Head`], runs the handler when told to, and hands back what happened;
//! every decision is made here.
//!
//! ```text
//! adapter                            pipeline
//! request ── Head ─────────────────▶ Pipeline::begin
//!                                      headers scanned once
//!                                      https (X-Forwarded-Proto / Forwarded)
//!                                      Recorder::start: request id, trace, span
//!                                      CSP nonce, CORS decision
//!                                      early answers: preflight 204,
//!                                        path not UTF-8 400, body over 413
//!                                      client address through trusted proxies
//!                                      rate limit in memory, or Next::Limit
//!            ◀── Begun { flight, next, body counter } ──
//! poll Run (the handler's part) ───▶ Run::poll_run: Next::Limit awaited,
//!                                      InFlight::admit → handler or 429;
//!                                      the handler polled in its scope,
//!                                      catching panics, within the timeout,
//!                                      until the shutdown's cut
//! handler stopped ─────────────────▶ InFlight::answer: panic 500, timeout,
//!                                      shutdown 503 (gRPC UNAVAILABLE)
//! handler ended ───────────────────▶ InFlight::replacement: body cut off
//!                                      413, unknown method 501, or keep
//! response ────────────────────────▶ InFlight::finish: response headers,
//!                                      access log, metrics, span, report
//! dropped unfinished ──────────────▶ 499 (the client left) or 503 (cut
//!                                      at the shutdown deadline)
//! ```

mod answer;
mod run;
#[cfg(test)]
mod run_tests;
mod scan;
mod scope;

pub(crate) use answer::Answer;
use answer::Rpc;
pub(crate) use run::Run;
use scan::{Names, Wanted};

pub(crate) use scope::{install_panic_hook, panic_message, panic_problem, RequestScope};

use crate::grpc;
use crate::limits::Limits;
use crate::ratelimit::{Checked, LimitCheck, Limiter, RequestInfo};
use crate::recorder::{Outcome, Recorder, Started};
use crate::response_headers::{HeaderMapLike, PerResponse, Prepared};
use crate::security::{CorsDecision, CspNonce, SecurityPolicy};
use crate::shutdown::CutSignal;
use crate::{Problem, RequestId};
use std::any::Any;
use std::borrow::Cow;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What an adapter keeps of its request until the response (cheap clones of
/// its own types: the request itself moves into the handler).
pub(crate) trait Kept {
    /// The request method, and the path as sent (without the query).
    fn target(&self) -> (&str, &str);
    /// The route template that matched, if any.
    fn route(&self) -> Option<Cow<'_, str>>;
}

/// A request as the pipeline reads it, translated by the adapter.
pub(crate) struct Head<'a, M> {
    pub(crate) method: &'a str,
    /// The path as sent, without the query.
    pub(crate) path: &'a str,
    /// The path as the framework's router matches it (Actix decodes most
    /// percent-escapes first): route policies meet the route reached.
    pub(crate) routed_path: &'a str,
    pub(crate) headers: &'a M,
    /// The socket peer's address.
    pub(crate) peer: Option<IpAddr>,
    /// What bounds the body's size before it is read.
    pub(crate) body: BodyBound,
}

/// What the adapter knows of the body's size before it is read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BodyBound {
    /// The framework's own bound (an `http_body` size hint's upper bound):
    /// `None` when unknown.
    Known(Option<u64>),
    /// Read from the headers, HTTP's message framing (RFC 9112 §6.3): the
    /// declared `Content-Length`; none for an HTTP/1 request with neither it
    /// nor `Transfer-Encoding` (no body); unknown otherwise (chunked,
    /// HTTP/2 without `Content-Length`). Actix's way.
    #[cfg_attr(not(feature = "actix"), allow(dead_code))]
    FromHeaders {
        /// The request came over HTTP/2 or later.
        http2: bool,
    },
}

/// What to do next with a request.
pub(crate) enum Next {
    /// Run the handler.
    Call,
    /// Answer this without the handler.
    Answer(Answer),
    /// Await the (Redis) rate limit, then [`InFlight::admit`] its decision.
    Limit(LimitCheck),
}

/// How a handler failed to answer.
pub(crate) enum Failure {
    /// It panicked (the payload, caught by the adapter).
    Panicked(Box<dyn Any + Send>),
    /// It ran past [`InFlight::timeout`].
    TimedOut,
    /// It still ran at the drain's deadline ([`InFlight::poll_cut`]).
    Cut,
}

/// How a request stopped without a response from its handler: answered
/// early, or the handler failed.
pub(crate) enum Stop {
    Answer(Answer),
    Failed(Failure),
}

/// The start of a request: its state, what to do next, and the counter the
/// adapter wraps the body in when its size is not bounded by the limit.
pub(crate) struct Begun<M: HeaderMapLike, K: Kept> {
    pub(crate) flight: InFlight<M, K>,
    pub(crate) next: Next,
    pub(crate) body: Option<BodyCounter>,
}

/// Counts a streamed request body and cuts it off at the limit; the response
/// of a request whose body was cut off is 413, whatever the handler said.
#[derive(Debug)]
pub(crate) struct BodyCounter {
    remaining: u64,
    over: Arc<AtomicBool>,
}

impl BodyCounter {
    /// Takes a chunk of `len` bytes: `false` when it goes past the limit.
    pub(crate) fn take(&mut self, len: u64) -> bool {
        if len > self.remaining {
            self.over.store(true, Ordering::Relaxed);
            return false;
        }
        self.remaining -= len;
        true
    }
}

/// The per-request policy, built once: the recorder, the security policy,
/// the rate limiter and every header name and value it reads or writes,
/// parsed for the adapter's header-map type `M`.
pub(crate) struct Pipeline<M: HeaderMapLike> {
    recorder: Recorder,
    headers: Prepared<M>,
    names: Names<M>,
    /// The limiter as given (also when it limits nothing: its trusted
    /// proxies still name the client), for [`Self::for_map`].
    #[cfg(feature = "actix")]
    limiter: Option<Limiter>,
}

impl<M: HeaderMapLike> std::fmt::Debug for Pipeline<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("recorder", &self.recorder)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl<M: HeaderMapLike> Pipeline<M> {
    /// The pipeline around this recorder, security policy and rate limiter.
    pub(crate) fn new(
        recorder: Recorder,
        security: SecurityPolicy,
        limiter: Option<Limiter>,
    ) -> Self {
        Self {
            #[cfg(feature = "actix")]
            limiter: limiter.clone(),
            headers: Prepared::new(&recorder, security, limiter),
            recorder,
            names: Names::new(),
        }
    }

    /// The same policy for another framework's header map.
    #[cfg(feature = "actix")]
    pub(crate) fn for_map<N: HeaderMapLike>(&self) -> Pipeline<N> {
        Pipeline::new(
            self.recorder.clone(),
            self.headers.security.clone(),
            self.limiter.clone(),
        )
    }

    /// Starts a request: every step before the handler, in order.
    pub(crate) fn begin<K: Kept>(self: &Arc<Self>, head: &Head<'_, M>, kept: K) -> Begun<M, K> {
        let mut w = Wanted::scan(head.headers, &self.names, &self.headers.request_id_header);
        // A trusted proxy's trace context may be joined (`OPSKIT_TRACE_UNTRUSTED`).
        w.trace.trusted = self.headers.proxies.trusts(head.peer);
        let security = &self.headers.security;
        let https = security.is_https(w.forwarded_proto, w.forwarded);
        let quiet = self.recorder.quiet_route(head.routed_path);
        let started = self
            .recorder
            .start_route(w.request_id, head.method, https, &w.trace, quiet);
        // The declared body size, read once: the limit's check, the metrics.
        let declared = w
            .content_length
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
        // A gRPC call (by its content type) ends with a gRPC status.
        let grpc = w.report[2].is_some_and(|v| grpc::is_grpc(M::bytes(v)));
        // The body limit and timeout of the route reached; a gRPC client's
        // deadline (`grpc-timeout`) lowers the timeout, never raises it.
        let mut limits = security.limits(head.routed_path);
        let client_deadline = w
            .grpc_timeout
            .filter(|_| grpc)
            .and_then(grpc::parse_timeout);
        if let Some(t) = client_deadline {
            limits.timeout = Some(limits.timeout.map_or(t, |c| c.min(t)));
        }
        let nonce = security.nonce_enabled().then(CspNonce::generate);
        let cors = security.cors(head.method, w.origin, w.request_method);
        let answer = match &cors {
            CorsDecision::Preflight(_) => Some(Answer::NoContent),
            _ => crate::problem::refuse_path(head.path)
                .or_else(|| limits.check_body(declared))
                .map(Answer::Problem),
        };
        let cors = match cors {
            CorsDecision::Preflight(h) | CorsDecision::Actual(h) => h,
            CorsDecision::None => Vec::new(),
        };
        let client = self.headers.proxies.client(head.peer, |name| {
            let name = match name {
                "forwarded" => &self.names.forwarded,
                _ => &self.names.x_forwarded_for,
            };
            head.headers.lines(name)
        });
        // A body whose size is not bounded by the limit before it is read is
        // counted as it streams (one rule for every framework).
        let limit = limits.body;
        let bound = match head.body {
            BodyBound::Known(bound) => bound,
            BodyBound::FromHeaders { http2 } => match declared {
                Some(n) => Some(n),
                None if http2 || w.transfer_encoding.is_some() => None,
                None if w.content_length.is_some() => None,
                None => Some(0),
            },
        };
        let body = bound.is_none_or(|b| b > limit).then(|| BodyCounter {
            remaining: limit,
            over: Arc::new(AtomicBool::new(false)),
        });
        let mut rate = None;
        let next = match (answer, &self.headers.limiter) {
            (Some(answer), _) => Next::Answer(answer),
            (None, None) => Next::Call,
            (None, Some(limiter)) => {
                let header = |name: &str| head.headers.get_str(name);
                let info = RequestInfo {
                    method: head.method,
                    path: head.routed_path,
                    client,
                    header: &header,
                };
                if limiter.uses_redis() {
                    limiter.check_later(&info).map_or(Next::Call, Next::Limit)
                } else {
                    // A refusal is logged under the request's span (its ids).
                    rate = limiter.check_memory_for(&info, Some(&started.span));
                    match rate.as_ref().filter(|c| !c.decision.allowed) {
                        Some(c) => Next::Answer(Answer::Problem(c.problem())),
                        None => Next::Call,
                    }
                }
            }
        };
        let next = match next {
            Next::Answer(answer) if grpc => Next::Answer(answer.for_grpc(None)),
            next => next,
        };
        let flight = InFlight {
            grpc,
            client_deadline,
            pipeline: self.clone(),
            started,
            kept,
            https,
            client,
            peer: head.peer,
            request_size: declared,
            limits,
            user_agent: w.user_agent.cloned(),
            report: w.report.map(|v| v.cloned()),
            nonce,
            cors,
            rate,
            over: body.as_ref().map(|b| b.over.clone()),
            panic: None,
            error: None,
            done: false,
        };
        Begun { flight, next, body }
    }
}

/// A request between [`Pipeline::begin`] and [`InFlight::finish`]. Dropped
/// unfinished, it records the request as aborted.
pub(crate) struct InFlight<M: HeaderMapLike, K: Kept> {
    /// A gRPC call: its outcome is its gRPC status.
    grpc: bool,
    /// The deadline a gRPC client sent (`grpc-timeout`).
    client_deadline: Option<std::time::Duration>,
    pipeline: Arc<Pipeline<M>>,
    started: Started,
    kept: K,
    https: bool,
    /// Resolved through trusted proxies once, for the limiter and the logs.
    client: Option<IpAddr>,
    peer: Option<IpAddr>,
    request_size: Option<u64>,
    /// The body limit and timeout of the request's route.
    limits: Limits,
    user_agent: Option<M::Value>,
    report: [Option<M::Value>; 3],
    nonce: Option<CspNonce>,
    cors: Vec<(&'static str, String)>,
    /// The rate-limit decision, for its headers.
    rate: Option<Checked>,
    /// Set when a streamed request body went over the limit.
    over: Option<Arc<AtomicBool>>,
    panic: Option<Box<dyn Any + Send>>,
    error: Option<&'static str>,
    done: bool,
}

impl<M: HeaderMapLike, K: Kept> std::fmt::Debug for InFlight<M, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("request_id", &self.started.request_id)
            .finish_non_exhaustive()
    }
}

impl<M: HeaderMapLike, K: Kept> InFlight<M, K> {
    /// The request's id (the adapter puts it in the request's extensions).
    pub(crate) fn request_id(&self) -> &RequestId {
        &self.started.request_id
    }

    /// The CSP nonce (likewise), when the policy uses one.
    pub(crate) fn nonce(&self) -> Option<&CspNonce> {
        self.nonce.as_ref()
    }

    /// What the adapter kept of the request.
    #[cfg(feature = "actix")]
    pub(crate) fn kept_mut(&mut self) -> &mut K {
        &mut self.kept
    }

    /// The request's context on this thread: the handler runs inside it.
    fn scope(&self) -> RequestScope<'_> {
        RequestScope::enter(&self.started)
    }

    /// Calls the handler (`call` makes its future) inside the request's
    /// scope, catching a panic.
    fn call<T>(&self, call: impl FnOnce() -> T) -> Result<T, Stop> {
        let _scope = self.scope();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
            .map_err(|payload| Stop::Failed(Failure::Panicked(payload)))
    }

    /// How long the handler may run.
    fn timeout(&self) -> Option<Duration> {
        self.limits.timeout
    }

    /// Whether the handler must stop because the drain's deadline has
    /// passed ([`Failure::Cut`]); registers the task to be woken when it
    /// does. [`Run`] polls it while the handler is pending, beside the
    /// timeout.
    fn poll_cut(&self, cut: Pin<&mut CutSignal>, cx: &mut Context<'_>) -> Poll<()> {
        cut.poll_cut(self.pipeline.recorder.shutdown(), cx)
    }

    /// Takes the rate limiter's decision awaited for [`Next::Limit`]: the
    /// answer when it refuses, `None` to call the handler.
    pub(crate) fn admit(&mut self, checked: Checked) -> Option<Answer> {
        let refused = (!checked.decision.allowed).then(|| self.grpc_aware(checked.problem(), None));
        self.rate = Some(checked);
        refused
    }

    /// The answer for a request stopped without its handler's response.
    pub(crate) fn answer(&mut self, stop: Stop) -> Answer {
        match stop {
            Stop::Answer(answer) => answer,
            Stop::Failed(failure) => {
                let timed_out = matches!(failure, Failure::TimedOut);
                let problem = self.failure(failure);
                // A timeout is the client's DEADLINE_EXCEEDED whatever
                // status an HTTP client is told (408, 503 or 504).
                let code = (timed_out && !self.cut_off()).then_some(grpc::DEADLINE_EXCEEDED);
                self.grpc_aware(problem, code)
            }
        }
    }

    /// `problem` as the answer to this request: a Trailers-Only gRPC
    /// status for a gRPC call (`code`, or the problem's status mapped).
    fn grpc_aware(&self, problem: Problem, code: Option<u8>) -> Answer {
        match self.grpc {
            true => Answer::Problem(problem).for_grpc(code),
            false => Answer::Problem(problem),
        }
    }

    /// The answer for a handler that failed to answer: a panic is a 500
    /// (no detail reaches the client), a timeout the timeout's status; a
    /// body cut off at the limit makes either a 413.
    fn failure(&mut self, failure: Failure) -> Problem {
        match failure {
            Failure::Panicked(payload) => {
                self.panic = Some(payload);
                return panic_problem();
            }
            Failure::Cut => {
                self.error = Some(crate::recorder::SHUTDOWN_CUT);
                return Problem::new(503).detail("the service is shutting down; retry the request");
            }
            Failure::TimedOut => {
                self.error = Some("timeout");
                let _span = self.started.span.enter();
                tracing::warn!(
                    timeout_ms = self.limits.timeout.unwrap_or_default().as_millis() as u64,
                    "request timed out"
                );
            }
        }
        if self.cut_off() {
            self.limits.body_too_large()
        } else {
            self.limits.timeout_problem()
        }
    }

    /// Whether the request's body was cut off at the limit.
    fn cut_off(&self) -> bool {
        self.over
            .as_ref()
            .is_some_and(|o| o.load(Ordering::Relaxed))
    }

    /// What replaces the handler's answer (`status`; `empty_body` when its
    /// body is known to be empty), if anything: a body cut off at the limit
    /// is a 413 whatever the handler answered (a failed extractor's 400, say);
    /// no route for a method outside RFC 9110's is a 501 in every framework.
    pub(crate) fn replacement(&self, status: u16, empty_body: bool) -> Option<Answer> {
        let problem = if self.cut_off() {
            self.limits.body_too_large()
        } else {
            crate::problem::replace_unrouted(self.kept.target().0, status, empty_body)?
        };
        Some(self.grpc_aware(problem, None))
    }

    /// Ends the request: adds opskit's headers to the response about to be
    /// sent (security, CORS, request id, `traceresponse`, rate-limit fields)
    /// and records it (access log, metrics, span, error report).
    ///
    /// A gRPC call's outcome is its status: read here from the response
    /// headers (a Trailers-Only response, or an HTTP error the client maps
    /// to a status). When the status comes in the trailers, the flight is
    /// handed back: the adapter keeps it with the response body and calls
    /// [`Self::end_stream`] when the body ends (dropped before: CANCELLED).
    #[must_use = "a gRPC call handed back ends with `end_stream`"]
    pub(crate) fn finish(
        mut self,
        headers: &mut M,
        status: u16,
        response_size: Option<u64>,
    ) -> Option<Self> {
        self.pipeline.headers.apply(
            headers,
            &PerResponse {
                // Browser security headers mean nothing to a gRPC client.
                browser: !self.grpc,
                https: self.https,
                nonce: self.nonce.as_ref(),
                cors: &self.cors,
                request_id: &self.started.request_id,
                trace: &self.started.trace_header,
                rate: self.rate.as_ref(),
            },
        );
        let rpc = if self.grpc {
            let names = &self.pipeline.names;
            let code = headers.lines(&names.grpc_status).next();
            let rpc = match code {
                Some(code) => Some(Rpc::from_headers(code, headers, names)),
                // No status and not 200: the client maps the HTTP status.
                None if status != 200 => Some(Rpc::new(grpc::code_for_http(status), None)),
                None => None,
            };
            if rpc.is_none() {
                return Some(self);
            }
            rpc
        } else {
            None
        };
        self.done = true;
        self.record(status, false, response_size, rpc.as_ref());
        None
    }

    /// [`Self::finish`] for a framework that sends no trailers (Actix): a
    /// gRPC call answered without a status in its headers ends here.
    #[cfg(feature = "actix")]
    pub(crate) fn finish_without_trailers(self, headers: &mut M, status: u16, size: Option<u64>) {
        if let Some(call) = self.finish(headers, status, size) {
            call.end_stream(None);
        }
    }

    /// Ends a gRPC call handed back by [`Self::finish`] when its response
    /// body ended: its status from the `trailers` (UNKNOWN without one, as
    /// a client reads it).
    pub(crate) fn end_stream(mut self, trailers: Option<&M>) {
        let names = &self.pipeline.names;
        let rpc = match trailers.and_then(|t| Some((t.lines(&names.grpc_status).next()?, t))) {
            Some((code, t)) => Rpc::from_headers(code, t, names),
            None => Rpc::new(grpc::UNKNOWN, Some("no grpc-status in the trailers".into())),
        };
        self.done = true;
        self.record(200, false, None, Some(&rpc));
    }

    /// Ends a request the service failed without a response (the connection
    /// will be closed): recorded as a 500, so that it is not silent.
    pub(crate) fn failed(mut self) {
        self.done = true;
        let rpc = self.grpc.then(|| Rpc::new(grpc::UNKNOWN, None));
        self.record(500, false, None, rpc.as_ref());
    }

    fn record(&self, status: u16, aborted: bool, response_size: Option<u64>, rpc: Option<&Rpc>) {
        let route = self.kept.route();
        // Host is the span's `server.address`; Accept and Content-Type are
        // read only for error reports: a 5xx or a panic (the recorder
        // decides which of those it reports).
        let text = |i: usize| self.report[i].as_ref().and_then(M::text);
        let failed = match rpc {
            Some(r) => grpc::is_reported(r.code),
            None => status >= 500,
        };
        let (host, accept, content_type) = match failed || self.panic.is_some() {
            true => (text(0), text(1), text(2)),
            false => (text(0), None, None),
        };
        let (method, path) = self.kept.target();
        let outcome = Outcome {
            method,
            path,
            route: route.as_deref(),
            status,
            client: self.client,
            peer: self.peer,
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(|v| crate::recorder::header_text(M::bytes(v))),
            aborted,
            host,
            accept,
            content_type,
            panic: self.panic.as_deref().map(panic_message),
            https: self.https,
            error: self.error,
            request_size: self.request_size,
            response_size,
            enrichment: None,
            rpc: rpc.map(|r| crate::request::Rpc {
                method: grpc::method_name(path, Some(r.code)),
                code: r.code,
                message: r.message.as_deref(),
            }),
        };
        self.pipeline.recorder.finish(&self.started, &outcome);
    }
}

impl<M: HeaderMapLike, K: Kept> Drop for InFlight<M, K> {
    /// Dropped before a response: the client went away (or the server gave
    /// up on the request at the shutdown deadline).
    fn drop(&mut self) {
        if !self.done {
            // A gRPC client that goes away cancels its call; one that goes
            // away at its deadline was cut by the deadline (DEADLINE_EXCEEDED).
            let code = match self.client_deadline {
                Some(d) if grpc::cancelled_by_deadline(self.started.at.elapsed(), d) => {
                    grpc::DEADLINE_EXCEEDED
                }
                _ => grpc::CANCELLED,
            };
            let rpc = self.grpc.then(|| Rpc::new(code, None));
            self.record(499, true, None, rpc.as_ref());
        }
    }
}
