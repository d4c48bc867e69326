//! The real `weft-discovery` binary with the file source, watched by a tonic client: what a proxy
//! sees as files in the directory change.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Streaming;
use weft_discovery_api::v1::discovery_client::DiscoveryClient;
use weft_discovery_api::v1::watch_update::Update;
use weft_discovery_api::v1::{Endpoint, WatchRequest, WatchUpdate};

/// The directory and the running service; both go away on drop (and on panic).
struct Discovery {
    dir: PathBuf,
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An address that was free a moment ago, chosen below the kernel's ephemeral range (32768+) so
/// the outgoing connections of tests running beside this one cannot take it before the server
/// binds.
fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    for _ in 0..1000 {
        let port = 20000 + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 12000);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1");
}

impl Discovery {
    fn start(name: &str) -> Discovery {
        let dir =
            std::env::temp_dir().join(format!("weft-discovery-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A port can still be taken between the check and the bind: a server that exits before
        // it is ready is started again on other ports (bounded).
        for _ in 0..5 {
            let (grpc, admin) = (free_port(), free_port());
            let child = Command::new(env!("CARGO_BIN_EXE_weft-discovery"))
                .args(["--source", "file", "--dir"])
                .arg(&dir)
                .args(["--listen", &grpc.to_string(), "--admin", &admin.to_string()])
                .env("WEFT_LOG", "debug")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut discovery = Discovery {
                dir: dir.clone(),
                child,
                grpc,
                admin,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while discovery.get("/ready").0 != 200 {
                assert!(
                    Instant::now() < deadline,
                    "weft-discovery did not become ready"
                );
                if discovery.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if discovery.get("/ready").0 == 200 {
                return discovery;
            }
            // Keep the directory for the next attempt: dropping kills the child and removes
            // only what `dir` still names.
            discovery.dir = PathBuf::new();
        }
        panic!("weft-discovery exited before it became ready five times");
    }

    /// Writes a file the way the testbed does: a temporary name, then a rename.
    fn write(&self, name: &str, yaml: &str) {
        write_atomically(&self.dir.join(name), yaml);
    }

    fn get(&self, path: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(self.admin) else {
            return (0, String::new());
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, response)
    }

    fn metric(&self, line_prefix: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|line| line.strip_prefix(line_prefix)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn watch(&self, target: &str, client_namespace: &str) -> Streaming<WatchUpdate> {
        let mut client = DiscoveryClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap();
        client
            .watch(WatchRequest {
                target: target.into(),
                client_namespace: client_namespace.into(),
                client_pod: "test".into(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {weft.io/timeout: 3s}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// The slice of `web` and the meshed pods behind it, one per IP.
fn endpoints(ips: &[&str]) -> String {
    let mut yaml = String::from(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abcde\n  namespace: shop\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n",
    );
    if ips.is_empty() {
        yaml.push_str("  []\n");
    }
    for (i, ip) in ips.iter().enumerate() {
        yaml.push_str(&format!(
            "  - addresses: [{ip}]\n    conditions: {{ready: true}}\n    zone: zone-a\n    targetRef: {{kind: Pod, name: web-{i}, namespace: shop}}\n"
        ));
    }
    for (i, ip) in ips.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-{i}\n  namespace: shop\n  annotations: {{weft.io/injected: 0.1.0}}\nspec:\n  serviceAccountName: web\n  containers: [{{name: weft-proxy}}, {{name: web}}]\nstatus: {{podIP: {ip}}}\n"
        ));
    }
    yaml
}

async fn next(stream: &mut Streaming<WatchUpdate>) -> Update {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no update within 10s")
        .unwrap()
        .expect("the stream ended")
        .update
        .unwrap()
}

/// Nothing arrives for a while (the service had nothing to say).
async fn quiet(stream: &mut Streaming<WatchUpdate>) {
    if let Ok(update) = tokio::time::timeout(Duration::from_millis(1500), stream.message()).await {
        panic!("unexpected update: {update:?}");
    }
}

fn addrs(endpoints: &[Endpoint]) -> Vec<&str> {
    endpoints.iter().map(|e| e.addr.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_endpoint_changes() {
    let discovery = Discovery::start("changes");
    discovery.write("svc-web.yaml", SERVICE);
    discovery.write("eps-web.yaml", &endpoints(&["10.244.0.1", "10.244.0.2"]));
    // The first scan may land before the files: wait until the service is indexed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery.metric("weft_discovery_service_ports") < 1.0 {
        assert!(Instant::now() < deadline, "the service was never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = discovery.watch("10.96.0.10:80", "").await;
    let Update::Snapshot(snapshot) = next(&mut stream).await else {
        panic!("expected a snapshot")
    };
    let service = snapshot.service.unwrap();
    assert_eq!(
        (
            service.name.as_str(),
            service.namespace.as_str(),
            service.port
        ),
        ("web", "shop", 80)
    );
    assert_eq!(
        addrs(&snapshot.endpoints),
        ["10.244.0.1:8080", "10.244.0.2:8080"]
    );
    let first = &snapshot.endpoints[0];
    assert_eq!(first.identity, "spiffe://cluster.local/ns/shop/sa/web");
    assert!(first.meshed);
    assert_eq!(first.proxy_port, 4143);
    assert_eq!(snapshot.policy.unwrap().timeout_ms, Some(3000));

    discovery.write(
        "eps-web.yaml",
        &endpoints(&["10.244.0.1", "10.244.0.2", "10.244.0.3"]),
    );
    let Update::EndpointsAdded(added) = next(&mut stream).await else {
        panic!("expected an addition")
    };
    assert_eq!(addrs(&added.endpoints), ["10.244.0.3:8080"]);

    discovery.write("eps-web.yaml", &endpoints(&["10.244.0.2", "10.244.0.3"]));
    // Pod names shift with the list, so the survivors' entries change too: removal comes first.
    let Update::EndpointsRemoved(removed) = next(&mut stream).await else {
        panic!("expected a removal")
    };
    assert_eq!(removed.addrs, ["10.244.0.1:8080"]);

    discovery.write("svc-web.yaml", &SERVICE.replace("3s", "250ms"));
    loop {
        match next(&mut stream).await {
            Update::PolicyChanged(changed) => {
                assert_eq!(changed.policy.unwrap().timeout_ms, Some(250));
                break;
            }
            Update::EndpointsAdded(_) => continue,
            other => panic!("expected a policy change, got {other:?}"),
        }
    }
    assert!(discovery.metric("weft_discovery_updates_sent_total{kind=\"snapshot\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_targets_are_not_in_mesh_until_they_appear() {
    let discovery = Discovery::start("unknown");
    let mut by_name = discovery.watch("web:80", "shop").await;
    assert!(matches!(next(&mut by_name).await, Update::NotInMesh(_)));
    let mut by_ip = discovery.watch("192.0.2.1:443", "").await;
    assert!(matches!(next(&mut by_ip).await, Update::NotInMesh(_)));

    discovery.write(
        "web.yaml",
        &format!("{SERVICE}---\n{}", endpoints(&["10.244.0.9"])),
    );
    let Update::Snapshot(snapshot) = next(&mut by_name).await else {
        panic!("expected a snapshot")
    };
    assert_eq!(addrs(&snapshot.endpoints), ["10.244.0.9:8080"]);
    quiet(&mut by_ip).await;

    std::fs::remove_file(discovery.dir.join("web.yaml")).unwrap();
    assert!(matches!(next(&mut by_name).await, Update::NotInMesh(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_keeps_its_last_good_objects_and_the_server_keeps_serving() {
    let discovery = Discovery::start("bad-file");
    discovery.write("svc.yaml", SERVICE);
    discovery.write("eps.yaml", &endpoints(&["10.244.0.1"]));
    let mut stream = discovery.watch("web.shop.svc.cluster.local:80", "").await;
    let mut update = next(&mut stream).await;
    if matches!(update, Update::NotInMesh(_)) {
        update = next(&mut stream).await;
    }
    let Update::Snapshot(snapshot) = update else {
        panic!("expected a snapshot")
    };
    assert_eq!(addrs(&snapshot.endpoints), ["10.244.0.1:8080"]);

    // Half a file (as a writer that does not rename would leave it), then a wrong-typed object.
    let half = endpoints(&["10.244.0.1", "10.244.0.2"]);
    std::fs::write(discovery.dir.join("eps.yaml"), &half[..half.len() / 3]).unwrap();
    quiet(&mut stream).await;
    discovery.write(
        "eps.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x}\nendpoints: 5\n",
    );
    quiet(&mut stream).await;
    assert!(discovery.metric("weft_discovery_source_errors_total") >= 2.0);

    // A new watcher still gets the last good endpoints.
    let mut fresh = discovery.watch("10.96.0.10:80", "").await;
    let Update::Snapshot(snapshot) = next(&mut fresh).await else {
        panic!("expected a snapshot")
    };
    assert_eq!(addrs(&snapshot.endpoints), ["10.244.0.1:8080"]);

    // Fixing the file applies the fix.
    discovery.write("eps.yaml", &endpoints(&["10.244.0.1", "10.244.0.2"]));
    let Update::EndpointsAdded(added) = next(&mut stream).await else {
        panic!("expected an addition")
    };
    assert_eq!(addrs(&added.endpoints), ["10.244.0.2:8080"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_does_not_block_a_fast_one() {
    let discovery = Discovery::start("slow");
    discovery.write("svc.yaml", SERVICE);
    discovery.write("eps.yaml", &endpoints(&["10.244.0.1"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery.metric("weft_discovery_service_ports") < 1.0 {
        assert!(Instant::now() < deadline, "the service was never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The slow watcher is opened and then never read until the end.
    let mut slow = discovery.watch("10.96.0.10:80", "").await;
    let mut fast = discovery.watch("10.96.0.10:80", "").await;
    let mut fast_view: BTreeMap<String, Endpoint> = BTreeMap::new();
    let mut ips: Vec<String> = vec!["10.244.0.1".into()];
    for n in 2..=12 {
        ips.push(format!("10.244.0.{n}"));
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        discovery.write("eps.yaml", &endpoints(&refs));
        while fast_view.len() != n {
            apply(&mut fast_view, next(&mut fast).await);
        }
    }
    let mut slow_view = BTreeMap::new();
    while slow_view.len() != 12 {
        apply(&mut slow_view, next(&mut slow).await);
    }
    assert_eq!(slow_view, fast_view);
    assert_eq!(discovery.metric("weft_discovery_watchers"), 2.0);
}

fn apply(view: &mut BTreeMap<String, Endpoint>, update: Update) {
    match update {
        Update::Snapshot(s) => {
            *view = s
                .endpoints
                .into_iter()
                .map(|e| (e.addr.clone(), e))
                .collect()
        }
        Update::EndpointsAdded(a) => {
            view.extend(a.endpoints.into_iter().map(|e| (e.addr.clone(), e)))
        }
        Update::EndpointsRemoved(r) => r.addrs.iter().for_each(|a| {
            view.remove(a);
        }),
        Update::PolicyChanged(_) => {}
        Update::NotInMesh(_) => view.clear(),
    }
}

#[test]
fn a_missing_directory_stops_start_up_naming_the_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_weft-discovery"))
        .args([
            "--source",
            "file",
            "--dir",
            "/nonexistent/weft-discovery-test",
        ])
        .args([
            "--listen",
            &free_port().to_string(),
            "--admin",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--dir /nonexistent/weft-discovery-test"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_says_when_the_writers_revision_is_served() {
    let discovery = Discovery::start("synced");
    assert_eq!(
        discovery.get("/synced?revision=1").0,
        503,
        "no revision yet"
    );
    assert_eq!(discovery.get("/synced").0, 400);
    discovery.write("svc.yaml", SERVICE);
    discovery.write("eps.yaml", &endpoints(&["10.244.0.1"]));
    write_atomically(&discovery.dir.join("revision"), "1\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery.get("/synced?revision=1").0 != 200 {
        assert!(Instant::now() < deadline, "revision 1 was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Synced means served: a watch now sees what was written with revision 1, at once.
    let mut stream = discovery.watch("10.96.0.10:80", "").await;
    let Update::Snapshot(snapshot) = next(&mut stream).await else {
        panic!("expected a snapshot")
    };
    assert_eq!(addrs(&snapshot.endpoints), ["10.244.0.1:8080"]);
    assert_eq!(discovery.get("/synced?revision=2").0, 503);
}
