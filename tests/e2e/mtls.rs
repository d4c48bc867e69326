//! mTLS between meshed pods, checked the way an operator would: a packet capture on the pods'
//! bridge, openssl against a proxy's inbound port with certificates crafted for the occasion,
//! unmeshed clients against strict and permissive pods, certificates rotating (and the CA going
//! away) under steady traffic, and the one HTTP/2 connection HTTP/1 traffic rides.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_testbed::{Testbed, TestbedOptions};

use crate::support::*;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/web";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/api";
/// The SNI naming the server's identity (`<sa>.<ns>.sa.<trust domain>`).
const SERVER_SNI: &str = "api.default.sa.cluster.local";

/// `client` (service account web) and `server` (api: HTTP echo on 8080 and 8081, a TCP echo on
/// 7000) are meshed; `outsider` is not. `server_annotations` are added to the server pod.
fn manifests(server_annotations: &[(&str, &str)]) -> String {
    let (py, echo) = (python(), fixture("http_echo.py"));
    let mut extra = String::new();
    for (key, value) in server_annotations {
        extra.push_str(&format!("\n    weft.io/{key}: {value:?}"));
    }
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: default
  labels: {{app: server}}
  annotations:
    weft.io/inject: enabled{extra}
spec:
  serviceAccountName: api
  containers:
  - name: app
    image: fixture
    command: [{py:?}, {echo:?}, "--port", "8080"]
  - name: second
    image: fixture
    command: [{py:?}, {echo:?}, "--port", "8081"]
  - name: tcp-echo
    image: fixture
    command: ["socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"]
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: default}}
spec:
  selector: {{app: server}}
  ports:
  - {{name: http, port: 8080, targetPort: 8080}}
  - {{name: http2nd, port: 8081, targetPort: 8081}}
  - {{name: tcp, port: 7000, targetPort: 7000}}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
  labels: {{app: client}}
  annotations: {{weft.io/inject: enabled}}
spec:
  serviceAccountName: web
  containers:
  - {{name: app, image: fixture, command: [sleep, "3600"]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: outsider
  namespace: default
  labels: {{app: outsider}}
  annotations: {{weft.io/inject: disabled}}
spec:
  containers:
  - {{name: app, image: fixture, command: [sleep, "3600"]}}
"#
    )
}

fn bring_up(server_annotations: &[(&str, &str)], opts: TestbedOptions) -> Testbed {
    let yaml = manifests(server_annotations);
    let tb = Testbed::up(&yaml, opts).unwrap_or_else(|e| panic!("testbed up: {e}\n{yaml}"));
    for port in [8080, 8081, 7000] {
        wait_listening(&tb, "server", port);
    }
    // Discovery must have told the client that the server is meshed before traffic is judged.
    wait_meshed(&tb);
    tb
}

/// Sends requests from the client until one reaches the server over mTLS (discovery answers
/// within about a second of the pods starting).
fn wait_meshed(tb: &Testbed) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = exec(
            tb,
            "client",
            &["curl", "-s", "-o", "/dev/null", "http://server:8080/"],
        );
        if counter(
            tb,
            "server",
            "weft_tls_connections_total",
            &[("direction", "inbound")],
        ) > 0.0
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client's proxy never used mTLS to the server; client proxy log:\n{}",
            logs(tb, "client", "weft-proxy")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn curl(tb: &Testbed, pod: &str, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "--max-time", "10", "-D", "-"];
    argv.extend_from_slice(args);
    String::from_utf8_lossy(&exec(tb, pod, &argv).stdout).into_owned()
}

/// A packet capture on a pod's link (its eth0, the veth to the node's bridge: everything that
/// enters or leaves the pod), stopped on drop.
struct Capture {
    child: Child,
    file: PathBuf,
    /// tcpdump's messages (its packet counts when it stops).
    messages: std::sync::mpsc::Receiver<String>,
}

impl Capture {
    fn start(tb: &Testbed, pod: &str, file: PathBuf) -> Capture {
        let netns = tb.netns_name(pod).expect("the pod's namespace");
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "tcpdump",
                "-i",
                "eth0",
                // Deliver each packet at once: a stop must not lose a buffered block.
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts");
        // tcpdump says "listening on eth0" once it captures; its stderr is drained after that
        // so it never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let mut capture = Capture {
            child,
            file,
            messages: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match capture.messages.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => continue,
                Err(_) => {
                    capture.stop();
                    panic!("tcpdump did not start capturing on the pod's eth0");
                }
            }
        }
        capture
    }

    /// Stops the capture and returns what it caught, and tcpdump's last words.
    fn finish(mut self) -> (Vec<u8>, String) {
        std::thread::sleep(Duration::from_millis(500));
        self.stop();
        let said: Vec<String> = self
            .messages
            .recv_timeout(Duration::from_secs(1))
            .into_iter()
            .chain(self.messages.try_iter())
            .collect();
        (
            std::fs::read(&self.file).expect("the capture file"),
            said.join("; "),
        )
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Between meshed pods only TLS crosses the wire: the capture holds the mesh's ClientHello
/// (SNI of the server's identity, ALPN of the transport) and TLS application records, never the
/// distinctive body; the same body sent by an unmeshed pod in plaintext does show, which proves
/// the capture sees the traffic. The app learns the caller from `weft-client-id`, and a forged
/// copy sent by the client app is dropped.
#[test]
fn only_tls_crosses_the_wire_between_meshed_pods() {
    require(&[("tcpdump", "tcpdump"), ("curl", "curl"), ("socat", "socat")]);
    let tb = bring_up(&[], TestbedOptions::default());
    let scratch = Scratch::new("mtls-capture");
    let meshed_secret = "weft-meshed-secret-7f3a9c1e";
    let plain_secret = "weft-plaintext-control-4b8d2e6f";

    let capture = Capture::start(&tb, "server", scratch.path("server-eth0.pcap"));
    let head = curl(
        &tb,
        "client",
        &["--data-binary", meshed_secret, "http://server:8080/echo"],
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with(meshed_secret), "echoed body: {head}");
    // Opaque TCP opens a new mTLS connection (the HTTP one was set up before the capture).
    let script = format!("printf {meshed_secret} | timeout 5 socat -t 2 - TCP:server:7000");
    let echoed = exec_ok(&tb, "client", &["sh", "-c", &script]);
    assert_eq!(echoed, meshed_secret, "the TCP echo");
    let ip = tb.pod("server").unwrap().ip;
    // The outsider is not meshed, and the server's policy is permissive: plaintext, served.
    let plain = curl(
        &tb,
        "outsider",
        &[
            "--data-binary",
            plain_secret,
            &format!("http://{ip}:8080/echo"),
        ],
    );
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    let (pcap, said) = capture.finish();

    assert!(
        contains(&pcap, plain_secret.as_bytes()),
        "the capture missed the plaintext control ({} bytes; tcpdump: {said})",
        pcap.len()
    );
    assert!(
        !contains(&pcap, meshed_secret.as_bytes()),
        "the meshed body reached the server pod in the clear"
    );
    assert!(
        contains(&pcap, SERVER_SNI.as_bytes()),
        "no ClientHello naming the server's identity"
    );
    assert!(
        contains(&pcap, b"weft.tcp/1"),
        "no ALPN of the TCP transport"
    );
    assert!(
        contains(&pcap, &[0x17, 0x03, 0x03]),
        "no TLS application data records"
    );
    println!(
        "capture: {} bytes; meshed body absent, plaintext control present, TLS records present",
        pcap.len()
    );

    // Who called, as the app sees it; a forged header from the client app does not survive.
    let head = curl(
        &tb,
        "client",
        &[
            "-H",
            "weft-client-id: spiffe://cluster.local/ns/kube-system/sa/admin",
            "http://server:8080/head",
        ],
    );
    let seen: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("weft-client-id:"))
        .collect();
    assert_eq!(seen, [format!("weft-client-id: {CLIENT_ID}")], "{head}");
    // HTTP/1 rides HTTP/2 between the proxies: names arrive lowercase, values intact.
    let head = curl(
        &tb,
        "client",
        &["-H", "X-MiXeD-CaSe: Value", "http://server:8080/head"],
    );
    assert!(head.contains("\r\nx-mixed-case: Value\r\n"), "{head}");
    let plain = curl(
        &tb,
        "outsider",
        &[
            "-H",
            "weft-client-id: spiffe://cluster.local/ns/kube-system/sa/admin",
            &format!("http://{ip}:8080/head"),
        ],
    );
    assert!(
        !plain.to_ascii_lowercase().contains("weft-client-id"),
        "a plaintext caller's forged identity reached the app: {plain}"
    );
}

/// Keys and certificates made with openssl, signed by the testbed's CA or by a stranger.
struct Crafted {
    dir: PathBuf,
    ca_dir: PathBuf,
}

impl Crafted {
    fn new(tb: &Testbed, scratch: &Scratch) -> Crafted {
        let dir = scratch.path("certs");
        std::fs::create_dir_all(&dir).unwrap();
        let foreign = [
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=foreign",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
        ];
        openssl(
            &dir,
            &[&foreign[..], &["foreign-key.pem", "-out", "foreign.pem"]].concat(),
        );
        Crafted {
            dir,
            ca_dir: tb.state_dir().join("identity-ca"),
        }
    }

    /// A key and a leaf for `identity`; returns (cert, key, chain) paths.
    fn leaf(&self, name: &str, identity: &str, foreign: bool, expired: bool) -> [String; 3] {
        let key = format!("{name}-key.pem");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName=URI:{identity}\nextendedKeyUsage=clientAuth,serverAuth\nkeyUsage=critical,digitalSignature\n"
            ),
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=crafted",
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        let (ca, ca_key, chain) = if foreign {
            (
                self.dir.join("foreign.pem"),
                self.dir.join("foreign-key.pem"),
                self.dir.join("foreign.pem"),
            )
        } else {
            (
                self.ca_dir.join("issuer.pem"),
                self.ca_dir.join("issuer-key.pem"),
                self.ca_dir.join("issuer.pem"),
            )
        };
        let days = if expired { "-1" } else { "1" };
        let (ca, ca_key) = (ca.display().to_string(), ca_key.display().to_string());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                days,
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        let path = |f: &str| self.dir.join(f).display().to_string();
        [path(&cert), path(&key), chain.display().to_string()]
    }

    fn anchors(&self) -> String {
        self.ca_dir.join("ca.pem").display().to_string()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Dials the server proxy's inbound port from the node with openssl as a peer proxy would
/// (SNI of the server's identity, ALPN weft.tcp/1, the client certificate given), sends the
/// transport header for app port 8080 with an HTTP/1 payload and a request for /head. Returns
/// openssl's whole output (certificates, session, the HTTP response if any).
fn s_client(tb: &Testbed, leaf: &[String; 3], anchors: &str) -> String {
    let ip = tb.pod("server").unwrap().ip;
    // WEFT, version 1, payload 1 (HTTP/1), port 8080 (0x1f90), then the request.
    let script = format!(
        "printf 'WEFT\\001\\001\\037\\220GET /head HTTP/1.1\\r\\nHost: server\\r\\nConnection: close\\r\\n\\r\\n' \
         | timeout 10 openssl s_client -connect {ip}:4143 -servername {SERVER_SNI} -alpn weft.tcp/1 \
           -cert {} -key {} -cert_chain {} -CAfile {anchors} -verify_return_error -showcerts -ign_eof 2>&1",
        leaf[0], leaf[1], leaf[2]
    );
    let out = tb
        .exec_node(&["sh", "-c", &script])
        .unwrap_or_else(|e| panic!("openssl s_client from the node: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The certificate the server proxy presents carries its SPIFFE id (read by openssl x509), a
/// valid mesh client is served, and a certificate from a foreign CA, an expired one and an
/// identity the port does not allow are each refused.
#[test]
fn the_server_presents_its_identity_and_refuses_bad_client_certificates() {
    require(&[("openssl", "openssl")]);
    let rules = format!("8080={CLIENT_ID}");
    let tb = bring_up(
        &[("allow-identities", rules.as_str())],
        TestbedOptions::default(),
    );
    let scratch = Scratch::new("mtls-openssl");
    let crafted = Crafted::new(&tb, &scratch);

    let good = crafted.leaf("web", CLIENT_ID, false, false);
    let out = s_client(&tb, &good, &crafted.anchors());
    assert!(
        out.contains("HTTP/1.1 200"),
        "a valid client was not served:\n{out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("weft-client-id: {CLIENT_ID}")),
        "{out}"
    );
    // The server's leaf, as openssl x509 reads it.
    let pem_end = "-----END CERTIFICATE-----";
    let leaf_pem = out
        .find("-----BEGIN CERTIFICATE-----")
        .and_then(|start| {
            out[start..]
                .find(pem_end)
                .map(|end| &out[start..start + end + pem_end.len()])
        })
        .unwrap_or_else(|| panic!("no certificate in openssl's output:\n{out}"));
    let leaf_file = scratch.path("server-leaf.pem");
    std::fs::write(&leaf_file, format!("{leaf_pem}\n")).unwrap();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("URI:{SERVER_ID}")), "{text}");
    assert!(text.contains(&format!("DNS:{SERVER_SNI}")), "{text}");

    let refused = |reason: &str| {
        counter(
            &tb,
            "server",
            "weft_inbound_refused_total",
            &[("reason", reason)],
        )
    };
    let handshakes_before = refused("handshake");
    for (what, leaf) in [
        (
            "a foreign CA",
            crafted.leaf("foreign-web", CLIENT_ID, true, false),
        ),
        (
            "an expired certificate",
            crafted.leaf("expired-web", CLIENT_ID, false, true),
        ),
    ] {
        let out = s_client(&tb, &leaf, &crafted.anchors());
        assert!(!out.contains("HTTP/1.1"), "{what} was served:\n{out}");
    }
    assert_eq!(refused("handshake") - handshakes_before, 2.0);

    let unauthorized_before = refused("unauthorized");
    let intruder = crafted.leaf(
        "intruder",
        "spiffe://cluster.local/ns/default/sa/intruder",
        false,
        false,
    );
    let out = s_client(&tb, &intruder, &crafted.anchors());
    assert!(
        !out.contains("HTTP/1.1"),
        "an identity port 8080 does not allow was served:\n{out}"
    );
    assert_eq!(refused("unauthorized") - unauthorized_before, 1.0);
    // The mesh client itself (service account web) is allowed through its proxy.
    let head = curl(&tb, "client", &["http://server:8080/head"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Strict: an unmeshed client gets 403 over HTTP and a closed connection over TCP, counted;
/// the meshed client is served. Permissive (the default) serves the unmeshed client.
#[test]
fn strict_refuses_unmeshed_clients_and_permissive_serves_them() {
    require(&[("curl", "curl"), ("socat", "socat")]);
    let tb = bring_up(&[("inbound-policy", "strict")], TestbedOptions::default());
    let ip = tb.pod("server").unwrap().ip;

    let head = curl(&tb, "outsider", &[&format!("http://{ip}:8080/echo")]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(
        header(&head, "weft-error"),
        Some("forbidden: mTLS required"),
        "{head}"
    );
    let script = format!("echo ping | timeout 5 socat -t 2 - TCP:{ip}:7000");
    let out = exec(&tb, "outsider", &["sh", "-c", &script]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ping"),
        "an unmeshed TCP client got through strict"
    );
    assert!(
        counter(
            &tb,
            "server",
            "weft_inbound_refused_total",
            &[("reason", "plaintext")]
        ) >= 2.0
    );
    let head = curl(&tb, "client", &["http://server:8080/echo"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let out = exec_ok(
        &tb,
        "client",
        &[
            "sh",
            "-c",
            "echo ping | timeout 5 socat -t 2 - TCP:server:7000",
        ],
    );
    assert_eq!(out.trim(), "ping", "the meshed TCP client was not echoed");
    drop(tb);

    let tb = bring_up(&[], TestbedOptions::default());
    let ip = tb.pod("server").unwrap().ip;
    // Served, and counted as plaintext with no identity.
    let plaintext = || {
        counter(
            &tb,
            "server",
            "weft_request_total",
            &[("direction", "inbound"), ("tls", "false")],
        )
    };
    let before = plaintext();
    let head = curl(&tb, "outsider", &[&format!("http://{ip}:8080/echo")]);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "permissive refused: {head}"
    );
    assert_eq!(
        plaintext() - before,
        1.0,
        "the outsider's request was not counted with tls=\"false\""
    );
}

/// Steady traffic from the client for `duration`: each round a new HTTP/1 connection from the
/// app (the proxies keep their mTLS connection) and a TCP echo (a new mTLS handshake each time).
/// Returns (rounds, failures as text).
fn steady_traffic(tb: &Testbed, duration: Duration) -> (u64, Vec<String>) {
    let script = r#"
import json, socket, sys, time, http.client
end = time.time() + float(sys.argv[1])
rounds, failures = 0, []
while time.time() < end:
    rounds += 1
    try:
        conn = http.client.HTTPConnection("server", 8080, timeout=5)
        conn.request("GET", "/echo")
        resp = conn.getresponse(); resp.read(); conn.close()
        if resp.status != 200:
            failures.append(f"http {resp.status} {resp.getheader('weft-error')}")
    except Exception as e:
        failures.append(f"http {e!r}")
    try:
        with socket.create_connection(("server", 7000), timeout=5) as s:
            s.sendall(b"ping\n"); s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(64)
                if not chunk: break
                got += chunk
        if got != b"ping\n":
            failures.append(f"tcp echoed {got!r}")
    except Exception as e:
        failures.append(f"tcp {e!r}")
    time.sleep(0.2)
print(json.dumps({"rounds": rounds, "failures": failures}))
"#;
    let seconds = duration.as_secs().to_string();
    let out = exec_ok(tb, "client", &[&python(), "-c", script, &seconds]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let failures = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_owned())
        .collect();
    (report["rounds"].as_u64().unwrap(), failures)
}

fn renewals(tb: &Testbed, pod: &str, result: &str) -> f64 {
    counter(
        tb,
        pod,
        "weft_identity_renewals_total",
        &[("result", result)],
    )
}

/// With 20 s certificates, 45 s of steady traffic spans several renewals on both proxies with
/// no failed request or connection.
#[test]
fn certificates_rotate_under_steady_traffic_without_failures() {
    let opts = TestbedOptions {
        identity_cert_lifetime: Duration::from_secs(20),
        ..TestbedOptions::default()
    };
    let tb = bring_up(&[], opts);
    let expiry_before = counter(
        &tb,
        "server",
        "weft_identity_cert_expiry_timestamp_seconds",
        &[],
    );
    let (rounds, failures) = steady_traffic(&tb, Duration::from_secs(45));
    let (client, server) = (
        renewals(&tb, "client", "success"),
        renewals(&tb, "server", "success"),
    );
    println!(
        "rotation: {rounds} rounds (HTTP + TCP) in 45 s, {} failures; certificates issued: client {client}, server {server}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failures during rotation: {failures:?}"
    );
    assert!(rounds >= 40, "only {rounds} rounds ran");
    // The first certificate, then a renewal every 14 s.
    assert!(
        client >= 3.0 && server >= 3.0,
        "client {client}, server {server} certificates"
    );
    let expiry_after = counter(
        &tb,
        "server",
        "weft_identity_cert_expiry_timestamp_seconds",
        &[],
    );
    assert!(
        expiry_after > expiry_before,
        "{expiry_before} -> {expiry_after}"
    );
}

/// With the CA gone, renewals fail (counted) but the current certificates keep serving: traffic,
/// new mTLS handshakes included, continues until they expire.
#[test]
fn traffic_continues_while_the_ca_is_down() {
    let opts = TestbedOptions {
        identity_cert_lifetime: Duration::from_secs(40),
        ..TestbedOptions::default()
    };
    let tb = bring_up(&[], opts);
    let ca = tb.pod("weft-identity").expect("the CA pod").name;
    tb.signal(&ca, "identity", nix::sys::signal::Signal::SIGTERM as i32)
        .unwrap();
    assert!(
        tb.wait_exit(&ca, "identity", Duration::from_secs(10))
            .unwrap()
            .is_some(),
        "the CA did not stop"
    );
    // Renewals start failing after 28 s; the certificates expire after 40 s.
    let (rounds, failures) = steady_traffic(&tb, Duration::from_secs(33));
    let failed = renewals(&tb, "client", "failure") + renewals(&tb, "server", "failure");
    println!(
        "CA down: {rounds} rounds in 33 s, {} failures; failed renewals {failed}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failures with the CA down: {failures:?}"
    );
    assert!(
        failed >= 1.0,
        "no renewal was attempted while the CA was down"
    );
}

/// HTTP/1 traffic on many app connections, to two app ports, rides one HTTP/2 connection between
/// the proxies (counted by both), and the app still sees HTTP/1.1.
#[test]
fn http1_traffic_between_two_pods_uses_one_h2_connection() {
    require(&[("curl", "curl")]);
    let tb = bring_up(&[], TestbedOptions::default());
    let tls_open = |pod: &str, direction: &str| {
        counter(
            &tb,
            pod,
            "weft_tls_connections_total",
            &[("direction", direction), ("transport", "h2")],
        )
    };
    // Request metrics say how each request crossed the hop: the server counts it as mTLS from
    // the client's identity, the client counts the response as mTLS from the server's.
    let mtls_requests = || {
        (
            counter(
                &tb,
                "server",
                "weft_request_total",
                &[
                    ("direction", "inbound"),
                    ("tls", "true"),
                    ("src_identity", CLIENT_ID),
                ],
            ),
            counter(
                &tb,
                "client",
                "weft_response_total",
                &[
                    ("direction", "outbound"),
                    ("status_code", "200"),
                    ("tls", "true"),
                    ("dst_identity", SERVER_ID),
                ],
            ),
        )
    };
    let (server_before, client_before) = (
        tls_open("server", "inbound"),
        tls_open("client", "outbound"),
    );
    let (inbound_before, outbound_before) = mtls_requests();
    for round in 0..5 {
        // Two requests per curl (keep-alive), a new curl each round, alternating ports.
        let port = 8080 + round % 2;
        let url = format!("http://server:{port}/head");
        let out = exec_ok(
            &tb,
            "client",
            &["curl", "-sS", "--fail", "--max-time", "10", &url, &url],
        );
        assert_eq!(out.matches("GET /head HTTP/1.1").count(), 2, "{out}");
    }
    let opened_server = tls_open("server", "inbound") - server_before;
    let opened_client = tls_open("client", "outbound") - client_before;
    let total = counter(
        &tb,
        "server",
        "weft_tcp_open_total",
        &[("direction", "inbound"), ("protocol", "tls")],
    );
    println!(
        "10 HTTP/1 requests on 5 app connections: new h2 connections client {opened_client}, server {opened_server}; inbound TLS connections in all {total}"
    );
    let (inbound_after, outbound_after) = mtls_requests();
    assert_eq!(
        inbound_after - inbound_before,
        10.0,
        "the server proxy did not count 10 requests with tls=\"true\" from {CLIENT_ID}"
    );
    assert_eq!(
        outbound_after - outbound_before,
        10.0,
        "the client proxy did not count 10 responses with tls=\"true\" from {SERVER_ID}"
    );
    assert_eq!(
        opened_client, 0.0,
        "the client proxy opened another h2 connection"
    );
    assert_eq!(
        opened_server, 0.0,
        "the server proxy accepted another h2 connection"
    );
    assert_eq!(
        counter(
            &tb,
            "client",
            "weft_tls_connections_total",
            &[("direction", "outbound"), ("transport", "h2")]
        ),
        1.0
    );
}
