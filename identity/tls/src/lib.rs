//! weft-tls: what Weft's proxy and its CA share.
//!
//! - [`SpiffeId`]: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, strictly parsed,
//!   and its SNI name `<service-account>.<namespace>.sa.<trust-domain>` ([`SpiffeId::sni_name`]).
//! - [`WorkloadKey`]: an ECDSA P-256 key made in the process, its CSR, and its pairing with the
//!   chain the CA returns.
//! - [`TrustAnchors`], [`pem`]: loading PEM material.
//! - [`certificate`]: the SPIFFE id and validity of a DER certificate.
//! - [`SpiffeServerVerifier`], [`SpiffeClientVerifier`], [`peer_identity`]: chain verification plus
//!   the URI SAN check rustls' stock verifiers do not do.
//! - [`CertificateSlot`], [`client_config`], [`server_config`]: TLS 1.3 configs (ring) whose
//!   certificate can be swapped for rotation without touching open connections.

pub mod certificate;
mod certificate_slot;
mod config;
mod error;
pub mod pem;
mod spiffe;
mod trust_anchors;
mod verify;
mod workload_key;

#[cfg(test)]
mod handshake_tests;
#[cfg(any(test, feature = "test-ca"))]
pub mod test_ca;

pub use certificate::CertificateInfo;
pub use certificate_slot::CertificateSlot;
pub use config::{ClientAuthentication, client_config, crypto_provider, server_config};
pub use error::TlsError;
pub use spiffe::{SpiffeId, SpiffeIdError, sni_name, validate_trust_domain};
pub use trust_anchors::TrustAnchors;
pub use verify::{IdentityMismatch, SpiffeClientVerifier, SpiffeServerVerifier, peer_identity};
pub use workload_key::WorkloadKey;

// Re-exported so users name the same rustls types this crate was built with.
pub use rustls;
