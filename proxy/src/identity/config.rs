//! The identity settings (`WEFT_IDENTITY_*`, `WEFT_TRUST_*`, the pod's service account) and their
//! check at start-up: with `WEFT_IDENTITY_ADDR` set, everything needed to ask for a certificate
//! must be there and valid, or the proxy refuses to start naming the setting.

use std::path::PathBuf;

use weft_tls::{SpiffeId, TrustAnchors};

/// Flattened into the proxy's configuration.
#[derive(Clone, Debug, clap::Args)]
pub struct IdentityConfig {
    /// The CA ("host:port"); unset: no workload identity, plaintext between proxies.
    #[arg(long, env = "WEFT_IDENTITY_ADDR")]
    pub identity_addr: Option<String>,

    /// The token proving the pod's service account to the CA; re-read at every request (it rotates).
    #[arg(long, env = "WEFT_IDENTITY_TOKEN_FILE")]
    pub identity_token_file: Option<PathBuf>,

    /// PEM file of the CA certificates peers' chains must lead to.
    #[arg(long, env = "WEFT_TRUST_ANCHORS")]
    pub trust_anchors: Option<PathBuf>,

    /// The mesh's trust domain: identities are spiffe://<trust-domain>/ns/<namespace>/sa/<account>.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// The pod's service account (downward API): the identity asked for.
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT", default_value = "")]
    pub service_account: String,
}

/// What the identity client needs, checked.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    pub ca_addr: String,
    pub token_file: PathBuf,
    pub anchors: TrustAnchors,
    pub id: SpiffeId,
}

/// A missing or invalid identity setting; names the setting.
#[derive(Debug, thiserror::Error)]
pub enum IdentityConfigError {
    #[error("WEFT_IDENTITY_ADDR is set, so {setting} must be set too ({what})")]
    Missing {
        setting: &'static str,
        what: &'static str,
    },
    #[error("invalid WEFT_TRUST_ANCHORS={path:?}: {source}")]
    Anchors {
        path: PathBuf,
        #[source]
        source: weft_tls::TlsError,
    },
    #[error(
        "the workload identity from WEFT_TRUST_DOMAIN={trust_domain:?}, WEFT_POD_NAMESPACE={namespace:?} and WEFT_SERVICE_ACCOUNT={service_account:?} is invalid: {source}"
    )]
    Identity {
        trust_domain: String,
        namespace: String,
        service_account: String,
        #[source]
        source: weft_tls::SpiffeIdError,
    },
}

impl IdentityConfig {
    /// `None` when no CA is configured (the proxy runs without identity). `namespace` is the
    /// pod's (WEFT_POD_NAMESPACE).
    pub fn settings(
        &self,
        namespace: &str,
    ) -> Result<Option<IdentitySettings>, IdentityConfigError> {
        let Some(ca_addr) = self.identity_addr.clone() else {
            return Ok(None);
        };
        let token_file = self
            .identity_token_file
            .clone()
            .ok_or(IdentityConfigError::Missing {
                setting: "WEFT_IDENTITY_TOKEN_FILE",
                what: "the service-account token the CA checks",
            })?;
        let anchors_path = self
            .trust_anchors
            .clone()
            .ok_or(IdentityConfigError::Missing {
                setting: "WEFT_TRUST_ANCHORS",
                what: "the PEM file of trust anchors",
            })?;
        if namespace.is_empty() {
            return Err(IdentityConfigError::Missing {
                setting: "WEFT_POD_NAMESPACE",
                what: "the pod's namespace, part of its identity",
            });
        }
        if self.service_account.is_empty() {
            return Err(IdentityConfigError::Missing {
                setting: "WEFT_SERVICE_ACCOUNT",
                what: "the pod's service account, part of its identity",
            });
        }
        let id = SpiffeId::new(&self.trust_domain, namespace, &self.service_account).map_err(
            |source| IdentityConfigError::Identity {
                trust_domain: self.trust_domain.clone(),
                namespace: namespace.to_owned(),
                service_account: self.service_account.clone(),
                source,
            },
        )?;
        let anchors = TrustAnchors::from_pem_file(&anchors_path).map_err(|source| {
            IdentityConfigError::Anchors {
                path: anchors_path.clone(),
                source,
            }
        })?;
        Ok(Some(IdentitySettings {
            ca_addr,
            token_file,
            anchors,
            id,
        }))
    }
}
