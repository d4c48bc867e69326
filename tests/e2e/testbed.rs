//! The testbed itself, with unmeshed pods and plain servers (socat, python3 -m http.server):
//! addressing, ClusterIP load-balancing, DNS, init ordering, scaling, readiness and teardown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weft_testbed::{Testbed, TestbedError, TestbedOptions};

/// A scratch directory (pods share the host's filesystem), removed on drop and on panic.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("weft-testbed-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the testbed builds network namespaces and iptables rules: run as root"
    );
}

fn up(yaml: &str) -> Testbed {
    require_root();
    match Testbed::up(yaml, TestbedOptions::default()) {
        Ok(tb) => tb,
        Err(e) => panic!("testbed up failed: {e}"),
    }
}

fn host_netns() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Deployment of socat servers answering every connection with their pod's name, a Service
/// in front of it (named target port), and a client pod.
fn echo_name_app(replicas: usize) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: catalog}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: catalog}}}}
  template:
    metadata: {{labels: {{app: catalog}}}}
    spec:
      containers:
      - name: app
        image: alpine/socat
        command: [socat, "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo $(POD_NAME)"]
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
        ports: [{{name: echo, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: echo}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: catalog}}
spec:
  selector: {{app: catalog}}
  ports: [{{name: echo, port: 80, targetPort: echo}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, labels: {{app: client}}}}
spec:
  containers: [{{name: main, image: busybox, command: [sleep, "3600"]}}]
"#
    )
}

/// Connects `n` times to `target` from `pod`; how many answers came from each pod name.
fn answers(tb: &Testbed, pod: &str, target: &str, n: usize) -> BTreeMap<String, usize> {
    let script =
        format!("for i in $(seq {n}); do socat -T2 -u TCP:{target} - || echo FAILED; done");
    let out = tb.exec(pod, &["sh", "-c", &script]).unwrap();
    let mut counts = BTreeMap::new();
    for line in stdout(&out).lines() {
        *counts.entry(line.trim().to_string()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn pods_reach_each_other_by_ip_and_by_service_name() {
    let site = Scratch::new("http");
    std::fs::write(site.0.join("index.html"), "catalog page\n").unwrap();
    let yaml = format!(
        r#"
kind: Deployment
metadata: {{name: catalog}}
spec:
  replicas: 2
  template:
    metadata: {{labels: {{app: catalog}}}}
    spec:
      containers:
      - name: web
        image: python:3
        command: [python3, -m, http.server, "8080", --directory, "{dir}"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /index.html, port: http}}}}
---
kind: Service
metadata: {{name: catalog}}
spec:
  selector: {{app: catalog}}
  ports: [{{port: 80, targetPort: 8080}}]
---
kind: Pod
metadata: {{name: client}}
spec:
  containers: [{{name: main, image: x, command: [sleep, "3600"]}}]
"#,
        dir = site.0.display()
    );
    let tb = up(&yaml);
    let servers = tb.pods_of("catalog");
    assert_eq!(servers.len(), 2);
    for server in &servers {
        assert_eq!(server.owner.as_deref(), Some("catalog"));
        let url = format!("http://{}:8080/index.html", server.ip);
        let out = tb
            .exec("client", &["curl", "-sS", "-m", "5", &url])
            .unwrap();
        assert_eq!(
            stdout(&out),
            "catalog page\n",
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cluster_ip = tb.service_ip("catalog").unwrap().to_string();
    for name in [
        "catalog.default.svc.cluster.local",
        "catalog.default.svc",
        "catalog.default",
        "catalog",
    ] {
        let out = tb.exec("client", &["getent", "hosts", name]).unwrap();
        assert_eq!(
            stdout(&out).split_whitespace().next(),
            Some(cluster_ip.as_str()),
            "{name}"
        );
        let out = tb
            .exec(
                "client",
                &[
                    "curl",
                    "-sS",
                    "-m",
                    "5",
                    &format!("http://{name}/index.html"),
                ],
            )
            .unwrap();
        assert_eq!(stdout(&out), "catalog page\n", "{name}");
    }
    // The probe's GETs reached the servers, and logs are captured per container.
    assert!(
        tb.logs(&servers[0].name, Some("web"))
            .unwrap()
            .contains("GET /index.html")
    );
}

#[test]
fn cluster_ip_spreads_across_three_replicas_and_hairpins() {
    let tb = up(&echo_name_app(3));
    let names: Vec<String> = tb.pods_of("catalog").into_iter().map(|p| p.name).collect();
    assert_eq!(names.len(), 3);
    let counts = answers(&tb, "client", "catalog:80", 60);
    assert!(!counts.contains_key("FAILED"), "{counts:?}");
    for name in &names {
        // An even 1/3 spread gives ~20 each; missing one in 60 tries would be a broken spread.
        let seen = counts.get(name).copied().unwrap_or(0);
        assert!(seen >= 5, "{name} answered {seen} of 60: {counts:?}");
    }
    // A replica calling its own service, landing on itself about a third of the time.
    let counts = answers(&tb, &names[0], "catalog.default.svc.cluster.local:80", 30);
    assert!(!counts.contains_key("FAILED"), "{counts:?}");
    assert!(
        counts.get(&names[0]).copied().unwrap_or(0) > 0,
        "never hairpinned to itself: {counts:?}"
    );
}

#[test]
fn scale_down_and_up_rewrites_service_rules() {
    let mut tb = up(&echo_name_app(3));
    let before = tb.pods_of("catalog");
    let removed_netns: Vec<String> = before[1..]
        .iter()
        .map(|p| tb.netns_name(&p.name).unwrap())
        .collect();
    tb.scale("catalog", 1).unwrap();
    let after = tb.pods_of("catalog");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0], before[0]);
    let listed = host_netns();
    assert!(
        removed_netns.iter().all(|ns| !listed.contains(ns)),
        "{removed_netns:?} still in {listed:?}"
    );
    let counts = answers(&tb, "client", "catalog:80", 15);
    assert_eq!(counts.get(&after[0].name).copied(), Some(15), "{counts:?}");

    tb.scale("catalog", 2).unwrap();
    let grown = tb.pods_of("catalog");
    assert_eq!(grown.len(), 2);
    let counts = answers(&tb, "client", "catalog:80", 40);
    assert!(!counts.contains_key("FAILED"), "{counts:?}");
    for pod in &grown {
        assert!(
            counts.get(&pod.name).copied().unwrap_or(0) > 0,
            "{} never answered: {counts:?}",
            pod.name
        );
    }
    assert!(matches!(
        tb.scale("client", 2),
        Err(TestbedError::NoSuchWorkload(_))
    ));
}

#[test]
fn init_containers_run_in_order_then_containers_with_their_identity() {
    let scratch = Scratch::new("init");
    let trace = scratch.0.join("trace");
    let yaml = format!(
        r#"
kind: Pod
metadata: {{name: ordered, namespace: shop}}
spec:
  securityContext: {{runAsUser: 1234, runAsGroup: 1234}}
  initContainers:
  - {{name: first, image: x, command: [sh, -c, "sleep 0.3; echo first >> {t}"], securityContext: {{runAsUser: 0}}}}
  - {{name: second, image: x, command: [sh, -c, "echo second >> {t}"], securityContext: {{runAsUser: 0}}}}
  containers:
  - name: main
    image: x
    workingDir: {dir}
    command: [sh, -c, "echo main $(id -u):$(id -g) $POD_NS $POD_IP $PWD >> {t}; exec sleep 3600"]
    env:
    - {{name: POD_NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
"#,
        t = trace.display(),
        dir = scratch.0.display()
    );
    // Init containers write as root, the main container as 1234: both may append.
    std::fs::write(&trace, "").unwrap();
    std::fs::set_permissions(&trace, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let tb = up(&yaml);
    let ip = tb.pod("ordered").unwrap().ip;
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&trace).unwrap_or_default();
        if text.lines().count() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        text,
        format!(
            "first\nsecond\nmain 1234:1234 shop {ip} {}\n",
            scratch.0.display()
        )
    );
    let out = tb
        .exec_as("ordered", 2102, &["id", "-u"], Duration::from_secs(5))
        .unwrap();
    assert_eq!(stdout(&out), "2102\n");
    // Signals and exits are observable per container.
    assert_eq!(
        tb.wait_exit("ordered", "main", Duration::from_millis(100))
            .unwrap(),
        None
    );
    tb.signal("ordered", "main", libc::SIGTERM).unwrap();
    assert_eq!(
        tb.wait_exit("ordered", "main", Duration::from_secs(5))
            .unwrap(),
        Some(128 + libc::SIGTERM)
    );
}

#[test]
fn failing_init_container_fails_up_naming_it_and_leaves_nothing() {
    require_root();
    let yaml = r#"
kind: Pod
metadata: {name: broken}
spec:
  initContainers: [{name: setup, image: x, command: [sh, -c, "echo cannot-configure >&2; exit 7"]}]
  containers: [{name: main, image: x, command: [sleep, "3600"]}]
"#;
    let before = host_netns();
    let err = Testbed::up(yaml, TestbedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken") && err.contains("setup") && err.contains("exit code 7"),
        "{err}"
    );
    assert!(err.contains("cannot-configure"), "log tail missing: {err}");
    let leaked: Vec<String> = host_netns()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(
        leaked
            .iter()
            .all(|n| !n.starts_with(&format!("wt{:x}-", std::process::id()))),
        "{leaked:?}"
    );
}

#[test]
fn unready_pod_fails_up_within_the_timeout() {
    require_root();
    let yaml = r#"
kind: Pod
metadata: {name: silent}
spec:
  containers:
  - name: app
    image: x
    command: [sleep, "3600"]
    readinessProbe: {httpGet: {path: /ready, port: 9}}
"#;
    let opts = TestbedOptions {
        ready_timeout: Duration::from_secs(2),
        ..TestbedOptions::default()
    };
    let started = std::time::Instant::now();
    let err = Testbed::up(yaml, opts).unwrap_err().to_string();
    assert!(
        err.contains("silent") && err.contains("app") && err.contains("not ready"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn headless_service_and_statefulset_names_resolve_to_pods() {
    let tb = up(r#"
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: x, command: [sleep, "3600"]}]
---
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
"#);
    let pods = tb.pods_of("db");
    assert_eq!(
        pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["db-0", "db-1"]
    );
    let out = tb
        .exec(
            "db-0",
            &["getent", "ahostsv4", "db.default.svc.cluster.local"],
        )
        .unwrap();
    let text = stdout(&out);
    for pod in &pods {
        assert!(
            text.contains(&pod.ip.to_string()),
            "{} missing from {text}",
            pod.ip
        );
    }
    let out = tb.exec("db-0", &["getent", "hosts", "db-1.db"]).unwrap();
    assert_eq!(
        stdout(&out).split_whitespace().next(),
        Some(pods[1].ip.to_string().as_str())
    );
    assert!(
        tb.service_ip("db").is_err(),
        "a headless service has no ClusterIP"
    );
}

#[test]
fn meshed_pods_run_the_built_proxy_and_its_init() {
    let site = Scratch::new("mesh");
    std::fs::write(site.0.join("index.html"), "meshed\n").unwrap();
    let yaml = format!(
        r#"
kind: Deployment
metadata: {{name: catalog}}
spec:
  template:
    metadata:
      labels: {{app: catalog}}
      annotations: {{weft.io/inject: enabled}}
    spec:
      containers:
      - name: web
        image: python:3
        command: [python3, -m, http.server, "8080", --directory, "{dir}"]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /index.html, port: 8080}}}}
---
kind: Service
metadata: {{name: catalog}}
spec:
  selector: {{app: catalog}}
  ports: [{{port: 80, targetPort: 8080}}]
---
kind: Pod
metadata:
  name: client
  annotations: {{weft.io/inject: enabled}}
spec:
  containers: [{{name: main, image: x, command: [sleep, "3600"]}}]
"#,
        dir = site.0.display()
    );
    let tb = up(&yaml);
    // The init container (the built weft-proxy) installed the pod's redirect rules.
    let rules = stdout(&tb.exec("client", &["iptables-save", "-t", "nat"]).unwrap());
    assert!(rules.contains("REDIRECT"), "{rules}");
    let out = tb
        .exec(
            "client",
            &["curl", "-sS", "-m", "5", "http://catalog/index.html"],
        )
        .unwrap();
    assert_eq!(
        stdout(&out),
        "meshed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = tb.metrics("client").unwrap();
    let requests =
        weft_testbed::metric_value(&metrics, "weft_request_total", &[("direction", "outbound")]);
    assert!(requests.unwrap_or(0.0) >= 1.0, "{metrics}");
    // `logs` without a container name shows the app, not the proxy.
    assert!(
        tb.logs("catalog", None)
            .unwrap()
            .contains("GET /index.html")
    );
    assert!(!tb.logs("client", Some("weft-proxy")).unwrap().is_empty());
}

/// Everything an instance made, to check that it is gone.
struct Footprint {
    netns: Vec<String>,
    etc_dirs: Vec<PathBuf>,
    state_dir: PathBuf,
    pids: Vec<i32>,
}

impl Footprint {
    fn of(tb: &Testbed) -> Footprint {
        let netns: Vec<String> = host_netns()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{}-", tb.instance())))
            .collect();
        let pids = netns
            .iter()
            .flat_map(|ns| {
                let out = Command::new("ip")
                    .args(["netns", "pids", ns])
                    .output()
                    .unwrap();
                stdout(&out)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        Footprint {
            etc_dirs: netns
                .iter()
                .map(|n| Path::new("/etc/netns").join(n))
                .collect(),
            netns,
            state_dir: tb.state_dir().to_path_buf(),
            pids,
        }
    }

    fn assert_gone(&self) {
        let listed = host_netns();
        for ns in &self.netns {
            assert!(!listed.contains(ns), "namespace {ns} left behind");
        }
        for dir in &self.etc_dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
        assert!(
            !self.state_dir.exists(),
            "{} left behind",
            self.state_dir.display()
        );
        for pid in &self.pids {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            assert!(!alive, "process {pid} left running");
        }
    }
}

#[test]
fn drop_tears_down_namespaces_processes_and_files() {
    let tb = up(&echo_name_app(2));
    let footprint = Footprint::of(&tb);
    assert_eq!(
        footprint.netns.len(),
        5,
        "node + the webhook's pod + 3 pods: {:?}",
        footprint.netns
    );
    assert!(footprint.pids.len() >= 4, "{:?}", footprint.pids);
    assert!(
        footprint
            .etc_dirs
            .iter()
            .filter(|d| d.join("hosts").exists())
            .count()
            == 4
    );
    drop(tb);
    footprint.assert_gone();
}

#[test]
fn panic_inside_a_test_still_tears_down() {
    let footprint = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let tb = up(&echo_name_app(1));
        *footprint.lock().unwrap() = Some(Footprint::of(&tb));
        panic!("deliberate failure while the testbed is up");
    }));
    assert!(result.is_err());
    let footprint = footprint
        .into_inner()
        .unwrap()
        .expect("the testbed came up");
    assert_eq!(
        footprint.netns.len(),
        4,
        "node + the webhook's pod + 2 pods"
    );
    footprint.assert_gone();
}

/// The `weft-testbed` binary: up in the foreground, exec and logs from another process,
/// teardown on SIGTERM, and `down` clearing what a killed run left.
mod cli {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::{Scratch, host_netns, require_root};

    const BIN: &str = env!("CARGO_BIN_EXE_weft-testbed");

    const APP: &str = r#"
kind: Deployment
metadata: {name: catalog}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: catalog}}
    spec:
      containers:
      - name: app
        image: x
        command: [socat, "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo hi"]
        readinessProbe: {tcpSocket: {port: 8080}}
---
kind: Service
metadata: {name: catalog}
spec:
  selector: {app: catalog}
  ports: [{port: 80, targetPort: 8080}]
---
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: main, image: x, command: [sh, -c, "echo hello-from-client; exec sleep 3600"]}]
"#;

    /// A foreground `weft-testbed up`; killed and `down`ed on drop, whatever happened.
    struct Foreground {
        child: Child,
        name: String,
        _scratch: Scratch,
    }

    impl Foreground {
        fn start(test: &str) -> (Foreground, String) {
            require_root();
            let scratch = Scratch::new(test);
            let file = scratch.0.join("app.yaml");
            std::fs::write(&file, APP).unwrap();
            let name = format!("{test}-{}", std::process::id());
            let mut child = Command::new(BIN)
                .args(["up", "-f"])
                .arg(&file)
                .args(["--name", &name])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut fg = Foreground {
                child,
                name,
                _scratch: scratch,
            };
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut summary = String::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        summary.push_str(&line);
                        summary.push('\n');
                        if line.contains("is up") {
                            break;
                        }
                    }
                    Err(_) => {
                        let status = fg.child.try_wait().unwrap();
                        panic!("`up` did not come up (exit: {status:?}); printed:\n{summary}");
                    }
                }
            }
            (fg, summary)
        }

        fn instance(&self) -> String {
            format!("wt-{}", self.name)
        }

        fn run(&self, args: &[&str]) -> Output {
            let mut cmd = Command::new(BIN);
            cmd.args(args);
            weft_run(cmd)
        }

        fn namespaces(&self) -> Vec<String> {
            let prefix = format!("{}-", self.instance());
            host_netns()
                .into_iter()
                .filter(|n| n.starts_with(&prefix))
                .collect()
        }
    }

    fn weft_run(cmd: Command) -> Output {
        // Bounded by the commands' own timeouts; `timeout` guards against a hang regardless.
        let mut bounded = Command::new("timeout");
        bounded
            .arg("60")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        bounded.output().unwrap()
    }

    impl Drop for Foreground {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = Command::new(BIN)
                .args(["down", "--name", &self.name])
                .output();
        }
    }

    fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    #[test]
    fn up_exec_logs_then_sigterm_tears_down() {
        let (mut fg, summary) = Foreground::start("cli");
        assert!(
            summary.contains("client") && summary.contains("catalog"),
            "{summary}"
        );
        assert!(
            summary.contains("198.19.0.1"),
            "service ClusterIP not printed: {summary}"
        );

        let out = fg.run(&[
            "exec",
            "--name",
            &fg.name,
            "client",
            "--",
            "socat",
            "-T2",
            "-u",
            "TCP:catalog:80",
            "-",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
        let out = fg.run(&[
            "exec", "--name", &fg.name, "client", "--", "sh", "-c", "exit 3",
        ]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "exec passes the exit code through"
        );
        let out = fg.run(&["logs", "--name", &fg.name, "client"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello-from-client\n");
        let out = fg.run(&["logs", "--name", &fg.name, "nope"]);
        assert!(!out.status.success());

        assert_eq!(
            fg.namespaces().len(),
            5,
            "node + the webhook's pod + 3 pods"
        );
        let pid = nix::unistd::Pid::from_raw(fg.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status =
            wait_exit(&mut fg.child, Duration::from_secs(20)).expect("up exits on SIGTERM");
        assert!(status.success(), "{status:?}");
        assert!(fg.namespaces().is_empty(), "{:?}", fg.namespaces());
        assert!(
            !std::path::Path::new("/run/weft-testbed")
                .join(fg.instance())
                .exists()
        );
    }

    #[test]
    fn down_clears_what_a_killed_run_left() {
        let (mut fg, _) = Foreground::start("crash");
        fg.child.kill().unwrap();
        fg.child.wait().unwrap();
        assert_eq!(fg.namespaces().len(), 5, "a SIGKILLed run cannot clean up");
        let out = fg.run(&["down"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            printed.contains(&format!("removed {}", fg.instance())),
            "{printed}"
        );
        assert!(fg.namespaces().is_empty(), "{:?}", fg.namespaces());
        assert!(
            !std::path::Path::new("/etc/netns")
                .join(format!("{}-node", fg.instance()))
                .exists()
        );
    }
}
