//! mTLS between proxies: connections by transport, failed handshakes, and what the inbound
//! policy refused.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::direction::Direction;
use crate::inbound_policy::Refusal;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    direction: Direction,
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    connections: Family<TransportLabels, Counter>,
    handshake_errors: Family<DirLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
}

impl TlsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = TlsMetrics::default();
        registry.register(
            "tls_connections",
            "mTLS connections between proxies established, by direction and transport (h2: multiplexed HTTP; tcp: one opaque or HTTP/1 connection)",
            metrics.connections.clone(),
        );
        registry.register(
            "tls_handshake_errors",
            "mTLS handshakes between proxies that failed",
            metrics.handshake_errors.clone(),
        );
        registry.register(
            "inbound_refused",
            "Inbound connections or requests refused by the inbound policy, by reason",
            metrics.refused.clone(),
        );
        metrics
    }

    pub fn connection(&self, direction: Direction, transport: &'static str) {
        self.connections
            .get_or_create(&TransportLabels {
                direction,
                transport,
            })
            .inc();
    }

    pub fn handshake_error(&self, direction: Direction) {
        self.handshake_errors
            .get_or_create(&DirLabels { direction })
            .inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }
}
