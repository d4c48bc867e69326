use std::path::{Path, PathBuf};
use std::time::Duration;

/// Failures of the CA's own files and signing (not of a caller's request; see `CertifyError`).
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "{0} already exists; pass --force to replace the CA (every workload must then get the new trust anchor)"
    )]
    Exists(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not usable: {1}")]
    Invalid(PathBuf, String),
    #[error("--issuer-lifetime {issuer:?} is longer than --anchor-lifetime {anchor:?}")]
    Lifetimes { issuer: Duration, anchor: Duration },
    #[error("invalid trust domain: {0}")]
    TrustDomain(#[from] weft_tls::SpiffeIdError),
    #[error("cannot sign: {0}")]
    Sign(String),
}

impl CaError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
