//! What the requests to one upstream share across connections: its policy, retry budget,
//! limits and metric handles. `Upstreams` hands out one state per upstream and forgets it when
//! no connection uses it any more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use http::Request;

use super::budget::RetryBudget;
use super::limits::UpstreamLimits;
use super::policy::ResiliencePolicy;
use crate::metrics::Direction;
use crate::metrics::resilience::{ResilienceMetrics, UpstreamMetrics};

pub struct UpstreamState {
    pub policy: Arc<ResiliencePolicy>,
    pub budget: RetryBudget,
    pub limits: Arc<UpstreamLimits>,
    pub metrics: UpstreamMetrics,
}

impl UpstreamState {
    pub fn new(policy: Arc<ResiliencePolicy>, metrics: UpstreamMetrics) -> Self {
        UpstreamState {
            limits: Arc::new(UpstreamLimits::new(&policy.limits, metrics.clone())),
            budget: RetryBudget::new(),
            policy,
            metrics,
        }
    }

    /// The policy of one request: the one a route attached to it, else the upstream's.
    pub fn policy_for<B>(&self, req: &Request<B>) -> Arc<ResiliencePolicy> {
        req.extensions()
            .get::<Arc<ResiliencePolicy>>()
            .cloned()
            .unwrap_or_else(|| self.policy.clone())
    }
}

/// One side's upstream states, keyed by upstream address.
pub struct Upstreams {
    direction: Direction,
    policy: Arc<ResiliencePolicy>,
    metrics: ResilienceMetrics,
    states: Mutex<HashMap<SocketAddr, Weak<UpstreamState>>>,
}

impl Upstreams {
    pub fn new(direction: Direction, policy: ResiliencePolicy, metrics: ResilienceMetrics) -> Self {
        Upstreams {
            direction,
            policy: Arc::new(policy),
            metrics,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// The shared state of `addr`, created on first use.
    pub fn get(&self, addr: SocketAddr) -> Arc<UpstreamState> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = states.get(&addr).and_then(Weak::upgrade) {
            return state;
        }
        // Forget upstreams no connection uses before the map grows.
        if states.len() >= 64 && states.len().is_power_of_two() {
            states.retain(|_, state| state.strong_count() > 0);
        }
        let metrics = self.metrics.upstream(self.direction, &addr.to_string());
        let state = Arc::new(UpstreamState::new(self.policy.clone(), metrics));
        states.insert(addr, Arc::downgrade(&state));
        state
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::resilience::policy::PolicyOverrides;

    /// An upstream named "test" whose policy is the defaults with `overrides`, and the metrics
    /// its counters render in.
    pub(crate) fn upstream_with(overrides: PolicyOverrides) -> (Arc<UpstreamState>, Metrics) {
        let metrics = Metrics::new();
        let policy = ResiliencePolicy::default().with(&overrides);
        let handles = metrics.resilience.upstream(Direction::Outbound, "test");
        (
            Arc::new(UpstreamState::new(Arc::new(policy), handles)),
            metrics,
        )
    }

    #[test]
    fn one_state_per_upstream_while_in_use() {
        let metrics = Metrics::new();
        let upstreams = Upstreams::new(
            Direction::Outbound,
            ResiliencePolicy::default(),
            metrics.resilience.clone(),
        );
        let a: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let first = upstreams.get(a);
        assert!(Arc::ptr_eq(&first, &upstreams.get(a)));
        let other = upstreams.get("127.0.0.3:80".parse().unwrap());
        assert!(!Arc::ptr_eq(&first, &other));
        drop(first);
        // No one holds it: a new one (fresh budget and limits) is made.
        let again = upstreams.get(a);
        assert_eq!(Arc::strong_count(&again), 1);
    }
}
