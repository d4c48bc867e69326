//! Certificate verifiers that check SPIFFE ids instead of DNS names.
//!
//! Both verify the chain against the trust anchors with webpki (validity period, signatures, EKU),
//! then look at the leaf's URI SAN: the server side must present exactly the identity the client
//! asked for, the client side must present some identity of the trust domain.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    SignatureScheme,
};

use crate::{SpiffeId, TlsError, TrustAnchors, certificate, crypto_provider};

/// Verifies a server (the peer proxy, or the CA) for a client.
///
/// The identity demanded is the one the SNI name stands for ([`SpiffeId::server_name`]), so one
/// `ClientConfig` serves every peer: connect with the server name of the identity discovery
/// promised, and the handshake fails unless the peer's certificate carries exactly that URI SAN.
pub struct SpiffeServerVerifier {
    anchors: TrustAnchors,
    trust_domain: String,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    pub fn new(anchors: TrustAnchors, trust_domain: &str) -> Self {
        Self {
            anchors,
            trust_domain: trust_domain.to_owned(),
            provider: crypto_provider(),
        }
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("trust_domain", &self.trust_domain)
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let expected = match server_name {
            ServerName::DnsName(name) => SpiffeId::from_sni_name(name.as_ref(), &self.trust_domain),
            _ => None,
        }
        .ok_or_else(|| {
            other_error(format!(
                "server name {server_name:?} is not the SNI name of an identity in trust domain {}",
                self.trust_domain
            ))
        })?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.anchors.root_store(),
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let presented = leaf_identity(end_entity)?;
        if presented != expected {
            return Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(IdentityMismatch {
                    expected: expected.to_string(),
                    presented: presented.to_string(),
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies a client (the calling proxy) for a server: a valid chain and an identity in the trust
/// domain. Which identities may call which port is policy, decided after the handshake with
/// [`peer_identity`].
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl SpiffeClientVerifier {
    pub fn new(anchors: &TrustAnchors, trust_domain: &str) -> Result<Self, TlsError> {
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            anchors.root_store(),
            crypto_provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self {
            inner,
            trust_domain: trust_domain.to_owned(),
        })
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let presented = leaf_identity(end_entity)?;
        if presented.trust_domain() != self.trust_domain {
            return Err(other_error(format!(
                "client identity {presented} is outside trust domain {}",
                self.trust_domain
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The identity the peer of an established connection proved (its leaf's URI SAN); `None` when it
/// presented no certificate. Use on the `ServerConnection`/`ClientConnection` of a finished handshake.
pub fn peer_identity(connection: &CommonState) -> Result<Option<SpiffeId>, TlsError> {
    match connection
        .peer_certificates()
        .and_then(|chain| chain.first())
    {
        None => Ok(None),
        Some(leaf) => certificate::spiffe_id_of(leaf).map(Some),
    }
}

/// The refusal a verifier gives when the peer's identity is not the expected one.
#[derive(Debug, thiserror::Error)]
#[error("peer presented identity {presented}, expected {expected}")]
pub struct IdentityMismatch {
    pub expected: String,
    pub presented: String,
}

fn leaf_identity(end_entity: &CertificateDer<'_>) -> Result<SpiffeId, Error> {
    certificate::spiffe_id_of(end_entity).map_err(|e| other_error(e.to_string()))
}

fn other_error(message: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(VerifyError(
        message,
    )))))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct VerifyError(String);
