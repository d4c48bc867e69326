//! What the requests to one upstream share across connections: its policy, retry budget,
//! limits, endpoint breakers and metric handles. An upstream is a logical service when
//! discovery knows the destination (so every connection to it, whichever ClusterIP or pod
//! address it was made to, shares one budget and one set of limits), else the original
//! address. `Upstreams` hands out one state per upstream and keeps it between connections (a
//! breaker's ejection and the budget's window outlive any one connection), forgetting those no
//! connection uses once there are many.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::Request;
use weft_discovery_api::v1::ServicePolicy;

use crate::direction::Direction;
use crate::labels::Upstream;
use crate::metrics::resilience::{ResilienceMetrics, UpstreamMetrics};
use crate::resilience::breaker::{BreakerMetrics, Breakers};
use crate::resilience::budget::RetryBudget;
use crate::resilience::limits::UpstreamLimits;
use crate::resilience::policy::{LimitsPolicy, ResiliencePolicy, ServiceOverrides};
use crate::resilience::service_overrides::OverridesCache;

pub struct UpstreamState {
    /// The client's defaults; a request to a Service carries its own policy on top.
    pub policy: Arc<ResiliencePolicy>,
    pub budget: RetryBudget,
    pub limits: Arc<UpstreamLimits>,
    pub breakers: Breakers,
    pub service_overrides: OverridesCache,
    pub metrics: UpstreamMetrics,
}

impl UpstreamState {
    pub fn new(
        policy: Arc<ResiliencePolicy>,
        limits: &LimitsPolicy,
        metrics: UpstreamMetrics,
        breaker_metrics: BreakerMetrics,
    ) -> Self {
        UpstreamState {
            limits: Arc::new(UpstreamLimits::new(limits, metrics.clone())),
            budget: RetryBudget::new(),
            breakers: Breakers::new(breaker_metrics),
            service_overrides: OverridesCache::default(),
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

/// One side's upstream states, keyed by logical service or address.
pub struct Upstreams {
    direction: Direction,
    policy: Arc<ResiliencePolicy>,
    metrics: ResilienceMetrics,
    states: Mutex<HashMap<Upstream, Arc<UpstreamState>>>,
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

    /// The shared state of `upstream`, created on first use. The limits of a Service start as
    /// its own (`service_policy`, from discovery) over the client's; later changes reach them
    /// with each request's policy (see `limits::UpstreamLimits::apply`).
    pub fn get(
        &self,
        upstream: Upstream,
        service_policy: Option<&ServicePolicy>,
    ) -> Arc<UpstreamState> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = states.get(&upstream) {
            return state.clone();
        }
        // Forget upstreams no connection uses before the map grows.
        if states.len() >= 64 && states.len().is_power_of_two() {
            states.retain(|_, state| Arc::strong_count(state) > 1);
        }
        let label = upstream.to_string();
        let limits = match service_policy {
            Some(policy) => {
                let overrides = ServiceOverrides::from(policy);
                self.policy.with(&overrides.service).limits
            }
            None => self.policy.limits.clone(),
        };
        let state = Arc::new(UpstreamState::new(
            self.policy.clone(),
            &limits,
            self.metrics.upstream(self.direction, &label),
            self.metrics.breaker(self.direction, &label),
        ));
        states.insert(upstream, state.clone());
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn one_state_per_upstream_while_in_use() {
        let metrics = Metrics::new();
        let upstreams = Upstreams::new(
            Direction::Outbound,
            ResiliencePolicy::default(),
            metrics.resilience.clone(),
        );
        let a = Upstream::Addr("127.0.0.2:80".parse().unwrap());
        let first = upstreams.get(a.clone(), None);
        assert!(Arc::ptr_eq(&first, &upstreams.get(a.clone(), None)));
        let other = upstreams.get(Upstream::Addr("127.0.0.3:80".parse().unwrap()), None);
        assert!(!Arc::ptr_eq(&first, &other));
        // Between connections it is kept: breakers and the budget outlive a connection.
        let kept = Arc::downgrade(&first);
        drop(first);
        assert!(Arc::ptr_eq(
            &kept.upgrade().unwrap(),
            &upstreams.get(a.clone(), None)
        ));
        // Once there are many, those no connection uses are forgotten.
        for i in 0..64u16 {
            upstreams.get(Upstream::Addr(([127, 0, 1, 1], i).into()), None);
        }
        assert!(kept.upgrade().is_none());
    }

    #[test]
    fn a_service_is_one_upstream_with_its_own_limits() {
        let metrics = Metrics::new();
        let upstreams = Upstreams::new(
            Direction::Outbound,
            ResiliencePolicy::default(),
            metrics.resilience.clone(),
        );
        let service = || Upstream::Service("web.default:80".into());
        let policy = ServicePolicy {
            limits: Some(weft_discovery_api::v1::Limits {
                max_in_flight: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let first = upstreams.get(service(), Some(&policy));
        // Another connection to the same Service (another ClusterIP or pod address) shares it.
        assert!(Arc::ptr_eq(&first, &upstreams.get(service(), None)));
        assert_eq!(first.limits.max_in_flight(), 3);
        // The request policy base stays the client's.
        assert_eq!(first.policy.limits.max_in_flight, 1024);
    }
}
