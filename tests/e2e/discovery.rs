//! Discovery and load balancing in real pods: what a user checks is which replica answered
//! (the echo fixture's X-Pod header), counted over many requests on keep-alive connections.

use std::collections::BTreeMap;

use crate::support::{
    client_pod, exec_ok, fixture, http_echo_pod, manifests, python, require, wait_listening,
};
use weft_testbed::{ControlPlane, Testbed, TestbedOptions};

/// Sends `n` GETs to `url` over one keep-alive connection from `pod`; counts answers per X-Pod
/// ("error" for anything but a 200).
fn spread(tb: &Testbed, pod: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
    let script = r#"
import collections, http.client, json, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1]); n = int(sys.argv[2])
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
seen = collections.Counter()
for _ in range(n):
    try:
        conn.request("GET", "/echo")
        resp = conn.getresponse(); resp.read()
        seen[resp.getheader("X-Pod") if resp.status == 200 else "error"] += 1
    except Exception as e:
        seen["error"] += 1
        conn.close()
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
print(json.dumps(seen))
"#;
    let n = n.to_string();
    let out = exec_ok(tb, pod, &[&python(), "-c", script, url, &n]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// DNS-only mode (no discovery service): a headless service's name resolves to every replica,
/// and the proxy balances across them even though the app connected to just one address.
#[test]
fn dns_only_mode_balances_a_headless_service() {
    require(&[("ip", "iproute2"), ("iptables", "iptables")]);
    let (py, echo) = (python(), fixture("http_echo.py"));
    let yaml = format!(
        r#"
kind: StatefulSet
metadata: {{name: web, namespace: default}}
spec:
  serviceName: web
  replicas: 2
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{weft.io/inject: enabled}}
    spec:
      containers:
      - name: app
        image: fixture
        command: [{py:?}, {echo:?}, "--port", "8080"]
---
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{port: 8080}}]
{}"#,
        manifests(&[client_pod()])
    );
    // DNS-only mode is a proxy without WEFT_DISCOVERY_ADDR: no control plane.
    let options = TestbedOptions {
        control_plane: ControlPlane::None,
        ..TestbedOptions::default()
    };
    let tb = Testbed::up(&yaml, options).unwrap();
    for pod in ["web-0", "web-1"] {
        wait_listening(&tb, pod, 8080);
    }
    let seen = spread(&tb, "client", "http://web:8080/", 200);
    assert_eq!(seen.get("error"), None, "{seen:?}");
    // Without balancing every request follows the app's one connection to one pod. With it,
    // both pods answer and the proxy counts requests to each endpoint of "web:8080". The split
    // is not asserted to be even: one client sending one request at a time is where peak-EWMA
    // favours whichever replica measures fastest (see docs/load-balancing.md).
    let text = tb.metrics("client").unwrap();
    for pod in tb.pods_of("web") {
        assert!(
            seen.get(&pod.name).copied().unwrap_or(0) > 0,
            "{} got nothing: {seen:?}",
            pod.name
        );
        let label = format!(r#"endpoint="{}:8080""#, pod.ip);
        let balanced = text.lines().any(|l| {
            l.starts_with("weft_endpoint_requests_total")
                && l.contains(r#"upstream="web:8080""#)
                && l.contains(&label)
        });
        assert!(balanced, "no requests balanced to {}:\n{text}", pod.ip);
    }
    println!("DNS-only headless spread over 200 requests: {seen:?}");
}

/// A pod without a proxy, reached by its IP: not in the mesh, so the request goes to exactly
/// that address as the app sent it, and the client's metrics name the address.
#[test]
fn a_non_mesh_destination_is_passed_through_untouched() {
    require(&[("ip", "iproute2"), ("iptables", "iptables")]);
    let (py, echo) = (python(), fixture("http_echo.py"));
    let yaml = format!(
        r#"
kind: Pod
metadata: {{name: plain, namespace: default, labels: {{app: plain}}}}
spec:
  containers:
  - name: app
    image: fixture
    command: [{py:?}, {echo:?}, "--port", "9000"]
{}"#,
        manifests(&[client_pod(), http_echo_pod("decoy", 9000)])
    );
    let tb = Testbed::up(&yaml, TestbedOptions::default()).unwrap();
    wait_listening(&tb, "plain", 9000);
    let ip = tb.pod("plain").unwrap().ip;
    let url = format!("http://{ip}:9000/");
    let seen = spread(&tb, "client", &url, 20);
    assert_eq!(seen.get("plain"), Some(&20), "{seen:?}");
    let text = tb.metrics("client").unwrap();
    let label = format!(r#"upstream="{ip}:9000""#);
    assert!(
        text.lines()
            .any(|l| l.starts_with("weft_request_total") && l.contains(&label)),
        "{text}"
    );
}
