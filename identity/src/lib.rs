//! weft-identity: Weft's CA.
//!
//! `ca_directory` (the anchor, issuer and token key on disk) -> `authority` (signing leaves) ;
//! `authenticator` + `token` (local tokens) + `token_review` (Kubernetes) prove a caller's service
//! account ; `certify` is the RPC ; `server` serves it over TLS ; `admin` and `metrics` observe it.

pub mod admin;
pub mod authenticator;
pub mod authority;
pub mod ca_directory;
pub mod certify;
mod error;
pub mod metrics;
pub mod server;
pub mod token;
#[cfg(feature = "kubernetes")]
pub mod token_review;

pub use authenticator::{AuthError, Authenticator, LocalTokenAuthenticator, ServiceAccount};
pub use authority::{CertificateAuthority, IssueError, IssuedCertificate};
pub use ca_directory::{CaDirectory, InitOptions};
pub use certify::{Certifier, CertifyError, CertifyService, LeafPolicy};
pub use error::CaError;
pub use metrics::CaMetrics;
pub use server::{ServeError, ServeOptions, serve};
pub use token::{TokenClaims, TokenError, TokenSigningKey};
