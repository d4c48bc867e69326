//! One accepted connection, start to end: its original destination, the loop guard, protocol
//! detection, then HTTP proxying or opaque forwarding.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::counted::CountedIo;
use crate::detect::{DetectOutcome, Detection, PrefixedIo, Protocol, detect};
use crate::discovery::Key;
use crate::drain::Watch;
use crate::http::balance;
use crate::http::route::Router;
use crate::http::{HttpVersion, Target, stack};
use crate::metrics::Upstream;
use crate::opaque;
use crate::original_dst::{OriginalDstError, original_dst};
use crate::resilience::rate_limit::RateLimitLayer;
use crate::side::Side;

pub async fn handle(side: &Side, stream: TcpStream, peer: SocketAddr, mut watch: Watch) {
    let direction = side.direction;
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(err) => {
            debug!(%direction, %peer, error = %err, "connection closed before it could be handled");
            return;
        }
    };
    let original = match original_dst(&stream, local) {
        Ok(original) => original,
        // Not redirected: the client connected to the listener itself, which the guard refuses.
        Err(OriginalDstError::NotRedirected) => local,
        Err(err) => {
            warn!(%direction, %peer, error = %err, "closing connection: no original destination");
            return;
        }
    };
    if side.loop_guard.is_loop(original, local) {
        side.metrics.loop_refused(direction);
        warn!(%direction, %peer, destination = %original, "refusing connection addressed to the proxy itself");
        return;
    }

    let (read, written) = side.metrics.byte_counters(direction);
    let mut io = CountedIo::new(stream, read, written);
    let detection = if side.opaque_ports.contains(original.port()) {
        Detection {
            protocol: Protocol::Opaque,
            outcome: DetectOutcome::OpaquePort,
            prefix: bytes::Bytes::new(),
        }
    } else {
        match detect(&mut io, side.detect_timeout).await {
            Ok(detection) => detection,
            Err(err) => {
                debug!(%direction, %peer, error = %err, "connection failed during protocol detection");
                return;
            }
        }
    };
    side.metrics
        .detected(direction, detection.protocol, detection.outcome);
    let _open = side.metrics.connection(direction, detection.protocol);
    debug!(%direction, %peer, destination = %original, protocol = %detection.protocol, outcome = detection.outcome.as_str(), "accepted");
    let mut io = PrefixedIo::new(detection.prefix, io);

    // Outbound: what discovery knows of the destination (bounded wait on first use).
    let resolved = match &side.discovery {
        Some(discovery) => Some(discovery.resolve(Key::Addr(original)).await),
        None => None,
    };

    match HttpVersion::from_protocol(detection.protocol) {
        Some(version) => {
            let target = Target {
                addr: original,
                version,
            };
            let upstream = match resolved.as_ref().and_then(|(r, _)| r.service()) {
                Some(service) => Upstream::Service(service.name.clone()),
                None => Upstream::Addr(original),
            };
            let metrics = side
                .metrics
                .http_upstream(direction, upstream, detection.protocol);
            let router = match (&side.discovery, resolved) {
                (Some(discovery), Some((_, profile))) => Some(Router::new(
                    discovery.clone(),
                    original,
                    side.discovery_wait,
                    profile,
                )),
                _ => None,
            };
            let service = stack::build(
                target,
                router,
                metrics,
                side.pool.clone(),
                side.drain.clone(),
                side.upstreams.get(original),
                RateLimitLayer::new(side.rate_limiter.clone(), peer.ip()),
            );
            let service = hyper_util::service::TowerToHyperService::new(service);
            if let Err(err) = side.http.serve(io, version, service, &mut watch).await {
                log_http_error(direction, peer, original, &err);
            }
        }
        None => {
            // Opaque TCP is balanced per connection; the connect time is its latency sample.
            let endpoint = resolved
                .as_ref()
                .and_then(|(r, _)| r.service())
                .and_then(|service| balance::pick(service));
            let (destination, mut in_flight) = match &endpoint {
                Some(endpoint) => {
                    endpoint.requests.inc();
                    (endpoint.addr, Some(endpoint.load.start()))
                }
                None => (original, None),
            };
            let connected = |ok: bool| {
                if let Some(in_flight) = in_flight.as_mut() {
                    if ok {
                        in_flight.complete()
                    } else {
                        in_flight.fail()
                    }
                }
            };
            match opaque::forward(&mut io, destination, side.connect_timeout, connected).await {
                Ok(copied) => {
                    debug!(%direction, %peer, %destination, to_upstream = copied.to_upstream, to_client = copied.to_client, "opaque connection closed")
                }
                Err(err) => {
                    warn!(%direction, %peer, %destination, error = %err, "opaque connection failed")
                }
            }
        }
    }
}

/// Malformed requests (answered 400/431 by hyper) and header timeouts are the client's doing and
/// worth an info line; a client going away mid-exchange is routine.
fn log_http_error(
    direction: crate::metrics::Direction,
    peer: SocketAddr,
    destination: SocketAddr,
    err: &hyper::Error,
) {
    if err.is_parse() || err.is_parse_too_large() || err.is_parse_status() || err.is_timeout() {
        info!(%direction, %peer, %destination, error = %err, "closed HTTP connection after a malformed or incomplete request");
    } else {
        debug!(%direction, %peer, %destination, error = %err, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::Drain;
    use crate::http::HttpServer;
    use crate::http::pool::Pool;
    use crate::loop_guard::LoopGuard;
    use crate::metrics::{Direction, Metrics};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn side(own_port: u16, metrics: Arc<Metrics>) -> Side {
        Side {
            direction: Direction::Outbound,
            detect_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            opaque_ports: weft_settings::parse_ports("").unwrap(),
            loop_guard: LoopGuard::new(vec![own_port]),
            metrics,
            pool: Arc::new(Pool::new(Duration::from_secs(1))),
            http: HttpServer::new(),
            drain: Drain::new(),
            upstreams: Arc::new(crate::resilience::upstream::Upstreams::new(
                Direction::Outbound,
                Default::default(),
                Default::default(),
            )),
            rate_limiter: None,
            discovery: None,
            discovery_wait: Duration::from_secs(1),
        }
    }

    /// A client that connects straight to the listener (no REDIRECT) is the proxy talking to
    /// itself: the connection is closed and counted, never forwarded.
    #[tokio::test]
    async fn unredirected_connection_is_refused_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let side = side(addr.port(), metrics.clone());
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        // Without nf_conntrack loaded the kernel cannot answer at all; the connection must
        // still be closed, just for a different logged reason.
        let conntrack = !matches!(
            original_dst(&stream, addr),
            Err(OriginalDstError::Unsupported)
        );
        handle(&side, stream, peer, side.drain.watch()).await;
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        let text = metrics.render().unwrap();
        if conntrack {
            assert!(
                text.contains(r#"weft_loop_refused_total{direction="outbound"} 1"#),
                "{text}"
            );
        }
        assert!(!text.contains("weft_tcp_open_total"), "{text}");
    }
}
