use serde_json::{Value, json};

use super::*;

fn opts() -> InjectOptions {
    InjectOptions {
        proxy_image: "weft-proxy:test".to_owned(),
        ..InjectOptions::default()
    }
}

fn pod_spec() -> Value {
    json!({"containers": [{"name": "app", "image": "app:1", "env": [{"name": "PORT", "value": "8080"}]}]})
}

fn template(annotations: Value) -> Value {
    json!({"metadata": {"labels": {"app": "web"}, "annotations": annotations}, "spec": pod_spec()})
}

fn workload(kind: &str, annotations: Value) -> Value {
    let spec = match kind {
        "Pod" => {
            return json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": annotations}, "spec": pod_spec()});
        }
        "CronJob" => json!({"schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": template(annotations)}}}),
        _ => json!({"replicas": 2, "template": template(annotations)}),
    };
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "web"}, "spec": spec})
}

fn template_of(doc: &Value) -> &Value {
    let path = pod_template_path(doc).unwrap();
    path.iter().fold(doc, |node, key| &node[*key])
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn inject_one_doc(doc: Value) -> Result<Value, InjectError> {
    Ok(inject(vec![doc], &opts())?.remove(0))
}

const KINDS: [&str; 7] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

#[test]
fn every_kind_gets_the_sidecar_in_its_pod_template() {
    for kind in KINDS {
        let out = inject_one_doc(workload(kind, json!({"weft.io/inject": "enabled"}))).unwrap();
        let pod = template_of(&out);
        assert_eq!(
            container_names(pod, "containers"),
            ["weft-proxy", "app"],
            "{kind}"
        );
        assert_eq!(
            container_names(pod, "initContainers"),
            ["weft-init"],
            "{kind}"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["weft.io/injected"], INJECTOR_VERSION,
            "{kind}"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["image"], "weft-proxy:test",
            "{kind}"
        );
        // The app's container is untouched.
        assert_eq!(
            pod["spec"]["containers"][1],
            pod_spec()["containers"][0],
            "{kind}"
        );
        assert_eq!(pod["metadata"]["labels"]["app"], "web", "{kind}");
    }
}

#[test]
fn unannotated_workloads_pass_through_unchanged() {
    for kind in KINDS {
        let doc = workload(kind, json!({"team": "shop"}));
        assert_eq!(inject_one_doc(doc.clone()).unwrap(), doc, "{kind}");
    }
}

#[test]
fn pod_without_metadata_passes_through() {
    let doc = json!({"kind": "Pod", "spec": pod_spec()});
    assert_eq!(inject_one_doc(doc.clone()).unwrap(), doc);
}

#[test]
fn disabled_pod_passes_through() {
    let doc = workload("Deployment", json!({"weft.io/inject": "disabled"}));
    assert_eq!(inject_one_doc(doc.clone()).unwrap(), doc);
}

#[test]
fn namespace_document_enables_its_pods() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "annotations": {"weft.io/inject": "enabled"}}});
    let mut in_shop = workload("Deployment", json!({}));
    in_shop["metadata"]["namespace"] = json!("shop");
    let elsewhere = workload("Deployment", json!({}));
    let out = inject(vec![ns.clone(), in_shop, elsewhere.clone()], &opts()).unwrap();
    assert_eq!(out[0], ns, "the Namespace itself passes through");
    assert_eq!(
        container_names(template_of(&out[1]), "containers"),
        ["weft-proxy", "app"]
    );
    assert_eq!(out[2], elsewhere, "default namespace is not enabled");
}

#[test]
fn namespace_option_enables_its_pods_and_pod_can_opt_out() {
    let mut options = opts();
    options.namespaces.insert(
        "default".to_owned(),
        [("weft.io/inject".to_owned(), "enabled".to_owned())].into(),
    );
    let meshed = workload("Pod", json!(null));
    let opted_out = workload("StatefulSet", json!({"weft.io/inject": "disabled"}));
    let out = inject(vec![meshed, opted_out.clone()], &options).unwrap();
    assert_eq!(
        container_names(&out[0], "containers"),
        ["weft-proxy", "app"]
    );
    assert_eq!(out[1], opted_out);
}

#[test]
fn namespace_settings_are_defaults_the_pod_overrides() {
    let ns = json!({"kind": "Namespace", "metadata": {"name": "default", "annotations": {
        "weft.io/inject": "enabled", "weft.io/detect-timeout": "2s", "weft.io/opaque-ports": "25"}}});
    let pod = workload("Pod", json!({"weft.io/detect-timeout": "300ms"}));
    let out = inject(vec![ns, pod], &opts()).unwrap();
    // The annotation settings come first; the control-plane entries follow them.
    let env = out[1]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(
        env[..2],
        [
            json!({"name": "WEFT_OPAQUE_PORTS", "value": "25"}),
            json!({"name": "WEFT_DETECT_TIMEOUT", "value": "300ms"})
        ]
    );
    assert_eq!(env[2]["name"], "WEFT_TRUST_DOMAIN");
}

#[test]
fn the_proxy_learns_the_control_plane_and_its_pod() {
    let options = InjectOptions {
        discovery_addr: Some("weft-discovery.weft.svc.cluster.local:8086".into()),
        trust_domain: "prod.example".into(),
        ..opts()
    };
    let out = inject(
        vec![workload("Deployment", json!({"weft.io/inject": "enabled"}))],
        &options,
    )
    .unwrap();
    let env = &out[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    let find = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
    };
    assert_eq!(
        find("WEFT_DISCOVERY_ADDR").unwrap()["value"],
        "weft-discovery.weft.svc.cluster.local:8086"
    );
    assert_eq!(find("WEFT_TRUST_DOMAIN").unwrap()["value"], "prod.example");
    assert!(
        find("WEFT_IDENTITY_ADDR").is_none(),
        "not given, so not set"
    );
    assert_eq!(
        find("WEFT_SERVICE_ACCOUNT").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    assert_eq!(
        find("WEFT_POD_NAMESPACE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
}

#[test]
fn injecting_twice_changes_nothing() {
    for kind in KINDS {
        let once = inject(
            vec![workload(
                kind,
                json!({"weft.io/inject": "enabled",
            "weft.io/skip-outbound-ports": "443"}),
            )],
            &opts(),
        )
        .unwrap();
        let twice = inject(once.clone(), &opts()).unwrap();
        assert_eq!(twice, once, "{kind}");
    }
}

#[test]
fn already_injected_pod_with_stale_annotations_passes_through() {
    let mut doc = inject_one_doc(workload("Pod", json!({"weft.io/inject": "enabled"}))).unwrap();
    doc["metadata"]["annotations"]["weft.io/not-a-setting"] = json!("x");
    assert_eq!(inject_one_doc(doc.clone()).unwrap(), doc);
}

#[test]
fn unknown_annotation_is_an_error_naming_object_and_annotation() {
    let doc = workload(
        "Deployment",
        json!({"weft.io/inject": "enabled", "weft.io/retries": "3"}),
    );
    let text = inject_one_doc(doc).unwrap_err().to_string();
    assert!(
        text.starts_with(r#"Deployment default/web: unknown annotation "weft.io/retries""#),
        "{text}"
    );
}

#[test]
fn bad_value_is_an_error_naming_object_annotation_value_and_expectation() {
    let mut doc = workload(
        "CronJob",
        json!({"weft.io/inject": "enabled", "weft.io/shutdown-grace": "-5s"}),
    );
    doc["metadata"]["namespace"] = json!("batch");
    let text = inject_one_doc(doc).unwrap_err().to_string();
    assert_eq!(
        text,
        r#"CronJob batch/web: annotation "weft.io/shutdown-grace" has a bad value: expected a duration such as "250ms", "10s", "2m" or "1h" (a bare integer means seconds), got "-5s" (negative durations are not allowed)"#
    );
}

#[test]
fn bad_inject_value_is_an_error() {
    let doc = workload("Job", json!({"weft.io/inject": "true"}));
    let text = inject_one_doc(doc).unwrap_err().to_string();
    assert!(text.starts_with(r#"Job default/web: annotation "weft.io/inject" has a bad value: expected "enabled" or "disabled", got "true""#), "{text}");
}

#[test]
fn annotations_of_unmeshed_pods_are_not_validated() {
    let doc = workload(
        "Deployment",
        json!({"weft.io/retries": "x", "weft.io/detect-timeout": "soon"}),
    );
    assert_eq!(inject_one_doc(doc.clone()).unwrap(), doc);
}

#[test]
fn non_workloads_pass_through() {
    let docs = vec![
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
            "annotations": {"weft.io/inject": "enabled", "weft.io/whatever": "x"}},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"port": "8080"}}),
        json!("a bare string"),
        json!([1, 2]),
    ];
    assert_eq!(inject(docs.clone(), &opts()).unwrap(), docs);
}

#[test]
fn existing_init_containers_run_after_weft_init() {
    let mut doc = workload("Pod", json!({"weft.io/inject": "enabled"}));
    doc["spec"]["initContainers"] = json!([{"name": "migrate", "image": "app:1"}]);
    let out = inject_one_doc(doc).unwrap();
    assert_eq!(
        container_names(&out, "initContainers"),
        ["weft-init", "migrate"]
    );
}

#[test]
fn proxy_image_annotation_overrides_the_option() {
    let doc = workload(
        "Pod",
        json!({"weft.io/inject": "enabled", "weft.io/proxy-image": "registry.local/weft:dev"}),
    );
    let out = inject_one_doc(doc).unwrap();
    assert_eq!(
        out["spec"]["containers"][0]["image"],
        "registry.local/weft:dev"
    );
    assert_eq!(
        out["spec"]["initContainers"][0]["image"],
        "registry.local/weft:dev"
    );
}

#[test]
fn default_options_use_the_default_image() {
    assert_eq!(
        InjectOptions::default().proxy_image,
        weft_settings::DEFAULT_PROXY_IMAGE
    );
}

#[test]
fn meshed_pod_without_containers_is_an_error() {
    let doc = json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {"weft.io/inject": "enabled"}}, "spec": {}});
    let text = inject_one_doc(doc).unwrap_err().to_string();
    assert_eq!(
        text,
        "Pod default/p: spec.containers of the pod is missing or not a list"
    );
}

#[test]
fn workload_without_pod_template_is_an_error() {
    let doc =
        json!({"kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "ops"}, "spec": {}});
    let text = inject_one_doc(doc).unwrap_err().to_string();
    assert_eq!(
        text,
        "DaemonSet ops/agent: has no spec.template (the pod template)"
    );
}

#[test]
fn with_an_identity_service_the_proxy_gets_its_token_and_anchors() {
    let meshed = || vec![workload("Deployment", json!({"weft.io/inject": "enabled"}))];
    let options = InjectOptions {
        identity_addr: Some("weft-identity.weft.svc.cluster.local:8080".into()),
        ..opts()
    };
    let out = inject(meshed(), &options).unwrap();
    let spec = &out[0]["spec"]["template"]["spec"];
    let proxy = &spec["containers"][0];
    let env_value = |name: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env_value("WEFT_IDENTITY_TOKEN_FILE").unwrap(),
        "/var/run/secrets/weft.io/identity/token"
    );
    assert_eq!(
        env_value("WEFT_TRUST_ANCHORS").unwrap(),
        "/var/run/secrets/weft.io/trust-anchors/ca.pem"
    );
    let volume_names: Vec<_> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volume_names, ["weft-identity-token", "weft-trust-anchors"]);
    assert_eq!(proxy["volumeMounts"].as_array().unwrap().len(), 2);
    // Injecting again leaves the pod as it is.
    assert_eq!(inject(out.clone(), &options).unwrap(), out);

    let without = inject(meshed(), &opts()).unwrap();
    let spec = &without[0]["spec"]["template"]["spec"];
    assert!(spec.get("volumes").is_none());
    assert!(spec["containers"][0].get("volumeMounts").is_none());
}
