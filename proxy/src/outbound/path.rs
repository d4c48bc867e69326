//! One outbound connection, start to end: the plan ([`crate::connection::plan::outbound`])
//! decides, this executor gathers its facts and carries out what it names — HTTP through the
//! request stack, or the bytes forwarded to the original destination, a plain endpoint, or a
//! meshed endpoint's proxy over mTLS.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use crate::connection::plan::{self, Forward, OutboundFacts, OutboundStep};
use crate::detect::{PrefixedIo, Protocol};
use crate::discovery::Key;
use crate::drain::Watch;
use crate::http::balance;
use crate::http::route::Router;
use crate::http::stack::{self, StackParts};
use crate::http::target::{HttpVersion, Target};
use crate::labels::Upstream;
use crate::opaque::{self, Copied, OpaqueError};
use crate::outbound::OutboundSide;
use crate::peer::MeshedPeer;
use crate::resilience::rate_limit::RateLimitLayer;
use crate::tls::transport::{Payload, Transport};

/// What the plan ends in, once its facts are gathered.
enum Action {
    Http(HttpVersion),
    Forward,
}

pub async fn handle(side: &OutboundSide, stream: TcpStream, peer: SocketAddr, mut watch: Watch) {
    let common = &side.common;
    let Some(addresses) = common.addresses(&stream, peer) else {
        return;
    };
    let original = addresses.original;
    let mut facts = OutboundFacts {
        addressed_to_proxy: common.addressed_to_proxy(&addresses),
        opaque_port: common.opaque_ports.contains(original.port()),
        protocol: None,
    };
    let mut io = common.counted(stream);
    let mut prefix = Bytes::new();
    let action = loop {
        match plan::outbound(&facts) {
            step @ (OutboundStep::Detect | OutboundStep::AssumeOpaque) => {
                let opaque_port = step == OutboundStep::AssumeOpaque;
                let Some(detection) = common.protocol_of(&mut io, peer, opaque_port).await else {
                    return;
                };
                facts.protocol = Some(detection.protocol);
                prefix = detection.prefix;
            }
            OutboundStep::RefuseLoop => return common.refuse_loop(peer, original),
            OutboundStep::ServeHttp(version) => break Action::Http(version),
            OutboundStep::Forward => break Action::Forward,
        }
    };
    let protocol = facts.protocol.unwrap_or(Protocol::Opaque);
    let _open = common.metrics.connection(common.direction, protocol);
    debug!(direction = %common.direction, %peer, destination = %original, %protocol, "accepted");
    let io = PrefixedIo::new(prefix, io);

    // What discovery knows of the destination (bounded wait on first use).
    let resolved = match &side.discovery {
        Some(discovery) => Some(discovery.resolve(Key::Addr(original)).await),
        None => None,
    };
    let service = resolved.as_ref().and_then(|(r, _)| r.service().cloned());
    let upstream = match &service {
        Some(service) => Upstream::Service(service.name.clone()),
        None => Upstream::Addr(original),
    };
    match action {
        Action::Http(version) => {
            // Shared by every connection to the same logical service (budget, limits, breakers).
            let state = common
                .upstreams
                .get(upstream.clone(), service.as_ref().map(|s| &*s.policy));
            let router = match (&side.discovery, resolved) {
                (Some(discovery), Some((_, profile))) => Some(Router::new(
                    discovery.clone(),
                    original,
                    side.discovery_wait,
                    profile,
                )),
                _ => None,
            };
            let stack = stack::build(
                Target {
                    addr: original,
                    version,
                },
                common.metrics.http_outbound(upstream.clone(), protocol),
                StackParts {
                    router,
                    pool: common.pool.clone(),
                    drain: common.drain.clone(),
                    upstream: state,
                    rate_limit: RateLimitLayer::new(None, peer.ip()),
                    caller: None,
                    peers: side.peers.clone(),
                    stream_idle_timeout: common.timeouts.stream_idle,
                    target: common.target_layer(),
                },
            );
            common
                .serve_http(io, version, stack, &addresses, &upstream, &mut watch)
                .await;
        }
        Action::Forward => {
            // Opaque TCP is balanced per connection; the connect time is its latency sample.
            let endpoint = service.as_ref().and_then(balance::pick);
            let mut in_flight = endpoint.as_ref().map(|endpoint| {
                endpoint.requests.inc();
                endpoint.load.start()
            });
            let mut connected = move |ok: bool| {
                if let Some(in_flight) = in_flight.as_mut() {
                    if ok {
                        in_flight.complete()
                    } else {
                        in_flight.fail()
                    }
                }
            };
            let mut io = io;
            let timeouts = common.timeouts;
            let (destination, result) =
                match plan::forward(original, endpoint.as_ref(), side.peers.is_some()) {
                    Forward::Original(addr) | Forward::Plain(addr) => (
                        addr,
                        opaque::forward(&mut io, addr, timeouts.connect, timeouts.idle, connected)
                            .await,
                    ),
                    Forward::Mtls { peer, addr } => (
                        addr,
                        forward_mtls(side, &mut io, &peer, addr, connected).await,
                    ),
                    Forward::Unusable { addr, error } => {
                        connected(false);
                        (addr, Err(OpaqueError::Mtls(error.to_string())))
                    }
                };
            common.opaque_ended(result, addresses.peer, destination, &upstream);
        }
    }
}

/// Opaque TCP to a meshed endpoint: mTLS to its proxy, the transport header naming the app port,
/// then the bytes both ways.
async fn forward_mtls<I>(
    side: &OutboundSide,
    client: &mut I,
    peer: &MeshedPeer,
    destination: SocketAddr,
    connected: impl FnOnce(bool),
) -> Result<Copied, OpaqueError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let Some(peers) = side.peers.as_ref() else {
        connected(false);
        return Err(OpaqueError::Mtls("no mTLS client on this side".to_owned()));
    };
    let upstream = peers
        .connector()
        .connect_tcp(peer, destination.port(), Payload::Opaque)
        .await;
    connected(upstream.is_ok());
    let mut upstream = upstream.map_err(|err| OpaqueError::Mtls(err.to_string()))?;
    let metrics = &side.common.metrics;
    metrics
        .tls
        .connection(side.common.direction, Transport::Tcp.as_str());
    opaque::copy(
        client,
        &mut upstream,
        destination,
        side.common.timeouts.idle,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{Common, Timeouts};
    use crate::direction::Direction;
    use crate::drain::Drain;
    use crate::http::pool::Pool;
    use crate::http::server::HttpServer;
    use crate::loop_guard::LoopGuard;
    use crate::metrics::Metrics;
    use crate::original_dst::{OriginalDstError, original_dst};
    use crate::resilience::upstream::Upstreams;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn side(own_port: u16, metrics: Arc<Metrics>) -> OutboundSide {
        OutboundSide {
            common: Common {
                direction: Direction::Outbound,
                timeouts: Timeouts {
                    detect: Duration::from_millis(100),
                    connect: Duration::from_secs(1),
                    idle: Duration::from_secs(3600),
                    stream_idle: Duration::from_secs(300),
                    header_read: Duration::from_secs(10),
                },
                limits: crate::http::server::HttpLimits::default(),
                opaque_ports: weft_settings::parse_ports("").unwrap(),
                loop_guard: LoopGuard::new(vec![own_port]),
                metrics,
                pool: Arc::new(Pool::new(Duration::from_secs(1))),
                http: HttpServer::new(),
                drain: Drain::new(),
                upstreams: Arc::new(Upstreams::new(
                    Direction::Outbound,
                    Default::default(),
                    Default::default(),
                )),
            },
            discovery: None,
            discovery_wait: Duration::from_secs(1),
            peers: None,
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
        handle(&side, stream, peer, side.common.drain.watch()).await;
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
