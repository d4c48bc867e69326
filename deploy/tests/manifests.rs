//! deploy/manifests as a user installs it: rendered with `kubectl kustomize` (the base, the
//! observability overlay, and an install overlay for another registry and tag as
//! deploy/images/build writes it), every document validated against the Kubernetes 1.33 schema
//! with `kubernetes-validate` (<repo>/.venv, from tests/fixtures/requirements.txt), and the names
//! users and the injector depend on checked. The Prometheus job file goes through `promtool`.
//! The weft-identity image's scripts (CA bootstrap, trust-anchor copies) run against a fake
//! cluster. A missing tool fails the test with the command that installs it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use weft_inject::workload_identity::ANCHORS_CONFIG_MAP;
use weft_inject::{InjectOptions, inject, parse_manifests};

const KUBERNETES_VERSION: &str = "1.33.0";
const NAMESPACE: &str = "weft";
/// Image names under the one registry and tag (DESIGN.md's contract).
const IMAGES: [&str; 4] = [
    "weft-proxy",
    "weft-identity",
    "weft-discovery",
    "weft-injector",
];
/// Kinds kubernetes-validate has no schema for (CRDs); checked field by field below instead.
const CRD_KINDS: [&str; 1] = ["PodMonitor"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/ has a parent")
        .to_path_buf()
}

fn kubectl() -> String {
    std::env::var("WEFT_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// `kubectl kustomize DIR`, as text and as documents.
fn render(dir: &Path) -> (String, Vec<Value>) {
    let output = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{} kustomize` ({e}): install kubectl (Debian package kubernetes-client, \
                 or set WEFT_KUBECTL); the manifests need a kubectl whose kustomize supports components (v4+)",
                kubectl()
            )
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`kubectl kustomize {}` failed: {stderr}",
        dir.display()
    );
    let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
    let docs = parse_manifests(&text)
        .unwrap_or_else(|e| panic!("rendering of {} does not parse: {e}", dir.display()));
    assert!(!docs.is_empty(), "{} renders nothing", dir.display());
    (text, docs)
}

/// Every document of `text` against the Kubernetes schema, strictly (unknown fields fail).
fn validate(name: &str, text: &str) {
    let tool = repo().join(".venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run tests/fixtures/setup-python.sh (kubernetes-validate is in tests/fixtures/requirements.txt)",
        tool.display()
    );
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("manifests-{name}.yaml"));
    std::fs::write(&file, text).expect("write the rendering");
    let output = Command::new(&tool)
        .args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{name} does not validate against Kubernetes {KUBERNETES_VERSION}:\n{report}"
    );
    for line in report
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
    {
        assert!(
            CRD_KINDS
                .iter()
                .any(|kind| line.contains(&format!("kind {kind} "))),
            "{name}: a kind kubernetes-validate cannot check slipped in: {line}"
        );
    }
    let passed = report.lines().filter(|l| l.contains(" passed ")).count();
    assert!(
        passed > 0,
        "{name}: kubernetes-validate checked nothing:\n{report}"
    );
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn find<'a>(docs: &'a [Value], k: &str, n: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == k && name(d) == n)
        .unwrap_or_else(|| panic!("no {k} {n} in the rendering"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Pod specs of workloads (Deployment, Job).
fn pod_specs(docs: &[Value]) -> impl Iterator<Item = (&str, &Value)> {
    docs.iter()
        .filter(|d| matches!(kind(d), "Deployment" | "Job" | "DaemonSet" | "StatefulSet"))
        .map(|d| (name(d), &d["spec"]["template"]["spec"]))
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|key| spec[key].as_array())
        .flatten()
}

fn env<'a>(container: &'a Value, var: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)?
        .get("value")?
        .as_str()
}

/// `registry/name:tag` split into its parts.
fn split_image(image: &str) -> (&str, &str, &str) {
    let (rest, tag) = image
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("image {image} has no tag"));
    let (registry, name) = rest
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("image {image} has no registry"));
    (registry, name, tag)
}

/// Every Weft image in the rendering (containers, and the proxy image the injector hands out),
/// as (registry, name, tag); third-party images (Jaeger) are left out.
fn weft_images(docs: &[Value]) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for (_, spec) in pod_specs(docs) {
        for c in containers(spec) {
            let mut refs: Vec<&str> = c["image"].as_str().into_iter().collect();
            refs.extend(env(c, "WEFT_INJECTOR_PROXY_IMAGE"));
            for image in refs {
                let (registry, name, tag) = split_image(image);
                if name.starts_with("weft-") {
                    found.push((registry.to_owned(), name.to_owned(), tag.to_owned()));
                }
            }
        }
    }
    found
}

fn assert_one_registry_and_tag(docs: &[Value], registry: &str, tag: &str) {
    let images = weft_images(docs);
    let names: BTreeSet<&str> = images.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, IMAGES.into_iter().collect(), "{images:?}");
    for (r, n, t) in &images {
        assert_eq!(
            (r.as_str(), t.as_str()),
            (registry, tag),
            "{n} is not under {registry} with tag {tag}: {images:?}"
        );
    }
}

#[test]
fn base_renders_validates_and_keeps_the_contract() {
    let dir = repo().join("deploy/manifests");
    let (text, docs) = render(&dir);
    validate("base", &text);

    // One namespace, and everything namespaced lives in it.
    assert_eq!(find(&docs, "Namespace", NAMESPACE)["kind"], "Namespace");
    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    ];
    for doc in docs.iter().filter(|d| !cluster_scoped.contains(&kind(d))) {
        assert_eq!(
            doc.pointer("/metadata/namespace").and_then(Value::as_str),
            Some(NAMESPACE),
            "{} {} is not in namespace {NAMESPACE}",
            kind(doc),
            name(doc)
        );
    }

    // The Services the injector points proxies at, on the ports it names.
    let injector = find(&docs, "Deployment", "weft-injector");
    let injector_container = &injector["spec"]["template"]["spec"]["containers"][0];
    for (var, service) in [
        ("WEFT_INJECTOR_DISCOVERY_ADDR", "weft-discovery"),
        ("WEFT_INJECTOR_IDENTITY_ADDR", "weft-identity"),
    ] {
        let addr = env(injector_container, var).unwrap_or_else(|| panic!("injector has no {var}"));
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        assert_eq!(
            host,
            format!("{service}.{NAMESPACE}.svc.cluster.local"),
            "{var}"
        );
        let port: u64 = port.parse().expect("a port number");
        let svc = find(&docs, "Service", service);
        assert!(
            svc["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["port"] == port),
            "Service {service} does not serve port {port} named by {var}"
        );
    }
    let webhook_svc = find(&docs, "Service", "weft-injector");
    assert_eq!(webhook_svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(webhook_svc["spec"]["ports"][0]["targetPort"], "https");
    assert_eq!(
        env(injector_container, "WEFT_INJECTOR_LISTEN"),
        Some("0.0.0.0:8443")
    );
    assert_eq!(
        env(injector_container, "WEFT_INJECTOR_PATCH_WEBHOOK_CONFIG"),
        Some("weft-injector")
    );

    // The webhook never blocks a pod, never touches the control plane or kube-system.
    let mwc = find(&docs, "MutatingWebhookConfiguration", "weft-injector");
    let webhooks = mwc["webhooks"].as_array().expect("webhooks");
    assert!(!webhooks.is_empty());
    for hook in webhooks {
        assert_eq!(hook["failurePolicy"], "Ignore", "{hook}");
        assert_eq!(hook["sideEffects"], "None", "{hook}");
        let timeout = hook["timeoutSeconds"].as_u64().expect("timeoutSeconds set");
        assert!((1..=10).contains(&timeout), "timeoutSeconds {timeout}");
        assert!(strings(&hook["admissionReviewVersions"]).contains(&"v1"));
        assert!(
            hook["clientConfig"].get("caBundle").is_none(),
            "the injector sets caBundle itself"
        );
        let service = &hook["clientConfig"]["service"];
        assert_eq!(
            (&service["name"], &service["namespace"], &service["path"]),
            (
                &Value::from("weft-injector"),
                &Value::from(NAMESPACE),
                &Value::from("/inject")
            )
        );
        let excluded: BTreeSet<&str> = hook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .expect("namespaceSelector.matchExpressions")
            .iter()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .flat_map(|e| strings(&e["values"]))
            .collect();
        assert!(
            excluded.contains(NAMESPACE) && excluded.contains("kube-system"),
            "namespaceSelector must exclude {NAMESPACE} and kube-system: {excluded:?}"
        );
        let rule = &hook["rules"][0];
        assert_eq!(strings(&rule["resources"]), ["pods"]);
        assert_eq!(strings(&rule["operations"]), ["CREATE"]);
    }
    // Its RBAC: the caBundle of that one configuration, nothing broader.
    let role = find(&docs, "ClusterRole", "weft-injector");
    let mwc_rule = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| strings(&r["resources"]) == ["mutatingwebhookconfigurations"])
        .expect("a rule for mutatingwebhookconfigurations");
    assert_eq!(strings(&mwc_rule["resourceNames"]), ["weft-injector"]);
    assert_eq!(strings(&mwc_rule["verbs"]), ["get", "patch"]);

    // The CA: TokenReview through system:auth-delegator; its Secret made by a Job whose RBAC is
    // a Role in the control plane's namespace (no ClusterRole reaches Secrets).
    let review = find(&docs, "ClusterRoleBinding", "weft-identity-tokenreview");
    assert_eq!(review["roleRef"]["name"], "system:auth-delegator");
    assert_eq!(review["subjects"][0]["name"], "weft-identity");
    assert_eq!(review["subjects"][0]["namespace"], NAMESPACE);
    let ca = &find(&docs, "Deployment", "weft-identity")["spec"]["template"]["spec"];
    assert_eq!(ca["serviceAccountName"], "weft-identity");
    assert_eq!(
        env(&ca["containers"][0], "WEFT_IDENTITY_AUTHENTICATOR"),
        Some("kubernetes")
    );
    assert!(
        ca["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["secret"]["secretName"] == "weft-identity-ca"),
        "the CA serves from the Secret weft-identity-ca"
    );
    let job = &find(&docs, "Job", "weft-identity-ca-init")["spec"]["template"]["spec"];
    assert_eq!(
        env(&job["containers"][0], "WEFT_CA_SECRET"),
        Some("weft-identity-ca")
    );
    assert_eq!(
        strings(&job["containers"][0]["command"]),
        ["weft-ca-bootstrap"]
    );
    assert!(find(&docs, "Role", "weft-identity-bootstrap")["rules"].is_array());
    for role in docs.iter().filter(|d| kind(d) == "ClusterRole") {
        for rule in role["rules"].as_array().expect("rules") {
            assert!(
                !strings(&rule["resources"]).contains(&"secrets"),
                "ClusterRole {} reaches Secrets",
                name(role)
            );
        }
    }

    // Discovery may list and watch what its Kubernetes source reads.
    let discovery = find(&docs, "ClusterRole", "weft-discovery");
    for (group, resource) in [
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        assert!(
            discovery["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .any(|r| {
                    strings(&r["apiGroups"]).contains(&group)
                        && strings(&r["resources"]).contains(&resource)
                        && ["list", "watch"]
                            .iter()
                            .all(|v| strings(&r["verbs"]).contains(v))
                }),
            "weft-discovery cannot list/watch {resource}"
        );
    }
    let discovery_pod = &find(&docs, "Deployment", "weft-discovery")["spec"]["template"]["spec"];
    assert_eq!(
        env(&discovery_pod["containers"][0], "WEFT_DISCOVERY_SOURCE"),
        Some("kubernetes")
    );

    // Trust anchors: the ConfigMap the injector mounts is the one copied into every namespace.
    let sync = &find(&docs, "Deployment", "weft-trust-anchors")["spec"]["template"]["spec"];
    assert_eq!(
        env(&sync["containers"][0], "WEFT_TRUST_ANCHORS_CONFIGMAP"),
        Some(ANCHORS_CONFIG_MAP)
    );
    assert_eq!(
        env(&job["containers"][0], "WEFT_TRUST_ANCHORS_CONFIGMAP"),
        Some(ANCHORS_CONFIG_MAP)
    );

    // Images: one registry and tag, the proxy's the same one weft-inject hands out by default.
    let (registry, _, tag) = split_image(weft_settings::DEFAULT_PROXY_IMAGE);
    assert_one_registry_and_tag(&docs, registry, tag);
    assert_eq!(
        env(injector_container, "WEFT_INJECTOR_PROXY_IMAGE"),
        Some(weft_settings::DEFAULT_PROXY_IMAGE)
    );

    // Control-plane pods are never injected into (the webhook's objectSelector key) and run as
    // non-root with a read-only root file system.
    for (workload, spec) in pod_specs(&docs) {
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{workload}");
        for c in containers(spec) {
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{workload}/{}",
                c["name"]
            );
        }
    }
    for doc in docs
        .iter()
        .filter(|d| matches!(kind(d), "Deployment" | "Job"))
    {
        assert!(
            doc.pointer("/spec/template/metadata/labels/weft.io~1control-plane")
                .is_some(),
            "{} {} lacks the weft.io/control-plane label",
            kind(doc),
            name(doc)
        );
    }
}

#[test]
fn install_overlay_moves_every_image_to_another_registry_and_tag() {
    // What deploy/images/overlay.sh writes, beside the checkout so the base is a relative path.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("weft-install-test");
    std::fs::create_dir_all(&dir).expect("create the overlay directory");
    let base = repo().join("deploy/manifests");
    let mut kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\nimages:\n",
        relative(&dir, &base).display()
    );
    for image in IMAGES {
        kustomization.push_str(&format!(
            "  - name: ghcr.io/weft-mesh/{image}\n    newName: registry.example.com/mesh/{image}\n    newTag: \"1.2.3-rc.1\"\n"
        ));
    }
    std::fs::write(dir.join("kustomization.yaml"), kustomization).expect("write the overlay");
    let (text, docs) = render(&dir);
    validate("install-overlay", &text);
    assert_one_registry_and_tag(&docs, "registry.example.com/mesh", "1.2.3-rc.1");
}

#[test]
fn observability_overlay_adds_jaeger_and_scrapes_the_port_the_injector_names() {
    let (text, docs) = render(&repo().join("deploy/manifests/observability"));
    validate("observability", &text);

    let jaeger = find(&docs, "Service", "jaeger");
    let ports: BTreeSet<u64> = jaeger["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(ports, [4317, 4318, 16686].into_iter().collect());
    let jaeger_pod = &find(&docs, "Deployment", "jaeger")["spec"]["template"]["spec"];
    assert!(
        jaeger_pod["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("jaegertracing/jaeger:2.")),
        "Jaeger v2"
    );

    // The injector names the proxy's admin port; the PodMonitor and prometheus.yml select it.
    let admin_port = injected_admin_port_name();
    let monitor = find(&docs, "PodMonitor", "weft-proxies");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["spec"]["namespaceSelector"]["any"], true);
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"],
        admin_port.as_str()
    );
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["path"],
        "/metrics"
    );
    let control = find(&docs, "PodMonitor", "weft-control-plane");
    for component in ["weft-identity", "weft-discovery"] {
        let pod = &find(&docs, "Deployment", component)["spec"]["template"]["spec"];
        let names: Vec<&str> = pod["containers"][0]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            names.contains(
                &control["spec"]["podMetricsEndpoints"][0]["port"]
                    .as_str()
                    .unwrap_or("")
            ),
            "{component} has no port the control-plane PodMonitor scrapes: {names:?}"
        );
    }

    let prometheus = std::fs::read_to_string(
        repo().join("deploy/manifests/components/prometheus/prometheus.yml"),
    )
    .expect("prometheus.yml");
    assert!(
        prometheus.contains(&format!("regex: {admin_port}")),
        "prometheus.yml does not keep the {admin_port} port"
    );
    promtool_check(&prometheus);
}

/// The name of the port 4191 on the proxy container weft-inject adds.
fn injected_admin_port_name() -> String {
    let pod = parse_manifests(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop, annotations: {weft.io/inject: enabled}}\nspec: {containers: [{name: app, image: app}]}\n",
    )
    .expect("a pod");
    let injected = inject(pod, &InjectOptions::default()).expect("inject");
    // A native sidecar by default: among the init containers.
    let proxy = injected[0]["spec"]["initContainers"]
        .as_array()
        .expect("initContainers")
        .iter()
        .find(|c| c["name"] == weft_inject::PROXY_CONTAINER)
        .expect("the proxy container")
        .clone();
    proxy["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["containerPort"] == u64::from(weft_settings::ADMIN_PORT))
        .and_then(|p| p["name"].as_str())
        .expect("a named admin port")
        .to_owned()
}

/// `promtool check config`. Debian's promtool is built without Kubernetes service discovery
/// ("field kubernetes_sd_configs not found"): then the same file is checked with each job's
/// kubernetes_sd_configs swapped for a static target, so everything else is still checked.
fn promtool_check(config: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let run = |text: &str, file: &str| {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write the config");
        Command::new("promtool")
            .args(["check", "config"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run promtool ({e}): apt-get install prometheus (tests/install-deps does)")
            })
    };
    let output = run(config, "prometheus.yml");
    if output.status.success() {
        return;
    }
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        report.contains("field kubernetes_sd_configs not found"),
        "promtool rejects prometheus.yml:\n{report}"
    );
    let jobs = config.matches("kubernetes_sd_configs:").count();
    assert!(jobs > 0);
    let mut swapped = String::new();
    let mut lines = config.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "kubernetes_sd_configs:" {
            let indent = &line[..line.len() - line.trim_start().len()];
            swapped.push_str(&format!(
                "{indent}static_configs:\n{indent}  - targets: [\"127.0.0.1:4191\"]\n"
            ));
            // Skip the block: lines indented deeper than the key.
            while lines
                .peek()
                .is_some_and(|l| l.len() - l.trim_start().len() > indent.len())
            {
                lines.next();
            }
        } else {
            swapped.push_str(line);
            swapped.push('\n');
        }
    }
    let output = run(&swapped, "prometheus-static.yml");
    assert!(
        output.status.success(),
        "promtool rejects prometheus.yml (kubernetes_sd_configs swapped for static targets):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `to` relative to `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

// ---- The CA bootstrap and trust-anchor scripts of the weft-identity image, against a fake
// cluster: deploy/images/testdata/fake-kubectl keeps objects in files and renders them with the
// real kubectl, so the scripts' kubectl output formats are kubectl's own.

/// A fake cluster with namespaces, the fake kubectl and weft-identity first on PATH.
struct FakeCluster {
    root: PathBuf,
    path: String,
    real_kubectl: PathBuf,
}

impl FakeCluster {
    fn new(test: &str, namespaces: &[&str]) -> Self {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fake-cluster-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("create the fake cluster");
        for (fake, as_name) in [
            ("fake-kubectl", "kubectl"),
            ("fake-weft-identity", "weft-identity"),
        ] {
            let target = bin.join(as_name);
            std::fs::copy(repo().join("deploy/images/testdata").join(fake), &target)
                .expect("install a fake");
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .expect("make the fake executable");
        }
        let real_kubectl = which(&kubectl());
        let cluster = Self {
            path: format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
            root,
            real_kubectl,
        };
        for ns in namespaces {
            cluster.add_namespace(ns);
        }
        std::fs::write(cluster.root.join("calls"), "").expect("calls");
        cluster
    }

    fn add_namespace(&self, ns: &str) {
        std::fs::create_dir_all(self.root.join("ns").join(ns)).expect("namespace");
    }

    fn object(&self, ns: &str, kind: &str, name: &str) -> PathBuf {
        self.root.join("ns").join(ns).join(kind).join(name)
    }

    fn read(&self, ns: &str, kind: &str, name: &str, key: &str) -> Option<String> {
        std::fs::read_to_string(self.object(ns, kind, name).join(key)).ok()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.root.join("calls")).unwrap_or_default()
    }

    fn script(&self, name: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .arg(repo().join("deploy/images").join(name))
            .env("PATH", &self.path)
            .env("FAKE_CLUSTER", &self.root)
            .env("REAL_KUBECTL", &self.real_kubectl)
            .env("WEFT_NAMESPACE", NAMESPACE)
            .env("WEFT_CA_SECRET", "weft-identity-ca")
            .env("WEFT_TRUST_ANCHORS_CONFIGMAP", ANCHORS_CONFIG_MAP);
        command
    }

    fn bootstrap(&self, extra_env: &[(&str, &str)]) -> String {
        let output = self
            .script("weft-ca-bootstrap")
            .envs(extra_env.iter().copied())
            .env("WEFT_TRUST_DOMAIN", "prod.example")
            .output()
            .expect("run weft-ca-bootstrap");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "weft-ca-bootstrap failed:\n{text}");
        text
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The absolute path of `program` on PATH (the fake kubectl calls the real one by it).
fn which(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not on PATH: install kubectl (or set WEFT_KUBECTL)")
        })
}

const CA_FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "issuer.pem",
    "issuer-key.pem",
    "token-signing-key.pem",
    "trust-domain",
];

#[test]
fn ca_bootstrap_creates_the_ca_once_and_publishes_its_anchor() {
    let cluster = FakeCluster::new("bootstrap", &[NAMESPACE, "shop"]);
    let first = cluster.bootstrap(&[]);
    assert!(
        first.contains("creating a CA for trust domain prod.example"),
        "{first}"
    );
    for file in CA_FILES {
        assert!(
            cluster
                .read(NAMESPACE, "secret", "weft-identity-ca", file)
                .is_some(),
            "the Secret lacks {file}"
        );
    }
    assert_eq!(
        cluster
            .read(NAMESPACE, "secret", "weft-identity-ca", "trust-domain")
            .as_deref(),
        Some("prod.example\n")
    );
    let anchor = cluster
        .read(NAMESPACE, "secret", "weft-identity-ca", "ca.pem")
        .expect("ca.pem");
    assert!(anchor.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        cluster
            .read(NAMESPACE, "configmap", ANCHORS_CONFIG_MAP, "ca.pem")
            .as_deref(),
        Some(anchor.as_str()),
        "the trust-anchor ConfigMap holds the Secret's ca.pem"
    );

    // Again: nothing is created, the CA is the same.
    let before = cluster.calls().lines().count();
    let second = cluster.bootstrap(&[]);
    assert!(second.contains("exists: keeping the CA"), "{second}");
    let new_calls: Vec<String> = cluster
        .calls()
        .lines()
        .skip(before)
        .map(str::to_owned)
        .collect();
    assert!(
        new_calls.iter().all(|c| !c.contains(" create ")),
        "a second run created something: {new_calls:?}"
    );
    assert_eq!(
        cluster
            .read(NAMESPACE, "secret", "weft-identity-ca", "ca.pem")
            .as_deref(),
        Some(anchor.as_str())
    );

    // The anchor ConfigMap is re-made from the Secret when it goes missing, never from a new CA.
    std::fs::remove_dir_all(cluster.object(NAMESPACE, "configmap", ANCHORS_CONFIG_MAP))
        .expect("delete the ConfigMap");
    cluster.bootstrap(&[]);
    assert_eq!(
        cluster
            .read(NAMESPACE, "configmap", ANCHORS_CONFIG_MAP, "ca.pem")
            .as_deref(),
        Some(anchor.as_str())
    );

    // Losing the race to another run (the Secret appears between the check and the create):
    // the other run's CA is kept and published.
    std::fs::remove_dir_all(cluster.object(NAMESPACE, "configmap", ANCHORS_CONFIG_MAP))
        .expect("delete the ConfigMap");
    let raced = cluster.bootstrap(&[("FAKE_SECRET_HIDDEN", "1")]);
    assert!(raced.contains("made by another run: keeping it"), "{raced}");
    assert_eq!(
        cluster
            .read(NAMESPACE, "secret", "weft-identity-ca", "ca.pem")
            .as_deref(),
        Some(anchor.as_str())
    );
}

/// Kills the sync loop however the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 100 ms for up to 15 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..150 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn trust_anchor_sync_keeps_a_copy_in_every_namespace() {
    let cluster = FakeCluster::new(
        "sync",
        &[
            NAMESPACE,
            "shop",
            "kube-system",
            "kube-public",
            "kube-node-lease",
        ],
    );
    cluster.bootstrap(&[]);
    let anchor = cluster
        .read(NAMESPACE, "configmap", ANCHORS_CONFIG_MAP, "ca.pem")
        .expect("the source ConfigMap");
    let copy = |ns: &str| cluster.read(ns, "configmap", ANCHORS_CONFIG_MAP, "ca.pem");

    let _sync = Running(
        cluster
            .script("weft-trust-anchors-sync")
            .env("WEFT_SYNC_INTERVAL", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start weft-trust-anchors-sync"),
    );
    eventually("shop has a copy", || {
        copy("shop").as_deref() == Some(&anchor)
    });
    let managed_by = std::fs::read_to_string(
        cluster
            .root
            .join("ns/shop/configmap")
            .join(format!(".{ANCHORS_CONFIG_MAP}.managed-by")),
    )
    .expect("the copy's label");
    assert_eq!(
        managed_by.trim(),
        "weft-trust-anchors",
        "uninstall finds copies by it"
    );

    // A namespace made later gets its copy; an edited source reaches the copies.
    cluster.add_namespace("late");
    eventually("a new namespace has a copy", || {
        copy("late").as_deref() == Some(&anchor)
    });
    let bundle = format!("{anchor}-----BEGIN CERTIFICATE-----\nnew\n-----END CERTIFICATE-----\n");
    std::fs::write(
        cluster
            .object(NAMESPACE, "configmap", ANCHORS_CONFIG_MAP)
            .join("ca.pem"),
        &bundle,
    )
    .expect("edit the source");
    eventually("the edited bundle reaches shop and late", || {
        copy("shop").as_deref() == Some(&bundle) && copy("late").as_deref() == Some(&bundle)
    });

    // Steady state: passes go on (namespaces listed again) but nothing is written.
    let applies = || cluster.calls().matches("apply --server-side").count();
    let settled = applies();
    let listed = cluster.calls().matches("get namespaces").count();
    eventually("two more passes", || {
        cluster.calls().matches("get namespaces").count() >= listed + 2
    });
    assert_eq!(applies(), settled, "an unchanged copy was rewritten");
    for skipped in ["kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(copy(skipped), None, "{skipped} got a copy");
    }
    assert_eq!(
        cluster
            .read(NAMESPACE, "configmap", ANCHORS_CONFIG_MAP, "ca.pem")
            .as_deref(),
        Some(bundle.as_str()),
        "the source is never overwritten"
    );
}

#[test]
fn trust_anchor_sync_refuses_a_bad_interval_naming_it() {
    let cluster = FakeCluster::new("interval", &[NAMESPACE]);
    let output = cluster
        .script("weft-trust-anchors-sync")
        .env("WEFT_SYNC_INTERVAL", "30s")
        .output()
        .expect("run weft-trust-anchors-sync");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("WEFT_SYNC_INTERVAL=30s"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The lines of build-offline's shell function `name` (from `name() {` to the closing `}`).
fn shell_function<'a>(script: &'a str, name: &str) -> Vec<&'a str> {
    script
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{name}() {{")))
        .skip(1)
        .take_while(|l| *l != "}")
        .collect()
}

/// What build-offline's `case` in function `name` says for `image` (the `*)` arm otherwise).
fn offline_value(script: &str, name: &str, image: &str) -> String {
    let lines = shell_function(script, name);
    let arm = |label: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{label})")))
            .and_then(|l| l.split('"').nth(1))
            .map(str::to_owned)
    };
    arm(image)
        .or_else(|| arm("*"))
        .unwrap_or_else(|| panic!("build-offline's {name} has no answer for {image}"))
}

#[test]
fn dockerfile_and_offline_build_make_the_same_images() {
    let dockerfile =
        std::fs::read_to_string(repo().join("deploy/images/Dockerfile")).expect("Dockerfile");
    let offline =
        std::fs::read_to_string(repo().join("deploy/images/build-offline")).expect("build-offline");
    let stage = |name: &str| -> String {
        let start = dockerfile
            .find(&format!(" AS {name}\n"))
            .unwrap_or_else(|| panic!("the Dockerfile has no stage {name}"));
        let rest = &dockerfile[start..];
        rest[..rest[1..].find("\nFROM ").map_or(rest.len(), |i| i + 1)].to_owned()
    };
    let installed = |text: &str| -> BTreeSet<String> {
        text.split("apt-get install -y --no-install-recommends ")
            .skip(1)
            .flat_map(|rest| {
                rest.split(['\\', '&', '\n'])
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let base = installed(&stage("runtime"));
    for image in IMAGES {
        let stage = stage(image);
        let mut packages = base.clone();
        packages.extend(installed(&stage));
        // passwd is in Debian's slim image already; minbase needs it for useradd.
        let offline_packages: BTreeSet<String> = offline_value(&offline, "packages_of", image)
            .split(',')
            .filter(|p| *p != "passwd")
            .map(str::to_owned)
            .collect();
        assert_eq!(
            packages, offline_packages,
            "{image}: Debian packages differ"
        );
        let user = offline_value(&offline, "user_of", image);
        assert!(
            stage.contains(&format!("\nUSER {user}\n")),
            "{image}: the Dockerfile's USER is not build-offline's {user}"
        );
        let ports = offline_value(&offline, "ports_of", image);
        assert!(
            stage.contains(&format!("\nEXPOSE {ports}\n")),
            "{image}: the Dockerfile exposes other ports than build-offline's {ports}"
        );
        assert!(
            stage.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{image}\"]")),
            "{image}: entrypoint"
        );
        assert!(
            stage.contains(&format!("org.opencontainers.image.title=\"{image}\"")),
            "{image}: OCI title label"
        );
    }
}
