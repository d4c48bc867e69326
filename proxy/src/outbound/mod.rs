//! The outbound side (app -> elsewhere): connections the pod's iptables OUTPUT rules redirect to
//! the outbound listener. Each connection's destination is looked up in discovery (or DNS) and
//! balanced over the logical service's endpoints; unknown destinations are forwarded untouched.

use crate::config::ProxyConfig;
use crate::direction::Direction;
use crate::http::peer_client::PeerClient;
use crate::http::pool::Pool;
use crate::http::server::HttpServer;
use crate::resilience::upstream::Upstreams;
use crate::side::{Shared, Side};
use crate::tls::connect::PeerConnector;
use std::sync::Arc;

pub fn side(config: &ProxyConfig, shared: &Shared) -> Side {
    Side {
        direction: Direction::Outbound,
        detect_timeout: config.detect_timeout,
        connect_timeout: config.connect_timeout,
        idle_timeout: config.idle_timeout,
        stream_idle_timeout: config.stream_idle_timeout,
        header_read_timeout: config.header_read_timeout,
        opaque_ports: config.opaque_ports.clone(),
        loop_guard: shared.loop_guard.clone(),
        metrics: shared.metrics.clone(),
        pool: Pool::shared(config.connect_timeout, config.idle_timeout),
        http: HttpServer::new(),
        drain: shared.drain.clone(),
        upstreams: Arc::new(Upstreams::new(
            Direction::Outbound,
            config.resilience_policy(),
            shared.metrics.resilience.clone(),
        )),
        rate_limiter: None,
        discovery: shared.discovery.clone(),
        discovery_wait: config.discovery_wait,
        identity: shared.identity.clone(),
        // Meshed endpoints are reached over mTLS once this proxy has an identity.
        peers: shared.identity.clone().map(|identity| {
            Arc::new(PeerClient::new(
                PeerConnector::new(identity, config.connect_timeout),
                shared.metrics.tls.clone(),
            ))
        }),
        inbound_policy: Default::default(),
    }
}
