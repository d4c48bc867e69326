//! A gRPC channel to the CA over TLS 1.3, verifying the CA presents its SPIFFE id.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use weft_tls::{SpiffeId, TrustAnchors};

use crate::{CA_NAMESPACE, CA_SERVICE_ACCOUNT};

/// Why a channel to the CA cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum CaChannelError {
    #[error("identity address {addr:?} is not host:port: {reason}")]
    Address { addr: String, reason: String },
    #[error("the CA's identity in trust domain {trust_domain:?} is invalid: {reason}")]
    Identity {
        trust_domain: String,
        reason: String,
    },
    #[error("cannot build the TLS client configuration for the CA: {0}")]
    Tls(#[from] weft_tls::TlsError),
}

/// A lazily connecting channel to the CA at `addr` (`host:port`, as in `WEFT_IDENTITY_ADDR`).
///
/// It connects on first use and reconnects after failures, each attempt bounded by
/// `connect_timeout`. The server must prove `spiffe://<trust_domain>/ns/weft/sa/weft-identity`
/// with a chain to `anchors`; the caller presents no certificate (it proves itself with a token).
pub fn ca_channel(
    addr: &str,
    anchors: &TrustAnchors,
    trust_domain: &str,
    connect_timeout: Duration,
) -> Result<Channel, CaChannelError> {
    let address_error = |reason: String| CaChannelError::Address {
        addr: addr.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| address_error(e.to_string()))?
        .connect_timeout(connect_timeout);
    let authority = endpoint
        .uri()
        .authority()
        .filter(|a| a.port().is_some())
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| address_error("a port is required".into()))?;
    let ca = SpiffeId::new(trust_domain, CA_NAMESPACE, CA_SERVICE_ACCOUNT).map_err(|e| {
        CaChannelError::Identity {
            trust_domain: trust_domain.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let server_name = ca.server_name().map_err(|e| CaChannelError::Identity {
        trust_domain: trust_domain.to_owned(),
        reason: e.to_string(),
    })?;
    let tls = TlsConnector::from(Arc::new(weft_tls::client_config(
        anchors,
        trust_domain,
        None,
        vec![b"h2".to_vec()],
    )?));
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, server_name, authority) = (tls.clone(), server_name.clone(), authority.clone());
        async move {
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchors() -> TrustAnchors {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TrustAnchors::from_der(vec![cert.der().clone()], "test").unwrap()
    }

    #[tokio::test]
    async fn addresses_need_a_port_and_trust_domains_must_be_valid() {
        let a = anchors();
        let t = Duration::from_secs(1);
        assert!(ca_channel("weft-identity.weft.svc:8080", &a, "cluster.local", t).is_ok());
        assert!(ca_channel("127.0.0.1:8080", &a, "cluster.local", t).is_ok());
        let err = ca_channel("weft-identity", &a, "cluster.local", t).unwrap_err();
        assert!(err.to_string().contains("\"weft-identity\""), "{err}");
        let err = ca_channel("127.0.0.1:8080", &a, "Bad Domain", t).unwrap_err();
        assert!(err.to_string().contains("Bad Domain"), "{err}");
    }
}
