//! The Certify RPC: token -> service account -> identity check -> signed leaf.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use weft_identity_api::v1::identity_server::Identity;
use weft_identity_api::{CertifyRequest, CertifyResponse};
use weft_tls::SpiffeId;

use crate::{Authenticator, CaMetrics, CertificateAuthority, IssueError};

/// A refused Certify, mapped onto gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(
        "requested identity {requested} does not match the token's service account, which proves {proven}"
    )]
    PermissionDenied { requested: String, proven: String },
    #[error("{0}")]
    Internal(String),
}

impl CertifyError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<CertifyError> for Status {
    fn from(e: CertifyError) -> Self {
        let message = e.to_string();
        match e {
            CertifyError::Unauthenticated(_) => Status::unauthenticated(message),
            CertifyError::InvalidArgument(_) => Status::invalid_argument(message),
            CertifyError::PermissionDenied { .. } => Status::permission_denied(message),
            CertifyError::Internal(_) => Status::internal(message),
        }
    }
}

/// Certificate lifetime and clock-skew allowance for issued leaves.
#[derive(Debug, Clone, Copy)]
pub struct LeafPolicy {
    pub lifetime: Duration,
    pub backdate: Duration,
}

pub struct Certifier {
    authority: Arc<CertificateAuthority>,
    authenticator: Arc<dyn Authenticator>,
    policy: LeafPolicy,
    metrics: Arc<CaMetrics>,
}

impl Certifier {
    pub fn new(
        authority: Arc<CertificateAuthority>,
        authenticator: Arc<dyn Authenticator>,
        policy: LeafPolicy,
        metrics: Arc<CaMetrics>,
    ) -> Self {
        Self {
            authority,
            authenticator,
            policy,
            metrics,
        }
    }

    pub async fn certify(&self, request: &CertifyRequest) -> Result<CertifyResponse, CertifyError> {
        let result = self.try_certify(request).await;
        match &result {
            Ok(_) => {
                self.metrics.issued.inc();
            }
            Err(e) => {
                self.metrics.refuse(e.reason());
                tracing::warn!(identity = %request.identity, reason = e.reason(), error = %e, "Certify refused");
            }
        }
        result
    }

    async fn try_certify(&self, request: &CertifyRequest) -> Result<CertifyResponse, CertifyError> {
        if request.token.is_empty() {
            return Err(CertifyError::Unauthenticated(
                "the request carries no token".into(),
            ));
        }
        let account = self
            .authenticator
            .authenticate(&request.token)
            .await
            .map_err(|e| CertifyError::Unauthenticated(e.to_string()))?;
        let requested = SpiffeId::parse(&request.identity)
            .map_err(|e| CertifyError::InvalidArgument(format!("requested identity: {e}")))?;
        let proven = SpiffeId::new(
            self.authority.trust_domain(),
            &account.namespace,
            &account.name,
        )
        .map_err(|e| {
            CertifyError::Unauthenticated(format!("the token's service account is unusable: {e}"))
        })?;
        if requested != proven {
            return Err(CertifyError::PermissionDenied {
                requested: requested.to_string(),
                proven: proven.to_string(),
            });
        }
        let issued = self
            .authority
            .issue(
                &request.certificate_signing_request,
                &requested,
                self.policy.lifetime,
                self.policy.backdate,
            )
            .map_err(|e| match e {
                IssueError::Sign(_) => CertifyError::Internal(e.to_string()),
                _ => CertifyError::InvalidArgument(e.to_string()),
            })?;
        let not_after = issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        tracing::info!(identity = %requested, serial = %issued.serial, not_after, "issued certificate");
        Ok(CertifyResponse {
            leaf_certificate: issued.leaf.to_vec(),
            intermediate_certificates: issued.intermediates.iter().map(|c| c.to_vec()).collect(),
            not_after_unix_seconds: not_after,
        })
    }
}

/// The tonic service around a [`Certifier`].
pub struct CertifyService(pub Arc<Certifier>);

#[tonic::async_trait]
impl Identity for CertifyService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        Ok(Response::new(self.0.certify(request.get_ref()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::tests::test_authority;
    use crate::token::claims_for;
    use crate::{LocalTokenAuthenticator, TokenSigningKey};
    use std::time::SystemTime;
    use weft_tls::WorkloadKey;

    struct Fixture {
        certifier: Certifier,
        key: Arc<TokenSigningKey>,
        metrics: Arc<CaMetrics>,
        dir: std::path::PathBuf,
    }

    fn fixture(name: &str) -> Fixture {
        let (authority, dir) = test_authority(name);
        let metrics = Arc::new(CaMetrics::new(authority.issuer_not_after()));
        let key = crate::ca_directory::CaDirectory::new(&dir)
            .load_token_key()
            .unwrap();
        let signer = Arc::new(
            crate::ca_directory::CaDirectory::new(&dir)
                .load_token_key()
                .unwrap(),
        );
        let certifier = Certifier::new(
            Arc::new(authority),
            Arc::new(LocalTokenAuthenticator::new(key)),
            LeafPolicy {
                lifetime: Duration::from_secs(3600),
                backdate: Duration::from_secs(60),
            },
            Arc::clone(&metrics),
        );
        Fixture {
            certifier,
            key: signer,
            metrics,
            dir,
        }
    }

    fn request(f: &Fixture, token_sa: &str, identity: &str) -> CertifyRequest {
        let token = f
            .key
            .mint(&claims_for(
                "shop",
                token_sa,
                Duration::from_secs(60),
                SystemTime::now(),
            ))
            .unwrap();
        let csr = WorkloadKey::generate()
            .unwrap()
            .csr_der(&SpiffeId::parse(identity).unwrap_or_else(|_| {
                SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap()
            }))
            .unwrap();
        CertifyRequest {
            token,
            certificate_signing_request: csr,
            identity: identity.into(),
        }
    }

    #[tokio::test]
    async fn issues_for_the_proven_identity_and_counts() {
        let f = fixture("certify-ok");
        let response = f
            .certifier
            .certify(&request(&f, "web", "spiffe://cluster.local/ns/shop/sa/web"))
            .await
            .unwrap();
        let info = weft_tls::certificate::inspect(&response.leaf_certificate).unwrap();
        assert_eq!(
            info.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert_eq!(response.intermediate_certificates.len(), 1);
        assert!(
            f.metrics
                .encode()
                .unwrap()
                .contains("weft_identity_certificates_issued_total 1")
        );
        std::fs::remove_dir_all(&f.dir).unwrap();
    }

    #[tokio::test]
    async fn refusals_map_to_the_right_status_and_name_both_identities() {
        let f = fixture("certify-refuse");
        let err = f
            .certifier
            .certify(&request(
                &f,
                "web",
                "spiffe://cluster.local/ns/shop/sa/admin",
            ))
            .await
            .unwrap_err();
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status
                .message()
                .contains("spiffe://cluster.local/ns/shop/sa/admin")
        );
        assert!(
            status
                .message()
                .contains("spiffe://cluster.local/ns/shop/sa/web")
        );

        let other_domain = f
            .certifier
            .certify(&request(&f, "web", "spiffe://other.domain/ns/shop/sa/web"))
            .await
            .unwrap_err();
        assert_eq!(
            Status::from(other_domain).code(),
            tonic::Code::PermissionDenied
        );

        let mut bad_token = request(&f, "web", "spiffe://cluster.local/ns/shop/sa/web");
        bad_token.token.push('x');
        let status = Status::from(f.certifier.certify(&bad_token).await.unwrap_err());
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status.message().contains("local token refused"),
            "{}",
            status.message()
        );

        let mut bad_csr = request(&f, "web", "spiffe://cluster.local/ns/shop/sa/web");
        bad_csr.certificate_signing_request = b"junk".to_vec();
        assert_eq!(
            Status::from(f.certifier.certify(&bad_csr).await.unwrap_err()).code(),
            tonic::Code::InvalidArgument
        );

        let bad_id = request(&f, "web", "spiffe://cluster.local/web");
        assert_eq!(
            Status::from(f.certifier.certify(&bad_id).await.unwrap_err()).code(),
            tonic::Code::InvalidArgument
        );

        let text = f.metrics.encode().unwrap();
        assert!(
            text.contains("weft_identity_certify_refusals_total{reason=\"permission_denied\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weft_identity_certify_refusals_total{reason=\"unauthenticated\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weft_identity_certify_refusals_total{reason=\"invalid_argument\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weft_identity_certificates_issued_total 0"),
            "{text}"
        );
        std::fs::remove_dir_all(&f.dir).unwrap();
    }
}
