//! The injector's output validates against the Kubernetes 1.33 schema: the demo
//! (examples/local-mesh/mesh.yaml) and the real-world corpus, each injected by the
//! `weft-inject` binary and checked object by object with `kubernetes-validate` (PyPI, in the
//! fixtures' venv that tests/install-deps makes; its schemas ship in the package, so it runs
//! offline).

mod cli;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use cli::{CLUSTER_FLAGS, corpus, flatten, name_of, run_ok};
use serde_json::Value;
use weft_inject::{parse_manifests, to_yaml};

const KUBERNETES_VERSION: &str = "1.33.0";

/// `<repo>/.venv/bin/kubernetes-validate`, else the one on PATH; a missing tool fails the test.
fn kubernetes_validate() -> PathBuf {
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.venv/bin/kubernetes-validate"
    ));
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("kubernetes-validate"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "kubernetes-validate is missing: neither {} nor one on PATH; run tests/install-deps \
             (it installs tests/fixtures/requirements.txt into <repo>/.venv)",
            venv.display()
        )
    })
}

/// Validates every object (List items one by one: the List schema does not look inside its
/// items) in strict mode; returns (success, the tool's output).
fn validate(objects: &[Value]) -> (bool, String) {
    let yaml = to_yaml(objects).expect("writing the objects as YAML");
    let mut child = Command::new(kubernetes_validate())
        .args(["--kubernetes-version", KUBERNETES_VERSION, "--strict", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kubernetes-validate");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin is piped"),
        yaml.as_bytes(),
    )
    .expect("feeding kubernetes-validate");
    let out = child
        .wait_with_output()
        .expect("waiting for kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `kubernetes-validate`'s name for an object: "deployment/web".
fn validator_name(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or_default().to_lowercase(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Every object either passed, or (a custom resource, which has no schema here) was named as
/// having none.
fn assert_all_valid(what: &str, objects: &[Value]) {
    let (ok, report) = validate(objects);
    assert!(ok, "{what}: kubernetes-validate refused it:\n{report}");
    for object in objects {
        let passed = format!(
            "passed for resource {} against version 1.33",
            validator_name(object)
        );
        let no_schema = format!(
            "Couldn't find schema for kind {} with api version {}",
            object["kind"].as_str().unwrap_or_default(),
            object["apiVersion"].as_str().unwrap_or_default()
        );
        // Kubernetes' own groups are "v1", "apps/v1", "batch/v1" or "*.k8s.io/*"; any other
        // dotted group is a custom resource's.
        let custom = object["apiVersion"]
            .as_str()
            .is_some_and(|api| api.contains('.') && !api.contains(".k8s.io/"));
        assert!(
            report.contains(&passed) || (custom && report.contains(&no_schema)),
            "{what}: {} was not validated:\n{report}",
            name_of(object)
        );
    }
}

fn injected_objects(yaml: &str) -> Vec<Value> {
    let (stdout, _) = run_ok(&CLUSTER_FLAGS, yaml);
    flatten(&parse_manifests(&stdout).expect("the injector writes YAML"))
}

#[test]
fn the_demo_injected_validates_against_kubernetes_1_33() {
    let demo = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/local-mesh/mesh.yaml"
    ))
    .expect("reading examples/local-mesh/mesh.yaml");
    let objects = injected_objects(&demo);
    assert!(
        objects
            .iter()
            .any(|o| o.pointer("/spec/template/spec/initContainers/1/name")
                == Some(&Value::from("weft-proxy"))),
        "the demo should have meshed pods"
    );
    assert_all_valid("examples/local-mesh/mesh.yaml injected", &objects);
}

#[test]
fn the_real_world_corpus_injected_validates_against_kubernetes_1_33() {
    for (file, text) in corpus() {
        let objects = injected_objects(&text);
        assert_all_valid(&format!("testdata/real-world/{file} injected"), &objects);
        // Without a control plane (no identity volumes) too.
        let (stdout, _) = run_ok(&[], &text);
        let objects = flatten(&parse_manifests(&stdout).unwrap());
        assert_all_valid(
            &format!("testdata/real-world/{file} injected bare"),
            &objects,
        );
    }
}

#[test]
fn the_validator_refuses_a_broken_manifest() {
    let broken = parse_manifests(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: web:1
        ports: [{containerPort: "8080"}]
"#,
    )
    .unwrap();
    let (ok, report) = validate(&broken);
    assert!(!ok, "a string containerPort must not validate:\n{report}");
    assert!(
        report.contains("containerPort") && report.contains("is not of type 'integer'"),
        "{report}"
    );

    // An unknown field (what --strict is for), as a mistyped injection would add.
    let mut misspelled = broken;
    misspelled[0]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        Value::from(8080);
    misspelled[0]["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] =
        serde_json::json!({"httpGet": {"path": "/ready", "port": 4191}});
    let (ok, report) = validate(&misspelled);
    assert!(!ok, "an unknown field must not validate:\n{report}");
    assert!(report.contains("readinesProbe"), "{report}");
}

#[test]
fn the_classic_sidecar_shape_validates_against_kubernetes_1_33() {
    // Every setting on every workload kind, weft.io/native-sidecar: "false" among them.
    let objects = injected_objects(include_str!("../testdata/all-kinds.yaml"));
    assert!(
        objects.iter().any(|o| o
            .pointer("/spec/template/spec/containers/0/lifecycle/postStart")
            .is_some()),
        "the classic proxy should wait for readiness in a postStart hook"
    );
    assert_all_valid("testdata/all-kinds.yaml injected", &objects);
}
