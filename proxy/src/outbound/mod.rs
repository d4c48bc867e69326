//! The outbound side (app -> elsewhere): connections the pod's iptables OUTPUT rules redirect to
//! the outbound listener. Each connection's destination is looked up in discovery (or DNS) and
//! balanced over the logical service's endpoints; unknown destinations are forwarded untouched.
//! [`path`] carries a connection through its plan.

pub mod path;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;

use crate::config::ProxyConfig;
use crate::connection::{Common, Shared};
use crate::direction::Direction;
use crate::discovery::cache::Discovery;
use crate::http::peer_client::PeerClient;
use crate::resilience::replay::ReplayBody;
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

pub fn side(config: &ProxyConfig, shared: &Shared) -> OutboundSide {
    OutboundSide {
        common: Common::new(
            Direction::Outbound,
            config,
            shared,
            config.resilience_policy(),
        ),
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
