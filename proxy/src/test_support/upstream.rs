//! An upstream's shared state with a chosen policy, for the resilience layers' tests.

use std::sync::Arc;

use crate::direction::Direction;
use crate::metrics::Metrics;
use crate::resilience::policy::{PolicyOverrides, ResiliencePolicy};
use crate::resilience::upstream::UpstreamState;

/// An upstream named "test" whose policy is the defaults with `overrides`, and the metrics
/// its counters render in.
pub fn upstream_with(overrides: PolicyOverrides) -> (Arc<UpstreamState>, Metrics) {
    let metrics = Metrics::new();
    let policy = ResiliencePolicy::default().with(&overrides);
    let handles = metrics.resilience.upstream(Direction::Outbound, "test");
    let breakers = metrics.resilience.breaker(Direction::Outbound, "test");
    let state = UpstreamState::new(Arc::new(policy.clone()), &policy.limits, handles, breakers);
    (Arc::new(state), metrics)
}
