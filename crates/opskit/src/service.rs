//! The service's identity. A leaf: the OTel resource, the error reports and
//! the health output read it without depending on start-up (`ops`).

/// The service's identity, as shown in logs, traces and health output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `OTEL_SERVICE_NAME`, else the name given in code, else `unknown_service:<exe>`.
    pub name: String,
    /// The version given in code, else `unknown`.
    pub version: String,
    /// `OPSKIT_ENVIRONMENT`.
    pub environment: String,
}
