//! The endpoint client: the innermost service, which sends a request to its [`Target`] over a
//! pooled upstream connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use tower::Service;

use crate::discovery::Endpoint;
use crate::http::error::ProxyError;
use crate::http::extensions::ServedBy;
use crate::http::peer_client::PeerClient;
use crate::http::pool::Pool;
use crate::http::target::Target;
use crate::labels::PeerTls;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends to the request's target: over mTLS through the peer proxy when the target is a meshed
/// endpoint and this proxy has an identity, else directly over the pool.
pub struct EndpointClient<B> {
    pool: Arc<Pool<B>>,
    peers: Option<Arc<PeerClient<B>>>,
}

impl<B> Clone for EndpointClient<B> {
    fn clone(&self) -> Self {
        EndpointClient {
            pool: self.pool.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl<B> EndpointClient<B> {
    pub fn new(pool: Arc<Pool<B>>, peers: Option<Arc<PeerClient<B>>>) -> Self {
        EndpointClient { pool, peers }
    }
}

impl<B> Service<Request<B>> for EndpointClient<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let pool = self.pool.clone();
        let peers = self.peers.clone();
        Box::pin(async move {
            let target = req
                .extensions()
                .get::<Target>()
                .copied()
                .ok_or(ProxyError::NoTarget)?;
            // A meshed endpoint (the balancer attached it) is reached through its proxy.
            let endpoint = req.extensions().get::<Endpoint>();
            let meshed = match &peers {
                Some(_) => endpoint.and_then(Endpoint::meshed_peer).transpose()?,
                None => None,
            };
            // The identity discovery promised, which the handshake verified; an Arc clone, so
            // labelling the response costs no allocation.
            let served_over = meshed
                .as_ref()
                .and(endpoint)
                .and_then(|endpoint| endpoint.identity.clone())
                .map(PeerTls::Mutual);
            let mut resp = match (meshed, peers) {
                (Some(peer), Some(peers)) => peers.send(&peer, target.addr, req).await?,
                _ => pool.send(target, req).await?,
            };
            // For the request metrics: a response from a meshed endpoint came over mTLS.
            if let Some(served_over) = served_over {
                resp.extensions_mut().insert(served_over);
            }
            // Which endpoint answered, for retries to avoid it if the answer was a failure.
            resp.extensions_mut().insert(ServedBy(target.addr));
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::target::HttpVersion;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower::ServiceExt;

    /// A minimal HTTP/1.1 upstream that answers every request on a connection with "ok" and
    /// counts the connections it accepted.
    async fn upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = sock.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let reply =
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Case: kept\r\n\r\nok";
                            if sock.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn request(addr: SocketAddr) -> Request<Full<Bytes>> {
        let mut req = Request::get("/")
            .header("host", "app")
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.extensions_mut().insert(Target {
            addr,
            version: HttpVersion::Http1,
        });
        req
    }

    #[tokio::test]
    async fn reuses_a_keep_alive_connection() {
        let (addr, accepted) = upstream().await;
        let pool = Arc::new(Pool::new(Duration::from_secs(5)));
        let client = EndpointClient::new(pool.clone(), None);
        for _ in 0..3 {
            let resp = client.clone().oneshot(request(addr)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            // Let the connection task see the end of the response.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_h1(addr), 1);
    }

    #[tokio::test]
    async fn expired_idle_connections_are_swept() {
        let (addr, accepted) = upstream().await;
        let pool = Pool::shared(Duration::from_secs(5), Duration::from_secs(3600));
        let client = EndpointClient::new(pool.clone(), None);
        let resp = client.clone().oneshot(request(addr)).await.unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(pool.idle_h1(addr), 1);
        pool.age_idle_h1(Duration::from_secs(91));
        pool.sweep();
        assert_eq!(pool.idle_h1(addr), 0);
        // The next request needs a new connection.
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.oneshot(request(addr)).await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_shorter_idle_timeout_applies_to_pooled_connections() {
        let (addr, _accepted) = upstream().await;
        let pool = Pool::shared(Duration::from_secs(5), Duration::from_secs(10));
        let client = EndpointClient::new(pool.clone(), None);
        let resp = client.oneshot(request(addr)).await.unwrap();
        resp.into_body().collect().await.unwrap();
        pool.age_idle_h1(Duration::from_secs(9));
        pool.sweep();
        assert_eq!(pool.idle_h1(addr), 1);
        pool.age_idle_h1(Duration::from_secs(2));
        pool.sweep();
        assert_eq!(pool.idle_h1(addr), 0);
    }

    #[test]
    fn pooled_connections_idle_at_most_90s() {
        use crate::http::pool::pooled_idle_timeout;
        let secs = Duration::from_secs;
        assert_eq!(pooled_idle_timeout(secs(3600)), secs(90));
        assert_eq!(pooled_idle_timeout(Duration::ZERO), secs(90));
        assert_eq!(pooled_idle_timeout(secs(10)), secs(10));
    }

    #[tokio::test]
    async fn refused_upstream_is_bad_gateway() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let client = EndpointClient::new(Arc::new(Pool::new(Duration::from_secs(5))), None);
        let err = client.oneshot(request(addr)).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.short_cause(), "upstream refused connection");
    }

    #[tokio::test]
    async fn missing_target_is_an_error() {
        let client: EndpointClient<Full<Bytes>> =
            EndpointClient::new(Arc::new(Pool::new(Duration::from_secs(5))), None);
        let err = client
            .oneshot(Request::new(Full::new(Bytes::new())))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::NoTarget));
    }
}
