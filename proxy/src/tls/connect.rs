//! Originating mTLS to a peer proxy: TCP to the peer's proxy port, TLS 1.3 with the SNI name of
//! the identity discovery promised (the handshake fails unless the peer proves exactly that
//! identity), and the ALPN of the transport, which the peer must accept.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::connect::{ConnectError, connect};
use crate::identity::LocalIdentity;
use crate::peer::MeshedPeer;
use crate::tls::transport::{Payload, Transport, TransportHeader};

/// Why a connection to a peer proxy could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("discovery gave endpoint {endpoint} the invalid identity {identity:?}: {source}")]
    BadIdentity {
        endpoint: SocketAddr,
        identity: String,
        #[source]
        source: weft_tls::SpiffeIdError,
    },
    #[error("no workload certificate yet: cannot open mTLS to {peer} ({identity})")]
    NoCertificate { peer: SocketAddr, identity: String },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("mTLS handshake with {peer}, expecting {identity}, failed: {source}")]
    Handshake {
        peer: SocketAddr,
        identity: String,
        #[source]
        source: io::Error,
    },
    #[error("mTLS handshake with {peer} ({identity}) timed out after {after:?}")]
    HandshakeTimeout {
        peer: SocketAddr,
        identity: String,
        after: Duration,
    },
    #[error("{peer} ({identity}) did not accept the {transport} transport")]
    Alpn {
        peer: SocketAddr,
        identity: String,
        transport: &'static str,
    },
    #[error("sending the transport header to {peer} failed: {source}")]
    Header {
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("HTTP handshake over mTLS with {peer} failed: {source}")]
    HttpHandshake {
        peer: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {peer} over mTLS failed: {source}")]
    Request {
        peer: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl PeerError {
    pub fn status(&self) -> StatusCode {
        match self {
            PeerError::NoCertificate { .. } => StatusCode::SERVICE_UNAVAILABLE,
            PeerError::Connect(ConnectError::Timeout { .. })
            | PeerError::HandshakeTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            PeerError::Request { source, .. } if source.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn short_cause(&self) -> &'static str {
        match self {
            PeerError::NoCertificate { .. } => "no workload certificate yet",
            PeerError::BadIdentity { .. } => "invalid peer identity",
            PeerError::Connect(err) => err.short_cause(),
            PeerError::Handshake { .. } | PeerError::HandshakeTimeout { .. } => {
                "peer mTLS handshake failed"
            }
            PeerError::Alpn { .. } => "peer refused the transport",
            PeerError::Header { .. } | PeerError::HttpHandshake { .. } => {
                "upstream handshake failed"
            }
            PeerError::Request { .. } => "upstream connection failed",
        }
    }

    /// Whether the request never reached the peer (safe to retry elsewhere).
    pub fn is_connect_failure(&self) -> bool {
        !matches!(self, PeerError::Request { .. })
    }
}

/// Opens mTLS connections to peer proxies with this proxy's identity.
#[derive(Clone)]
pub struct PeerConnector {
    identity: Arc<LocalIdentity>,
    connect_timeout: Duration,
}

impl PeerConnector {
    pub fn new(identity: Arc<LocalIdentity>, connect_timeout: Duration) -> Self {
        PeerConnector {
            identity,
            connect_timeout,
        }
    }

    pub fn identity(&self) -> &LocalIdentity {
        &self.identity
    }

    /// mTLS to `peer` on the tcp transport, with the header naming the app `port` and what
    /// follows it.
    pub async fn connect_tcp(
        &self,
        peer: &MeshedPeer,
        port: u16,
        payload: Payload,
    ) -> Result<TlsStream<TcpStream>, PeerError> {
        let mut tls = self.connect(peer, Transport::Tcp).await?;
        TransportHeader { port, payload }
            .write(&mut tls)
            .await
            .map_err(|source| PeerError::Header {
                peer: peer.proxy,
                source,
            })?;
        Ok(tls)
    }

    pub async fn connect(
        &self,
        peer: &MeshedPeer,
        transport: Transport,
    ) -> Result<TlsStream<TcpStream>, PeerError> {
        let identity = || peer.identity.to_string();
        if !self.identity.has_certificate() {
            return Err(PeerError::NoCertificate {
                peer: peer.proxy,
                identity: identity(),
            });
        }
        let server_name = peer
            .identity
            .server_name()
            .map_err(|e| PeerError::Handshake {
                peer: peer.proxy,
                identity: identity(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })?;
        let tcp = connect(peer.proxy, self.connect_timeout).await?;
        let connector = TlsConnector::from(self.identity.client_config(transport));
        let tls = tokio::time::timeout(self.connect_timeout, connector.connect(server_name, tcp))
            .await
            .map_err(|_| PeerError::HandshakeTimeout {
                peer: peer.proxy,
                identity: identity(),
                after: self.connect_timeout,
            })?
            .map_err(|source| PeerError::Handshake {
                peer: peer.proxy,
                identity: identity(),
                source,
            })?;
        if tls.get_ref().1.alpn_protocol() != Some(transport.alpn()) {
            return Err(PeerError::Alpn {
                peer: peer.proxy,
                identity: identity(),
                transport: transport.as_str(),
            });
        }
        Ok(tls)
    }
}
