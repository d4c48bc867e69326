//! weft-identity-api: `weft.identity.v1.Identity`, the CA's Certify API (proto/identity.proto).
//!
//! Feature `client`: the generated client and [`ca_channel`], a tonic channel to the CA over TLS
//! that checks the CA's SPIFFE id. Feature `server`: the generated server trait.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("weft.identity.v1");
}

pub use v1::{CertifyRequest, CertifyResponse};

#[cfg(feature = "client")]
mod ca_channel;
#[cfg(feature = "client")]
pub use ca_channel::{CaChannelError, ca_channel};

/// The service account the CA's own serving certificate names, in namespace `weft`:
/// clients verify `spiffe://<trust-domain>/ns/weft/sa/weft-identity`.
pub const CA_NAMESPACE: &str = "weft";
pub const CA_SERVICE_ACCOUNT: &str = "weft-identity";

/// The audience a Kubernetes service-account token must carry for the CA.
pub const TOKEN_AUDIENCE: &str = "weft-identity";
