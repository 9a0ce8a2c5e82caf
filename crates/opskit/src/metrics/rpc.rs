//! gRPC server metrics (OpenTelemetry RPC semantic conventions, v1.40):
//! `rpc.server.call.duration`, in seconds, labelled `rpc_system_name`
//! (`grpc`), `rpc_method` (`package.Service/Method`, `_OTHER` for methods
//! the server does not have), `rpc_response_status_code` (`OK`,
//! `INTERNAL`, …) and `error_type` (the status code, on server errors).
//! A gRPC call is counted here and not in the HTTP request histograms.

use metrics::{Counter, Histogram};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// `rpc.server.call.duration`, in seconds.
pub const CALL_DURATION: &str = "rpc_server_call_duration_seconds";

/// The series of `rpc_server_call_duration_seconds`, bounded: past
/// `max_series` label sets, calls go to one overflow series and are counted
/// in `opskit_metrics_overflow_total`.
/// A method's histograms, by status code (0–16).
type ByCode = [Option<Histogram>; 17];

/// The histograms by method.
type Methods = HashMap<Box<str>, ByCode, foldhash::fast::RandomState>;

#[derive(Debug)]
pub(super) struct RpcSeries {
    max_series: usize,
    /// By method (a `&str` lookup, no key built), then status code.
    series: RwLock<(Methods, usize)>,
    overflow: std::sync::OnceLock<(Histogram, Counter)>,
}

impl RpcSeries {
    pub(super) fn new(max_series: usize) -> Self {
        Self {
            max_series,
            series: RwLock::new((HashMap::default(), 0)),
            overflow: std::sync::OnceLock::new(),
        }
    }

    /// Records a finished call of `method` with status `code` (0–16).
    pub(super) fn record(&self, method: &str, code: u8, duration: Duration) {
        let seconds = duration.as_secs_f64();
        // A code outside the table is UNKNOWN (the pipeline parses it so).
        let code = if code > 16 {
            crate::grpc::UNKNOWN
        } else {
            code
        };
        {
            let map = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = map
                .0
                .get(method)
                .and_then(|c| c[usize::from(code)].as_ref())
            {
                h.record(seconds);
                return;
            }
        }
        self.new_series(method, code, seconds);
    }

    #[cold]
    fn new_series(&self, method: &str, code: u8, seconds: f64) {
        let mut guard = self.series.write().unwrap_or_else(|e| e.into_inner());
        let (map, count) = &mut *guard;
        if let Some(h) = map.get(method).and_then(|c| c[usize::from(code)].as_ref()) {
            h.record(seconds);
            return;
        }
        if *count >= self.max_series {
            drop(guard);
            let (h, counter) = self.overflow.get_or_init(|| {
                (
                    metrics::histogram!(CALL_DURATION, "otel_metric_overflow" => "true"),
                    metrics::counter!(super::OVERFLOW),
                )
            });
            h.record(seconds);
            counter.increment(1);
            return;
        }
        let name = crate::grpc::code_name(code);
        let h = match crate::grpc::is_server_error(code) {
            true => metrics::histogram!(
                CALL_DURATION,
                "rpc_system_name" => "grpc",
                "rpc_method" => method.to_owned(),
                "rpc_response_status_code" => name,
                "error_type" => name
            ),
            false => metrics::histogram!(
                CALL_DURATION,
                "rpc_system_name" => "grpc",
                "rpc_method" => method.to_owned(),
                "rpc_response_status_code" => name
            ),
        };
        h.record(seconds);
        map.entry(Box::from(method))
            .or_insert_with(Default::default)[usize::from(code)] = Some(h);
        *count += 1;
    }
}

#[cfg(all(test, feature = "prometheus"))]
mod tests {
    use super::*;

    #[test]
    fn calls_are_labelled_by_method_and_status_and_bounded() {
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = prometheus.handle();
        metrics::with_local_recorder(&prometheus, || {
            let rpc = RpcSeries::new(2);
            let ms = Duration::from_millis(3);
            rpc.record("users.v1.Users/GetUser", 0, ms);
            rpc.record("users.v1.Users/GetUser", 0, ms);
            rpc.record("users.v1.Users/Fail", 13, ms);
            rpc.record("users.v1.Users/Third", 5, ms);
        });
        let text = handle.render();
        assert!(
            text.contains(r#"rpc_server_call_duration_seconds_count{rpc_system_name="grpc",rpc_method="users.v1.Users/GetUser",rpc_response_status_code="OK"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"rpc_method="users.v1.Users/Fail",rpc_response_status_code="INTERNAL",error_type="INTERNAL"} 1"#),
            "{text}"
        );
        assert!(!text.contains("Third"), "{text}");
        assert!(
            text.contains(
                r#"rpc_server_call_duration_seconds_count{otel_metric_overflow="true"} 1"#
            ),
            "{text}"
        );
    }
}
