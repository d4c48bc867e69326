//! Writes the generated part of the seed corpus (corpus/<target>/gen-*): real ClientHellos from
//! rustls, certificates from the fuzzing CA, encoded discovery and identity messages, transport
//! headers, and hand-written protocol prefixes and setting values. The hand-captured files
//! (e.g. an OpenSSL ClientHello) are kept beside them. Run from anywhere:
//! `cargo run -p weft-fuzz --example seeds` (docs/fuzzing.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use prost::Message;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use weft_discovery_api::v1::{self as api, watch_update::Update};
use weft_fuzz::certificate::{FuzzCa, TRUST_DOMAIN};
use weft_identity_api::v1::{CertifyRequest, CertifyResponse};
use weft_proxy::tls::transport::{Payload, TransportHeader};
use weft_tls::SpiffeId;
use weft_tls::rustls::pki_types::ServerName;
use weft_tls::rustls::{ClientConfig, ClientConnection, RootCertStore};

fn main() -> anyhow::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let ca = FuzzCa::new();
    let mut seeds = Seeds { corpus, written: 0 };

    for (name, bytes) in http_prefixes() {
        seeds.write("detect", name, &bytes)?;
        seeds.write("http_prefix", name, &bytes)?;
    }
    for (name, bytes) in other_protocols() {
        seeds.write("detect", name, &bytes)?;
    }
    for (name, hello) in client_hellos(&ca)? {
        seeds.write("client_hello", name, &hello)?;
        seeds.write("detect", name, &hello)?;
    }
    for (name, header) in transport_headers() {
        seeds.write("transport_header", name, &header)?;
    }
    for (name, text) in spiffe_ids() {
        seeds.write("spiffe_id", name, text.as_bytes())?;
    }
    let certificates = certificates(&ca)?;
    for (name, der) in &certificates {
        seeds.write("certificate", name, der)?;
    }
    for (name, bytes) in discovery_updates() {
        seeds.write("discovery_update", name, &bytes)?;
    }
    for (name, text) in discovery_targets() {
        seeds.write("discovery_target", name, text.as_bytes())?;
    }
    for (name, bytes) in identity_messages(&certificates)? {
        seeds.write("identity_message", name, &bytes)?;
    }
    for (name, bytes) in setting_values() {
        seeds.write("settings", name, &bytes)?;
    }
    println!("wrote {} seed files", seeds.written);
    Ok(())
}

struct Seeds {
    corpus: PathBuf,
    written: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("gen-{name}"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.written += 1;
        Ok(())
    }
}

fn http_prefixes() -> Vec<(&'static str, Vec<u8>)> {
    let h2_request = {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // SETTINGS (empty), then HEADERS on stream 1 with END_STREAM | END_HEADERS:
        // :method GET, :path /, :scheme http (static table), :authority "web" (literal).
        bytes.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        let block = [0x82, 0x84, 0x86, 0x41, 3, b'w', b'e', b'b'];
        bytes.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, 1]);
        bytes.extend_from_slice(&block);
        bytes
    };
    vec![
        ("http1-get", b"GET / HTTP/1.1\r\nHost: web.shop:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n".to_vec()),
        ("http1-post-body", b"POST /orders?id=7 HTTP/1.1\r\nHost: orders\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"items\": 3}\n".to_vec()),
        ("http1-chunked", b"PUT /blob HTTP/1.1\r\nHost: store\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nConnection: keep-alive, TE\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n".to_vec()),
        ("http1-hop-by-hop", b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close, x-private\r\nx-private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\r\n".to_vec()),
        ("http1-websocket", b"GET /chat HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec()),
        ("http1-connect", b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n".to_vec()),
        ("http1-absolute-form", b"GET http://198.19.2.99:8080/x HTTP/1.1\r\nHost: web.shop\r\n\r\n".to_vec()),
        ("http1-options-star", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("http10-pipelined", b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n".to_vec()),
        ("http1-bare-lf", b"GET / HTTP/1.1\nHost: lf\n\n".to_vec()),
        ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("h2-get", h2_request),
    ]
}

fn other_protocols() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ssh-banner", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec()),
        ("redis-ping", b"*1\r\n$4\r\nPING\r\n".to_vec()),
        ("postgres-startup", vec![0, 0, 0, 8, 4, 210, 22, 47]),
        ("smtp-ehlo", b"EHLO client.example\r\n".to_vec()),
        ("http2-version-in-h1", b"GET / HTTP/2.0\r\n\r\n".to_vec()),
        (
            "tls-record-bad-version",
            vec![0x16, 0x03, 0x09, 0x00, 0x01, 0x01],
        ),
    ]
}

fn client_hellos(ca: &FuzzCa) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let mesh = |alpn: &[u8]| -> anyhow::Result<ClientConfig> {
        Ok(weft_tls::client_config(
            &ca.anchors(),
            TRUST_DOMAIN,
            None,
            vec![alpn.to_vec()],
        )?)
    };
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let mut app = ClientConfig::builder_with_provider(weft_tls::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    app.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let peer = SpiffeId::new(TRUST_DOMAIN, "shop", "web")?;
    let mut hellos = Vec::new();
    for (name, config, server_name) in [
        ("rustls-mesh-h2", mesh(b"weft.h2/1")?, peer.server_name()?),
        ("rustls-mesh-tcp", mesh(b"weft.tcp/1")?, peer.server_name()?),
        (
            "rustls-app-tls12-13",
            app,
            ServerName::try_from("api.example.com")?,
        ),
    ] {
        let mut config = config;
        config.enable_sni = true;
        let mut conn = ClientConnection::new(Arc::new(config), server_name)?;
        let mut hello = Vec::new();
        conn.write_tls(&mut hello)?;
        hellos.push((name, hello));
    }
    Ok(hellos)
}

fn transport_headers() -> Vec<(&'static str, Vec<u8>)> {
    let header = |port, payload| TransportHeader { port, payload }.encode().to_vec();
    let mut with_payload = header(8080, Payload::Opaque);
    with_payload.extend_from_slice(b"SSH-2.0-x\r\n");
    let mut bad_magic = header(80, Payload::Http1);
    bad_magic[0] = b'X';
    vec![
        ("opaque-8080", header(8080, Payload::Opaque)),
        ("http1-65535", header(65535, Payload::Http1)),
        ("opaque-then-bytes", with_payload),
        ("bad-magic", bad_magic),
        ("port-0", b"WEFT\x01\x00\x00\x00".to_vec()),
        ("short", b"WEFT\x01".to_vec()),
    ]
}

fn spiffe_ids() -> Vec<(&'static str, &'static str)> {
    vec![
        ("id-web", "spiffe://cluster.local/ns/shop/sa/web"),
        (
            "id-dotted-sa",
            "spiffe://cluster.local/ns/kube-system/sa/weft.proxy",
        ),
        ("id-other-domain", "spiffe://prod.example_org/ns/a/sa/b"),
        ("id-uppercase", "spiffe://Cluster.local/ns/shop/sa/web"),
        (
            "id-extra-segment",
            "spiffe://cluster.local/ns/shop/sa/web/x",
        ),
        ("sni-web", "web.shop.sa.cluster.local"),
        ("sni-dotted-sa", "weft.proxy.kube-system.sa.cluster.local"),
    ]
}

fn certificates(ca: &FuzzCa) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let leaf = |sans: Vec<SanType>, not_after: (i32, u8, u8)| -> anyhow::Result<Vec<u8>> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "fuzz leaf");
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = rcgen::date_time_ymd(2026, 11, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        Ok(ca.issue(&params, &key)?.to_vec())
    };
    let id = SpiffeId::new(TRUST_DOMAIN, "shop", "web")?;
    let uri = |s: String| -> anyhow::Result<SanType> { Ok(SanType::URI(s.try_into()?)) };
    let dns = |s: String| -> anyhow::Result<SanType> { Ok(SanType::DnsName(s.try_into()?)) };
    let ten_years = (2036, 10, 1);
    Ok(vec![
        (
            "leaf-web",
            leaf(vec![uri(id.uri())?, dns(id.sni_name())?], ten_years)?,
        ),
        (
            "leaf-two-ids",
            leaf(
                vec![
                    uri(id.uri())?,
                    uri("spiffe://cluster.local/ns/shop/sa/db".into())?,
                ],
                ten_years,
            )?,
        ),
        (
            "leaf-other-domain",
            leaf(
                vec![uri("spiffe://other.td/ns/shop/sa/web".into())?],
                ten_years,
            )?,
        ),
        (
            "leaf-dns-only",
            leaf(vec![dns("web.example.com".into())?], ten_years)?,
        ),
        ("leaf-expired", leaf(vec![uri(id.uri())?], (2026, 11, 15))?),
        ("ca", ca.der().to_vec()),
    ])
}

fn length_delimited(updates: &[Update]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for update in updates {
        let message = api::WatchUpdate {
            update: Some(update.clone()),
        };
        message
            .encode_length_delimited(&mut bytes)
            .expect("a Vec grows as needed");
    }
    bytes
}

fn discovery_updates() -> Vec<(&'static str, Vec<u8>)> {
    let endpoint = |addr: &str, meshed: bool, identity: &str| api::Endpoint {
        addr: addr.into(),
        weight: 2,
        zone: "zone-a".into(),
        identity: identity.into(),
        meshed,
        proxy_port: if meshed { 4143 } else { 0 },
        pod: "web-0".into(),
    };
    let service = api::Service {
        name: "web".into(),
        namespace: "shop".into(),
        port: 8080,
        ..Default::default()
    };
    let policy = api::ServicePolicy {
        timeout_ms: Some(1500),
        per_try_timeout_ms: Some(500),
        retry: Some(api::RetryPolicy {
            backoff_base_ms: Some(25),
            backoff_max_ms: Some(u64::MAX),
            ..Default::default()
        }),
        breaker: Some(api::BreakerPolicy {
            base_ejection_ms: Some(30_000),
            ..Default::default()
        }),
        routes: vec![api::RoutePolicy {
            path_prefix: "/api".into(),
            methods: vec!["GET".into(), "post".into()],
            timeout_ms: Some(200),
            ..Default::default()
        }],
        split: vec![
            api::SplitTarget {
                service: "web-canary.shop.svc.cluster.local".into(),
                port: 8080,
                weight: 10,
            },
            api::SplitTarget {
                service: "WEB.shop.svc.cluster.local".into(),
                port: 8080,
                weight: 90,
            },
        ],
        ..Default::default()
    };
    let snapshot = Update::Snapshot(api::Snapshot {
        service: Some(service.clone()),
        endpoints: vec![
            endpoint(
                "198.18.0.5:8080",
                true,
                "spiffe://cluster.local/ns/shop/sa/web",
            ),
            endpoint("[fd00::5]:8080", true, "not-an-identity"),
            endpoint("198.18.0.6:8080", false, ""),
        ],
        policy: Some(policy.clone()),
    });
    vec![
        (
            "snapshot",
            length_delimited(std::slice::from_ref(&snapshot)),
        ),
        (
            "snapshot-add-remove",
            length_delimited(&[
                snapshot.clone(),
                Update::EndpointsAdded(api::EndpointsAdded {
                    endpoints: vec![
                        endpoint(
                            "198.18.0.7:8080",
                            true,
                            "spiffe://cluster.local/ns/shop/sa/web",
                        ),
                        endpoint("198.18.0.5:8080", false, ""),
                    ],
                }),
                Update::EndpointsRemoved(api::EndpointsRemoved {
                    addrs: vec!["198.18.0.6:8080".into(), "bogus".into()],
                }),
                Update::PolicyChanged(api::PolicyChanged { policy: None }),
            ]),
        ),
        (
            "not-in-mesh-then-back",
            length_delimited(&[
                snapshot.clone(),
                Update::NotInMesh(api::NotInMesh {}),
                Update::EndpointsAdded(api::EndpointsAdded {
                    endpoints: vec![endpoint("198.18.0.8:8080", false, "")],
                }),
                snapshot,
            ]),
        ),
        (
            "snapshot-without-service",
            length_delimited(&[Update::Snapshot(api::Snapshot::default())]),
        ),
    ]
}

fn discovery_targets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("name", "web.shop.svc.cluster.local:8080"),
        ("name-trailing-dot", "Web.Shop.svc.cluster.local.:80"),
        ("ipv4", "198.18.0.5:8080"),
        ("ipv6", "[fd00::5]:443"),
        ("ipv6-no-port", "[fd00::5]"),
        ("userinfo", "user:pass@web:8080"),
        ("port-0", "web:0"),
        ("no-port", "web"),
    ]
}

fn identity_messages(
    certificates: &[(&str, Vec<u8>)],
) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let cert = |name: &str| -> anyhow::Result<Vec<u8>> {
        certificates
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, der)| der.clone())
            .with_context(|| format!("no generated certificate {name}"))
    };
    let response = CertifyResponse {
        leaf_certificate: cert("leaf-web")?,
        intermediate_certificates: vec![cert("ca")?],
        not_after_unix_seconds: 2_106_000_000,
    };
    let key = weft_tls::WorkloadKey::generate()?;
    let id = SpiffeId::new(TRUST_DOMAIN, "shop", "web")?;
    let request = CertifyRequest {
        token: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln".into(),
        certificate_signing_request: key.csr_der(&id)?,
        identity: id.uri(),
    };
    Ok(vec![
        ("certify-response", response.encode_to_vec()),
        ("certify-request", request.encode_to_vec()),
    ])
}

/// Each value behind its parser's selector byte (see `weft_fuzz::settings`).
fn setting_values() -> Vec<(&'static str, Vec<u8>)> {
    let values: &[(&str, u8, &str)] = &[
        ("duration", 0, "250ms"),
        ("duration-bare", 0, " 10 "),
        ("ports", 1, "25,3306,8000-8010"),
        ("ports-overlap", 1, "8000-8010, 8005 ,1-2"),
        ("cidrs", 2, "10.0.0.0/8,fd00::/8, 198.18.0.1"),
        (
            "authz",
            3,
            "8080=spiffe://cluster.local/ns/shop/sa/web|spiffe://cluster.local/ns/ops/sa/*;9090=*",
        ),
        ("rate", 4, "6000/m"),
        ("statuses", 5, "502-504,429"),
        ("grpc-codes", 6, "unavailable,14,DEADLINE_EXCEEDED"),
        ("numbers", 7, "0.25"),
        ("words", 8, "permissive"),
        ("annotation-opaque-ports", 9, "opaque-ports"),
        ("annotation-inject", 10, "enabled"),
        ("annotation-cpu", 11, "100m"),
    ];
    values
        .iter()
        .map(|(name, selector, value)| {
            let mut bytes = vec![*selector];
            bytes.extend_from_slice(value.as_bytes());
            (*name, bytes)
        })
        .collect()
}
