//! The real `weft-injector` binary on 127.0.0.1 with a generated certificate, an HTTPS client
//! trusting the CA it wrote out, and a fake Kubernetes API serving recorded objects.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// The name the API server uses for the webhook's Service, in the generated certificate.
pub const SERVICE_DNS_NAME: &str = "weft-injector.weft.svc";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A scratch directory removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(purpose: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "weft-injector-test-{}-{purpose}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `weft-injector`, killed on drop.
pub struct Webhook {
    child: Child,
    pub addr: SocketAddr,
    pub ca_pem: String,
    log: Arc<Mutex<String>>,
    _dir: ScratchDir,
}

impl Webhook {
    /// Starts the binary with `--listen 127.0.0.1:0 --write-ca ...` and `args`, and waits for it
    /// to say where it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = ScratchDir::new("webhook");
        let ca_file = dir.0.join("ca.pem");
        let mut all = vec!["--write-ca".to_owned(), ca_file.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let mut webhook = Self::spawn(&all, env, dir);
        webhook.ca_pem = std::fs::read_to_string(&ca_file).expect("--write-ca wrote the CA");
        webhook
    }

    /// Starts the binary serving `--tls-cert`/`--tls-key` files (in `args`); the client trusts
    /// `ca_pem`.
    pub fn start_with_files(args: &[&str], ca_pem: &str) -> Self {
        let all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut webhook = Self::spawn(&all, &[], ScratchDir::new("webhook"));
        webhook.ca_pem = ca_pem.to_owned();
        webhook
    }

    fn spawn(args: &[String], env: &[(&str, &str)], dir: ScratchDir) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft-injector"));
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("WEFT_INJECTOR_LOG", "info,weft_injector=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start weft-injector");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (listening, listen_rx) = mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("listen="))
                {
                    let _ = listening.send(addr.to_owned());
                }
                let mut log = log_writer.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut webhook = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_pem: String::new(),
            log,
            _dir: dir,
        };
        match listen_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => webhook.addr = addr.parse().expect("a socket address after listen="),
            Err(_) => panic!(
                "weft-injector did not start within {START_TIMEOUT:?}; its log:\n{}",
                webhook.log()
            ),
        }
        webhook
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the process to exit; kills it and fails past `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for weft-injector") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("weft-injector still running {timeout:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the log shows `needle` within a few seconds (it reaches the test through a pipe
    /// and a reader thread, a little after the response).
    pub fn logged(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the injector logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `method path` over HTTPS (HTTP/1.1), verifying the server as SERVICE_DNS_NAME against the
    /// CA the injector wrote out.
    pub async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        tokio::time::timeout(REQUEST_TIMEOUT, self.try_send(method, path, body))
            .await
            .unwrap_or_else(|_| panic!("{path} took over {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// As `send`, with a failed connection or handshake as an error.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let client = HttpsClient {
            addr: self.addr,
            ca_pem: self.ca_pem.clone(),
            http2: false,
        };
        client.try_send(method, path, body).await
    }

    /// POSTs `review` to /inject and returns its `response`, which must carry the request's uid.
    pub async fn review(&self, review: &Value) -> Value {
        let body = serde_json::to_vec(review).expect("JSON");
        let (status, body) = self.send(Method::POST, "/inject", body).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{text}\nlog:\n{}", self.log());
        let answer: Value = serde_json::from_slice(&body).expect("a JSON AdmissionReview");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        let response = answer["response"].clone();
        assert_eq!(response["uid"], review["request"]["uid"], "{answer}");
        response
    }
}

/// HTTPS to `addr`, trusting only `ca_pem`.
pub struct HttpsClient {
    pub addr: SocketAddr,
    pub ca_pem: String,
    /// HTTP/2 (negotiated with ALPN h2, as the API server may) instead of HTTP/1.1.
    pub http2: bool,
}

impl HttpsClient {
    /// As `send`, with a failed connection or handshake as an error.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("PEM CA")).expect("a CA certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut config = config;
        config.alpn_protocols = vec![if self.http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(SERVICE_DNS_NAME).expect("a DNS name");
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake verifying the injector's certificate: {e}"))?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let response = if self.http2 {
            if negotiated.as_deref() != Some(b"h2") {
                return Err(format!("ALPN did not settle on h2: {negotiated:?}"));
            }
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(connection);
            let uri = format!("https://{SERVICE_DNS_NAME}{path}");
            sender
                .send_request(request(method, &uri, body))
                .await
                .map_err(|e| format!("request: {e}"))?
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(connection);
            sender
                .send_request(request(method, path, body))
                .await
                .map_err(|e| format!("request: {e}"))?
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(method: Method, uri: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", SERVICE_DNS_NAME)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request")
}

/// A CA (PEM) and a serving certificate and key (PEM) it signed for SERVICE_DNS_NAME, as
/// cert-manager would write them into a Secret.
pub fn issued_pair() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec![SERVICE_DNS_NAME.to_owned()])
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    (ca_pem, leaf.pem(), key.serialize_pem())
}

/// An AdmissionReview v1 as the API server sends it for `operation` on `object` (a Pod).
pub fn admission_review(uid: &str, operation: &str, namespace: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": object.pointer("/metadata/name").cloned().unwrap_or(json!("")),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "6b0f5b7e-2c4c-4d5e-a0e7-9a8f2b1c3d4e",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// The response's patch applied to `object`; `object` itself when there is none.
pub fn apply(response: &Value, object: &Value) -> Value {
    let Some(encoded) = response.get("patch").and_then(Value::as_str) else {
        return object.clone();
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("the patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("an RFC 6902 patch");
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch.0).expect("the patch applies to the object as sent");
    patched
}

/// A recorded test object from tests/data.
pub fn recorded(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// One request the fake API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A plain-HTTP Kubernetes API on 127.0.0.1 answering GET and JSON-patch PATCH for the objects it
/// holds (by path), 404 with a Status for anything else; with a kubeconfig naming it.
pub struct FakeApi {
    pub kubeconfig: PathBuf,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub objects: Arc<Mutex<BTreeMap<String, Value>>>,
    server: tokio::task::JoinHandle<()>,
    _dir: ScratchDir,
}

impl FakeApi {
    pub async fn start(objects: BTreeMap<String, Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let objects = Arc::new(Mutex::new(objects));
        let server = tokio::spawn(serve_fake_api(
            listener,
            Arc::clone(&requests),
            Arc::clone(&objects),
        ));
        let dir = ScratchDir::new("kubeconfig");
        let kubeconfig = dir.0.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n"
        );
        std::fs::write(&kubeconfig, config).expect("write the kubeconfig");
        Self {
            kubeconfig,
            requests,
            objects,
            server,
            _dir: dir,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_fake_api(
    listener: TcpListener,
    requests: Arc<Mutex<Vec<Recorded>>>,
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let requests = Arc::clone(&requests);
        let objects = Arc::clone(&objects);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let requests = Arc::clone(&requests);
                let objects = Arc::clone(&objects);
                async move {
                    let method = request.method().clone();
                    let path = request.uri().path().to_owned();
                    let content_type = request
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let body = request
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes().to_vec())
                        .unwrap_or_default();
                    let answer = answer(&method, &path, &body, &objects);
                    requests
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Recorded {
                            method,
                            path,
                            content_type,
                            body,
                        });
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn answer(
    method: &Method,
    path: &str,
    body: &[u8],
    objects: &Mutex<BTreeMap<String, Value>>,
) -> Response<Full<Bytes>> {
    let mut objects = objects.lock().unwrap_or_else(|e| e.into_inner());
    let Some(object) = objects.get_mut(path) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
        );
    };
    if method == Method::PATCH {
        let applied = serde_json::from_slice::<json_patch::Patch>(body)
            .map_err(|e| e.to_string())
            .and_then(|patch| json_patch::patch(object, &patch.0).map_err(|e| e.to_string()));
        if let Err(e) = applied {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": e, "reason": "Invalid", "code": 422}),
            );
        }
    }
    json_response(StatusCode::OK, object)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}
