//! The per-connection request stack, outermost first: metrics -> route (logical service) ->
//! error responses -> hop-by-hop headers -> upgrades -> inbound rate limit -> request timeout ->
//! upstream limits -> retry -> per-try timeout -> balancer (split, endpoint) -> endpoint client.
//! Route runs before the error layer so that failures are logged with their target; the balancer
//! sits inside retries so that each attempt picks its endpoint afresh.

use std::sync::Arc;

use hyper::body::Incoming;
use tower::ServiceBuilder;

use super::balance::{Balance, BalanceLayer};
use super::endpoint::EndpointClient;
use super::error_response::{ErrorResponse, ErrorResponseLayer};
use super::hop_by_hop::{HopByHop, HopByHopLayer};
use super::pool::Pool;
use super::request_metrics::{RequestMetrics, RequestMetricsLayer};
use super::route::{Route, RouteLayer, Router};
use super::target::Target;
use super::upgrade::{Upgrade, UpgradeLayer};
use crate::drain::Drain;
use crate::metrics::HttpMetrics;
use crate::resilience::limits::{ConcurrencyLimit, ConcurrencyLimitLayer};
use crate::resilience::rate_limit::{RateLimit, RateLimitLayer};
use crate::resilience::replay::ReplayBody;
use crate::resilience::retry::{Retry, RetryLayer};
use crate::resilience::timeout::{Timeout, TimeoutKind, TimeoutLayer};
use crate::resilience::upstream::UpstreamState;

type Resilient<S> = RateLimit<Timeout<ConcurrencyLimit<Retry<Timeout<S>>>>>;

pub type Stack = RequestMetrics<
    Route<
        ErrorResponse<HopByHop<Upgrade<Resilient<Balance<EndpointClient<ReplayBody<Incoming>>>>>>>,
    >,
>;

pub fn build(
    target: Target,
    router: Option<Router>,
    metrics: HttpMetrics,
    pool: Arc<Pool<ReplayBody<Incoming>>>,
    drain: Drain,
    upstream: Arc<UpstreamState>,
    rate_limit: RateLimitLayer,
) -> Stack {
    ServiceBuilder::new()
        .layer(RequestMetricsLayer::new(metrics))
        .layer(RouteLayer::new(target, router))
        .layer(ErrorResponseLayer)
        .layer(HopByHopLayer)
        .layer(UpgradeLayer::new(drain))
        .layer(rate_limit)
        // The request timeout also bounds the wait for an in-flight slot.
        .layer(TimeoutLayer::new(TimeoutKind::Request, upstream.clone()))
        .layer(ConcurrencyLimitLayer::new(upstream.clone()))
        .layer(RetryLayer::new(upstream.clone()))
        .layer(TimeoutLayer::new(TimeoutKind::PerTry, upstream))
        .layer(BalanceLayer)
        .service(EndpointClient::new(pool))
}
