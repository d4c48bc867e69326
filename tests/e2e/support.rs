//! Plumbing shared by the end-to-end suites: where the fixtures and the venv's Python are, the
//! prerequisite checks (which fail loudly, naming what to install, instead of skipping), a small
//! manifest builder for throwaway client/server pods, bounded exec helpers and metric reading.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use weft_testbed::{Testbed, TestbedOptions};

/// Upper bound for any one command a test runs inside a pod.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server pod may take to start listening (Python imports grpcio slowly on 2 cores).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent: the repository root")
        .to_path_buf()
}

/// Absolute path of a program in tests/fixtures/ (pods share the host's filesystem).
pub fn fixture(name: &str) -> String {
    let path = repo_root().join("tests/fixtures").join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path.display().to_string()
}

/// The venv's Python, which has grpcio, websockets and h2.
pub fn python() -> String {
    let path = repo_root().join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run tests/fixtures/setup-python.sh (tests/install-deps does it too)",
        path.display()
    );
    path.display().to_string()
}

/// Fails the test (never skips it) when it cannot run here, naming what is missing.
pub fn require(programs: &[(&str, &str)]) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests build network namespaces and iptables rules: run them as root"
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (program, package) in programs {
        let found = std::env::split_paths(&path).any(|dir| dir.join(program).is_file());
        assert!(
            found,
            "`{program}` is not installed: apt-get install -y {package} (or run tests/install-deps)"
        );
    }
}

/// One pod of a test's manifests, with a Service of the same name when it has ports.
pub struct PodSpec {
    name: String,
    /// (container name, argv); the first is `app`.
    containers: Vec<(String, Vec<String>)>,
    ports: Vec<u16>,
    annotations: Vec<(String, String)>,
}

pub fn pod(name: &str, command: &[&str]) -> PodSpec {
    PodSpec {
        name: name.to_string(),
        containers: vec![("app".to_string(), argv(command))],
        ports: Vec::new(),
        annotations: Vec::new(),
    }
}

/// A meshed pod `name` running the HTTP/1 echo fixture on `port`, with its Service.
pub fn http_echo_pod(name: &str, port: u16) -> PodSpec {
    let (py, echo, port_arg) = (python(), fixture("http_echo.py"), port.to_string());
    pod(name, &[&py, &echo, "--port", &port_arg]).port(port)
}

/// A meshed pod that only exists to run clients in (via exec).
pub fn client_pod() -> PodSpec {
    pod("client", &["sleep", "3600"])
}

fn argv(command: &[&str]) -> Vec<String> {
    command.iter().map(|s| s.to_string()).collect()
}

impl PodSpec {
    /// Adds another container (a second server, say) to the pod.
    pub fn container(mut self, name: &str, command: &[&str]) -> Self {
        self.containers.push((name.to_string(), argv(command)));
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.ports.push(port);
        self
    }

    /// Adds a `weft.io/<key>` annotation.
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations
            .push((format!("weft.io/{key}"), value.to_string()));
        self
    }

    fn write_yaml(&self, out: &mut String) {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let _ = writeln!(out, "---\napiVersion: v1\nkind: Pod\nmetadata:");
        let _ = writeln!(out, "  name: {}\n  namespace: default", self.name);
        let _ = writeln!(out, "  labels:\n    app: {}", self.name);
        let _ = writeln!(out, "  annotations:\n    weft.io/inject: enabled");
        for (key, value) in &self.annotations {
            let _ = writeln!(out, "    {key}: {}", q(value));
        }
        let _ = writeln!(out, "spec:\n  containers:");
        for (name, command) in &self.containers {
            let _ = writeln!(out, "  - name: {name}\n    image: fixture");
            let _ = writeln!(
                out,
                "    env:\n    - name: POD_NAME\n      value: {}",
                self.name
            );
            let _ = writeln!(out, "    command:");
            for arg in command {
                let _ = writeln!(out, "    - {}", q(arg));
            }
        }
        if self.ports.is_empty() {
            return;
        }
        let _ = writeln!(out, "---\napiVersion: v1\nkind: Service\nmetadata:");
        let _ = writeln!(out, "  name: {}\n  namespace: default", self.name);
        let _ = writeln!(out, "spec:\n  selector:\n    app: {}\n  ports:", self.name);
        for port in &self.ports {
            let _ = writeln!(
                out,
                "  - name: p{port}\n    port: {port}\n    targetPort: {port}"
            );
        }
    }
}

pub fn manifests(pods: &[PodSpec]) -> String {
    let mut out = String::new();
    for pod in pods {
        pod.write_yaml(&mut out);
    }
    out
}

/// Brings the pods up and waits until every listed port of every pod is listening.
pub fn up(pods: &[PodSpec]) -> Testbed {
    let yaml = manifests(pods);
    let tb = match Testbed::up(&yaml, TestbedOptions::default()) {
        Ok(tb) => tb,
        Err(e) => panic!("testbed up failed: {e}\nmanifests:\n{yaml}"),
    };
    for spec in pods {
        for port in &spec.ports {
            wait_listening(&tb, &spec.name, *port);
        }
    }
    tb
}

/// Polls the pod's listening sockets (with `ss`, so no traffic crosses a proxy) until `port` shows.
pub fn wait_listening(tb: &Testbed, pod: &str, port: u16) {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let needle = format!(":{port} ");
    loop {
        let out = exec(tb, pod, &["ss", "-Hltn"]);
        if String::from_utf8_lossy(&out.stdout).contains(&needle) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "pod {pod}: nothing listens on port {port} after {LISTEN_TIMEOUT:?}; app log:\n{}",
                logs(tb, pod, "app")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs a command in the pod (bounded by EXEC_TIMEOUT) and returns its output, whatever its status.
pub fn exec(tb: &Testbed, pod: &str, argv: &[&str]) -> Output {
    match tb.exec_with_timeout(pod, argv, EXEC_TIMEOUT) {
        Ok(out) => out,
        Err(e) => panic!("exec {argv:?} in pod {pod}: {e}"),
    }
}

/// Runs a command in the pod and insists it succeeds; returns its stdout.
pub fn exec_ok(tb: &Testbed, pod: &str, argv: &[&str]) -> String {
    let out = exec(tb, pod, argv);
    assert!(
        out.status.success(),
        "{argv:?} in pod {pod} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container's log, or a note saying why there is none (for failure messages).
pub fn logs(tb: &Testbed, pod: &str, container: &str) -> String {
    match tb.logs(pod, Some(container)) {
        Ok(text) => text,
        Err(e) => format!("(no log for {pod}/{container}: {e})"),
    }
}

/// The pod's proxy /metrics text.
pub fn metrics(tb: &Testbed, pod: &str) -> String {
    match tb.metrics(pod) {
        Ok(text) => text,
        Err(e) => panic!("reading /metrics of pod {pod}'s proxy: {e}"),
    }
}

/// The pod's proxy counter `name` summed over the series whose labels include `labels`; 0 when
/// no series matches yet (prometheus-client only shows a labelled series once it moved).
pub fn counter(tb: &Testbed, pod: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    weft_testbed::metric_value(&metrics(tb, pod), name, labels).unwrap_or(0.0)
}

/// sha256 of a file, via coreutils' sha256sum (keeps a hashing crate out of the tree).
pub fn sha256_file(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum (coreutils) runs");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A scratch directory for one test's files, removed on drop (also when the test panics).
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-e2e-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `len` pseudo-random bytes (from /dev/urandom) to `name` and returns its path.
    pub fn random_file(&self, name: &str, len: u64) -> PathBuf {
        use std::io::Read as _;
        let path = self.path(name);
        let mut src = std::fs::File::open("/dev/urandom")
            .expect("open /dev/urandom")
            .take(len);
        let mut dst = std::fs::File::create(&path).expect("create scratch file");
        std::io::copy(&mut src, &mut dst).expect("fill scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Response headers as curl `-D` wrote them, looked up case-insensitively (the last one wins).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_render_pod_and_service() {
        let yaml = manifests(&[pod("server", &["python", "x.py"])
            .port(8080)
            .annotate("opaque-ports", "2525")]);
        assert!(yaml.contains("kind: Pod"));
        assert!(yaml.contains("weft.io/inject: enabled"));
        assert!(yaml.contains("weft.io/opaque-ports: \"2525\""));
        assert!(yaml.contains("kind: Service"));
        assert!(yaml.contains("port: 8080"));
        assert!(!manifests(&[client_pod()]).contains("kind: Service"));
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let head = "HTTP/1.1 200 OK\r\nX-Pod: a\r\nx-pod: b\r\n\r\n";
        assert_eq!(header(head, "X-POD"), Some("b"));
        assert_eq!(header(head, "missing"), None);
    }
}
