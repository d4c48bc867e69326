//! The kubelet's probes of the app, run by the proxy. Under a strict inbound policy the app's
//! ports take only mTLS, so the kubelet's plaintext probes could not reach them; the injector
//! points each app container's HTTP, TCP and gRPC probe at the admin port instead
//! (`/app-health/<container>/<liveness|readiness|startup>`) and gives the proxy the original
//! probes in `WEFT_APP_PROBES` (the probes' own Kubernetes JSON, ports as numbers). The proxy runs
//! the probe against the app from inside the pod — its own connections are not redirected — and
//! answers 200 when it passes and 503 with the reason when it fails, as the kubelet would judge it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// The probes named in `WEFT_APP_PROBES`, by their admin path below `/app-health/`.
#[derive(Clone, Debug, Default)]
pub struct AppProbes {
    probes: HashMap<String, AppProbe>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppProbe {
    pub check: Check,
    /// The probe's `timeoutSeconds` (Kubernetes' default: 1 s).
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Http {
        host: Option<String>,
        port: u16,
        path: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Grpc {
        port: u16,
        service: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AppProbesError {
    #[error("not a JSON object of probes: {0}")]
    Json(#[from] serde_json::Error),
    #[error("probe {key:?}: {reason}")]
    Probe { key: String, reason: String },
}

/// A probe as Kubernetes writes it; only what the kubelet uses to run it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProbeJson {
    http_get: Option<HttpGetJson>,
    tcp_socket: Option<TcpSocketJson>,
    grpc: Option<GrpcJson>,
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpGetJson {
    port: u16,
    #[serde(default)]
    path: String,
    host: Option<String>,
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<HeaderJson>,
}

#[derive(Deserialize)]
struct HeaderJson {
    name: String,
    value: String,
}

#[derive(Deserialize)]
struct TcpSocketJson {
    port: u16,
    host: Option<String>,
}

#[derive(Deserialize)]
struct GrpcJson {
    port: u16,
    service: Option<String>,
}

impl AppProbes {
    /// Parses `WEFT_APP_PROBES`: `{"<container>/<kind>": <probe>, ...}`; empty: no probes.
    pub fn parse(text: &str) -> Result<Self, AppProbesError> {
        if text.trim().is_empty() {
            return Ok(AppProbes::default());
        }
        let raw: HashMap<String, ProbeJson> = serde_json::from_str(text)?;
        let mut probes = HashMap::with_capacity(raw.len());
        for (key, probe) in raw {
            let bad = |reason: &str| AppProbesError::Probe {
                key: key.clone(),
                reason: reason.to_owned(),
            };
            if key.is_empty() || key.starts_with('/') || key.contains("..") {
                return Err(bad("the name must be <container>/<kind>"));
            }
            let check = match (probe.http_get, probe.tcp_socket, probe.grpc) {
                (Some(http), None, None) => {
                    let https = match http.scheme.as_deref().unwrap_or("HTTP") {
                        "HTTP" => false,
                        "HTTPS" => true,
                        _ => return Err(bad("httpGet.scheme must be HTTP or HTTPS")),
                    };
                    let path = if http.path.is_empty() {
                        "/".to_owned()
                    } else {
                        http.path
                    };
                    if path.parse::<Uri>().is_err() || !path.starts_with('/') {
                        return Err(bad("httpGet.path is not a valid path"));
                    }
                    for header in &http.http_headers {
                        if HeaderName::try_from(header.name.as_str()).is_err()
                            || HeaderValue::try_from(header.value.as_str()).is_err()
                        {
                            return Err(bad("httpGet.httpHeaders has an invalid header"));
                        }
                    }
                    Check::Http {
                        host: http.host.filter(|h| !h.is_empty()),
                        port: http.port,
                        path,
                        https,
                        headers: http
                            .http_headers
                            .into_iter()
                            .map(|h| (h.name, h.value))
                            .collect(),
                    }
                }
                (None, Some(tcp), None) => Check::Tcp {
                    host: tcp.host.filter(|h| !h.is_empty()),
                    port: tcp.port,
                },
                (None, None, Some(grpc)) => Check::Grpc {
                    port: grpc.port,
                    service: grpc.service.unwrap_or_default(),
                },
                _ => return Err(bad("needs exactly one of httpGet, tcpSocket, grpc")),
            };
            let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1));
            probes.insert(key, AppProbe { check, timeout });
        }
        Ok(AppProbes { probes })
    }

    pub fn get(&self, name: &str) -> Option<&AppProbe> {
        self.probes.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }
}

/// Why a probe failed, for the kubelet's event and the proxy's log.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Exchange(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("gRPC health status {0} (SERVING is 1)")]
    NotServing(u64),
}

impl AppProbe {
    /// Runs the probe against the app; `pod_ip` is where the kubelet would have sent it.
    pub async fn run(&self, pod_ip: Option<IpAddr>) -> Result<(), ProbeFailure> {
        let default_host = pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        match tokio::time::timeout(self.timeout, self.check.run(default_host)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ProbeFailure::Timeout(self.timeout)),
        }
    }
}

impl Check {
    async fn run(&self, default_host: IpAddr) -> Result<(), ProbeFailure> {
        match self {
            Check::Tcp { host, port } => connect(host.as_deref(), default_host, *port)
                .await
                .map(drop),
            Check::Http {
                host,
                port,
                path,
                https,
                headers,
            } => {
                let stream = connect(host.as_deref(), default_host, *port).await?;
                let host_header = match host {
                    Some(host) => host.clone(),
                    None => SocketAddr::new(default_host, *port).to_string(),
                };
                let mut req = Request::get(path.as_str())
                    .header(HOST, host_header.as_str())
                    // What the kubelet sends: some apps answer probes by user agent.
                    .header(USER_AGENT, "kube-probe/weft")
                    .header(http::header::ACCEPT, "*/*");
                for (name, value) in headers {
                    req = req.header(name.as_str(), value.as_str());
                }
                let req = req
                    .body(Empty::<Bytes>::new())
                    .map_err(|err| ProbeFailure::Exchange(err.to_string()))?;
                let status = if *https {
                    let name = host.clone().unwrap_or_else(|| default_host.to_string());
                    let tls = tls_without_verification(stream, &name).await?;
                    http1_status(tls, req).await?
                } else {
                    http1_status(stream, req).await?
                };
                // The kubelet's rule: 2xx and 3xx pass.
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(ProbeFailure::Status(status))
                }
            }
            Check::Grpc { port, service } => {
                let stream = connect(None, default_host, *port).await?;
                grpc_health(stream, default_host, *port, service).await
            }
        }
    }
}

async fn connect(
    host: Option<&str>,
    default_host: IpAddr,
    port: u16,
) -> Result<TcpStream, ProbeFailure> {
    let addr = match host {
        Some(host) => format!("{host}:{port}"),
        None => SocketAddr::new(default_host, port).to_string(),
    };
    TcpStream::connect(addr.as_str())
        .await
        .map_err(|source| ProbeFailure::Connect { addr, source })
}

async fn http1_status<I>(io: I, req: Request<Empty<Bytes>>) -> Result<u16, ProbeFailure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exchange = |err: hyper::Error| ProbeFailure::Exchange(err.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(exchange)?;
    tokio::spawn(connection);
    let resp = sender.send_request(req).await.map_err(exchange)?;
    Ok(resp.status().as_u16())
}

/// `grpc.health.v1.Health/Check` over HTTP/2 without TLS, as the kubelet's gRPC probe sends it.
async fn grpc_health(
    io: TcpStream,
    host: IpAddr,
    port: u16,
    service: &str,
) -> Result<(), ProbeFailure> {
    let exchange = |err: hyper::Error| ProbeFailure::Exchange(err.to_string());
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(exchange)?;
    tokio::spawn(connection);
    let uri = format!(
        "http://{}/grpc.health.v1.Health/Check",
        SocketAddr::new(host, port)
    );
    let req = Request::post(uri)
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::new(health_check_request(service)))
        .map_err(|err| ProbeFailure::Exchange(err.to_string()))?;
    let resp = sender.send_request(req).await.map_err(exchange)?;
    if !resp.status().is_success() {
        return Err(ProbeFailure::Status(resp.status().as_u16()));
    }
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.map_err(exchange)?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let grpc_status = trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    if grpc_status != Some(0) {
        let message = trailers
            .get("grpc-message")
            .or_else(|| headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return Err(ProbeFailure::Exchange(format!(
            "grpc-status {} {message}",
            grpc_status.map_or_else(|| "missing".to_owned(), |s| s.to_string())
        )));
    }
    match health_check_status(&collected.to_bytes()) {
        Some(1) => Ok(()),
        Some(status) => Err(ProbeFailure::NotServing(status)),
        None => Err(ProbeFailure::Exchange(
            "malformed HealthCheckResponse".to_owned(),
        )),
    }
}

/// A length-prefixed `HealthCheckRequest { service }` (field 1, a string).
fn health_check_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The `status` (field 1, a varint) of a length-prefixed `HealthCheckResponse`; an absent field
/// is 0 (UNKNOWN), as protobuf defaults go. `None` when the bytes are not such a message.
fn health_check_status(framed: &[u8]) -> Option<u64> {
    let (header, rest) = framed.split_at_checked(5)?;
    if header[0] != 0 {
        return None; // compressed: never sent for health checks
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut message = rest.get(..len)?;
    let mut status = 0;
    while !message.is_empty() {
        let (key, used) = get_varint(message)?;
        message = &message[used..];
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (value, used) = get_varint(message)?;
                status = value;
                message = &message[used..];
            }
            (_, 0) => message = &message[get_varint(message)?.1..],
            (_, 2) => {
                let (len, used) = get_varint(message)?;
                message = message.get(used + len as usize..)?;
            }
            (_, 1) => message = message.get(8..)?,
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// TLS as the kubelet's HTTPS probes do it: encrypted, the certificate not verified.
async fn tls_without_verification(
    stream: TcpStream,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeFailure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| ProbeFailure::Exchange(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|err| ProbeFailure::Exchange(format!("TLS name {name:?}: {err}")))?;
    TlsConnector::from(Arc::new(config))
        .connect(server_name, stream)
        .await
        .map_err(|err| ProbeFailure::Exchange(format!("TLS handshake: {err}")))
}

/// Accepts any server certificate (kubelet HTTPS probes skip verification), still checking that
/// the handshake is signed with the key the certificate names.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn parses_the_probes_kubernetes_writes() {
        let probes = AppProbes::parse(
            r#"{
              "web/readiness": {"httpGet": {"port": 8080, "path": "/ready?x=1", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 3},
              "web/liveness": {"tcpSocket": {"port": 8080}},
              "api/startup": {"grpc": {"port": 9090, "service": "api"}},
              "tls/liveness": {"httpGet": {"port": 8443, "scheme": "HTTPS", "host": "localhost"}}
            }"#,
        )
        .unwrap();
        assert_eq!(
            probes.get("web/readiness"),
            Some(&AppProbe {
                check: Check::Http {
                    host: None,
                    port: 8080,
                    path: "/ready?x=1".into(),
                    https: false,
                    headers: vec![("X-Probe".into(), "1".into())],
                },
                timeout: Duration::from_secs(3),
            })
        );
        assert_eq!(
            probes.get("web/liveness").map(|p| &p.check),
            Some(&Check::Tcp {
                host: None,
                port: 8080
            })
        );
        assert_eq!(
            probes.get("api/startup").map(|p| &p.check),
            Some(&Check::Grpc {
                port: 9090,
                service: "api".into()
            })
        );
        let Some(Check::Http { path, https, .. }) = probes.get("tls/liveness").map(|p| &p.check)
        else {
            panic!("tls/liveness");
        };
        assert_eq!((path.as_str(), *https), ("/", true));
        assert!(AppProbes::parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_what_it_could_not_run() {
        for (text, needle) in [
            ("[1]", "not a JSON object"),
            (
                r#"{"web/liveness": {"httpGet": {"port": "http"}}}"#,
                "not a JSON object",
            ),
            (r#"{"web/liveness": {}}"#, "exactly one of"),
            (
                r#"{"web/liveness": {"httpGet": {"port": 1}, "tcpSocket": {"port": 1}}}"#,
                "exactly one of",
            ),
            (
                r#"{"web/liveness": {"httpGet": {"port": 1, "scheme": "FTP"}}}"#,
                "scheme",
            ),
            (
                r#"{"web/liveness": {"httpGet": {"port": 1, "path": "no slash"}}}"#,
                "path",
            ),
            (
                r#"{"/x": {"tcpSocket": {"port": 1}}}"#,
                "<container>/<kind>",
            ),
        ] {
            let err = AppProbes::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn health_messages_round_trip() {
        assert_eq!(&health_check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &health_check_request("ab")[..],
            [0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        assert_eq!(health_check_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(health_check_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        // An empty message is UNKNOWN; unknown fields are skipped.
        assert_eq!(health_check_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(
            health_check_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
        assert_eq!(health_check_status(&[0, 0, 0, 0, 9, 0x08]), None);
        assert_eq!(health_check_status(&[1, 0, 0, 0, 0]), None);
        assert_eq!(health_check_status(&[0, 0]), None);
    }

    /// An HTTP/1 server answering every request with `status`, recording the request head.
    async fn http_app(status: u16) -> (u16, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let _ = tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .await;
                let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(resp.as_bytes()).await;
            }
        });
        (port, rx)
    }

    fn http(port: u16, path: &str) -> AppProbe {
        AppProbe {
            check: Check::Http {
                host: None,
                port,
                path: path.into(),
                https: false,
                headers: vec![("X-Probe".into(), "yes".into())],
            },
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_3xx_only() {
        let localhost = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (port, mut heads) = http_app(204).await;
        http(port, "/healthz").run(localhost).await.unwrap();
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-probe: yes"), "{head}");
        assert!(head.contains("kube-probe"), "{head}");
        let (port, _) = http_app(302).await;
        http(port, "/").run(localhost).await.unwrap();
        let (port, _) = http_app(500).await;
        let err = http(port, "/").run(localhost).await.unwrap_err();
        assert!(matches!(err, ProbeFailure::Status(500)), "{err}");
    }

    #[tokio::test]
    async fn tcp_probes_need_a_listener_and_probes_are_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = |port| AppProbe {
            check: Check::Tcp { host: None, port },
            timeout: Duration::from_secs(1),
        };
        tcp(port).run(None).await.unwrap();
        drop(listener);
        let err = tcp(port).run(None).await.unwrap_err();
        assert!(matches!(err, ProbeFailure::Connect { .. }), "{err}");
        // A server that accepts but never answers fails within the probe's timeout.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let probe = AppProbe {
            timeout: Duration::from_secs(1),
            ..http(port, "/")
        };
        let started = tokio::time::Instant::now();
        let err = probe.run(None).await.unwrap_err();
        assert!(matches!(err, ProbeFailure::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
