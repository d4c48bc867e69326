//! The per-connection request stack, outermost first: metrics -> route (logical service) ->
//! error responses -> request target (length, absolute form) -> hop-by-hop headers -> stream idle timeout -> inbound policy and client
//! identity -> upgrades ->
//! inbound rate limit -> Service policy -> request timeout -> upstream limits -> retry ->
//! per-try timeout -> balancer (split, breakers, endpoint) -> endpoint client (mTLS to meshed
//! endpoints). Route runs before the error layer so that failures are logged with their target;
//! the balancer sits inside retries so that each attempt picks its endpoint afresh, away from
//! ejected endpoints and those the request already failed on.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use tower::ServiceBuilder;

use crate::drain::Drain;
use crate::http::balance::{Balance, BalanceLayer};
use crate::http::client_identity::{Caller, ClientIdentityLayer, ClientIdentityService};
use crate::http::endpoint::EndpointClient;
use crate::http::error_response::{ErrorResponse, ErrorResponseLayer};
use crate::http::hop_by_hop::{HopByHop, HopByHopLayer};
use crate::http::peer_client::PeerClient;
use crate::http::pool::Pool;
use crate::http::request_metrics::{RequestMetrics, RequestMetricsLayer};
use crate::http::request_target::{RequestTarget, RequestTargetLayer};
use crate::http::route::{Route, RouteLayer, Router};
use crate::http::target::Target;
use crate::http::upgrade::{Upgrade, UpgradeLayer};
use crate::metrics::HttpMetrics;
use crate::resilience::concurrency_limit::{ConcurrencyLimit, ConcurrencyLimitLayer};
use crate::resilience::kinds::TimeoutKind;
use crate::resilience::rate_limit::{RateLimit, RateLimitLayer};
use crate::resilience::replay::ReplayBody;
use crate::resilience::retry::{Retry, RetryLayer};
use crate::resilience::service_policy::{ApplyServicePolicy, ServicePolicyLayer};
use crate::resilience::stream_idle::{StreamIdle, StreamIdleLayer};
use crate::resilience::timeout::{Timeout, TimeoutLayer};
use crate::resilience::upstream::UpstreamState;

type Resilient<S> =
    RateLimit<ApplyServicePolicy<Timeout<ConcurrencyLimit<Retry<Timeout<Balance<S>>>>>>>;

pub type Stack = RequestMetrics<
    Route<
        ErrorResponse<
            RequestTarget<
                HopByHop<
                    StreamIdle<
                        ClientIdentityService<
                            Upgrade<Resilient<EndpointClient<ReplayBody<Incoming>>>>,
                        >,
                    >,
                >,
            >,
        >,
    >,
>;

/// What an HTTP connection's stack needs beyond its target and metrics.
pub struct StackParts {
    /// Outbound: discovery's view of the connection's destination.
    pub router: Option<Router>,
    pub pool: Arc<Pool<ReplayBody<Incoming>>>,
    pub drain: Drain,
    pub upstream: Arc<UpstreamState>,
    pub rate_limit: RateLimitLayer,
    /// Inbound: the caller the inbound policy judges; `None` outbound.
    pub caller: Option<Caller>,
    /// Outbound with an identity: mTLS to meshed endpoints.
    pub peers: Option<Arc<PeerClient<ReplayBody<Incoming>>>>,
    /// `WEFT_STREAM_IDLE_TIMEOUT`; zero: none.
    pub stream_idle_timeout: Duration,
    /// The request target's length limit and form (`WEFT_MAX_URI_LENGTH`, absolute form).
    pub target: RequestTargetLayer,
}

pub fn build(target: Target, metrics: HttpMetrics, parts: StackParts) -> Stack {
    let StackParts {
        router,
        pool,
        drain,
        upstream,
        rate_limit,
        caller,
        peers,
        stream_idle_timeout,
        target: target_layer,
    } = parts;
    ServiceBuilder::new()
        .layer(RequestMetricsLayer::new(metrics))
        .layer(RouteLayer::new(target, router))
        .layer(ErrorResponseLayer)
        // Inside the error layer (a refused target gets 414/400 with `weft-error`), before
        // anything that forwards: the upstream must never see a target that disagrees with Host.
        .layer(target_layer)
        .layer(HopByHopLayer)
        // Inside the error layer, so a stream that never got its response headers gets a 504.
        .layer(StreamIdleLayer::new(stream_idle_timeout, upstream.clone()))
        // Before the rate limit, which keys on the identity this layer attaches.
        .layer(ClientIdentityLayer::new(caller))
        .layer(UpgradeLayer::new(drain))
        .layer(rate_limit)
        .layer(ServicePolicyLayer::new(upstream.clone()))
        // The request timeout also bounds the wait for an in-flight slot.
        .layer(TimeoutLayer::new(TimeoutKind::Request, upstream.clone()))
        .layer(ConcurrencyLimitLayer::new(upstream.clone()))
        .layer(RetryLayer::new(upstream.clone()))
        .layer(TimeoutLayer::new(TimeoutKind::PerTry, upstream.clone()))
        .layer(BalanceLayer::new(upstream))
        .service(EndpointClient::new(pool, peers))
}
