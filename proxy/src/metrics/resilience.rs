//! Counters for the resilience layers' decisions, labelled by upstream: retries and budget
//! exhaustion, timeouts, overload rejections, rate limiting. Handles are resolved once per
//! upstream so the request path only touches atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::direction::Direction;
use crate::resilience::breaker::BreakerMetrics;
use crate::resilience::kinds::Limit;
use crate::resilience::kinds::TimeoutKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    direction: Direction,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    direction: Direction,
    upstream: String,
    kind: TimeoutKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverloadLabels {
    direction: Direction,
    upstream: String,
    limit: Limit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    direction: Direction,
    upstream: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    direction: Direction,
    scope: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct ResilienceMetrics {
    retries: Family<UpstreamLabels, Counter>,
    budget_exhausted: Family<UpstreamLabels, Counter>,
    timeouts: Family<TimeoutLabels, Counter>,
    overload: Family<OverloadLabels, Counter>,
    rate_limited: Family<RateLimitLabels, Counter>,
    breaker_changes: Family<BreakerLabels, Counter>,
    breaker_ejected: Family<UpstreamLabels, Gauge>,
}

impl ResilienceMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ResilienceMetrics::default();
        registry.register(
            "retry",
            "Requests sent again after a failed attempt",
            metrics.retries.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "Retries not sent because the upstream's retry budget was used up",
            metrics.budget_exhausted.clone(),
        );
        registry.register(
            "timeout",
            "Requests (kind=request), attempts (kind=per_try), stalled exchanges (kind=stream_idle), idle client connections (kind=idle) and slow request headers (kind=header_read) that ran out of time",
            metrics.timeouts.clone(),
        );
        registry.register(
            "overload_rejected",
            "Requests refused at once because an upstream limit was reached",
            metrics.overload.clone(),
        );
        registry.register(
            "rate_limited",
            "Inbound requests refused by the rate limit (scope: overall or per_client)",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "breaker_state_changes",
            "Circuit breaker transitions of the upstream's endpoints, by the state entered",
            metrics.breaker_changes.clone(),
        );
        registry.register(
            "breaker_ejected",
            "Endpoints of the upstream ejected by their circuit breaker right now",
            metrics.breaker_ejected.clone(),
        );
        metrics
    }

    /// The breaker handles of one upstream, shared by its endpoints' breakers.
    pub fn breaker(&self, direction: Direction, upstream: &str) -> BreakerMetrics {
        let changes = |state| {
            self.breaker_changes.get_or_create_owned(&BreakerLabels {
                direction,
                upstream: upstream.to_owned(),
                state,
            })
        };
        BreakerMetrics {
            opened: changes("open"),
            half_opened: changes("half_open"),
            closed: changes("closed"),
            ejected: self.breaker_ejected.get_or_create_owned(&UpstreamLabels {
                direction,
                upstream: upstream.to_owned(),
            }),
        }
    }

    /// The handles of one upstream.
    pub fn upstream(&self, direction: Direction, upstream: &str) -> UpstreamMetrics {
        let labels = UpstreamLabels {
            direction,
            upstream: upstream.to_owned(),
        };
        let timeout = |kind| {
            self.timeouts.get_or_create_owned(&TimeoutLabels {
                direction,
                upstream: upstream.to_owned(),
                kind,
            })
        };
        let overload = |limit| {
            self.overload.get_or_create_owned(&OverloadLabels {
                direction,
                upstream: upstream.to_owned(),
                limit,
            })
        };
        UpstreamMetrics {
            retries: self.retries.get_or_create_owned(&labels),
            budget_exhausted: self.budget_exhausted.get_or_create_owned(&labels),
            request_timeouts: timeout(TimeoutKind::Request),
            per_try_timeouts: timeout(TimeoutKind::PerTry),
            stream_idle_timeouts: timeout(TimeoutKind::StreamIdle),
            idle_timeouts: timeout(TimeoutKind::Idle),
            header_read_timeouts: timeout(TimeoutKind::HeaderRead),
            overload_pending: overload(Limit::Pending),
            overload_in_flight: overload(Limit::InFlight),
            overload_connections: overload(Limit::Connections),
        }
    }

    /// Counts one expiry of a connection's own timer (idle, header read) against `upstream`,
    /// without creating the request counters of an upstream that may be opaque TCP.
    pub fn timed_out(&self, direction: Direction, upstream: &str, kind: TimeoutKind) {
        self.timeouts
            .get_or_create(&TimeoutLabels {
                direction,
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    pub fn rate_limited(&self, direction: Direction, scope: &'static str) -> Counter {
        self.rate_limited
            .get_or_create_owned(&RateLimitLabels { direction, scope })
    }
}

#[derive(Clone, Debug, Default)]
pub struct UpstreamMetrics {
    retries: Counter,
    budget_exhausted: Counter,
    request_timeouts: Counter,
    per_try_timeouts: Counter,
    stream_idle_timeouts: Counter,
    idle_timeouts: Counter,
    header_read_timeouts: Counter,
    overload_pending: Counter,
    overload_in_flight: Counter,
    overload_connections: Counter,
}

impl UpstreamMetrics {
    pub fn retry(&self) {
        self.retries.inc();
    }

    pub fn budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    pub fn timeout(&self, kind: TimeoutKind) {
        match kind {
            TimeoutKind::Request => self.request_timeouts.inc(),
            TimeoutKind::PerTry => self.per_try_timeouts.inc(),
            TimeoutKind::StreamIdle => self.stream_idle_timeouts.inc(),
            TimeoutKind::Idle => self.idle_timeouts.inc(),
            TimeoutKind::HeaderRead => self.header_read_timeouts.inc(),
        };
    }

    pub fn overloaded(&self, limit: Limit) {
        match limit {
            Limit::Pending => self.overload_pending.inc(),
            Limit::InFlight => self.overload_in_flight.inc(),
            Limit::Connections => self.overload_connections.inc(),
        };
    }
}
