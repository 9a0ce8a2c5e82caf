//! `--manifest FILE.yaml`: Kubernetes workloads checked against how an
//! opskit service behaves. Pure functions over the parsed documents.
//!
//! The container's environment (`env`, `envFrom` and `valueFrom` of the
//! ConfigMaps and Secrets in the same files) goes through opskit's own
//! settings reader, so the shutdown defaults, and the validation a pod
//! would fail at start-up, are the library's, never a copy.

use crate::report::Finding;
#[cfg(test)]
use crate::report::Status;
use opskit::config::{Env, Settings};
use std::collections::BTreeMap;
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

const A: &str = "manifest";

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: u64 = 30;

/// Parses every document of every file; a parse error names the file.
pub(crate) fn load(files: &[(String, String)]) -> Result<Vec<Yaml>, String> {
    let mut docs = Vec::new();
    for (name, text) in files {
        let parsed = YamlLoader::load_from_str(text).map_err(|e| format!("{name}: {e}"))?;
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    Ok(docs)
}

/// Key/value data of ConfigMaps and Secrets, by `kind/name`.
/// A Secret's `data` is base64: its values are not read, only its keys.
fn sources(docs: &[Yaml]) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        if kind != "ConfigMap" && kind != "Secret" {
            continue;
        }
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let mut vars = BTreeMap::new();
        for (field, readable) in [("data", kind == "ConfigMap"), ("stringData", true)] {
            if let Some(map) = d[field].as_hash() {
                for (k, v) in map {
                    if let Some(k) = k.as_str() {
                        let value = readable.then(|| scalar(v)).flatten();
                        vars.insert(k.to_owned(), value);
                    }
                }
            }
        }
        out.insert(format!("{kind}/{name}"), vars);
    }
    out
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value whose content the files do not show (a Secret's base64 `data`,
/// or a ConfigMap/Secret defined elsewhere): it is set, so count it as set
/// with a value of the right shape where one is needed to be valid.
fn stand_in(name: &str) -> Option<&'static str> {
    match name {
        "SENTRY_DSN" => Some("https://withheld@sentry.invalid/1"),
        "OTEL_EXPORTER_OTLP_ENDPOINT" | "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => {
            Some("http://withheld.invalid:4318")
        }
        _ => None,
    }
}

/// The container's environment as far as the files show it, and the
/// names whose values they do not show.
fn container_env(
    c: &Yaml,
    src: &BTreeMap<String, BTreeMap<String, Option<String>>>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut hidden = Vec::new();
    let mut put = |name: &str, value: Option<String>, env: &mut Vec<(String, String)>| {
        env.retain(|(n, _)| n != name);
        match value.or_else(|| stand_in(name).map(str::to_owned)) {
            Some(v) => env.push((name.to_owned(), v)),
            None => hidden.push(name.to_owned()),
        }
    };
    // envFrom first: explicit `env` entries win, as in Kubernetes.
    for from in c["envFrom"].as_vec().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        for (field, kind) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
            if let Some(name) = from[field]["name"].as_str() {
                for (k, v) in src.get(&format!("{kind}/{name}")).into_iter().flatten() {
                    put(&format!("{prefix}{k}"), v.clone(), &mut env);
                }
            }
        }
    }
    for e in c["env"].as_vec().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        if let Some(v) = scalar(&e["value"]) {
            put(name, Some(v), &mut env);
            continue;
        }
        let from = &e["valueFrom"];
        let mut value = None;
        for (field, kind) in [("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")] {
            let r = &from[field];
            if let (Some(n), Some(k)) = (r["name"].as_str(), r["key"].as_str()) {
                value = src
                    .get(&format!("{kind}/{n}"))
                    .and_then(|m| m.get(k))
                    .cloned()
                    .flatten();
            }
        }
        put(name, value, &mut env);
    }
    (env, hidden)
}

/// The worst case from SIGTERM to exit (docs/health.md, "Shutdown sequence"),
/// each step's bound, as opskit applies them.
pub(crate) fn shutdown_budget(s: &Settings) -> (Duration, Vec<String>) {
    let mut parts = vec![
        (s.shutdown_delay, "shutdown delay"),
        (s.shutdown_timeout, "drain"),
    ];
    let otel = &s.otel;
    if !otel.disabled && (otel.endpoint.is_some() || otel.traces_endpoint.is_some()) {
        parts.push((
            otel.traces_timeout.unwrap_or(otel.timeout),
            "last span export",
        ));
    }
    if !otel.disabled && (otel.endpoint.is_some() || otel.metrics_endpoint.is_some()) {
        // The SDK's periodic reader (0.33) waits 5 s, whatever it is told.
        parts.push((Duration::from_secs(5), "last metrics push"));
    }
    if s.sentry.dsn.is_some() {
        parts.push((
            s.sentry.timeout.max(Duration::from_secs(2)),
            "error-report flush",
        ));
    }
    // Actix only; the framework cannot be seen from a manifest, so counted.
    parts.push((Duration::from_secs(1), "Actix's last access lines"));
    // opskit::logging::FLUSH_AT_EXIT, for a stdout that takes no more lines.
    parts.push((Duration::from_secs(2), "log lines at exit"));
    let total = parts.iter().map(|(d, _)| *d).sum();
    let named = parts
        .iter()
        .map(|(d, what)| format!("{what} {}", secs(*d)))
        .collect();
    (total, named)
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// Every workload's findings.
pub(crate) fn audit(docs: &[Yaml]) -> Vec<Finding> {
    let src = sources(docs);
    let mut out = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let pod = match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                &d["spec"]["template"]["spec"]
            }
            "Pod" => &d["spec"],
            _ => continue,
        };
        let name = format!("{kind}/{}", d["metadata"]["name"].as_str().unwrap_or("?"));
        out.extend(workload(&name, pod, &src));
    }
    if out.is_empty() {
        out.push(Finding::fail(
            "manifest-workload",
            A,
            "no Deployment, StatefulSet, DaemonSet, Job or Pod in the files",
            "pass the file with the workload",
        ));
    }
    out
}

fn workload(
    name: &str,
    pod: &Yaml,
    src: &BTreeMap<String, BTreeMap<String, Option<String>>>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let containers = pod["containers"].as_vec().cloned().unwrap_or_default();
    let Some(c) = containers.first() else {
        out.push(Finding::fail(
            "manifest-workload",
            A,
            format!("{name}: no containers"),
            "add the service's container",
        ));
        return out;
    };
    let cname = format!("{name} ({})", c["name"].as_str().unwrap_or("?"));
    out.push(probes_distinct(&cname, c));
    out.push(startup_probe(&cname, c));
    let (env, hidden) = container_env(c, src);
    out.extend(grace_period(&cname, pod, &env, &hidden));
    out.push(non_root(&cname, pod, c));
    out.push(read_only_root(&cname, c));
    out.push(resources(&cname, c));
    out
}

fn probe_target(p: &Yaml) -> Option<String> {
    if p.is_badvalue() || p.is_null() {
        return None;
    }
    if let Some(path) = p["httpGet"]["path"].as_str() {
        let port = scalar(&p["httpGet"]["port"]).unwrap_or_default();
        return Some(format!("{path} (port {port})"));
    }
    if let Some(port) = scalar(&p["tcpSocket"]["port"]) {
        return Some(format!("tcp {port}"));
    }
    if let Some(cmd) = p["exec"]["command"].as_vec() {
        let words: Vec<String> = cmd.iter().filter_map(scalar).collect();
        return Some(format!("exec {}", words.join(" ")));
    }
    p["grpc"]["port"]
        .as_i64()
        .map(|port| format!("grpc {port}"))
}

pub(crate) fn probes_distinct(cname: &str, c: &Yaml) -> Finding {
    let fix =
        "liveness on /livez (the process only), readiness on /readyz (dependencies, shutdown)";
    let live = probe_target(&c["livenessProbe"]);
    let ready = probe_target(&c["readinessProbe"]);
    match (live, ready) {
        (Some(l), Some(r)) if l == r => Finding::fail(
            "manifest-probes",
            A,
            format!("{cname}: liveness and readiness both probe {l}: a failing dependency restarts the pod instead of taking it out of rotation"),
            fix,
        ),
        (Some(l), Some(r)) => Finding::pass("manifest-probes", A, format!("{cname}: liveness {l}, readiness {r}")),
        (l, r) => Finding::fail(
            "manifest-probes",
            A,
            format!(
                "{cname}: missing {}",
                [(l.is_none(), "livenessProbe"), (r.is_none(), "readinessProbe")]
                    .iter()
                    .filter(|(m, _)| *m)
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            fix,
        ),
    }
}

pub(crate) fn startup_probe(cname: &str, c: &Yaml) -> Finding {
    match probe_target(&c["startupProbe"]) {
        Some(t) => Finding::pass("manifest-startup-probe", A, format!("{cname}: startupProbe {t}")),
        None => Finding::warn(
            "manifest-startup-probe",
            A,
            format!("{cname}: no startupProbe: a slow start is killed by liveness"),
            "add a startupProbe on /startupz (periodSeconds × failureThreshold ≥ the slowest start)",
        ),
    }
}

pub(crate) fn grace_period(
    cname: &str,
    pod: &Yaml,
    env: &[(String, String)],
    hidden: &[String],
) -> Vec<Finding> {
    let settings = match Settings::from_env(&Env::from_pairs(env.iter().cloned())) {
        Ok(s) => s,
        Err(report) => {
            let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
            return vec![Finding::fail(
                "manifest-env",
                A,
                format!(
                    "{cname}: the container's env fails opskit's validation: {}",
                    problems.join("; ")
                ),
                "fix these variables (docs/configuration.md): the pod would exit at start-up",
            )];
        }
    };
    let mut out = Vec::new();
    let note = if hidden.is_empty() {
        String::new()
    } else {
        format!(" (values not in the files: {})", hidden.join(", "))
    };
    out.push(Finding::pass(
        "manifest-env",
        A,
        format!("{cname}: env passes opskit's validation{note}"),
    ));
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .map_or(DEFAULT_GRACE, |g| g.max(0).unsigned_abs());
    let grace_d = Duration::from_secs(grace);
    let needed = settings.shutdown_delay + settings.shutdown_timeout;
    let (budget, parts) = shutdown_budget(&settings);
    let fix = format!(
        "set terminationGracePeriodSeconds ≥ {} (docs/health.md), or lower OPSKIT_SHUTDOWN_DELAY/OPSKIT_SHUTDOWN_TIMEOUT",
        budget.as_secs_f64().ceil()
    );
    let f = if grace_d < needed {
        Finding::fail(
            "manifest-grace-period",
            A,
            format!(
                "{cname}: terminationGracePeriodSeconds {grace} < shutdown delay {} + drain {}: requests are killed mid-drain",
                secs(settings.shutdown_delay),
                secs(settings.shutdown_timeout)
            ),
            fix,
        )
    } else if grace_d < budget {
        Finding::warn(
            "manifest-grace-period",
            A,
            format!(
                "{cname}: terminationGracePeriodSeconds {grace} < worst case {} ({})",
                secs(budget),
                parts.join(" + ")
            ),
            fix,
        )
    } else {
        Finding::pass(
            "manifest-grace-period",
            A,
            format!(
                "{cname}: terminationGracePeriodSeconds {grace} ≥ worst case {} ({})",
                secs(budget),
                parts.join(" + ")
            ),
        )
    };
    out.push(f);
    out
}

fn truthy(v: &Yaml) -> Option<bool> {
    v.as_bool()
}

pub(crate) fn non_root(cname: &str, pod: &Yaml, c: &Yaml) -> Finding {
    // The container's securityContext overrides the pod's.
    let flag = truthy(&c["securityContext"]["runAsNonRoot"])
        .or_else(|| truthy(&pod["securityContext"]["runAsNonRoot"]));
    let uid = c["securityContext"]["runAsUser"]
        .as_i64()
        .or_else(|| pod["securityContext"]["runAsUser"].as_i64());
    let fix =
        "set securityContext.runAsNonRoot: true (and a non-zero runAsUser, or a USER in the image)";
    match (flag, uid) {
        (_, Some(0)) => Finding::fail(
            "manifest-non-root",
            A,
            format!("{cname}: runAsUser 0 (root)"),
            fix,
        ),
        (Some(true), _) => Finding::pass("manifest-non-root", A, format!("{cname}: runAsNonRoot")),
        _ => Finding::fail(
            "manifest-non-root",
            A,
            format!("{cname}: runAsNonRoot not set: the image may run as root"),
            fix,
        ),
    }
}

pub(crate) fn read_only_root(cname: &str, c: &Yaml) -> Finding {
    let sc = &c["securityContext"];
    let mut gaps = Vec::new();
    if truthy(&sc["readOnlyRootFilesystem"]) != Some(true) {
        gaps.push("readOnlyRootFilesystem");
    }
    if truthy(&sc["allowPrivilegeEscalation"]) != Some(false) {
        gaps.push("allowPrivilegeEscalation: false");
    }
    let drops_all = sc["capabilities"]["drop"]
        .as_vec()
        .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")));
    if !drops_all {
        gaps.push("capabilities drop ALL");
    }
    let fix = "securityContext: readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}";
    if gaps.contains(&"readOnlyRootFilesystem") {
        Finding::fail(
            "manifest-read-only-root",
            A,
            format!("{cname}: missing {}", gaps.join(", ")),
            fix,
        )
    } else if gaps.is_empty() {
        Finding::pass(
            "manifest-read-only-root",
            A,
            format!("{cname}: read-only root, no privilege escalation, no capabilities"),
        )
    } else {
        Finding::warn(
            "manifest-read-only-root",
            A,
            format!("{cname}: missing {}", gaps.join(", ")),
            fix,
        )
    }
}

pub(crate) fn resources(cname: &str, c: &Yaml) -> Finding {
    let r = &c["resources"];
    let has = |group: &str, what: &str| !r[group][what].is_badvalue() && !r[group][what].is_null();
    let mut missing = Vec::new();
    for (g, w) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        if !has(g, w) {
            missing.push(format!("{g}.{w}"));
        }
    }
    let fix = "set resources.requests (cpu, memory) and limits.memory";
    match missing.len() {
        0 => Finding::pass(
            "manifest-resources",
            A,
            format!("{cname}: requests and memory limit set"),
        ),
        3 => Finding::fail(
            "manifest-resources",
            A,
            format!(
                "{cname}: no resources: the scheduler cannot place it, nothing bounds its memory"
            ),
            fix,
        ),
        _ => Finding::warn(
            "manifest-resources",
            A,
            format!("{cname}: missing {}", missing.join(", ")),
            fix,
        ),
    }
}

/// Whether every finding passes (used by tests).
#[cfg(test)]
fn statuses(f: &[Finding]) -> Vec<(&'static str, Status)> {
    f.iter().map(|f| (f.id, f.status)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    const GOOD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-env}
data:
  OPSKIT_SHUTDOWN_DELAY: "5s"
  OPSKIT_SHUTDOWN_TIMEOUT: "30s"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 45
      securityContext: {runAsNonRoot: true, runAsUser: 10001}
      containers:
        - name: app
          envFrom: [{configMapRef: {name: app-env}}]
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {memory: 256Mi}
          startupProbe: {httpGet: {path: /startupz, port: http}}
          livenessProbe: {httpGet: {path: /livez, port: http}}
          readinessProbe: {httpGet: {path: /readyz, port: http}}
"#;

    fn run(yaml: &str) -> Vec<Finding> {
        audit(&load(&[("t.yaml".into(), yaml.into())]).unwrap_or_else(|e| panic!("{e}\n{yaml}")))
    }

    #[test]
    fn a_good_manifest_passes() {
        let f = run(GOOD);
        assert!(f.iter().all(|f| f.status == Pass), "{:?}", statuses(&f));
        let grace = f.iter().find(|f| f.id == "manifest-grace-period").unwrap();
        assert!(grace.why.contains("38 s"), "{}", grace.why);
    }

    #[test]
    fn short_grace_and_shared_probe_path_fail_with_both_reasons() {
        let bad = GOOD
            .replace(
                "terminationGracePeriodSeconds: 45",
                "terminationGracePeriodSeconds: 20",
            )
            .replace("path: /readyz", "path: /livez");
        let f = run(&bad);
        let failed: Vec<&Finding> = f.iter().filter(|f| f.status == Fail).collect();
        assert_eq!(failed.len(), 2, "{:?}", statuses(&f));
        assert!(
            failed[0].why.contains("both probe /livez"),
            "{}",
            failed[0].why
        );
        assert!(
            failed[1]
                .why
                .contains("20 < shutdown delay 5 s + drain 30 s"),
            "{}",
            failed[1].why
        );
    }

    #[test]
    fn env_is_read_from_env_and_config_maps_with_opskit_defaults() {
        // No env at all: opskit's defaults (5 s + 30 s) against Kubernetes' 30 s.
        let bare = GOOD.replace("      terminationGracePeriodSeconds: 45\n", "");
        let grace = run(&bare)
            .into_iter()
            .find(|f| f.id == "manifest-grace-period")
            .unwrap();
        assert_eq!(grace.status, Fail);
        // An explicit env entry wins over the ConfigMap.
        let short = GOOD.replace(
            "envFrom: [{configMapRef: {name: app-env}}]",
            "envFrom: [{configMapRef: {name: app-env}}]\n          env: [{name: OPSKIT_SHUTDOWN_TIMEOUT, value: 10s}]",
        ).replace("terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 20");
        let grace = run(&short)
            .into_iter()
            .find(|f| f.id == "manifest-grace-period")
            .unwrap();
        assert_eq!(grace.status, Pass, "{}", grace.why);
        // Exporters on: the worst case grows and 45 s only warns.
        let exporting = GOOD.replace(
            "OPSKIT_SHUTDOWN_TIMEOUT: \"30s\"",
            "OPSKIT_SHUTDOWN_TIMEOUT: \"30s\"\n  OTEL_EXPORTER_OTLP_ENDPOINT: http://collector:4318",
        ).replace("envFrom: [{configMapRef: {name: app-env}}]", "envFrom: [{configMapRef: {name: app-env}}, {secretRef: {name: app-secrets}}]");
        let with_secret = format!("{exporting}---\nkind: Secret\nmetadata: {{name: app-secrets}}\ndata: {{SENTRY_DSN: aGk=}}\n");
        let grace = run(&with_secret)
            .into_iter()
            .find(|f| f.id == "manifest-grace-period")
            .unwrap();
        assert_eq!(grace.status, Warn, "{}", grace.why);
        assert!(grace.why.contains("58 s"), "{}", grace.why);
        // An invalid value is what the pod would die of.
        let invalid = GOOD.replace("\"30s\"", "thirty");
        let env = run(&invalid)
            .into_iter()
            .find(|f| f.id == "manifest-env")
            .unwrap();
        assert_eq!(env.status, Fail);
        assert!(env.why.contains("OPSKIT_SHUTDOWN_TIMEOUT"), "{}", env.why);
    }

    #[test]
    fn security_context_and_resources() {
        let root = GOOD.replace("runAsNonRoot: true, runAsUser: 10001", "runAsUser: 0");
        let f = run(&root);
        assert_eq!(
            f.iter()
                .find(|f| f.id == "manifest-non-root")
                .unwrap()
                .status,
            Fail
        );
        let writable = GOOD.replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
        );
        assert_eq!(
            run(&writable)
                .iter()
                .find(|f| f.id == "manifest-read-only-root")
                .unwrap()
                .status,
            Fail
        );
        let no_res = GOOD
            .replace("requests: {cpu: 100m, memory: 64Mi}", "")
            .replace("limits: {memory: 256Mi}", "");
        assert_eq!(
            run(&no_res)
                .iter()
                .find(|f| f.id == "manifest-resources")
                .unwrap()
                .status,
            Fail
        );
        let no_startup = GOOD.replace("startupProbe: {httpGet: {path: /startupz, port: http}}", "");
        assert_eq!(
            run(&no_startup)
                .iter()
                .find(|f| f.id == "manifest-startup-probe")
                .unwrap()
                .status,
            Warn
        );
        assert_eq!(run("kind: Service\nmetadata: {name: x}\n")[0].status, Fail);
        assert!(load(&[("bad.yaml".into(), "a: [".into())])
            .unwrap_err()
            .starts_with("bad.yaml"));
    }

    #[test]
    fn every_check_is_documented() {
        let doc = include_str!("../../../docs/audit.md");
        let mut ids: Vec<&str> = run(GOOD).iter().map(|f| f.id).collect();
        ids.push(run("kind: Service\n")[0].id);
        assert_eq!(ids.len(), 8);
        for id in ids {
            assert!(
                doc.contains(&format!("| `{id}` |")),
                "{id} is not in docs/audit.md"
            );
        }
    }
}
