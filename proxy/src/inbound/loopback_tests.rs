//! mTLS between two proxies on loopback: the outbound peer client of one, the inbound side of the
//! other (the real connection handler), and a plain HTTP/1 app behind it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_settings::{InboundPolicy as Mode, parse_inbound_authz};
use weft_tls::SpiffeId;

use crate::connection::{Common, Timeouts};
use crate::direction::Direction;
use crate::discovery::Endpoint;
use crate::drain::Drain;
use crate::http::endpoint::EndpointClient;
use crate::http::peer_client::PeerClient;
use crate::http::pool::Pool;
use crate::http::server::HttpServer;
use crate::http::target::{HttpVersion, Target};
use crate::identity::LocalIdentity;
use crate::inbound::InboundSide;
use crate::inbound_policy::InboundPolicy;
use crate::labels::PeerTls;
use crate::loop_guard::LoopGuard;
use crate::metrics::Metrics;
use crate::peer::MeshedPeer;
use crate::resilience::policy::ResiliencePolicy;
use crate::resilience::upstream::Upstreams;
use crate::test_support::certificates::{TestCa, expired, slot};
use crate::tls::connect::{PeerConnector, PeerError};
use crate::tls::transport::{Payload, Transport, TransportHeader};
use tower::ServiceExt;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const API: &str = "spiffe://cluster.local/ns/shop/sa/api";

/// An HTTP/1 app answering each request with what it saw: version, client-id header, path.
async fn app() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let seen = format!(
                            "{:?} {} client={} orig={} port={}",
                            req.version(),
                            req.uri(),
                            req.headers()
                                .get("weft-client-id")
                                .map_or("none", |v| v.to_str().unwrap()),
                            req.headers().contains_key("weft-orig-proto"),
                            req.headers().contains_key("weft-dst-port"),
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(format!("{seen} body={}", String::from_utf8_lossy(&body))),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    accepted: Arc<AtomicUsize>,
}

/// The inbound side of the proxy with identity `API`, listening on loopback (peers dial it
/// directly, as they dial a pod's proxy port).
async fn server(ca: &TestCa, mode: Mode, authz: &str) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let identity =
        LocalIdentity::new(SpiffeId::parse(API).unwrap(), ca.anchors(), slot(ca, API)).unwrap();
    let side = Arc::new(InboundSide {
        common: Common {
            direction: Direction::Inbound,
            timeouts: Timeouts {
                detect: Duration::from_secs(1),
                connect: Duration::from_secs(1),
                idle: Duration::from_secs(3600),
                stream_idle: Duration::from_secs(300),
                header_read: Duration::from_secs(10),
            },
            limits: crate::http::server::HttpLimits::default(),
            opaque_ports: weft_settings::parse_ports("").unwrap(),
            loop_guard: LoopGuard::new(vec![addr.port()]),
            metrics: metrics.clone(),
            pool: Pool::shared(Duration::from_secs(1), Duration::from_secs(3600)),
            http: HttpServer::new(),
            drain: Drain::new(),
            upstreams: Arc::new(Upstreams::new(
                Direction::Inbound,
                ResiliencePolicy::passthrough(),
                metrics.resilience.clone(),
            )),
        },
        rate_limiter: None,
        identity: Some(Arc::new(identity)),
        policy: Arc::new(InboundPolicy::new(
            mode,
            parse_inbound_authz(authz).unwrap(),
        )),
    });
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let side = side.clone();
            tokio::spawn(async move {
                let watch = side.common.drain.watch();
                crate::inbound::path::handle(&side, stream, peer, watch).await
            });
        }
    });
    Server {
        addr,
        metrics,
        accepted,
    }
}

fn client(
    slot: Arc<weft_tls::CertificateSlot>,
    anchors: weft_tls::TrustAnchors,
) -> PeerClient<Full<Bytes>> {
    let identity = LocalIdentity::new(SpiffeId::parse(WEB).unwrap(), anchors, slot).unwrap();
    PeerClient::new(
        PeerConnector::new(Arc::new(identity), Duration::from_secs(2)),
        crate::metrics::tls::TlsMetrics::default(),
    )
}

fn peer(server: &Server, identity: &str) -> MeshedPeer {
    MeshedPeer {
        proxy: server.addr,
        identity: Arc::new(SpiffeId::parse(identity).unwrap()),
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "api.shop:8080")
        .header("weft-client-id", "spiffe://cluster.local/ns/evil/sa/forged")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap()
}

async fn text(resp: http::Response<hyper::body::Incoming>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

fn metric(metrics: &Metrics, needle: &str) -> bool {
    metrics.render().unwrap().contains(needle)
}

#[tokio::test]
async fn http1_rides_one_h2_connection_and_is_restored_with_the_client_identity() {
    let ca = TestCa::new("proxy");
    let (app, app_connections) = app().await;
    let server = server(&ca, Mode::Strict, "").await;
    let client = client(slot(&ca, WEB), ca.anchors());
    for i in 0..3 {
        let resp = client
            .send(&peer(&server, API), app, get(&format!("/r{i}?q=1")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            text(resp).await,
            format!("HTTP/1.1 /r{i}?q=1 client={WEB} orig=false port=false body=hello")
        );
    }
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        1,
        "one mTLS connection"
    );
    assert_eq!(client.peers(), 1);
    assert_eq!(
        app_connections.load(Ordering::SeqCst),
        1,
        "pooled to the app"
    );
    assert!(metric(
        &server.metrics,
        r#"weft_tls_connections_total{direction="inbound",transport="h2"} 1"#
    ));
    // The server counts the requests as mTLS from the client's identity.
    let labels = format!(
        r#"direction="inbound",upstream="{app}",protocol="http1",tls="true",src_identity="{WEB}""#
    );
    assert!(
        metric(
            &server.metrics,
            &format!("weft_request_total{{{labels}}} 3")
        ),
        "{}",
        server.metrics.render().unwrap()
    );
}

#[tokio::test]
async fn the_server_must_be_the_identity_discovery_promised() {
    let ca = TestCa::new("proxy");
    let (app, _) = app().await;
    let server = server(&ca, Mode::Strict, "").await;
    let client = client(slot(&ca, WEB), ca.anchors());
    let err = client
        .send(
            &peer(&server, "spiffe://cluster.local/ns/shop/sa/other"),
            app,
            get("/"),
        )
        .await
        .unwrap_err();
    // Our SNI names another identity: the server does not terminate it, and under the strict
    // policy closes the connection; either way no request reaches the app.
    assert!(matches!(err, PeerError::Handshake { .. }), "{err}");
}

#[tokio::test]
async fn a_server_from_a_foreign_ca_is_refused() {
    let (ca, foreign) = (TestCa::new("proxy"), TestCa::new("proxy"));
    let (app, app_connections) = app().await;
    let server = server(&foreign, Mode::Strict, "").await;
    let client = client(slot(&ca, WEB), ca.anchors());
    let err = client
        .send(&peer(&server, API), app, get("/"))
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Handshake { .. }), "{err}");
    assert_eq!(app_connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn clients_with_foreign_or_expired_certificates_are_refused() {
    let ca = TestCa::new("proxy");
    let (app, app_connections) = app().await;
    let server = server(&ca, Mode::Strict, "").await;
    let foreign = TestCa::new("proxy");
    // The client trusts the server's CA, but presents a certificate the server does not trust.
    for slot in [
        slot(&foreign, WEB),
        weft_tls::CertificateSlot::with(expired(&ca, WEB)),
    ] {
        let client = client(slot, ca.anchors());
        let result = client.send(&peer(&server, API), app, get("/")).await;
        // TLS 1.3: the client may finish its side before the server's refusal arrives.
        assert!(result.is_err(), "{result:?}");
    }
    assert_eq!(app_connections.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        metric(
            &server.metrics,
            r#"weft_inbound_refused_total{reason="handshake"} 2"#
        ),
        "{}",
        server.metrics.render().unwrap()
    );
}

#[tokio::test]
async fn per_port_rules_refuse_other_identities_with_403() {
    let ca = TestCa::new("proxy");
    let (app, app_connections) = app().await;
    let rules = format!("{}=spiffe://cluster.local/ns/shop/sa/admin", app.port());
    let server = server(&ca, Mode::Permissive, &rules).await;
    let client = client(slot(&ca, WEB), ca.anchors());
    let resp = client
        .send(&peer(&server, API), app, get("/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.headers()["weft-error"],
        "forbidden: client identity not authorized"
    );
    assert_eq!(app_connections.load(Ordering::SeqCst), 0);
    assert!(metric(
        &server.metrics,
        r#"weft_inbound_refused_total{reason="unauthorized"} 1"#
    ));
}

#[tokio::test]
async fn opaque_bytes_ride_the_tcp_transport_with_half_close() {
    let ca = TestCa::new("proxy");
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = backend.accept().await.unwrap();
        let mut request = Vec::new();
        sock.read_to_end(&mut request).await.unwrap();
        sock.write_all(b"reply:").await.unwrap();
        sock.write_all(&request).await.unwrap();
    });
    let server = server(&ca, Mode::Strict, "").await;
    let identity =
        LocalIdentity::new(SpiffeId::parse(WEB).unwrap(), ca.anchors(), slot(&ca, WEB)).unwrap();
    let connector = PeerConnector::new(Arc::new(identity), Duration::from_secs(2));
    let mut tls = connector
        .connect(&peer(&server, API), Transport::Tcp)
        .await
        .unwrap();
    TransportHeader {
        port: target.port(),
        payload: Payload::Opaque,
    }
    .write(&mut tls)
    .await
    .unwrap();
    tls.write_all(b"ping").await.unwrap();
    tls.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"reply:ping");
}

#[tokio::test]
async fn the_tcp_transport_cannot_reach_the_proxy_itself() {
    let ca = TestCa::new("proxy");
    let server = server(&ca, Mode::Strict, "").await;
    let identity =
        LocalIdentity::new(SpiffeId::parse(WEB).unwrap(), ca.anchors(), slot(&ca, WEB)).unwrap();
    let connector = PeerConnector::new(Arc::new(identity), Duration::from_secs(2));
    let mut tls = connector
        .connect(&peer(&server, API), Transport::Tcp)
        .await
        .unwrap();
    TransportHeader {
        port: server.addr.port(),
        payload: Payload::Opaque,
    }
    .write(&mut tls)
    .await
    .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(metric(
        &server.metrics,
        r#"weft_loop_refused_total{direction="inbound"} 1"#
    ));
}

#[tokio::test]
async fn plaintext_straight_to_the_inbound_port_is_still_a_loop() {
    let ca = TestCa::new("proxy");
    let server = server(&ca, Mode::Permissive, "").await;
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(metric(
        &server.metrics,
        r#"weft_loop_refused_total{direction="inbound"} 1"#
    ));
}

/// A server that terminates TLS for any SNI with `API`'s certificate: only the client's own
/// check can notice it is not the identity asked for.
#[tokio::test]
async fn the_client_checks_the_servers_identity_itself() {
    let ca = TestCa::new("proxy");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = weft_tls::server_config(
        slot(&ca, API),
        weft_tls::ClientAuthentication::None,
        vec![Transport::Tcp.alpn().to_vec()],
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(sock).await;
            });
        }
    });
    let identity =
        LocalIdentity::new(SpiffeId::parse(WEB).unwrap(), ca.anchors(), slot(&ca, WEB)).unwrap();
    let connector = PeerConnector::new(Arc::new(identity), Duration::from_secs(2));
    let other = MeshedPeer {
        proxy: addr,
        identity: Arc::new(SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/other").unwrap()),
    };
    let err = connector.connect(&other, Transport::Tcp).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"presented: "spiffe://cluster.local/ns/shop/sa/api""#),
        "{err}"
    );
    let api = MeshedPeer {
        proxy: addr,
        identity: Arc::new(SpiffeId::parse(API).unwrap()),
    };
    assert!(connector.connect(&api, Transport::Tcp).await.is_ok());
}

fn endpoint(addr: SocketAddr, identity: Option<&str>, meshed: bool, proxy_port: u16) -> Endpoint {
    Endpoint {
        addr,
        weight: 1,
        zone: "".into(),
        identity: identity.map(Arc::from),
        meshed,
        proxy_port,
        pod: "api-0".into(),
        load: Default::default(),
        requests: Default::default(),
        peer: MeshedPeer::resolve(addr, identity, meshed, proxy_port),
    }
}

#[test]
fn only_meshed_endpoints_with_an_identity_and_a_proxy_are_peers() {
    let addr: SocketAddr = "198.18.0.9:8080".parse().unwrap();
    let peer = endpoint(addr, Some(API), true, 4143)
        .meshed_peer()
        .unwrap()
        .unwrap();
    assert_eq!(peer.proxy, "198.18.0.9:4143".parse().unwrap());
    assert_eq!(peer.identity.to_string(), API);
    assert!(
        endpoint(addr, Some(API), false, 4143)
            .meshed_peer()
            .is_none()
    );
    assert!(endpoint(addr, Some(API), true, 0).meshed_peer().is_none());
    assert!(endpoint(addr, None, true, 4143).meshed_peer().is_none());
    assert!(endpoint(addr, Some(""), true, 4143).meshed_peer().is_none());
    let bad = endpoint(addr, Some("spiffe://x/y"), true, 4143)
        .meshed_peer()
        .unwrap();
    assert!(matches!(bad, Err(PeerError::BadIdentity { .. })));
}

/// The endpoint client sends to a meshed endpoint through its proxy, and to others directly.
#[tokio::test]
async fn the_endpoint_client_uses_mtls_for_meshed_endpoints_only() {
    let ca = TestCa::new("proxy");
    let (app, _) = app().await;
    let server = server(&ca, Mode::Strict, "").await;
    let identity =
        LocalIdentity::new(SpiffeId::parse(WEB).unwrap(), ca.anchors(), slot(&ca, WEB)).unwrap();
    let peers = Arc::new(PeerClient::new(
        PeerConnector::new(Arc::new(identity), Duration::from_secs(2)),
        crate::metrics::tls::TlsMetrics::default(),
    ));
    let client = EndpointClient::new(Arc::new(Pool::new(Duration::from_secs(2))), Some(peers));
    for (meshed, expected_client) in [(true, WEB), (false, "none")] {
        let mut req = get("/x");
        req.extensions_mut().insert(Target {
            addr: app,
            version: HttpVersion::Http1,
        });
        req.extensions_mut()
            .insert(endpoint(app, Some(API), meshed, server.addr.port()));
        let resp = client.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Marked for the request metrics with the identity that answered, when over mTLS.
        let served_over = resp.extensions().get::<PeerTls>().cloned();
        let expected = meshed.then(|| PeerTls::Mutual(API.into()));
        assert_eq!(served_over, expected);
        let body = text(resp).await;
        // Plain requests reach the app with the forged header: stripping it is the inbound
        // side's job, which a direct connection bypasses.
        if meshed {
            assert!(
                body.contains(&format!("client={expected_client}")),
                "{body}"
            );
        } else {
            assert!(
                body.contains("client=spiffe://cluster.local/ns/evil/sa/forged"),
                "{body}"
            );
        }
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}
