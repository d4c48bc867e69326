//! One accepted connection, start to end: its original destination, the loop guard, protocol
//! detection, inbound mTLS termination and policy, then HTTP proxying or opaque forwarding
//! (over mTLS to meshed endpoints).

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tower::Layer;
use tracing::{debug, info, warn};

use crate::detect::{DetectOutcome, Detection, PrefixedIo, Protocol, detect};
use crate::direction::Direction;
use crate::discovery::Key;
use crate::drain::Watch;
use crate::http::balance;
use crate::http::client_identity::Caller;
use crate::http::route::Router;
use crate::http::stack;
use crate::http::stack::StackParts;
use crate::http::target::{HttpVersion, Target};
use crate::idle::{ActivityIo, ConnectionActivity, Expiry, InFlightLayer};
use crate::inbound::termination;
use crate::inbound_policy::Refusal;
use crate::labels::{PeerTls, Upstream};
use crate::observed_io::{ByteCounters, CountedIo};
use crate::opaque;
use crate::original_dst::{OriginalDstError, original_dst};
use crate::peer::MeshedPeer;
use crate::resilience::kinds::TimeoutKind;
use crate::resilience::rate_limit::RateLimitLayer;
use crate::side::Side;
use crate::tls::transport::{Payload, Transport, TransportHeader};
use crate::tls::{accept, client_hello};

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
    // Peer proxies dial the inbound listener directly: that is allowed for mTLS addressed to
    // this proxy only, which is decided once the ClientHello has been read.
    let addressed_to_proxy = side.loop_guard.is_loop(original, local);
    let may_be_mtls = direction == Direction::Inbound && side.identity.is_some();
    if addressed_to_proxy && !may_be_mtls {
        refuse_loop(side, peer, original);
        return;
    }

    let (read, written) = side.metrics.byte_counters(direction);
    let mut io = CountedIo::new(stream, ByteCounters { read, written });
    let detection = if side.opaque_ports.contains(original.port()) && !addressed_to_proxy {
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

    let mut prefix = detection.prefix;
    if let (Protocol::Tls, Some(identity)) = (detection.protocol, side.identity.as_ref())
        && direction == Direction::Inbound
    {
        let peeked = match client_hello::peek(&mut io, prefix, side.detect_timeout).await {
            Ok(peeked) => peeked,
            Err(err) => {
                debug!(%direction, %peer, error = %err, "connection failed while reading its TLS ClientHello");
                return;
            }
        };
        let for_us = peeked
            .hello
            .as_ref()
            .and_then(|hello| hello.server_name.as_deref())
            == Some(identity.sni_name());
        if for_us {
            let _open = side.metrics.connection(direction, Protocol::Tls);
            let io = PrefixedIo::new(peeked.bytes, io);
            match accept::terminate(io, identity, side.detect_timeout.max(HANDSHAKE_TIMEOUT)).await
            {
                Ok(terminated) => {
                    debug!(%direction, %peer, client = %terminated.client, transport = terminated.transport.as_str(), "terminated mTLS");
                    termination::serve(side, terminated, peer, original.ip(), local, &mut watch)
                        .await;
                }
                Err(err) => {
                    side.metrics.tls.handshake_error(direction);
                    side.metrics.tls.refused(Refusal::Handshake);
                    warn!(%direction, %peer, error = %err, "refused an mTLS connection from a peer");
                }
            }
            return;
        }
        prefix = peeked.bytes;
    }
    if addressed_to_proxy {
        refuse_loop(side, peer, original);
        return;
    }

    // Plaintext (or TLS that is not ours) from here: the inbound policy decides on HTTP per
    // request (403) and on anything else now (closed).
    if direction == Direction::Inbound
        && HttpVersion::from_protocol(detection.protocol).is_none()
        && !side.inbound_policy.allows_plaintext(original.port())
    {
        side.metrics.tls.refused(Refusal::Plaintext);
        warn!(%direction, %peer, destination = %original, protocol = %detection.protocol, policy = %side.inbound_policy.mode(), "refused a plaintext connection: the inbound policy requires mTLS on this port");
        return;
    }

    let _open = side.metrics.connection(direction, detection.protocol);
    debug!(%direction, %peer, destination = %original, protocol = %detection.protocol, outcome = detection.outcome.as_str(), "accepted");
    let mut io = PrefixedIo::new(prefix, io);

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
            let service = resolved.as_ref().and_then(|(r, _)| r.service());
            let upstream = match service {
                Some(service) => Upstream::Service(service.name.clone()),
                None => Upstream::Addr(original),
            };
            let upstream_label = label_of(&upstream);
            // Shared by every connection to the same logical service (budget, limits, breakers).
            let upstream_state = side
                .upstreams
                .get(upstream.clone(), service.map(|s| &*s.policy));
            let metrics = match direction {
                Direction::Outbound => side.metrics.http_outbound(upstream, detection.protocol),
                // mTLS connections were handed to `termination` above: this one is plaintext.
                Direction::Inbound => {
                    side.metrics
                        .http_inbound(original, detection.protocol, PeerTls::Plaintext)
                }
            };
            let router = match (&side.discovery, resolved) {
                (Some(discovery), Some((_, profile))) => Some(Router::new(
                    discovery.clone(),
                    original,
                    side.discovery_wait,
                    profile,
                )),
                _ => None,
            };
            let caller = (direction == Direction::Inbound).then(|| Caller {
                policy: side.inbound_policy.clone(),
                port: original.port(),
                identity: None,
                peer,
                metrics: side.metrics.tls.clone(),
            });
            let service = stack::build(
                target,
                metrics,
                StackParts {
                    router,
                    pool: side.pool.clone(),
                    drain: side.drain.clone(),
                    upstream: upstream_state,
                    rate_limit: RateLimitLayer::new(side.rate_limiter.clone(), peer.ip()),
                    caller,
                    peers: side.peers.clone(),
                    stream_idle_timeout: side.stream_idle_timeout,
                },
            );
            // The header timer is HTTP/1's: HTTP/2 has no request heads between requests.
            let header_read_timeout = match version {
                HttpVersion::Http1 => side.header_read_timeout,
                HttpVersion::Http2 => std::time::Duration::ZERO,
            };
            let activity = ConnectionActivity::new(side.idle_timeout, header_read_timeout);
            let io = ActivityIo::new(io, activity.clone());
            let service = InFlightLayer::new(activity.clone()).layer(service);
            let service = hyper_util::service::TowerToHyperService::new(service);
            match side
                .http
                .serve(io, version, service, &mut watch, Some(&activity))
                .await
            {
                Ok(None) => {}
                Ok(Some(expiry)) => {
                    let (kind, after) = match expiry {
                        Expiry::Idle => (TimeoutKind::Idle, side.idle_timeout),
                        Expiry::HeaderRead => (TimeoutKind::HeaderRead, header_read_timeout),
                    };
                    side.metrics
                        .resilience
                        .timed_out(direction, &upstream_label, kind);
                    match expiry {
                        Expiry::Idle => {
                            debug!(%direction, %peer, destination = %original, ?after, "closed an idle HTTP connection (WEFT_IDLE_TIMEOUT)")
                        }
                        Expiry::HeaderRead => {
                            info!(%direction, %peer, destination = %original, ?after, "closed an HTTP/1 connection: the request headers did not arrive in time (WEFT_HEADER_READ_TIMEOUT)")
                        }
                    }
                }
                Err(err) => log_http_error(direction, peer, original, &err),
            }
        }
        None => {
            // Opaque TCP is balanced per connection; the connect time is its latency sample.
            let endpoint = resolved
                .as_ref()
                .and_then(|(r, _)| r.service())
                .and_then(balance::pick);
            let (destination, mut in_flight) = match &endpoint {
                Some(endpoint) => {
                    endpoint.requests.inc();
                    (endpoint.addr, Some(endpoint.load.start()))
                }
                None => (original, None),
            };
            let mut connected = |ok: bool| {
                if let Some(in_flight) = in_flight.as_mut() {
                    if ok {
                        in_flight.complete()
                    } else {
                        in_flight.fail()
                    }
                }
            };
            let meshed = endpoint
                .as_ref()
                .zip(side.identity.as_ref())
                .and_then(|(endpoint, _)| endpoint.meshed_peer());
            let result = match meshed {
                Some(Ok(meshed)) => {
                    forward_mtls(side, &mut io, &meshed, destination, connected).await
                }
                Some(Err(err)) => {
                    connected(false);
                    Err(opaque::OpaqueError::Mtls(err.to_string()))
                }
                None => {
                    opaque::forward(
                        &mut io,
                        destination,
                        side.connect_timeout,
                        side.idle_timeout,
                        connected,
                    )
                    .await
                }
            };
            match result {
                Ok(copied) => {
                    debug!(%direction, %peer, %destination, to_upstream = copied.to_upstream, to_client = copied.to_client, "opaque connection closed")
                }
                Err(opaque::OpaqueError::IdleTimeout { after }) => {
                    let upstream = match resolved.as_ref().and_then(|(r, _)| r.service()) {
                        Some(service) => Upstream::Service(service.name.clone()),
                        None => Upstream::Addr(original),
                    };
                    side.metrics.resilience.timed_out(
                        direction,
                        &label_of(&upstream),
                        TimeoutKind::Idle,
                    );
                    debug!(%direction, %peer, %destination, ?after, "closed an idle opaque connection (WEFT_IDLE_TIMEOUT)")
                }
                Err(err) => {
                    warn!(%direction, %peer, %destination, error = %err, "opaque connection failed")
                }
            }
        }
    }
}

/// Opaque TCP to a meshed endpoint: mTLS to its proxy, the transport header naming the app port,
/// then the bytes both ways.
async fn forward_mtls<I>(
    side: &Side,
    client: &mut I,
    peer: &MeshedPeer,
    destination: SocketAddr,
    connected: impl FnOnce(bool),
) -> Result<opaque::Copied, opaque::OpaqueError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(connector) = side.peers.as_ref().map(|peers| peers.connector()) else {
        connected(false);
        return Err(opaque::OpaqueError::Mtls(
            "no mTLS client on this side".to_owned(),
        ));
    };
    let upstream = async {
        let mut tls = connector.connect(peer, Transport::Tcp).await?;
        TransportHeader {
            port: destination.port(),
            payload: Payload::Opaque,
        }
        .write(&mut tls)
        .await
        .map_err(|source| crate::tls::connect::PeerError::Header {
            peer: peer.proxy,
            source,
        })?;
        Ok::<_, crate::tls::connect::PeerError>(tls)
    }
    .await;
    connected(upstream.is_ok());
    let mut upstream = upstream.map_err(|err| opaque::OpaqueError::Mtls(err.to_string()))?;
    side.metrics
        .tls
        .connection(side.direction, Transport::Tcp.as_str());
    opaque::copy(client, &mut upstream, destination, side.idle_timeout).await
}

/// An upstream as its metrics label reads, as `Upstreams` names it.
fn label_of(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Addr(addr) => addr.to_string(),
        Upstream::Service(name) => name.to_string(),
    }
}

/// Bounds a peer's mTLS handshake (a short detection window must not make it shorter).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn refuse_loop(side: &Side, peer: SocketAddr, original: SocketAddr) {
    side.metrics.loop_refused(side.direction);
    warn!(direction = %side.direction, %peer, destination = %original, "refusing connection addressed to the proxy itself");
}

/// Malformed requests (answered 400/431 by hyper) and header timeouts are the client's doing and
/// worth an info line; a client going away mid-exchange is routine.
fn log_http_error(
    direction: crate::direction::Direction,
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
    use crate::direction::Direction;
    use crate::drain::Drain;
    use crate::http::pool::Pool;
    use crate::http::server::HttpServer;
    use crate::loop_guard::LoopGuard;
    use crate::metrics::Metrics;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn side(own_port: u16, metrics: Arc<Metrics>) -> Side {
        Side {
            direction: Direction::Outbound,
            detect_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3600),
            stream_idle_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
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
            identity: None,
            peers: None,
            inbound_policy: Default::default(),
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
