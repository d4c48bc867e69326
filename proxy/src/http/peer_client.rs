//! HTTP to meshed endpoints over mTLS: one HTTP/2 connection per peer proxy carries every request
//! to it (HTTP/1 ones converted, see [`super::http_transport`]); an HTTP/1 upgrade (WebSocket,
//! CONNECT) gets its own `weft.tcp/1` connection on which it stays HTTP/1, so the upgraded
//! bytes can follow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use crate::direction::Direction;
use crate::http::hop_by_hop::is_upgrade_request;
use crate::http::mesh_encoding::to_transport;
use crate::metrics::tls::TlsMetrics;
use crate::peer::MeshedPeer;
use crate::tls::connect::{PeerConnector, PeerError};
use crate::tls::transport::{Payload, Transport};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// One peer's connection, behind an async lock so concurrent first requests share one handshake.
type Slot<B> = Arc<tokio::sync::Mutex<Option<http2::SendRequest<B>>>>;

pub struct PeerClient<B> {
    connector: PeerConnector,
    metrics: TlsMetrics,
    h1_builder: http1::Builder,
    h2_builder: http2::Builder<TokioExecutor>,
    h2: Mutex<HashMap<MeshedPeer, Slot<B>>>,
}

impl<B> PeerClient<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(connector: PeerConnector, metrics: TlsMetrics) -> Self {
        let mut h1_builder = http1::Builder::new();
        h1_builder
            .preserve_header_case(true)
            .title_case_headers(false);
        let mut h2_builder = http2::Builder::new(TokioExecutor::new());
        h2_builder
            .timer(TokioTimer::new())
            .adaptive_window(true)
            // Dead peers are noticed even when no request is waiting.
            .keep_alive_interval(std::time::Duration::from_secs(20))
            .keep_alive_while_idle(true);
        PeerClient {
            connector,
            metrics,
            h1_builder,
            h2_builder,
            h2: Mutex::new(HashMap::new()),
        }
    }

    /// Opens mTLS connections with this proxy's identity (also for opaque TCP).
    pub fn connector(&self) -> &PeerConnector {
        &self.connector
    }

    /// Sends `req`, meant for the app at `endpoint`, through the peer proxy.
    pub async fn send(
        &self,
        peer: &MeshedPeer,
        endpoint: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<Incoming>, PeerError> {
        if is_upgrade_request(&req) {
            return self.send_upgrade(peer, endpoint, req).await;
        }
        let req = to_transport(req, endpoint);
        let mut conn = self.h2_connection(peer).await?;
        conn.send_request(req)
            .await
            .map_err(|source| PeerError::Request {
                peer: peer.proxy,
                source,
            })
    }

    async fn h2_connection(&self, peer: &MeshedPeer) -> Result<http2::SendRequest<B>, PeerError> {
        let slot = self.slot(peer);
        // The common case: the connection is open and nobody is connecting; no await.
        if let Ok(conn) = slot.try_lock()
            && let Some(open) = conn.as_ref().filter(|c| !c.is_closed())
        {
            return Ok(open.clone());
        }
        let mut conn = slot.lock().await;
        if let Some(open) = conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(open.clone());
        }
        let tls = self.connector.connect(peer, Transport::H2).await?;
        let (sender, connection) =
            self.h2_builder
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|source| PeerError::HttpHandshake {
                    peer: peer.proxy,
                    source,
                })?;
        self.metrics
            .connection(Direction::Outbound, Transport::H2.as_str());
        let proxy = peer.proxy;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(peer = %proxy, error = %err, "mTLS HTTP/2 connection to peer ended with an error");
            }
        });
        *conn = Some(sender.clone());
        Ok(sender)
    }

    fn slot(&self, peer: &MeshedPeer) -> Slot<B> {
        let mut peers = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = peers.get(peer) {
            return slot.clone();
        }
        // Forget peers whose connection closed and that nobody is connecting to.
        peers.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot
                    .try_lock()
                    .map(|c| c.as_ref().is_some_and(|c| !c.is_closed()))
                    .unwrap_or(true)
        });
        peers.entry(peer.clone()).or_default().clone()
    }

    async fn send_upgrade(
        &self,
        peer: &MeshedPeer,
        endpoint: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<Incoming>, PeerError> {
        let tls = self
            .connector
            .connect_tcp(peer, endpoint.port(), Payload::Http1)
            .await?;
        self.metrics
            .connection(Direction::Outbound, Transport::Tcp.as_str());
        let (mut sender, connection) =
            self.h1_builder
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|source| PeerError::HttpHandshake {
                    peer: peer.proxy,
                    source,
                })?;
        let proxy = peer.proxy;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                debug!(peer = %proxy, error = %err, "mTLS HTTP/1 upgrade connection to peer ended with an error");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(|source| PeerError::Request {
                peer: peer.proxy,
                source,
            })
    }

    #[cfg(test)]
    pub(crate) fn peers(&self) -> usize {
        self.h2.lock().unwrap().len()
    }
}
