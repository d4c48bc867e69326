//! The outbound side (app -> elsewhere): connections the pod's iptables OUTPUT rules redirect to
//! the outbound listener. Each connection's destination is looked up in discovery (or DNS) and
//! balanced over the logical service's endpoints; unknown destinations are forwarded untouched.
//! [`path`] carries a connection through its plan.

pub mod path;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;

use crate::config::ProxyConfig;
use crate::connection::{Common, Shared, Timeouts};
use crate::direction::Direction;
use crate::discovery::cache::Discovery;
use crate::http::peer_client::PeerClient;
use crate::http::pool::Pool;
use crate::http::server::HttpServer;
use crate::resilience::replay::ReplayBody;
use crate::resilience::upstream::Upstreams;
use crate::tls::connect::PeerConnector;

pub struct OutboundSide {
    pub common: Common,
    /// Where connections' destinations are looked up; `None`: everything goes to its original
    /// destination.
    pub discovery: Option<Discovery>,
    /// How long a request waits for the first answer about a new authority.
    pub discovery_wait: Duration,
    /// With a workload identity: HTTP and TCP to meshed endpoints over mTLS.
    pub peers: Option<Arc<PeerClient<ReplayBody<Incoming>>>>,
}

pub fn timeouts(config: &ProxyConfig) -> Timeouts {
    Timeouts {
        detect: config.detect_timeout,
        connect: config.connect_timeout,
        idle: config.idle_timeout,
        stream_idle: config.stream_idle_timeout,
        header_read: config.header_read_timeout,
    }
}

pub fn side(config: &ProxyConfig, shared: &Shared) -> OutboundSide {
    OutboundSide {
        common: Common {
            direction: Direction::Outbound,
            timeouts: timeouts(config),
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
        },
        discovery: shared.discovery.clone(),
        discovery_wait: config.discovery_wait,
        // Meshed endpoints are reached over mTLS once this proxy has an identity.
        peers: shared.identity.clone().map(|identity| {
            Arc::new(PeerClient::new(
                PeerConnector::new(identity, config.connect_timeout),
                shared.metrics.tls.clone(),
            ))
        }),
    }
}
