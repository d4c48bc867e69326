//! The proxy's workload identity: a key made at start, a certificate for
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` from the CA, kept renewed
//! ([`rotation`]), and the TLS configurations that present it. Without `WEFT_IDENTITY_ADDR` there
//! is none, and proxies talk plaintext.

pub mod certify;
pub mod config;
pub mod rotation;

use std::sync::Arc;
use std::time::Duration;

use weft_tls::rustls::{ClientConfig, ServerConfig};
use weft_tls::{
    CertificateSlot, ClientAuthentication, SpiffeId, TlsError, TrustAnchors, WorkloadKey,
};

use crate::metrics::identity::IdentityMetrics;
use crate::readiness::Readiness;
use crate::tls::transport::Transport;
use certify::GrpcCertifier;
use config::IdentitySettings;
use rotation::Rotation;

/// Why the identity client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid WEFT_IDENTITY_ADDR: {0}")]
    Channel(#[from] weft_identity_api::CaChannelError),
}

/// This proxy's identity and the TLS configs presenting its current certificate.
pub struct LocalIdentity {
    id: SpiffeId,
    sni_name: String,
    slot: Arc<CertificateSlot>,
    anchors: TrustAnchors,
    h2_client: Arc<ClientConfig>,
    tcp_client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl LocalIdentity {
    /// Configs for `id` around `slot` (empty until the first certificate arrives: handshakes fail
    /// until then).
    pub fn new(
        id: SpiffeId,
        anchors: TrustAnchors,
        slot: Arc<CertificateSlot>,
    ) -> Result<Self, TlsError> {
        let client = |transport: Transport| {
            weft_tls::client_config(
                &anchors,
                id.trust_domain(),
                Some(slot.clone()),
                vec![transport.alpn().to_vec()],
            )
            .map(Arc::new)
        };
        let server = weft_tls::server_config(
            slot.clone(),
            ClientAuthentication::Required {
                anchors: anchors.clone(),
                trust_domain: id.trust_domain().to_owned(),
            },
            Transport::ALL.iter().map(|t| t.alpn().to_vec()).collect(),
        )?;
        Ok(LocalIdentity {
            sni_name: id.sni_name(),
            h2_client: client(Transport::H2)?,
            tcp_client: client(Transport::Tcp)?,
            server: Arc::new(server),
            id,
            slot,
            anchors,
        })
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The SNI name peers use to reach this proxy's mTLS termination.
    pub fn sni_name(&self) -> &str {
        &self.sni_name
    }

    pub fn trust_domain(&self) -> &str {
        self.id.trust_domain()
    }

    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Whether a certificate has arrived (before that, no mTLS can be set up).
    pub fn has_certificate(&self) -> bool {
        self.slot.current().is_some()
    }

    /// Originating mTLS to a peer proxy over `transport`.
    pub fn client_config(&self, transport: Transport) -> Arc<ClientConfig> {
        match transport {
            Transport::H2 => self.h2_client.clone(),
            Transport::Tcp => self.tcp_client.clone(),
        }
    }

    /// Terminating mTLS from peer proxies.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }
}

/// Generates the key, starts obtaining and renewing the certificate in the background, and
/// returns the identity; `/ready` waits for its first certificate.
pub fn start(
    settings: &IdentitySettings,
    connect_timeout: Duration,
    metrics: &IdentityMetrics,
    readiness: &Readiness,
) -> Result<Arc<LocalIdentity>, IdentityError> {
    let key = WorkloadKey::generate()?;
    let certifier = Arc::new(GrpcCertifier::new(settings, connect_timeout)?);
    let slot = CertificateSlot::empty();
    let identity = LocalIdentity::new(settings.id.clone(), settings.anchors.clone(), slot.clone())?;
    metrics.set_enabled(true);
    let rotation = Rotation {
        key,
        id: settings.id.clone(),
        certifier,
        slot,
        metrics: metrics.clone(),
        ready: readiness.condition("workload certificate"),
    };
    tokio::spawn(rotation.run());
    Ok(Arc::new(identity))
}
