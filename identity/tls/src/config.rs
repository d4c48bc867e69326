//! rustls configurations for the mesh: TLS 1.3 only, the ring provider, SPIFFE verification,
//! and the certificate from a [`CertificateSlot`].

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};

use crate::{CertificateSlot, SpiffeClientVerifier, SpiffeServerVerifier, TlsError, TrustAnchors};

/// The one crypto provider Weft uses (ring).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a server asks its clients for a certificate.
#[derive(Debug, Clone)]
pub enum ClientAuthentication {
    /// Mesh traffic: the client must present a chain to `anchors` with an identity in `trust_domain`.
    Required {
        anchors: TrustAnchors,
        trust_domain: String,
    },
    /// The CA's Certify API: callers have no certificate yet and prove themselves with a token.
    None,
}

/// A client config that verifies servers with [`SpiffeServerVerifier`]: connect with
/// [`crate::SpiffeId::server_name`] of the identity you expect. `certificate` is what this side
/// presents when asked (`None` for a workload that has none yet, like one calling the CA).
pub fn client_config(
    anchors: &TrustAnchors,
    trust_domain: &str,
    certificate: Option<Arc<CertificateSlot>>,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            anchors.clone(),
            trust_domain,
        )));
    let mut config = match certificate {
        Some(slot) => builder.with_client_cert_resolver(slot),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A server config presenting the slot's certificate, asking clients as `client_auth` says.
/// Handshakes fail while the slot is empty.
pub fn server_config(
    certificate: Arc<CertificateSlot>,
    client_auth: ClientAuthentication,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_auth {
        ClientAuthentication::Required {
            anchors,
            trust_domain,
        } => builder.with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            &anchors,
            &trust_domain,
        )?)),
        ClientAuthentication::None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = alpn;
    Ok(config)
}
