//! `weft_discovery_*`, `weft_dns_*` and `weft_endpoint_requests_total`: whether the proxy's view
//! of the mesh is live or stale, and where requests went.

use std::net::SocketAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Why a connection was forwarded to its original destination without an answer.
#[derive(Clone, Copy, Debug)]
pub enum Fallback {
    /// The first answer did not come within WEFT_DISCOVERY_WAIT.
    Timeout,
    /// The discovery service could not be reached and nothing was cached.
    Unavailable,
}

#[derive(Clone, Debug, Default)]
pub struct DiscoveryMetrics {
    watches: Gauge,
    stale: Gauge,
    updates: Counter,
    reconnects: Counter,
    fallbacks: Family<ReasonLabels, Counter>,
    dns: Family<ResultLabels, Counter>,
    endpoint_requests: Family<EndpointLabels, Counter>,
}

impl DiscoveryMetrics {
    /// Metrics no registry renders (unit tests).
    pub fn unregistered() -> Self {
        Self::default()
    }

    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "discovery_watches",
            "Targets currently watched (cached) by the discovery client",
            metrics.watches.clone(),
        );
        registry.register(
            "discovery_stale",
            "Watched targets served from their last known endpoints because the discovery service is unreachable",
            metrics.stale.clone(),
        );
        registry.register(
            "discovery_updates",
            "Updates received from the discovery service",
            metrics.updates.clone(),
        );
        registry.register(
            "discovery_reconnects",
            "Watch streams re-opened after the discovery service failed or went away",
            metrics.reconnects.clone(),
        );
        registry.register(
            "discovery_fallback",
            "Connections forwarded to their original destination because discovery gave no answer",
            metrics.fallbacks.clone(),
        );
        registry.register(
            "dns_resolutions",
            "DNS resolutions of names discovery does not know, by result",
            metrics.dns.clone(),
        );
        registry.register(
            "endpoint_requests",
            "Requests (HTTP) and connections (opaque TCP) balanced to each endpoint of a service",
            metrics.endpoint_requests.clone(),
        );
        metrics
    }

    pub fn endpoint_requests(&self, upstream: &str, endpoint: SocketAddr) -> Counter {
        self.endpoint_requests.get_or_create_owned(&EndpointLabels {
            upstream: upstream.to_string(),
            endpoint: endpoint.to_string(),
        })
    }

    pub fn watch_started(&self) {
        self.watches.inc();
    }

    pub fn watch_ended(&self) {
        self.watches.dec();
    }

    pub fn stale(&self) -> &Gauge {
        &self.stale
    }

    pub fn update(&self) {
        self.updates.inc();
    }

    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    pub fn fallback(&self, why: Fallback) {
        let reason = match why {
            Fallback::Timeout => "timeout",
            Fallback::Unavailable => "unavailable",
        };
        self.fallbacks.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn dns(&self, result: &'static str) {
        self.dns.get_or_create(&ResultLabels { result }).inc();
    }
}
