//! The inbound side (elsewhere -> app): connections the pod's iptables PREROUTING rules redirect
//! to the inbound listener, forwarded to the app at their original destination (pod IP and app
//! port). TLS addressed to this proxy is terminated (mTLS from peer proxies) and the inbound
//! policy decides who may reach the app.

pub mod termination;

use crate::config::ProxyConfig;
use crate::direction::Direction;
use crate::http::pool::Pool;
use crate::http::server::HttpServer;
use crate::inbound_policy::InboundPolicy;
use crate::resilience::policy::ResiliencePolicy;
use crate::resilience::rate_limit::RateLimiter;
use crate::resilience::upstream::Upstreams;
use crate::side::{Shared, Side};
use std::sync::Arc;

pub fn side(config: &ProxyConfig, shared: &Shared) -> Side {
    Side {
        direction: Direction::Inbound,
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
        // The local app is not retried, timed or limited: the client's proxy does that.
        upstreams: Arc::new(Upstreams::new(
            Direction::Inbound,
            ResiliencePolicy::passthrough(),
            shared.metrics.resilience.clone(),
        )),
        rate_limiter: RateLimiter::new(
            config.inbound_rate_limit,
            config.inbound_rate_limit_per_client,
            Direction::Inbound,
            &shared.metrics.resilience,
        )
        .map(Arc::new),
        discovery: None,
        discovery_wait: config.discovery_wait,
        identity: shared.identity.clone(),
        peers: None,
        inbound_policy: Arc::new(InboundPolicy::new(
            config.inbound_policy,
            config.inbound_authz.clone(),
        )),
    }
}
