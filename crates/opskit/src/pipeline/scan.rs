//! The request headers the pipeline reads: their names parsed once
//! ([`Names`]) and found in one pass over a request's map ([`Wanted`]).

use crate::response_headers::HeaderMapLike;

/// The request headers the pipeline reads, as names parsed once: a lookup
/// by `&str` parses and validates the name each time.
pub(super) struct Names<M: HeaderMapLike> {
    pub(super) traceparent: M::Name,
    pub(super) tracestate: M::Name,
    pub(super) baggage: M::Name,
    pub(super) user_agent: M::Name,
    pub(super) content_length: M::Name,
    pub(super) transfer_encoding: M::Name,
    pub(super) forwarded_proto: M::Name,
    pub(super) forwarded: M::Name,
    pub(super) x_forwarded_for: M::Name,
    pub(super) origin: M::Name,
    pub(super) request_method: M::Name,
    pub(super) grpc_timeout: M::Name,
    pub(super) grpc_status: M::Name,
    pub(super) grpc_message: M::Name,
    pub(super) report: [M::Name; 3],
}

impl<M: HeaderMapLike> Names<M> {
    pub(super) fn new() -> Self {
        Self {
            traceparent: M::static_name("traceparent"),
            tracestate: M::static_name("tracestate"),
            baggage: M::static_name("baggage"),
            user_agent: M::static_name("user-agent"),
            content_length: M::static_name("content-length"),
            transfer_encoding: M::static_name("transfer-encoding"),
            forwarded_proto: M::static_name("x-forwarded-proto"),
            forwarded: M::static_name("forwarded"),
            x_forwarded_for: M::static_name("x-forwarded-for"),
            origin: M::static_name("origin"),
            request_method: M::static_name("access-control-request-method"),
            grpc_timeout: M::static_name("grpc-timeout"),
            grpc_status: M::static_name("grpc-status"),
            grpc_message: M::static_name("grpc-message"),
            report: [
                M::static_name("host"),
                M::static_name("accept"),
                M::static_name("content-type"),
            ],
        }
    }
}

/// The request headers the pipeline reads, found in one pass over the map:
/// a request carries a handful of headers and the pipeline reads a dozen
/// names, most absent, so one walk comparing names (enum tags for the
/// standard ones) costs a fraction of a dozen hashed lookups (~2,000
/// instructions a request). Each slot holds the first value of its name, as
/// a map's `get` would; the trace-context headers keep every line.
pub(super) struct Wanted<'a, M: HeaderMapLike> {
    pub(super) forwarded_proto: Option<&'a [u8]>,
    pub(super) forwarded: Option<&'a [u8]>,
    pub(super) request_id: Option<&'a [u8]>,
    pub(super) trace: crate::trace::TraceHeaders<'a>,
    pub(super) content_length: Option<&'a [u8]>,
    pub(super) transfer_encoding: Option<&'a [u8]>,
    pub(super) origin: Option<&'a [u8]>,
    pub(super) request_method: Option<&'a [u8]>,
    pub(super) grpc_timeout: Option<&'a [u8]>,
    pub(super) user_agent: Option<&'a M::Value>,
    /// Host (the span's `server.address`), Accept, Content-Type (error reports).
    pub(super) report: [Option<&'a M::Value>; 3],
}

impl<'a, M: HeaderMapLike> Wanted<'a, M> {
    pub(super) fn scan(h: &'a M, n: &Names<M>, request_id: &M::Name) -> Self {
        let mut w = Self {
            forwarded_proto: None,
            forwarded: None,
            request_id: None,
            trace: crate::trace::TraceHeaders::default(),
            content_length: None,
            transfer_encoding: None,
            origin: None,
            request_method: None,
            grpc_timeout: None,
            user_agent: None,
            report: [None; 3],
        };
        for (name, value) in h.entries() {
            let bytes = M::bytes(value);
            // The request id's name is configurable: checked on its own.
            if name == request_id {
                w.request_id.get_or_insert(bytes);
            }
            let lines = if *name == n.traceparent {
                Some(&mut w.trace.traceparent)
            } else if *name == n.tracestate {
                Some(&mut w.trace.tracestate)
            } else if *name == n.baggage {
                Some(&mut w.trace.baggage)
            } else {
                None
            };
            if let Some(lines) = lines {
                lines.push(bytes);
                continue;
            }
            let slot = if *name == n.user_agent {
                w.user_agent.get_or_insert(value);
                continue;
            } else if *name == n.content_length {
                &mut w.content_length
            } else if *name == n.transfer_encoding {
                &mut w.transfer_encoding
            } else if *name == n.forwarded_proto {
                &mut w.forwarded_proto
            } else if *name == n.forwarded {
                &mut w.forwarded
            } else if *name == n.origin {
                &mut w.origin
            } else if *name == n.request_method {
                &mut w.request_method
            } else if *name == n.grpc_timeout {
                &mut w.grpc_timeout
            } else {
                if let Some(i) = n.report.iter().position(|r| r == name) {
                    w.report[i].get_or_insert(value);
                }
                continue;
            };
            slot.get_or_insert(bytes);
        }
        w
    }
}
