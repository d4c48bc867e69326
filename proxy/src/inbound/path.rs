//! One inbound connection, start to end: the plan ([`crate::connection::plan::inbound`]) decides,
//! this executor gathers its facts (detection, the ClientHello, the inbound policy) and carries out
//! what it names — terminate a peer's mTLS, serve plaintext HTTP (the policy judging each request),
//! forward opaque bytes to the app, or refuse.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::connection::plan::{self, InboundFacts, InboundStep};
use crate::detect::{PrefixedIo, Protocol};
use crate::drain::Watch;
use crate::http::client_identity::Caller;
use crate::http::stack::{self, StackParts};
use crate::http::target::{HttpVersion, Target};
use crate::identity::LocalIdentity;
use crate::inbound::InboundSide;
use crate::inbound::termination;
use crate::inbound_policy::Refusal;
use crate::labels::{PeerTls, Upstream};
use crate::opaque;
use crate::resilience::rate_limit::RateLimitLayer;
use crate::tls::{accept, client_hello};

/// Bounds a peer's mTLS handshake (a short detection window must not make it shorter).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the plan ends in, once its facts are gathered.
enum Action {
    Terminate(Arc<LocalIdentity>),
    Http(HttpVersion),
    Forward,
}

pub async fn handle(side: &InboundSide, stream: TcpStream, peer: SocketAddr, mut watch: Watch) {
    let common = &side.common;
    let direction = common.direction;
    let Some(addresses) = common.addresses(&stream, peer) else {
        return;
    };
    let original = addresses.original;
    let mut facts = InboundFacts {
        addressed_to_proxy: common.addressed_to_proxy(&addresses),
        opaque_port: common.opaque_ports.contains(original.port()),
        has_identity: side.identity.is_some(),
        protocol: None,
        hello_for_us: None,
        plaintext_allowed: side.policy.allows_plaintext(original.port()),
    };
    let mut io = common.counted(stream);
    let mut prefix = Bytes::new();
    let action = loop {
        match plan::inbound(&facts) {
            step @ (InboundStep::Detect | InboundStep::AssumeOpaque) => {
                let opaque_port = step == InboundStep::AssumeOpaque;
                let Some(detection) = common.protocol_of(&mut io, peer, opaque_port).await else {
                    return;
                };
                facts.protocol = Some(detection.protocol);
                prefix = detection.prefix;
            }
            InboundStep::ReadClientHello => {
                let peeked = client_hello::peek(
                    &mut io,
                    std::mem::take(&mut prefix),
                    common.timeouts.detect,
                )
                .await;
                let peeked = match peeked {
                    Ok(peeked) => peeked,
                    Err(err) => {
                        debug!(%direction, %peer, error = %err, "connection failed while reading its TLS ClientHello");
                        return;
                    }
                };
                let server_name = peeked.hello.as_ref().and_then(|h| h.server_name.as_deref());
                facts.hello_for_us = Some(
                    side.identity
                        .as_ref()
                        .is_some_and(|identity| server_name == Some(identity.sni_name())),
                );
                prefix = peeked.bytes;
            }
            InboundStep::RefuseLoop => return common.refuse_loop(peer, original),
            InboundStep::RefusePlaintext => {
                common.metrics.tls.refused(Refusal::Plaintext);
                let protocol = facts.protocol.unwrap_or(Protocol::Opaque);
                warn!(%direction, %peer, destination = %original, %protocol, policy = %side.policy.mode(), "refused a plaintext connection: the inbound policy requires mTLS on this port");
                return;
            }
            InboundStep::TerminateMtls => match &side.identity {
                Some(identity) => break Action::Terminate(identity.clone()),
                // The plan terminates only with an identity; without one there is nothing to do.
                None => return,
            },
            InboundStep::ServeHttp(version) => break Action::Http(version),
            InboundStep::Forward => break Action::Forward,
        }
    };
    let protocol = facts.protocol.unwrap_or(Protocol::Opaque);
    let _open = common.metrics.connection(direction, protocol);
    let io = PrefixedIo::new(prefix, io);
    match action {
        Action::Terminate(identity) => {
            let timeout = common.timeouts.detect.max(HANDSHAKE_TIMEOUT);
            match accept::terminate(io, &identity, timeout).await {
                Ok(terminated) => {
                    debug!(%direction, %peer, client = %terminated.client, transport = terminated.transport.as_str(), "terminated mTLS");
                    termination::serve(
                        side,
                        terminated,
                        peer,
                        original.ip(),
                        addresses.local,
                        &mut watch,
                    )
                    .await;
                }
                Err(err) => {
                    common.metrics.tls.handshake_error(direction);
                    common.metrics.tls.refused(Refusal::Handshake);
                    warn!(%direction, %peer, error = %err, "refused an mTLS connection from a peer");
                }
            }
        }
        Action::Http(version) => {
            debug!(%direction, %peer, destination = %original, %protocol, "accepted");
            let upstream = Upstream::Addr(original);
            let stack = stack::build(
                Target {
                    addr: original,
                    version,
                },
                // mTLS connections are served by `termination`: this one is plaintext.
                common
                    .metrics
                    .http_inbound(original, protocol, PeerTls::Plaintext),
                StackParts {
                    router: None,
                    pool: common.pool.clone(),
                    drain: common.drain.clone(),
                    upstream: common.upstreams.get(upstream.clone(), None),
                    rate_limit: RateLimitLayer::new(side.rate_limiter.clone(), peer.ip()),
                    caller: Some(Caller {
                        policy: side.policy.clone(),
                        port: original.port(),
                        identity: None,
                        peer,
                        metrics: common.metrics.tls.clone(),
                    }),
                    peers: None,
                    stream_idle_timeout: common.timeouts.stream_idle,
                    target: common.target_layer(),
                },
            );
            common
                .serve_http(io, version, stack, &addresses, &upstream, &mut watch)
                .await;
        }
        Action::Forward => {
            debug!(%direction, %peer, destination = %original, %protocol, "accepted");
            let mut io = io;
            let timeouts = common.timeouts;
            let result =
                opaque::forward(&mut io, original, timeouts.connect, timeouts.idle, |_| ()).await;
            common.opaque_ended(result, peer, original, &Upstream::Addr(original));
        }
    }
}
