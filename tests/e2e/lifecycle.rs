//! The pod lifecycle of meshed pods, as a user sees it in a cluster: the app starts only once its
//! proxy is ready, a meshed Job completes, the kubelet's HTTP and TCP probes reach the app under a
//! strict inbound policy (run from the node's namespace to the pod IP), and an app's calls during
//! its own shutdown succeed; for the native sidecar (the default) and the classic one
//! (`weft.io/native-sidecar: "false"`).

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_testbed::{PodPhase, Testbed, TestbedOptions};

use crate::support::*;

/// The echo server `server` on port 8080 (a named port `http`), with its Service.
fn server(extra_annotations: &str, probes: &str) -> String {
    let (py, echo) = (python(), fixture("http_echo.py"));
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: server
  labels: {{app: server}}
  annotations:
    weft.io/inject: enabled
{extra_annotations}
spec:
  containers:
  - name: app
    image: fixture
    command: ["{py}", "{echo}", "--port", "8080"]
    env: [{{name: POD_NAME, value: server}}]
    ports: [{{name: http, containerPort: 8080}}]
{probes}
---
apiVersion: v1
kind: Service
metadata: {{name: server}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
"#
    )
}

/// A meshed pod `client` running `script` with sh, `shape` its native-sidecar annotation.
fn client(shape: &str, script: &str, spec_extra: &str) -> String {
    let script = Value::String(script.to_string());
    format!(
        r#"
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  annotations:
    weft.io/inject: enabled
    weft.io/native-sidecar: "{shape}"
spec:
{spec_extra}
  containers:
  - name: app
    image: fixture
    command: [sh, -c, {script}]
"#
    )
}

fn up_or_panic(yaml: &str, opts: TestbedOptions) -> Testbed {
    Testbed::up(yaml, opts).unwrap_or_else(|e| panic!("testbed up failed: {e}\nmanifests:\n{yaml}"))
}

fn app_starts_after_its_proxy(shape: &str) {
    require(&[("curl", "curl")]);
    // At its very first instant the app asks its proxy's /ready and makes one call, no retries.
    let script = "echo \"proxy ready at app start: $(curl -s -o /dev/null -w '%{http_code}' \
                  http://127.0.0.1:4191/ready)\"; \
                  echo \"first call: $(curl -sS --max-time 10 http://server:8080/first 2>&1)\"; \
                  exec sleep 3600";
    let yaml = server("", "") + &client(shape, script, "");
    let tb = up_or_panic(&yaml, TestbedOptions::default());
    wait_for(
        Duration::from_secs(20),
        "the app to record its start",
        || logs(&tb, "client", "app").contains("first call:"),
    );
    let log = logs(&tb, "client", "app");
    assert!(
        log.contains("proxy ready at app start: 200"),
        "the app started before its proxy was ready ({shape}):\n{log}"
    );
    assert!(
        log.contains("first call: hello from server GET /first"),
        "the app's first outbound call failed ({shape}):\n{log}"
    );
}

#[test]
fn the_app_starts_only_once_its_native_sidecar_proxy_is_ready() {
    app_starts_after_its_proxy("true");
}

#[test]
fn the_app_starts_only_once_its_classic_sidecar_proxy_is_ready() {
    app_starts_after_its_proxy("false");
}

#[test]
fn a_meshed_job_completes_and_its_proxy_stops() {
    require(&[("curl", "curl")]);
    let job = r#"
---
apiVersion: batch/v1
kind: Job
metadata: {name: report}
spec:
  template:
    metadata:
      annotations: {weft.io/inject: enabled}
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: fixture
        command: [sh, -c, "curl -sS --fail --max-time 10 http://server:8080/report && echo job done"]
"#;
    let yaml = server("", "") + job;
    let mut tb = up_or_panic(&yaml, TestbedOptions::default());
    let pods = tb.pods_of("report");
    assert_eq!(pods.len(), 1, "the Job made one pod");
    let pod = pods[0].name.clone();
    let phase = tb
        .wait_completed(&pod, Duration::from_secs(30))
        .expect("the Job's pod");
    let log = logs(&tb, &pod, "app");
    assert_eq!(phase, PodPhase::Succeeded, "app log:\n{log}");
    assert!(log.contains("hello from server GET /report"), "{log}");
    assert!(log.contains("job done"), "{log}");
    let proxy = tb
        .wait_exit(&pod, "weft-proxy", Duration::from_secs(5))
        .expect("the Job pod's proxy");
    assert_eq!(
        proxy,
        Some(0),
        "the proxy did not stop cleanly once the Job's app exited:\n{}",
        logs(&tb, &pod, "weft-proxy")
    );
}

const STRICT: &str = "    weft.io/inbound-policy: strict";

#[test]
fn kubelet_probes_reach_the_app_under_strict_mtls_while_plaintext_stays_refused() {
    require(&[("curl", "curl")]);
    // A named port for the HTTP probe, a number for the TCP one.
    let probes = "    readinessProbe:\n      httpGet: {path: /ready-check, port: http}\n      \
                  periodSeconds: 1\n    livenessProbe:\n      tcpSocket: {port: 8080}\n    \
                  startupProbe:\n      httpGet: {path: /started, port: 8080}\n      \
                  failureThreshold: 30\n      periodSeconds: 1";
    let yaml = server(STRICT, probes);
    // `up` returns only once every probe passed, run from the node to the pod IP.
    let tb = up_or_panic(&yaml, TestbedOptions::default());
    let ip = tb.pod("server").expect("the server pod").ip;
    let app = logs(&tb, "server", "app");
    assert!(
        app.contains("/ready-check") && app.contains("/started"),
        "the app never saw the kubelet's HTTP probes:\n{app}"
    );
    // The node's own plaintext request to the app port is still refused.
    let out = tb
        .exec_node(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &format!("http://{ip}:8080/"),
        ])
        .expect("curl from the node");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !out.status.success() || code == "403",
        "plaintext from the node reached the app under strict mTLS: {code}"
    );
}

#[test]
fn a_failing_probe_of_a_broken_app_fails_up() {
    let probes = "    readinessProbe:\n      httpGet: {path: '/fault?fail_ratio=1', port: 8080}\n      \
                  periodSeconds: 1";
    let yaml = server(STRICT, probes);
    let opts = TestbedOptions {
        ready_timeout: Duration::from_secs(20),
        ..TestbedOptions::default()
    };
    let err = match Testbed::up(&yaml, opts) {
        Ok(_) => panic!("up succeeded although the app's readiness probe answers 503"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("pod server: container app"), "{err}");
    assert!(err.contains("readinessProbe failing"), "{err}");
    assert!(err.contains("503"), "{err}");
}

fn calls_during_shutdown_succeed(shape: &str) {
    require(&[("curl", "curl")]);
    // On SIGTERM the app waits a moment, then calls the server and exits.
    let script = "trap 'sleep 1; echo \"shutdown call: $(curl -sS --max-time 5 \
                  http://server:8080/bye 2>&1)\"; exit 0' TERM; \
                  echo started; while true; do sleep 0.1; done";
    let yaml = server("", "") + &client(shape, script, "  terminationGracePeriodSeconds: 15");
    let mut tb = up_or_panic(&yaml, TestbedOptions::default());
    wait_for(Duration::from_secs(10), "the app to start", || {
        logs(&tb, "client", "app").contains("started")
    });
    tb.terminate_pod("client")
        .expect("terminating the client pod");
    let log = logs(&tb, "client", "app");
    assert!(
        log.contains("shutdown call: hello from server GET /bye"),
        "the app's call during its shutdown failed ({shape}):\n{log}\nproxy log:\n{}",
        logs(&tb, "client", "weft-proxy")
    );
    assert_eq!(
        tb.wait_exit("client", "app", Duration::from_secs(1))
            .expect("the app"),
        Some(0)
    );
    assert_eq!(
        tb.wait_exit("client", "weft-proxy", Duration::from_secs(1))
            .expect("the proxy"),
        Some(0),
        "the proxy did not exit cleanly ({shape}):\n{}",
        logs(&tb, "client", "weft-proxy")
    );
}

#[test]
fn calls_during_shutdown_succeed_with_a_native_sidecar() {
    calls_during_shutdown_succeed("true");
}

#[test]
fn calls_during_shutdown_succeed_with_a_classic_sidecar() {
    calls_during_shutdown_succeed("false");
}

/// Polls `done` every 100 ms until it holds, failing the test after `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
