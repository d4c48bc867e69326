//! The inbound side (elsewhere -> app): connections the pod's iptables PREROUTING rules redirect
//! to the inbound listener, forwarded to the app at their original destination (pod IP and app
//! port). TLS addressed to this proxy is terminated (mTLS from peer proxies, [`termination`]) and
//! the inbound policy decides who may reach the app. [`path`] carries a connection through its
//! plan.

pub mod path;
pub mod termination;

#[cfg(test)]
mod loopback_tests;

use std::sync::Arc;

use crate::config::ProxyConfig;
use crate::connection::{Common, Shared};
use crate::direction::Direction;
use crate::http::pool::Pool;
use crate::http::server::HttpServer;
use crate::identity::LocalIdentity;
use crate::inbound_policy::InboundPolicy;
use crate::outbound::timeouts;
use crate::resilience::policy::ResiliencePolicy;
use crate::resilience::rate_limit::RateLimiter;
use crate::resilience::upstream::Upstreams;

pub struct InboundSide {
    pub common: Common,
    /// This proxy's workload identity, when it has one: mTLS from peers is terminated.
    pub identity: Option<Arc<LocalIdentity>>,
    /// The inbound rate limit, when one is set.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Who may reach the app (strict/permissive, per-port identities).
    pub policy: Arc<InboundPolicy>,
}

pub fn side(config: &ProxyConfig, shared: &Shared) -> InboundSide {
    InboundSide {
        common: Common {
            direction: Direction::Inbound,
            timeouts: timeouts(config),
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
        },
        identity: shared.identity.clone(),
        rate_limiter: RateLimiter::new(
            config.inbound_rate_limit,
            config.inbound_rate_limit_per_client,
            Direction::Inbound,
            &shared.metrics.resilience,
        )
        .map(Arc::new),
        policy: Arc::new(InboundPolicy::new(
            config.inbound_policy,
            config.inbound_authz.clone(),
        )),
    }
}
