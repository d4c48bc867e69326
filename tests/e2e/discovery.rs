//! Discovery and load balancing in real pods: what a user checks is which replica answered
//! (the echo fixture's X-Pod header), counted over many requests on keep-alive connections.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{
    Scratch, client_pod, counter, exec, exec_ok, fixture, http_echo_pod, manifests, metrics,
    python, require, wait_listening,
};
use weft_testbed::{ControlPlane, SpawnedProcess, Testbed, TestbedOptions};

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

/// What `tests/fixtures/http_load.py` reports: answers per replica (X-Pod), and failures.
#[derive(Debug)]
struct LoadReport {
    pods: BTreeMap<String, usize>,
    errors: usize,
    error_samples: Vec<String>,
    requests: usize,
    seconds: f64,
}

impl LoadReport {
    fn parse(output: &str) -> LoadReport {
        let line = output
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("http_load printed no report:\n{output}"));
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let pods = v["pods"]
            .as_object()
            .unwrap_or_else(|| panic!("no pods in {line}"))
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0) as usize))
            .collect();
        LoadReport {
            pods,
            errors: v["errors"].as_u64().unwrap_or(u64::MAX) as usize,
            error_samples: v["error_samples"]
                .as_array()
                .map(|a| a.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            requests: v["requests"].as_u64().unwrap_or(0) as usize,
            seconds: v["seconds"].as_f64().unwrap_or(0.0),
        }
    }

    fn answered(&self) -> usize {
        self.pods.values().sum()
    }

    fn count(&self, pod: &str) -> usize {
        self.pods.get(pod).copied().unwrap_or(0)
    }

    /// "name=count (share%)" per replica, for the log and failure messages.
    fn shares(&self) -> String {
        let total = self.answered().max(1) as f64;
        let parts: Vec<String> = self
            .pods
            .iter()
            .map(|(pod, n)| format!("{pod}={n} ({:.1}%)", *n as f64 * 100.0 / total))
            .collect();
        format!(
            "{} of {} requests answered in {:.1}s, {} errors {:?}: {}",
            self.answered(),
            self.requests,
            self.seconds,
            self.errors,
            self.error_samples,
            parts.join(", ")
        )
    }
}

/// `requests` GETs of `url` from `pod` over `connections` concurrent keep-alive connections.
fn load(tb: &Testbed, pod: &str, url: &str, connections: usize, requests: usize) -> LoadReport {
    let (py, script) = (python(), fixture("http_load.py"));
    let (c, n) = (connections.to_string(), requests.to_string());
    let argv = [
        py.as_str(),
        &script,
        url,
        "--connections",
        &c,
        "--requests",
        &n,
        "--max-seconds",
        "150",
    ];
    let out = match tb.exec_with_timeout(pod, &argv, Duration::from_secs(180)) {
        Ok(out) => out,
        Err(e) => panic!("http_load in pod {pod}: {e}"),
    };
    assert!(
        out.status.success(),
        "http_load in pod {pod} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    LoadReport::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Load running in the background until [`BackgroundLoad::finish`] (at most two minutes).
struct BackgroundLoad {
    process: SpawnedProcess,
    stop: std::path::PathBuf,
    _scratch: Scratch,
}

impl BackgroundLoad {
    fn start(tb: &Testbed, pod: &str, url: &str, connections: usize, name: &str) -> Self {
        let scratch = Scratch::new(name);
        let stop = scratch.path("stop");
        let (py, script) = (python(), fixture("http_load.py"));
        let c = connections.to_string();
        let stop_arg = stop.display().to_string();
        let argv = [
            py.as_str(),
            &script,
            url,
            "--connections",
            &c,
            "--stop-file",
            &stop_arg,
            "--max-seconds",
            "120",
        ];
        let process = tb
            .spawn(pod, &argv)
            .unwrap_or_else(|e| panic!("starting http_load in pod {pod}: {e}"));
        BackgroundLoad {
            process,
            stop,
            _scratch: scratch,
        }
    }

    fn sent(&self) -> usize {
        let out = self.process.output().unwrap_or_default();
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix("progress "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (bounded) until at least `n` more requests than now have been sent.
    fn wait_for(&self, n: usize) {
        let target = self.sent() + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sent() < target {
            assert!(
                Instant::now() < deadline,
                "load stalled below {target} requests:\n{}",
                self.process.output().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn finish(mut self) -> LoadReport {
        std::fs::write(&self.stop, b"").expect("write the load's stop file");
        let status = self.process.wait_timeout(Duration::from_secs(30));
        let output = self.process.output().unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "http_load did not finish cleanly ({status:?}):\n{output}"
        );
        LoadReport::parse(&output)
    }
}

/// A meshed Deployment of `replicas` echo servers on port 8080 behind a ClusterIP Service of
/// the same name.
fn echo_deployment(name: &str, replicas: usize) -> String {
    let (py, echo) = (python(), fixture("http_echo.py"));
    format!(
        r#"
---
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{weft.io/inject: enabled}}
    spec:
      containers:
      - name: app
        image: fixture
        command: [{py:?}, {echo:?}, "--port", "8080"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /stats, port: http}}}}
---
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 8080, targetPort: http}}]
"#
    )
}

/// A meshed echo pod with the given labels and extra echo arguments (fault knobs).
fn echo_pod(name: &str, labels: &str, args: &[&str]) -> String {
    let (py, echo) = (python(), fixture("http_echo.py"));
    let mut command = vec![py, echo, "--port".into(), "8080".into()];
    command.extend(args.iter().map(|a| a.to_string()));
    format!(
        r#"
---
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {{{labels}}}
  annotations: {{weft.io/inject: enabled}}
spec:
  containers:
  - name: app
    image: fixture
    command: {command:?}
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /stats, port: http}}}}
"#
    )
}

/// Requests the client's proxy balanced to `ip:8080` (of any upstream).
fn balanced_to(tb: &Testbed, ip: std::net::Ipv4Addr) -> f64 {
    let endpoint = format!("{ip}:8080");
    counter(
        tb,
        "client",
        "weft_endpoint_requests_total",
        &[("endpoint", &endpoint)],
    )
}

/// Waits (bounded) until the client's proxy knows each of `ips` as an endpoint on port 8080.
/// A proxy watches a destination on its first connection there and, until the answer is in,
/// sends requests where the app sent them; measuring then would measure the node's DNAT.
fn wait_for_endpoints(tb: &Testbed, url: &str, ips: &[std::net::Ipv4Addr]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A request opens the proxy's watch of the destination.
        exec(
            tb,
            "client",
            &["curl", "-sS", "-o", "/dev/null", "-m", "5", url],
        );
        let text = metrics(tb, "client");
        let known = |ip: &std::net::Ipv4Addr| {
            let label = format!(r#"endpoint="{ip}:8080""#);
            text.lines()
                .any(|l| l.starts_with("weft_endpoint_requests_total") && l.contains(&label))
        };
        if ips.iter().all(known) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client's proxy never learnt all of {ips:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn up_with(yaml: &str) -> Testbed {
    match Testbed::up(yaml, TestbedOptions::default()) {
        Ok(tb) => tb,
        Err(e) => panic!("testbed up failed: {e}\nmanifests:\n{yaml}"),
    }
}

/// Requests to a ClusterIP are spread over all replicas by the client's proxy — per request,
/// on the app's few keep-alive connections — not by the connection-level DNAT behind it.
#[test]
fn requests_to_a_cluster_ip_spread_across_all_replicas() {
    require(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("curl", "curl"),
    ]);
    let yaml = format!(
        "{}{}",
        echo_deployment("web", 3),
        manifests(&[client_pod()])
    );
    let tb = up_with(&yaml);
    let ip = tb.service_ip("web").unwrap();
    let url = format!("http://{ip}:8080/echo");
    let replicas = tb.pods_of("web");
    assert_eq!(replicas.len(), 3);
    let ips: Vec<_> = replicas.iter().map(|p| p.ip).collect();
    wait_for_endpoints(&tb, &url, &ips);
    // An app's connection pool: 4 connections, 600 requests.
    let report = load(&tb, "client", &url, 4, 600);
    eprintln!("ClusterIP spread, 4 connections: {}", report.shares());
    assert_eq!(report.errors, 0, "{}", report.shares());
    // Even is 200 each (33%); every replica must get at least 15% (90). P2C over equal
    // replicas is random, so a share that low means the balancer is not balancing.
    for pod in &replicas {
        let n = report.count(&pod.name);
        assert!(n >= 90, "{} got {n} of 600: {}", pod.name, report.shares());
        let balanced = balanced_to(&tb, pod.ip);
        assert!(
            balanced >= n as f64,
            "the proxy balanced {balanced} requests to {} but it answered {n}",
            pod.name
        );
    }
    // One request at a time (the hardest case for a latency-driven balancer): measured and
    // reported; every replica still answers.
    let sequential = load(&tb, "client", &url, 1, 300);
    eprintln!("ClusterIP spread, 1 connection: {}", sequential.shares());
    assert_eq!(sequential.errors, 0, "{}", sequential.shares());
    for pod in &replicas {
        assert!(
            sequential.count(&pod.name) > 0,
            "{} got nothing: {}",
            pod.name,
            sequential.shares()
        );
    }
}

/// A replica scaled away during steady traffic costs no request: its endpoint is removed
/// before it stops, requests already on it finish, and attempts that find it gone are retried
/// on another replica.
#[test]
fn scaling_down_during_traffic_fails_no_request() {
    require(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("curl", "curl"),
    ]);
    let yaml = format!(
        "{}{}",
        echo_deployment("web", 3),
        manifests(&[client_pod()])
    );
    let mut tb = up_with(&yaml);
    let ip = tb.service_ip("web").unwrap();
    let url = format!("http://{ip}:8080/echo");
    let ips: Vec<_> = tb.pods_of("web").iter().map(|p| p.ip).collect();
    wait_for_endpoints(&tb, &url, &ips);
    let doomed = tb.pods_of("web")[2].name.clone();
    let traffic = BackgroundLoad::start(&tb, "client", &url, 4, "scale-down");
    traffic.wait_for(200);
    let updates = counter(&tb, "client", "weft_discovery_updates_total", &[]);
    tb.scale("web", 2).unwrap();
    // Traffic goes on until the client's proxy has heard of the removal, and for a while after.
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&tb, "client", "weft_discovery_updates_total", &[]) <= updates {
        assert!(
            Instant::now() < deadline,
            "no discovery update reached the client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    traffic.wait_for(400);
    let report = traffic.finish();
    eprintln!("scale 3 -> 2 under load: {}", report.shares());
    assert_eq!(report.errors, 0, "{}", report.shares());
    assert!(report.count(&doomed) > 0, "{}", report.shares());
    for pod in tb.pods_of("web") {
        assert!(report.count(&pod.name) > 0, "{}", report.shares());
    }
}

/// A replica that answers slowly gets a clearly smaller share under concurrent load: peak-EWMA
/// prices it by its latency times its queue.
#[test]
fn a_slow_replica_gets_a_smaller_share() {
    require(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("curl", "curl"),
    ]);
    let yaml = format!(
        "{}{}{}{}
---
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{port: 8080, targetPort: http}}]
",
        echo_pod("web-a", "app: web", &[]),
        echo_pod("web-b", "app: web", &[]),
        echo_pod("web-slow", "app: web", &["--fault-delay-ms", "250"]),
        manifests(&[client_pod()])
    );
    let tb = up_with(&yaml);
    let ip = tb.service_ip("web").unwrap();
    let url = format!("http://{ip}:8080/echo");
    let ips: Vec<_> = tb
        .pods()
        .iter()
        .filter(|p| p.name.starts_with("web-"))
        .map(|p| p.ip)
        .collect();
    assert_eq!(ips.len(), 3);
    wait_for_endpoints(&tb, &url, &ips);
    let report = load(&tb, "client", &url, 6, 600);
    eprintln!("slow replica (+250 ms), 6 connections: {}", report.shares());
    assert_eq!(report.errors, 0, "{}", report.shares());
    // A fair share is 200 of 600; the slow replica must get less than half of that.
    let slow = report.count("web-slow");
    assert!(slow < 100, "web-slow got {slow}: {}", report.shares());
    for fast in ["web-a", "web-b"] {
        assert!(report.count(fast) > slow, "{}", report.shares());
    }
}

/// Discovery dies mid-traffic: proxies keep balancing over the last endpoints they had, with no
/// failed request, and say they are stale. Restarted, it is watched again: a replica added
/// afterwards is balanced to.
#[test]
fn traffic_survives_discovery_going_away_and_converges_when_it_returns() {
    require(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("curl", "curl"),
    ]);
    let yaml = format!(
        "{}{}",
        echo_deployment("web", 2),
        manifests(&[client_pod()])
    );
    let mut tb = up_with(&yaml);
    let ip = tb.service_ip("web").unwrap();
    let url = format!("http://{ip}:8080/echo");
    let ips: Vec<_> = tb.pods_of("web").iter().map(|p| p.ip).collect();
    wait_for_endpoints(&tb, &url, &ips);
    let traffic = BackgroundLoad::start(&tb, "client", &url, 4, "discovery-down");
    traffic.wait_for(100);
    let sigkill = nix::sys::signal::Signal::SIGKILL as i32;
    tb.signal("weft-discovery", "discovery", sigkill).unwrap();
    let exited = tb
        .wait_exit("weft-discovery", "discovery", Duration::from_secs(10))
        .unwrap();
    assert!(exited.is_some(), "weft-discovery did not die");
    traffic.wait_for(1000);
    let stale = counter(&tb, "client", "weft_discovery_stale", &[]);
    let report = traffic.finish();
    eprintln!("discovery killed mid-traffic: {}", report.shares());
    assert_eq!(report.errors, 0, "{}", report.shares());
    assert!(stale >= 1.0, "the proxy did not notice discovery was gone");
    for pod in tb.pods_of("web") {
        assert!(report.count(&pod.name) > 0, "{}", report.shares());
    }

    tb.restart_container("weft-discovery", "discovery").unwrap();
    tb.scale("web", 3).unwrap();
    let added = tb.pods_of("web")[2].clone();
    // Bounded: the proxy re-opens its watch with backoff (at most 5 s apart).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut rounds = Vec::new();
    loop {
        let report = load(&tb, "client", &url, 4, 100);
        assert_eq!(report.errors, 0, "{}", report.shares());
        let reached = report.count(&added.name) > 0 && balanced_to(&tb, added.ip) > 0.0;
        rounds.push(report.shares());
        if reached {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the added replica {} is never balanced to after discovery restarted:\n{}",
            added.name,
            rounds.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let stale_after = counter(&tb, "client", "weft_discovery_stale", &[]);
    eprintln!(
        "after the restart and a scale to 3, {} round(s) of 100 until the new replica answered: {}",
        rounds.len(),
        rounds.last().map(String::as_str).unwrap_or("")
    );
    assert_eq!(stale_after, 0.0, "the proxy still reports stale watches");
}

/// `weft.io/split: reviews-v2=10,reviews-v1=90` on the apex service sends ~10% of its requests
/// to v2, decided per request.
#[test]
fn a_90_10_split_lands_within_tolerance() {
    require(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("curl", "curl"),
    ]);
    let yaml = format!(
        r#"{}{}{}
---
kind: Service
metadata:
  name: reviews
  namespace: default
  annotations: {{weft.io/split: "reviews-v2=10,reviews-v1=90"}}
spec:
  selector: {{app: reviews}}
  ports: [{{port: 8080, targetPort: http}}]
---
kind: Service
metadata: {{name: reviews-v1, namespace: default}}
spec:
  selector: {{app: reviews, version: v1}}
  ports: [{{port: 8080, targetPort: http}}]
---
kind: Service
metadata: {{name: reviews-v2, namespace: default}}
spec:
  selector: {{app: reviews, version: v2}}
  ports: [{{port: 8080, targetPort: http}}]
"#,
        echo_pod("reviews-v1", "app: reviews, version: v1", &[]),
        echo_pod("reviews-v2", "app: reviews, version: v2", &[]),
        manifests(&[client_pod()])
    );
    let tb = up_with(&yaml);
    let ip = tb.service_ip("reviews").unwrap();
    let url = format!("http://{ip}:8080/echo");
    let ips: Vec<_> = tb
        .pods()
        .iter()
        .filter(|p| p.name.starts_with("reviews-"))
        .map(|p| p.ip)
        .collect();
    assert_eq!(ips.len(), 2);
    // Both backends' endpoints: the split is followed only once they are known.
    wait_for_endpoints(&tb, &url, &ips);
    let report = load(&tb, "client", &url, 8, 2000);
    eprintln!("90/10 split over 2000 requests: {}", report.shares());
    assert_eq!(report.errors, 0, "{}", report.shares());
    assert_eq!(report.answered(), 2000, "{}", report.shares());
    // 10% +- 3% of 2000: 140..=260 (binomial sd is ~13, so this is ~4.5 sd either way).
    let v2 = report.count("reviews-v2");
    assert!(
        (140..=260).contains(&v2),
        "v2 got {v2}: {}",
        report.shares()
    );
    assert_eq!(report.count("reviews-v1") + v2, 2000, "{}", report.shares());
}
