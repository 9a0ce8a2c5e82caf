use super::*;

#[test]
fn targets_follow_the_specific_variables_and_the_port() {
    let mut s = OtelSettings {
        endpoint: Some("http://collector:4318".into()),
        ..OtelSettings::default()
    };
    let t = s.traces_target().unwrap();
    assert_eq!(t.url, "http://collector:4318/v1/traces");
    assert_eq!(t.protocol, Protocol::HttpProtobuf);
    s.endpoint = Some("http://collector:4317".into());
    let t = s.traces_target().unwrap();
    assert_eq!(
        (t.url.as_str(), t.protocol),
        ("http://collector:4317", Protocol::Grpc)
    );
    s.protocol = Some(Protocol::HttpProtobuf);
    assert_eq!(
        s.metrics_target().unwrap().url,
        "http://collector:4317/v1/metrics"
    );
    s.traces_endpoint = Some("http://other:9999/custom".into());
    s.traces_timeout = Some(Duration::from_secs(1));
    let t = s.traces_target().unwrap();
    assert_eq!(t.url, "http://other:9999/custom");
    assert_eq!(t.timeout, Duration::from_secs(1));
    s.disabled = true;
    assert!(s.traces_target().is_none() && s.metrics_target().is_none());
}
