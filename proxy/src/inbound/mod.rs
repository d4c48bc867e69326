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
use crate::identity::LocalIdentity;
use crate::inbound_policy::InboundPolicy;
use crate::resilience::policy::ResiliencePolicy;
use crate::resilience::rate_limit::RateLimiter;

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
        // The local app is not retried, timed or limited: the client's proxy does that.
        common: Common::new(
            Direction::Inbound,
            config,
            shared,
            ResiliencePolicy::passthrough(),
        ),
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
