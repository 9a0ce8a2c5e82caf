//! One `cfg(otlp)` for "an OTLP transport is built" (feature `otlp-http` or
//! `otlp-grpc`), instead of repeating `any(...)` on every item.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(otlp)");
    if std::env::var_os("CARGO_FEATURE_OTLP_HTTP").is_some()
        || std::env::var_os("CARGO_FEATURE_OTLP_GRPC").is_some()
    {
        println!("cargo::rustc-cfg=otlp");
    }
}
