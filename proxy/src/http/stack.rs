//! The per-connection request stack, outermost first: metrics -> route -> error responses ->
//! hop-by-hop headers -> upgrades -> endpoint client. Route runs before the error layer so that
//! failures are logged with their target. Discovery, balancing, retries and timeouts slot in
//! between the error layer and the endpoint client.

use std::sync::Arc;

use hyper::body::Incoming;
use tower::ServiceBuilder;

use super::endpoint::EndpointClient;
use super::error_response::{ErrorResponse, ErrorResponseLayer};
use super::hop_by_hop::{HopByHop, HopByHopLayer};
use super::pool::Pool;
use super::request_metrics::{RequestMetrics, RequestMetricsLayer};
use super::route::{Route, RouteLayer};
use super::target::Target;
use super::upgrade::{Upgrade, UpgradeLayer};
use crate::drain::Drain;
use crate::metrics::HttpMetrics;

pub type Stack = RequestMetrics<Route<ErrorResponse<HopByHop<Upgrade<EndpointClient<Incoming>>>>>>;

pub fn build(
    target: Target,
    metrics: HttpMetrics,
    pool: Arc<Pool<Incoming>>,
    drain: Drain,
) -> Stack {
    ServiceBuilder::new()
        .layer(RequestMetricsLayer::new(metrics))
        .layer(RouteLayer::new(target))
        .layer(ErrorResponseLayer)
        .layer(HopByHopLayer)
        .layer(UpgradeLayer::new(drain))
        .service(EndpointClient::new(pool))
}
