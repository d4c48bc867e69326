//! Real TLS handshakes over in-memory streams between configs built by this crate.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use crate::test_ca::TestCa;
use crate::{
    CertificateSlot, ClientAuthentication, SpiffeId, WorkloadKey, client_config, peer_identity,
    server_config,
};

const TD: &str = "cluster.local";

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new(TD, "shop", sa).unwrap()
}

/// A workload certified by `ca` for `identity`, valid for `lifetime_secs`.
fn workload(ca: &TestCa, identity: &SpiffeId, lifetime_secs: i64) -> Arc<CertificateSlot> {
    let key = WorkloadKey::generate().unwrap();
    let leaf = ca.issue_for_csr(&key.csr_der(identity).unwrap(), lifetime_secs);
    CertificateSlot::with(key.certified_key(vec![leaf]).unwrap())
}

fn expired_workload(ca: &TestCa, identity: &SpiffeId) -> Arc<CertificateSlot> {
    let key = WorkloadKey::generate().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let leaf = ca.issue_for_csr_between(
        &key.csr_der(identity).unwrap(),
        now - time::Duration::hours(2),
        now - time::Duration::hours(1),
    );
    CertificateSlot::with(key.certified_key(vec![leaf]).unwrap())
}

type Outcome = (
    Result<client::TlsStream<DuplexStream>, std::io::Error>,
    Result<server::TlsStream<DuplexStream>, std::io::Error>,
);

async fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
    server_identity: &SpiffeId,
) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let connector = TlsConnector::from(Arc::new(client));
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let name = server_identity.server_name().unwrap();
    tokio::time::timeout(Duration::from_secs(10), async move {
        tokio::join!(
            connector.connect(name, client_io),
            acceptor.accept(server_io)
        )
    })
    .await
    .expect("handshake finished in time")
}

fn mtls_server(ca: &TestCa, slot: Arc<CertificateSlot>) -> rustls::ServerConfig {
    server_config(
        slot,
        ClientAuthentication::Required {
            anchors: ca.anchors(),
            trust_domain: TD.into(),
        },
        vec![b"h2".to_vec()],
    )
    .unwrap()
}

fn mtls_client(ca: &TestCa, slot: Option<Arc<CertificateSlot>>) -> rustls::ClientConfig {
    client_config(&ca.anchors(), TD, slot, vec![b"h2".to_vec()]).unwrap()
}

#[tokio::test]
async fn right_identities_are_accepted_and_known_to_both_sides() {
    let ca = TestCa::new("mesh");
    let (web, api) = (id("web"), id("api"));
    let (client, server) = handshake(
        mtls_client(&ca, Some(workload(&ca, &web, 3600))),
        mtls_server(&ca, workload(&ca, &api, 3600)),
        &api,
    )
    .await;
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    assert_eq!(peer_identity(server.get_ref().1).unwrap(), Some(web));
    assert_eq!(peer_identity(client.get_ref().1).unwrap(), Some(api));
    assert_eq!(
        client.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let ca = TestCa::new("mesh");
    let (client, server) = handshake(
        mtls_client(&ca, Some(workload(&ca, &id("web"), 3600))),
        mtls_server(&ca, workload(&ca, &id("impostor"), 3600)),
        &id("api"),
    )
    .await;
    let err = client.unwrap_err().to_string();
    assert!(
        err.contains("IdentityMismatch")
            && err.contains("\"spiffe://cluster.local/ns/shop/sa/impostor\"")
            && err.contains("\"spiffe://cluster.local/ns/shop/sa/api\""),
        "{err}"
    );
    assert!(server.is_err());
}

#[tokio::test]
async fn a_server_name_that_is_no_identity_is_refused() {
    let ca = TestCa::new("mesh");
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let connector = TlsConnector::from(Arc::new(mtls_client(&ca, None)));
    let acceptor = TlsAcceptor::from(Arc::new(mtls_server(&ca, workload(&ca, &id("api"), 3600))));
    let name = rustls::pki_types::ServerName::try_from("api.example.com").unwrap();
    let (client, _server) = tokio::join!(
        connector.connect(name, client_io),
        acceptor.accept(server_io)
    );
    let err = client.unwrap_err().to_string();
    assert!(err.contains("not the SNI name of an identity"), "{err}");
}

#[tokio::test]
async fn a_server_from_a_foreign_ca_is_refused() {
    let (ours, foreign) = (TestCa::new("mesh"), TestCa::new("foreign"));
    let (client, _) = handshake(
        mtls_client(&ours, Some(workload(&ours, &id("web"), 3600))),
        mtls_server(&ours, workload(&foreign, &id("api"), 3600)),
        &id("api"),
    )
    .await;
    let err = client.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn a_client_from_a_foreign_ca_or_without_certificate_is_refused() {
    let (ours, foreign) = (TestCa::new("mesh"), TestCa::new("foreign"));
    for client_slot in [Some(workload(&foreign, &id("web"), 3600)), None] {
        let (_, server) = handshake(
            mtls_client(&ours, client_slot),
            mtls_server(&ours, workload(&ours, &id("api"), 3600)),
            &id("api"),
        )
        .await;
        assert!(server.is_err());
    }
}

#[tokio::test]
async fn a_client_of_another_trust_domain_is_refused() {
    let ca = TestCa::new("mesh");
    let stranger = SpiffeId::new("other.domain", "shop", "web").unwrap();
    let (_, server) = handshake(
        mtls_client(&ca, Some(workload(&ca, &stranger, 3600))),
        mtls_server(&ca, workload(&ca, &id("api"), 3600)),
        &id("api"),
    )
    .await;
    let err = server.unwrap_err().to_string();
    assert!(err.contains("outside trust domain cluster.local"), "{err}");
}

#[tokio::test]
async fn expired_leaves_are_refused_on_either_side() {
    let ca = TestCa::new("mesh");
    let (client, _) = handshake(
        mtls_client(&ca, Some(workload(&ca, &id("web"), 3600))),
        mtls_server(&ca, expired_workload(&ca, &id("api"))),
        &id("api"),
    )
    .await;
    let err = client.unwrap_err().to_string();
    assert!(err.contains("certificate expired"), "{err}");

    let (_, server) = handshake(
        mtls_client(&ca, Some(expired_workload(&ca, &id("web")))),
        mtls_server(&ca, workload(&ca, &id("api"), 3600)),
        &id("api"),
    )
    .await;
    let err = server.unwrap_err().to_string();
    assert!(err.contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn an_empty_slot_fails_the_handshake_without_panicking() {
    let ca = TestCa::new("mesh");
    let (client, server) = handshake(
        mtls_client(&ca, None),
        mtls_server(&ca, CertificateSlot::empty()),
        &id("api"),
    )
    .await;
    assert!(client.is_err() && server.is_err());
}

#[tokio::test]
async fn rotation_changes_new_handshakes_and_keeps_open_connections() {
    let ca = TestCa::new("mesh");
    let api = id("api");
    let server_slot = workload(&ca, &api, 3600);
    let first_leaf = server_slot.leaf().unwrap();
    let server = Arc::new(mtls_server(&ca, Arc::clone(&server_slot)));
    let client = mtls_client(&ca, Some(workload(&ca, &id("web"), 3600)));

    let (old_client, old_server) = handshake(
        client.clone(),
        Arc::unwrap_or_clone(Arc::clone(&server)),
        &api,
    )
    .await;
    let (mut old_client, mut old_server) = (old_client.unwrap(), old_server.unwrap());
    assert_eq!(presented_leaf(&old_client), first_leaf);

    // Rotate: a new key and leaf for the same identity.
    let key = WorkloadKey::generate().unwrap();
    let second_leaf = ca.issue_for_csr(&key.csr_der(&api).unwrap(), 3600);
    let previous = server_slot.replace(key.certified_key(vec![second_leaf.clone()]).unwrap());
    assert_eq!(previous.unwrap().cert[0], first_leaf);

    let (new_client, new_server) = handshake(client, Arc::unwrap_or_clone(server), &api).await;
    new_server.unwrap();
    assert_eq!(presented_leaf(&new_client.unwrap()), second_leaf);

    // The connection made before the rotation still carries data both ways.
    old_client.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    old_server.read_exact(&mut buf).await.unwrap();
    old_server.write_all(&buf).await.unwrap();
    old_client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
}

fn presented_leaf(client: &client::TlsStream<DuplexStream>) -> CertificateDer<'static> {
    client.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}
