//! `weft-identity serve`: the Certify API over TLS, with its own serving certificate issued by the
//! issuer for `spiffe://<td>/ns/weft/sa/weft-identity` and renewed at 70% of its life.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use weft_identity_api::v1::identity_server::IdentityServer;
use weft_identity_api::{CA_NAMESPACE, CA_SERVICE_ACCOUNT};
use weft_tls::{CertificateSlot, ClientAuthentication, SpiffeId, WorkloadKey};

use crate::{
    Authenticator, CaMetrics, CertificateAuthority, Certifier, CertifyService, LeafPolicy,
    admin::serve_admin,
};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Listen {
        flag: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot issue the CA's own serving certificate: {0}")]
    ServingCertificate(String),
    #[error("the gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub leaf: LeafPolicy,
}

/// Runs until `shutdown` resolves.
pub async fn serve(
    options: ServeOptions,
    authority: CertificateAuthority,
    authenticator: Arc<dyn Authenticator>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let authority = Arc::new(authority);
    let metrics = Arc::new(CaMetrics::new(authority.issuer_not_after()));
    let ready = Arc::new(AtomicBool::new(false));

    let own_identity = SpiffeId::new(authority.trust_domain(), CA_NAMESPACE, CA_SERVICE_ACCOUNT)
        .map_err(|e| ServeError::ServingCertificate(e.to_string()))?;
    let (certified, not_after) = serving_certificate(&authority, &own_identity, options.leaf)?;
    let slot = CertificateSlot::with(certified);
    let renewal = tokio::spawn(renew_serving_certificate(
        Arc::clone(&authority),
        own_identity.clone(),
        options.leaf,
        Arc::clone(&slot),
        not_after,
    ));

    let tls = weft_tls::server_config(slot, ClientAuthentication::None, vec![b"h2".to_vec()])
        .map_err(|e| ServeError::ServingCertificate(e.to_string()))?;
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| ServeError::Listen {
                flag: "--listen",
                addr: options.listen,
                source,
            })?;
    let admin_listener = TcpListener::bind(options.admin_listen)
        .await
        .map_err(|source| ServeError::Listen {
            flag: "--admin-listen",
            addr: options.admin_listen,
            source,
        })?;
    let admin = tokio::spawn(serve_admin(
        admin_listener,
        Arc::clone(&metrics),
        Arc::clone(&ready),
    ));

    let (connections, incoming) = mpsc::channel(64);
    let acceptor = tokio::spawn(accept_tls(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        connections,
    ));
    let certifier = Certifier::new(
        Arc::clone(&authority),
        Arc::clone(&authenticator),
        options.leaf,
        metrics,
    );
    tracing::info!(
        listen = %options.listen,
        admin = %options.admin_listen,
        identity = %own_identity,
        authenticator = authenticator.kind(),
        lifetime = ?options.leaf.lifetime,
        "weft-identity serving Certify"
    );
    ready.store(true, Ordering::Release);
    let result = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(CertifyService(Arc::new(certifier))))
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await;
    ready.store(false, Ordering::Release);
    acceptor.abort();
    admin.abort();
    renewal.abort();
    result.map_err(ServeError::from)
}

fn serving_certificate(
    authority: &CertificateAuthority,
    identity: &SpiffeId,
    policy: LeafPolicy,
) -> Result<(Arc<rustls::sign::CertifiedKey>, SystemTime), ServeError> {
    let failed = |e: String| ServeError::ServingCertificate(e);
    let key = WorkloadKey::generate().map_err(|e| failed(e.to_string()))?;
    let csr = key.csr_der(identity).map_err(|e| failed(e.to_string()))?;
    let issued = authority
        .issue(&csr, identity, policy.lifetime, policy.backdate)
        .map_err(|e| failed(e.to_string()))?;
    let mut chain = vec![issued.leaf];
    chain.extend(issued.intermediates);
    let certified = key
        .certified_key(chain)
        .map_err(|e| failed(e.to_string()))?;
    Ok((certified, issued.not_after))
}

async fn renew_serving_certificate(
    authority: Arc<CertificateAuthority>,
    identity: SpiffeId,
    policy: LeafPolicy,
    slot: Arc<CertificateSlot>,
    mut not_after: SystemTime,
) {
    loop {
        // Renew at 70% of the remaining life; retry every few seconds if signing fails.
        let remaining = not_after
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(remaining.mul_f64(0.7).max(Duration::from_secs(1))).await;
        match serving_certificate(&authority, &identity, policy) {
            Ok((certified, next)) => {
                slot.replace(certified);
                not_after = next;
                tracing::info!(identity = %identity, "renewed the CA's serving certificate");
            }
            Err(e) => tracing::error!(error = %e, "cannot renew the CA's serving certificate"),
        }
    }
}

/// Accepts TCP and hands finished TLS handshakes to the gRPC server; a slow or failed handshake
/// never holds up others.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: mpsc::Sender<io::Result<TlsConnection>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, connections) = (acceptor.clone(), connections.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = connections.send(Ok(TlsConnection { tls, peer })).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// A TLS connection tonic can serve.
struct TlsConnection {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl Connected for TlsConnection {
    type ConnectInfo = SocketAddr;

    fn connect_info(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}
