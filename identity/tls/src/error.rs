use std::path::PathBuf;

use crate::SpiffeIdError;

/// What went wrong loading, making or checking TLS material; each names the file or certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{source_name} holds no {what}")]
    Empty {
        what: &'static str,
        source_name: String,
    },
    #[error("trust anchor {index} from {source_name} is not usable: {reason}")]
    BadAnchor {
        index: usize,
        source_name: String,
        reason: String,
    },
    #[error("cannot generate the workload key: {0}")]
    KeyGeneration(String),
    #[error("cannot build the certificate signing request for {identity}: {reason}")]
    Csr { identity: String, reason: String },
    #[error("the certificate is not a valid X.509 certificate: {0}")]
    Certificate(String),
    #[error("the certificate carries no spiffe:// URI SAN")]
    NoSpiffeId,
    #[error(
        "the certificate carries {0} spiffe:// URI SANs; a workload certificate has exactly one"
    )]
    SeveralSpiffeIds(usize),
    #[error("the certificate's URI SAN is not a Weft identity: {0}")]
    BadSpiffeId(#[from] SpiffeIdError),
    #[error("the certificate chain does not go with the workload key: {0}")]
    KeyMismatch(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}
