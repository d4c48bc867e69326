//! The sample manifests in testdata/, through the library and through the `weft-inject` binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use weft_inject::{INJECTOR_VERSION, InjectOptions, inject, parse_manifests, to_yaml};

const SHOP: &str = include_str!("../testdata/shop.yaml");
const SHOP_INJECTED: &str = include_str!("../testdata/shop.injected.yaml");
const BAD_ANNOTATION: &str = include_str!("../testdata/bad-annotation.yaml");

fn opts() -> InjectOptions {
    InjectOptions {
        proxy_image: "weft-proxy:test".to_owned(),
        ..InjectOptions::default()
    }
}

/// The golden file records version 0.1.0; the marker follows the crate version.
fn expected_shop() -> Vec<Value> {
    let text = SHOP_INJECTED.replace(
        "weft.io/injected: \"0.1.0\"",
        &format!("weft.io/injected: \"{INJECTOR_VERSION}\""),
    );
    parse_manifests(&text).unwrap()
}

fn run_cli(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-inject"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A CLI that refuses its arguments exits without reading: a broken pipe is its answer, not
    // a test failure (it raced on a loaded machine).
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

#[test]
fn shop_injects_as_recorded() {
    let out = inject(parse_manifests(SHOP).unwrap(), &opts()).unwrap();
    assert_eq!(out, expected_shop());
}

#[test]
fn injected_yaml_parses_back_with_types_kept() {
    let injected = inject(parse_manifests(SHOP).unwrap(), &opts()).unwrap();
    let yaml = to_yaml(&injected).unwrap();
    let back = parse_manifests(&yaml).unwrap();
    assert_eq!(back, injected);
    // Env values and args that look like numbers or booleans stay strings.
    let app = &back[1]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(app["env"][0]["value"], Value::String("8080".into()));
    assert_eq!(app["env"][1]["value"], Value::String("false".into()));
    let proxy = &back[1]["spec"]["template"]["spec"]["initContainers"][1];
    assert_eq!(proxy["env"][0]["value"], Value::String("3306".into()));
    assert_eq!(proxy["ports"][0]["containerPort"], Value::from(4143));
    let init_args = &back[1]["spec"]["template"]["spec"]["initContainers"][0]["args"];
    assert_eq!(init_args[2], Value::String("2102".into()));
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    let once = inject(parse_manifests(SHOP).unwrap(), &opts()).unwrap();
    let yaml = to_yaml(&once).unwrap();
    let twice = inject(parse_manifests(&yaml).unwrap(), &opts()).unwrap();
    assert_eq!(twice, once);
}

#[test]
fn cli_reads_stdin_and_writes_injected_yaml() {
    let out = run_cli(&["--proxy-image", "weft-proxy:test"], SHOP);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(parse_manifests(&stdout).unwrap(), expected_shop());
    // One line per workload on stderr, none about the Namespace, Service or ConfigMap.
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "injected Deployment shop/catalog\nskipped CronJob shop/reindex: weft.io/inject: disabled\n"
    );
}

#[test]
fn cli_reads_a_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/shop.yaml");
    let out = run_cli(&["-f", path, "--proxy-image", "weft-proxy:test"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(parse_manifests(&stdout).unwrap(), expected_shop());
}

#[test]
fn cli_default_image_is_the_settings_default() {
    let out = run_cli(&[], SHOP);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let docs = parse_manifests(&stdout).unwrap();
    assert_eq!(
        docs[1]["spec"]["template"]["spec"]["initContainers"][1]["image"],
        weft_settings::DEFAULT_PROXY_IMAGE
    );
}

#[test]
fn cli_bad_annotation_is_one_line_naming_the_object() {
    let out = run_cli(&[], BAD_ANNOTATION);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            r#"weft-inject: Deployment default/web: annotation "weft.io/detect-timeout" has a bad value: expected a duration"#
        ),
        "{stderr}"
    );
    assert!(stderr.contains(r#"got "soon""#), "{stderr}");
}

#[test]
fn cli_bad_yaml_and_missing_file_exit_1() {
    let out = run_cli(&[], "kind: [Pod\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("weft-inject: cannot read the manifests as YAML"),
        "{stderr}"
    );

    let out = run_cli(&["-f", "/nonexistent/weft.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/weft.yaml"), "{stderr}");
}

#[test]
fn cli_bad_image_option_exits_1() {
    let out = run_cli(&["--proxy-image", "Not An Image"], SHOP);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-image"));
}

const ALL_KINDS: &str = include_str!("../testdata/all-kinds.yaml");

#[test]
fn all_kinds_sample_sets_every_setting() {
    let docs = parse_manifests(ALL_KINDS).unwrap();
    let pod = &docs[0];
    for setting in weft_settings::SETTINGS {
        assert!(
            pod["metadata"]["annotations"]
                .get(setting.annotation_key())
                .is_some(),
            "testdata/all-kinds.yaml should set {}",
            setting.annotation_key()
        );
    }
}

#[test]
fn all_kinds_get_every_setting_applied() {
    let docs = inject(parse_manifests(ALL_KINDS).unwrap(), &opts()).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Pod",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob"
        ]
    );
    for doc in &docs {
        let pod = match doc["kind"].as_str().unwrap() {
            "Pod" => doc,
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"],
            _ => &doc["spec"]["template"],
        };
        let proxy = &pod["spec"]["containers"][0];
        let init = &pod["spec"]["initContainers"][0];
        assert_eq!(proxy["name"], "weft-proxy");
        assert_eq!(init["name"], "weft-init");
        assert_eq!(pod["spec"]["containers"][1]["name"], "app");
        // weft.io/proxy-image wins over the option.
        assert_eq!(proxy["image"], "ghcr.io/weft-mesh/weft-proxy:0.1.0");
        assert_eq!(init["image"], "ghcr.io/weft-mesh/weft-proxy:0.1.0");
        let env: Vec<(&str, &str)> = proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            // The annotation settings; the control-plane entries (after them) are tested apart.
            .take_while(|e| e["name"] != "WEFT_TRUST_DOMAIN")
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect();
        assert_eq!(
            env,
            [
                ("WEFT_OPAQUE_PORTS", "25,3306,8000-8010"),
                ("WEFT_DETECT_TIMEOUT", "500ms"),
                ("WEFT_DISCOVERY_WAIT", "500ms"),
                ("WEFT_DISCOVERY_IDLE_TIMEOUT", "5m"),
                ("WEFT_DNS_MIN_TTL", "1s"),
                ("WEFT_DNS_MAX_TTL", "5m"),
                ("WEFT_CONNECT_TIMEOUT", "2s"),
                ("WEFT_IDLE_TIMEOUT", "10m"),
                ("WEFT_STREAM_IDLE_TIMEOUT", "1m"),
                ("WEFT_HEADER_READ_TIMEOUT", "30s"),
                ("WEFT_SHUTDOWN_GRACE", "45s"),
                ("WEFT_LOG", "warn,weft=debug"),
                ("WEFT_LOG_FORMAT", "json"),
                ("WEFT_WORKER_THREADS", "2"),
                ("WEFT_TIMEOUT", "10s"),
                ("WEFT_PER_TRY_TIMEOUT", "2s"),
                ("WEFT_RETRY_ATTEMPTS", "3"),
                ("WEFT_RETRY_STATUSES", "502-504,429"),
                ("WEFT_RETRY_GRPC_CODES", "unavailable,resource-exhausted"),
                ("WEFT_RETRY_BUDGET", "0.1"),
                ("WEFT_RETRY_BUDGET_MIN_RPS", "5"),
                ("WEFT_RETRY_NON_IDEMPOTENT", "true"),
                ("WEFT_RETRY_BACKOFF", "50ms"),
                ("WEFT_MAX_PENDING", "100"),
                ("WEFT_MAX_IN_FLIGHT", "256"),
                ("WEFT_MAX_CONNECTIONS", "100"),
                ("WEFT_BREAKER_FAILURES", "3"),
                ("WEFT_BREAKER_EJECTION", "10s"),
                ("WEFT_BREAKER_MAX_EJECTED", "0.34"),
                ("WEFT_INBOUND_RATE_LIMIT", "100/s"),
                ("WEFT_INBOUND_RATE_LIMIT_PER_CLIENT", "600/m"),
                ("WEFT_INBOUND_POLICY", "strict"),
                (
                    "WEFT_INBOUND_AUTHZ",
                    "8080=spiffe://cluster.local/ns/shop/sa/web|spiffe://cluster.local/ns/ops/sa/*;9090=*",
                ),
            ]
        );
        assert_eq!(
            proxy["resources"],
            serde_json::json!({"limits": {"cpu": "500m", "memory": "128Mi"},
                               "requests": {"cpu": "100m", "memory": "32Mi"}})
        );
        assert_eq!(
            init["args"],
            serde_json::json!([
                "init",
                "--proxy-uid",
                "2102",
                "--inbound-port",
                "4143",
                "--outbound-port",
                "4140",
                "--skip-inbound-ports",
                "4191,9090",
                "--skip-outbound-ports",
                "443,5432",
                "--skip-outbound-cidrs",
                "169.254.169.254/32,fd00::/8"
            ])
        );
    }
}
