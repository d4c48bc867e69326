//! What to do with an accepted connection, decided without I/O. The executors (`outbound::path`,
//! `inbound::path`, `inbound::termination`) gather one fact at a time — the original destination,
//! the loop guard's verdict, the detected protocol, whom a ClientHello is for, the inbound policy —
//! and ask the plan for the next step until it names an action; then they carry it out.

use std::net::SocketAddr;

use crate::detect::Protocol;
use crate::discovery::Endpoint;
use crate::http::target::HttpVersion;
use crate::inbound_policy::Refusal;
use crate::peer::MeshedPeer;
use crate::tls::connect::PeerError;
use crate::tls::transport::Payload;

/// What the outbound side knows of a connection so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboundFacts {
    /// The original destination is one of this proxy's own listeners.
    pub addressed_to_proxy: bool,
    /// The destination port is declared opaque (`WEFT_OPAQUE_PORTS`).
    pub opaque_port: bool,
    /// What detection found; `None` until it ran.
    pub protocol: Option<Protocol>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundStep {
    /// Read the client's first bytes (bounded by `WEFT_DETECT_TIMEOUT`).
    Detect,
    /// Treat the connection as opaque without reading (an opaque port).
    AssumeOpaque,
    /// Close it: the app dialled the proxy itself, which would loop.
    RefuseLoop,
    /// Proxy it as HTTP of this version.
    ServeHttp(HttpVersion),
    /// Forward its bytes (see [`forward`] for where to).
    Forward,
}

pub fn outbound(facts: &OutboundFacts) -> OutboundStep {
    if facts.addressed_to_proxy {
        return OutboundStep::RefuseLoop;
    }
    let protocol = match facts.protocol {
        Some(protocol) => protocol,
        None if facts.opaque_port => return OutboundStep::AssumeOpaque,
        None => return OutboundStep::Detect,
    };
    match HttpVersion::from_protocol(protocol) {
        Some(version) => OutboundStep::ServeHttp(version),
        None => OutboundStep::Forward,
    }
}

/// What the inbound side knows of a connection so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundFacts {
    /// Dialled straight to the inbound listener: only mTLS for this proxy may do that (peer
    /// proxies), anything else would loop.
    pub addressed_to_proxy: bool,
    pub opaque_port: bool,
    /// This proxy has a workload identity, so it can terminate mTLS.
    pub has_identity: bool,
    pub protocol: Option<Protocol>,
    /// Whether the TLS ClientHello's SNI names this proxy; `None` until it was read.
    pub hello_for_us: Option<bool>,
    /// The inbound policy lets plaintext reach the destination port.
    pub plaintext_allowed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundStep {
    Detect,
    AssumeOpaque,
    /// Read the TLS ClientHello (bounded) to see whether it is for this proxy.
    ReadClientHello,
    RefuseLoop,
    /// Terminate mTLS from a peer proxy and serve what it carries.
    TerminateMtls,
    /// Close it: plaintext the inbound policy does not allow on this port. (Plaintext HTTP is
    /// served instead, and the policy answers each request with 403.)
    RefusePlaintext,
    ServeHttp(HttpVersion),
    /// Forward its bytes to the app at the original destination.
    Forward,
}

pub fn inbound(facts: &InboundFacts) -> InboundStep {
    if facts.addressed_to_proxy && !facts.has_identity {
        return InboundStep::RefuseLoop;
    }
    let protocol = match facts.protocol {
        Some(protocol) => protocol,
        // A peer proxy's mTLS arrives on the proxy's own port, whatever the app's ports are.
        None if facts.opaque_port && !facts.addressed_to_proxy => {
            return InboundStep::AssumeOpaque;
        }
        None => return InboundStep::Detect,
    };
    if protocol == Protocol::Tls && facts.has_identity {
        match facts.hello_for_us {
            None => return InboundStep::ReadClientHello,
            Some(true) => return InboundStep::TerminateMtls,
            Some(false) => {}
        }
    }
    if facts.addressed_to_proxy {
        return InboundStep::RefuseLoop;
    }
    match HttpVersion::from_protocol(protocol) {
        Some(version) => InboundStep::ServeHttp(version),
        None if !facts.plaintext_allowed => InboundStep::RefusePlaintext,
        None => InboundStep::Forward,
    }
}

/// Where an outbound opaque connection goes.
#[derive(Debug)]
pub enum Forward {
    /// Not in the mesh (or no endpoint): the original destination, untouched.
    Original(SocketAddr),
    /// A balanced endpoint that is not meshed (or this proxy has no identity): plain TCP.
    Plain(SocketAddr),
    /// A meshed endpoint: mTLS to its proxy, the transport header naming the app port.
    Mtls { peer: MeshedPeer, addr: SocketAddr },
    /// A meshed endpoint whose identity is unusable: the connection fails rather than going
    /// out in plaintext.
    Unusable { addr: SocketAddr, error: PeerError },
}

pub fn forward(original: SocketAddr, endpoint: Option<&Endpoint>, has_identity: bool) -> Forward {
    let Some(endpoint) = endpoint else {
        return Forward::Original(original);
    };
    match endpoint.meshed_peer().filter(|_| has_identity) {
        None => Forward::Plain(endpoint.addr),
        Some(Ok(peer)) => Forward::Mtls {
            peer,
            addr: endpoint.addr,
        },
        Some(Err(error)) => Forward::Unusable {
            addr: endpoint.addr,
            error,
        },
    }
}

/// What a terminated mTLS connection on the tcp transport carries, once its header is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminated {
    /// The header names the proxy's own port: it would loop.
    RefuseLoop,
    /// The inbound policy refuses the client on the port the header names.
    Refuse(Refusal),
    /// Copy the bytes to the app at this address.
    ForwardOpaque(SocketAddr),
    /// Serve the HTTP/1 it carries to the app at this address.
    ServeHttp1(SocketAddr),
}

/// `app` is where the header points (the pod's address and the port it names); `loops`, the loop
/// guard's verdict on it; `policy`, the inbound policy's on the client and that port.
pub fn terminated(
    app: SocketAddr,
    payload: Payload,
    loops: bool,
    policy: Result<(), Refusal>,
) -> Terminated {
    if loops {
        return Terminated::RefuseLoop;
    }
    if let Err(reason) = policy {
        return Terminated::Refuse(reason);
    }
    match payload {
        Payload::Opaque => Terminated::ForwardOpaque(app),
        Payload::Http1 => Terminated::ServeHttp1(app),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use weft_tls::SpiffeId;

    const H1: Option<Protocol> = Some(Protocol::Http1);
    const H2: Option<Protocol> = Some(Protocol::Http2);
    const TLS: Option<Protocol> = Some(Protocol::Tls);
    const OPAQUE: Option<Protocol> = Some(Protocol::Opaque);

    #[test]
    fn outbound_table() {
        use OutboundStep::*;
        // (addressed to proxy, opaque port, protocol) -> step
        let table = [
            (true, false, None, RefuseLoop),
            (true, true, None, RefuseLoop),
            (true, false, H1, RefuseLoop),
            (false, false, None, Detect),
            (false, true, None, AssumeOpaque),
            (false, false, H1, ServeHttp(HttpVersion::Http1)),
            (false, false, H2, ServeHttp(HttpVersion::Http2)),
            // TLS from the app (its own, end to end) is opaque to the proxy.
            (false, false, TLS, Forward),
            (false, false, OPAQUE, Forward),
            (false, true, OPAQUE, Forward),
        ];
        for (addressed_to_proxy, opaque_port, protocol, expected) in table {
            let facts = OutboundFacts {
                addressed_to_proxy,
                opaque_port,
                protocol,
            };
            assert_eq!(outbound(&facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn inbound_table() {
        use InboundStep::*;
        let facts = |addressed_to_proxy,
                     opaque_port,
                     has_identity,
                     protocol,
                     hello_for_us,
                     plaintext_allowed| {
            InboundFacts {
                addressed_to_proxy,
                opaque_port,
                has_identity,
                protocol,
                hello_for_us,
                plaintext_allowed,
            }
        };
        let table = [
            // Straight to the proxy port: a loop, unless it may be a peer's mTLS.
            (facts(true, false, false, None, None, true), RefuseLoop),
            (facts(true, false, true, None, None, true), Detect),
            (facts(true, true, true, None, None, true), Detect),
            (facts(true, false, true, TLS, None, true), ReadClientHello),
            (
                facts(true, false, true, TLS, Some(true), false),
                TerminateMtls,
            ),
            // TLS for someone else, or plaintext, straight to the proxy port: a loop.
            (facts(true, false, true, TLS, Some(false), true), RefuseLoop),
            (facts(true, false, true, H1, None, true), RefuseLoop),
            // Redirected to an app port.
            (facts(false, false, true, None, None, true), Detect),
            (facts(false, true, true, None, None, true), AssumeOpaque),
            (facts(false, false, true, TLS, None, true), ReadClientHello),
            (
                facts(false, false, true, TLS, Some(true), false),
                TerminateMtls,
            ),
            // The app's own TLS passes through, as plaintext does, where the policy allows it.
            (facts(false, false, true, TLS, Some(false), true), Forward),
            (
                facts(false, false, true, TLS, Some(false), false),
                RefusePlaintext,
            ),
            (facts(false, false, false, TLS, None, true), Forward),
            (facts(false, false, true, OPAQUE, None, true), Forward),
            (
                facts(false, true, true, OPAQUE, None, false),
                RefusePlaintext,
            ),
            // HTTP is served either way: the policy answers each request (403).
            (
                facts(false, false, true, H1, None, false),
                ServeHttp(HttpVersion::Http1),
            ),
            (
                facts(false, false, false, H2, None, true),
                ServeHttp(HttpVersion::Http2),
            ),
        ];
        for (facts, expected) in table {
            assert_eq!(inbound(&facts), expected, "{facts:?}");
        }
    }

    fn endpoint(identity: Option<&str>, meshed: bool) -> Endpoint {
        let addr: SocketAddr = "198.18.0.9:8080".parse().unwrap();
        Endpoint {
            addr,
            weight: 1,
            zone: "".into(),
            identity: identity.map(Into::into),
            meshed,
            proxy_port: 4143,
            pod: "api-0".into(),
            load: Default::default(),
            requests: Default::default(),
            peer: crate::peer::MeshedPeer::resolve(addr, identity, meshed, 4143),
        }
    }

    #[test]
    fn opaque_connections_go_over_mtls_only_to_meshed_endpoints() {
        let original: SocketAddr = "198.19.0.1:80".parse().unwrap();
        let api = "spiffe://cluster.local/ns/default/sa/api";
        assert!(matches!(forward(original, None, true), Forward::Original(a) if a == original));
        let plain = endpoint(None, false);
        assert!(
            matches!(forward(original, Some(&plain), true), Forward::Plain(a) if a == plain.addr)
        );
        let meshed = endpoint(Some(api), true);
        match forward(original, Some(&meshed), true) {
            Forward::Mtls { peer, addr } => {
                assert_eq!(addr, meshed.addr);
                assert_eq!(peer.proxy, "198.18.0.9:4143".parse().unwrap());
                assert_eq!(*peer.identity, SpiffeId::parse(api).unwrap());
            }
            other => panic!("{other:?}"),
        }
        // Without an identity of its own the proxy cannot originate mTLS.
        assert!(matches!(
            forward(original, Some(&meshed), false),
            Forward::Plain(_)
        ));
        let bad = endpoint(Some("spiffe://x/y"), true);
        assert!(matches!(
            forward(original, Some(&bad), true),
            Forward::Unusable {
                error: PeerError::BadIdentity { .. },
                ..
            }
        ));
    }

    #[test]
    fn terminated_table() {
        let app: SocketAddr = "198.18.0.9:8080".parse().unwrap();
        let table = [
            (true, Ok(()), Payload::Opaque, Terminated::RefuseLoop),
            (
                true,
                Err(Refusal::Unauthorized),
                Payload::Http1,
                Terminated::RefuseLoop,
            ),
            (
                false,
                Err(Refusal::Unauthorized),
                Payload::Opaque,
                Terminated::Refuse(Refusal::Unauthorized),
            ),
            (
                false,
                Ok(()),
                Payload::Opaque,
                Terminated::ForwardOpaque(app),
            ),
            (false, Ok(()), Payload::Http1, Terminated::ServeHttp1(app)),
        ];
        for (loops, policy, payload, expected) in table {
            assert_eq!(terminated(app, payload, loops, policy), expected);
        }
    }
}
