//! Terminating mTLS from a peer proxy: the handshake with this proxy's certificate, the client's
//! chain verified against the trust anchors (weft_tls::SpiffeClientVerifier), its identity read
//! from the certificate, and the transport from ALPN.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use weft_tls::SpiffeId;

use crate::identity::LocalIdentity;
use crate::tls::transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the mTLS handshake did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the mTLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    #[error("the client presented no usable workload identity: {0}")]
    NoIdentity(String),
    #[error("the client asked for no known transport (ALPN)")]
    NoTransport,
}

/// A terminated mTLS connection and what it proved.
pub struct Terminated<I> {
    pub stream: TlsStream<I>,
    pub client: SpiffeId,
    pub transport: Transport,
}

pub async fn terminate<I>(
    io: I,
    identity: &LocalIdentity,
    timeout: Duration,
) -> Result<Terminated<I>, AcceptError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = TlsAcceptor::from(identity.server_config());
    let stream = tokio::time::timeout(timeout, acceptor.accept(io))
        .await
        .map_err(|_| AcceptError::Timeout(timeout))?
        .map_err(AcceptError::Handshake)?;
    let connection = stream.get_ref().1;
    let client = match weft_tls::peer_identity(connection) {
        Ok(Some(client)) => client,
        Ok(None) => return Err(AcceptError::NoIdentity("no certificate".into())),
        Err(err) => return Err(AcceptError::NoIdentity(err.to_string())),
    };
    let transport = connection
        .alpn_protocol()
        .and_then(Transport::from_alpn)
        .ok_or(AcceptError::NoTransport)?;
    Ok(Terminated {
        stream,
        client,
        transport,
    })
}
