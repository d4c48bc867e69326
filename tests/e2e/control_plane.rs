//! The control plane in the testbed: weft-discovery runs as a pod in namespace `weft` over the
//! testbed's cluster directory, and what it serves follows the testbed (scale, annotations).

use weft_testbed::{ControlPlane, Testbed, TestbedOptions};

use crate::support::require;

const DISCOVERY_ADDR: &str = "weft-discovery.weft.svc.cluster.local:8086";

/// A meshed Deployment of `replicas` socat servers behind a Service, and an unmeshed pod to
/// run the watch client from.
fn app(replicas: usize) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: catalog, namespace: shop}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: catalog}}}}
  template:
    metadata:
      labels: {{app: catalog}}
      annotations: {{weft.io/inject: enabled}}
    spec:
      serviceAccountName: catalog
      containers:
      - name: app
        image: alpine/socat
        command: [socat, "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo hello"]
        ports: [{{name: echo, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: echo}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: catalog, namespace: shop}}
spec:
  selector: {{app: catalog}}
  ports: [{{name: echo, port: 80, targetPort: echo}}]
---
kind: Pod
metadata: {{name: probe, namespace: shop}}
spec:
  containers: [{{name: main, image: x, command: [sleep, "3600"]}}]
"#
    )
}

fn up(yaml: &str, control_plane: ControlPlane) -> Testbed {
    require(&[("socat", "socat")]);
    match Testbed::up(
        yaml,
        TestbedOptions {
            control_plane,
            ..TestbedOptions::default()
        },
    ) {
        Ok(tb) => tb,
        Err(e) => panic!("testbed up failed: {e}"),
    }
}

/// The first update a fresh watch of `target` gets, as `weft-discovery watch` prints it, run in
/// the unmeshed probe pod against the discovery Service.
fn first_update(tb: &Testbed, target: &str) -> String {
    let bin = tb
        .binary("weft-discovery")
        .expect("the testbed runs weft-discovery")
        .display()
        .to_string();
    let argv = [
        bin.as_str(),
        "watch",
        target,
        "--addr",
        DISCOVERY_ADDR,
        "--namespace",
        "shop",
        "--updates",
        "1",
        "--timeout",
        "10s",
    ];
    let out = tb.exec("probe", &argv).unwrap();
    assert!(
        out.status.success(),
        "watch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn endpoint_count(line: &str) -> usize {
    line.matches("[meshed proxy=4143 id=spiffe://cluster.local/ns/shop/sa/catalog]")
        .count()
}

#[test]
fn discovery_serves_the_testbed_and_follows_a_scale_and_annotations() {
    let mut tb = up(&app(2), ControlPlane::Full);
    assert_eq!(
        tb.pods_of("weft-discovery").len(),
        1,
        "the discovery pod runs"
    );

    let dir = tb.cluster_dir().to_path_buf();
    assert!(dir.join("service-shop-catalog.yaml").is_file());
    let pods = tb.pods_of("catalog");
    for pod in &pods {
        assert!(
            dir.join(format!("pod-shop-{}.yaml", pod.name)).is_file(),
            "{}",
            pod.name
        );
    }

    // By name and by ClusterIP, the same service with both replicas, meshed, with identities.
    // `up`, `scale` and `set_service_annotation` return once discovery serves what they did.
    let line = first_update(&tb, "catalog:80");
    assert!(line.starts_with("snapshot catalog.shop:80 "), "{line}");
    assert_eq!(endpoint_count(&line), 2, "{line}");
    for pod in &pods {
        assert!(
            line.contains(&format!("{}:8080[meshed", pod.ip)),
            "{} missing: {line}",
            pod.ip
        );
    }
    let ip = tb.service_ip("catalog.shop").unwrap();
    let by_ip = first_update(&tb, &format!("{ip}:80"));
    assert!(by_ip.starts_with("snapshot catalog.shop:80 "), "{by_ip}");
    assert_eq!(first_update(&tb, "198.18.255.254:80"), "not-in-mesh");

    tb.scale("catalog", 3).unwrap();
    let grown = first_update(&tb, "catalog:80");
    assert_eq!(endpoint_count(&grown), 3, "{grown}");
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .count();
    assert!(
        files >= 6,
        "{files} files for 4 services' worth of objects: {grown}"
    );

    tb.scale("catalog", 1).unwrap();
    let shrunk = first_update(&tb, "catalog:80");
    assert_eq!(endpoint_count(&shrunk), 1, "{shrunk}");
    assert!(
        shrunk.contains(&format!("{}:8080", pods[0].ip)),
        "the first replica stays: {shrunk}"
    );
    assert!(!dir.join(format!("pod-shop-{}.yaml", pods[1].name)).exists());

    tb.set_service_annotation("catalog.shop", "weft.io/timeout", "250ms")
        .unwrap();
    let line = first_update(&tb, "catalog:80");
    assert!(line.contains("timeout_ms: Some(250)"), "{line}");
}

#[test]
fn without_a_control_plane_no_discovery_pod_runs() {
    let tb = up(&app(1), ControlPlane::None);
    assert!(tb.pods_of("weft-discovery").is_empty());
    assert!(tb.binary("weft-discovery").is_none());
}
