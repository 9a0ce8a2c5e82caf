//! `http.client.request.duration` (Prometheus
//! `http_client_request_duration_seconds`): one histogram observation per
//! outbound HTTP call (`opskit::client`), labelled `http_request_method`,
//! `server_address`, `server_port`, `http_response_status_code` and
//! `error_type` (the status code from 400 on, or the transport error's
//! class: `connect`, `timeout`, `_OTHER`).
//!
//! Server addresses are bounded: the first [`MAX_SERVER_ADDRESSES`] seen
//! get series of their own; calls to any other are recorded with
//! `server_address="_OTHER"` (and no `server_port`) and counted in
//! `opskit_metrics_overflow_total`. A service calls a handful of hosts;
//! a URL built from user input (a webhook, a crawler) must not create a
//! series per host.

use metrics::Histogram;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

/// `http.client.request.duration`, in seconds.
pub const CLIENT_REQUEST_DURATION: &str = "http_client_request_duration_seconds";

/// Distinct server addresses with series of their own; more are `_OTHER`.
pub const MAX_SERVER_ADDRESSES: usize = 100;

/// The label value of the addresses past the bound.
const OTHER: &str = "_OTHER";

/// One finished outbound call, as the metric sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientCall<'a> {
    /// The method as a static string (`_OTHER` for unknown ones).
    pub(crate) method: &'static str,
    /// `server.address`: the host of the URL.
    pub(crate) address: &'a str,
    /// `server.port`: the URL's port, or its scheme's.
    pub(crate) port: Option<u16>,
    /// The response status, when there was a response.
    pub(crate) status: Option<u16>,
    /// The transport error's class, when there was no response.
    pub(crate) error: Option<&'static str>,
    /// How long the call took.
    pub(crate) duration: Duration,
}

/// One label set of an address.
#[derive(Debug)]
struct Slot {
    method: &'static str,
    port: Option<u16>,
    status: Option<u16>,
    error: Option<&'static str>,
    histogram: Histogram,
    #[cfg(otlp)]
    attributes: Vec<opentelemetry::KeyValue>,
}

impl Slot {
    fn matches(&self, c: &ClientCall<'_>, port: Option<u16>) -> bool {
        self.method == c.method
            && self.port == port
            && self.status == c.status
            && self.error == c.error
    }
}

type Addresses = HashMap<Box<str>, Vec<Slot>, foldhash::fast::RandomState>;

/// The client histogram's series, by server address.
#[derive(Debug)]
struct ClientSeries {
    enabled: bool,
    addresses: RwLock<Addresses>,
    #[cfg(otlp)]
    otel: Option<opentelemetry::metrics::Histogram<f64>>,
}

static SERIES: OnceLock<ClientSeries> = OnceLock::new();

/// Sets how outbound calls are measured (once per process; `init` calls it;
/// without it calls are recorded into the `metrics` recorder only).
pub(crate) fn configure(
    enabled: bool,
    #[cfg(otlp)] otel: Option<opentelemetry::metrics::Histogram<f64>>,
) {
    let _ = SERIES.set(ClientSeries {
        enabled,
        addresses: RwLock::new(HashMap::default()),
        #[cfg(otlp)]
        otel,
    });
}

fn series() -> &'static ClientSeries {
    SERIES.get_or_init(|| ClientSeries {
        enabled: true,
        addresses: RwLock::new(HashMap::default()),
        #[cfg(otlp)]
        otel: None,
    })
}

/// Records a finished outbound call.
pub(crate) fn record(call: &ClientCall<'_>) {
    let series = series();
    if !series.enabled {
        return;
    }
    let seconds = call.duration.as_secs_f64();
    {
        let map = series.addresses.read().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = map.get(call.address) {
            if let Some(s) = slots.iter().find(|s| s.matches(call, call.port)) {
                s.record(seconds, series);
                return;
            }
        }
    }
    new_series(series, call, seconds);
}

impl Slot {
    fn record(&self, seconds: f64, _series: &ClientSeries) {
        self.histogram.record(seconds);
        #[cfg(otlp)]
        if let Some(h) = &_series.otel {
            h.record(seconds, &self.attributes);
        }
    }
}

#[cold]
fn new_series(series: &ClientSeries, call: &ClientCall<'_>, seconds: f64) {
    let mut map = series.addresses.write().unwrap_or_else(|e| e.into_inner());
    // The bound counts real addresses (`_OTHER` is not one of them).
    let known = map.contains_key(call.address);
    let overflow =
        !known && map.len() - usize::from(map.contains_key(OTHER)) >= MAX_SERVER_ADDRESSES;
    let (address, port) = if overflow {
        metrics::counter!(super::OVERFLOW).increment(1);
        (OTHER, None)
    } else {
        (call.address, call.port)
    };
    let slots = map.entry(Box::from(address)).or_default();
    if let Some(s) = slots.iter().find(|s| s.matches(call, port)) {
        s.record(seconds, series);
        return;
    }
    let error_type = crate::request::client_error_type(call.status, call.error);
    let mut labels = vec![
        metrics::Label::new("http_request_method", call.method),
        metrics::Label::new("server_address", address.to_owned()),
    ];
    if let Some(p) = port {
        labels.push(metrics::Label::new("server_port", p.to_string()));
    }
    if let Some(s) = call.status {
        labels.push(metrics::Label::new(
            "http_response_status_code",
            s.to_string(),
        ));
    }
    if let Some(e) = &error_type {
        labels.push(metrics::Label::new("error_type", e.clone()));
    }
    let slot = Slot {
        method: call.method,
        port,
        status: call.status,
        error: call.error,
        histogram: metrics::histogram!(CLIENT_REQUEST_DURATION, labels.iter()),
        // The same labels under their OpenTelemetry names and types.
        #[cfg(otlp)]
        attributes: {
            use opentelemetry::KeyValue;
            let mut a = vec![
                KeyValue::new("http.request.method", call.method),
                KeyValue::new("server.address", address.to_owned()),
            ];
            if let Some(p) = port {
                a.push(KeyValue::new("server.port", i64::from(p)));
            }
            if let Some(s) = call.status {
                a.push(KeyValue::new("http.response.status_code", i64::from(s)));
            }
            if let Some(e) = error_type {
                a.push(KeyValue::new("error.type", e));
            }
            a
        },
    };
    slot.record(seconds, series);
    slots.push(slot);
}

#[cfg(all(test, feature = "prometheus"))]
mod tests {
    use super::*;

    /// Past the address bound, calls share `_OTHER` (no port) and are
    /// counted as overflow; known addresses keep their series.
    #[test]
    fn server_addresses_are_bounded() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let local = ClientSeries {
                enabled: true,
                addresses: RwLock::new(HashMap::default()),
                #[cfg(otlp)]
                otel: None,
            };
            fn call(address: &str, status: Option<u16>) -> ClientCall<'_> {
                ClientCall {
                    method: "GET",
                    address,
                    port: Some(8080),
                    status,
                    error: None,
                    duration: Duration::from_millis(3),
                }
            }
            for i in 0..MAX_SERVER_ADDRESSES + 5 {
                let host = format!("h{i}.example");
                let c = call(&host, Some(200));
                new_series(&local, &c, 0.003);
            }
            new_series(&local, &call("h0.example", Some(503)), 0.003);
            new_series(
                &local,
                &ClientCall {
                    error: Some("connect"),
                    ..call("h1.example", None)
                },
                0.003,
            );
            let map = local.addresses.read().unwrap();
            assert_eq!(
                map.len(),
                MAX_SERVER_ADDRESSES + 1,
                "the bound, plus _OTHER"
            );
        });
        let text = handle.render();
        assert!(
            text.contains(r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="_OTHER",http_response_status_code="200"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="h0.example",server_port="8080",http_response_status_code="503",error_type="503"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_client_request_duration_seconds_count{http_request_method="GET",server_address="h1.example",server_port="8080",error_type="connect"} 1"#),
            "{text}"
        );
        assert!(text.contains("opskit_metrics_overflow_total 5"), "{text}");
    }
}
