//! Admission in the testbed: every application pod goes through the running weft-injector pod
//! (AdmissionReview v1 over HTTPS, as the API server sends it), and what runs is the pod as the
//! webhook patched it; a pod the webhook denies fails `up` with the webhook's own message.

use weft_testbed::{Testbed, TestbedError, TestbedOptions};

use crate::support::require;

/// A namespace meshed by its annotation (with a default the webhook must carry into the proxy),
/// a pod meshed by that alone, and a pod that opts out.
const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    weft.io/inject: enabled
    weft.io/proxy-log-format: json
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: fixture
        command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: outside
  namespace: shop
  annotations: {weft.io/inject: disabled}
spec:
  containers:
  - name: app
    image: fixture
    command: [sleep, "3600"]
"#;

#[test]
fn every_pod_is_admitted_through_the_running_webhook() {
    require(&[("curl", "curl")]);
    let tb = Testbed::up(MANIFEST, TestbedOptions::default())
        .unwrap_or_else(|e| panic!("testbed up: {e}"));

    let injector = tb.pods_of("weft-injector");
    assert_eq!(injector.len(), 1, "the webhook runs as a pod");
    assert_eq!(injector[0].namespace, "weft");
    let log = tb
        .logs(&injector[0].name, None)
        .expect("the injector's log");

    // Meshed by the Namespace's annotation, which the webhook read from the cluster directory:
    // each replica reviewed on its own and patched with the sidecar.
    for pod in tb.pods_of("web") {
        assert!(
            pod.annotations.contains_key("weft.io/injected"),
            "{}: {:?}",
            pod.name,
            pod.annotations
        );
        assert!(
            log.lines()
                .any(|l| l.contains("injected") && l.contains(&format!("Pod shop/{}", pod.name))),
            "the webhook did not log injecting {}:\n{log}",
            pod.name
        );
        let proxy = tb.logs(&pod.name, Some("weft-proxy")).expect("proxy log");
        assert!(
            proxy.lines().any(|l| l.trim_start().starts_with('{')),
            "the namespace's weft.io/proxy-log-format: json reached the proxy:\n{proxy}"
        );
    }
    // Reviewed too, and left as written.
    let outside = tb.pod("outside").expect("the opted-out pod");
    assert!(
        !outside.annotations.contains_key("weft.io/injected"),
        "{:?}",
        outside.annotations
    );
    assert!(
        tb.logs("outside", Some("weft-proxy")).is_err(),
        "no sidecar"
    );
    let reviews = std::fs::read_dir(tb.state_dir().join("admission"))
        .expect("the reviews are kept")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("review-"))
        .count();
    assert_eq!(reviews, 3, "one review per application pod");
}

#[test]
fn a_bad_annotation_fails_up_with_the_webhooks_denial() {
    require(&[("curl", "curl")]);
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata:
  name: impatient
  namespace: shop
  annotations:
    weft.io/inject: enabled
    weft.io/timeout: soon
spec:
  containers:
  - name: app
    image: fixture
    command: [sleep, "3600"]
"#;
    let err = match Testbed::up(manifest, TestbedOptions::default()) {
        Ok(tb) => panic!(
            "up succeeded; pod annotations: {:?}",
            tb.pod("impatient").map(|p| p.annotations)
        ),
        Err(e) => e,
    };
    assert!(
        matches!(err, TestbedError::Denied { .. }),
        "not a denial: {err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("admission webhook weft-injector denied pod shop/impatient"),
        "{message}"
    );
    assert!(message.contains("weft.io/timeout"), "{message}");
    assert!(message.contains("soon"), "{message}");
}
