//! Asking the CA for a certificate: one Certify call with the pod's current token (re-read each
//! time, as the kubelet rotates it) and a CSR for the workload key.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tonic::transport::Channel;
use weft_identity_api::CertifyRequest;
use weft_identity_api::v1::identity_client::IdentityClient;
use weft_tls::SpiffeId;
use weft_tls::rustls::pki_types::CertificateDer;

use crate::identity::config::IdentitySettings;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one attempt to get a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("cannot read the identity token {path:?} (WEFT_IDENTITY_TOKEN_FILE): {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the identity token {path:?} (WEFT_IDENTITY_TOKEN_FILE) is empty")]
    EmptyToken { path: PathBuf },
    #[error("the CA at {addr} refused or failed the request: {status}")]
    Ca { addr: String, status: tonic::Status },
    #[error("the CA at {addr} returned an unusable certificate: {reason}")]
    BadAnswer { addr: String, reason: String },
    #[error(transparent)]
    Tls(#[from] weft_tls::TlsError),
}

/// Something that signs CSRs: the CA over gRPC, or a stand-in in tests.
pub trait Certifier: Send + Sync + 'static {
    /// The chain (leaf first) for `csr_der`, which asks for `identity`.
    fn certify<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_der: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<CertificateDer<'static>>, CertifyError>>;
}

/// The CA service, over a channel that checks the CA's own SPIFFE id.
pub struct GrpcCertifier {
    addr: String,
    token_file: PathBuf,
    client: IdentityClient<Channel>,
    timeout: Duration,
}

impl GrpcCertifier {
    pub fn new(
        settings: &IdentitySettings,
        connect_timeout: Duration,
    ) -> Result<Self, weft_identity_api::CaChannelError> {
        let channel = weft_identity_api::ca_channel(
            &settings.ca_addr,
            &settings.anchors,
            settings.id.trust_domain(),
            connect_timeout,
        )?;
        Ok(GrpcCertifier {
            addr: settings.ca_addr.clone(),
            token_file: settings.token_file.clone(),
            client: IdentityClient::new(channel),
            // Signing is quick; a CA that hangs must not stall renewal forever.
            timeout: connect_timeout + Duration::from_secs(10),
        })
    }

    async fn token(&self) -> Result<String, CertifyError> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| CertifyError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(CertifyError::EmptyToken {
                path: self.token_file.clone(),
            });
        }
        Ok(token.to_owned())
    }
}

impl Certifier for GrpcCertifier {
    fn certify<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_der: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<CertificateDer<'static>>, CertifyError>> {
        Box::pin(async move {
            let token = self.token().await?;
            let mut request = tonic::Request::new(CertifyRequest {
                token,
                certificate_signing_request: csr_der,
                identity: identity.uri(),
            });
            request.set_timeout(self.timeout);
            let response = self
                .client
                .clone()
                .certify(request)
                .await
                .map_err(|status| CertifyError::Ca {
                    addr: self.addr.clone(),
                    status,
                })?
                .into_inner();
            if response.leaf_certificate.is_empty() {
                return Err(CertifyError::BadAnswer {
                    addr: self.addr.clone(),
                    reason: "no leaf certificate".into(),
                });
            }
            let mut chain = vec![CertificateDer::from(response.leaf_certificate)];
            chain.extend(
                response
                    .intermediate_certificates
                    .into_iter()
                    .map(CertificateDer::from),
            );
            Ok(chain)
        })
    }
}
