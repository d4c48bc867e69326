//! The CA in the testbed's control plane: `weft-identity` runs as a pod of namespace `weft`, a
//! meshed pod gets its service-account token and the trust anchors as a kubelet would provide
//! them, and a Certify made from inside that pod (through its proxy) returns a certificate for
//! its identity only.

use std::path::PathBuf;
use std::process::Command;

use weft_testbed::{ControlPlane, Testbed, TestbedOptions};

use crate::support::*;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: shopper
  namespace: shop
  annotations:
    weft.io/inject: enabled
spec:
  serviceAccountName: web
  containers:
  - name: app
    image: fixture
    command: [sleep, "3600"]
"#;

#[test]
fn meshed_pods_get_token_and_anchors_and_can_certify_their_own_identity() {
    require(&[("openssl", "openssl")]);
    let opts = TestbedOptions::default();
    assert_eq!(
        opts.control_plane,
        ControlPlane::Full,
        "the CA runs by default"
    );
    let tb = Testbed::up(MANIFEST, opts).unwrap_or_else(|e| panic!("testbed up: {e}"));

    // The CA pod is up (up() waited for its /ready) in namespace weft.
    let ca_pod = tb.pod("weft-identity").expect("the weft-identity pod runs");
    assert_eq!(ca_pod.namespace, "weft");

    // The meshed pod's volumes, where the proxy's WEFT_IDENTITY_TOKEN_FILE / WEFT_TRUST_ANCHORS
    // point (tests/src/volumes.rs).
    let volumes = tb.state_dir().join("volumes").join("shopper");
    let token_file: PathBuf = volumes.join("weft-identity-token/token");
    let anchors_file: PathBuf = volumes.join("weft-trust-anchors/ca.pem");
    let token = std::fs::read_to_string(&token_file).expect("the pod's token file exists");
    assert_eq!(
        token.trim().matches('.').count(),
        1,
        "a local token: {token}"
    );
    let anchors = std::fs::read_to_string(&anchors_file).expect("the pod's anchors exist");
    assert!(
        anchors.starts_with("-----BEGIN CERTIFICATE-----"),
        "{anchors}"
    );
    let proxy_env = proxy_environment(&tb, "shopper");
    assert!(
        proxy_env.contains(&format!(
            "WEFT_IDENTITY_TOKEN_FILE={}",
            token_file.display()
        )),
        "{proxy_env}"
    );
    assert!(
        proxy_env.contains(&format!("WEFT_TRUST_ANCHORS={}", anchors_file.display())),
        "{proxy_env}"
    );
    assert!(
        proxy_env.contains("WEFT_IDENTITY_ADDR=weft-identity.weft.svc.cluster.local:8080"),
        "{proxy_env}"
    );

    // A Certify from inside the pod, by Service name, through the pod's outbound proxy.
    let bin = tb
        .binary("weft-identity")
        .expect("the testbed runs weft-identity")
        .display()
        .to_string();
    let certify = |identity: &str| {
        exec(
            &tb,
            "shopper",
            &[
                &bin,
                "certify",
                "--addr",
                "weft-identity.weft.svc.cluster.local:8080",
                "--token-file",
                token_file.to_str().unwrap(),
                "--trust-anchors",
                anchors_file.to_str().unwrap(),
                "--identity",
                identity,
            ],
        )
    };
    let out = certify("spiffe://cluster.local/ns/shop/sa/web");
    assert!(
        out.status.success(),
        "certify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scratch = Scratch::new("identity");
    let chain = scratch.path("chain.pem");
    std::fs::write(&chain, &out.stdout).unwrap();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&chain)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/shop/sa/web"),
        "{text}"
    );

    // Another identity than the pod's service account is refused, naming both.
    let out = certify("spiffe://cluster.local/ns/shop/sa/admin");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PermissionDenied") && err.contains("ns/shop/sa/web"),
        "{err}"
    );
}

/// The proxy container's environment, from /proc.
fn proxy_environment(tb: &Testbed, pod: &str) -> String {
    let state = weft_testbed::InstanceState::load(tb.state_dir()).unwrap();
    let pid = state
        .pod(pod)
        .unwrap()
        .containers
        .iter()
        .find(|c| c.name == "weft-proxy")
        .and_then(|c| c.pid)
        .expect("the proxy container has a pid");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', "\n"))
        .unwrap_or_default()
}
