//! The real weft-injector over HTTPS, reviewing AdmissionReview v1 objects as the API server
//! sends them; every patched pod must equal what weft-inject writes for the same pod.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{FakeApi, ScratchDir, Webhook, admission_review, apply, recorded};
use weft_inject::{InjectOptions, inject, parse_manifests};

/// The options the CLI gets in `cli_output`, as flags of the webhook.
const CONTROL_PLANE_ARGS: &[&str] = &[
    "--proxy-image",
    "registry.example/weft-proxy:test",
    "--discovery-addr",
    "weft-discovery.weft.svc:8086",
    "--identity-addr",
    "weft-identity.weft.svc:8080",
    "--trust-domain",
    "example.org",
];

fn start_without_api() -> Webhook {
    let mut args = vec!["--namespace-lookup", "off"];
    args.extend_from_slice(CONTROL_PLANE_ARGS);
    Webhook::start(&args, &[])
}

/// What `weft-inject --proxy-image ... --trust-domain example.org` writes for `docs` (the CLI
/// parses its input with parse_manifests and injects with these options).
fn cli_output(docs: &[Value]) -> Vec<Value> {
    let input: Vec<String> = docs.iter().map(Value::to_string).collect();
    let parsed = parse_manifests(&input.join("\n---\n")).expect("weft-inject reads the input");
    let options = InjectOptions {
        proxy_image: "registry.example/weft-proxy:test".to_owned(),
        discovery_addr: Some("weft-discovery.weft.svc:8086".to_owned()),
        identity_addr: Some("weft-identity.weft.svc:8080".to_owned()),
        trust_domain: "example.org".to_owned(),
        ..InjectOptions::default()
    };
    inject(parsed, &options).expect("weft-inject injects the input")
}

fn operations(response: &Value) -> Vec<Value> {
    let encoded = response["patch"].as_str().expect("a patch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("a JSON array of operations")
}

fn container_names(pod: &Value) -> Vec<&str> {
    names_in(pod, "containers")
}

fn names_in<'a>(pod: &'a Value, list: &str) -> Vec<&'a str> {
    pod["spec"][list]
        .as_array()
        .map(|items| items.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

fn without_annotation(mut pod: Value, key: &str) -> Value {
    if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
        annotations.remove(key);
    }
    pod
}

#[tokio::test]
async fn meshed_pod_is_patched_into_exactly_what_weft_inject_writes() {
    let webhook = start_without_api();
    let pod = recorded("pod-catalog.json");
    let response = webhook
        .review(&admission_review("7c1e0f3a-1", "CREATE", "shop", &pod))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    assert!(response.get("warnings").is_none(), "{response}");

    let patched = apply(&response, &pod);
    let expected = cli_output(std::slice::from_ref(&pod)).remove(0);
    assert_eq!(patched, expected);
    // The proxy is a native sidecar: an init container right after weft-init.
    assert_eq!(container_names(&patched), ["catalog"]);
    assert_eq!(
        names_in(&patched, "initContainers"),
        ["weft-init", "weft-proxy"]
    );
    // The patch adds the injector's parts; the user's containers and volumes are not rewritten.
    let ops = operations(&response);
    assert!(ops.iter().all(|op| op["op"] == "add"), "{ops:#?}");
    assert!(
        ops.iter().any(
            |op| op["path"] == "/spec/initContainers" && op["value"][1]["name"] == "weft-proxy"
        ),
        "{ops:#?}"
    );
    assert!(webhook.logged("injected"), "{}", webhook.log());
}

#[tokio::test]
async fn injected_pod_reviewed_again_is_allowed_without_a_patch() {
    let webhook = start_without_api();
    let pod = recorded("pod-catalog.json");
    let first = webhook
        .review(&admission_review("7c1e0f3a-2", "CREATE", "shop", &pod))
        .await;
    let injected = apply(&first, &pod);
    assert_eq!(
        names_in(&injected, "initContainers"),
        ["weft-init", "weft-proxy"]
    );

    let again = webhook
        .review(&admission_review("7c1e0f3a-3", "CREATE", "shop", &injected))
        .await;
    assert_eq!(again["allowed"], true, "{again}");
    assert!(again.get("patch").is_none(), "{again}");
    assert!(again.get("patchType").is_none(), "{again}");
    assert!(again.get("warnings").is_none(), "{again}");
}

#[tokio::test]
async fn pods_not_meshed_and_updates_are_allowed_without_a_patch() {
    let webhook = start_without_api();
    let pod = recorded("pod-catalog.json");
    let plain = without_annotation(pod.clone(), "weft.io/inject");
    let response = webhook
        .review(&admission_review("7c1e0f3a-4", "CREATE", "shop", &plain))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");

    let mut disabled = pod.clone();
    disabled["metadata"]["annotations"]["weft.io/inject"] = json!("disabled");
    let response = webhook
        .review(&admission_review("7c1e0f3a-5", "CREATE", "shop", &disabled))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");

    // Containers of a running pod cannot change: an UPDATE is not the injector's business.
    let response = webhook
        .review(&admission_review("7c1e0f3a-6", "UPDATE", "shop", &pod))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
}

#[tokio::test]
async fn pod_without_a_namespace_in_its_metadata_takes_the_requests() {
    let webhook = start_without_api();
    let mut pod = recorded("pod-catalog.json");
    let with_namespace = pod.clone();
    pod["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    let response = webhook
        .review(&admission_review("7c1e0f3a-7", "CREATE", "shop", &pod))
        .await;
    let mut patched = apply(&response, &pod);
    assert!(patched["metadata"].get("namespace").is_none(), "{patched}");
    patched["metadata"]["namespace"] = json!("shop");
    let mut expected = cli_output(&[with_namespace]).remove(0);
    // Same members, whatever the position the namespace went in at.
    expected["metadata"]["namespace"] = json!("shop");
    assert_eq!(patched, expected);
}

#[tokio::test]
async fn bad_weft_annotation_is_denied_naming_it() {
    let webhook = start_without_api();
    let mut pod = recorded("pod-catalog.json");
    pod["metadata"]["annotations"]["weft.io/timeout"] = json!("soon");
    let response = webhook
        .review(&admission_review("7c1e0f3a-8", "CREATE", "shop", &pod))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    let message = response["status"]["message"].as_str().expect("a message");
    assert!(message.contains("weft.io/timeout"), "{message}");
    assert!(message.contains("soon"), "{message}");
    assert!(message.contains("Pod shop/catalog-6d8f7c9b5-"), "{message}");

    // Unknown weft.io/ annotations too, as weft-inject refuses them.
    let mut pod = recorded("pod-catalog.json");
    pod["metadata"]["annotations"]["weft.io/timout"] = json!("5s");
    let response = webhook
        .review(&admission_review("7c1e0f3a-9", "CREATE", "shop", &pod))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().expect("a message");
    assert!(message.contains("weft.io/timout"), "{message}");
}

#[tokio::test]
async fn malformed_reviews_are_400_with_the_reason() {
    let webhook = start_without_api();
    let cases: &[(&[u8], &str)] = &[
        (b"not json at all", "not JSON"),
        (
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}"#,
            "admissionReviewVersions",
        ),
        (
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            "has no request",
        ),
        (
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}"#,
            "malformed",
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = webhook.send(Method::POST, "/inject", body.to_vec()).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(reason), "expected {reason:?} in {text:?}");
    }
    // Still serving.
    let (status, _) = webhook.send(Method::GET, "/ready", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn probe_paths_answer_and_others_do_not() {
    let webhook = start_without_api();
    let (status, body) = webhook.send(Method::GET, "/ready", Vec::new()).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ready\n"[..]));
    let (status, _) = webhook.send(Method::GET, "/live", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = webhook.send(Method::GET, "/inject", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = webhook.send(Method::POST, "/mutate", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reviews_over_http2_are_answered_alike() {
    let webhook = start_without_api();
    let pod = recorded("pod-catalog.json");
    let review = admission_review("7c1e0f3a-13", "CREATE", "shop", &pod);
    let client = support::HttpsClient {
        addr: webhook.addr,
        ca_pem: webhook.ca_pem.clone(),
        http2: true,
    };
    let body = serde_json::to_vec(&review).expect("JSON");
    let (status, answer) = client
        .try_send(Method::POST, "/inject", body)
        .await
        .expect("an HTTP/2 exchange");
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&answer).expect("JSON");
    let response = &answer["response"];
    assert_eq!(response["uid"], "7c1e0f3a-13");
    let expected = cli_output(std::slice::from_ref(&pod)).remove(0);
    assert_eq!(apply(response, &pod), expected);
}

#[test]
fn sigterm_stops_the_injector_promptly_and_cleanly() {
    let mut webhook = start_without_api();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &webhook.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = webhook.wait_exit(Duration::from_secs(15));
    assert!(exit.success(), "{exit:?}\nlog:\n{}", webhook.log());
    assert!(webhook.logged("weft-injector stopped"), "{}", webhook.log());
}

const NAMESPACE_PATH: &str = "/api/v1/namespaces/shop";
const CONFIGURATION_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-injector";

#[tokio::test]
async fn namespace_annotations_come_from_the_api_and_the_ca_bundle_is_patched_in() {
    let api = FakeApi::start(BTreeMap::from([
        (NAMESPACE_PATH.to_owned(), recorded("namespace-shop.json")),
        (
            CONFIGURATION_PATH.to_owned(),
            recorded("mutating-webhook-configuration.json"),
        ),
    ]))
    .await;
    let kubeconfig = api.kubeconfig.to_string_lossy().into_owned();
    let mut args = vec![
        "--namespace-lookup",
        "api",
        "--patch-webhook-config",
        "weft-injector",
    ];
    args.extend_from_slice(CONTROL_PLANE_ARGS);
    let webhook = Webhook::start(&args, &[("KUBECONFIG", kubeconfig.as_str())]);

    // Meshed by its namespace alone, with the namespace's default log format.
    let pod = without_annotation(recorded("pod-catalog.json"), "weft.io/inject");
    let response = webhook
        .review(&admission_review("7c1e0f3a-10", "CREATE", "shop", &pod))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let patched = apply(&response, &pod);
    let expected = cli_output(&[recorded("namespace-shop.json"), pod.clone()]).remove(1);
    assert_eq!(patched, expected);
    let proxy_env = &patched["spec"]["initContainers"][1]["env"];
    assert!(
        proxy_env
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "WEFT_LOG_FORMAT" && e["value"] == "json"),
        "{proxy_env}"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.method == Method::GET && r.path == NAMESPACE_PATH),
        "{:?}",
        api.requests()
    );

    // The caBundle: the CA the injector wrote out, set with a JSON patch.
    let deadline = Instant::now() + Duration::from_secs(15);
    let bundle = loop {
        let configuration = api.objects.lock().expect("objects")[CONFIGURATION_PATH].clone();
        if let Some(bundle) = configuration["webhooks"][0]["clientConfig"]["caBundle"].as_str() {
            break bundle.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "caBundle not patched in; log:\n{}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .expect("base64");
    assert_eq!(String::from_utf8_lossy(&decoded), webhook.ca_pem);
    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == Method::PATCH && r.path == CONFIGURATION_PATH)
        .expect("a PATCH of the configuration");
    assert_eq!(patch.content_type, "application/json-patch+json");
    // Guarded by the webhook's name, so a reordered list fails instead of patching another.
    let ops: Value = serde_json::from_slice(&patch.body).expect("a JSON patch");
    assert_eq!(
        ops[0],
        json!({"op": "test", "path": "/webhooks/0/name", "value": "inject.weft.io"})
    );
}

#[tokio::test]
async fn unreadable_namespace_admits_the_pod_unchanged_with_a_warning() {
    // The API knows no namespace "gone": the injector's failure, not the user's.
    let api = FakeApi::start(BTreeMap::new()).await;
    let kubeconfig = api.kubeconfig.to_string_lossy().into_owned();
    let webhook = Webhook::start(
        &["--namespace-lookup", "api"],
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    let mut pod = recorded("pod-catalog.json");
    pod["metadata"]["namespace"] = json!("gone");
    let response = webhook
        .review(&admission_review("7c1e0f3a-11", "CREATE", "gone", &pod))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().expect("a warning");
    assert!(warning.contains("Namespace gone"), "{warning}");
    assert!(
        warning.contains("admitted without the Weft sidecar"),
        "{warning}"
    );
    assert!(
        webhook.logged("admitted without the sidecar"),
        "{}",
        webhook.log()
    );
    assert!(
        webhook.log().contains("Namespace gone"),
        "{}",
        webhook.log()
    );
}

#[tokio::test]
async fn namespace_annotations_come_from_a_directory_without_the_api() {
    // The testbed's cluster directory holds Namespaces beside discovery's objects; the injector
    // reads the Namespaces and ignores the rest.
    let dir = ScratchDir::new("namespaces");
    let namespace = recorded("namespace-shop.json");
    let yaml = format!(
        "{}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: catalog, namespace: shop}}\n",
        namespace
    );
    std::fs::write(dir.0.join("namespace-shop.yaml"), yaml).expect("write the Namespace");
    std::fs::write(
        dir.0.join("namespace-strict.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: strict\n  annotations: {weft.io/inject: enabled, weft.io/timeout: soon}\n",
    )
    .expect("write the Namespace");
    let lookup = format!("file:{}", dir.0.display());
    let mut args = vec!["--namespace-lookup", lookup.as_str()];
    args.extend_from_slice(CONTROL_PLANE_ARGS);
    // No Kubernetes configuration at all: file: needs none.
    let webhook = Webhook::start(&args, &[("KUBECONFIG", "/nonexistent/kubeconfig")]);

    // Meshed by its namespace alone, with the namespace's default log format.
    let pod = without_annotation(recorded("pod-catalog.json"), "weft.io/inject");
    let response = webhook
        .review(&admission_review("7c1e0f3a-20", "CREATE", "shop", &pod))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let patched = apply(&response, &pod);
    let expected = cli_output(&[namespace, pod.clone()]).remove(1);
    assert_eq!(patched, expected);

    // A bad annotation on the Namespace denies its pods, naming the namespace.
    let mut strict = pod.clone();
    strict["metadata"]["namespace"] = json!("strict");
    let response = webhook
        .review(&admission_review(
            "7c1e0f3a-21",
            "CREATE",
            "strict",
            &strict,
        ))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().expect("a message");
    assert!(message.contains("Namespace strict"), "{message}");
    assert!(message.contains("weft.io/timeout"), "{message}");

    // A namespace the directory does not hold: the injector's failure, the pod goes unchanged.
    let mut elsewhere = pod.clone();
    elsewhere["metadata"]["namespace"] = json!("elsewhere");
    let response = webhook
        .review(&admission_review(
            "7c1e0f3a-22",
            "CREATE",
            "elsewhere",
            &elsewhere,
        ))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().expect("a warning");
    assert!(
        warning.contains("Namespace elsewhere is not in --namespace-lookup file:"),
        "{warning}"
    );
}

#[test]
fn a_namespace_directory_that_cannot_be_read_fails_the_start_naming_the_flag() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft-injector"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--namespace-lookup",
            "file:/nonexistent/weft-namespaces",
        ])
        .output()
        .expect("run weft-injector");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--namespace-lookup file:/nonexistent/weft-namespaces"),
        "{stderr}"
    );
}

#[test]
fn namespace_lookup_without_any_kubernetes_configuration_fails_naming_the_flag() {
    let home = ScratchDir::new("home");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft-injector"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", home.0.join("no-such-kubeconfig"))
        .env("HOME", &home.0)
        .output()
        .expect("run weft-injector");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--namespace-lookup"), "{stderr}");
}

#[tokio::test]
async fn certificate_files_are_served_and_their_renewal_is_picked_up() {
    let dir = ScratchDir::new("tls");
    let cert = dir.0.join("tls.crt");
    let key = dir.0.join("tls.key");
    let (ca, leaf, leaf_key) = support::issued_pair();
    std::fs::write(&cert, leaf).expect("write tls.crt");
    std::fs::write(&key, leaf_key).expect("write tls.key");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let args = [
        "--namespace-lookup",
        "off",
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
        "--tls-reload-interval",
        "100ms",
    ];
    let webhook = Webhook::start_with_files(&args, &ca);
    let pod = recorded("pod-catalog.json");
    let response = webhook
        .review(&admission_review("7c1e0f3a-12", "CREATE", "shop", &pod))
        .await;
    assert_eq!(response["patchType"], "JSONPatch", "{response}");

    // Renewed by a new CA, as after a CA rotation: a client trusting only it gets through once
    // the injector has reloaded the pair.
    let (new_ca, new_leaf, new_key) = support::issued_pair();
    std::fs::write(&key, new_key).expect("write tls.key");
    std::fs::write(&cert, new_leaf).expect("write tls.crt");
    let renewed = support::HttpsClient {
        addr: webhook.addr,
        ca_pem: new_ca,
        http2: false,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match renewed.try_send(Method::GET, "/ready", Vec::new()).await {
            Ok((status, _)) => {
                assert_eq!(status, StatusCode::OK);
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the renewed certificate is not served: {e}\nlog:\n{}",
                webhook.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        webhook.logged("serving the renewed certificate"),
        "{}",
        webhook.log()
    );
}
