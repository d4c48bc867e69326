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
    let api_version = match kind {
        "Job" | "CronJob" => "batch/v1",
        _ => "apps/v1",
    };
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "web"}, "spec": spec})
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
        assert_eq!(container_names(pod, "containers"), ["app"], "{kind}");
        assert_eq!(
            container_names(pod, "initContainers"),
            ["weft-init", "weft-proxy"],
            "{kind}"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["weft.io/injected"], INJECTOR_VERSION,
            "{kind}"
        );
        assert_eq!(
            pod["spec"]["initContainers"][1]["image"], "weft-proxy:test",
            "{kind}"
        );
        // The app's container is untouched.
        assert_eq!(
            pod["spec"]["containers"][0],
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
    let doc = json!({"apiVersion": "v1", "kind": "Pod", "spec": pod_spec()});
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
    assert_eq!(container_names(template_of(&out[1]), "containers"), ["app"]);
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
    assert_eq!(container_names(&out[0], "containers"), ["app"]);
    assert_eq!(out[1], opted_out);
}

#[test]
fn namespace_settings_are_defaults_the_pod_overrides() {
    let ns = json!({"kind": "Namespace", "metadata": {"name": "default", "annotations": {
        "weft.io/inject": "enabled", "weft.io/detect-timeout": "2s", "weft.io/opaque-ports": "25"}}});
    let pod = workload("Pod", json!({"weft.io/detect-timeout": "300ms"}));
    let out = inject(vec![ns, pod], &opts()).unwrap();
    // The annotation settings come first; the control-plane entries follow them.
    let env = out[1]["spec"]["initContainers"][1]["env"]
        .as_array()
        .unwrap();
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
    let env = &out[0]["spec"]["template"]["spec"]["initContainers"][1]["env"];
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
fn re_injecting_validates_the_annotations_again() {
    let mut doc = inject_one_doc(workload("Pod", json!({"weft.io/inject": "enabled"}))).unwrap();
    doc["metadata"]["annotations"]["weft.io/not-a-setting"] = json!("x");
    let text = inject_one_doc(doc).unwrap_err().to_string();
    assert!(
        text.starts_with(r#"Pod default/web: unknown annotation "weft.io/not-a-setting""#),
        "{text}"
    );
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
        ["weft-init", "weft-proxy", "migrate"]
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
        out["spec"]["initContainers"][1]["image"],
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
    let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"weft.io/inject": "enabled"}}, "spec": {}});
    let text = inject_one_doc(doc).unwrap_err().to_string();
    assert_eq!(
        text,
        "Pod default/p: spec.containers of the pod is missing or not a list"
    );
}

#[test]
fn workload_without_pod_template_is_an_error() {
    let doc = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ops"}, "spec": {}});
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
    let proxy = &spec["initContainers"][1];
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
    assert!(spec["initContainers"][1].get("volumeMounts").is_none());
}

fn outcomes(docs: Vec<Value>, options: &InjectOptions) -> Vec<String> {
    inject_with_outcomes(docs, options)
        .unwrap()
        .outcomes
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn items_of_a_list_are_injected() {
    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
        "items": [workload("Deployment", json!({"weft.io/inject": "enabled"})),
                  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}]});
    let out = inject_with_outcomes(vec![list.clone()], &opts()).unwrap();
    let items = out.docs[0]["items"].as_array().unwrap();
    assert_eq!(
        container_names(template_of(&items[0]), "containers"),
        ["app"]
    );
    assert_eq!(items[1], list["items"][1]);
    assert_eq!(out.docs[0]["metadata"], list["metadata"]);
    assert_eq!(
        out.outcomes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["injected Deployment default/web"]
    );
}

#[test]
fn a_namespace_inside_a_list_meshes_its_pods() {
    let mut pod = workload("Pod", json!(null));
    pod["metadata"]["namespace"] = json!("shop");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "shop", "annotations": {"weft.io/inject": "enabled"}}},
        pod]});
    let out = inject(vec![list], &opts()).unwrap();
    assert_eq!(container_names(&out[0]["items"][1], "containers"), ["app"]);
}

#[test]
fn a_custom_resource_called_job_passes_through_untouched() {
    let crd = json!({"apiVersion": "batch.example.com/v1alpha1", "kind": "Job",
        "metadata": {"name": "nightly", "annotations": {"weft.io/inject": "enabled",
                                                          "weft.io/bogus": "x"}},
        "spec": {"steps": [{"run": "backup"}]}});
    let out = inject_with_outcomes(vec![crd.clone()], &opts()).unwrap();
    assert_eq!(out.docs, [crd]);
    assert_eq!(
        out.outcomes[0].to_string(),
        "skipped Job default/nightly: batch.example.com/v1alpha1 is not a Kubernetes workload API, so it runs no pod to mesh"
    );
}

#[test]
fn host_network_pods_are_skipped_unmodified() {
    for kind in KINDS {
        let mut doc = workload(kind, json!({"weft.io/inject": "enabled"}));
        let path = pod_template_path(&doc).unwrap();
        let mut node = &mut doc;
        for key in path {
            node = &mut node[*key];
        }
        node["spec"]["hostNetwork"] = json!(true);
        let out = inject_with_outcomes(vec![doc.clone()], &opts()).unwrap();
        assert_eq!(out.docs, [doc], "{kind}");
        let line = out.outcomes[0].to_string();
        assert!(
            line.starts_with(&format!("skipped {kind} default/web: hostNetwork")),
            "{line}"
        );
    }
}

#[test]
fn every_workload_gets_one_summary_line() {
    let mut docs: Vec<Value> = KINDS
        .iter()
        .map(|kind| workload(kind, json!({"weft.io/inject": "enabled"})))
        .collect();
    docs.push(workload("Deployment", json!({})));
    docs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
    let lines = outcomes(docs, &opts());
    assert_eq!(
        lines,
        [
            "injected Pod default/web",
            "injected Deployment default/web",
            "injected StatefulSet default/web",
            "injected DaemonSet default/web",
            "injected ReplicaSet default/web",
            "injected Job default/web",
            "injected CronJob default/web",
            "skipped Deployment default/web: not meshed (no weft.io/inject: enabled on it or its namespace)",
        ]
    );
}

#[test]
fn re_injection_updates_an_old_injection_to_the_current_settings() {
    for kind in KINDS {
        let old = inject_one_doc(workload(
            kind,
            json!({"weft.io/inject": "enabled", "weft.io/skip-outbound-ports": "443"}),
        ))
        .unwrap();
        // The user changes an annotation and runs the injector with other flags.
        let mut edited = old.clone();
        {
            let path = pod_template_path(&edited).unwrap();
            let mut node = &mut edited;
            for key in path {
                node = &mut node[*key];
            }
            node["metadata"]["annotations"]["weft.io/skip-outbound-ports"] = json!("5432");
            node["metadata"]["annotations"]["weft.io/proxy-log-level"] = json!("debug");
        }
        let options = InjectOptions {
            proxy_image: "weft-proxy:new".into(),
            identity_addr: Some("weft-identity.weft.svc:8080".into()),
            ..opts()
        };
        let out = inject_with_outcomes(vec![edited.clone()], &options).unwrap();
        assert_eq!(
            out.outcomes[0].to_string(),
            format!(
                "updated {kind} default/web: its injection was replaced by one with the current settings"
            )
        );
        // The same as injecting the edited workload from scratch: one proxy, new settings.
        let never_injected = uninject(vec![edited.clone()]).unwrap().docs.remove(0);
        let fresh = inject(vec![never_injected], &options).unwrap();
        assert_eq!(out.docs, fresh, "{kind}");
        let pod = template_of(&out.docs[0]);
        assert_eq!(container_names(pod, "containers"), ["app"], "{kind}");
        assert_eq!(
            container_names(pod, "initContainers"),
            ["weft-init", "weft-proxy"],
            "{kind}"
        );
        assert_eq!(pod["spec"]["initContainers"][1]["image"], "weft-proxy:new");
        let args = pod["spec"]["initContainers"][0]["args"].as_array().unwrap();
        assert!(args.contains(&json!("5432")) && !args.contains(&json!("443")));
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 2);

        // Once more with the same settings: nothing changes.
        let again = inject_with_outcomes(out.docs.clone(), &options).unwrap();
        assert_eq!(again.docs, out.docs, "{kind}");
        assert_eq!(
            again.outcomes[0].to_string(),
            format!("unchanged {kind} default/web: already injected as asked")
        );
    }
}

#[test]
fn disabling_an_injected_pod_takes_the_injection_out() {
    let original = workload("Deployment", json!({"weft.io/inject": "enabled"}));
    let mut injected = inject_one_doc(original.clone()).unwrap();
    injected["spec"]["template"]["metadata"]["annotations"]["weft.io/inject"] = json!("disabled");
    let out = inject_with_outcomes(vec![injected], &opts()).unwrap();
    let mut expected = original;
    expected["spec"]["template"]["metadata"]["annotations"]["weft.io/inject"] = json!("disabled");
    assert_eq!(out.docs, [expected]);
    assert_eq!(
        out.outcomes[0].to_string(),
        "uninjected Deployment default/web: weft.io/inject: disabled"
    );
}

#[test]
fn an_injected_pod_whose_mesh_is_not_in_the_input_is_kept() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "annotations": {"weft.io/inject": "enabled"}}});
    let mut pod = workload("Pod", json!(null));
    pod["metadata"]["namespace"] = json!("shop");
    let injected = inject(vec![ns, pod], &opts()).unwrap().remove(1);
    // Injected again without the Namespace: nothing says whether to mesh it, so it stays.
    let out = inject_with_outcomes(vec![injected.clone()], &opts()).unwrap();
    assert_eq!(out.docs, [injected]);
    assert!(
        out.outcomes[0]
            .to_string()
            .starts_with("skipped Pod shop/web: already injected"),
        "{}",
        out.outcomes[0]
    );
}

#[test]
fn uninject_gives_back_what_was_injected() {
    let identity = InjectOptions {
        identity_addr: Some("weft-identity.weft.svc:8080".into()),
        discovery_addr: Some("weft-discovery.weft.svc:8086".into()),
        ..opts()
    };
    for options in [opts(), identity] {
        for kind in KINDS {
            let mut with_extras = workload(
                kind,
                json!({"weft.io/inject": "enabled", "weft.io/opaque-ports": "3306"}),
            );
            let path = pod_template_path(&with_extras).unwrap();
            let mut node = &mut with_extras;
            for key in path {
                node = &mut node[*key];
            }
            node["spec"]["initContainers"] = json!([{"name": "migrate", "image": "app:1"}]);
            node["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            for original in [
                workload(kind, json!({"weft.io/inject": "enabled"})),
                with_extras,
            ] {
                let injected = inject(vec![original.clone()], &options).unwrap();
                let back = uninject(injected).unwrap();
                assert_eq!(back.docs, [original], "{kind}");
                assert_eq!(
                    back.outcomes[0].to_string(),
                    format!("uninjected {kind} default/web: --uninject")
                );
            }
        }
    }
    // A pod whose template had no metadata at all.
    let bare = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": pod_spec()}}});
    let mut options = opts();
    options.namespaces.insert(
        "default".into(),
        [("weft.io/inject".to_owned(), "enabled".to_owned())].into(),
    );
    let injected = inject(vec![bare.clone()], &options).unwrap();
    assert_ne!(injected, std::slice::from_ref(&bare));
    assert_eq!(uninject(injected).unwrap().docs, [bare]);
}

#[test]
fn uninject_leaves_unmeshed_objects_alone() {
    let docs = vec![
        workload("Deployment", json!({"weft.io/inject": "enabled"})),
        json!({"apiVersion": "example.com/v1", "kind": "Job", "spec": {"containers": [{"name": "weft-proxy"}]}}),
    ];
    let out = uninject(docs.clone()).unwrap();
    assert_eq!(out.docs, docs);
    assert_eq!(
        out.outcomes[0].to_string(),
        "skipped Deployment default/web: not injected"
    );
}

#[test]
fn inject_object_takes_the_namespace_of_the_request() {
    let mut options = opts();
    options.namespaces.insert(
        "shop".into(),
        [("weft.io/inject".to_owned(), "enabled".to_owned())].into(),
    );
    // As an admission request carries a Pod: no metadata.namespace, the request names it.
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-"}, "spec": pod_spec()});
    let outcome = inject_object(&mut pod, Some("shop"), &options)
        .unwrap()
        .unwrap();
    assert_eq!(outcome.to_string(), "injected Pod shop/web-");
    assert_eq!(container_names(&pod, "containers"), ["app"]);
    assert!(pod["metadata"].get("namespace").is_none());
    // Again: a no-op.
    let before = pod.clone();
    let outcome = inject_object(&mut pod, Some("shop"), &options)
        .unwrap()
        .unwrap();
    assert_eq!(outcome.action, Action::Unchanged);
    assert_eq!(pod, before);
    // In another namespace it is not meshed; a Service is nothing to the injector.
    let mut other = json!({"apiVersion": "v1", "kind": "Pod", "spec": pod_spec()});
    let outcome = inject_object(&mut other, Some("ops"), &options)
        .unwrap()
        .unwrap();
    assert!(matches!(outcome.action, Action::Skipped(_)));
    let mut service = json!({"apiVersion": "v1", "kind": "Service"});
    assert_eq!(inject_object(&mut service, None, &options).unwrap(), None);
}

#[test]
fn the_proxy_is_a_native_sidecar_by_default() {
    let out = inject_one_doc(workload("Pod", json!({"weft.io/inject": "enabled"}))).unwrap();
    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(proxy["name"], "weft-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(
        proxy["startupProbe"],
        json!({"httpGet": {"path": "/ready", "port": 4191}, "periodSeconds": 1, "failureThreshold": 120})
    );
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/live");
    assert!(
        proxy["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "WEFT_SHUTDOWN_QUIET_PERIOD", "value": "0s"}))
    );
    assert!(proxy.get("lifecycle").is_none());
}

#[test]
fn native_sidecar_false_gives_the_classic_first_container_waiting_for_ready() {
    let doc = workload(
        "Deployment",
        json!({"weft.io/inject": "enabled", "weft.io/native-sidecar": "false"}),
    );
    let out = inject_one_doc(doc.clone()).unwrap();
    let pod = template_of(&out);
    assert_eq!(container_names(pod, "initContainers"), ["weft-init"]);
    assert_eq!(container_names(pod, "containers"), ["weft-proxy", "app"]);
    let proxy = &pod["spec"]["containers"][0];
    assert_eq!(
        proxy["lifecycle"],
        json!({"postStart": {"exec": {"command": ["weft-proxy", "wait-ready"]}}})
    );
    assert!(proxy.get("restartPolicy").is_none() && proxy.get("startupProbe").is_none());
    let quiet = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "WEFT_SHUTDOWN_QUIET_PERIOD");
    assert!(!quiet, "a classic sidecar keeps the default quiet period");
    // Re-injection is a no-op, uninjection the exact inverse.
    assert_eq!(inject(vec![out.clone()], &opts()).unwrap()[0], out);
    assert_eq!(uninject(vec![out]).unwrap().docs[0], doc);

    let bad = workload(
        "Pod",
        json!({"weft.io/inject": "enabled", "weft.io/native-sidecar": "no"}),
    );
    let err = inject_one_doc(bad).unwrap_err().to_string();
    assert!(err.contains("weft.io/native-sidecar"), "{err}");
}

#[test]
fn app_probes_point_at_the_proxy_and_uninjection_restores_them() {
    let mut doc = workload("Deployment", json!({"weft.io/inject": "enabled"}));
    doc["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"name": "http", "containerPort": 8080}]);
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5});
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] =
        json!({"exec": {"command": ["true"]}});
    let out = inject_one_doc(doc.clone()).unwrap();
    let spec = &template_of(&out)["spec"];
    assert_eq!(
        spec["containers"][0]["readinessProbe"],
        json!({"httpGet": {"path": "/app-health/app/readiness", "port": 4191}, "periodSeconds": 5})
    );
    assert_eq!(
        spec["containers"][0]["livenessProbe"],
        json!({"exec": {"command": ["true"]}})
    );
    let probes = spec["initContainers"][1]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "WEFT_APP_PROBES")
        .map(|e| e["value"].clone())
        .unwrap();
    assert_eq!(
        probes,
        r#"{"app/readiness":{"httpGet":{"path":"/healthz","port":8080,"portName":"http"},"periodSeconds":5}}"#
    );
    for shape in ["true", "false"] {
        let mut doc = doc.clone();
        doc["spec"]["template"]["metadata"]["annotations"]["weft.io/native-sidecar"] = json!(shape);
        let out = inject_one_doc(doc.clone()).unwrap();
        assert_eq!(
            inject(vec![out.clone()], &opts()).unwrap()[0],
            out,
            "{shape}"
        );
        assert_eq!(uninject(vec![out]).unwrap().docs[0], doc, "{shape}");
    }

    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] =
        json!("metrics");
    let err = inject_one_doc(doc).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "Deployment default/web: container app: readinessProbe.httpGet.port \"metrics\""
        ),
        "{err}"
    );
}
