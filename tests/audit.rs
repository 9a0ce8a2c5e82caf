//! `opskit-audit` against real services over loopback (both starters,
//! Debian's nginx, Prometheus), its `--manifest` audit on the starters'
//! deploy templates, and those templates through the validators a user's CI
//! would run (kubernetes-validate, hadolint, the Compose schema, promtool).
//! No container image is built here: there is no Docker daemon.

use opskit_conformance::{
    conformance, free_port, repo_root, run_audit, run_tool, venv_tool, Kind, Nginx, Prometheus,
    Starter,
};
use std::path::PathBuf;

conformance!(
    scores_full_marks_with_intrusive,
    headers_off_and_permissive_cors_fail_the_expected_items,
);

/// The settings a production deployment of the starter would have, as the
/// deploy templates set them: a rate limit, health details behind a token,
/// metrics on a port of their own, the proxy trusted for X-Forwarded-Proto.
fn scores_full_marks_with_intrusive(kind: Kind) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_RATE_LIMIT", "60/1m"),
            ("OPSKIT_HEALTH_TOKEN", "audit-health-token-0123"),
            ("OPSKIT_METRICS_ADDR", &metrics),
            ("OPSKIT_TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    );
    let run = run_audit(&[
        "--https",
        "--intrusive",
        "--format",
        "json",
        "--min-score",
        "100",
        "--metrics-url",
        &format!("http://{metrics}/metrics"),
        &format!("http://{}/", s.addr),
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["score"], 100, "{}", run.stdout);
    // Every check ran and passed; the starters set no cookie, and their
    // router's 404 has an empty body (problem+json is a plus, not scored).
    let not_passed: Vec<(String, String)> = run
        .statuses()
        .into_iter()
        .filter(|(_, s)| s != "pass")
        .collect();
    assert_eq!(
        not_passed,
        vec![
            ("cookies".to_owned(), "skip".to_owned()),
            ("problem-json".to_owned(), "skip".to_owned())
        ],
        "{}",
        run.stdout
    );
    assert!(run.why("ratelimit-burst").contains("Retry-After"));
    assert!(run.why("body-limit").contains("413"));
    assert!(run.why("traceparent").contains("continued"));
}

fn headers_off_and_permissive_cors_fail_the_expected_items(kind: Kind) {
    let s = Starter::spawn(
        kind,
        &[
            ("OPSKIT_SECURITY_HEADERS", "false"),
            ("OPSKIT_CORS_ORIGINS", "*"),
            ("OPSKIT_TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    );
    let run = run_audit(&[
        "--https",
        "--format",
        "json",
        "--min-score",
        "90",
        &format!("http://{}/", s.addr),
    ]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("under --min-score 90"),
        "{}",
        run.stderr
    );
    let expect = |id: &str, status: &str| {
        assert_eq!(run.status(id), status, "{id}: {}", run.why(id));
    };
    for id in [
        "csp",
        "nosniff",
        "framing",
        "hsts",
        "cors-origin",
        "cors-preflight",
    ] {
        expect(id, "fail");
    }
    for id in ["referrer-policy", "permissions-policy", "coop-corp"] {
        expect(id, "warn");
    }
    assert!(run
        .why("cors-origin")
        .contains("Access-Control-Allow-Origin: *"));
    // What the two settings do not touch still passes.
    for id in [
        "server-banner",
        "not-found",
        "request-id",
        "traceparent",
        "probe-liveness",
        "probe-readiness",
        "probe-startup",
        "metrics-format",
        "metrics-semconv",
        "metrics-cardinality",
    ] {
        expect(id, "pass");
    }
    // The defaults the full-marks run changes are named too.
    expect("health-details", "fail");
    expect("metrics-exposure", "warn");
    expect("ratelimit-headers", "fail");
    assert!(run.json()["observatory"]["grade"] == "F", "{}", run.stdout);
}

#[test]
fn nginx_default_site_shows_its_real_gaps() {
    let nginx = Nginx::start();
    let url = format!("http://{}/", nginx.addr);
    let run = run_audit(&["--intrusive", "--format", "json", &url]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let expect = |id: &str, status: &str| {
        assert_eq!(run.status(id), status, "{id}: {}", run.why(id));
    };
    // Missing headers.
    for id in ["csp", "nosniff", "framing"] {
        expect(id, "fail");
    }
    // The version banner, in the header and on the error pages.
    expect("server-banner", "fail");
    assert!(
        run.why("server-banner").contains("nginx/1."),
        "{}",
        run.why("server-banner")
    );
    expect("not-found", "fail");
    assert!(run.why("not-found").contains("nginx's version banner"));
    // No probes, no request id, no metrics, no rate limit.
    expect("probe-liveness", "fail");
    expect("probe-readiness", "fail");
    expect("probe-startup", "warn");
    expect("request-id", "fail");
    expect("metrics-format", "fail");
    expect("ratelimit-headers", "fail");
    expect("ratelimit-burst", "fail");
    // What nginx does right by default: client_max_body_size (1m) answers 413.
    expect("body-limit", "pass");
    expect("cors-origin", "pass");
    let score = run.json()["score"].as_u64().expect("score");
    assert!(score < 50, "{score}");
    // The human table names the same gaps.
    let table = run_audit(&[&url]);
    assert!(
        table.stdout.contains("FAIL  headers     server-banner  "),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("fix: remove Server versions"),
        "{}",
        table.stdout
    );
}

#[test]
fn an_https_url_is_audited_over_real_tls() {
    let nginx = Nginx::start_tls();
    let url = format!("https://{}/", nginx.addr);
    let ca = nginx.ca_pem();
    let run = run_audit(&[
        "--format",
        "json",
        "--ca-cert",
        ca.to_str().expect("utf-8"),
        &url,
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    // HTTPS is graded as such: nginx's default sends no HSTS.
    assert_eq!(run.status("hsts"), "fail", "{}", run.stdout);
    assert!(run.why("hsts").contains("over HTTPS"));
    assert_eq!(run.status("server-banner"), "fail");
    // The certificate is verified: without the test CA there is no answer.
    let untrusted = run_audit(&["--format", "json", &url]);
    assert_eq!(untrusted.code, Some(2), "{}", untrusted.stdout);
    assert!(
        untrusted.stderr.contains("no answer from"),
        "{}",
        untrusted.stderr
    );
}

#[test]
fn prometheus_server_gets_a_sensible_report() {
    // Prometheus' own HTTP server, scraping a starter so that it runs as usual.
    let s = Starter::spawn(Kind::Axum, &[]);
    let prom = Prometheus::start(s.addr, "/metrics");
    let run = run_audit(&[
        "--intrusive",
        "--format",
        "json",
        &format!("http://{}/", prom.addr),
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let expect = |id: &str, status: &str| {
        assert_eq!(run.status(id), status, "{id}: {}", run.why(id));
    };
    // Its probes sit at /-/healthy and /-/ready, and are found there.
    expect("probe-liveness", "pass");
    assert!(run.why("probe-liveness").contains("/-/healthy"));
    expect("probe-readiness", "pass");
    expect("probe-timing", "pass");
    // Its metrics parse, under its own names, on the public port.
    expect("metrics-format", "pass");
    expect("metrics-semconv", "warn");
    assert!(run
        .why("metrics-semconv")
        .contains("prometheus_http_request_duration_seconds"));
    expect("metrics-exposure", "warn");
    expect("metrics-cardinality", "pass");
    // Its 404 is plain text without a banner.
    expect("not-found", "pass");
    expect("csp", "fail");
    let score = run.json()["score"].as_u64().expect("score");
    assert!((20..90).contains(&score), "{score}: {}", run.stdout);
}

fn deploy_dir(starter: &str) -> PathBuf {
    repo_root().join("examples").join(starter).join("deploy")
}

const STARTERS: [&str; 2] = ["axum-starter", "actix-starter"];

#[test]
fn the_starters_manifests_pass_the_manifest_audit() {
    for starter in STARTERS {
        let path = deploy_dir(starter).join("k8s.yaml");
        let run = run_audit(&[
            "--manifest",
            path.to_str().expect("utf-8"),
            "--format",
            "json",
            "--min-score",
            "100",
        ]);
        assert_eq!(
            run.code,
            Some(0),
            "{starter}: {}\n{}",
            run.stdout,
            run.stderr
        );
        let statuses = run.statuses();
        assert_eq!(statuses.len(), 7, "{}", run.stdout);
        assert!(statuses.iter().all(|(_, s)| s == "pass"), "{}", run.stdout);
    }
}

#[test]
fn a_short_grace_period_and_one_probe_path_fail_with_both_reasons() {
    let good =
        std::fs::read_to_string(deploy_dir("axum-starter").join("k8s.yaml")).expect("k8s.yaml");
    let bad = good
        .replace(
            "terminationGracePeriodSeconds: 65",
            "terminationGracePeriodSeconds: 20",
        )
        .replace("path: /readyz", "path: /livez");
    assert_eq!(
        bad.matches("path: /livez").count(),
        2,
        "the copy was not changed"
    );
    let dir = std::env::temp_dir().join(format!("opskit-audit-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("k8s.yaml");
    std::fs::write(&path, bad).expect("write");
    let run = run_audit(&[
        "--manifest",
        path.to_str().expect("utf-8"),
        "--format",
        "json",
        "--min-score",
        "100",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let failed: Vec<String> = run
        .statuses()
        .into_iter()
        .filter(|(_, s)| s == "fail")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        failed,
        ["manifest-probes", "manifest-grace-period"],
        "{}",
        run.stdout
    );
    assert!(run.why("manifest-probes").contains("both probe /livez"));
    assert!(
        run.why("manifest-grace-period")
            .contains("terminationGracePeriodSeconds 20 < shutdown delay 5 s + drain 30 s"),
        "{}",
        run.why("manifest-grace-period")
    );
}

#[test]
fn the_deploy_templates_pass_their_validators() {
    let kubernetes_validate = venv_tool("kubernetes-validate");
    let hadolint = venv_tool("hadolint");
    let check_jsonschema = venv_tool("check-jsonschema");
    for starter in STARTERS {
        let dir = deploy_dir(starter);
        let file = |name: &str| dir.join(name).to_str().expect("utf-8").to_owned();
        // Kubernetes' schemas, unknown fields refused.
        run_tool(&kubernetes_validate, &["--strict", &file("k8s.yaml")])
            .unwrap_or_else(|e| panic!("{starter} k8s.yaml: {e}"));
        run_tool(&hadolint, &[&file("Dockerfile")])
            .unwrap_or_else(|e| panic!("{starter} Dockerfile: {e}"));
        // `docker compose config` needs the Compose plugin, absent here: the
        // Compose specification's own JSON schema instead.
        run_tool(
            &check_jsonschema,
            &[
                "--builtin-schema",
                "vendor.compose-spec",
                &file("compose.yaml"),
            ],
        )
        .unwrap_or_else(|e| panic!("{starter} compose.yaml: {e}"));
        // The Prometheus config with the rules compose mounts beside it.
        let tmp =
            std::env::temp_dir().join(format!("opskit-promcheck-{}-{starter}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("dir");
        std::fs::copy(dir.join("prometheus.yml"), tmp.join("prometheus.yml")).expect("copy");
        std::fs::copy(
            repo_root().join("docs/prometheus/alerts.yml"),
            tmp.join("alerts.yml"),
        )
        .expect("copy");
        let promtool = run_tool(
            std::path::Path::new("promtool"),
            &[
                "check",
                "config",
                tmp.join("prometheus.yml").to_str().expect("utf-8"),
            ],
        );
        let _ = std::fs::remove_dir_all(&tmp);
        let out = promtool.unwrap_or_else(|e| panic!("{starter} prometheus.yml: {e}"));
        assert!(out.contains("rules found"), "{out}");
        // What compose mounts from the repository exists (the rules and the dashboard).
        let compose = std::fs::read_to_string(dir.join("compose.yaml")).expect("compose.yaml");
        let mounts: Vec<&str> = compose
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .filter(|m| m.starts_with("./") || m.starts_with("../"))
            .collect();
        assert!(mounts.len() >= 5, "{mounts:?}");
        for m in mounts {
            let host = m.split(':').next().expect("host path");
            assert!(
                dir.join(host).exists(),
                "{starter}: compose mounts {host}, which is missing"
            );
        }
    }
}

#[test]
fn the_validators_refuse_what_is_wrong() {
    // Each validator, on a broken copy: proof that it checks something.
    let dir = std::env::temp_dir().join(format!("opskit-validators-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let src = deploy_dir("axum-starter");
    let k8s = std::fs::read_to_string(src.join("k8s.yaml"))
        .expect("k8s.yaml")
        .replace("readOnlyRootFilesystem", "readOnlyRootFilesystm");
    std::fs::write(dir.join("k8s.yaml"), k8s).expect("write");
    let docker = std::fs::read_to_string(src.join("Dockerfile"))
        .expect("Dockerfile")
        .replace("FROM rust:1.89-slim-bookworm", "FROM rust");
    std::fs::write(dir.join("Dockerfile"), docker).expect("write");
    let compose = std::fs::read_to_string(src.join("compose.yaml"))
        .expect("compose.yaml")
        .replace(
            "    ports:\n      - \"8080:8080\"",
            "    portz:\n      - \"8080:8080\"",
        );
    std::fs::write(dir.join("compose.yaml"), compose).expect("write");
    let path = |n: &str| dir.join(n).to_str().expect("utf-8").to_owned();
    let k = run_tool(
        &venv_tool("kubernetes-validate"),
        &["--strict", &path("k8s.yaml")],
    );
    let h = run_tool(&venv_tool("hadolint"), &[&path("Dockerfile")]);
    let c = run_tool(
        &venv_tool("check-jsonschema"),
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            &path("compose.yaml"),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(k.unwrap_err().contains("readOnlyRootFilesystm"));
    assert!(h.unwrap_err().contains("DL3006"));
    assert!(c.unwrap_err().contains("portz"));
}

#[test]
fn the_dockerfiles_build_and_run_the_starter_they_sit_in() {
    for starter in STARTERS {
        let dir = deploy_dir(starter);
        let docker = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
        assert!(docker.contains(&format!("cargo build --locked --profile perf -p {starter}")));
        assert!(docker.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{starter}\"]")));
        // Non-root, and the address variables opskit reads (docs/configuration.md).
        assert!(docker.contains("USER 65532:65532"));
        assert!(docker.contains("HOST=0.0.0.0") && docker.contains("PORT=8080"));
        let k8s = std::fs::read_to_string(dir.join("k8s.yaml")).expect("k8s.yaml");
        assert!(k8s.contains("containerPort: 8080") && k8s.contains("runAsUser: 65532"));
        assert!(k8s.contains(&format!("image: {starter}:")));
        assert!(dir.join("Dockerfile.dockerignore").exists());
    }
    // The variables the Dockerfile sets are opskit's own.
    for var in ["HOST", "PORT", "OPSKIT_METRICS_ADDR"] {
        assert!(opskit::config::VARS.iter().any(|v| v.name == var), "{var}");
    }
}
