//! The real weft-identity binary: ca init, serve on 127.0.0.1, token, and Certify over TLS from a
//! tonic client with a real CSR, checked with x509-parser and with `openssl`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_identity_api::v1::identity_client::IdentityClient;
use weft_identity_api::{CertifyRequest, ca_channel};
use weft_tls::{SpiffeId, TrustAnchors, WorkloadKey};

const BIN: &str = env!("CARGO_BIN_EXE_weft-identity");

/// A temporary directory removed on drop (and on panic).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("weft-identity-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The serving CA process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A port that was free a moment ago, chosen below the kernel's ephemeral range (32768+) so the
/// outgoing connections of tests running beside this one cannot take it before the server binds.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    for _ in 0..1000 {
        let port = 20000 + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 12000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1");
}

/// Starts `weft-identity serve` on fresh ports and waits for /ready. A port can still be taken
/// between the check and the bind, so a server that exits before it is ready is started again on
/// other ports (bounded).
fn serve(dir: &str, extra: &[&str]) -> (Server, String, SocketAddr) {
    for _ in 0..5 {
        let listen = format!("127.0.0.1:{}", free_port());
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut server = Server(
            Command::new(BIN)
                .args(["serve", "--dir", dir, "--listen", &listen])
                .args(["--admin-listen", &admin.to_string()])
                .args(extra)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..100 {
            if http_get(admin, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return (server, listen, admin);
            }
            if server.0.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("weft-identity serve did not become ready");
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn token(dir: &Path, ns: &str, sa: &str, lifetime: &str) -> String {
    let out = run(&[
        "token",
        "--dir",
        dir.to_str().unwrap(),
        "--namespace",
        ns,
        "--service-account",
        sa,
        "--lifetime",
        lifetime,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_over_tls_with_local_tokens() {
    let tmp = TempDir::new("certify");
    let dir = tmp.0.join("ca");
    let dir_s = dir.to_str().unwrap();

    let out = run(&["ca", "init", "--dir", dir_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in ["ca-key.pem", "issuer-key.pem", "token-signing-key.pem"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = run(&["ca", "init", "--dir", dir_s]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let (_server, listen, admin) = serve(
        dir_s,
        &[
            "--authenticator",
            "local",
            "--cert-lifetime",
            "1h",
            "--backdate",
            "2m",
        ],
    );

    let anchors = TrustAnchors::from_pem_file(&dir.join("ca.pem")).unwrap();
    let channel = ca_channel(&listen, &anchors, "cluster.local", Duration::from_secs(5)).unwrap();
    let mut client = IdentityClient::new(channel);
    let web = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
    let key = WorkloadKey::generate().unwrap();
    let request = |token: String, identity: &SpiffeId| CertifyRequest {
        token,
        certificate_signing_request: key.csr_der(identity).unwrap(),
        identity: identity.uri(),
    };

    // Issued: the leaf names the identity, lives 1h (+2m backdate), and chains to the anchor.
    let response = client
        .certify(request(token(&dir, "shop", "web", "1h"), &web))
        .await
        .unwrap()
        .into_inner();
    let info = weft_tls::certificate::inspect(&response.leaf_certificate).unwrap();
    assert_eq!(info.identity, web);
    assert_eq!(
        info.not_after.duration_since(info.not_before).unwrap(),
        Duration::from_secs(3600 + 120)
    );
    let leaf_pem = tmp.0.join("leaf.pem");
    let issuer_pem = tmp.0.join("chain.pem");
    std::fs::write(
        &leaf_pem,
        weft_tls::pem::encode_pem("CERTIFICATE", &response.leaf_certificate),
    )
    .unwrap();
    std::fs::write(
        &issuer_pem,
        weft_tls::pem::encode_pem("CERTIFICATE", &response.intermediate_certificates[0]),
    )
    .unwrap();
    let text = openssl(&["x509", "-in", leaf_pem.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/shop/sa/web"),
        "{text}"
    );
    assert!(text.contains("DNS:web.shop.sa.cluster.local"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    let verified = openssl(&[
        "verify",
        "-CAfile",
        dir.join("ca.pem").to_str().unwrap(),
        "-untrusted",
        issuer_pem.to_str().unwrap(),
        leaf_pem.to_str().unwrap(),
    ]);
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");
    let mut chain = vec![response.leaf_certificate.clone().into()];
    chain.push(response.intermediate_certificates[0].clone().into());
    key.certified_key(chain).expect("the leaf is for our key");

    // Refused: another identity than the token proves, a bad token, an expired token.
    let admin_id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/admin").unwrap();
    let status = client
        .certify(request(token(&dir, "shop", "web", "1h"), &admin_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("spiffe://cluster.local/ns/shop/sa/admin")
            && status
                .message()
                .contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{}",
        status.message()
    );
    let mut forged = token(&dir, "shop", "web", "1h");
    forged.replace_range(0..4, "AAAA");
    let status = client.certify(request(forged, &web)).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "{}",
        status.message()
    );
    let status = client
        .certify(request(token(&dir, "shop", "web", "0s"), &web))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
    let mut bad_csr = request(token(&dir, "shop", "web", "1h"), &web);
    bad_csr.certificate_signing_request.truncate(20);
    let status = client.certify(bad_csr).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Counted on the admin port.
    let metrics = http_get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("weft_identity_certificates_issued_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_identity_certify_refusals_total{reason=\"unauthenticated\"} 2"),
        "{metrics}"
    );

    // A client expecting another trust domain refuses the CA's certificate.
    let foreign = ca_channel(&listen, &anchors, "other.domain", Duration::from_secs(5)).unwrap();
    let status = IdentityClient::new(foreign)
        .certify(request(token(&dir, "shop", "web", "1h"), &web))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[test]
fn token_and_serve_name_bad_input() {
    let tmp = TempDir::new("bad");
    let out = run(&[
        "token",
        "--dir",
        tmp.0.to_str().unwrap(),
        "--namespace",
        "Shop",
        "--service-account",
        "web",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"Shop\""));
    let out = run(&[
        "serve",
        "--dir",
        tmp.0.to_str().unwrap(),
        "--cert-lifetime",
        "1d",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cert-lifetime"));
    let out = run(&[
        "serve",
        "--dir",
        tmp.0.join("missing").to_str().unwrap(),
        "--authenticator",
        "local",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_certify_command_checks_a_ca_end_to_end() {
    let tmp = TempDir::new("cli");
    let dir = tmp.0.join("ca");
    let dir_s = dir.to_str().unwrap();
    assert!(
        run(&["ca", "init", "--dir", dir_s, "--trust-domain", "mesh.test"])
            .status
            .success()
    );
    let (_server, listen, _admin) = serve(dir_s, &["--authenticator", "local"]);
    let token_file = tmp.0.join("token");
    std::fs::write(&token_file, token(&dir, "shop", "web", "1h")).unwrap();
    let certify = |identity: &str| {
        Command::new(BIN)
            .args([
                "certify",
                "--addr",
                &listen,
                "--trust-domain",
                "mesh.test",
                "--identity",
                identity,
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--trust-anchors")
            .arg(dir.join("ca.pem"))
            .output()
            .unwrap()
    };
    let out = certify("spiffe://mesh.test/ns/shop/sa/web");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = weft_tls::pem::parse_certificates(&out.stdout, "stdout").unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        weft_tls::certificate::spiffe_id_of(&chain[0])
            .unwrap()
            .to_string(),
        "spiffe://mesh.test/ns/shop/sa/web"
    );
    let out = certify("spiffe://mesh.test/ns/shop/sa/db");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
